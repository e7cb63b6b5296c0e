"""``elutriton.fuse(model)``: rewrite conv(+BN)+ELU-family and linear(+BN)+ELU-family into fused
modules, with one general mechanism.

1. torch.fx symbolic tracing (elutriton's modules are leaves, like torch's): every ELU-family
   activation in the graph (``nn.ELU/SELU/CELU`` modules and elutriton's drop-ins for them,
   ``F.elu/selu/celu`` and their ``_`` forms, ``torch.selu/celu``) whose input is an
   ``nn.Conv2d`` or ``nn.Linear`` call (optionally through an eval-mode ``nn.BatchNorm2d`` after
   the conv, or ``nn.BatchNorm1d`` after the linear layer, in a model in eval mode) is folded
   into that layer, provided each intermediate result has no other user. An ``F.conv2d`` or
   ``F.linear`` call in place of the module (``FUSED_FUNCTIONS``) and its activation become one
   call of elutriton's fused function, in the graph.
2. If the model cannot be traced, the same patterns are matched between consecutive children
   of every ``nn.Sequential`` (functional activations are invisible there).

The fused layer takes the conv/linear's place (same name, so its ``state_dict`` keys stay);
folded BatchNorms are removed and activation modules left unused are dropped.

What comes back: the model itself (its own class, methods and ``forward``) with the fused
layers swapped into its module tree and the activation, BatchNorm and identity modules of each
fused pattern replaced by ``elutriton.nn.FusedAway`` (an ``nn.Identity`` without
``nn.Module``'s call machinery), whenever that computes what the rewritten graph computes:
every fused activation is a module and every call of it was fused. (A module held in
several places of the tree is replaced in each: the graph calls the module object.) A functional
activation (``F.elu(self.conv(x))``) lives in ``forward``'s code, and a shared activation
module with an unfused call cannot become the identity; then the traced ``fx.GraphModule``
comes back, and ``report.graph_reason`` says why.
"""
import copy
import dataclasses
import operator
from typing import List, Optional, Tuple

import torch
import torch.nn.functional as F
from torch import fx, nn
from torch.nn.utils.fusion import fuse_conv_bn_eval, fuse_linear_bn_weights

from ._inplace_users import AUGMENTED_ASSIGNMENTS, in_place_writer, module_works_in_place
from .nn import activation as elutriton_activations
from .nn.fused_away import FusedAway
from .nn.layers import Conv2dELU, LinearELU, hooks_problem, layer_problem
from .ops import bias_elu as elutriton_ops
from .ops.conv2d import conv2d_bias_elu
from .ops.linear import linear_bias_elu
from .params import celu_params, check_real, elu_params, selu_params
from .params import module_params as activation_params

# elutriton's drop-ins for torch's activation modules; both kinds fuse
ELUTRITON_ACTIVATIONS = (elutriton_activations.ELU, elutriton_activations.SELU,
                         elutriton_activations.CELU)
ACTIVATION_MODULES = (nn.ELU, nn.SELU, nn.CELU) + ELUTRITON_ACTIVATIONS
# elutriton's modules stay single call_module nodes when a model holding them is traced
# (fx would trace into their forward, which records the public function: _transforms.py)
ELUTRITON_MODULES = ELUTRITON_ACTIVATIONS + (elutriton_activations.BiasELU, Conv2dELU,
                                             LinearELU)
FUSED_FOR = {nn.Conv2d: Conv2dELU, nn.Linear: LinearELU}
# Function calls of the layers (``F.conv2d`` is ``torch.conv2d``, ``F.linear`` is
# ``torch._C._nn.linear``): name -> (the fused function, the names of the arguments after the
# input, in order, and the defaults of those after the weight). Such a call and its activation
# become one call of the fused function, in the traced graph only.
FUSED_FUNCTIONS = {
    torch.conv2d: ("F.conv2d", conv2d_bias_elu,
                   ("weight", "bias", "stride", "padding", "dilation", "groups"),
                   (None, 1, 0, 1, 1)),
    torch._C._nn.linear: ("F.linear", linear_bias_elu, ("weight", "bias"), (None,)),
}
# the BatchNorm that may be folded into each layer (over the output channels / features)
BATCHNORM_FOR = {nn.Conv2d: nn.BatchNorm2d, nn.Linear: nn.BatchNorm1d}
# Modules that are the identity and may stand between the layer and its activation: an
# nn.Identity (an optional BatchNorm left out) or fuse's own placeholder (``FusedAway``;
# exactly these types: a subclass of nn.Identity may compute something), or a dropout in eval
# mode. Fusing through a dropout removes it, so the result is for inference, like BatchNorm
# folding (the fused layer's ``fused_for_inference`` names both, and its ``train()`` warns); a
# dropout in training mode is not the identity and stops the fusion.
IDENTITIES = (nn.Identity, FusedAway)
DROPOUTS = (nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.Dropout3d, nn.AlphaDropout,
            nn.FeatureAlphaDropout)


def _pass_through_problem(module):
    """None when ``module`` is the identity here (fusion may look through it), else why not;
    raises TypeError for modules that are neither."""
    problem = hooks_problem(module)
    if problem:
        return problem
    if type(module) in IDENTITIES:
        return None
    if isinstance(module, DROPOUTS):
        return None if not module.training else (
            f"{type(module).__name__} in training mode is not the identity")
    raise TypeError(type(module).__name__)


def _is_pass_through(module):
    return type(module) in IDENTITIES or isinstance(module, DROPOUTS)


# Functional forms -> (alpha, scale, input_scale) from their (args, kwargs) after the input.
# (torch.Tensor has no elu/selu/celu methods, so there are no method forms to match.)


def _alpha(args, kwargs):
    """A functional form's alpha: by keyword, else its first argument after the input."""
    return kwargs.get("alpha", args[0] if args else 1.0)


def _elu_params(args, kwargs):
    return elu_params(_alpha(args, kwargs), "F.elu")


def _selu_params(args, kwargs):
    return selu_params()


def _celu_params(args, kwargs):
    return celu_params(_alpha(args, kwargs), "F.celu")


def _elutriton_elu_params(args, kwargs):
    """``elutriton.elu(x, alpha, scale, input_scale, inplace)``'s parameters."""
    names = ("alpha", "scale", "input_scale")
    given = dict(zip(names, args), **{k: v for k, v in kwargs.items() if k in names})
    return check_real("elutriton.elu", **{name: given.get(name, 1.0) for name in names})


def _elutriton_celu_params(args, kwargs):
    """``elutriton.celu(x, alpha, inplace)``'s parameters."""
    return celu_params(_alpha(args, kwargs), "elutriton.celu")


FUNCTIONAL_ACTIVATIONS = {
    F.elu: _elu_params, F.elu_: _elu_params,
    F.selu: _selu_params, F.selu_: _selu_params, torch.selu: _selu_params,
    torch.selu_: _selu_params,
    F.celu: _celu_params, F.celu_: _celu_params, torch.celu: _celu_params,
    torch.celu_: _celu_params,
    # elutriton's own functions (a traced call of one is a node of the function itself:
    # _transforms.py)
    elutriton_ops.elu: _elutriton_elu_params, elutriton_ops.selu: _selu_params,
    elutriton_ops.celu: _elutriton_celu_params,
}


@dataclasses.dataclass
class FuseReport:
    """What :func:`fuse` did: ``path`` ('fx' or 'sequential'), ``fused`` and ``skipped``.

    ``fused``: (layer name, description) pairs. ``skipped``: (place, reason) pairs for every
    ELU-family activation or BatchNorm that was left alone.
    """

    path: str
    fused: List[Tuple[str, str]] = dataclasses.field(default_factory=list)
    skipped: List[Tuple[str, str]] = dataclasses.field(default_factory=list)
    trace_error: Optional[str] = None
    graph_reason: Optional[str] = None  # why an fx.GraphModule came back instead of the model
    channels_last: bool = False  # 4-D weights converted to channels_last (fuse's option)

    def __str__(self):
        lines = [f"elutriton.fuse via {self.path}: {len(self.fused)} fused, "
                 f"{len(self.skipped)} left alone"]
        if self.trace_error:
            lines.append(f"  (fx tracing failed: {self.trace_error})")
        if self.graph_reason:
            lines.append(f"  (returned an fx.GraphModule: {self.graph_reason})")
        if self.channels_last:
            lines.append("  (4-D weights stored channels_last)")
        if not self.fused:
            lines.append("  nothing to fuse")
        lines += [f"  fused   {name}: {what}" for name, what in self.fused]
        lines += [f"  skipped {name}: {why}" for name, why in self.skipped]
        return "\n".join(lines)


def fuse(model: nn.Module, inplace: bool = False, channels_last: bool = False):
    """Return ``(fused_model, report)``.

    ``inplace=False`` (default) deep-copies ``model`` first, so it is left untouched.
    ``inplace=True`` skips the copy: the result holds ``model``'s own parameters, fused layers
    included (BN-folded ones are new), so an optimizer over ``model.parameters()`` trains it;
    ``model``'s module tree is rewritten and returned unless a ``GraphModule`` comes back.
    ``channels_last=True`` also stores the result's 4-D weights channels_last
    (``.to(memory_format=torch.channels_last)``, PyTorch's recipe): the fused conv kernel reads
    them without a per-call copy. Outputs follow torch's rule, so an NCHW input then gives a
    channels_last output. Off by default: whether it pays on a GPU is not measured yet.
    Without it, the weights keep their strides (a model already in channels_last keeps
    channels_last weights), and frozen parameters stay frozen.
    The fused model computes the same function (within dtype tolerance) and trains. A model
    fused in eval mode may have had BatchNorms folded and dropouts removed: the layers that
    took them in are for inference (their ``fused_for_inference`` names them, and their
    ``train()`` warns); fuse a model in training mode to train it.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"elutriton.fuse: expected a torch.nn.Module, got {type(model).__name__}")
    if not inplace:
        model = copy.deepcopy(model)
    fused, report = _fuse(model)
    if channels_last:
        fused = fused.to(memory_format=torch.channels_last)
        report.channels_last = True
    return fused, report


def _recorded(in_place_operator):
    """A ``_Proxy`` method that records a call of ``in_place_operator``."""
    def method(self, other):
        return self.tracer.create_proxy("call_function", in_place_operator, (self, other), {})
    return method


class _Proxy(fx.Proxy):
    """An ``fx.Proxy`` that records augmented assignments (``out += x``) as the in-place
    operators they are, and item assignment (``out[i] = v``): ``fx.Proxy`` defines neither, so
    Python traced ``out += x`` as ``out = out + x`` (hiding a write of ``out`` from
    ``_inplace_users``) and ``out[i] = v`` failed the trace. The graph runs what the code
    ran."""

    def __setitem__(self, index, value):
        self.tracer.create_proxy("call_function", operator.setitem, (self, index, value), {})


for _operator in AUGMENTED_ASSIGNMENTS:  # operator.iadd -> _Proxy.__iadd__, ...
    setattr(_Proxy, f"__{_operator.__name__}__", _recorded(_operator))
del _operator


class _Tracer(fx.Tracer):
    """``fx.symbolic_trace``'s tracer, with elutriton's modules as leaves like torch's own,
    and in-place assignments recorded (``_Proxy``). Forward's reads of buffers are recorded
    as reads (get_attr), as those of parameters are, not as copies of their values at trace
    time: a graph that comes back reads a BatchNorm's running statistics as they are, and
    fusing sees which modules' tensors forward reads (``_read_but_changed``)."""

    proxy_buffer_attributes = True

    def is_leaf_module(self, module, qualified_name):
        return (type(module) in ELUTRITON_MODULES
                or super().is_leaf_module(module, qualified_name))

    def proxy(self, node):
        return _Proxy(node, self)


def _fuse(model):
    try:
        graph_module = fx.GraphModule(model, _Tracer().trace(model), model.__class__.__name__)
    except Exception as exc:  # any tracing failure: fall back to the structural rewrite
        report = FuseReport(path="sequential", trace_error=f"{type(exc).__name__}: {exc}")
        _fuse_sequentials(model, "", report)
        return model, report
    report = FuseReport(path="fx")
    graph_module, swaps = _fuse_graph(graph_module, report)
    if report.graph_reason:
        return graph_module, report
    # the same rewrite, in the model's own module tree: fx names a module by the first of its
    # names, so a module registered in several places (``self.a = self.b = conv``, or one
    # activation twice in an nn.Sequential) is replaced in all of them, as the graph, which
    # calls the module object, was rewritten
    slots = _slots(model)
    for target, module in swaps.items():
        for parent, name in slots[id(model.get_submodule(target))]:
            setattr(parent, name, module)
    return model, report


def _slots(model):
    """``{id(module): [(parent, attribute name), ...]}``: every place in ``model``'s tree that
    holds each module (a parent reached by several paths counts once)."""
    slots = {}
    for parent in model.modules():
        for name, child in parent._modules.items():
            if child is not None:
                slots.setdefault(id(child), []).append((parent, name))
    return slots


# ------------------------------------------------------------------------------- helpers
def _fused_layer(layer, params, bn=None, inference_only=()):
    """The fused module for ``layer`` (BN folded in first when given) and ``params``. It holds
    ``layer``'s own parameters (so an optimizer over them trains it), or with BN the folded
    ones, with ``layer``'s strides; a folded parameter is trainable when a parameter it is
    made of is (weight: the conv's weight or the BN's weight; bias: the conv's bias or the
    BN's weight or bias; torch's folding would freeze the bias of a conv that had none).
    ``inference_only``: what the fusion folded in or removed that computes otherwise in
    training mode (``_inference_only``), kept as the layer's ``fused_for_inference``."""
    if bn is not None:
        folded = _fold_batchnorm(layer, bn)
        folded.weight.requires_grad_(_any_trainable(layer.weight, bn.weight))
        folded.bias.requires_grad_(_any_trainable(layer.bias, bn.weight, bn.bias))
        layer = folded
    parameters = dict(layer.named_parameters(recurse=False))
    fused = FUSED_FOR[type(layer)]._holding(layer, parameters, *params)
    if bn is not None and isinstance(fused, LinearELU):
        # BatchNorm1d normalized the features only for [N, features] input (on [N, L, C] it
        # normalizes dim 1): the folded layer refuses other input rather than differ silently
        fused.folded_batchnorm1d = True
    if inference_only:
        fused.fused_for_inference = tuple(inference_only)
    return fused


def _inference_only(named):
    """``"<type> <name>"`` of each of ``named`` ((name, module) pairs: the BatchNorm folded in
    and the modules passed through) that computes otherwise in training mode: all but the
    identities (``IDENTITIES``)."""
    return [f"{type(module).__name__} {name}" for name, module in named
            if type(module) not in IDENTITIES]


def _fold_batchnorm(layer, bn):
    """A copy of ``layer`` with the eval-mode ``bn`` folded into its weight and bias
    (torch.nn.utils.fusion; a BatchNorm without affine parameters folds as weight 1, bias 0)."""
    if isinstance(layer, nn.Conv2d):
        return fuse_conv_bn_eval(layer, bn)
    folded = copy.deepcopy(layer)
    stats = bn.running_mean
    folded.weight, folded.bias = fuse_linear_bn_weights(
        layer.weight, layer.bias, stats, bn.running_var, bn.eps,
        torch.ones_like(stats) if bn.weight is None else bn.weight,
        torch.zeros_like(stats) if bn.bias is None else bn.bias)
    return folded


def _any_trainable(*params):
    return any(p is not None and p.requires_grad for p in params)


def _bn_problem(bn, layer):
    """Why ``bn`` cannot be folded into ``layer`` (the nn.Conv2d or nn.Linear before it), else
    None. Folding is for inference: both must be in eval mode (a training model whose
    BatchNorms are frozen with ``.eval()`` would train other parameters once folded)."""
    expected = BATCHNORM_FOR.get(type(layer))
    name = type(bn).__name__
    if expected is None:
        return f"{name} input is not an nn.Conv2d or nn.Linear"
    if type(bn) is not expected:
        return f"{name} after an nn.{type(layer).__name__} is not an nn.{expected.__name__}"
    if bn.training:
        return f"{name} is in training mode (only eval-mode BN can be folded)"
    if layer.training:
        return (f"the {type(layer).__name__} before {name} is in training mode (BN folding is "
                "for inference: fuse the model in eval mode)")
    if bn.running_mean is None:
        return f"{name} has no running statistics"
    if isinstance(layer, nn.Linear) and bn.num_features != layer.out_features:
        return (f"{name}({bn.num_features}) does not normalize the {layer.out_features} output "
                "features")
    return hooks_problem(bn)


def _describe(layer, params, bn, passed=(), modules=None):
    """``layer``: the fused module, or the name of the fused function call."""
    what = layer if isinstance(layer, str) else type(layer).__name__
    what += f" + {type(bn).__name__} (folded)" if bn is not None else ""
    text = f"{what} + ELU(alpha={params[0]:.6g}, scale={params[1]:.6g}, " \
           f"input_scale={params[2]:.6g})"
    if passed:
        names = ", ".join(f"{type(modules[n.target]).__name__} {n.target}" if modules else str(n)
                          for n in passed)
        text += f", through {names} (removed: identity at inference)"
    return text


# ------------------------------------------------------------------------------- fx path
def _activation_of(node, modules):
    """(alpha, scale, input_scale) if ``node`` is an ELU-family activation, else None."""
    if node.op == "call_module" and type(modules.get(node.target)) in ACTIVATION_MODULES:
        return activation_params(modules[node.target])
    if node.op == "call_function" and node.target in FUNCTIONAL_ACTIVATIONS:
        return FUNCTIONAL_ACTIVATIONS[node.target](node.args[1:], node.kwargs)
    return None


def _fuse_graph(gm: fx.GraphModule, report: FuseReport):
    """Rewrite the graph; returns it and ``{target: module}``, the same rewrite as swaps in the
    traced model's module tree (valid unless ``report.graph_reason`` is set)."""
    modules = dict(gm.named_modules())
    swaps = {}
    fused_calls = {}
    call_counts = {}
    for node in gm.graph.nodes:
        if node.op == "call_module":
            call_counts[node.target] = call_counts.get(node.target, 0) + 1
    # what forward reads of modules' tensors (a parameter, a buffer): fx records those reads
    # as get_attr nodes, which no rewrite below removes
    attributes_read = [n.target for n in gm.graph.nodes if n.op == "get_attr"]
    removed_targets = []
    for node in list(gm.graph.nodes):
        try:
            params = _activation_of(node, modules)
        except (ValueError, TypeError) as exc:  # CELU alpha == 0, or an alpha computed at run time
            report.skipped.append((node.name, f"activation parameters not usable: {exc}"))
            continue
        if params is None:
            continue
        problem = hooks_problem(modules[node.target]) if node.op == "call_module" else None
        if problem:
            report.skipped.append((node.name, problem))
            continue
        writer = in_place_writer(node, modules)
        if writer is not None:
            report.skipped.append((node.name, _written_reason(writer)))
            continue
        producer = node.args[0] if node.args else node.kwargs.get("input")
        reason, layer_node, bn_node, passed = _match_producer(producer, modules, call_counts)
        if not reason:
            reason = _read_but_changed(attributes_read, layer_node, bn_node, passed)
        if reason:
            report.skipped.append((node.name, reason))
            continue
        if layer_node.op == "call_function":
            _fuse_function_call(gm, node, layer_node, passed, params, modules, report)
            removed_targets += [n.target for n in passed] + (
                [node.target] if node.op == "call_module" else [])
            continue
        layer = modules[layer_node.target]
        bn = modules[bn_node.target] if bn_node is not None else None
        fused = _fused_layer(layer, params, bn, _inference_only(
            [(n.target, modules[n.target]) for n in [bn_node] + passed if n is not None]))
        gm.set_submodule(layer_node.target, fused)
        modules[layer_node.target] = fused
        node.replace_all_uses_with(layer_node)
        gm.graph.erase_node(node)
        swaps[layer_node.target] = fused
        if node.op == "call_module":
            removed_targets.append(node.target)
            swaps[node.target] = FusedAway()
            fused_calls[node.target] = fused_calls.get(node.target, 0) + 1
        elif report.graph_reason is None:
            report.graph_reason = (f"the activation {node.name} is a function call in forward, "
                                   "which only the traced graph can drop")
        # the nodes between layer and activation, activation side first (each unused by then)
        position = {n: i for i, n in enumerate(gm.graph.nodes)}
        chain = passed + ([bn_node] if bn_node is not None else [])
        for between in sorted(chain, key=position.get, reverse=True):
            between.replace_all_uses_with(layer_node)
            gm.graph.erase_node(between)
            removed_targets.append(between.target)
            swaps[between.target] = FusedAway()
        report.fused.append((layer_node.target, _describe(layer, params, bn, passed, modules)))
    still_called = {n.target for n in gm.graph.nodes if n.op == "call_module"}
    for target in removed_targets:
        if target not in still_called:
            _delete_submodule(gm, target)
    shared = [t for t, n in fused_calls.items() if n != call_counts[t]]
    if shared and report.graph_reason is None:
        report.graph_reason = (f"the activation module {shared[0]} is also called where it "
                               "was not fused, so it cannot become the identity")
    read = [n.target for n in gm.graph.nodes if n.op == "get_attr"
            and any(n.target.startswith(t + ".") for t in swaps if t not in fused_calls)]
    if read and report.graph_reason is None:
        report.graph_reason = f"forward reads {read[0]} of a module the fusion replaces"
    gm.graph.lint()
    gm.recompile()
    return gm, swaps


def _fuse_function_call(gm, activation, layer_node, passed, params, modules, report):
    """Replace ``activation(identities(layer_node))``, ``layer_node`` a call of ``F.conv2d`` or
    ``F.linear`` (``FUSED_FUNCTIONS``), with one call of the fused function on the layer call's
    own arguments (tensors computed in forward, such as a standardized weight, included)."""
    name, function, names, defaults = FUSED_FUNCTIONS[layer_node.target]
    given = dict(zip(("input",) + names, layer_node.args), **layer_node.kwargs)
    default = dict(zip(names[1:], defaults))
    args = tuple(given[key] if key in given else default[key] for key in ("input",) + names)
    with gm.graph.inserting_after(activation):
        fused = gm.graph.call_function(function, args + tuple(params))
    activation.replace_all_uses_with(fused)
    gm.graph.erase_node(activation)
    for node in reversed(passed):  # (each unused once the one after it is gone)
        gm.graph.erase_node(node)
    gm.graph.erase_node(layer_node)
    if report.graph_reason is None:
        report.graph_reason = (f"{layer_node.name} is a call of {name} in forward, which only "
                               "the traced graph can fuse")
    report.fused.append((layer_node.name, _describe(name, params, None, passed, modules)))


def _written_reason(writer):
    what = writer.target if writer.op == "call_module" else getattr(
        writer.target, "__name__", writer.target)
    return (f"its output is modified in place by {writer.name} ({what}); the fused layer's "
            "backward reads its output (the unfused F.elu keeps its input)")


def _through_identities(node, modules, passed):
    """The first node before ``node`` that is not an identity module call (appending the ones
    passed to ``passed``), or a reason string when one cannot be passed."""
    while (isinstance(node, fx.Node) and node.op == "call_module"
           and _is_pass_through(modules[node.target])):
        problem = _pass_through_problem(modules[node.target])
        if problem:
            return f"{node.target}: {problem}"
        passed.append(node)
        node = node.args[0] if node.args else node.kwargs.get("input")
    return node


def _match_producer(producer, modules, call_counts):
    """(reason to skip or None, conv/linear node, bn node or None, identity nodes passed) for
    an activation input."""
    passed = []
    producer = _through_identities(producer, modules, passed)
    if isinstance(producer, str):
        return producer, None, None, passed
    if (isinstance(producer, fx.Node) and producer.op == "call_function"
            and producer.target in FUSED_FUNCTIONS):
        dropouts = [n.target for n in passed if type(modules[n.target]) not in IDENTITIES]
        if dropouts:  # (no fused module would carry fused_for_inference and warn in train())
            return (f"{dropouts[0]} stands between {producer.name}, a function call, and the "
                    "activation: fusing would remove it, and no fused layer would say so"), \
                None, None, passed
        return _single_use_problem([producer] + passed, call_counts), producer, None, passed
    if not isinstance(producer, fx.Node) or producer.op != "call_module":
        what = producer.op if isinstance(producer, fx.Node) else type(producer).__name__
        return f"input is not a Conv2d/Linear module or function call (got {what} " \
               f"{getattr(producer, 'target', '')})", None, None, passed
    bn_node = None
    module = modules[producer.target]
    if isinstance(module, nn.modules.batchnorm._BatchNorm):
        bn_node, bn = producer, module
        producer = _through_identities(bn_node.args[0], modules, passed)
        if isinstance(producer, str):
            return producer, None, None, passed
        layer = (modules[producer.target] if isinstance(producer, fx.Node)
                 and producer.op == "call_module" else None)
        problem = _bn_problem(bn, layer)
        if problem:
            return f"{bn_node.target}: {problem}", None, None, passed
        module = layer
    if type(module) not in FUSED_FOR:
        return f"input is {type(module).__name__} ({producer.target}), not nn.Conv2d/nn.Linear", \
            None, None, passed
    problem = layer_problem(module)
    if problem:
        return f"{producer.target}: {problem}", None, None, passed
    return (_single_use_problem([n for n in [producer, bn_node] + passed if n is not None],
                                call_counts), producer, bn_node, passed)


def _single_use_problem(nodes, call_counts):
    """Why the pattern of ``nodes`` (layer, BatchNorm, identities) cannot be fused, where one of
    them has another user or is a module called elsewhere too; else None."""
    for node in nodes:
        if len(node.users) != 1:
            return (f"output of {node.name if node.op == 'call_function' else node.target} has "
                    f"{len(node.users)} users (fusing would change what the others see)")
        if node.op == "call_module" and call_counts.get(node.target, 0) != 1:
            return f"{node.target} is called more than once (shared module)"
    return None


def _read_but_changed(attributes_read, layer_node, bn_node, passed):
    """Why forward's own reads (``attributes_read``: get_attr targets) forbid fusing this
    pattern, else None: a read of a module the fusion removes (the BatchNorm, a dropout: gone
    from the fused model) or, where a BatchNorm is folded, of the layer (its weight and bias
    become the folded ones, so forward would read other values than the model's)."""
    changed = [(n.target, "removes") for n in passed]
    if bn_node is not None:
        changed += [(bn_node.target, "folds"), (layer_node.target, "folds")]
    for target in attributes_read:
        for module, what in changed:
            if target.startswith(module + "."):
                return (f"forward reads {target}, of a module the fusion {what} (its value "
                        "would differ or be gone)")
    return None


def _delete_submodule(root, target):
    parent_name, _, name = target.rpartition(".")
    parent = root.get_submodule(parent_name) if parent_name else root
    if hasattr(parent, name):
        delattr(parent, name)


# ------------------------------------------------------------------------------- fallback
def _next_writes(children, j):
    """Why the activation ``children[j]`` of an ``nn.Sequential`` cannot be fused for what
    follows it: the next module that is not the identity works in place; else None. (What the
    code around the Sequential does with its output cannot be seen without a trace.)"""
    for name, module in children[j + 1:]:
        if module_works_in_place(module):
            return (f"its output is modified in place by {name} ({type(module).__name__} with "
                    "inplace=True); the fused layer's backward reads its output")
        if not _is_pass_through(module):
            return None
    return None


def _fuse_sequentials(module: nn.Module, prefix: str, report: FuseReport) -> None:
    """Rewrite [Conv2d, (BatchNorm2d,) act] and [Linear, (BatchNorm1d,) act] runs in every
    nn.Sequential."""
    for name, child in module.named_children():
        _fuse_sequentials(child, f"{prefix}{name}.", report)
    if not isinstance(module, nn.Sequential):
        return
    children = list(module.named_children())

    def skip_identities(j, passed):
        """Index of the first child from j on that is not an identity; None (reported) when a
        dropout in training mode stands there."""
        while j < len(children) and _is_pass_through(children[j][1]):
            problem = _pass_through_problem(children[j][1])
            if problem:
                report.skipped.append((prefix + children[j][0], problem))
                return None
            passed.append(j)
            j += 1
        return j

    i = 0
    while i < len(children):
        name, layer = children[i]
        if type(layer) not in FUSED_FOR:
            i += 1
            continue
        passed = []
        j, bn = skip_identities(i + 1, passed), None
        if j is None:
            i += 1
            continue
        if j < len(children) and isinstance(children[j][1], nn.modules.batchnorm._BatchNorm):
            problem = _bn_problem(children[j][1], layer)
            if problem:
                report.skipped.append((prefix + children[j][0], problem))
                i = j + 1
                continue
            bn, bn_index = children[j][1], j
            j = skip_identities(j + 1, passed)
            if j is None:
                i += 1
                continue
        if j < len(children) and type(children[j][1]) in ACTIVATION_MODULES:
            layer_issue = layer_problem(layer)
            problem = layer_issue or hooks_problem(children[j][1]) or _next_writes(children, j)
            if problem:
                report.skipped.append((prefix + (name if layer_issue else children[j][0]),
                                       problem))
                i = j + 1
                continue
            try:
                params = activation_params(children[j][1])
            except (ValueError, TypeError) as exc:  # alpha not finite: the layer would refuse it
                report.skipped.append((prefix + children[j][0],
                                       f"activation parameters not usable: {exc}"))
                i = j + 1
                continue
            setattr(module, name, _fused_layer(layer, params, bn, _inference_only(
                [(prefix + children[k][0], children[k][1])
                 for k in ([bn_index] if bn is not None else []) + passed])))
            for k in passed + ([bn_index] if bn is not None else []) + [j]:
                setattr(module, children[k][0], FusedAway())
            names = ", ".join(f"{type(children[k][1]).__name__} {prefix}{children[k][0]}"
                              for k in passed)
            report.fused.append((prefix + name, _describe(layer, params, bn) + (
                f", through {names} (removed: identity at inference)" if passed else "")))
            i = j + 1
        else:
            i += 1
