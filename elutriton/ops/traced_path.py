"""What ``torch.compile`` traces for a fused layer whose per-shape choice is the library path.

The custom op is opaque to Inductor: a compiled graph calls it through the dispatcher, 76.5 us
of host time per conv call on the H100 machine against 28.4 us for eager's composite
(``perf/results/NVIDIA_H100_80GB_HBM3/host_overhead.md``), and plain ``torch.compile`` of the
fused ELU-CIFAR network ran at 0.77x (training) and 0.43x (inference) of the compiled unfused
network (``models.md``). A layer on the library path runs cuDNN/cuBLAS and then an elementwise
bias+ELU: work Inductor does itself, launching from its generated code. So while dynamo traces
such a layer, and where its backward would be cuDNN's anyway, the public op emits torch's
composite instead: the convolution (or linear), then the in-place ``aten.elu_``, whose autograd
keeps the result y, as the fused op does, not the pre-activation. Layers on the fused kernel,
and convolutions whose backward is elutriton's Triton kernels, keep the custom op.

The decision is made when the graph is traced (``torch.compiler.assume_constant_result``): the
tuned table and ``ELUTRITON_PATH`` / ``ELUTRITON_BACKWARD`` are read then, not on later calls
of the compiled graph. PREDICTED to run library-path layers at the compiled unfused model's
speed; unmeasured (built after the lease).
"""
import os

import torch

from .._runtime import device_runs_triton
from ..params import result_backward_valid
from .backward_path import BACKWARD_ENV, CUDNN, _choose
from .library_path import LIBRARY, choose_path


@torch.compiler.assume_constant_result
def conv_traces_composite(device, dtype, allow_tf32, n_pixels, weight_shape, groups, has_bias,
                          layout, params, input_grad, weight_grad, any_grad) -> bool:
    """Whether a traced conv (weight ``weight_shape`` [OC, C/groups, KH, KW], ``n_pixels``
    output pixels, x in ``layout`` "channels_last" or "nchw") is emitted as torch's composite:
    a Triton device, the library path, and no Triton backward (``any_grad``: some input needs a
    gradient, and then the ELU's derivative must be readable from y)."""
    out_channels, in_per_group, kernel_h, kernel_w = weight_shape
    if not device_runs_triton(device) or choose_path(
            "conv2d_bias_elu", dtype, allow_tf32, n_pixels, out_channels // groups, in_per_group,
            kernel_h, kernel_w, groups, has_bias, device, layout) != LIBRARY:
        return False
    if not any_grad:
        return True
    if not result_backward_valid(*params):
        return False
    return _choose(os.environ.get(BACKWARD_ENV, "auto"), device, dtype, allow_tf32, n_pixels,
                   weight_shape, groups, has_bias, True, input_grad, weight_grad,
                   False) == CUDNN


@torch.compiler.assume_constant_result
def linear_traces_composite(device, dtype, allow_tf32, rows, weight_shape, has_bias, params,
                            any_grad) -> bool:
    """Whether a traced linear (``rows`` rows, weight [out, in]) is emitted as torch's
    composite: a Triton device and the library path (its backward is torch's either way)."""
    out_features, in_features = weight_shape
    if not device_runs_triton(device) or choose_path(
            "linear_bias_elu", dtype, allow_tf32, rows, out_features, in_features, 1, 1, 1,
            has_bias, device, None) != LIBRARY:
        return False
    return not any_grad or result_backward_valid(*params)


def needs_grad(*tensors) -> bool:
    """Whether autograd will record this call (grad mode on and some input requires grad)."""
    return torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in tensors)


def elu_in_place(y, alpha, scale, input_scale):
    """``aten.elu_`` on a fresh layer output: its autograd keeps y (the result), not z."""
    return torch.ops.aten.elu_(y, alpha, scale, input_scale)
