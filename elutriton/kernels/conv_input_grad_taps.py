"""Input gradient of conv2d + bias + ELU for layers with few input channels (an RGB stem): per-tap
products, then a gather.

The transposed-GEMM kernel (``conv_input_grad.py``) gives each dX tile its K loop over taps and
output channels, so every element of grad_y and y is loaded (and its ELU derivative formed)
once per filter tap that reads it: 25 times for a 5x5 stem, ~2.5 GB of loads for the ELU-CIFAR
stem at batch 128 against ~100 MB of grad_y and y, and on the H100 its dX took ~0.5 ms where
cuDNN's took ~0.2 (``perf/results/NVIDIA_H100_80GB_HBM3/summary.md``, "Backward alone").
When the filter is small (C * KH * KW columns fit one tile, ``TAP_PRODUCT_MAX_COLUMNS``) the
same sum can read each grad_y and y element once:

1. ``conv_input_grad_tap_products_kernel``: a plain GEMM over the output pixels p,
   ``T[tap, p, c] = sum_oc grad_z[p, oc] * W[oc, c, tap]`` with grad_z = grad_y * f'(y) formed
   on load, each row of grad_y and y read by one program once; T is fp32 (fp64 for fp64), in
   tap-major layout so that step 2 reads it in rows.
2. ``conv_input_grad_gather_kernel``: ``dX[q, c] = sum over taps of T[tap, p(q, tap), c]``,
   where p(q, tap) is the output pixel that tap of q feeds (only where the stride divides
   exactly, as in the transposed-GEMM kernel), summed in a fixed tap order: deterministic.

Bytes (the stem, fp16, batch 128; PREDICTED, not measured): grad_y and y read once (100 MB),
T written and read once (39 MB each), dX written (0.8 MB): ~180 MB, ~60 us at 3 TB/s, against
the ~2.5 GB of (mostly L2) loads of the transposed-GEMM kernel. groups == 1.
"""
import torch
import triton
import triton.language as tl

from .._runtime import INTERPRET, needs_int64_index
from .conv2d import dot_precision, operand_class
from .conv_tiles import (dot_grad_z, load_grad_z, output_pixel_coords, output_tile_offsets,
                         store_output_tile, tap_output_index)
from .elu_math import ELU_PARAM, elu_params
from .launch import FixedLaunch

TAP_PRODUCT_MAX_COLUMNS = 128  # C * KH * KW: one tile of columns, so grad_y is read once


def _cfg(block_m, block_k, warps, stages):
    return triton.Config({"BLOCK_M": block_m, "BLOCK_K": block_k}, num_warps=warps,
                         num_stages=stages)


# Step 1 per operand class (conv2d.operand_class); BLOCK_N, the columns, comes from the layer.
# Chosen with the static kernel report (spill-free on sm_80 and sm_90 at BLOCK_N 128, tensor
# cores for 16-bit and TF32); not timed on a GPU: PREDICTED reasonable, not measured.
TAP_PRODUCT_CONFIGS = {"16bit": _cfg(128, 32, 8, 3), "tf32": _cfg(64, 32, 8, 3),
                       "fp32": _cfg(64, 32, 8, 1), "fp64": _cfg(32, 16, 4, 1)}
TAP_PRODUCT_INTERPRETER_CONFIG = _cfg(64, 32, 4, 1)
GATHER_BLOCK_M = 256  # step 2: input pixels per program (memory-bound: wide rows)
GATHER_WARPS = 4


def uses_tap_products(in_channels: int, kernel_h: int, kernel_w: int) -> bool:
    """Whether the input gradient of this filter goes through per-tap products."""
    return in_channels * kernel_h * kernel_w <= TAP_PRODUCT_MAX_COLUMNS


@triton.jit
def conv_input_grad_tap_products_kernel(
    grad_y_ptr, y_ptr, w_ptr, products_ptr,
    n_out_pixels, out_h, out_w, out_channels, in_channels, n_columns, tap_stride,
    stride_yn, stride_yc, stride_yh, stride_yw, stride_wo, stride_wj,
    alpha: ELU_PARAM, scale: ELU_PARAM, input_scale: ELU_PARAM,
    INPUT_PRECISION: tl.constexpr, UPCAST_OPERANDS: tl.constexpr, ACC_DTYPE: tl.constexpr,
    INT64_INDEX: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
):
    """Step 1: one [BLOCK_M output pixels, all C * KH * KW columns] tile of the products T.

    Args:
        grad_y_ptr, y_ptr: grad_y and the saved output y, [N, OC, OH, OW] with the same strides
            ``stride_y{n,c,h,w}``.
        w_ptr: the weight as a [OC, KH * KW * C] matrix, column j = tap * C + c with
            tap = kh * KW + kw (a channels_last weight viewed so), strides ``stride_wo``,
            ``stride_wj``.
        products_ptr: T, contiguous [KH * KW, N * OH * OW, C] in ACC_DTYPE: column j of output
            pixel p goes to ``tap * tap_stride + p * C + c``.
        n_out_pixels: N * OH * OW. out_h, out_w: OH, OW. out_channels: OC (the reduction).
        in_channels: C. n_columns: C * KH * KW (<= BLOCK_N). tap_stride: N * OH * OW * C.
        alpha, scale, input_scale: the ELU-family parameters (grad_z = grad_y * f'(y); valid
            where the derivative can be read off y, ``params.result_backward_valid``).
        INPUT_PRECISION: ``tl.dot`` precision for fp32 ("tf32" or "ieee"), else None.
        UPCAST_OPERANDS: convert the tiles to ACC_DTYPE before the dot (bf16 under the
            interpreter; docs/interpreter.md).
        ACC_DTYPE: accumulator and T dtype (fp32; fp64 for fp64 tensors).
        INT64_INDEX: 64-bit offsets.
        BLOCK_M: output pixels per program. BLOCK_N: columns (a power of two >= n_columns).
        BLOCK_K: output channels per step of the reduction.
    """
    offs_m, offs_j, mask_m, mask_j = output_tile_offsets(
        tl.program_id(0), 0, n_out_pixels, n_columns, BLOCK_M, BLOCK_N, INT64_INDEX)
    batch, oh, ow = output_pixel_coords(offs_m, out_h, out_w)
    alpha, scale, input_scale = elu_params(alpha, scale, input_scale, ACC_DTYPE)
    rows = batch * stride_yn + oh * stride_yh + ow * stride_yw
    acc = tl.zeros([BLOCK_M, BLOCK_N], dtype=ACC_DTYPE)
    for k0 in range(0, out_channels, BLOCK_K):
        offs_k = k0 + tl.arange(0, BLOCK_K)
        mask_k = offs_k < out_channels
        grad_z = load_grad_z(grad_y_ptr, y_ptr, rows[:, None] + offs_k[None, :] * stride_yc,
                             mask_m[:, None] & mask_k[None, :], alpha, scale, input_scale,
                             ACC_DTYPE)
        w = tl.load(w_ptr + offs_k[:, None] * stride_wo + offs_j[None, :] * stride_wj,
                    mask=mask_k[:, None] & mask_j[None, :], other=0.0)
        acc = dot_grad_z(grad_z, w, acc, INPUT_PRECISION, UPCAST_OPERANDS, ACC_DTYPE)
    tap = offs_j // in_channels
    channel = offs_j % in_channels
    offsets = tap[None, :] * tap_stride + offs_m[:, None] * in_channels + channel[None, :]
    tl.store(products_ptr + offsets, acc, mask=mask_m[:, None] & mask_j[None, :])


@triton.jit
def conv_input_grad_gather_kernel(
    products_ptr, grad_x_ptr,
    n_pixels, in_h, in_w, out_h, out_w, in_channels, kernel_h, kernel_w,
    stride_h, stride_w, pad_h, pad_w, dil_h, dil_w, tap_stride,
    stride_gn, stride_gc, stride_gh, stride_gw,
    ACC_DTYPE: tl.constexpr, INT64_INDEX: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_C: tl.constexpr,
):
    """Step 2: one [BLOCK_M input pixels, BLOCK_C channels] tile of dX, the sum over taps of
    the T entries that feed it.

    Args:
        products_ptr: T from step 1, [KH * KW, N * OH * OW, C] (``tap_stride`` = N * OH * OW * C).
        grad_x_ptr: output dX [N, C, H, W] with strides ``stride_g{n,c,h,w}`` (x's layout).
        n_pixels: N * H * W. in_h, in_w, out_h, out_w: H, W, OH, OW. in_channels: C.
        kernel_h, kernel_w, stride_h/w, pad_h/w, dil_h/w: the convolution's filter size,
            stride, top/left padding and dilation.
        ACC_DTYPE: T's dtype and the sum's. INT64_INDEX: 64-bit offsets.
        BLOCK_M: input pixels per program. BLOCK_C: channels (a power of two >= C).
    """
    offs_m, offs_c, mask_m, mask_c = output_tile_offsets(
        tl.program_id(0), 0, n_pixels, in_channels, BLOCK_M, BLOCK_C, INT64_INDEX)
    batch, ih, iw = output_pixel_coords(offs_m, in_h, in_w)
    acc = tl.zeros([BLOCK_M, BLOCK_C], dtype=ACC_DTYPE)
    for kh in range(0, kernel_h):
        oh, row_ok = tap_output_index(ih, mask_m, kh, pad_h, dil_h, stride_h, out_h)
        for kw in range(0, kernel_w):
            ow, tap_ok = tap_output_index(iw, row_ok, kw, pad_w, dil_w, stride_w, out_w)
            pixel = (batch * out_h + oh) * out_w + ow
            offsets = ((kh * kernel_w + kw) * tap_stride + pixel[:, None] * in_channels
                       + offs_c[None, :])
            acc += tl.load(products_ptr + offsets, mask=tap_ok[:, None] & mask_c[None, :],
                           other=0.0)
    store_output_tile(grad_x_ptr, acc, batch, ih, iw, offs_c, mask_m, mask_c,
                      stride_gn, stride_gc, stride_gh, stride_gw)


def tap_products_config(dtype, precision):
    return (TAP_PRODUCT_INTERPRETER_CONFIG if INTERPRET
            else TAP_PRODUCT_CONFIGS[operand_class(dtype, precision)])


def plan_conv2d_input_grad_taps(x, y, weight, stride, padding, dilation, allow_tf32):
    """``run(grad_y, y, weight, alpha, scale, input_scale) -> grad_x``, the contract of
    ``conv_input_grad.plan_conv2d_input_grad``, for a filter ``uses_tap_products`` accepts.
    The weight may have any strides (a non-channels_last one is repacked per call: it is at
    most 128 columns)."""
    n_batch, in_channels, in_h, in_w = x.shape
    out_channels, _, kernel_h, kernel_w = weight.shape
    _, _, out_h, out_w = y.shape
    n_pixels, n_out_pixels = n_batch * in_h * in_w, n_batch * out_h * out_w
    n_columns = in_channels * kernel_h * kernel_w
    dtype, device = y.dtype, y.device
    acc_torch = torch.float64 if dtype == torch.float64 else torch.float32
    acc_dtype = tl.float64 if dtype == torch.float64 else tl.float32
    precision = dot_precision(dtype, allow_tf32)
    config = tap_products_config(dtype, precision)
    block_m = config.kwargs["BLOCK_M"]
    block_n = max(16, triton.next_power_of_2(n_columns))
    block_c = triton.next_power_of_2(in_channels)
    grad_x_meta = torch.empty_like(x, device="meta")  # x's memory format
    grad_x_shape, grad_x_stride = grad_x_meta.shape, grad_x_meta.stride()
    if grad_x_meta.numel() == 0:
        return lambda grad_y, y, weight, alpha, scale, input_scale: torch.empty_strided(
            grad_x_shape, grad_x_stride, dtype=dtype, device=device)
    tap_stride = n_out_pixels * in_channels
    products_numel = kernel_h * kernel_w * tap_stride
    int64 = needs_int64_index(grad_x_meta, y, n_pixels + GATHER_BLOCK_M,
                              products_numel + block_m * in_channels)
    # [OC, KH, KW, C] viewed as [OC, KH * KW * C]: free for a channels_last weight
    weight_is_matrix = weight.is_contiguous(memory_format=torch.channels_last)
    products = FixedLaunch(
        conv_input_grad_tap_products_kernel,
        lambda meta: (triton.cdiv(n_out_pixels, block_m),),
        triton.Config(dict(config.kwargs, BLOCK_N=block_n), num_warps=config.num_warps,
                      num_stages=config.num_stages),
        dict(INPUT_PRECISION=precision,
             UPCAST_OPERANDS=INTERPRET and dtype == torch.bfloat16,
             ACC_DTYPE=acc_dtype, INT64_INDEX=int64))
    gather = FixedLaunch(
        conv_input_grad_gather_kernel,
        lambda meta: (triton.cdiv(n_pixels, GATHER_BLOCK_M),),
        triton.Config(dict(BLOCK_M=GATHER_BLOCK_M, BLOCK_C=block_c), num_warps=GATHER_WARPS,
                      num_stages=1),
        dict(ACC_DTYPE=acc_dtype, INT64_INDEX=int64))
    products_args = (n_out_pixels, out_h, out_w, out_channels, in_channels, n_columns,
                     tap_stride, *y.stride())
    gather_args = (n_pixels, in_h, in_w, out_h, out_w, in_channels, kernel_h, kernel_w,
                   stride[0], stride[1], padding[0], padding[1], dilation[0], dilation[1],
                   tap_stride, *grad_x_stride)

    def run(grad_y, y, weight, alpha, scale, input_scale):
        if not weight_is_matrix:
            weight = weight.contiguous(memory_format=torch.channels_last)
        t = torch.empty(products_numel, dtype=acc_torch, device=device)
        products(grad_y, y, weight, t, *products_args, weight.stride(0), 1, alpha, scale,
                 input_scale)
        grad_x = torch.empty_strided(grad_x_shape, grad_x_stride, dtype=dtype, device=device)
        gather(t, grad_x, *gather_args)
        return grad_x
    return run
