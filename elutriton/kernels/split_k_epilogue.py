"""The second half of a split-K convolution: sum the K ranges' partial tiles, then bias + ELU.

``conv2d.py``'s kernel with SPLIT_K > 1 leaves ``[SPLIT_K, N * OH * OW, OC]`` fp32 (fp64)
partial sums; this kernel adds them in split order (a fixed order: deterministic), applies the
bias + ELU-family epilogue once to the full sum (ELU is not linear, so it cannot be applied per
split) and stores y through its strides, cast once.
"""
import triton
import triton.language as tl

from .conv_tiles import output_pixel_coords, output_tile_offsets, store_output_tile
from .elu_math import ELU_PARAM, bias_elu_epilogue, elu_params
from .launch import FixedLaunch

# One fixed tile: the kernel streams the partials once (memory-bound, no tuning table); 32 x 64
# keeps fp64 spill-free (64 x 64 spilled on sm_80 and sm_90, kernel_report.md).
SPLIT_K_EPILOGUE_CONFIG = triton.Config({"BLOCK_M": 32, "BLOCK_N": 64}, num_warps=4)


@triton.jit
def split_k_epilogue_kernel(
    partial_ptr, bias_ptr, y_ptr,
    n_pixels, out_channels, out_h, out_w, k_splits,
    stride_yn, stride_yc, stride_yh, stride_yw,
    alpha: ELU_PARAM, scale: ELU_PARAM, input_scale: ELU_PARAM,
    HAS_BIAS: tl.constexpr, ACC_DTYPE: tl.constexpr, INT64_INDEX: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
):
    """y = elu(sum over s of partial[s] + bias) for one [BLOCK_M, BLOCK_N] output tile.

    Args:
        partial_ptr: contiguous ACC_DTYPE ``[k_splits, n_pixels, out_channels]`` partial sums.
        bias_ptr: contiguous [OC] bias (unused without HAS_BIAS).
        y_ptr: output [N, OC, OH, OW] with strides ``stride_y{n,c,h,w}``.
        n_pixels: N * OH * OW. out_channels: OC. out_h, out_w: OH, OW.
        k_splits: number of partial slices, summed from 0 up.
        alpha, scale, input_scale: aten ``elu`` parameters (fp64 scalars, ``ELU_PARAM``).
        HAS_BIAS: add the bias. ACC_DTYPE: dtype of the partials and of the epilogue math.
        INT64_INDEX: 64-bit offsets (partial buffer or y past 2^31 - 1 elements).
        BLOCK_M, BLOCK_N: tile extent along pixels and channels.
    """
    offs_m, offs_n, mask_m, mask_n = output_tile_offsets(
        tl.program_id(0), tl.program_id(1), n_pixels, out_channels, BLOCK_M, BLOCK_N,
        INT64_INDEX)
    mask = mask_m[:, None] & mask_n[None, :]
    tile_ptrs = partial_ptr + offs_m[:, None] * out_channels + offs_n[None, :]
    split_stride = n_pixels * out_channels
    acc = tl.zeros([BLOCK_M, BLOCK_N], dtype=ACC_DTYPE)
    for split in range(0, k_splits):
        acc += tl.load(tile_ptrs + split * split_stride, mask=mask, other=0.0)
    alpha, scale, input_scale = elu_params(alpha, scale, input_scale, ACC_DTYPE)
    acc = bias_elu_epilogue(acc, bias_ptr + offs_n, mask_n, alpha, scale, input_scale, HAS_BIAS)
    batch, oh, ow = output_pixel_coords(offs_m, out_h, out_w)
    store_output_tile(y_ptr, acc, batch, oh, ow, offs_n, mask_m, mask_n,
                      stride_yn, stride_yc, stride_yh, stride_yw)


def plan_split_k_epilogue(y, k_splits, has_bias, acc_dtype, int64_index):
    """``run(partial, bias, y, alpha, scale, input_scale)`` for an output with ``y``'s metadata
    (may be a meta tensor) and ``k_splits`` partial slices; ``bias`` is the bias or any tensor
    when there is none."""
    n_batch, out_channels, out_h, out_w = y.shape
    n_pixels = n_batch * out_h * out_w
    config = SPLIT_K_EPILOGUE_CONFIG
    launch = FixedLaunch(
        split_k_epilogue_kernel,
        lambda meta: (triton.cdiv(n_pixels, meta["BLOCK_M"]),
                      triton.cdiv(out_channels, meta["BLOCK_N"])),
        config, dict(HAS_BIAS=has_bias, ACC_DTYPE=acc_dtype, INT64_INDEX=int64_index))
    fixed = (n_pixels, out_channels, out_h, out_w, k_splits, *y.stride())

    def run(partial, bias, y, alpha, scale, input_scale):
        launch(partial, bias, y, *fixed, alpha, scale, input_scale)
    return run
