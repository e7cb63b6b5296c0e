"""``FusedOp``: a ``torch.library`` custom op with a direct eager path.

A custom op is what ``torch.compile`` and ``torch.library.opcheck`` need, but each eager call
goes through the dispatcher, the op's autograd wrapper and its output-aliasing check: on the
H100 machine of ``perf/results/`` that cost ~30 us of host time per call
(``host_overhead.md``: custom op vs public op), about the GPU time of a small conv layer.
``FusedOp`` registers the custom op as usual and, for eager calls on plain tensors, runs the
implementation directly, with the same autograd formula through an equivalent
``torch.autograd.Function``. Anything that traces (dynamo, AOT autograd, FakeTensor, other
tensor subclasses or dispatch modes) gets the custom op.

The eager path takes the implementation as an argument (``call(run, *args)``), so a public
function can pass the ``run`` of its cached launch plan (``elutriton/plan.py``) instead of
the generic ``impl``, which would look the plan up again. A ``run`` marked ``composite`` (the
PyTorch fallback, ``reference.py``) is called as it is: it is torch ops, so torch's autograd,
dispatch modes and subclasses apply to it directly. The autograd Function is written in
the old style (``forward(ctx, ...)``): the new style with a separate ``setup_context`` binds
``inspect.signature`` on every ``apply`` (~15 us here against ~4 us); and it is applied through
the C ``apply`` directly, past the Python wrapper's functorch unwrapping (another ~6 us), where
no functorch transform or wrapped tensor is involved (else the wrapper, or the custom op under
an active transform).
"""
from typing import Callable, Optional, Sequence

import torch


_PLAIN_TYPES = (torch.Tensor, torch.nn.Parameter)
_is_compiling = torch.compiler.is_compiling
_dispatch_modes = torch._C._len_torch_dispatch_stack
_functorch_active = torch._C._are_functorch_transforms_active
_legacy_batched = torch._C._functorch.is_legacy_batchedtensor
_inference_mode = torch.is_inference_mode_enabled
_is_functorch_wrapped = torch._C._functorch.is_functorch_wrapped_tensor
# The C ``apply`` under ``torch.autograd.Function.apply``: that Python wrapper spends ~6 us per
# call unwrapping "dead" functorch wrappers from every argument (and checking for a
# setup_context this Function does not define); ``call`` goes straight to C where neither can
# apply (no functorch transform active, no functorch-wrapped tensor among the arguments).
_c_apply = torch._C._FunctionBase.__dict__["apply"]


class FusedOp:
    """``torch.library.custom_op(name, impl)`` plus a direct eager path (module docstring).

    Args:
        name: the op's qualified name, e.g. ``"elutriton::bias_elu"``.
        impl: the implementation (type-annotated, positional arguments only).
        mutates_args: names of the arguments ``impl`` writes to; the eager path bumps their
            version counters as the dispatcher would.
        composite: ``impl`` in torch's ops, run under a transform (``transform_active``: a
            backward under vmap for ``autograd.grad(..., is_grads_batched=True)`` or
            ``jacobian(..., vectorize=True)``), where a kernel cannot read the batched
            tensors and torch's custom ops refuse torch.func's autograd; None: the custom op.
    """

    def __init__(self, name: str, impl: Callable, mutates_args: Sequence[str] = (),
                 composite: Optional[Callable] = None):
        self.name = name
        self.impl = impl
        self.composite = composite
        self.custom_op = torch.library.custom_op(name, impl, mutates_args=tuple(mutates_args))
        params = list(self.custom_op._opoverload._schema.arguments)
        self._mutated = [i for i, p in enumerate(params) if p.name in mutates_args]
        self._tensors = [i for i, p in enumerate(params) if "Tensor" in str(p.type)]
        self._function: Optional[type] = None

    def register_fake(self, fn: Callable) -> Callable:
        self.custom_op.register_fake(fn)
        return fn

    def register_autograd(self, backward: Callable, setup_context: Callable) -> None:
        """Same contract as ``CustomOpDef.register_autograd``; used by both paths."""
        self.custom_op.register_autograd(backward, setup_context=setup_context)

        def forward(ctx, run, *args):
            # the registered backward indexes needs_input_grad like the op's arguments
            ctx.needs_input_grad = ctx.needs_input_grad[1:]
            output = run(*args)
            setup_context(ctx, args, output)
            return output

        def function_backward(ctx, *grads):
            return (None,) + tuple(backward(ctx, *grads))

        # named after the op, so its autograd node (and profiles) say "<op>Backward"
        Function = type(name_of(self.name), (torch.autograd.Function,),
                        {"forward": staticmethod(forward),
                         "backward": staticmethod(function_backward)})
        self._function = Function
        self._apply = _c_apply.__get__(None, Function)

    def __call__(self, *args):
        return self.call(self.impl, *args)

    def runs_directly(self, *tensors) -> bool:
        """Whether a call without autograd on these tensors would run its implementation
        directly (eager, no dispatch mode, plain tensors), not the custom op."""
        if _is_compiling() or _dispatch_modes():
            return False
        return all(t is None or t.__class__ in _PLAIN_TYPES for t in tensors)

    def direct(self, run: Callable, *args) -> Optional[Callable]:
        """What ``call(run, *args)`` runs for these arguments, as a function of the op's
        arguments: ``run`` itself for a composite ``run`` or without autograd, the autograd
        Function's C ``apply`` of ``run`` where autograd records; None where ``call`` would
        take another route (the custom op, a transform's composite, the Python ``apply`` that
        unwraps functorch wrappers) or bump a mutated argument's version. For a memo whose
        key and guard fix what ``call`` reads (``ops/call_memo.py``)."""
        if getattr(run, "composite", False):
            return run
        tensors = [args[i] for i in self._tensors if args[i] is not None]
        if self._mutated or not self.runs_directly(*tensors) or transform_active(args[0]):
            return None
        if not (torch.is_grad_enabled() and any(t.requires_grad for t in tensors)):
            return run
        if self._function is None or any(_is_functorch_wrapped(t) for t in tensors):
            return None
        apply = self._apply

        def with_autograd(*op_args):
            return apply(run, *op_args)
        return with_autograd

    def call(self, run: Callable, *args):
        """Eager: ``run(*args)`` (``impl`` or a plan's equivalent) with this op's autograd;
        traced, under a dispatch mode, or with tensor subclasses: the custom op."""
        if getattr(run, "composite", False):
            return run(*args)
        if _is_compiling() or _dispatch_modes():
            return self.custom_op(*args)
        if transform_active(args[0]):
            return (self.composite or self.custom_op)(*args)
        needs_grad = False
        for i in self._tensors:
            a = args[i]
            if a is not None:
                if a.__class__ not in _PLAIN_TYPES:
                    return self.custom_op(*args)
                needs_grad = needs_grad or a.requires_grad
        if needs_grad and torch.is_grad_enabled():
            if self._function is None:
                raise RuntimeError(
                    f"{self.name}: an input requires grad but this op has no autograd formula; "
                    "call it under torch.no_grad() or on detached tensors")
            for i in self._tensors:
                if args[i] is not None and _is_functorch_wrapped(args[i]):
                    return self._function.apply(run, *args)  # torch unwraps dead wrappers
            return self._apply(run, *args)
        for i in self._mutated:
            if args[i].is_inference() and not _inference_mode():
                # what torch's own in-place ops raise (the dispatcher does not, for custom ops)
                raise RuntimeError(
                    f"{self.name}: an in-place update of an inference tensor (made under "
                    "torch.inference_mode()) is not allowed outside inference mode; clone it "
                    "first to get a normal tensor")
        result = run(*args)
        for i in self._mutated:
            torch.autograd.graph.increment_version(args[i])
        return result


def transform_active(tensor) -> bool:
    """Whether a call on ``tensor`` (its first tensor argument) runs under a torch.func
    transform or the legacy vmap that ``autograd.grad(..., is_grads_batched=True)`` and
    ``jacobian(..., vectorize=True)`` run backward under: a kernel cannot read such tensors."""
    return _functorch_active() or _legacy_batched(tensor)


def name_of(qualified: str) -> str:
    """``"elutriton::bias_elu"`` -> ``"bias_elu"``."""
    return qualified.split("::")[-1]
