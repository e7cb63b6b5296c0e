"""The ELU family's parameters, in one place for the ops, the modules and ``fuse``.

Every member is aten's ``elu(x, alpha, scale, input_scale)``:

- ELU(alpha):  ``(alpha, 1, 1)``
- SELU:        ``(SELU_ALPHA, SELU_SCALE, 1)``
- CELU(alpha): ``(alpha, 1, 1 / alpha)``, alpha != 0

The checks here run once per launch plan (on a plan-cache miss), never per call.
"""
import math
import numbers

import torch

from ._symbolic import is_symbolic

_is_compiling = torch.compiler.is_compiling

SELU_ALPHA = 1.6732632423543772848170429916717
SELU_SCALE = 1.0507009873554804934193349852946

# The largest parameter magnitude each compute dtype holds (fp16/bf16 compute in fp32).
_COMPUTE_MAX = {
    torch.float16: torch.finfo(torch.float32).max,
    torch.bfloat16: torch.finfo(torch.float32).max,
    torch.float32: torch.finfo(torch.float32).max,
    torch.float64: torch.finfo(torch.float64).max,
}


def elu_params(alpha=1.0, op="ELU"):
    """``(alpha, scale, input_scale)`` of ``ELU(alpha)``; raises for a non-real or non-finite
    alpha (torch's ``nn.ELU(alpha=nan)`` is accepted, and computes NaN)."""
    (alpha,) = check_real(op, alpha=alpha)
    return alpha, 1.0, 1.0


def selu_params():
    """``(alpha, scale, input_scale)`` of ``SELU``."""
    return SELU_ALPHA, SELU_SCALE, 1.0


def celu_params(alpha=1.0, op="CELU"):
    """``(alpha, scale, input_scale)`` of ``CELU(alpha)``; raises for alpha == 0 or non-real."""
    (alpha,) = check_real(op, alpha=alpha)
    if alpha == 0:
        raise ValueError(f"{op}: `alpha` must be nonzero (CELU divides by alpha)")
    return alpha, 1.0, 1.0 / alpha


def module_params(module: torch.nn.Module):
    """(alpha, scale, input_scale) of an ``nn.ELU``, ``nn.SELU`` or ``nn.CELU`` (or ours)."""
    if isinstance(module, torch.nn.ELU):
        return elu_params(module.alpha, type(module).__name__)
    if isinstance(module, torch.nn.SELU):
        return selu_params()
    if isinstance(module, torch.nn.CELU):
        return celu_params(module.alpha, type(module).__name__)
    raise TypeError(f"expected nn.ELU, nn.SELU or nn.CELU, got {type(module).__name__}")


def result_backward_valid(alpha: float, scale: float, input_scale: float) -> bool:
    """True when dy/dz can be recovered from y alone: y > 0 exactly when z > 0.

    That holds for alpha >= 0, scale > 0, input_scale > 0 (every ELU, SELU and CELU with a
    positive alpha). Otherwise the pre-activation has to be kept.
    """
    return alpha >= 0 and scale > 0 and input_scale > 0


def check_real(op: str, **params) -> tuple:
    """Return the parameters as floats; raise for non-real or non-finite values. A symbolic
    parameter (``torch.compile(..., dynamic=True)`` makes float arguments symbolic: see
    ``_symbolic.py``) is returned as it is, unchecked (as torch's own ops take it)."""
    values = []
    for name, value in params.items():
        if isinstance(value, torch.SymFloat) and is_symbolic(value):
            values.append(value)
            continue
        if isinstance(value, bool) or not isinstance(value, numbers.Real):
            raise TypeError(f"{op}: expected `{name}` to be a real number, got {value!r}")
        if _is_compiling():
            # (dynamo cannot trace math.isfinite of a symbolic float, and cannot tell one from a
            # constant: while it traces, values pass unchecked, as torch's F.elu takes them;
            # eager calls and the modules' constructors check them. Outside dynamo a symbol is
            # a SymFloat, passed on above.)
            values.append(value)
            continue
        if not math.isfinite(value):
            raise ValueError(f"{op}: expected `{name}` to be finite, got {value!r}")
        values.append(float(value))
    return tuple(values)


def check_params(op: str, dtype: torch.dtype, alpha, scale, input_scale) -> tuple:
    """``check_real`` plus: each parameter must fit the dtype the math runs in for ``dtype``
    (fp32 for fp16/bf16/fp32 tensors), or it would turn into inf inside the kernel."""
    values = check_real(op, alpha=alpha, scale=scale, input_scale=input_scale)
    limit = _COMPUTE_MAX.get(dtype)
    if limit is not None:
        compute = "float64" if dtype == torch.float64 else "float32"
        for name, value in zip(("alpha", "scale", "input_scale"), values):
            if not _is_compiling() and not is_symbolic(value) and abs(value) > limit:
                raise ValueError(f"{op}: `{name}`={value!r} overflows {compute}, the dtype the "
                                 f"ELU math runs in for {dtype} tensors")
    return values
