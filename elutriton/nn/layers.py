"""``Conv2dELU`` and ``LinearELU``: ``nn.Conv2d``/``nn.Linear`` with the ELU family fused in.

Both subclass their torch layer, so parameters, ``state_dict`` keys and constructor arguments
are the same and existing checkpoints load; the activation's parameters are keyword-only.

Under ``torch.jit.script`` their ``forward`` is torch's composite (the layer's own convolution
or linear, then aten ``elu`` with the layer's parameters): TorchScript cannot call elutriton's
Python and Triton code, so a scripted fused layer computes what the unfused pair computes, with
torch's ops, and a saved script loads without elutriton. (``is_scripting()`` is False in
eager, where the branch costs one call; TorchScript compiles only the scripting branch.)
"""
import warnings

import torch
import torch.nn.functional as F
from torch.jit import is_scripting

from .. import reference
from .._runtime import use_triton
from ..ops.call_memo import kernel_guard, module_call_key
from ..ops.conv2d import conv2d_bias_elu_call, effective_dilation
from ..ops.linear import linear_bias_elu_call
from ..params import check_real, module_params
from ..plan import cudnn_allow_tf32, matmul_allow_tf32

_is_compiling = torch.compiler.is_compiling


def hooks_problem(module):
    """Why a module with hooks cannot be fused away or replaced (its forward or backward
    hooks would not run: a feature-extraction hook on an activation, the pre-hook with which
    ``torch.nn.utils.weight_norm`` computes a layer's weight), else None."""
    kinds = [kind for kind, hooks in [("forward", module._forward_hooks),
                                      ("forward pre-", module._forward_pre_hooks),
                                      ("backward", module._backward_hooks),
                                      ("backward pre-", module._backward_pre_hooks)] if hooks]
    if kinds:
        return f"{type(module).__name__} has {' and '.join(kinds)} hooks, which fusing would drop"
    return None


def layer_problem(layer):
    """Why ``layer`` (an nn.Conv2d/nn.Linear) cannot become a fused layer, else None: it must
    hold its own weight and bias as its only parameters, no buffers and no hooks."""
    names = [name for name, _ in layer.named_parameters(recurse=False)]
    if not set(names) <= {"weight", "bias"} or not isinstance(layer.weight, torch.nn.Parameter):
        return (f"{type(layer).__name__} has parameters {names}, not its own weight and bias "
                "(the fused layer would not compute its weight)")
    buffers = [name for name, _ in layer.named_buffers(recurse=False)]
    if buffers:
        return f"{type(layer).__name__} has buffers {buffers}, which the fused layer would drop"
    return hooks_problem(layer)


def _weight_and_bias(layer):
    """``(layer.weight, layer.bias)``, read from the layer's ``_parameters`` where they are
    there: ``nn.Module.__getattr__``, which an attribute read of a parameter goes through,
    costs ~0.5 us a read on CPU, twice per call, while ``nn.Conv2d``/``nn.Linear`` then
    ``nn.ELU`` pay it once per layer too, so a fused layer would pay it on top of its own
    work. A parameter that is not there (pruned: a tensor computed by a pre-hook;
    parametrized: a property of the class) is read as an attribute, as torch reads it."""
    parameters = layer._parameters
    weight = parameters["weight"] if "weight" in parameters else layer.weight
    return weight, parameters["bias"] if "bias" in parameters else layer.bias


# How many calls a fused layer memoes (``_FusedELUMixin``): enough for a layer shared by the
# levels of a feature pyramid, or one that sees a few batch sizes; a memo that would grow past
# it is emptied first (a layer fed many shapes pays a key and a public op per call, as
# without the memo).
MEMO_ENTRIES = 8


class _FusedELUMixin:
    """Holds the ELU-family parameters and builds a fused layer from a (layer, activation) pair.

    A layer's call memoes, under its ``call_memo.module_call_key``, each call that the public
    op handed whole to one function of the call's arguments (torch's composite for a
    library-path layer run eagerly, the fallback, or a repeat of a kernel call): that
    function, and for a kernel call ``call_memo.kernel_guard``'s facts. A call with an equal
    key (and guard) calls it directly, without the public op's key and plan lookup. Up to
    ``MEMO_ENTRIES`` keys (a layer applied to several input sizes, in training and in
    evaluation), then the memo starts over. Not a parameter or buffer: ``state_dict`` does
    not see it."""

    _direct = None  # {key: (function, guard or None)}
    # What ``elutriton.fuse`` folded in or removed between the layer and its activation that
    # computes otherwise in training mode: a BatchNorm (its running statistics) and eval-mode
    # dropouts, e.g. ("BatchNorm2d bn1", "Dropout drop"). The layer computes what they did at
    # inference; ``train()`` warns that it still does. (Not checked per call: no cost, and
    # nothing that torch.compile would have to trace.)
    fused_for_inference = ()

    def __getstate__(self):
        # (not pickled or deep-copied: the fallback's function is a local one, which pickle
        # cannot write; a copy builds its own memo on its first call)
        state = super().__getstate__()
        state.pop("_direct", None)
        return state

    def _call(self, public_call, allow_tf32, args):
        """``public_call(*args)[0]`` (``args``: x, weight, bias, then the module's settings;
        ``public_call`` returns the result and the direct function, if any), or the memoed
        function's result where the memo's key equals this call's."""
        x, weight, bias = args[:3]
        key = module_call_key(x, weight, bias, allow_tf32, args[3:])
        if key is None:  # (nothing memoed or read while torch.compile traces the layer)
            if _is_compiling() and not use_triton(x):
                # torch.compile on a device without the kernels: torch's composite, which the
                # compiler fuses as in the unfused model. What the public call traces there
                # too, without its checks, each of which would add guards to every compiled
                # call (measured on CPU: twice the guards, ~5% of a tiny model's call); torch's
                # own ops check the tensors and arguments.
                return self._torch_composite(*args)
            return public_call(*args)[0]
        memo = self._direct
        if memo is None:
            memo = self.__dict__["_direct"] = {}
        try:
            entry = memo.get(key)
        except TypeError:  # a setting the user assigned as a list: no memo for such a call
            return public_call(*args)[0]
        if entry is not None and (entry[1] is None or entry[1] == kernel_guard(x, weight, bias)):
            return entry[0](*args)
        y, direct = public_call(*args)
        if direct is not None:
            if len(memo) >= MEMO_ENTRIES and key not in memo:
                memo.clear()
            # (a kernel call also holds the tensors' facts its plan read: call_memo.py)
            memo[key] = (direct, kernel_guard(x, weight, bias)
                         if getattr(direct, "guarded", False) else None)
        return y

    def train(self, mode: bool = True):
        """``nn.Module.train``; warns where ``mode`` switches on training mode for a layer fused
        for inference (``fused_for_inference``): the modules it stands for would have switched
        too, and compute otherwise in training mode."""
        if mode and self.fused_for_inference:
            removed = ", ".join(self.fused_for_inference)
            warnings.warn(
                f"{type(self).__name__}.train(): elutriton.fuse folded in or removed {removed} "
                "here, which compute otherwise in training mode (a BatchNorm normalizes with "
                "the batch's statistics, a dropout drops): this layer still computes what they "
                "computed at inference, unlike the model it was fused from. To train, fuse the "
                "model in training mode (such pairs are then left alone).", UserWarning,
                stacklevel=2)
        return super().train(mode)

    def _set_activation(self, alpha, scale, input_scale):
        check_real(type(self).__name__, alpha=alpha, scale=scale, input_scale=input_scale)
        self.alpha, self.scale, self.input_scale = float(alpha), float(scale), float(input_scale)

    def _activation_repr(self):
        removed = (f", fused_for_inference={self.fused_for_inference}"
                   if self.fused_for_inference else "")
        return f"alpha={self.alpha}, scale={self.scale}, input_scale={self.input_scale}{removed}"

    @classmethod
    def from_modules(cls, layer, activation):
        """A fused layer equal to ``activation(layer(x))``, with a copy of ``layer``'s weights.

        ``activation`` is an ``nn.ELU``, ``nn.SELU`` or ``nn.CELU`` (its ``inplace`` flag does not
        matter: the fused layer writes a fresh output).
        """
        return cls.from_layer(layer, *module_params(activation))

    @classmethod
    def from_layer(cls, layer, alpha=1.0, scale=1.0, input_scale=1.0):
        """A fused layer equal to ``aten.elu(layer(x), alpha, scale, input_scale)``, with a copy
        of ``layer``'s weights and its train/eval mode.

        Each parameter is copied with its strides (a channels_last weight stays channels_last,
        as ``copy.deepcopy`` would keep it, so no call converts it) and its ``requires_grad``
        (a frozen layer stays frozen)."""
        with torch.no_grad():
            copies = {name: torch.nn.Parameter(torch.empty_like(p).copy_(p), p.requires_grad)
                      for name, p in layer.named_parameters(recurse=False)}
        return cls._holding(layer, copies, alpha, scale, input_scale)

    @classmethod
    def _holding(cls, layer, parameters, alpha=1.0, scale=1.0, input_scale=1.0):
        """``from_layer`` without the copy: the fused layer holds ``parameters`` (name ->
        ``nn.Parameter``, e.g. ``dict(layer.named_parameters())``) themselves, so whatever
        refers to them (an optimizer, a parameter's hooks or attributes) keeps working."""
        problem = layer_problem(layer)
        if problem:
            raise ValueError(f"{cls.__name__}.from_layer: {problem}")
        fused = cls._from_layer(layer, alpha=alpha, scale=scale, input_scale=input_scale)
        for name, parameter in parameters.items():
            setattr(fused, name, parameter)
        fused.train(layer.training)
        return fused


class Conv2dELU(_FusedELUMixin, torch.nn.Conv2d):
    """``elu(conv2d(x))`` in one kernel; arguments as ``nn.Conv2d`` plus the activation's.

    ``padding_mode`` other than ``'zeros'`` pads like ``nn.Conv2d`` does, then runs the fused
    kernel without padding.
    """

    def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding=0, dilation=1,
                 groups=1, bias=True, padding_mode="zeros", device=None, dtype=None, *,
                 alpha=1.0, scale=1.0, input_scale=1.0):
        super().__init__(in_channels, out_channels, kernel_size, stride, padding, dilation,
                         groups, bias, padding_mode, device, dtype)
        self._set_activation(alpha, scale, input_scale)

    @classmethod
    def _from_layer(cls, conv, **activation):
        if not isinstance(conv, torch.nn.Conv2d):
            raise TypeError(f"Conv2dELU.from_modules: expected an nn.Conv2d, got {type(conv).__name__}")
        return cls(conv.in_channels, conv.out_channels, conv.kernel_size, conv.stride,
                   conv.padding, conv.dilation, conv.groups, conv.bias is not None,
                   conv.padding_mode, conv.weight.device, conv.weight.dtype, **activation)

    def forward(self, input):  # (nn.Conv2d's name: callers may pass it by keyword)
        if is_scripting():  # torch's composite (module docstring)
            return torch.ops.aten.elu(self._conv_forward(input, self.weight, self.bias),
                                      self.alpha, self.scale, self.input_scale)
        padding = self.padding
        if self.padding_mode != "zeros":
            input = F.pad(input, self._reversed_padding_repeated_twice, mode=self.padding_mode)
            padding = 0
        weight, bias = _weight_and_bias(self)
        return self._call(conv2d_bias_elu_call, cudnn_allow_tf32, (
            input, weight, bias, self.stride, padding, self.dilation, self.groups, self.alpha,
            self.scale, self.input_scale))

    @staticmethod
    def _torch_composite(x, weight, bias, stride, padding, dilation, groups, alpha, scale,
                         input_scale):
        """``elu(F.conv2d(...))`` in torch's ops, with the dilation the public call takes
        (``ops/conv2d.effective_dilation``)."""
        dilation = effective_dilation(dilation, weight.shape)
        return reference.conv2d_bias_elu(x, weight, bias, stride, padding, dilation, groups,
                                         alpha, scale, input_scale)

    def extra_repr(self):
        return f"{super().extra_repr()}, {self._activation_repr()}"


class LinearELU(_FusedELUMixin, torch.nn.Linear):
    """``elu(linear(x))`` in one kernel; arguments as ``nn.Linear`` plus the activation's.

    ``folded_batchnorm1d``: set by ``elutriton.fuse`` on a layer with a ``BatchNorm1d`` folded
    in, which normalized the output features only for 2-D input ``[N, features]`` (on 3-D
    input ``BatchNorm1d`` normalizes dim 1); such a layer raises for other input.
    """

    folded_batchnorm1d = False

    def __init__(self, in_features, out_features, bias=True, device=None, dtype=None, *,
                 alpha=1.0, scale=1.0, input_scale=1.0):
        super().__init__(in_features, out_features, bias, device, dtype)
        self._set_activation(alpha, scale, input_scale)
        self.folded_batchnorm1d = False  # (an instance attribute: TorchScript reads no others)

    @classmethod
    def _from_layer(cls, linear, **activation):
        if not isinstance(linear, torch.nn.Linear):
            raise TypeError(f"LinearELU.from_modules: expected an nn.Linear, got {type(linear).__name__}")
        return cls(linear.in_features, linear.out_features, linear.bias is not None,
                   linear.weight.device, linear.weight.dtype, **activation)

    def forward(self, input):  # (nn.Linear's name: callers may pass it by keyword)
        if self.folded_batchnorm1d and input.dim() != 2:
            if is_scripting():  # (TorchScript formats no tuple of a shape)
                raise ValueError(
                    "LinearELU: this layer has a BatchNorm1d folded in (elutriton.fuse), which "
                    "normalized the output features only for 2-D input [N, features]")
            else:
                raise ValueError(
                    f"LinearELU: this layer has a BatchNorm1d folded in (elutriton.fuse), which "
                    f"normalized the output features only for 2-D input [N, features]; got "
                    f"input of shape {tuple(input.shape)}")
        if is_scripting():  # torch's composite (module docstring)
            return torch.ops.aten.elu(F.linear(input, self.weight, self.bias), self.alpha,
                                      self.scale, self.input_scale)
        weight, bias = _weight_and_bias(self)
        return self._call(linear_bias_elu_call, matmul_allow_tf32, (
            input, weight, bias, self.alpha, self.scale, self.input_scale))

    _torch_composite = staticmethod(reference.linear_bias_elu)  # (what _call runs traced)

    def extra_repr(self):
        folded = ", folded_batchnorm1d=True" if self.folded_batchnorm1d else ""
        return f"{super().extra_repr()}, {self._activation_repr()}{folded}"
