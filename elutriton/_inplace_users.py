"""Does model code modify a layer's output in place? (for ``fuse``)

A fused layer's backward reads its saved output y (``ops/epilogue_autograd.py``), where the
unfused ``F.elu`` keeps its input: code that modifies the activation's output in place
(``out = self.act(self.conv(x)); out += x``, an ``nn.ReLU(inplace=True)`` after it,
``out[:, :k].zero_()``) trains unfused but makes the fused layer's backward raise autograd's
"modified by an inplace operation". ``fuse`` leaves such a pattern alone; this module finds
them: in a traced graph, an in-place op on the output or on a view of it; in an
``nn.Sequential``, a following module that works in place.
"""
import inspect
import operator

from torch import fx

# the augmented assignments (``out += x``; fuse's tracer records each as its operator) and
# item assignment (``out[i] = v``)
AUGMENTED_ASSIGNMENTS = (operator.iadd, operator.isub, operator.imul, operator.itruediv,
                         operator.ifloordiv, operator.imod, operator.ipow, operator.imatmul,
                         operator.iand, operator.ior, operator.ixor, operator.ilshift,
                         operator.irshift)
_INPLACE_OPERATORS = set(AUGMENTED_ASSIGNMENTS) | {operator.setitem}
# trailing-underscore methods that do not write the tensor's data
_METADATA_METHODS = {"requires_grad_", "share_memory_", "retain_grad_"}
# ops whose result may share the tensor's memory (an in-place op on it writes the tensor)
_VIEW_NAMES = {"getitem", "view", "view_as", "reshape", "reshape_as", "flatten", "unflatten",
               "permute", "transpose", "t", "squeeze", "unsqueeze", "narrow",
               "select", "expand", "expand_as", "unfold", "chunk", "split", "tensor_split",
               "unbind", "as_strided", "detach", "contiguous", "movedim", "swapaxes",
               "swapdims", "diagonal", "real", "view_as_real", "to", "type_as", "float",
               "half", "bfloat16", "double"}
# attributes that are views (``out.T``, ``out.data``: fx records ``getattr(out, name)``); a
# write through ``.data`` does not even bump the version counter: silently wrong gradients
_VIEW_ATTRIBUTES = {"T", "mT", "H", "mH", "data", "real"}


def _name(target) -> str:
    return target if isinstance(target, str) else getattr(target, "__name__", "")


def _first_input(node):
    if node.args:
        return node.args[0]
    return node.kwargs.get("input", node.kwargs.get("self"))


def _inplace_flag(function, node) -> bool:
    """Whether a call of ``function`` (a torch.nn.functional-style function) passes
    ``inplace=True``, by keyword or position."""
    if node.kwargs.get("inplace") is True:
        return True
    try:
        bound = inspect.signature(function).bind(*node.args, **node.kwargs)
    except (TypeError, ValueError):
        return False
    return bound.arguments.get("inplace") is True


def module_works_in_place(module) -> bool:
    """Whether ``module`` writes its input (``nn.ReLU(inplace=True)``, ``nn.Dropout(...,
    inplace=True)``, any module with a true ``inplace`` attribute)."""
    return getattr(module, "inplace", False) is True


def writes(node, value, modules) -> bool:
    """Whether graph ``node`` modifies ``value`` (a node it takes as its first input) in
    place."""
    if _first_input(node) is not value:  # (value as another argument is only read)
        return False
    name = _name(node.target)
    if node.op == "call_method":
        return name.endswith("_") and not name.startswith("_") and \
            name not in _METADATA_METHODS
    if node.op == "call_function":
        if node.target in _INPLACE_OPERATORS:
            return True
        if name.endswith("_") and not name.startswith("_"):
            return True  # torch.relu_, F.elu_, ...
        return _inplace_flag(node.target, node)
    if node.op == "call_module":
        return module_works_in_place(modules.get(node.target))
    return False


def _is_view(node, value) -> bool:
    if _first_input(node) is not value or node.op not in ("call_method", "call_function"):
        return False
    if node.target is getattr:
        return len(node.args) > 1 and node.args[1] in _VIEW_ATTRIBUTES
    return _name(node.target) in _VIEW_NAMES


def in_place_writer(node: fx.Node, modules) -> "fx.Node | None":
    """The first node that modifies ``node``'s output, or a view of it, in place; None if
    none does."""
    pending, seen = [node], set()
    while pending:
        value = pending.pop()
        if value in seen:
            continue
        seen.add(value)
        for user in value.users:
            if writes(user, value, modules):
                return user
            if _is_view(user, value):
                pending.append(user)
    return None
