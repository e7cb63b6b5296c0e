"""Sizes and parameters that are symbolic while torch.compile traces with dynamic shapes.

With dynamic shapes (``dynamic=True``, or dynamo's automatic recompile after a second batch
size) a size is a ``SymInt``; with ``dynamic=True`` a float argument (an activation's alpha)
is a ``SymFloat`` too. Under dynamo ``isinstance(size, int)`` is true for a symbolic size
(dynamo answers with the type the symbol stands for), so it cannot tell a dynamic batch from a
fixed one; ``torch.fx.experimental.symbolic_shapes.has_static_value`` can (a user-code utility
that dynamo evaluates on the symbol). Outside dynamo (``make_fx``, non-strict
``torch.export``) symbols are plain ``SymInt``/``SymFloat`` objects.
"""
import torch

_is_compiling = torch.compiler.is_compiling
_SYMBOLIC_TYPES = (torch.SymInt, torch.SymFloat, torch.SymBool)

try:
    from torch.fx.experimental.symbolic_shapes import has_static_value
except ImportError:  # an older torch: no symbol reaches a check here without dynamo's answer
    def has_static_value(value):
        return not isinstance(value, _SYMBOLIC_TYPES)


def is_symbolic(value) -> bool:
    """Whether ``value`` (an int, float or bool, or a symbol for one) has no fixed value."""
    if isinstance(value, _SYMBOLIC_TYPES):
        return not has_static_value(value)
    return _is_compiling() and not has_static_value(value)


def all_static(*values) -> bool:
    """Whether none of ``values`` (ints, floats or bools) is symbolic (``is_symbolic``)."""
    for value in values:
        if is_symbolic(value):
            return False
    return True
