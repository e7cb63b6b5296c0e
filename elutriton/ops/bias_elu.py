"""``torch.library`` custom ops for bias + ELU family, their autograd, and the public functions.

Ops (visible to ``torch.compile`` and testable with ``torch.library.opcheck``):

- ``elutriton::bias_elu(x, bias?, alpha, scale, input_scale, dim) -> y``
- ``elutriton::elu_(x!, alpha, scale, input_scale)``: in place
- ``elutriton::bias_elu_backward(grad_y, saved, bias?, alpha, scale, input_scale, dim,
  from_result, bias_grad) -> (grad_z, grad_bias)``: grad_bias has shape [0] if not bias_grad.
  It has an autograd formula of its own, so double backward (gradient penalties) is exact.

Each call: the public function's plan (validation, cached by metadata in ``plan.py``), then
the kernel plan (layout decisions, config, grid, compiled kernel), then one launch.
"""
from typing import Optional, Tuple

import torch

from .. import reference
from .._layout import channel_split, is_dense
from .._runtime import use_triton
from .._transforms import run_transformed, transformed
from .._validate import check_bias, check_float_tensor, normalize_dim
from ..kernels.bias_elu import plan_bias_elu_backward, plan_bias_elu_forward
from ..params import celu_params, check_params, result_backward_valid, selu_params
from ..plan import NO_KEY, PlanCache, get_plan, kernel_plan, tensor_key
from .fused_op import FusedOp

_is_compiling = torch.compiler.is_compiling


def meta_like(tensor: torch.Tensor) -> torch.Tensor:
    """``torch.empty_like(tensor)`` on the meta device: its strides, no memory."""
    return torch.empty_like(tensor, device="meta")


def flat_split(y: torch.Tensor, per_channel: bool, dim: int):
    """The [n_outer, n_channels, n_inner] view for per-channel work, else one flat run."""
    return channel_split(y, dim) if per_channel else (1, 1, y.numel())


def bias_arg(bias):
    """What the kernels get for a bias: the contiguous tensor, or None."""
    return bias if bias is None or bias.is_contiguous() else bias.contiguous()


# ---------------------------------------------------------------------------------------
# Forward
# ---------------------------------------------------------------------------------------
def _forward_plan(x, bias, dim):
    """``run(x, bias, alpha, scale, input_scale, dim) -> y`` for x/bias with this metadata."""
    y_meta = meta_like(x)
    if not use_triton(x):
        stride = y_meta.stride()

        def run_reference(x, bias, alpha, scale, input_scale, dim):
            y = reference.bias_elu(x, bias, alpha, scale, input_scale, dim)
            if y.stride() != stride:
                y = torch.empty_like(x).copy_(y)
            return y
        run_reference.composite = True
        return run_reference
    # x is walked as flat storage: dense x as it is (y = empty_like(x) has its strides), other
    # x packed into y's layout first.
    pack = not is_dense(x)
    _, n_channels, n_inner = flat_split(y_meta, bias is not None, dim)
    launch = plan_bias_elu_forward(x.numel(), n_channels, n_inner, x.dtype, bias is not None)

    def run(x, bias, alpha, scale, input_scale, dim):
        y = torch.empty_like(x)
        launch(y.copy_(x) if pack else x, bias_arg(bias), y, alpha, scale, input_scale)
        return y
    return run


_FORWARD_PLANS = PlanCache("bias_elu kernel")


def _bias_elu_impl(x: torch.Tensor, bias: Optional[torch.Tensor], alpha: float, scale: float,
                   input_scale: float, dim: int) -> torch.Tensor:
    return get_plan(_FORWARD_PLANS, None, _forward_plan, x, bias, dim)(
        x, bias, alpha, scale, input_scale, dim)


bias_elu_op = FusedOp("elutriton::bias_elu", _bias_elu_impl)


@bias_elu_op.register_fake
def _(x, bias, alpha, scale, input_scale, dim):
    return torch.empty_like(x)


def _inplace_plan(x):
    """``run(x, alpha, scale, input_scale)`` applying the ELU family to x in place."""
    if not use_triton(x):
        return reference.elu_
    dense = is_dense(x)
    launch = plan_bias_elu_forward(x.numel(), 1, x.numel(), x.dtype, False)

    def run(x, alpha, scale, input_scale):
        work = x if dense else torch.empty_like(x).copy_(x)  # a dense copy, written back
        launch(work, None, work, alpha, scale, input_scale)
        if not dense:
            with _preserve_version(x):  # (the op's caller bumps x's version, once)
                x.copy_(work)
    return run


_INPLACE_PLANS = PlanCache("elu_ kernel")
_preserve_version = torch.autograd._unsafe_preserve_version_counter


def _elu_inplace_impl(x: torch.Tensor, alpha: float, scale: float, input_scale: float) -> None:
    get_plan(_INPLACE_PLANS, None, _inplace_plan, x)(x, alpha, scale, input_scale)


elu_inplace_op = FusedOp("elutriton::elu_", _elu_inplace_impl, mutates_args=("x",))


@elu_inplace_op.register_fake
def _(x, alpha, scale, input_scale):
    return None


# ---------------------------------------------------------------------------------------
# Backward
# ---------------------------------------------------------------------------------------
def _bias_elu_backward_composite(grad_y, saved, bias, alpha, scale, input_scale, dim,
                                 from_result, bias_grad):
    """The backward op in torch's ops: the CPU fallback, and under torch.func transforms
    (``FusedOp``). An empty bias gradient is a fresh tensor: outputs get a grad_fn."""
    grad_z = reference.bias_elu_backward(grad_y, saved, bias, alpha, scale, input_scale, dim,
                                         from_result)
    return grad_z, (reference.reduce_bias_grad(grad_z, dim) if bias_grad
                    else saved.new_empty(0))


def _backward_plan(grad_y, saved, bias, dim, from_result, bias_grad):
    """``run(grad_y, saved, bias, alpha, scale, input_scale) -> (grad_z, grad_bias)``."""
    if not use_triton(saved):
        # grad_z in saved's layout, as the fake (and the kernel) give it: torch's elementwise
        # result may follow grad_y's layout instead (a contiguous grad_y from a max-pool
        # backward against a channels_last y), which compiled code would not expect
        stride = meta_like(saved).stride()

        def run_reference(grad_y, saved, bias, alpha, scale, input_scale):
            grad_z, grad_bias = _bias_elu_backward_composite(
                grad_y, saved, bias, alpha, scale, input_scale, dim, from_result, bias_grad)
            if grad_z.stride() != stride:
                grad_z = torch.empty_like(saved).copy_(grad_z)
            return grad_z, grad_bias
        return run_reference
    layout = meta_like(saved)  # grad_z's layout; saved and grad_y are read in it
    pack_saved = saved.stride() != layout.stride()
    pack_grad_y = grad_y.stride() != layout.stride()
    split = flat_split(layout, bias is not None or bias_grad, dim)
    launch = plan_bias_elu_backward(split, saved.dtype, saved.device, from_result,
                                    bias is not None, bias_grad)

    def run(grad_y, saved, bias, alpha, scale, input_scale):
        grad_z = torch.empty_like(saved)
        if pack_saved:
            saved = torch.empty_like(grad_z).copy_(saved)
        if pack_grad_y:
            grad_y = torch.empty_like(grad_z).copy_(grad_y)
        grad_bias = launch(grad_y, saved, bias_arg(bias), grad_z, alpha, scale, input_scale)
        return grad_z, (saved.new_empty(0) if grad_bias is None else grad_bias)
    return run


_BACKWARD_PLANS = PlanCache("bias_elu_backward kernel")


def _bias_elu_backward_impl(grad_y: torch.Tensor, saved: torch.Tensor,
                            bias: Optional[torch.Tensor], alpha: float, scale: float,
                            input_scale: float, dim: int, from_result: bool,
                            bias_grad: bool) -> Tuple[torch.Tensor, torch.Tensor]:
    # every backward of every fused op comes here: the key is built inline (the schema fixes
    # the types of dim and the flags, so no value_key is needed)
    key = (tensor_key(grad_y), tensor_key(saved), tensor_key(bias), dim, from_result, bias_grad)
    return get_plan(_BACKWARD_PLANS, key, _backward_plan, grad_y, saved, bias, dim, from_result,
                    bias_grad)(grad_y, saved, bias, alpha, scale, input_scale)


bias_elu_backward_op = FusedOp("elutriton::bias_elu_backward", _bias_elu_backward_impl,
                               composite=_bias_elu_backward_composite)


@bias_elu_backward_op.register_fake
def _(grad_y, saved, bias, alpha, scale, input_scale, dim, from_result, bias_grad):
    grad_z = torch.empty_like(saved)
    n_channels = saved.shape[dim] if bias_grad else 0
    return grad_z, saved.new_empty(n_channels)


# Double backward. grad_z = grad_y * f'(s), grad_bias = sum of grad_z over all but dim, where
# s is y (from_result) or z = x + bias. With G = the incoming grad of grad_z plus the incoming
# grad of grad_bias broadcast along dim:
#   d/d grad_y = G * f'(s)                 (this op again, so triple backward works too)
#   d/d y      = G * grad_y * input_scale                                  for y <= 0, else 0
#   d/d z      = G * grad_y * alpha * scale * input_scale^2 * exp(input_scale * z)  for z <= 0
# and d/d x = d/d z, d/d bias = d/d z summed over all but dim.
def _setup_backward(ctx, inputs, output):
    grad_y, saved, bias, alpha, scale, input_scale, dim, from_result, bias_grad = inputs
    ctx.params = (alpha, scale, input_scale, dim, from_result, bias_grad)
    ctx.save_for_backward(grad_y, saved, bias)


def _backward_backward(ctx, gg_z, gg_bias):
    grad_y, saved, bias = ctx.saved_tensors
    alpha, scale, input_scale, dim, from_result, bias_grad = ctx.params
    g = gg_z if gg_z is not None else torch.zeros_like(saved)
    if bias_grad and gg_bias is not None:
        g = g + reference.bias_view(gg_bias, saved.dim(), dim)
    grad_grad_y = None
    if ctx.needs_input_grad[0]:
        grad_grad_y = bias_elu_backward_op(g, saved, bias, alpha, scale, input_scale, dim,
                                           from_result, False)[0]
    grad_saved = grad_bias = None
    if ctx.needs_input_grad[1] or ctx.needs_input_grad[2]:
        if from_result:
            curvature = torch.where(saved > 0, 0.0, input_scale)
        else:
            z = reference.pre_activation(saved, bias, dim)
            curvature = torch.where(z > 0, 0.0, alpha * scale * input_scale * input_scale
                                    * torch.exp(z * input_scale))
        grad_saved = g * grad_y * curvature
        if bias is not None and ctx.needs_input_grad[2]:
            grad_bias = reference.reduce_bias_grad(grad_saved, dim)
    return (grad_grad_y, grad_saved, grad_bias) + (None,) * 6


bias_elu_backward_op.register_autograd(_backward_backward, setup_context=_setup_backward)


# ---------------------------------------------------------------------------------------
# Autograd of the forward ops
# ---------------------------------------------------------------------------------------
def _setup_bias_elu(ctx, inputs, output):
    x, bias, alpha, scale, input_scale, dim = inputs
    ctx.params = (alpha, scale, input_scale, dim)
    ctx.from_result = result_backward_valid(alpha, scale, input_scale)
    ctx.has_bias = bias is not None
    # Keep y (already kept by the next layer in most networks) instead of x + bias.
    if ctx.from_result:
        ctx.save_for_backward(output, None)
    else:
        ctx.save_for_backward(x, bias)


def _bias_elu_backward(ctx, grad_y):
    saved, bias = ctx.saved_tensors
    alpha, scale, input_scale, dim = ctx.params
    bias_grad = ctx.has_bias and ctx.needs_input_grad[1]
    grad_z, grad_bias = bias_elu_backward_op(
        grad_y, saved, bias, alpha, scale, input_scale, dim, ctx.from_result, bias_grad)
    return grad_z, (grad_bias if bias_grad else None), None, None, None, None


bias_elu_op.register_autograd(_bias_elu_backward, setup_context=_setup_bias_elu)


class _EluInplace(torch.autograd.Function):
    """In-place ELU family with autograd: the result overwrites x and is what backward uses."""

    @staticmethod
    def forward(ctx, x, alpha, scale, input_scale):
        if elu_inplace_op.runs_directly(x):  # eager: mark_dirty bumps x's version, once
            _elu_inplace_impl(x, alpha, scale, input_scale)
        else:  # (traced: the custom op, which records the write)
            elu_inplace_op(x, alpha, scale, input_scale)
        ctx.mark_dirty(x)
        ctx.save_for_backward(x)
        ctx.params = (alpha, scale, input_scale)
        return x

    @staticmethod
    def backward(ctx, grad_y):
        (y,) = ctx.saved_tensors
        alpha, scale, input_scale = ctx.params
        grad_z, _ = bias_elu_backward_op(
            grad_y, y, None, alpha, scale, input_scale, 0, True, False)
        return grad_z, None, None, None


# ---------------------------------------------------------------------------------------
# Public functions: validation once per plan (see plan.py), then the op
# ---------------------------------------------------------------------------------------
def _elu_plan(op, x, alpha, scale, input_scale, inplace, records_grad, compiling):
    """Validate an elu/selu/celu call: (path, run) with path "out" (new output, ``run`` the
    kernel plan or None), "inplace", "autograd" (in place with autograd recording; ``run``
    None) or, on the PyTorch fallback (x on a device without the kernels), "direct": ``run``
    is then torch's op with the checked parameters, a function of x alone
    (``reference.fixed_elu``)."""
    check_float_tensor(op, "x", x)
    alpha, scale, input_scale = check_params(op, x.dtype, alpha, scale, input_scale)
    if inplace and records_grad and not result_backward_valid(alpha, scale, input_scale):
        raise RuntimeError(
            f"{op}: in-place ELU with autograd needs alpha >= 0, scale > 0 and "
            f"input_scale > 0 (backward is computed from the result); got alpha={alpha}, "
            f"scale={scale}, input_scale={input_scale}. Use inplace=False instead."
        )
    if not use_triton(x):
        # (torch lays the result out as empty_like(x) for every x we know of; checked once.
        # While torch.compile traces, torch's op as it is, which the compiler fuses as in the
        # unfused model: the custom op would call back into Python on every run.)
        relayout = not compiling and not inplace and meta_like(x).stride() != reference.elu(
            torch.empty_strided(x.shape, x.stride(), dtype=x.dtype, device="meta"),
            1.0, 1.0, 1.0).stride()
        return "direct", reference.fixed_elu(alpha, scale, input_scale, inplace, relayout)
    if not inplace:
        return "out", kernel_plan(_FORWARD_PLANS, _forward_plan, x, None, 0)
    if records_grad:  # grad mode on and x requires grad
        return "autograd", None
    return "inplace", kernel_plan(_INPLACE_PLANS, _inplace_plan, x)


_ELU_PLANS = PlanCache("elu")


def _elu(op, x, alpha, scale, input_scale, inplace, compiling):
    """The ELU family's public call once ``transformed`` said no (``compiling``: what
    ``torch.compiler.is_compiling()`` said for it)."""
    try:  # a non-tensor argument: no key; validation will name it
        records_grad = x.requires_grad and torch.is_grad_enabled()
        key = None if compiling else (
            op, tensor_key(x), alpha.__class__, alpha, scale.__class__, scale,
            input_scale.__class__, input_scale, inplace.__class__, inplace, records_grad)
    except NO_KEY:
        key, records_grad = None, False
    path, run = get_plan(_ELU_PLANS, key, _elu_plan, op, x, alpha, scale, input_scale, inplace,
                         records_grad, compiling)
    if path == "direct":
        return run(x)
    alpha, scale, input_scale = float(alpha), float(scale), float(input_scale)
    if path == "out":
        return bias_elu_op.call(run or _bias_elu_impl, x, None, alpha, scale, input_scale, 0)
    if path == "autograd":
        return _EluInplace.apply(x, alpha, scale, input_scale)
    elu_inplace_op.call(run or _elu_inplace_impl, x, alpha, scale, input_scale)
    return x


def elu(x: torch.Tensor, alpha: float = 1.0, scale: float = 1.0, input_scale: float = 1.0,
        inplace: bool = False) -> torch.Tensor:
    """ELU family with aten ``elu`` semantics.

    ``y = scale * x`` for x > 0, else ``alpha * scale * expm1(input_scale * x)``; fp16/bf16
    are computed in fp32 and rounded once. With ``inplace=True`` the result overwrites ``x``
    (torch's rules: needs a result-recoverable derivative when autograd is recording).
    """
    compiling = _is_compiling()  # (read once: ~0.1 us a read)
    if transformed(x, compiling):  # tracers, torch.func, forward AD (elutriton/_transforms.py)
        return run_transformed(elu, (x, alpha, scale, input_scale, inplace), {},
                               "elutriton.elu", lambda: x, lambda: (alpha, scale, input_scale),
                               inplace)
    return _elu("elutriton.elu", x, alpha, scale, input_scale, inplace, compiling)


def selu(x: torch.Tensor, inplace: bool = False) -> torch.Tensor:
    """SELU: ``elu(x, alpha=1.6732632..., scale=1.0507009...)`` as in ``torch.selu``."""
    compiling = _is_compiling()
    if transformed(x, compiling):
        return run_transformed(selu, (x, inplace), {}, "elutriton.selu", lambda: x, selu_params,
                               inplace)
    return _elu("elutriton.selu", x, *selu_params(), inplace, compiling)


def celu(x: torch.Tensor, alpha: float = 1.0, inplace: bool = False) -> torch.Tensor:
    """CELU: ``elu(x, alpha, 1, 1 / alpha)`` as in ``torch.celu``; alpha must be nonzero."""
    compiling = _is_compiling()
    if transformed(x, compiling):
        return run_transformed(celu, (x, alpha, inplace), {}, "elutriton.celu", lambda: x,
                               lambda: celu_params(alpha, "elutriton.celu"), inplace)
    return _elu("elutriton.celu", x, *celu_params(alpha, "elutriton.celu"), inplace, compiling)


def _bias_elu_plan(x, bias, alpha, scale, input_scale, dim):
    op = "elutriton.bias_elu"
    check_float_tensor(op, "x", x)
    check_params(op, x.dtype, alpha, scale, input_scale)
    if bias is None:
        dim = 0
    else:
        dim = normalize_dim(op, dim, x.dim())
        check_bias(op, bias, x, "x", x.shape[dim], "x.shape[dim]")
    run = kernel_plan(_FORWARD_PLANS, _forward_plan, x, bias, dim)
    fallback = None
    if getattr(run, "composite", False):  # the whole call is torch's ops, fixed here
        fallback = reference.fixed_bias_elu(
            float(alpha), float(scale), float(input_scale),
            None if bias is None else reference.bias_shape(bias, x.dim(), dim),
            meta_like(x).stride())
    return dim, run, fallback


_BIAS_ELU_PLANS = PlanCache("bias_elu")


def bias_elu(x: torch.Tensor, bias: Optional[torch.Tensor], alpha: float = 1.0,
             scale: float = 1.0, input_scale: float = 1.0, *, dim: int = 1) -> torch.Tensor:
    """``elu(x + bias)`` with the 1-D ``bias`` broadcast along ``dim``, in one pass.

    ``dim=1`` fits conv outputs (NCHW or channels_last storage), ``dim=-1`` linear outputs
    ``[..., C]``. ``bias=None`` is plain ELU. Backward returns grad_x and grad_bias from one
    pass over the saved output.
    """
    compiling = _is_compiling()  # (read once: ~0.1 us a read)
    if transformed(x, compiling):  # tracers, torch.func, forward AD (elutriton/_transforms.py)
        return run_transformed(bias_elu, (x, bias, alpha, scale, input_scale), {"dim": dim},
                               "elutriton.bias_elu",
                               lambda: reference.pre_activation(x, bias, dim),
                               lambda: (alpha, scale, input_scale))
    try:  # a non-tensor argument: no key; validation will name it (none while dynamo traces)
        key = None if compiling else (
            tensor_key(x), tensor_key(bias), alpha.__class__, alpha, scale.__class__, scale,
            input_scale.__class__, input_scale, dim.__class__, dim)
    except NO_KEY:
        key = None
    dim, run, fallback = get_plan(_BIAS_ELU_PLANS, key, _bias_elu_plan, x, bias, alpha, scale,
                                  input_scale, dim)
    if fallback is not None:  # a device without the kernels: torch's ops, as they are
        return fallback(x, bias)
    if compiling and not use_triton(x):
        # torch.compile on a device without the kernels: torch's ops, which the compiler
        # fuses as in the unfused model (the custom op would call back into Python)
        return reference.bias_elu(x, bias, alpha, scale, input_scale, dim)
    return bias_elu_op.call(run or _bias_elu_impl, x, bias, float(alpha), float(scale),
                            float(input_scale), dim)
