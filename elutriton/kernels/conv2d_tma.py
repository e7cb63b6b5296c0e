"""A persistent implicit-GEMM conv2d + bias + ELU-family kernel that loads its tiles with tensor
descriptors (TMA on sm_90), for stride-1, ungrouped convolutions on channels_last tensors.

The implicit GEMM's A tile (im2col) is not a block of any 2-D matrix, but for stride 1 each
filter tap's A tile is a box of the NHWC input: a program owns an output tile of TILE_H x TILE_W
pixels of one image, and for tap (kh, kw) and channel block c0 it loads the box
``x[n, oh0 + kh*dil_h - pad_h : +TILE_H, ow0 + kw*dil_w - pad_w : +TILE_W, c0 : +BLOCK_K]``
through a 4-D descriptor. TMA reads out-of-bounds coordinates (negative ones included) as
zeros, so the padding, image edges and channels past C need no masks. The weight is the
[OC, KH * KW * C] matrix of its channels_last storage, loaded in [BLOCK_N, BLOCK_K] blocks at
column ``tap * C + c0``; where C is not a multiple of BLOCK_K the block reaches into the next
tap's columns, which meet the zero-filled channels of the A box (a NaN or inf weight there
gives NaN, as it does in every output of torch's convolution). y is stored through a 4-D
descriptor of [N, OH, OW, OC] (stores past the edges are dropped). The reduction runs over
(tap, channel block) pairs in one loop that Triton pipelines; the programs (at most one per SM)
walk the output tiles persistently, output-channel tiles innermost so consecutive tiles share
their input box in L2.

Used only where the tuned table has a ``conv2d_tma`` entry for the shape (``python -m
perf.tune`` writes one where this kernel measured faster than the pointer kernel by more than
2%); needs 16-byte aligned base pointers and strides (checked by the plan and, for pointers,
per call). UNMEASURED on a GPU: built after the lease; the static report compiles it for sm_90.
"""
import torch
import triton
import triton.language as tl

from .._runtime import INTERPRET, multiprocessor_count
from .conv2d import M_FIELD, conv_shape_key, dot_precision, operand_class
from .elu_math import ELU_PARAM, bias_elu_epilogue, elu_params
from .gemm_tma import (TMA_CLASSES, TensorDescriptor, capped_configs, tma_entry_reason,
                       tma_supported)
from .launch import FixedLaunch
from .tuning import register_validator, tuned_config

KERNEL_NAME = "conv2d_tma"


def _cfg(tile_h, tile_w, n, k, warps, stages):
    return triton.Config({"TILE_H": tile_h, "TILE_W": tile_w, "BLOCK_N": n, "BLOCK_K": k},
                         num_warps=warps, num_stages=stages)


CONV_TMA_CONFIGS_BY_CLASS = {
    "16bit": [_cfg(8, 16, 128, 64, 8, 3), _cfg(16, 8, 128, 64, 8, 3), _cfg(8, 16, 64, 64, 4, 4),
              _cfg(8, 8, 128, 64, 4, 4), _cfg(8, 8, 64, 64, 4, 4), _cfg(4, 16, 64, 64, 4, 4)],
    "tf32": [_cfg(8, 16, 128, 32, 8, 3), _cfg(8, 16, 64, 32, 4, 3), _cfg(8, 8, 64, 32, 4, 3)],
}


@triton.jit
def conv2d_bias_elu_tma_kernel(
    x_desc, w_desc, y_desc, bias_ptr,
    n_batch, out_h, out_w, out_channels, in_channels, kernel_w, n_taps,
    pad_h, pad_w, dil_h, dil_w,
    alpha: ELU_PARAM, scale: ELU_PARAM, input_scale: ELU_PARAM,
    HAS_BIAS: tl.constexpr, INPUT_PRECISION: tl.constexpr, UPCAST_OPERANDS: tl.constexpr,
    ACC_DTYPE: tl.constexpr, TILE_H: tl.constexpr, TILE_W: tl.constexpr,
    BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
):
    """y = elu(conv2d(x, w, stride 1) + bias), output tiles walked persistently.

    Args:
        x_desc: descriptor of x as [N, H, W, C] (NHWC storage), block [1, TILE_H, TILE_W,
            BLOCK_K].
        w_desc: descriptor of the weight as [OC, KH * KW * C] (channels_last storage), block
            [BLOCK_N, BLOCK_K].
        y_desc: descriptor of y as [N, OH, OW, OC], block [1, TILE_H, TILE_W, BLOCK_N].
        bias_ptr: contiguous [OC] bias (unused without HAS_BIAS).
        n_batch, out_h, out_w: N, OH, OW. out_channels, in_channels: OC, C (groups == 1).
        kernel_w: KW. n_taps: KH * KW. pad_h, pad_w: top and left padding. dil_h, dil_w:
            dilation (the stride is 1).
        alpha, scale, input_scale: aten ``elu`` parameters of the epilogue.
        HAS_BIAS: add the bias in the epilogue.
        INPUT_PRECISION: ``tl.dot`` precision for fp32 operands ("tf32"), else None.
        UPCAST_OPERANDS: convert the tiles to ACC_DTYPE before the dot (bf16 under the
            interpreter; docs/interpreter.md).
        ACC_DTYPE: accumulator and epilogue dtype (tl.float32).
        TILE_H, TILE_W: output rows and columns of a tile (BLOCK_M = TILE_H * TILE_W pixels).
        BLOCK_N: output channels per tile. BLOCK_K: input channels per reduction step.
    """
    tiles_w = tl.cdiv(out_w, TILE_W)
    tiles_hw = tl.cdiv(out_h, TILE_H) * tiles_w
    tiles_n = tl.cdiv(out_channels, BLOCK_N)
    n_tiles = n_batch * tiles_hw * tiles_n
    k_blocks = tl.cdiv(in_channels, BLOCK_K)
    alpha, scale, input_scale = elu_params(alpha, scale, input_scale, ACC_DTYPE)
    for tile in range(tl.program_id(0), n_tiles, tl.num_programs(0)):
        col = (tile % tiles_n) * BLOCK_N
        pixel_tile = tile // tiles_n
        image = pixel_tile // tiles_hw
        oh0 = (pixel_tile % tiles_hw) // tiles_w * TILE_H
        ow0 = (pixel_tile % tiles_w) * TILE_W
        acc = tl.zeros([TILE_H * TILE_W, BLOCK_N], dtype=ACC_DTYPE)
        for step in range(0, n_taps * k_blocks):
            tap = step // k_blocks
            c0 = (step % k_blocks) * BLOCK_K
            ih0 = oh0 + (tap // kernel_w) * dil_h - pad_h
            iw0 = ow0 + (tap % kernel_w) * dil_w - pad_w
            a = tl.reshape(x_desc.load([image, ih0, iw0, c0]), [TILE_H * TILE_W, BLOCK_K])
            b = w_desc.load([col, tap * in_channels + c0])
            if UPCAST_OPERANDS:
                a = a.to(ACC_DTYPE)
                b = b.to(ACC_DTYPE)
            acc = tl.dot(a, b.T, acc, input_precision=INPUT_PRECISION, out_dtype=ACC_DTYPE)
        offs_n = col + tl.arange(0, BLOCK_N)
        acc = bias_elu_epilogue(acc, bias_ptr + offs_n, offs_n < out_channels, alpha, scale,
                                input_scale, HAS_BIAS)
        y_desc.store([image, oh0, ow0, col],
                     tl.reshape(acc.to(y_desc.dtype), [1, TILE_H, TILE_W, BLOCK_N]))


def conv_tma_eligible(dtype, allow_tf32, in_channels, out_channels, kernel_h, kernel_w,
                      stride, groups):
    """Whether a conv may run this kernel (before looking at the table): a tensor-core operand
    class, stride 1, groups 1, and 16-byte aligned rows of NHWC x, the [OC, KH*KW*C] weight
    and NHWC y (TMA's rule: C and OC multiples of 16 bytes)."""
    if operand_class(dtype, dot_precision(dtype, allow_tf32)) not in TMA_CLASSES:
        return False
    return (list(stride) == [1, 1] and groups == 1
            and all(n * dtype.itemsize % 16 == 0
                    for n in (in_channels, out_channels, in_channels * kernel_h * kernel_w)))


def conv_tma_candidates(cls, out_channels, in_channels):
    """The class's configs minus tiles much larger than the problem (BLOCK_N above OC, BLOCK_K
    above C); never empty."""
    return capped_configs(CONV_TMA_CONFIGS_BY_CLASS[cls], out_channels, in_channels)


def plan_conv_tma(x, weight, y, has_bias, stride, padding, dilation, groups, allow_tf32,
                  device):
    """The TMA conv's ``run`` (``plan_conv2d_bias_elu_tma``) where it applies: TMA on the
    device, an eligible conv with channels_last x and y, and a tuned ``conv2d_tma`` entry for
    the shape or its bucket (where it measured faster); else None. ``x``, ``weight``, ``y``:
    tensors (or meta tensors) with the launched tensors' metadata, the weight in kernel layout
    ([OC, KH, KW, C] storage)."""
    n, in_channels, _, _ = x.shape
    out_channels, in_per_group, kernel_h, kernel_w = weight.shape
    _, _, out_h, out_w = y.shape
    cl = torch.channels_last
    if (not tma_supported(device) or not x.is_contiguous(memory_format=cl)
            or not y.is_contiguous(memory_format=cl)
            or not weight.is_contiguous(memory_format=cl) or y.numel() == 0
            or not conv_tma_eligible(x.dtype, allow_tf32, in_channels, out_channels, kernel_h,
                                     kernel_w, stride, groups)):
        return None
    key = conv_shape_key(x.dtype, dot_precision(x.dtype, allow_tf32), n * out_h * out_w,
                         out_channels, in_per_group, kernel_h, kernel_w, groups, has_bias)
    config = tuned_config(KERNEL_NAME, key, device)
    if config is None:
        return None
    return plan_conv2d_bias_elu_tma(x.shape, weight.shape, y.shape, x.dtype, has_bias,
                                    padding, dilation, allow_tf32, config, device)


def plan_conv2d_bias_elu_tma(x_shape, weight_shape, y_shape, dtype, has_bias, padding,
                             dilation, allow_tf32, config, device):
    """``run(x, weight, bias, y, alpha, scale, input_scale) -> bool`` for channels_last x [N,
    C, H, W], weight [OC, C, KH, KW] and y [N, OC, OH, OW] (stride 1, groups 1): launch the
    kernel, or return False without launching when a base pointer is not 16-byte aligned (the
    caller then runs the pointer kernel)."""
    n, in_channels, in_h, in_w = x_shape
    out_channels, _, kernel_h, kernel_w = weight_shape
    _, _, out_h, out_w = y_shape
    tile_h, tile_w, block_n, block_k = (config.kwargs[name] for name in
                                        ("TILE_H", "TILE_W", "BLOCK_N", "BLOCK_K"))
    n_tiles = (n * triton.cdiv(out_h, tile_h) * triton.cdiv(out_w, tile_w)
               * triton.cdiv(out_channels, block_n))
    programs = max(1, min(n_tiles, multiprocessor_count(device)))
    launch = FixedLaunch(conv2d_bias_elu_tma_kernel, lambda meta: (programs,), config,
                         dict(HAS_BIAS=has_bias, INPUT_PRECISION=dot_precision(dtype, allow_tf32),
                              UPCAST_OPERANDS=INTERPRET and dtype == torch.bfloat16,
                              ACC_DTYPE=tl.float32))
    columns = kernel_h * kernel_w * in_channels
    fixed = (n, out_h, out_w, out_channels, in_channels, kernel_w, kernel_h * kernel_w,
             padding[0], padding[1], dilation[0], dilation[1])

    def run(x, weight, bias, y, alpha, scale, input_scale):
        if x.data_ptr() % 16 or weight.data_ptr() % 16 or y.data_ptr() % 16:
            return False
        launch(TensorDescriptor(x, [n, in_h, in_w, in_channels],
                                [in_h * in_w * in_channels, in_w * in_channels, in_channels, 1],
                                [1, tile_h, tile_w, block_k]),
               TensorDescriptor(weight, [out_channels, columns], [columns, 1],
                                [block_n, block_k]),
               TensorDescriptor(y, [n, out_h, out_w, out_channels],
                                [out_h * out_w * out_channels, out_w * out_channels,
                                 out_channels, 1], [1, tile_h, tile_w, block_n]),
               weight if bias is None else bias, *fixed, alpha, scale, input_scale)
        return True
    return run


def validate_table_entry(fields, entry):
    """None if ``entry`` is a conv TMA config for the key ``fields`` (groups 1, a tensor-core
    class, one of ``conv_tma_candidates``), else the reason."""
    return tma_entry_reason(
        fields, entry, ("BLOCK_K", "BLOCK_N", "TILE_H", "TILE_W", "num_stages", "num_warps"),
        lambda kernel_h, kernel_w, groups: None if groups == 1
        else "the TMA conv serves groups-1 convolutions only", conv_tma_candidates,
        "the TMA conv")


register_validator(KERNEL_NAME, validate_table_entry, M_FIELD)
