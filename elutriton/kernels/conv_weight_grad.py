"""Weight and bias gradients of conv2d + bias + ELU, with the ELU derivative applied on load.

GEMM view, per output channel block and flattened filter position:
  dW[oc, t] = sum_p grad_z[p, oc] * X_col[p, t]     grad_z = grad_y * f'(y)
  db[oc]    = sum_p grad_z[p, oc]
  p = (batch, oh, ow) output pixel (P = N * OH * OW, the long reduction)
  t = (kh, kw, c) filter position, channel fastest (T = KH * KW * Cg)
grad_z is never written: each program loads grad_y and the saved output y and forms grad_z in
registers. The reduction over pixels is split over ``n_splits`` programs (split-K): each writes
fp32 partial sums, and ``bias_grad_reduce_kernel`` adds the partials in a fixed order, so the
result is deterministic for a given plan. Meant for convolutions with few input channels per
group (an RGB first layer: T = 75), whose weight gradient cuDNN computes slowly (issue 14:
1.36 ms per step on the H100 for the ELU-CIFAR stem, 44% of the step's GPU time); groups == 1.
"""
import torch
import triton
import triton.language as tl

from .._runtime import INT32_MAX, INTERPRET, needs_int64_index
from .bias_elu import REDUCE_BLOCK_C, REDUCE_BLOCK_P, bias_grad_reduce_kernel
from .conv2d import dot_precision, operand_class
from .conv_tiles import (dot_grad_z, flat_k_taps, load_grad_z, load_input_taps,
                         output_pixel_coords)
from .elu_math import ELU_PARAM, elu_params
from .launch import FixedLaunch



def _cfg(oc, t, p, warps, stages):
    return triton.Config({"BLOCK_OC": oc, "BLOCK_T": t, "BLOCK_P": p}, num_warps=warps,
                         num_stages=stages)


# One config per operand class (conv2d.operand_class), sized by the static kernel report to
# stay spill-free on sm_80 and sm_90 (the per-element tap decoding of the x tile costs
# registers); not tuned on a GPU yet: PREDICTED reasonable, not measured.
WGRAD_CONFIGS = {"16bit": _cfg(64, 32, 32, 4, 2), "tf32": _cfg(32, 32, 32, 4, 2),
                 "fp32": _cfg(32, 32, 32, 4, 2), "fp64": _cfg(32, 16, 16, 4, 1)}
WGRAD_INTERPRETER_CONFIG = triton.Config({"BLOCK_OC": 32, "BLOCK_T": 32, "BLOCK_P": 64},
                                         num_warps=4)
# Programs along the pixel reduction: enough to give every SM of a large GPU a few programs
# with the (small) OC x T grid of a stem layer, without more partials than pixels per program.
TARGET_PROGRAMS = 4 * 132
MIN_PIXELS_PER_SPLIT = 1024


@triton.jit
def conv2d_weight_grad_kernel(
    grad_y_ptr, y_ptr, x_ptr, partial_w_ptr, partial_b_ptr,
    n_pixels, out_h, out_w, in_h, in_w, in_channels, out_channels, kernel_w, n_taps_total,
    stride_h, stride_w, pad_h, pad_w, dil_h, dil_w,
    stride_xn, stride_xc, stride_xh, stride_xw,
    stride_yn, stride_yc, stride_yh, stride_yw,
    pixels_per_split,
    alpha: ELU_PARAM, scale: ELU_PARAM, input_scale: ELU_PARAM,
    BIAS_GRAD: tl.constexpr, INPUT_PRECISION: tl.constexpr, UPCAST_OPERANDS: tl.constexpr,
    ACC_DTYPE: tl.constexpr, INT64_INDEX: tl.constexpr,
    BLOCK_OC: tl.constexpr, BLOCK_T: tl.constexpr, BLOCK_P: tl.constexpr,
):
    """Partial sums of dW and db over one split of the output pixels.

    Args:
        grad_y_ptr, y_ptr: grad_y and the saved output y, [N, OC, OH, OW] with the same strides
            ``stride_y{n,c,h,w}``.
        x_ptr: input [N, C, H, W] with strides ``stride_x{n,c,h,w}``.
        partial_w_ptr: fp32 (fp64) ``[n_splits, OC, T]`` row-major partial weight gradients,
            T = KH * KW * C flattened with the channel fastest.
        partial_b_ptr: fp32 (fp64) ``[n_splits, OC]`` partial bias gradients (BIAS_GRAD).
        n_pixels: N * OH * OW. out_h, out_w, in_h, in_w: OH, OW, H, W.
        in_channels, out_channels: C and OC (groups == 1).
        kernel_w: KW. n_taps_total: T = KH * KW * C.
        stride_h/w, pad_h/w, dil_h/w: the convolution's stride, top/left padding, dilation.
        pixels_per_split: output pixels each program along grid axis 1 reduces.
        alpha, scale, input_scale: the ELU-family parameters (grad_z = grad_y * f'(y); valid
            where the derivative can be read off y, ``params.result_backward_valid``).
        BIAS_GRAD: also write the bias partials (programs of the first T block do).
        INPUT_PRECISION: ``tl.dot`` precision for fp32 ("tf32" or "ieee", torch's cuDNN TF32
            flag), else None.
        UPCAST_OPERANDS: convert the tiles to ACC_DTYPE before the dot (bf16 under the
            interpreter; docs/interpreter.md).
        ACC_DTYPE: accumulator dtype (fp32; fp64 for fp64 tensors).
        INT64_INDEX: 64-bit offsets.
        BLOCK_OC, BLOCK_T, BLOCK_P: tile sizes along OC, T and the pixel reduction.
    """
    pid = tl.program_id(0)
    split = tl.program_id(1)
    n_blocks_t = tl.cdiv(n_taps_total, BLOCK_T)
    pid_oc = pid // n_blocks_t
    pid_t = pid % n_blocks_t
    offs_oc = pid_oc * BLOCK_OC + tl.arange(0, BLOCK_OC)
    offs_t = pid_t * BLOCK_T + tl.arange(0, BLOCK_T)
    mask_oc = offs_oc < out_channels
    mask_t = offs_t < n_taps_total
    channel, kh, kw = flat_k_taps(offs_t, in_channels, kernel_w)

    alpha, scale, input_scale = elu_params(alpha, scale, input_scale, ACC_DTYPE)
    acc = tl.zeros([BLOCK_OC, BLOCK_T], dtype=ACC_DTYPE)
    bias_acc = tl.zeros([BLOCK_OC], dtype=ACC_DTYPE)
    p_start = split * pixels_per_split
    for p0 in range(p_start, p_start + pixels_per_split, BLOCK_P):
        offs_p = p0 + tl.arange(0, BLOCK_P)
        if INT64_INDEX:
            offs_p = offs_p.to(tl.int64)
        mask_p = (offs_p < n_pixels) & (offs_p < p_start + pixels_per_split)
        batch, oh, ow = output_pixel_coords(offs_p, out_h, out_w)
        y_offsets = (batch[None, :] * stride_yn + offs_oc[:, None] * stride_yc
                     + oh[None, :] * stride_yh + ow[None, :] * stride_yw)
        gz_mask = mask_oc[:, None] & mask_p[None, :]
        grad_z = load_grad_z(grad_y_ptr, y_ptr, y_offsets, gz_mask, alpha, scale, input_scale,
                             ACC_DTYPE)
        grad_z = tl.where(gz_mask, grad_z, 0.0)
        if BIAS_GRAD:
            bias_acc += tl.sum(grad_z, axis=1)
        x = load_input_taps(x_ptr + batch * stride_xn, oh, ow, mask_p, channel, kh, kw, mask_t,
                            in_h, in_w, stride_h, stride_w, pad_h, pad_w, dil_h, dil_w,
                            stride_xc, stride_xh, stride_xw)
        acc = dot_grad_z(grad_z, x, acc, INPUT_PRECISION, UPCAST_OPERANDS, ACC_DTYPE)

    partial_w = (partial_w_ptr + split * out_channels * n_taps_total
                 + offs_oc[:, None] * n_taps_total + offs_t[None, :])
    tl.store(partial_w, acc.to(partial_w_ptr.dtype.element_ty),
             mask=mask_oc[:, None] & mask_t[None, :])
    if BIAS_GRAD:
        if pid_t == 0:
            tl.store(partial_b_ptr + split * out_channels + offs_oc,
                     bias_acc.to(partial_b_ptr.dtype.element_ty), mask=mask_oc)


def weight_grad_splits(n_pixels, tile_programs, block_p, n_weights=1):
    """(n_splits, pixels_per_split): split the pixel reduction so the grid has about
    TARGET_PROGRAMS programs, each reducing at least MIN_PIXELS_PER_SPLIT pixels (a multiple
    of ``block_p``), and the partial buffer (``n_splits * n_weights`` elements) stays within
    int32 offsets."""
    splits = max(1, min(TARGET_PROGRAMS // max(1, tile_programs),
                        triton.cdiv(n_pixels, MIN_PIXELS_PER_SPLIT),
                        INT32_MAX // max(1, n_weights)))
    per_split = triton.cdiv(triton.cdiv(n_pixels, splits), block_p) * block_p
    return triton.cdiv(n_pixels, per_split), per_split


def plan_conv2d_weight_grad(x, y, weight_shape, stride, padding, dilation, bias_grad,
                            allow_tf32):
    """``run(grad_y, y, x, alpha, scale, input_scale) -> (grad_weight, grad_bias or None)``
    for tensors with the metadata of x [N, C, H, W] and y/grad_y [N, OC, OH, OW] (grad_y
    with y's strides; groups == 1). ``weight_shape`` is [OC, C, KH, KW]; grad_weight comes back
    as a contiguous [OC, KH, KW, C] tensor (the caller permutes it to [OC, C, KH, KW]);
    ``allow_tf32`` is torch's cuDNN flag (fp32 products in TF32 when it is set, as cuDNN)."""
    out_channels, in_channels, kernel_h, kernel_w = weight_shape
    n_batch, _, out_h, out_w = y.shape
    n_pixels = n_batch * out_h * out_w
    n_taps_total = kernel_h * kernel_w * in_channels
    dtype, device = y.dtype, y.device
    acc_torch = torch.float64 if dtype == torch.float64 else torch.float32
    precision = dot_precision(dtype, allow_tf32)
    if n_pixels == 0:  # an empty batch: nothing to sum
        def run_empty(grad_y, y, x, alpha, scale, input_scale):
            grad_w = torch.zeros((out_channels, kernel_h, kernel_w, in_channels), dtype=dtype,
                                 device=device)
            return grad_w, (torch.zeros(out_channels, dtype=dtype, device=device)
                            if bias_grad else None)
        return run_empty
    config = (WGRAD_INTERPRETER_CONFIG if INTERPRET
              else WGRAD_CONFIGS[operand_class(dtype, precision)])
    block_oc, block_t, block_p = (config.kwargs[k] for k in ("BLOCK_OC", "BLOCK_T", "BLOCK_P"))
    tile_programs = triton.cdiv(out_channels, block_oc) * triton.cdiv(n_taps_total, block_t)
    n_weights = out_channels * n_taps_total
    n_splits, per_split = weight_grad_splits(n_pixels, tile_programs, block_p, n_weights)
    launch = FixedLaunch(conv2d_weight_grad_kernel, lambda meta: (tile_programs, n_splits),
                         config, dict(
                             BIAS_GRAD=bias_grad,
                             INPUT_PRECISION=precision,
                             UPCAST_OPERANDS=INTERPRET and dtype == torch.bfloat16,
                             ACC_DTYPE=tl.float64 if dtype == torch.float64 else tl.float32,
                             INT64_INDEX=needs_int64_index(x, y)))
    reduce_config = triton.Config({"BLOCK_P": REDUCE_BLOCK_P, "BLOCK_C": REDUCE_BLOCK_C},
                                  num_warps=4)
    reduce_w = FixedLaunch(bias_grad_reduce_kernel,
                           lambda meta: (triton.cdiv(n_weights, REDUCE_BLOCK_C),),
                           reduce_config, {})
    reduce_b = FixedLaunch(bias_grad_reduce_kernel,
                           lambda meta: (triton.cdiv(out_channels, REDUCE_BLOCK_C),),
                           reduce_config, {})
    fixed = (n_pixels, out_h, out_w, x.shape[2], x.shape[3], in_channels, out_channels,
             kernel_w, n_taps_total, stride[0], stride[1], padding[0], padding[1],
             dilation[0], dilation[1], *x.stride(), *y.stride(), per_split)

    def run(grad_y, y, x, alpha, scale, input_scale):
        partial_w = torch.empty(n_splits * n_weights, dtype=acc_torch, device=device)
        partial_b = (torch.empty(n_splits * out_channels, dtype=acc_torch, device=device)
                     if bias_grad else partial_w)
        launch(grad_y, y, x, partial_w, partial_b, *fixed, alpha, scale, input_scale)
        grad_w = torch.empty((out_channels, kernel_h, kernel_w, in_channels), dtype=dtype,
                             device=device)
        reduce_w(partial_w, grad_w, n_splits, n_weights)
        grad_b = None
        if bias_grad:
            grad_b = torch.empty(out_channels, dtype=dtype, device=device)
            reduce_b(partial_b, grad_b, n_splits, out_channels)
        return grad_w, grad_b
    return run
