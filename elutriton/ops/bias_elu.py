"""``torch.library`` custom ops for bias + ELU family, their autograd, and the public functions.

Ops (visible to ``torch.compile`` and testable with ``torch.library.opcheck``):

- ``elutriton::bias_elu(x, bias?, alpha, scale, input_scale, dim) -> y``
- ``elutriton::elu_(x!, alpha, scale, input_scale)``: in place
- ``elutriton::bias_elu_backward(grad_y, saved, bias?, alpha, scale, input_scale, dim,
  from_result, bias_grad) -> (grad_z, grad_bias)``: grad_bias has shape [0] if not bias_grad.
"""
from typing import Optional, Tuple

import torch

from .. import reference
from .._layout import channel_split, is_dense
from .._runtime import use_triton
from .._validate import check_bias, check_float_tensor, check_real, normalize_dim
from ..kernels.bias_elu import launch_bias_elu_backward, launch_bias_elu_forward
from .fused_op import FusedOp

SELU_ALPHA = 1.6732632423543772848170429916717
SELU_SCALE = 1.0507009873554804934193349852946


def result_backward_valid(alpha: float, scale: float, input_scale: float) -> bool:
    """True when dy/dz can be recovered from y alone: y > 0 exactly when z > 0.

    That holds for alpha >= 0, scale > 0, input_scale > 0 (every ELU, SELU and CELU with a
    positive alpha). Otherwise the pre-activation has to be kept.
    """
    return alpha >= 0 and scale > 0 and input_scale > 0


def _dense(tensor: torch.Tensor) -> torch.Tensor:
    """``tensor`` itself when dense, else a dense copy in ``torch.empty_like``'s layout."""
    if is_dense(tensor):
        return tensor
    return torch.empty_like(tensor).copy_(tensor)


def _like(tensor: torch.Tensor, layout: torch.Tensor) -> torch.Tensor:
    """``tensor`` with ``layout``'s strides (copied only when they differ)."""
    if tensor.stride() == layout.stride():
        return tensor
    return torch.empty_like(layout).copy_(tensor)


def _split(x: torch.Tensor, per_channel: bool, dim: int):
    """The [n_outer, n_channels, n_inner] view for per-channel work, else one flat run."""
    return channel_split(x, dim) if per_channel else (1, 1, x.numel())


# ---------------------------------------------------------------------------------------
# Forward
# ---------------------------------------------------------------------------------------
def _bias_elu_impl(x: torch.Tensor, bias: Optional[torch.Tensor], alpha: float, scale: float,
                   input_scale: float, dim: int) -> torch.Tensor:
    y = torch.empty_like(x)
    if not use_triton(x):
        return reference.bias_elu(x, bias, alpha, scale, input_scale, dim, out=y)
    _, n_channels, n_inner = _split(y, bias is not None, dim)
    bias = bias.contiguous() if bias is not None else None
    return launch_bias_elu_forward(_like(x, y), bias, y, n_channels, n_inner, alpha, scale,
                                   input_scale)


bias_elu_op = FusedOp("elutriton::bias_elu", _bias_elu_impl)


@bias_elu_op.register_fake
def _(x, bias, alpha, scale, input_scale, dim):
    return torch.empty_like(x)


def _elu_inplace_impl(x: torch.Tensor, alpha: float, scale: float, input_scale: float) -> None:
    if not use_triton(x):
        torch.ops.aten.elu_(x, alpha, scale, input_scale)
        return
    work = _dense(x)  # x itself when dense; else a dense copy, written back below
    launch_bias_elu_forward(work, None, work, 1, work.numel(), alpha, scale, input_scale)
    if work is not x:
        x.copy_(work)


elu_inplace_op = FusedOp("elutriton::elu_", _elu_inplace_impl, mutates_args=("x",))


@elu_inplace_op.register_fake
def _(x, alpha, scale, input_scale):
    return None


# ---------------------------------------------------------------------------------------
# Backward
# ---------------------------------------------------------------------------------------
def _bias_elu_backward_impl(grad_y: torch.Tensor, saved: torch.Tensor,
                            bias: Optional[torch.Tensor], alpha: float, scale: float,
                            input_scale: float, dim: int, from_result: bool,
                            bias_grad: bool) -> Tuple[torch.Tensor, torch.Tensor]:
    grad_z = torch.empty_like(saved)
    if not use_triton(saved):
        reference.bias_elu_backward(grad_y, saved, bias, alpha, scale, input_scale, dim,
                                    from_result, grad_z)
        grad_bias = reference.reduce_bias_grad(grad_z, dim) if bias_grad else grad_z.new_empty(0)
        return grad_z, grad_bias
    saved = _like(saved, grad_z)
    split = _split(grad_z, bias is not None or bias_grad, dim)
    accumulator = None
    if bias_grad:
        acc_dtype = torch.float64 if saved.dtype == torch.float64 else torch.float32
        accumulator = torch.zeros(split[1], dtype=acc_dtype, device=saved.device)
    launch_bias_elu_backward(
        _like(grad_y, grad_z), saved, bias.contiguous() if bias is not None else None, grad_z,
        accumulator, split, alpha, scale, input_scale, from_result,
    )
    grad_bias = accumulator.to(saved.dtype) if bias_grad else grad_z.new_empty(0)
    return grad_z, grad_bias


bias_elu_backward_op = FusedOp("elutriton::bias_elu_backward", _bias_elu_backward_impl)


@bias_elu_backward_op.register_fake
def _(grad_y, saved, bias, alpha, scale, input_scale, dim, from_result, bias_grad):
    grad_z = torch.empty_like(saved)
    n_channels = saved.shape[dim] if bias_grad else 0
    return grad_z, saved.new_empty(n_channels)


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


def save_epilogue_context(ctx, x, weight, bias, output, alpha, scale, input_scale):
    """Autograd context of a GEMM (conv/linear) + bias + ELU op: keep x, weight and y.

    Without a result-recoverable derivative (see ``result_backward_valid``) y is not kept and
    backward recomputes the pre-activation from x and weight instead.
    """
    ctx.elu = (alpha, scale, input_scale)
    ctx.has_bias = bias is not None
    ctx.from_result = result_backward_valid(alpha, scale, input_scale)
    ctx.save_for_backward(x, weight, output if ctx.from_result else None, bias)


def epilogue_backward(ctx, grad_y, recompute_gemm, dim):
    """(x, weight, grad_z, grad_bias or None) for a context saved by ``save_epilogue_context``.

    ``recompute_gemm(x, weight)`` gives the bias-free GEMM output, used only when y was not
    kept; ``dim`` is the output's channel dimension. The bias gradient is reduced in the same
    pass as grad_z; it is None when the bias needs no gradient.
    """
    x, weight, y, bias = ctx.saved_tensors
    alpha, scale, input_scale = ctx.elu
    if ctx.from_result:
        saved, saved_bias = y, None
    else:
        saved, saved_bias = recompute_gemm(x, weight), bias
    bias_grad = ctx.has_bias and ctx.needs_input_grad[2]
    grad_z, grad_bias = bias_elu_backward_op(
        grad_y, saved, saved_bias, alpha, scale, input_scale, dim, ctx.from_result, bias_grad)
    return x, weight, grad_z, (grad_bias if bias_grad else None)


class _EluInplace(torch.autograd.Function):
    """In-place ELU family with autograd: the result overwrites x and is what backward uses."""

    @staticmethod
    def forward(ctx, x, alpha, scale, input_scale):
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
# Public functions
# ---------------------------------------------------------------------------------------
def elu(x: torch.Tensor, alpha: float = 1.0, scale: float = 1.0, input_scale: float = 1.0,
        inplace: bool = False) -> torch.Tensor:
    """ELU family with aten ``elu`` semantics.

    ``y = scale * x`` for x > 0, else ``alpha * scale * expm1(input_scale * x)``; fp16/bf16
    are computed in fp32 and rounded once. With ``inplace=True`` the result overwrites ``x``
    (torch's rules: needs a result-recoverable derivative when autograd is recording).
    """
    return _elu(x, alpha, scale, input_scale, inplace, "elutriton.elu")


def _elu(x, alpha, scale, input_scale, inplace, op):
    check_float_tensor(op, "x", x)
    alpha, scale, input_scale = check_real(op, alpha=alpha, scale=scale, input_scale=input_scale)
    if not inplace:
        return bias_elu_op(x, None, alpha, scale, input_scale, 0)
    if torch.is_grad_enabled() and x.requires_grad:
        if not result_backward_valid(alpha, scale, input_scale):
            raise RuntimeError(
                f"{op}: in-place ELU with autograd needs alpha >= 0, scale > 0 and "
                f"input_scale > 0 (backward is computed from the result); got alpha={alpha}, "
                f"scale={scale}, input_scale={input_scale}. Use inplace=False instead."
            )
        return _EluInplace.apply(x, alpha, scale, input_scale)
    elu_inplace_op(x, alpha, scale, input_scale)
    return x


def selu(x: torch.Tensor, inplace: bool = False) -> torch.Tensor:
    """SELU: ``elu(x, alpha=1.6732632..., scale=1.0507009...)`` as in ``torch.selu``."""
    return _elu(x, SELU_ALPHA, SELU_SCALE, 1.0, inplace, "elutriton.selu")


def celu(x: torch.Tensor, alpha: float = 1.0, inplace: bool = False) -> torch.Tensor:
    """CELU: ``elu(x, alpha, 1, 1 / alpha)`` as in ``torch.celu``; alpha must be nonzero."""
    (alpha,) = check_real("elutriton.celu", alpha=alpha)
    if alpha == 0:
        raise ValueError("elutriton.celu: `alpha` must be nonzero (CELU divides by alpha)")
    return _elu(x, alpha, 1.0, 1.0 / alpha, inplace, "elutriton.celu")


def bias_elu(x: torch.Tensor, bias: Optional[torch.Tensor], alpha: float = 1.0,
             scale: float = 1.0, input_scale: float = 1.0, *, dim: int = 1) -> torch.Tensor:
    """``elu(x + bias)`` with the 1-D ``bias`` broadcast along ``dim``, in one pass.

    ``dim=1`` fits conv outputs (NCHW or channels_last storage), ``dim=-1`` linear outputs
    ``[..., C]``. ``bias=None`` is plain ELU. Backward returns grad_x and grad_bias from one
    pass over the saved output.
    """
    op = "elutriton.bias_elu"
    check_float_tensor(op, "x", x)
    alpha, scale, input_scale = check_real(op, alpha=alpha, scale=scale, input_scale=input_scale)
    if bias is None:
        return bias_elu_op(x, None, alpha, scale, input_scale, 0)
    dim = normalize_dim(op, dim, x.dim())
    check_bias(op, bias, x, dim)
    return bias_elu_op(x, bias, alpha, scale, input_scale, dim)
