"""The public functions under tracers and transforms that the kernels cannot serve.

torch.compile (dynamo) traces the custom ops (``ops/fused_op.py``) where the kernels run, and
torch's composite on a device without them (the public functions and ``nn/layers.py``). Other
tracers and transforms call the public functions with arguments the kernels cannot take, or
that would lose what the transform adds:

- ``torch.fx.symbolic_trace`` (also ``elutriton.fuse`` on a model that already holds
  elutriton layers) passes ``fx.Proxy`` objects, with no metadata to check or plan with. The
  call is recorded as one ``call_function`` node of the public function itself, with its
  arguments as given: what ``torch.fx.wrap`` does, here from any call site. The traced
  ``GraphModule`` calls the function when it runs.
- ``torch.jit.trace`` passes tensors whose sizes are traced tensors, and it records only the
  ops that go through torch's dispatcher: a Triton launch is not one, so a trace of the kernel
  path would replay the output's ``torch.empty`` without the kernel, an uninitialised result.
- ``torch.func`` transforms (vmap, grad, jacrev, jvp) pass wrapped tensors: a kernel cannot
  read a vmap batch (the storage belongs to the wrapper), and torch's custom ops refuse
  torch.func's autograd.
- forward-mode AD (``torch.autograd.forward_ad``): a kernel drops the tangent, and on the
  library path the tangent of the convolution alone would come out, silently wrong.

In the last three the call runs torch's composite instead (``reference.py``, out of place:
what a trace records does not depend on grad mode): aten ops (convolution, linear, elu), so
the trace runs without elutriton and the transforms and tangents are torch's own, computing
what the unfused model computes at its speed. Tensor arguments are then checked by torch's
ops (their errors), the activation parameters by elutriton.
"""
import torch
import torch.autograd.forward_ad as _forward_ad

from . import reference
from .params import check_params

_Proxy = torch.fx.Proxy
_Tensor = torch.Tensor
# (dynamo cannot trace these C calls: never asked while it traces)
_jit_tracing = torch._C._is_tracing
_functorch_active = torch._C._are_functorch_transforms_active
_is_compiling = torch.compiler.is_compiling


def transformed(x, compiling=None) -> bool:
    """Whether a public call on ``x`` (its first tensor argument) is traced by torch.fx
    (``x`` is a Proxy) or torch.jit.trace, or runs under a torch.func transform or inside a
    forward-mode AD level. ~0.15 us: one check per call. ``compiling``:
    ``torch.compiler.is_compiling()`` where the caller read it already (a public call reads
    it once: ~0.1 us a read), None to read it here."""
    if x.__class__ is not _Tensor and isinstance(x, _Proxy):
        return True
    if compiling is None:
        compiling = _is_compiling()
    return not compiling and (_jit_tracing() or _functorch_active()
                              or _forward_ad._current_level >= 0)


def run_transformed(public, args, kwargs, op, pre_activation, params, inplace=False):
    """A call of ``public(*args, **kwargs)`` for which ``transformed(args[0])``: for fx its
    node; else torch's composite, the ELU family out of place on ``pre_activation()`` (in
    place on ``args[0]`` when ``inplace``) with ``params()`` = (alpha, scale, input_scale),
    checked for ``op`` (a function: celu's alpha is checked only where the composite runs)."""
    x = args[0]
    if isinstance(x, _Proxy):
        return x.tracer.create_proxy("call_function", public, args, kwargs)
    z = None if inplace else pre_activation()
    alpha, scale, input_scale = check_params(op, x.dtype, *params())
    if inplace:
        reference.elu_(x, alpha, scale, input_scale)
        return x
    return reference.elu(z, alpha, scale, input_scale)
