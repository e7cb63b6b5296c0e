"""The per-shape choice of the fused conv's backward: elutriton's Triton kernels or cuDNN.

- "triton": the weight-gradient kernel (``ops/conv_weight_grad.py``: dW and db) and, when the
  input needs a gradient, the input-gradient kernel (``ops/conv_input_grad.py``: dX); both read
  grad_y and the saved y and apply the ELU derivative while loading, so grad_z is never
  written.
- "cudnn": the fused bias+ELU backward kernel writes grad_z (and db), then
  ``aten.convolution_backward`` (cuDNN on a GPU) gives dX and dW.

Choice (``backward_path``):
1. cuDNN wherever the Triton kernels do not apply: groups != 1, parameters whose derivative
   cannot be read off y (``params.result_backward_valid``), tensors that do not run Triton,
   no weight gradient wanted, or a double backward (``create_graph``: these kernels have no
   autograd formula; the cuDNN path stays differentiable);
2. ``ELUTRITON_BACKWARD=triton`` or ``=cudnn`` forces one (read when the backward runs);
3. else the tuned table's measured choice for the shape or its batch-size bucket: section
   ``paths/conv2d_bias_elu/backward`` when the input needs a gradient,
   ``paths/conv2d_bias_elu/backward_params`` when it does not (the images at a network's first
   layer), written by ``python -m perf.tune --backward``;
4. else a rule from the H100's measurements of the ELU-CIFAR stem (3 -> 192 channels, 5x5,
   batch 128; ``perf/results/NVIDIA_H100_80GB_HBM3/logs_call1/backward_choice.log`` and
   ``logs_call5/backward_choice_fp32.log``; forward+backward times, Triton against cuDNN
   backward) for layers with fewer than 16 input channels (those the forward runs with its
   flattened K loop): Triton in fp16 (0.83 against 1.75 ms with an input gradient, 0.33
   against 1.55 ms without: cuDNN's fp16 weight gradient of this layer is slow) and in fp32
   without an input gradient (0.50 against 0.56 ms); cuDNN in bf16 (0.89 against 0.56 ms with,
   0.37 against 0.35 without) and in fp32 with an input gradient (1.57 against 0.84 ms: the
   input-gradient kernel's 3-channel tile is the slow part). cuDNN for 16 or more input
   channels (on the 10 such ELU-CIFAR layers, 3 dtypes, with and without an input gradient,
   Triton was up to 21x slower and never more than 2% faster). Other GPUs are unmeasured:
   tune them (``perf.tune --backward``). These times are of the transposed-GEMM input
   gradient; the per-tap kernel that now serves such small filters
   (``kernels/conv_input_grad_taps.py``) is unmeasured, so the rule keeps them.
"""
import os

import torch

from .._runtime import device_runs_triton, env_reader
from ..kernels.conv2d import conv_shape_key, dot_precision
from ..kernels.tuning import tuned_path
from ..plan import PlanCache, get_plan

BACKWARD_ENV = "ELUTRITON_BACKWARD"
# ELUTRITON_BACKWARD as os.environ holds it, for keys that compare readings on every call
# (the composite's choice, the fused layers' memo): ~0.03 us against ~0.75 us for
# os.environ.get (``_runtime.env_reader``)
read_backward_env = env_reader(BACKWARD_ENV)
TRITON, CUDNN = "triton", "cudnn"
BACKWARD_CHOICES = (TRITON, CUDNN)
SMALL_CHANNELS = 16
# table sections (under "paths"): with and without an input gradient
SECTION_INPUT_GRAD = "conv2d_bias_elu/backward"
SECTION_PARAMS_ONLY = "conv2d_bias_elu/backward_params"


def forced_backward(value):
    """The backward that ``value``, ``ELUTRITON_BACKWARD``'s value, forces ("triton",
    "cudnn"), or None ("auto")."""
    if value not in BACKWARD_CHOICES + ("auto",):
        raise ValueError(f"{BACKWARD_ENV} must be 'triton', 'cudnn' or 'auto', got {value!r}")
    return None if value == "auto" else value


def _choose(forced, device, dtype, allow_tf32, n_pixels, weight_shape, groups, has_bias,
            from_result, input_grad, weight_grad, create_graph):
    """The module docstring's steps for a backward with this key (every field it reads)."""
    if (not from_result or groups != 1 or not weight_grad or create_graph
            or not device_runs_triton(device)):
        return CUDNN
    forced = forced_backward(forced)
    if forced is not None:
        return forced
    out_channels, in_per_group, kernel_h, kernel_w = weight_shape
    key = conv_shape_key(dtype, dot_precision(dtype, allow_tf32), n_pixels, out_channels,
                         in_per_group, kernel_h, kernel_w, 1, has_bias)
    section = SECTION_INPUT_GRAD if input_grad else SECTION_PARAMS_ONLY
    measured = tuned_path(section, key, device)
    if measured is not None:
        return measured
    if in_per_group >= SMALL_CHANNELS:
        return CUDNN
    if dtype == torch.float16 or (dtype == torch.float32 and not input_grad):
        return TRITON
    return CUDNN


_CHOICES = PlanCache("conv2d_bias_elu backward choice")


def backward_path(grad_y, weight_shape, groups, n_pixels, has_bias, from_result, input_grad,
                  weight_grad, allow_tf32, create_graph) -> str:
    """"triton" or "cudnn" for the backward of a conv with weight ``weight_shape`` [OC, C/groups,
    KH, KW] and ``n_pixels`` output pixels whose grad_y is ``grad_y``; ``input_grad``,
    ``weight_grad``: whether x and the weight need gradients; ``allow_tf32``: torch's cuDNN flag;
    ``create_graph``: a double backward (module docstring)."""
    return backward_choice(grad_y.device, grad_y.dtype, weight_shape, groups, n_pixels, has_bias,
                           from_result, input_grad, weight_grad, allow_tf32, create_graph)


def backward_choice(device, dtype, weight_shape, groups, n_pixels, has_bias, from_result,
                    input_grad, weight_grad, allow_tf32, create_graph) -> str:
    """``backward_path`` for a grad_y on ``device`` of ``dtype`` (also asked before the forward,
    ``ops/composite_path.py``). The decision is cached under every field it reads, the
    environment variable's value included (one lookup per call)."""
    key = (os.environ.get(BACKWARD_ENV, "auto"), device, dtype, allow_tf32, n_pixels,
           tuple(weight_shape), groups, has_bias, from_result, input_grad, weight_grad,
           create_graph)
    return get_plan(_CHOICES, key, _choose, *key)
