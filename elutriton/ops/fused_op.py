"""``FusedOp``: a ``torch.library`` custom op with a direct eager path.

A custom op is what ``torch.compile`` and ``torch.library.opcheck`` need, but each eager call
goes through the dispatcher, the op's autograd wrapper and its output-aliasing check: on the
H100 machine of ``perf/results/`` that cost ~30 us of host time per call
(``host_overhead.md``: custom op vs public op), about the GPU time of a small conv layer.
``FusedOp`` registers the custom op as usual and, for eager calls on plain tensors, runs the
same implementation directly, with the same autograd formula through an equivalent
``torch.autograd.Function``. Anything that traces (dynamo, AOT
autograd, FakeTensor, other tensor subclasses or dispatch modes) gets the custom op.
"""
from typing import Callable, Optional, Sequence

import torch


def _plain(args) -> bool:
    """True when every tensor argument is a plain ``torch.Tensor`` and nothing is tracing."""
    if torch.compiler.is_compiling() or torch._C._len_torch_dispatch_stack() > 0:
        return False
    return all(type(a) is torch.Tensor for a in args if isinstance(a, torch.Tensor))


def _needs_grad(args) -> bool:
    return torch.is_grad_enabled() and any(
        a.requires_grad for a in args if isinstance(a, torch.Tensor))


class FusedOp:
    """``torch.library.custom_op(name, impl)`` plus a direct eager path (module docstring).

    Args:
        name: the op's qualified name, e.g. ``"elutriton::bias_elu"``.
        impl: the implementation (type-annotated, positional arguments only).
        mutates_args: names of the arguments ``impl`` writes to; the eager path bumps their
            version counters as the dispatcher would.
    """

    def __init__(self, name: str, impl: Callable, mutates_args: Sequence[str] = ()):
        self.name = name
        self.impl = impl
        self.custom_op = torch.library.custom_op(name, impl, mutates_args=tuple(mutates_args))
        params = list(self.custom_op._opoverload._schema.arguments)
        self._mutated = [i for i, p in enumerate(params) if p.name in mutates_args]
        self._function: Optional[type] = None

    def register_fake(self, fn: Callable) -> Callable:
        self.custom_op.register_fake(fn)
        return fn

    def register_autograd(self, backward: Callable, setup_context: Callable) -> None:
        """Same contract as ``CustomOpDef.register_autograd``; used by both paths."""
        self.custom_op.register_autograd(backward, setup_context=setup_context)
        impl = self.impl

        class Function(torch.autograd.Function):
            @staticmethod
            def forward(*args):
                return impl(*args)

            @staticmethod
            def setup_context(ctx, inputs, output):
                setup_context(ctx, inputs, output)

            @staticmethod
            def backward(ctx, *grads):
                return backward(ctx, *grads)

        Function.__name__ = Function.__qualname__ = name_of(self.name)
        self._function = Function

    def __call__(self, *args):
        if not _plain(args):
            return self.custom_op(*args)
        if self._function is not None and _needs_grad(args):
            return self._function.apply(*args)
        result = self.impl(*args)
        for i in self._mutated:
            torch.autograd.graph.increment_version(args[i])
        return result


def name_of(qualified: str) -> str:
    """``"elutriton::bias_elu"`` -> ``"bias_elu"``."""
    return qualified.split("::")[-1]
