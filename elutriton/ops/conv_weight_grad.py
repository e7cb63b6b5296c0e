"""``elutriton::conv2d_weight_grad``: the Triton weight (and bias) gradient of the fused conv,
and when its backward uses it instead of cuDNN's.

The kernel (``kernels/conv_weight_grad.py``) reads grad_y and the saved output y, applies the
ELU derivative while loading and reduces dW and db over the output pixels with split-K partial
sums; grad_z is never written when the input needs no gradient (an image batch at a network's
first layer).

When (``weight_grad_path``):
1. ``ELUTRITON_WGRAD=triton`` or ``=cudnn`` forces one (read when the backward runs);
2. else Triton for convolutions with groups == 1 and fewer than 16 input channels (the
   layers the forward runs with its flattened K loop: an RGB stem) whose input needs no
   gradient (a network's first layer: then grad_z is never written, and the backward is this
   one kernel plus its reductions), cuDNN for the rest (with an input gradient, cuDNN's
   backward needs grad_z anyway, and the Triton path would add launches). This
   rule is PREDICTED, not measured: on the H100 cuDNN's weight gradient of the ELU-CIFAR stem
   (3 -> 192 channels, 5x5, batch 128) took 1.36 ms for a 3.8 GFLOP, ~100 MB problem, so a
   kernel near the memory floor (~35 us) should win by a wide margin there, but the Triton
   kernel has not run on a GPU yet.
Only for parameters whose derivative can be read off y, and only without ``create_graph``
(this op has no autograd formula; the cuDNN path stays differentiable for double backward).
"""
import os
from typing import List, Tuple

import torch

from .._runtime import use_triton
from ..kernels.conv_weight_grad import plan_conv2d_weight_grad
from ..plan import PlanCache, get_plan, tensor_key
from .bias_elu import meta_like
from .fused_op import FusedOp

WGRAD_ENV = "ELUTRITON_WGRAD"
SMALL_CHANNELS = 16


def weight_grad_path(tensor, in_per_group, groups, from_result, input_grad) -> str:
    """"triton" or "cudnn" for the weight gradient of a convolution with ``in_per_group``
    input channels per group whose tensors are on ``tensor``'s device; ``input_grad``: whether
    x needs a gradient too (module docstring)."""
    if not from_result or groups != 1 or not use_triton(tensor):
        return "cudnn"
    forced = os.environ.get(WGRAD_ENV, "auto")
    if forced not in ("triton", "cudnn", "auto"):
        raise ValueError(f"{WGRAD_ENV} must be 'triton', 'cudnn' or 'auto', got {forced!r}")
    if forced != "auto":
        return forced
    return "triton" if in_per_group < SMALL_CHANNELS and not input_grad else "cudnn"


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
