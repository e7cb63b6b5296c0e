"""The fused layers' memo of their calls (``nn/layers.py``): its key and guard, and the
function a kernel call leaves in it.

A fused layer (``Conv2dELU``, ``LinearELU``) remembers the calls whose whole work the public op
handed to one function of the call's arguments, under their ``module_call_key`` (a few keys:
``nn.layers.MEMO_ENTRIES``); a call with an equal key calls that function directly, skipping
the public op's plan key, plan lookup and per-call checks. The function is one of:

- torch's composite (``composite_path``: a library-path layer run eagerly with autograd, or a
  linear library path without it) or the PyTorch fallback (a device without the kernels):
  torch's own ops on the module's current tensors, so the key alone decides a hit;
- a kernel call (``kernel_call``): the library path's convolution and bias+ELU kernel, or the
  fused kernel, with autocast's casts and, where autograd records, the op's autograd Function,
  as ``FusedOp.call`` ran them. A kernel reads the tensors its plan was made for, so such a
  memo also holds ``kernel_guard``'s tuple of the call, and hits only where it is equal: the
  parameters' full plan metadata, x's negative bit, no dispatch mode and no functorch wrapper
  (what ``FusedOp.call`` checks on each call).
"""
import torch
import torch.nn.functional as F

from .._autocast import autocast_cast, autocast_dtype
from .._transforms import transformed
from ..plan import plans_generation, tensor_key
from .backward_path import read_backward_env
from . import composite_path

_Tensor = torch.Tensor
_grad_enabled = torch.is_grad_enabled
_is_compiling = torch.compiler.is_compiling
_dispatch_modes = torch._C._len_torch_dispatch_stack
_legacy_batched = torch._C._functorch.is_legacy_batchedtensor
_is_functorch_wrapped = torch._C._functorch.is_functorch_wrapped_tensor


def module_call_key(x, weight, bias, allow_tf32, settings):
    """For a fused module's call on ``x`` with its ``weight`` and ``bias``: every fact the
    public op's choice of what to run depends on, as one tuple, or None where the call must
    go through the public op (``x`` not a plain tensor, torch.compile or another tracer or
    transform at work). ``allow_tf32``: the op's TF32 flag (the function; called with
    ``compiling=False``, which this key has checked); ``settings``: the module's own arguments
    (conv stride, padding, dilation, groups; the ELU parameters).

    On tiny CPU tensors with the launches stubbed, a library-path ``Conv2dELU`` in an
    ``nn.Sequential`` took 27.3 us per call before the memo and 20.5 us with it, against
    17.9-18.4 us for ``nn.Conv2d`` then ``nn.ELU`` (this key: ~1.5 us). An unbatched conv
    keeps no memo (its composite would run ``elu_`` on a view).

    The choice reads: the tensors' metadata as the layer holds them (x's shape, strides, dtype,
    device; the parameters' dtype and device), what autograd records (grad mode and each
    ``requires_grad``), the autocast dtype, the TF32 flag, ``ELUTRITON_BACKWARD`` (read on
    each call), CUDA-graph capture, the plans' generation (``clear_plans``, which a change of
    ``ELUTRITON_PATH`` or of the tuned tables needs, moves it) and the module's settings: all
    here. What is not here cannot make a composite's hit wrong: the function is torch's own
    ops on the module's current tensors, so a parameter swapped through ``.data`` to another
    shape or layout still gets torch's result (or torch's error), at worst on the path its
    old metadata chose. A kernel call's hit also needs ``kernel_guard``."""
    if x.__class__ is not _Tensor or _is_compiling() or transformed(x, False):
        return None
    try:
        stride = x.stride()
    except RuntimeError:  # no strides (a sparse tensor): the public op names it
        return None
    return (x.shape, stride, x.dtype, x.device, x.requires_grad, weight.dtype, weight.device,
            weight.requires_grad, bias is not None and bias.requires_grad, _grad_enabled(),
            autocast_dtype(x), allow_tf32(False), read_backward_env(),
            composite_path.capturing(x.is_cuda), plans_generation(), settings)


def kernel_guard(x, weight, bias):
    """What a memoed kernel call reads beyond ``module_call_key``: x's negative bit (a
    negative view has its base's strides and storage), the parameters' plan metadata
    (``plan.tensor_key``: a parameter replaced through ``.data`` with another shape, strides
    or class), and what sends ``FusedOp.call`` elsewhere: a dispatch mode (the custom op),
    a legacy vmap batch, functorch-wrapped tensors."""
    return (x.is_neg(), tensor_key(weight), tensor_key(bias), _dispatch_modes(),
            _legacy_batched(x), _is_functorch_wrapped(x), _is_functorch_wrapped(weight),
            bias is not None and _is_functorch_wrapped(bias))


def kernel_call(run, cast, cast_inputs, fixed, pad=None):
    """The function of a module call's arguments ``(x, weight, bias, *settings)`` that repeats
    a public call which ran ``run`` (the library path's run, or ``FusedOp.direct``'s function)
    on ``(x, weight, bias, *fixed)``: ``fixed``, the op's normalised arguments after the
    tensors (the settings the memo key holds, resolved by the call's plan), and with
    autocast's ``cast`` dtype (None: off) applied as the public call applied it: to all three
    tensors (``cast_inputs``), or to the bias alone (the library path, whose convolution
    casts x and the weight in C++); then x zero-padded by ``pad`` (``F.pad``'s list: the
    extra row and column of 'same' padding, whose copy's metadata, and so ``run``'s plan,
    follow from x's). Marked ``guarded``: its memo hits need ``kernel_guard``."""
    def call(x, weight, bias, *settings):
        if cast is not None:
            if cast_inputs:
                x, weight, bias = autocast_cast(cast, x, weight, bias)
            elif bias is not None:
                bias = autocast_cast(cast, bias)[0]
        if pad is not None:
            x = F.pad(x, pad)
        return run(x, weight, bias, *fixed)
    call.guarded = True
    return call
