"""``elutriton.linear_bias_elu``: F.linear semantics with the bias + ELU-family epilogue.

The GEMM runs on the implicit-GEMM conv kernel as a 1x1 convolution of a 1x1 image
(``x [M, K] -> [M, K, 1, 1]``, ``weight [N, K] -> [N, K, 1, 1]``), so conv and linear share one
K loop and one epilogue. Autograd keeps x, weight and y; grad_z and grad_bias come from the
fused bias+ELU backward kernel, grad_x and grad_weight from two matmuls (cuBLAS on a GPU).
"""
from typing import Optional

import torch
import torch.nn.functional as F

from .._runtime import use_triton
from .._validate import check_float_tensor, check_real, check_same_device_dtype
from ..kernels.conv2d import launch_conv2d_bias_elu
from .fused_op import FusedOp
from .bias_elu import epilogue_backward, save_epilogue_context

OP = "elutriton.linear_bias_elu"
UNIT = [1, 1]
NO_PADDING = [0, 0]


def _empty_output(x, weight):
    return torch.empty(x.shape[:-1] + (weight.shape[0],), dtype=x.dtype, device=x.device)


def _linear_bias_elu_impl(x: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor],
                          alpha: float, scale: float, input_scale: float) -> torch.Tensor:
    y = _empty_output(x, weight)
    if not use_triton(x):
        return torch.ops.aten.elu.out(F.linear(x, weight, bias), alpha, scale, input_scale, out=y)
    rows = x.reshape(-1, x.shape[-1])
    launch_conv2d_bias_elu(
        rows[:, :, None, None], weight[:, :, None, None],
        bias.contiguous() if bias is not None else None, y.view(-1, y.shape[-1])[:, :, None, None],
        UNIT, NO_PADDING, UNIT, 1, alpha, scale, input_scale,
        allow_tf32=torch.backends.cuda.matmul.allow_tf32)
    return y


linear_bias_elu_op = FusedOp("elutriton::linear_bias_elu", _linear_bias_elu_impl)


@linear_bias_elu_op.register_fake
def _(x, weight, bias, alpha, scale, input_scale):
    return _empty_output(x, weight)


def _setup(ctx, inputs, output):
    x, weight, bias, alpha, scale, input_scale = inputs
    save_epilogue_context(ctx, x, weight, bias, output, alpha, scale, input_scale)


def _backward(ctx, grad_y):
    x, weight, grad_z, grad_bias = epilogue_backward(ctx, grad_y, F.linear, grad_y.dim() - 1)
    grad_x = grad_z @ weight if ctx.needs_input_grad[0] else None
    grad_w = None
    if ctx.needs_input_grad[1]:
        grad_w = grad_z.reshape(-1, grad_z.shape[-1]).t() @ x.reshape(-1, x.shape[-1])
    return grad_x, grad_w, grad_bias, None, None, None


linear_bias_elu_op.register_autograd(_backward, setup_context=_setup)


def linear_bias_elu(x: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor] = None,
                    alpha: float = 1.0, scale: float = 1.0,
                    input_scale: float = 1.0) -> torch.Tensor:
    """``elu(F.linear(x, weight, bias))`` in one kernel; ``x`` is ``[..., in_features]``."""
    check_float_tensor(OP, "input", x)
    check_float_tensor(OP, "weight", weight)
    check_same_device_dtype(OP, "weight", weight, "input", x)
    alpha, scale, input_scale = check_real(OP, alpha=alpha, scale=scale, input_scale=input_scale)
    if weight.dim() != 2:
        raise ValueError(f"{OP}: expected 2-D `weight` [out_features, in_features], got shape "
                         f"{tuple(weight.shape)}")
    if x.dim() < 1 or x.shape[-1] != weight.shape[1]:
        raise ValueError(f"{OP}: `input` of shape {tuple(x.shape)} and `weight` of shape "
                         f"{tuple(weight.shape)} cannot be multiplied (last dim of input must "
                         f"be in_features = {weight.shape[1]})")
    if bias is not None:
        check_float_tensor(OP, "bias", bias)
        check_same_device_dtype(OP, "bias", bias, "input", x)
        if bias.dim() != 1 or bias.shape[0] != weight.shape[0]:
            raise ValueError(f"{OP}: expected `bias` of shape ({weight.shape[0]},), got "
                             f"{tuple(bias.shape)}")
    return linear_bias_elu_op(x, weight, bias, alpha, scale, input_scale)
