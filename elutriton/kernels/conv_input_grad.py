"""Input gradient of conv2d + bias + ELU, with the ELU derivative applied on load.

GEMM view (the transposed convolution), per input pixel and input channel block:
  dX[q, c] = sum over taps (kh, kw) and output channels oc of grad_z[p(q, kh, kw), oc] * W[oc, c, kh, kw]
  q = (batch, ih, iw) input pixel (M = N * H * W)
  p(q, kh, kw) = the output pixel (oh, ow) whose tap (kh, kw) reads q:
      oh = (ih + pad_h - kh * dil_h) / stride_h, a tap only where that divides exactly and
      0 <= oh < OH (the same for ow)
  grad_z = grad_y * f'(y)
grad_z is never written: each program loads grad_y and the saved output y and forms grad_z in
registers, as the weight-gradient kernel (``conv_weight_grad.py``) does; with both kernels a
backward that needs dX, dW and db never materialises grad_z. Every program owns one
[BLOCK_M, BLOCK_C] tile of dX and sums in a fixed order (taps, then output-channel blocks), so
the result is deterministic. groups == 1 (the backward's choice sends grouped convolutions to
cuDNN). Strided convolutions are correct but waste the taps that do not divide (they are
masked), which is why the choice keeps them on cuDNN unless a table measured otherwise.
"""
import torch
import triton
import triton.language as tl

from .._runtime import INTERPRET, needs_int64_index
from .conv2d import dot_precision, operand_class
from .conv_input_grad_taps import plan_conv2d_input_grad_taps, uses_tap_products
from .conv_tiles import (dot_grad_z, load_grad_z, output_pixel_coords, output_tile_offsets,
                         store_output_tile, tap_output_index)
from .elu_math import ELU_PARAM, elu_params
from .launch import FixedLaunch


def _cfg(m, k, warps, stages):
    return triton.Config({"BLOCK_M": m, "BLOCK_K": k}, num_warps=warps, num_stages=stages)


# (BLOCK_M, BLOCK_K) per operand class (conv2d.operand_class); BLOCK_C comes from the layer
# (input_grad_block_c). Chosen with the static kernel report among spill-free candidates on
# sm_80 and sm_90 for BLOCK_C 16 and 64: with 4 warps the [BLOCK_M, BLOCK_K] fp32 grad_y, y
# and grad_z tiles spilled (16-bit 128x64 at BLOCK_C 64, TF32 64x32 on sm_80, exact fp32 at
# every 64-row tile with 2 stages), so 8 warps share them. Not tuned on a GPU yet: PREDICTED
# reasonable, not measured.
DGRAD_CONFIGS = {"16bit": _cfg(128, 32, 8, 3), "tf32": _cfg(64, 32, 8, 3),
                 "fp32": _cfg(64, 32, 8, 1), "fp64": _cfg(32, 16, 4, 1)}
DGRAD_INTERPRETER_CONFIG = _cfg(64, 32, 4, 1)
BLOCK_C_CHOICES = (16, 32, 64)  # tl.dot needs >= 16 columns; 64 caps the accumulator


def input_grad_block_c(in_channels: int) -> int:
    """Input channels per tile: the next power of two of C, within BLOCK_C_CHOICES."""
    block = BLOCK_C_CHOICES[0]
    while block < in_channels and block < BLOCK_C_CHOICES[-1]:
        block *= 2
    return block


@triton.jit
def conv2d_input_grad_kernel(
    grad_y_ptr, y_ptr, w_ptr, grad_x_ptr,
    n_pixels, in_h, in_w, out_h, out_w, in_channels, out_channels, kernel_h, kernel_w,
    stride_h, stride_w, pad_h, pad_w, dil_h, dil_w,
    stride_yn, stride_yc, stride_yh, stride_yw,
    stride_wo, stride_wc, stride_wh, stride_ww,
    stride_gn, stride_gc, stride_gh, stride_gw,
    alpha: ELU_PARAM, scale: ELU_PARAM, input_scale: ELU_PARAM,
    INPUT_PRECISION: tl.constexpr, UPCAST_OPERANDS: tl.constexpr, ACC_DTYPE: tl.constexpr,
    INT64_INDEX: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_C: tl.constexpr, BLOCK_K: tl.constexpr,
):
    """One [BLOCK_M input pixels, BLOCK_C input channels] tile of dX.

    Args:
        grad_y_ptr, y_ptr: grad_y and the saved output y, [N, OC, OH, OW] with the same strides
            ``stride_y{n,c,h,w}``.
        w_ptr: weight [OC, C, KH, KW] with strides ``stride_w{o,c,h,w}``.
        grad_x_ptr: output dX [N, C, H, W] with strides ``stride_g{n,c,h,w}`` (x's layout).
        n_pixels: N * H * W. in_h, in_w, out_h, out_w: H, W, OH, OW.
        in_channels, out_channels: C and OC (groups == 1). kernel_h, kernel_w: KH, KW.
        stride_h/w, pad_h/w, dil_h/w: the convolution's stride, top/left padding, dilation.
        alpha, scale, input_scale: the ELU-family parameters (grad_z = grad_y * f'(y); valid
            where the derivative can be read off y, ``params.result_backward_valid``).
        INPUT_PRECISION: ``tl.dot`` precision for fp32 ("tf32" or "ieee", torch's cuDNN TF32
            flag), else None.
        UPCAST_OPERANDS: convert the tiles to ACC_DTYPE before the dot (bf16 under the
            interpreter; docs/interpreter.md).
        ACC_DTYPE: accumulator dtype (fp32; fp64 for fp64 tensors).
        INT64_INDEX: 64-bit offsets.
        BLOCK_M, BLOCK_C: tile sizes along the input pixels and channels.
        BLOCK_K: output channels per step of the reduction.
    """
    offs_m, offs_c, mask_m, mask_c = output_tile_offsets(
        tl.program_id(0), tl.program_id(1), n_pixels, in_channels, BLOCK_M, BLOCK_C,
        INT64_INDEX)
    batch, ih, iw = output_pixel_coords(offs_m, in_h, in_w)
    alpha, scale, input_scale = elu_params(alpha, scale, input_scale, ACC_DTYPE)
    y_image = batch * stride_yn
    w_channels = offs_c[None, :] * stride_wc
    acc = tl.zeros([BLOCK_M, BLOCK_C], dtype=ACC_DTYPE)
    for kh in range(0, kernel_h):
        oh, row_ok = tap_output_index(ih, mask_m, kh, pad_h, dil_h, stride_h, out_h)
        for kw in range(0, kernel_w):
            ow, tap_ok = tap_output_index(iw, row_ok, kw, pad_w, dil_w, stride_w, out_w)
            y_rows = y_image + oh * stride_yh + ow * stride_yw
            w_tap = w_ptr + kh * stride_wh + kw * stride_ww + w_channels
            for k0 in range(0, out_channels, BLOCK_K):
                offs_k = k0 + tl.arange(0, BLOCK_K)
                mask_k = offs_k < out_channels
                grad_z = load_grad_z(grad_y_ptr, y_ptr,
                                     y_rows[:, None] + offs_k[None, :] * stride_yc,
                                     tap_ok[:, None] & mask_k[None, :], alpha, scale,
                                     input_scale, ACC_DTYPE)
                w = tl.load(w_tap + offs_k[:, None] * stride_wo,
                            mask=mask_k[:, None] & mask_c[None, :], other=0.0)
                acc = dot_grad_z(grad_z, w, acc, INPUT_PRECISION, UPCAST_OPERANDS, ACC_DTYPE)
    store_output_tile(grad_x_ptr, acc, batch, ih, iw, offs_c, mask_m, mask_c,
                      stride_gn, stride_gc, stride_gh, stride_gw)


def input_grad_config(dtype, precision, in_channels):
    """(config, BLOCK_C) for a layer with ``in_channels`` input channels."""
    config = (DGRAD_INTERPRETER_CONFIG if INTERPRET
              else DGRAD_CONFIGS[operand_class(dtype, precision)])
    return config, input_grad_block_c(in_channels)


def plan_conv2d_input_grad(x, y, weight, stride, padding, dilation, allow_tf32):
    """``run(grad_y, y, weight, alpha, scale, input_scale) -> grad_x`` for tensors with the
    metadata of x [N, C, H, W] (grad_x gets x's memory format), y/grad_y [N, OC, OH, OW] (grad_y
    with y's strides) and weight [OC, C, KH, KW] (any strides; groups == 1); ``allow_tf32`` is
    torch's cuDNN flag (fp32 products in TF32 when it is set, as cuDNN's). Filters of at most
    ``TAP_PRODUCT_MAX_COLUMNS`` C * KH * KW go through per-tap products and a gather
    (``conv_input_grad_taps.py``), which read grad_y and y once instead of once per tap."""
    n_batch, in_channels, in_h, in_w = x.shape
    out_channels, _, kernel_h, kernel_w = weight.shape
    if uses_tap_products(in_channels, kernel_h, kernel_w):  # few input channels: an RGB stem
        return plan_conv2d_input_grad_taps(x, y, weight, stride, padding, dilation, allow_tf32)
    _, _, out_h, out_w = y.shape
    n_pixels = n_batch * in_h * in_w
    dtype, device = y.dtype, y.device
    precision = dot_precision(dtype, allow_tf32)
    config, block_c = input_grad_config(dtype, precision, in_channels)
    block_m = config.kwargs["BLOCK_M"]
    grad_x_meta = torch.empty_like(x, device="meta")  # x's memory format (dense x: its strides)
    # the calls allocate with empty_strided: empty_like from a meta tensor to another device
    # goes through Python decompositions (~70 us a call)
    grad_x_shape, grad_x_stride = grad_x_meta.shape, grad_x_meta.stride()
    if grad_x_meta.numel() == 0:
        return lambda grad_y, y, weight, alpha, scale, input_scale: torch.empty_strided(
            grad_x_shape, grad_x_stride, dtype=dtype, device=device)
    launch = FixedLaunch(
        conv2d_input_grad_kernel,
        lambda meta: (triton.cdiv(n_pixels, block_m), triton.cdiv(in_channels, block_c)),
        triton.Config(dict(config.kwargs, BLOCK_C=block_c), num_warps=config.num_warps,
                      num_stages=config.num_stages),
        dict(INPUT_PRECISION=precision,
             UPCAST_OPERANDS=INTERPRET and dtype == torch.bfloat16,
             ACC_DTYPE=tl.float64 if dtype == torch.float64 else tl.float32,
             INT64_INDEX=needs_int64_index(grad_x_meta, y, n_pixels + block_m)))
    fixed = (n_pixels, in_h, in_w, out_h, out_w, in_channels, out_channels, kernel_h, kernel_w,
             stride[0], stride[1], padding[0], padding[1], dilation[0], dilation[1],
             *y.stride(), *weight.stride(), *grad_x_meta.stride())

    def run(grad_y, y, weight, alpha, scale, input_scale):
        grad_x = torch.empty_strided(grad_x_shape, grad_x_stride, dtype=dtype, device=device)
        launch(grad_y, y, weight, grad_x, *fixed, alpha, scale, input_scale)
        return grad_x
    return run
