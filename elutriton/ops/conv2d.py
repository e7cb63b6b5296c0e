"""``elutriton.conv2d_bias_elu``: F.conv2d semantics, one Triton kernel, ELU-family epilogue.

Depthwise convolutions (groups == in_channels > 1) run ``kernels/depthwise_conv2d.py``;
every other convolution runs the implicit-GEMM kernel of ``kernels/conv2d.py``.

Op: ``elutriton::conv2d_bias_elu(x, weight, bias?, stride, padding, dilation, groups, alpha,
scale, input_scale) -> y`` on 4-D inputs with symmetric int padding; the public function maps
every F.conv2d argument form onto it (pairs, 'same'/'valid', unbatched inputs).

Autograd keeps x, weight and y (never the pre-activation z): grad_z and grad_bias come from
the fused bias+ELU backward kernel, grad_x and grad_weight from torch's convolution backward
(cuDNN on a GPU).
"""
import numbers
from typing import List, Optional

import torch
import torch.nn.functional as F
from torch._prims_common import suggest_memory_format

from .._runtime import use_triton
from .._validate import check_float_tensor, check_real, check_same_device_dtype
from ..kernels.conv2d import launch_conv2d_bias_elu
from ..kernels.depthwise_conv2d import is_depthwise, launch_depthwise_conv2d_bias_elu
from .fused_op import FusedOp
from .bias_elu import epilogue_backward, save_epilogue_context

OP = "elutriton.conv2d_bias_elu"


def conv_output_format(x: torch.Tensor, weight: torch.Tensor) -> torch.memory_format:
    """torch's rule: channels_last output when the input or the weight is channels_last."""
    if torch.channels_last in (suggest_memory_format(x), suggest_memory_format(weight)):
        return torch.channels_last
    return torch.contiguous_format


def conv_output_size(size: int, kernel: int, stride: int, padding: int, dilation: int) -> int:
    return (size + 2 * padding - dilation * (kernel - 1) - 1) // stride + 1


def _empty_output(x, weight, stride, padding, dilation):
    n, _, h, w = x.shape
    oc, _, kh, kw = weight.shape
    out_h = conv_output_size(h, kh, stride[0], padding[0], dilation[0])
    out_w = conv_output_size(w, kw, stride[1], padding[1], dilation[1])
    return torch.empty((n, oc, out_h, out_w), dtype=x.dtype, device=x.device,
                       memory_format=conv_output_format(x, weight))


def _conv2d_bias_elu_impl(x: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor],
                          stride: List[int], padding: List[int], dilation: List[int], groups: int,
                          alpha: float, scale: float, input_scale: float) -> torch.Tensor:
    y = _empty_output(x, weight, stride, padding, dilation)
    if not use_triton(x):
        z = F.conv2d(x, weight, bias, stride, padding, dilation, groups)
        return torch.ops.aten.elu.out(z, alpha, scale, input_scale, out=y)
    # Both kernels read channels as the contiguous dimension: NHWC input (and, for the GEMM
    # kernel, a weight stored [OC, KH, KW, Cg]). NCHW inputs pay one layout pass here (the
    # output still follows torch's memory-format rule); the weight copy is small.
    x_nhwc = x.contiguous(memory_format=torch.channels_last)
    bias = bias.contiguous() if bias is not None else None
    if is_depthwise(x.shape[1], groups):
        return launch_depthwise_conv2d_bias_elu(x_nhwc, weight, bias, y, stride, padding,
                                                dilation, alpha, scale, input_scale)
    return launch_conv2d_bias_elu(
        x_nhwc, weight.contiguous(memory_format=torch.channels_last), bias, y, stride, padding,
        dilation, groups, alpha, scale, input_scale, allow_tf32=torch.backends.cudnn.allow_tf32)


conv2d_bias_elu_op = FusedOp("elutriton::conv2d_bias_elu", _conv2d_bias_elu_impl)


@conv2d_bias_elu_op.register_fake
def _(x, weight, bias, stride, padding, dilation, groups, alpha, scale, input_scale):
    return _empty_output(x, weight, stride, padding, dilation)


def _setup(ctx, inputs, output):
    x, weight, bias, stride, padding, dilation, groups, alpha, scale, input_scale = inputs
    ctx.conv = (stride, padding, dilation, groups)
    save_epilogue_context(ctx, x, weight, bias, output, alpha, scale, input_scale)


def _backward(ctx, grad_y):
    stride, padding, dilation, groups = ctx.conv
    x, weight, grad_z, grad_bias = epilogue_backward(
        ctx, grad_y, lambda x, w: F.conv2d(x, w, None, stride, padding, dilation, groups), 1)
    grad_x, grad_w = None, None
    if ctx.needs_input_grad[0] or ctx.needs_input_grad[1]:
        grad_x, grad_w, _ = torch.ops.aten.convolution_backward(
            grad_z, x, weight, None, stride, padding, dilation, False, [0, 0], groups,
            [ctx.needs_input_grad[0], ctx.needs_input_grad[1], False])
    return (grad_x, grad_w, grad_bias) + (None,) * 7


conv2d_bias_elu_op.register_autograd(_backward, setup_context=_setup)


# ---------------------------------------------------------------------------------------
# Public function: F.conv2d's argument conventions
# ---------------------------------------------------------------------------------------
def _pair(name, value, minimum):
    if isinstance(value, bool):
        raise TypeError(f"{OP}: expected `{name}` to be an int or a pair of ints, got {value!r}")
    if isinstance(value, numbers.Integral):
        value = (int(value), int(value))
    if (not isinstance(value, (tuple, list)) or len(value) != 2
            or not all(isinstance(v, numbers.Integral) and not isinstance(v, bool) for v in value)):
        raise TypeError(f"{OP}: expected `{name}` to be an int or a pair of ints, got {value!r}")
    if min(value) < minimum:
        bound = "positive" if minimum == 1 else "non-negative"
        raise ValueError(f"{OP}: `{name}` must be {bound}, got {tuple(value)}")
    return [int(v) for v in value]


def _resolve_padding(padding, weight, stride, dilation):
    """(symmetric padding, extra right/bottom padding) for int, pair, 'valid' and 'same'."""
    if isinstance(padding, str):
        if padding == "valid":
            return [0, 0], None
        if padding != "same":
            raise ValueError(f"{OP}: `padding` string must be 'same' or 'valid', got {padding!r}")
        if stride != [1, 1]:
            raise ValueError(f"{OP}: padding='same' is not supported for strided convolutions")
        totals = [d * (k - 1) for d, k in zip(dilation, weight.shape[2:])]
        left = [t // 2 for t in totals]
        extra = [t - 2 * lo for t, lo in zip(totals, left)]
        # Like F.conv2d: an odd total pads one more on the bottom/right, explicitly.
        return left, (extra if any(extra) else None)
    return _pair("padding", padding, 0), None


def _check_conv_args(x, weight, bias, groups):
    check_float_tensor(OP, "input", x)
    check_float_tensor(OP, "weight", weight)
    check_same_device_dtype(OP, "weight", weight, "input", x)
    if x.dim() not in (3, 4):
        raise ValueError(f"{OP}: expected 3-D (unbatched) or 4-D (batched) `input`, got "
                         f"{x.dim()}-D with shape {tuple(x.shape)}")
    if weight.dim() != 4:
        raise ValueError(f"{OP}: expected 4-D `weight` [out_channels, in_channels / groups, kH, "
                         f"kW], got shape {tuple(weight.shape)}")
    if isinstance(groups, bool) or not isinstance(groups, numbers.Integral) or groups < 1:
        raise ValueError(f"{OP}: `groups` must be a positive int, got {groups!r}")
    in_channels = x.shape[-3]
    out_channels = weight.shape[0]
    if out_channels % groups != 0:
        raise ValueError(f"{OP}: out_channels ({out_channels}) must be divisible by `groups` "
                         f"({groups})")
    if weight.shape[1] * groups != in_channels:
        raise ValueError(
            f"{OP}: expected `input` with {weight.shape[1] * groups} channels (weight "
            f"{tuple(weight.shape)} with groups={groups}), got {in_channels} channels")
    if bias is not None:
        check_float_tensor(OP, "bias", bias)
        check_same_device_dtype(OP, "bias", bias, "input", x)
        if bias.dim() != 1 or bias.shape[0] != out_channels:
            raise ValueError(f"{OP}: expected `bias` of shape ({out_channels},), got "
                             f"{tuple(bias.shape)}")


def conv2d_bias_elu(x: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor] = None,
                    stride=1, padding=0, dilation=1, groups: int = 1, alpha: float = 1.0,
                    scale: float = 1.0, input_scale: float = 1.0) -> torch.Tensor:
    """``elu(F.conv2d(x, weight, bias, stride, padding, dilation, groups))`` in one kernel.

    Arguments follow ``F.conv2d`` (int or pair stride/padding/dilation, ``padding='same'`` or
    ``'valid'``, any ``groups``, 3-D unbatched or 4-D input); ``alpha, scale, input_scale`` are
    aten ``elu``'s (SELU: ``elutriton.ops.bias_elu.SELU_ALPHA/SELU_SCALE``; CELU(a): ``a, 1,
    1/a``). The output is channels_last when the input or weight is, as in torch.
    """
    _check_conv_args(x, weight, bias, groups)
    alpha, scale, input_scale = check_real(OP, alpha=alpha, scale=scale, input_scale=input_scale)
    stride = _pair("stride", stride, 1)
    dilation = _pair("dilation", dilation, 1)
    padding, extra = _resolve_padding(padding, weight, stride, dilation)
    unbatched = x.dim() == 3
    if unbatched:
        x = x.unsqueeze(0)
    if extra is not None:
        x = F.pad(x, [0, extra[1], 0, extra[0]])
    for axis, name in ((0, "height"), (1, "width")):
        padded = x.shape[2 + axis] + 2 * padding[axis]
        span = dilation[axis] * (weight.shape[2 + axis] - 1) + 1
        if padded < span:
            raise ValueError(
                f"{OP}: kernel {name} with dilation spans {span} but the padded input {name} "
                f"is {padded}: the output would be empty")
    y = conv2d_bias_elu_op(x, weight, bias, stride, padding, dilation, int(groups), alpha, scale,
                           input_scale)
    return y.squeeze(0) if unbatched else y
