"""Depthwise conv2d (one input channel per group) with the bias + ELU-family epilogue.

The implicit-GEMM kernel (``conv2d.py``) handles groups as a grid axis with a GEMM per group;
with one input channel per group its K tile holds one live channel out of 16 and its loads
are gathers, 128 channels apart in NHWC: on an H100 a ResNet-sized depthwise layer took
2.05 ms there against 0.05 ms for cuDNN (perf/results/). This kernel is the direct form:
each program owns a [BLOCK_P pixels, BLOCK_C output channels] tile, and for each filter tap
loads a [BLOCK_P, BLOCK_C] tile of input channels (contiguous along C in NHWC) and one weight
per channel, multiply-adds in fp32 (fp64 for fp64), then runs the shared epilogue.

Output channel ``oc`` reads input channel ``oc // multiplier`` (``multiplier = OC / C``, as
in ``F.conv2d`` with ``groups = C``).
"""
import torch
import triton
import triton.language as tl

from .._runtime import INTERPRET, needs_int64_index
from .conv_tiles import output_pixel_coords, output_tile_offsets, store_output_tile
from .launch import FixedLaunch, no_launch
from .elu_math import ELU_PARAM, bias_elu_epilogue, elu_params
from .tuning import (autotune, online_autotune_requested, register_validator, shape_key,
                     tuned_config)


def _cfg(p, c, warps):
    return triton.Config({"BLOCK_P": p, "BLOCK_C": c}, num_warps=warps)


# Short list: channel tiles wide enough for 128-bit loads of 16-bit NHWC data and at most 16
# accumulator values per thread (zero spills on sm_80/sm_90 for every dtype, fp64 included;
# 64x64 tiles with 4 warps used ~140 registers and spilled in fp64; kernel_report.md).
DEPTHWISE_CONFIGS = [_cfg(32, 64, 4), _cfg(16, 128, 4), _cfg(64, 64, 8), _cfg(32, 128, 8)]
DEPTHWISE_INTERPRETER_CONFIG = _cfg(256, 32, 4)
# Without ELUTRITON_AUTOTUNE=1 no call benchmarks configs: the tuned table's entry for the
# shape (or its bucket) serves, else this one (the 16-bit NHWC tile of the list; not measured
# against the others per shape).
DEPTHWISE_DEFAULT_CONFIG = DEPTHWISE_CONFIGS[0]
KERNEL_NAME = "depthwise_conv2d_bias_elu"
M_FIELD = 1  # the pixel count's place in depthwise_shape_key: the bucketed field


def depthwise_shape_key(dtype, n_pixels, out_channels, kernel_h, kernel_w, multiplier, has_bias):
    """Key of a depthwise shape in the tuned tables (the autotune key plus the dtype)."""
    return shape_key(str(dtype).replace("torch.", ""), n_pixels, out_channels, kernel_h,
                     kernel_w, multiplier, has_bias)


def validate_table_entry(fields, entry):
    """None if ``entry`` is one of DEPTHWISE_CONFIGS (the configs the static report checks),
    else the reason."""
    if not isinstance(entry, dict) or set(entry) != {"BLOCK_P", "BLOCK_C", "num_warps",
                                                      "num_stages"}:
        return "expected exactly BLOCK_P, BLOCK_C, num_warps, num_stages"
    if not any(entry == dict(c.kwargs, num_warps=c.num_warps, num_stages=c.num_stages)
               for c in DEPTHWISE_CONFIGS):
        return "not one of DEPTHWISE_CONFIGS"
    return None


register_validator(KERNEL_NAME, validate_table_entry, M_FIELD)


@autotune(DEPTHWISE_CONFIGS, DEPTHWISE_INTERPRETER_CONFIG,
          key=["n_pixels", "out_channels", "kernel_h", "kernel_w", "multiplier", "HAS_BIAS"])
@triton.jit
def depthwise_conv2d_bias_elu_kernel(
    x_ptr, w_ptr, bias_ptr, y_ptr,
    n_pixels, out_h, out_w, in_h, in_w, out_channels, multiplier, kernel_h, kernel_w,
    stride_h, stride_w, pad_h, pad_w, dil_h, dil_w,
    stride_xn, stride_xc, stride_xh, stride_xw,
    stride_wo, stride_wh, stride_ww,
    stride_yn, stride_yc, stride_yh, stride_yw,
    alpha: ELU_PARAM, scale: ELU_PARAM, input_scale: ELU_PARAM,
    HAS_BIAS: tl.constexpr, ACC_DTYPE: tl.constexpr, INT64_INDEX: tl.constexpr,
    BLOCK_P: tl.constexpr, BLOCK_C: tl.constexpr,
):
    """y = elu(depthwise_conv2d(x, w) + bias) for a [BLOCK_P, BLOCK_C] tile, written once.

    Args:
        x_ptr: input [N, C, H, W] with strides ``stride_x{n,c,h,w}`` (fast when NHWC).
        w_ptr: weight [OC, 1, KH, KW] with strides ``stride_wo``, ``stride_wh``, ``stride_ww``.
        bias_ptr: contiguous [OC] bias (unused without HAS_BIAS).
        y_ptr: output [N, OC, OH, OW] with strides ``stride_y{n,c,h,w}``.
        n_pixels: N * OH * OW. out_h, out_w: OH, OW. in_h, in_w: H, W.
        out_channels: OC. multiplier: OC / C (output channel oc reads input channel
            oc // multiplier).
        kernel_h, kernel_w: KH, KW.
        stride_h/w, pad_h/w, dil_h/w: conv stride, top/left zero padding, dilation.
        alpha, scale, input_scale: aten ``elu`` parameters of the epilogue (fp64 scalars, see
            ``elu_math.ELU_PARAM``).
        HAS_BIAS: add the bias in the epilogue.
        ACC_DTYPE: accumulator and epilogue dtype (tl.float32, or tl.float64 for fp64).
        INT64_INDEX: compute offsets in int64 (tensors past 2^31 - 1 elements of extent).
        BLOCK_P, BLOCK_C: tile sizes along output pixels and output channels.
    """
    alpha, scale, input_scale = elu_params(alpha, scale, input_scale, ACC_DTYPE)
    offs_p, offs_c, mask_p, mask_c = output_tile_offsets(
        tl.program_id(0), tl.program_id(1), n_pixels, out_channels, BLOCK_P, BLOCK_C,
        INT64_INDEX)
    batch, oh, ow = output_pixel_coords(offs_p, out_h, out_w)

    x_base = x_ptr + batch[:, None] * stride_xn + (offs_c // multiplier)[None, :] * stride_xc
    w_base = w_ptr + offs_c * stride_wo
    acc = tl.zeros([BLOCK_P, BLOCK_C], dtype=ACC_DTYPE)
    for kh in range(0, kernel_h):
        ih = oh * stride_h - pad_h + kh * dil_h
        row_ok = mask_p & (ih >= 0) & (ih < in_h)
        for kw in range(0, kernel_w):
            iw = ow * stride_w - pad_w + kw * dil_w
            pixel_ok = row_ok & (iw >= 0) & (iw < in_w)
            x_tile = tl.load(x_base + (ih * stride_xh + iw * stride_xw)[:, None],
                             mask=pixel_ok[:, None] & mask_c[None, :], other=0.0)
            w_tap = tl.load(w_base + kh * stride_wh + kw * stride_ww, mask=mask_c, other=0.0)
            acc += x_tile.to(ACC_DTYPE) * w_tap.to(ACC_DTYPE)[None, :]

    # Epilogue: bias + ELU family in ACC_DTYPE, one cast, one store.
    acc = bias_elu_epilogue(acc, bias_ptr + offs_c, mask_c, alpha, scale, input_scale, HAS_BIAS)
    store_output_tile(y_ptr, acc, batch, oh, ow, offs_c, mask_p, mask_c,
                      stride_yn, stride_yc, stride_yh, stride_yw)


def is_depthwise(in_channels: int, groups: int) -> bool:
    """True for the convolutions this kernel runs: one input channel per group, groups > 1."""
    return groups > 1 and groups == in_channels


def plan_depthwise_conv2d_bias_elu(x, weight, y, has_bias, stride, padding, dilation,
                                   config=None, device=None):
    """``run(x, weight, bias, y, alpha, scale, input_scale)`` for tensors with the metadata of
    x [N, C, H, W], weight [OC, 1, KH, KW] (OC a multiple of C) and y [N, OC, OH, OW] (any
    strides); ``padding`` is (top, left). ``config`` (a ``triton.Config``) when given, else
    the tuned-table entry of the shape or its bucket (for ``device``, where the calls' tensors
    will be; default x's device), else the default config (the autotuner's choice with
    ``ELUTRITON_AUTOTUNE=1``)."""
    n_batch, in_channels, in_h, in_w = x.shape
    out_channels, _, kernel_h, kernel_w = weight.shape
    _, _, out_h, out_w = y.shape
    n_pixels = n_batch * out_h * out_w
    if y.numel() == 0:
        return no_launch

    def grid(meta):
        return (triton.cdiv(n_pixels, meta["BLOCK_P"]), triton.cdiv(out_channels, meta["BLOCK_C"]))

    if config is None and INTERPRET:
        config = DEPTHWISE_INTERPRETER_CONFIG
    if config is None:
        config = tuned_config(KERNEL_NAME, depthwise_shape_key(
            x.dtype, n_pixels, out_channels, kernel_h, kernel_w, out_channels // in_channels,
            has_bias), device or x.device)
    if config is None and not online_autotune_requested():
        config = DEPTHWISE_DEFAULT_CONFIG
    launch = FixedLaunch(depthwise_conv2d_bias_elu_kernel, grid, config, dict(
        HAS_BIAS=has_bias,
        ACC_DTYPE=tl.float64 if x.dtype == torch.float64 else tl.float32,
        INT64_INDEX=needs_int64_index(x, weight, y),
    ))
    fixed = (n_pixels, out_h, out_w, in_h, in_w, out_channels, out_channels // in_channels,
             kernel_h, kernel_w,
             stride[0], stride[1], padding[0], padding[1], dilation[0], dilation[1],
             *x.stride(), weight.stride(0), weight.stride(2), weight.stride(3), *y.stride())

    def run(x, weight, bias, y, alpha, scale, input_scale):
        launch(x, weight, weight if bias is None else bias, y, *fixed, alpha, scale, input_scale)
    return run


def launch_depthwise_conv2d_bias_elu(x, weight, bias, y, stride, padding, dilation, alpha,
                                     scale, input_scale, config=None):
    """Plan and run the kernel once (benchmarks and tests; the ops cache plans)."""
    plan_depthwise_conv2d_bias_elu(x, weight, y, bias is not None, stride, padding, dilation,
                                   config, x.device)(x, weight, bias, y, float(alpha),
                                                     float(scale), float(input_scale))
    return y
