"""The public functions under the tracers that are not dynamo: torch.fx and torch.jit.trace.

torch.compile (dynamo) traces the custom ops (``ops/fused_op.py``). Two older tracers call the
public functions with arguments that have no metadata to check or plan with:

- ``torch.fx.symbolic_trace`` (also ``elutriton.fuse`` on a model that already holds
  elutriton layers) passes ``fx.Proxy`` objects. The call is recorded as one ``call_function``
  node of the public function itself, with its arguments as given: what ``torch.fx.wrap`` does,
  here from any call site. The traced ``GraphModule`` calls the function when it runs.
- ``torch.jit.trace`` passes tensors whose sizes are traced tensors, and it records only the ops
  that go through torch's dispatcher: a Triton launch is not one, so a trace of the kernel path
  would replay the output's ``torch.empty`` without the kernel, an uninitialised result. The
  call runs torch's composite (``reference.py``) instead: the trace holds aten ops (conv2d,
  linear, elu), runs without elutriton, and computes what the unfused model computes. Its
  arguments are checked by torch's ops, its activation parameters here.
"""
import torch

_Proxy = torch.fx.Proxy
_Tensor = torch.Tensor
_jit_tracing = torch._C._is_tracing  # (dynamo cannot trace this C call: never asked there)
_is_compiling = torch.compiler.is_compiling


def traced(x) -> bool:
    """Whether a public call on ``x`` (its first tensor argument) is being traced by torch.fx
    (``x`` is a Proxy) or by torch.jit.trace. ~0.1 us: one check per call."""
    return ((x.__class__ is not _Tensor and isinstance(x, _Proxy))
            or (not _is_compiling() and _jit_tracing()))


def record(public, composite, x, args, kwargs):
    """A traced call (``traced(x)``) of ``public(*args, **kwargs)``: the fx node, or under
    torch.jit.trace ``composite()`` (torch's ops, which the trace records)."""
    if isinstance(x, _Proxy):
        return x.tracer.create_proxy("call_function", public, args, kwargs)
    return composite()
