"""``elutriton::conv2d_input_grad``: the Triton input gradient of the fused conv
(``kernels/conv_input_grad.py``): dX straight from grad_y, the saved output y and the weight,
the ELU derivative applied while loading, so grad_z is never written (filters of at most 128
C * KH * KW columns: per-tap products and a gather, ``kernels/conv_input_grad_taps.py``). The
backward uses it with the weight-gradient kernel when ``ops/backward_path.py`` chooses the
Triton backward for a layer whose input needs a gradient.
"""
from typing import List

import torch

from ..kernels.conv_input_grad import plan_conv2d_input_grad
from ..plan import PlanCache, get_plan, tensor_key
from .bias_elu import meta_like
from .fused_op import FusedOp


def _plan(grad_y, y, weight, x, stride, padding, dilation, allow_tf32):
    pack_grad_y = grad_y.stride() != meta_like(y).stride()
    run = plan_conv2d_input_grad(x, y, weight, stride, padding, dilation, allow_tf32)

    def plan(grad_y, y, weight, alpha, scale, input_scale):
        if pack_grad_y:  # the kernel reads grad_y through y's strides
            grad_y = torch.empty_like(y).copy_(grad_y)
        return run(grad_y, y, weight, alpha, scale, input_scale)
    return plan


_PLANS = PlanCache("conv2d_input_grad kernel")


def _conv2d_input_grad_impl(grad_y: torch.Tensor, y: torch.Tensor, weight: torch.Tensor,
                            x: torch.Tensor, stride: List[int], padding: List[int],
                            dilation: List[int], alpha: float, scale: float,
                            input_scale: float, allow_tf32: bool) -> torch.Tensor:
    # x is read for its metadata only (grad_x gets its shape and memory format)
    key = (tensor_key(grad_y), tensor_key(y), tensor_key(weight), tensor_key(x), tuple(stride),
           tuple(padding), tuple(dilation), allow_tf32)
    return get_plan(_PLANS, key, _plan, grad_y, y, weight, x, stride, padding, dilation,
                    allow_tf32)(grad_y, y, weight, alpha, scale, input_scale)


conv2d_input_grad_op = FusedOp("elutriton::conv2d_input_grad", _conv2d_input_grad_impl)


@conv2d_input_grad_op.register_fake
def _(grad_y, y, weight, x, stride, padding, dilation, alpha, scale, input_scale, allow_tf32):
    return torch.empty_like(x)


def conv2d_input_grad(grad_y, y, weight, x, stride, padding, dilation, elu, allow_tf32):
    """grad_x [N, C, H, W] in x's memory format."""
    return conv2d_input_grad_op(grad_y, y, weight, x, list(stride), list(padding),
                                list(dilation), *elu, bool(allow_tf32))
