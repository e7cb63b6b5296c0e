"""``elutriton::conv2d_weight_grad``: the Triton weight (and bias) gradient of the fused conv.

The kernel (``kernels/conv_weight_grad.py``) reads grad_y and the saved output y, applies the
ELU derivative while loading and reduces dW and db over the output pixels with split-K partial
sums; grad_z is never written.

Used by the conv's backward where ``ops/backward_path.py`` chooses the Triton backward.
"""
from typing import List, Tuple

import torch

from ..kernels.conv_weight_grad import plan_conv2d_weight_grad
from ..plan import PlanCache, get_plan, tensor_key
from .bias_elu import meta_like
from .fused_op import FusedOp


def _plan(grad_y, y, x, weight_shape, stride, padding, dilation, bias_grad, allow_tf32):
    pack_grad_y = grad_y.stride() != meta_like(y).stride()
    run = plan_conv2d_weight_grad(x, y, weight_shape, stride, padding, dilation, bias_grad,
                                  allow_tf32)

    def plan(grad_y, y, x, alpha, scale, input_scale):
        if pack_grad_y:  # the kernel reads grad_y through y's strides
            grad_y = torch.empty_like(y).copy_(grad_y)
        grad_w, grad_b = run(grad_y, y, x, alpha, scale, input_scale)
        return grad_w, (y.new_empty(0) if grad_b is None else grad_b)
    return plan


_PLANS = PlanCache("conv2d_weight_grad kernel")


def _conv2d_weight_grad_impl(grad_y: torch.Tensor, y: torch.Tensor, x: torch.Tensor,
                             weight_shape: List[int], stride: List[int], padding: List[int],
                             dilation: List[int], alpha: float, scale: float,
                             input_scale: float, bias_grad: bool,
                             allow_tf32: bool) -> Tuple[torch.Tensor, torch.Tensor]:
    # the key inline (lists of ints and flags, typed by the schema): no value_key recursion
    key = (tensor_key(grad_y), tensor_key(y), tensor_key(x), tuple(weight_shape), tuple(stride),
           tuple(padding), tuple(dilation), bias_grad, allow_tf32)
    return get_plan(_PLANS, key, _plan, grad_y, y, x, weight_shape, stride, padding, dilation,
                    bias_grad, allow_tf32)(grad_y, y, x, alpha, scale, input_scale)


conv2d_weight_grad_op = FusedOp("elutriton::conv2d_weight_grad", _conv2d_weight_grad_impl)


@conv2d_weight_grad_op.register_fake
def _(grad_y, y, x, weight_shape, stride, padding, dilation, alpha, scale, input_scale,
      bias_grad, allow_tf32):
    out_channels, in_channels, kernel_h, kernel_w = weight_shape
    grad_w = y.new_empty((out_channels, kernel_h, kernel_w, in_channels))
    return grad_w, y.new_empty(out_channels if bias_grad else 0)


def conv2d_weight_grad(grad_y, y, x, weight_shape, stride, padding, dilation, elu, bias_grad,
                       allow_tf32):
    """(grad_weight [OC, C, KH, KW] (channels_last-strided), grad_bias or None)."""
    grad_w, grad_b = conv2d_weight_grad_op(grad_y, y, x, list(weight_shape), list(stride),
                                           list(padding), list(dilation), *elu, bias_grad,
                                           bool(allow_tf32))
    return grad_w.permute(0, 3, 1, 2), (grad_b if bias_grad else None)
