"""PyTorch composites with the fused ops' semantics: the fallback for every op.

They run on devices the Triton kernels do not serve (CPU without ``TRITON_INTERPRET=1``). There
a user should pay nothing for elutriton, so the forwards are torch's own composites and,
called with autograd recording, are differentiated by torch's autograd (the ops mark these
runs ``composite``, and ``FusedOp`` calls them as they are: torch handles autograd, dispatch
modes and tensor subclasses for its own ops). The backward composites serve the custom ops' traced path and the
double-backward formula (``ops/bias_elu.py``).
"""
import torch
import torch.nn.functional as F

from .params import selu_params

aten = torch.ops.aten
_nn = torch._C._nn  # the C bindings F.elu calls: no torch.ops dispatch from Python
_grad_enabled = torch.is_grad_enabled


def bias_shape(bias: torch.Tensor, ndim: int, dim: int) -> list:
    """The shape in which a 1-D ``bias`` broadcasts along ``dim`` of an ``ndim``-D tensor."""
    shape = [1] * ndim
    shape[dim] = bias.shape[0]
    return shape


def bias_view(bias: torch.Tensor, ndim: int, dim: int) -> torch.Tensor:
    """Reshape a 1-D ``bias`` to broadcast along ``dim`` of an ``ndim``-D tensor."""
    return bias.view(bias_shape(bias, ndim, dim))


def elu(x, alpha, scale, input_scale):
    """The ELU family out of place: the same op with or without autograd (what a
    torch.jit.trace records must not depend on grad mode: ``elutriton/_transforms.py``)."""
    return _nn.elu(x, alpha, scale, input_scale)


def elu_op(alpha, scale, input_scale, inplace=False):
    """torch's ELU-family op with these (float) parameters fixed: a function of the tensor.
    SELU's parameters and plain ELU's (1, 1, 1) go to the bindings that imply them
    (``torch.selu``, ``elu`` with its defaults): the same aten ``elu`` kernel and autograd node
    (EluBackward), bit for bit, ~0.5-0.7 us cheaper per call on CPU than parsing three
    Scalars (measured here on a tiny tensor). (``torch.celu`` is not used: its autograd node
    is another.)"""
    params = (alpha, scale, input_scale)
    if params == selu_params():
        return torch.selu_ if inplace else torch.selu
    if params == (1.0, 1.0, 1.0):
        return _nn.elu_ if inplace else _nn.elu
    op = _nn.elu_ if inplace else _nn.elu
    return lambda z: op(z, alpha, scale, input_scale)


def elu_of_temporary_op(alpha, scale, input_scale):
    """``_elu_of_temporary`` with its parameters fixed (``elu_op``'s bindings): a function
    of a fresh tensor z."""
    out, inplace = elu_op(alpha, scale, input_scale), elu_op(alpha, scale, input_scale, True)

    def call(z):
        return out(z) if z.requires_grad and _grad_enabled() else inplace(z)
    return call


def fixed_elu(alpha, scale, input_scale, inplace, relayout):
    """The ELU family with its parameters fixed: a function of ``x`` alone, torch's own op
    (its autograd, its in-place checks and version bump). The PyTorch fallback of a public
    ``elu``/``selu``/``celu`` call whose plan checked the parameters
    (``elutriton/ops/bias_elu.py``); ``relayout``: copy the result into ``empty_like(x)``'s
    layout, for an x whose result torch lays out otherwise (the plan decides that once)."""
    op = elu_op(float(alpha), float(scale), float(input_scale), inplace)
    if inplace or not relayout:
        return op

    def call(x):
        return torch.empty_like(x).copy_(op(x))
    return call


def _elu_of_temporary(z, alpha, scale, input_scale):
    """elu(z) for a fresh z: in place when autograd does not record, else out of place."""
    if z.requires_grad and _grad_enabled():
        return _nn.elu(z, alpha, scale, input_scale)
    return _nn.elu_(z, alpha, scale, input_scale)


def bias_elu(x, bias, alpha, scale, input_scale, dim):
    """elu(x + bias along dim), differentiable."""
    if bias is None:
        return elu(x, alpha, scale, input_scale)
    return _elu_of_temporary(x + bias_view(bias, x.dim(), dim), alpha, scale, input_scale)


def fixed_bias_elu(alpha, scale, input_scale, shape, out_stride):
    """``bias_elu`` with everything but the tensors fixed: a function of ``(x, bias)``, with
    the bias viewed as ``shape`` (``bias_shape``; None: no bias) and the result laid out with
    ``out_stride`` (``empty_like(x)``'s, as the kernel's: a copy where torch's add laid it
    out otherwise). The fallback of a public call whose plan checked and resolved these
    (``elutriton/ops/bias_elu.py``)."""
    if shape is None:
        elu_of_x = elu_op(alpha, scale, input_scale)

        def call(x, bias):
            y = elu_of_x(x)
            return y if y.stride() == out_stride else torch.empty_like(x).copy_(y)
        return call
    elu_of_temporary = elu_of_temporary_op(alpha, scale, input_scale)

    def call(x, bias):
        y = elu_of_temporary(x + bias.view(shape))
        return y if y.stride() == out_stride else torch.empty_like(x).copy_(y)
    return call


def elu_(x, alpha, scale, input_scale):
    """In-place ELU family on ``x``."""
    aten.elu_(x, alpha, scale, input_scale)


def conv2d_bias_elu(x, weight, bias, stride, padding, dilation, groups, alpha, scale,
                    input_scale):
    """elu(conv2d(x, weight, bias)), differentiable."""
    z = F.conv2d(x, weight, bias, stride, padding, dilation, groups)
    return _elu_of_temporary(z, alpha, scale, input_scale)


def conv_argument(pair):
    """A stride, padding or dilation pair as ``F.conv2d`` parses it fastest: one int where both
    sides agree (an int argument parses ~0.3 us faster than a pair, measured on CPU); a padding
    string ("same", "valid") as it is."""
    if isinstance(pair, str):
        return pair
    return pair[0] if pair[0] == pair[1] else tuple(pair)


def fixed_conv2d_bias_elu(stride, padding, dilation, groups, alpha, scale, input_scale,
                          out_stride, out_format):
    """``conv2d_bias_elu`` with everything but the tensors fixed: a function of ``(x, weight,
    bias, *settings)`` (``settings``, the call's other arguments, which these are resolved
    from, are not read), whose result is laid out with ``out_stride`` (a copy in
    ``out_format`` where torch's convolution laid it out otherwise), as ``in_layout`` gives.
    The fallback of a public call whose plan fixed these (``elutriton/ops/conv2d.py``): ~1 us
    less per call on CPU than passing them through ``conv2d_bias_elu`` as the plan resolved
    them (measured in alternated runs, the host table's tiny conv forward: 1.57x eager's time
    before, 1.49x after)."""
    stride, padding, dilation = (conv_argument(p) for p in (stride, padding, dilation))
    elu_of_temporary = elu_of_temporary_op(float(alpha), float(scale), float(input_scale))

    def call(x, weight, bias, *settings):
        y = elu_of_temporary(F.conv2d(x, weight, bias, stride, padding, dilation, groups))
        # (the check inline: in_layout's call costs more than the check, on every call)
        return y if y.stride() == out_stride else in_layout(y, y.shape, out_stride, out_format)
    call.composite = True
    return call


def linear_bias_elu(x, weight, bias, alpha, scale, input_scale):
    """elu(linear(x, weight, bias)), differentiable; contiguous like the fused op's output."""
    return _elu_of_temporary(F.linear(x, weight, bias), alpha, scale, input_scale)


def fixed_linear_bias_elu(alpha, scale, input_scale):
    """``linear_bias_elu`` with the ELU parameters fixed: a function of ``(x, weight, bias,
    *settings)`` (``settings``, the call's parameters these are, are not read); the fallback
    of a public call whose plan checked them (``elutriton/ops/linear.py``)."""
    elu_of_temporary = elu_of_temporary_op(float(alpha), float(scale), float(input_scale))

    def call(x, weight, bias, *settings):
        return elu_of_temporary(F.linear(x, weight, bias))
    call.composite = True
    return call


# torch ops only: callers may run them directly under autograd, modes and subclasses
bias_elu.composite = conv2d_bias_elu.composite = linear_bias_elu.composite = True


def in_layout(y, shape, stride, memory_format):
    """``y``, or a copy of it laid out as the fused kernels' output (``memory_format``), so
    the fake kernels describe both paths."""
    if y.stride() == stride:
        return y
    return torch.empty(shape, dtype=y.dtype, device=y.device,
                       memory_format=memory_format).copy_(y)


def pre_activation(saved, bias, dim):
    """z = saved + bias along ``dim`` (saved is the forward input when y was not kept)."""
    return saved if bias is None else saved + bias_view(bias, saved.dim(), dim)


def bias_elu_backward(grad_y, saved, bias, alpha, scale, input_scale, dim, from_result):
    """grad_z = dL/dz from the saved result (from_result) or input (+ bias); a new tensor.

    Differentiable (aten ``elu_backward`` has a derivative), so double backward can use it.
    """
    if not from_result:
        saved = pre_activation(saved, bias, dim)
    grad_z = aten.elu_backward(grad_y, alpha, scale, input_scale, from_result, saved)
    # aten's scalar path gives grad * scale at NaN; the kernels' rule is NaN in, NaN out.
    return grad_z.masked_fill(torch.isnan(saved), float("nan"))


def reduce_bias_grad(grad_z: torch.Tensor, dim: int) -> torch.Tensor:
    """Sum ``grad_z`` over every dimension but ``dim``."""
    return grad_z.sum(dim=[d for d in range(grad_z.dim()) if d != dim])
