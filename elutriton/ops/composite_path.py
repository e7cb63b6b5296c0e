"""When a fused layer whose per-shape choice is the library path runs torch's composite.

The composite: the convolution (or linear) with its bias, then the in-place ``elu_``, whose
autograd keeps the result y, as the fused op does, not the pre-activation. It is the same
GPU work as eager PyTorch (one more elementwise pass than the library path, which adds the
bias inside elutriton's bias+ELU kernel) and the same host work, all of it in torch's C++:
no Python autograd Function and no Python backward. A public call runs it for a library-path
layer where the backward would be cuDNN's/cuBLAS's anyway (the Triton backward kernels and
the recompute backward of parameters whose derivative cannot be read off y need the custom
op) and where the host time matters more than the elementwise pass:

- while ``torch.compile`` traces the call. The custom op is opaque to Inductor: a compiled
  graph calls it through the dispatcher, 76.5 us of host time per conv call on the H100 machine
  against 28.4 us for eager's composite (``perf/results/NVIDIA_H100_80GB_HBM3/
  host_overhead.md``), and plain ``torch.compile`` of the fused ELU-CIFAR network ran at 0.77x
  (training) and 0.43x (inference) of the compiled unfused network (``models.md``). Traced as
  the composite, the bias and ELU are pointwise work that Inductor fuses into its own kernels
  and launches from generated code. Decided when the graph is traced
  (``torch.compiler.assume_constant_result``): the tuned table and ``ELUTRITON_PATH`` /
  ``ELUTRITON_BACKWARD`` are read then, not on later calls of the compiled graph.
- in eager mode when autograd records the call, except while a CUDA graph is being captured.
  Eager training steps of these networks are bound by host time on the H100 machine (the
  unfused ELU-CIFAR step took 6.3 ms eagerly and 3.3 ms under CUDA graphs), and there the
  library path's Python autograd (the Function, its Python backward, two Triton launches for
  grad_z and the bias gradient) cost more than the pass it saves: the fused ELU-CIFAR training
  step ran at 0.59x of the unfused one eagerly (``models.md``). On tiny CPU tensors with the
  launches stubbed, the library path's conv forward+backward took 1.70x eager's host time
  and the composite 1.26x (``perf/results/no-gpu/host_overhead_cpu.md``). A captured graph
  replays kernels without the host, so there the library path (fewer passes) runs; conv calls
  without autograd keep it too (one Triton launch against the composite's two elementwise
  ops: no more host work). A linear layer's library path is the composite's own ops (cuBLAS
  adds the bias), so eager linear calls without autograd run ``linear_composite`` as well.

Under autocast the composite gets the tensors uncast: torch's convolution and linear cast them
in C++ (``elutriton/_autocast.py``).

Both are PREDICTED to run such layers at the unfused model's speed in those modes (never
slower); unmeasured on a GPU (built after the lease).
"""
import torch
import torch.nn.functional as F

from .._layout import as_rows
from .._runtime import device_runs_triton
from ..params import result_backward_valid
from ..reference import conv_argument, elu_op
from .backward_path import CUDNN, backward_choice, read_backward_env
from .library_path import LIBRARY, choose_path

_is_current_stream_capturing = torch.cuda.is_current_stream_capturing
_grad_enabled = torch.is_grad_enabled
_elu_ = torch._C._nn.elu_


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
    return backward_choice(device, dtype, weight_shape, groups, n_pixels, has_bias, True,
                           input_grad, weight_grad, allow_tf32, False) == CUDNN


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


def eager_candidate(device, params) -> bool:
    """Whether an eager call may run the composite at all, if its per-shape choice is the
    library path: a Triton device and ELU parameters that let backward read the derivative off
    y. Part of a call's cached plan."""
    return device_runs_triton(device) and result_backward_valid(*params)


def records_grad(x, weight, bias) -> bool:
    """Whether autograd records this call (grad mode on and some input requires grad)."""
    return _grad_enabled() and (x.requires_grad or weight.requires_grad
                                or (bias is not None and bias.requires_grad))


def capturing(is_cuda: bool) -> bool:
    """Whether a CUDA graph is being captured on the current stream, for a call on a tensor
    with this ``is_cuda`` (``tensor.is_cuda``: ~0.2 us cheaper per call than comparing
    ``device.type``)."""
    return is_cuda and _is_current_stream_capturing()


class ConvComposite:
    """The part of an eager conv call's plan (an eager candidate on the library path) that
    decides, for a call that autograd records, whether it runs the composite: not while a CUDA
    graph is being captured, and only where the backward is cuDNN's (``backward_path``'s
    choice for the call's gradient flags and ``ELUTRITON_BACKWARD``'s value, read on each call
    as backward reads it; cached here per flags and value, the rest of the choice's key being
    the plan's: the conv's device, dtype (after autocast), weight shape, groups, bias, output
    pixels and TF32 flag)."""

    __slots__ = ("device", "is_cuda", "fields", "choices", "direct")

    def __init__(self, device, dtype, weight_shape, groups, n_pixels, has_bias, allow_tf32,
                 direct):
        self.device = device
        self.is_cuda = device.type == "cuda"
        self.fields = (dtype, weight_shape, groups, n_pixels, has_bias, allow_tf32)
        self.choices = {}
        self.direct = direct  # the composite with the plan's arguments (fixed_conv_composite)

    def __call__(self, input_grad, weight_grad) -> bool:
        if capturing(self.is_cuda):
            return False
        key = (read_backward_env(), input_grad, weight_grad)
        choice = self.choices.get(key)
        if choice is None:
            dtype, weight_shape, groups, n_pixels, has_bias, allow_tf32 = self.fields
            choice = self.choices[key] = backward_choice(
                self.device, dtype, weight_shape, groups, n_pixels, has_bias, True, input_grad,
                weight_grad, allow_tf32, False) == CUDNN
        return choice


def linear_runs_composite(x) -> bool:
    """For an eager linear call that autograd records and whose plan is an eager candidate:
    the composite unless a CUDA graph is being captured (the backward is torch's matmuls
    either way)."""
    return not capturing(x.is_cuda)


def conv_composite(x, weight, bias, stride, padding, dilation, groups, alpha, scale,
                   input_scale):
    """``elu_(F.conv2d(...))``: what an eager library-path conv layer runs with autograd."""
    return _elu_(F.conv2d(x, weight, bias, stride, padding, dilation, groups), alpha, scale,
                 input_scale)


def fixed_conv_composite(stride, padding, dilation, groups, alpha, scale, input_scale):
    """``conv_composite`` with everything but the tensors fixed as a call's plan resolved
    them (``padding="same"`` of an odd total kept as the string, which ``F.conv2d`` pads
    itself; pairs whose sides agree as ints, ``reference.conv_argument``): a function of
    ``(x, weight, bias, *settings)``, ``settings`` not read. What the fused layers' memo
    calls for a layer whose call ran the composite, so that a repeat gets the resolved
    arguments (the dilation of a one-tap axis dropped: ``ops/conv2d.py``), not the layer's
    own."""
    stride, padding, dilation = (conv_argument(p) for p in (stride, padding, dilation))
    elu_ = elu_op(alpha, scale, input_scale, inplace=True)

    def call(x, weight, bias, *settings):
        return elu_(F.conv2d(x, weight, bias, stride, padding, dilation, groups))
    return call


def linear_composite(x, weight, bias, alpha, scale, input_scale):
    """``elu_(F.linear(x, weight, bias))`` on 2-D rows: for other x, F.linear's output is a
    view of its 2-D result, and an in-place op on a view makes autograd rebase it (a CopySlices
    and an as_strided node, a full copy of the gradient in backward)."""
    return fixed_linear_composite(alpha, scale, input_scale)(x, weight, bias)


def fixed_linear_composite(alpha, scale, input_scale):
    """``linear_composite`` with the ELU parameters fixed (``reference.elu_op``'s bindings): a
    function of ``(x, weight, bias, *settings)``, ``settings`` not read; what an eager
    library-path linear call's plan holds, and the fused layers' memo calls."""
    elu_ = elu_op(alpha, scale, input_scale, inplace=True)

    def linear_composite_call(x, weight, bias, *settings):
        if x.dim() == 2:
            return elu_(F.linear(x, weight, bias))
        rows = elu_(F.linear(as_rows(x), weight, bias))
        return rows.view(x.shape[:-1] + (weight.shape[0],))
    return linear_composite_call
