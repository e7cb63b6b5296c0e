"""``elutriton.conv2d_bias_elu``: F.conv2d semantics, one Triton kernel, ELU-family epilogue.

Depthwise convolutions (groups == in_channels > 1) run ``kernels/depthwise_conv2d.py``;
every other convolution runs the implicit-GEMM kernel of ``kernels/conv2d.py``.

Op: ``elutriton::conv2d_bias_elu(x, weight, bias?, stride, padding, dilation, groups, alpha,
scale, input_scale) -> y`` on 4-D inputs with symmetric int padding; the public function maps
every F.conv2d argument form onto it (pairs, 'same'/'valid', unbatched inputs).

Autograd keeps y and, where the gradients need them, x and the weight (never the
pre-activation z; ops/epilogue_autograd.py). Backward, chosen per shape
(``ops/backward_path.py``): elutriton's weight- and input-gradient kernels, which read grad_y
and y and never write grad_z; or the fused bias+ELU backward kernel (grad_z and grad_bias)
followed by torch's convolution backward (cuDNN on a GPU).
"""
import math
import numbers
from typing import List, Optional

import torch
import torch.nn.functional as F
from torch._prims_common import suggest_memory_format

from .. import reference
from .._autocast import autocast_cast, autocast_dtype
from .._layout import batched_view
from .._runtime import use_triton
from .._symbolic import all_static
from .._transforms import run_transformed, transformed
from .._validate import check_bias, check_float_tensor, check_same_device_dtype
from ..kernels.conv2d import plan_conv2d_bias_elu
from ..kernels.conv2d_tma import plan_conv_tma
from ..kernels.depthwise_conv2d import is_depthwise, plan_depthwise_conv2d_bias_elu
from ..kernels.gemm_tma import plan_tma_gemm
from ..params import check_params
from ..plan import (NO_KEY, PlanCache, cudnn_allow_tf32, get_plan, kernel_plan,
                    pair_key, tensor_key)
from .backward_path import TRITON, backward_path
from .call_memo import kernel_call
from .conv_input_grad import conv2d_input_grad
from .conv_weight_grad import conv2d_weight_grad
from .epilogue_autograd import epilogue_backward, save_epilogue_context
from .fused_op import FusedOp
from .library_path import LIBRARY, choose_path, plan_library_conv2d
from .composite_path import (ConvComposite, conv_composite, conv_traces_composite,
                             eager_candidate, fixed_conv_composite, records_grad)

OP = "elutriton.conv2d_bias_elu"
_is_compiling = torch.compiler.is_compiling
CHANNELS_LAST = torch.channels_last


def conv_output_format(x: torch.Tensor, weight: torch.Tensor) -> torch.memory_format:
    """torch's rule: channels_last output when the input or the weight is channels_last."""
    if CHANNELS_LAST in (suggest_memory_format(x), suggest_memory_format(weight)):
        return CHANNELS_LAST
    return torch.contiguous_format


def conv_output_size(size: int, kernel: int, stride: int, padding: int, dilation: int) -> int:
    return (size + 2 * padding - dilation * (kernel - 1) - 1) // stride + 1


def _output_shape(x, weight, stride, padding, dilation):
    n, _, h, w = x.shape
    oc, _, kh, kw = weight.shape
    return (n, oc, conv_output_size(h, kh, stride[0], padding[0], dilation[0]),
            conv_output_size(w, kw, stride[1], padding[1], dilation[1]))


def _empty_output(x, weight, stride, padding, dilation, device=None):
    return torch.empty(_output_shape(x, weight, stride, padding, dilation), dtype=x.dtype,
                       device=device or x.device, memory_format=conv_output_format(x, weight))


def _in_kernel_layout(t):
    """(t as the kernels read it: NHWC / [OC, KH, KW, Cg]-stored, whether that is a copy);
    for a copy, a meta tensor with the copy's strides."""
    if t.is_contiguous(memory_format=CHANNELS_LAST):
        return t, False
    return torch.empty_like(t, device="meta", memory_format=CHANNELS_LAST), True


def _path(dtype, allow_tf32, n_pixels, weight_shape, groups, has_bias, device, nchw):
    """The per-shape choice (``library_path.choose_path``) for a conv with these fields;
    ``nchw``: whether x is not channels_last (the fused kernel would convert it)."""
    out_channels, in_per_group, kernel_h, kernel_w = weight_shape
    return choose_path("conv2d_bias_elu", dtype, allow_tf32, n_pixels, out_channels // groups,
                       in_per_group, kernel_h, kernel_w, groups, has_bias, device,
                       "nchw" if nchw else "channels_last")


def _kernel_plan(x, weight, bias, stride, padding, dilation, groups, allow_tf32, path=None):
    """``run(x, weight, bias, stride, padding, dilation, groups, alpha, scale, input_scale)``
    for 4-D tensors with this metadata (the op's implementation, minus the decisions);
    ``allow_tf32`` is torch's cuDNN TF32 flag (fp32 convolutions follow it); ``path``: the
    per-shape choice where the caller made it already (``_path``), else None."""
    y_meta = _empty_output(x, weight, stride, padding, dilation, device="meta")
    out_shape, out_format, out_stride = y_meta.shape, conv_output_format(x, weight), y_meta.stride()
    if not use_triton(x):
        def run_reference(x, weight, bias, stride, padding, dilation, groups, alpha, scale,
                          input_scale):
            y = reference.conv2d_bias_elu(x, weight, bias, stride, padding, dilation, groups,
                                          alpha, scale, input_scale)
            return reference.in_layout(y, out_shape, out_stride, out_format)
        run_reference.composite = True
        return run_reference
    # Both kernels read channels as the contiguous dimension: NHWC input (and, for the GEMM
    # kernel, a weight stored [OC, KH, KW, Cg]). Tensors in another layout are converted on
    # each call (one pass over them; the output still follows torch's memory-format rule)
    # unless the per-shape choice takes the library path (ops/library_path.py).
    x_kernel, convert_x = _in_kernel_layout(x)
    n, _, out_h, out_w = out_shape
    out_channels, in_per_group, kernel_h, kernel_w = weight.shape
    if path is None:
        path = _path(x.dtype, allow_tf32, n * out_h * out_w, weight.shape, groups,
                     bias is not None, x.device, convert_x)
    if path == LIBRARY:
        return plan_library_conv2d(y_meta, bias is not None)
    if is_depthwise(x.shape[1], groups):
        convert_w = False  # the depthwise kernel reads [OC, 1, KH, KW] through its strides
        launch = plan_depthwise_conv2d_bias_elu(x_kernel, weight, y_meta, bias is not None,
                                                stride, padding, dilation, device=x.device)
    else:
        w_kernel, convert_w = _in_kernel_layout(weight)
        launch = plan_conv2d_bias_elu(x_kernel, w_kernel, y_meta, bias is not None, stride,
                                      padding, dilation, groups,
                                      allow_tf32=allow_tf32, device=x.device)
    contiguous_bias = bias is None or bias.is_contiguous()
    # a 1x1, stride-1, unpadded, ungrouped conv with a channels_last output is a plain GEMM of
    # [N*H*W, C] rows: the TMA kernel where the table measured it faster (kernels/gemm_tma.py)
    tma = None
    if ((kernel_h, kernel_w, groups) == (1, 1, 1) and list(stride) == [1, 1]
            and list(padding) == [0, 0] and out_format == CHANNELS_LAST):
        tma = plan_tma_gemm(x.dtype, allow_tf32, n * out_h * out_w, out_channels,
                            in_per_group, bias is not None, x.device, in_per_group,
                            in_per_group, out_channels)

    # a stride-1 ungrouped conv with channels_last x and y: the TMA implicit GEMM where the
    # table measured it faster (kernels/conv2d_tma.py)
    conv_tma = None
    if tma is None and not is_depthwise(x.shape[1], groups):
        conv_tma = plan_conv_tma(x_kernel, w_kernel, y_meta, bias is not None, stride, padding,
                                 dilation, groups, allow_tf32, x.device)

    def run(x, weight, bias, stride, padding, dilation, groups, alpha, scale, input_scale):
        y = torch.empty(out_shape, dtype=x.dtype, device=x.device, memory_format=out_format)
        x = x.contiguous(memory_format=CHANNELS_LAST) if convert_x else x
        weight = weight.contiguous(memory_format=CHANNELS_LAST) if convert_w else weight
        bias = bias if contiguous_bias else bias.contiguous()
        # (a channels_last 1x1 weight is contiguous too: its spatial dims have size 1)
        if tma is not None and tma(x.permute(0, 2, 3, 1).view(-1, x.shape[1]),
                                   weight.view(weight.shape[0], -1), bias,
                                   y.permute(0, 2, 3, 1).view(-1, y.shape[1]), alpha, scale,
                                   input_scale):
            return y
        if conv_tma is not None and conv_tma(x, weight, bias, y, alpha, scale, input_scale):
            return y
        launch(x, weight, bias, y, alpha, scale, input_scale)
        return y
    return run


_KERNEL_PLANS = PlanCache("conv2d_bias_elu kernel")


def _conv2d_bias_elu_impl(x: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor],
                          stride: List[int], padding: List[int], dilation: List[int], groups: int,
                          alpha: float, scale: float, input_scale: float) -> torch.Tensor:
    return _plan_for(x, weight, bias, stride, padding, dilation, groups, cudnn_allow_tf32())(
        x, weight, bias, stride, padding, dilation, groups, alpha, scale, input_scale)


def _plan_for(x, weight, bias, stride, padding, dilation, groups, allow_tf32):
    """The kernel plan for these (normalised) arguments, looked up on each call: the custom
    op's implementation, and public calls whose padded copy is made per call."""
    # the key inline: the schema makes stride/padding/dilation lists of ints and groups an int,
    # so tuples of them key as well as args_key's type-tagged form, which costs ~12 us more per
    # call (three lists walked by value_key) on the path torch.compile's graphs call. The two
    # forms never compare equal, so they share the cache safely.
    try:
        key = (tensor_key(x), tensor_key(weight), tensor_key(bias), tuple(stride),
               tuple(padding), tuple(dilation), groups, allow_tf32)
    except NO_KEY + (TypeError,):  # not tensors or not sequences: validation names it
        key = None
    return get_plan(_KERNEL_PLANS, key, _kernel_plan, x, weight, bias, stride, padding,
                    dilation, groups, allow_tf32)


conv2d_bias_elu_op = FusedOp("elutriton::conv2d_bias_elu", _conv2d_bias_elu_impl)


@conv2d_bias_elu_op.register_fake
def _(x, weight, bias, stride, padding, dilation, groups, alpha, scale, input_scale):
    return _empty_output(x, weight, stride, padding, dilation)


def _setup(ctx, inputs, output):
    x, weight, bias, stride, padding, dilation, groups, alpha, scale, input_scale = inputs
    ctx.conv = (stride, padding, dilation, groups)
    ctx.weight_shape, ctx.x_shape = weight.shape, x.shape
    ctx.n_pixels = output.shape[0] * output.shape[2] * output.shape[3]
    save_epilogue_context(ctx, x, weight, bias, output, alpha, scale, input_scale)


def _backward(ctx, grad_y):
    stride, padding, dilation, groups = ctx.conv
    allow_tf32 = cudnn_allow_tf32()
    if backward_path(grad_y, ctx.weight_shape, groups, ctx.n_pixels, ctx.has_bias,
                     ctx.from_result, ctx.needs_input_grad[0], ctx.needs_input_grad[1],
                     allow_tf32, torch.is_grad_enabled()) == TRITON:
        return _backward_triton(ctx, grad_y, allow_tf32)
    x, weight, grad_z, grad_bias = epilogue_backward(
        ctx, grad_y, lambda x, w: F.conv2d(x, w, None, stride, padding, dilation, groups), 1)
    grad_x, grad_w = None, None
    if ctx.needs_input_grad[0] or ctx.needs_input_grad[1]:
        # a tensor not kept (its gradient's partner needs no gradient) stands in as one
        # expanded element, as torch.nn.grad.conv2d_input/conv2d_weight pass it
        if x is None:
            x = grad_z.new_empty(1).expand(ctx.x_shape)
        if weight is None:
            weight = grad_z.new_empty(1).expand(ctx.weight_shape)
        grad_x, grad_w, _ = torch.ops.aten.convolution_backward(
            grad_z, x, weight, None, stride, padding, dilation, False, [0, 0], groups,
            [ctx.needs_input_grad[0], ctx.needs_input_grad[1], False])
    return (grad_x, grad_w, grad_bias) + (None,) * 7


def _backward_triton(ctx, grad_y, allow_tf32):
    """Backward with elutriton's kernels (``ops/backward_path.py``): dW and db from the
    weight-gradient kernel, dX from the input-gradient kernel when x needs it; both read grad_y
    and y, so grad_z is never written."""
    stride, padding, dilation, groups = ctx.conv
    x, weight, y, _ = ctx.saved_tensors
    bias_grad = ctx.has_bias and ctx.needs_input_grad[2]
    grad_w, grad_bias = conv2d_weight_grad(grad_y, y, x, ctx.weight_shape, stride, padding,
                                           dilation, ctx.elu, bias_grad, allow_tf32)
    grad_x = None
    if ctx.needs_input_grad[0]:
        grad_x = conv2d_input_grad(grad_y, y, weight, x, stride, padding, dilation, ctx.elu,
                                   allow_tf32)
    return (grad_x, grad_w, grad_bias) + (None,) * 7


conv2d_bias_elu_op.register_autograd(_backward, setup_context=_setup)


# ---------------------------------------------------------------------------------------
# Public function: F.conv2d's argument conventions
# ---------------------------------------------------------------------------------------
def _pair(name, value, minimum):
    if isinstance(value, bool):
        raise TypeError(f"{OP}: expected `{name}` to be an int or a pair of ints, got {value!r}")
    if isinstance(value, numbers.Integral):
        value = (int(value), int(value))
    elif isinstance(value, (tuple, list)) and len(value) == 1:
        value = (value[0], value[0])  # F.conv2d expands a one-element list to both dims
    if (not isinstance(value, (tuple, list)) or len(value) != 2
            or not all(isinstance(v, numbers.Integral) and not isinstance(v, bool) for v in value)):
        raise TypeError(f"{OP}: expected `{name}` to be an int or a pair of ints, got {value!r}")
    if min(value) < minimum:
        bound = "positive" if minimum == 1 else "non-negative"
        raise ValueError(f"{OP}: `{name}` must be {bound}, got {tuple(value)}")
    return [int(v) for v in value]


def effective_dilation(dilation, weight_shape):
    """``dilation`` (a pair) with 1 along an axis where the kernel (``weight_shape[2:]``) has
    one tap: there it changes nothing, and 1 spares torch's CPU convolution (what the
    fallback, the composite and the library paths run) a crash that such a dilation causes
    with stride and padding (docs/torch_defects.md)."""
    return [1 if k == 1 else d for d, k in zip(dilation, weight_shape[2:])]


def _resolve_padding(padding, weight, stride, dilation):
    """(symmetric padding, extra right/bottom padding) for int, pair, 'valid' and 'same'."""
    if isinstance(padding, str):
        if padding == "valid":
            return [0, 0], None
        if padding != "same":
            raise ValueError(f"{OP}: `padding` string must be 'same' or 'valid', got {padding!r}")
        if stride != [1, 1]:
            raise ValueError(f"{OP}: padding='same' is not supported for strided convolutions")
        totals = [d * (k - 1) for d, k in zip(dilation, weight.shape[2:])]
        left = [t // 2 for t in totals]
        extra = [t - 2 * lo for t, lo in zip(totals, left)]
        # Like F.conv2d: an odd total pads one more on the bottom/right, explicitly.
        return left, (extra if any(extra) else None)
    return _pair("padding", padding, 0), None


def _check_conv_args(x, weight, bias, groups):
    check_float_tensor(OP, "input", x)
    check_float_tensor(OP, "weight", weight)
    check_same_device_dtype(OP, "weight", weight, "input", x)
    if x.dim() not in (3, 4):
        raise ValueError(f"{OP}: expected 3-D (unbatched) or 4-D (batched) `input`, got "
                         f"{x.dim()}-D with shape {tuple(x.shape)}")
    if weight.dim() != 4:
        raise ValueError(f"{OP}: expected 4-D `weight` [out_channels, in_channels / groups, kH, "
                         f"kW], got shape {tuple(weight.shape)}")
    if isinstance(groups, bool) or not isinstance(groups, numbers.Integral) or groups < 1:
        raise ValueError(f"{OP}: `groups` must be a positive int, got {groups!r}")
    in_channels = x.shape[-3]
    out_channels = weight.shape[0]
    if in_channels == 0:  # (F.conv2d returns 0 output channels there, whatever the weight)
        raise ValueError(f"{OP}: expected `input` with at least one channel, got shape "
                         f"{tuple(x.shape)}")
    if out_channels % groups != 0:
        raise ValueError(f"{OP}: out_channels ({out_channels}) must be divisible by `groups` "
                         f"({groups})")
    if weight.shape[1] * groups != in_channels:
        raise ValueError(
            f"{OP}: expected `input` with {weight.shape[1] * groups} channels (weight "
            f"{tuple(weight.shape)} with groups={groups}), got {in_channels} channels")
    if bias is not None:
        check_bias(OP, bias, x, "input", out_channels, "out_channels")


def _call_plan(x, weight, bias, stride, padding, dilation, groups, alpha, scale, input_scale,
               allow_tf32, cast):
    """Validate a call (F.conv2d's checks and argument forms) and plan it; ``cast``: the
    autocast dtype (``_autocast.autocast_dtype``) the tensors are planned in, or None."""
    x, weight, bias = autocast_cast(cast, x, weight, bias)
    _check_conv_args(x, weight, bias, groups)
    check_params(OP, x.dtype, alpha, scale, input_scale)
    stride = _pair("stride", stride, 1)
    dilation = effective_dilation(_pair("dilation", dilation, 1), weight.shape)
    padding, extra = _resolve_padding(padding, weight, stride, dilation)
    unbatched = x.dim() == 3
    shape = (1,) * unbatched + tuple(x.shape)
    if extra is not None:
        shape = shape[:2] + (shape[2] + extra[0], shape[3] + extra[1])
    for axis, name in ((0, "height"), (1, "width")):
        padded = shape[2 + axis] + 2 * padding[axis]
        span = dilation[axis] * (weight.shape[2 + axis] - 1) + 1
        if padded < span:
            raise ValueError(
                f"{OP}: kernel {name} with dilation spans {span} but the padded input {name} "
                f"is {padded}: the output would be empty")
    x4 = batched_view(x) if unbatched else x
    # torch's composite takes 'same' of odd total as the string: F.conv2d resolves it as
    # _resolve_padding does, and pads in C++
    composite_padding = padding if extra is None else "same"
    run = path = composite = None
    if not _is_compiling():  # (traced calls plan at run time)
        # the per-shape choice for what the op will see: x4, or the padded copy, which F.pad
        # makes in x's memory format
        n_pixels = shape[0] * math.prod(
            conv_output_size(shape[2 + i], weight.shape[2 + i], stride[i], padding[i],
                             dilation[i]) for i in (0, 1))
        nchw = (not x4.is_contiguous(memory_format=CHANNELS_LAST) if extra is None
                else suggest_memory_format(x4) != CHANNELS_LAST)
        path = _path(x.dtype, allow_tf32, n_pixels, weight.shape, int(groups),
                     bias is not None, x.device, nchw)
        # an eager call that autograd records may run torch's composite
        # (ops/composite_path.py): then what decides it per call
        if path == LIBRARY and eager_candidate(x.device, (alpha, scale, input_scale)):
            composite = ConvComposite(
                x.device, x.dtype, weight.shape, int(groups), n_pixels, bias is not None,
                allow_tf32, fixed_conv_composite(
                    stride, composite_padding, dilation, int(groups), float(alpha),
                    float(scale), float(input_scale)))
    # With 'same' padding of odd total the op sees a fresh padded copy, whose metadata picks
    # its kernel plan on each call (the public function); else x (or its unbatched view) here.
    if extra is None:
        run = kernel_plan(_KERNEL_PLANS, _kernel_plan, x4, weight, bias, stride, padding,
                          dilation, int(groups), allow_tf32, path)
    pad = None if extra is None else [0, extra[1], 0, extra[0]]
    # where the kernels do not serve x, the whole call is torch's composite (reference.py),
    # with the arguments this plan resolved; with 'same' of odd total that is ~10 us less per
    # call on CPU than F.pad here and the padded copy's plan. The result is laid out as the
    # kernels' run on what the op sees (x, or the padded copy) would lay it out.
    fallback = None
    if not unbatched and not _is_compiling() and not use_triton(x4):
        seen = x4 if pad is None else F.pad(
            torch.empty_strided(x4.shape, x4.stride(), dtype=x4.dtype, device="meta"), pad)
        y_meta = _empty_output(seen, weight, stride, padding, dilation, device="meta")
        fallback = reference.fixed_conv2d_bias_elu(
            stride, composite_padding, dilation, int(groups), alpha, scale, input_scale,
            y_meta.stride(), conv_output_format(seen, weight))
    return stride, padding, dilation, int(groups), unbatched, pad, run, composite, fallback


_CALL_PLANS = PlanCache("conv2d_bias_elu")


def conv2d_bias_elu(x: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor] = None,
                    stride=1, padding=0, dilation=1, groups: int = 1, alpha: float = 1.0,
                    scale: float = 1.0, input_scale: float = 1.0) -> torch.Tensor:
    """``elu(F.conv2d(x, weight, bias, stride, padding, dilation, groups))`` in one kernel.

    Arguments follow ``F.conv2d`` (int or pair stride/padding/dilation, ``padding='same'`` or
    ``'valid'``, any ``groups``, 3-D unbatched or 4-D input); ``alpha, scale, input_scale`` are
    aten ``elu``'s (SELU: ``elutriton.params.selu_params()``; CELU(a): ``a, 1, 1/a``). The
    output is channels_last when the input or weight is, as in torch. Under ``torch.autocast``
    the tensors are cast as for ``F.conv2d`` (``elutriton/_autocast.py``).
    """
    return conv2d_bias_elu_call(x, weight, bias, stride, padding, dilation, groups, alpha, scale,
                                input_scale, memo=False)[0]


def conv2d_bias_elu_call(x, weight, bias, stride, padding, dilation, groups, alpha, scale,
                         input_scale, memo=True):
    """``(conv2d_bias_elu(...), direct)``. ``direct``: where one function of the call's own
    arguments did the whole call (torch's composite, the PyTorch fallback on a device without
    the kernels, or ``call_memo.kernel_call``'s repeat of a kernel call), that function, which
    a call with the same ``call_memo.module_call_key`` (and, for a kernel call, the same
    ``kernel_guard``) may call directly (the fused modules' memo); else None. Without
    ``memo`` (the public function, which keeps no memo) no kernel call's repeat is built:
    None there."""
    compiling = _is_compiling()  # (read once: ~0.1 us a read)
    if transformed(x, compiling):  # tracers, torch.func, forward AD (elutriton/_transforms.py)
        args = (x, weight, bias, stride, padding, dilation, groups, alpha, scale, input_scale)
        return run_transformed(conv2d_bias_elu, args, {}, OP, lambda: F.conv2d(*args[:7]),
                               lambda: (alpha, scale, input_scale)), None
    cast = autocast_dtype(x)
    allow_tf32 = cudnn_allow_tf32(compiling)
    try:  # a non-tensor argument: no key; validation will name it
        # ints and int pairs stand for themselves; strings and anything else keep their
        # element types (plan.pair_key), so (1, True) != (1, 1). (No key while dynamo traces:
        # plans are built uncached then, and it cannot trace tensor_key's is_neg.)
        key = None if compiling else (
            tensor_key(x), tensor_key(weight), tensor_key(bias), pair_key(stride),
            pair_key(padding), pair_key(dilation), groups.__class__, groups, alpha.__class__,
            alpha, scale.__class__, scale, input_scale.__class__, input_scale, allow_tf32, cast)
    except NO_KEY:
        key = None
    stride, padding, dilation, groups, unbatched, pad, run, composite, fallback = get_plan(
        _CALL_PLANS, key, _call_plan, x, weight, bias, stride, padding, dilation, groups, alpha,
        scale, input_scale, allow_tf32, cast)
    if fallback is not None:
        # called as it is (torch's autograd) on the tensors as given: under autocast
        # F.conv2d casts them, in C++
        return fallback(x, weight, bias), fallback
    if compiling and not use_triton(x):
        # torch.compile on a device without the kernels: torch's composite, which the
        # compiler fuses as it fuses the unfused model's (the custom op would be an opaque
        # call back into Python on every run); 'same' of odd total as the string
        return reference.conv2d_bias_elu(
            x, weight, bias, stride, "same" if pad is not None else padding, dilation, groups,
            alpha, scale, input_scale), None
    params = (float(alpha), float(scale), float(input_scale))
    grad = records_grad(x, weight, bias)
    # a library-path layer run eagerly with autograd: torch's composite (ops/composite_path.py)
    # on the tensors as given (under autocast torch casts them)
    eager_composite = (composite is not None and grad
                       and composite(x.requires_grad, weight.requires_grad))
    # the library path without autograd under autocast: F.conv2d casts x and the weight in C++
    # (elutriton/_autocast.py); the bias+ELU kernel needs the bias in y's dtype
    library_casts = (not eager_composite and cast is not None and getattr(run, "library", False)
                     and not grad and conv2d_bias_elu_op.runs_directly(x, weight, bias))
    if library_casts:
        bias = None if bias is None else autocast_cast(cast, bias)[0]
    elif not eager_composite:
        x, weight, bias = autocast_cast(cast, x, weight, bias)
    if unbatched:
        x = batched_view(x)
    if pad is not None:
        x = F.pad(x, pad)
        if not eager_composite and not compiling:
            # the padded copy's plan (a composite on CPU)
            run = _plan_for(x, weight, bias, stride, padding, dilation, groups, allow_tf32)
    fixed = (stride, padding, dilation, groups, *params)
    kernel = None  # what ran the kernels, for the memo (where one function of x did it)
    if eager_composite or (compiling and _traces_composite(
            x, weight, bias, stride, padding, dilation, groups, params, allow_tf32)):
        # (or a library-path layer traced by torch.compile: the composite too)
        y = conv_composite(x, weight, bias, *fixed)
    elif library_casts:
        y = run(x, weight, bias, *fixed)
        kernel = run
    else:
        y = conv2d_bias_elu_op.call(run or _conv2d_bias_elu_impl, x, weight, bias, *fixed)
        if memo and run is not None:
            kernel = conv2d_bias_elu_op.direct(run, x, weight, bias, *fixed)
    if unbatched:  # (no direct function: elu_ on F.conv2d's unbatched output, a view, would
        # make autograd rebase it, a copy of the gradient in backward)
        return y.squeeze(0), None
    if memo and kernel is not None:  # (with the padded copy's plan, where the call made one)
        return y, kernel_call(kernel, cast, not library_casts, fixed, pad)
    # torch's composite with the plan's arguments on the unpadded x computes what it did on
    # the padded copy ('same' kept as the string there: F.conv2d resolves it as
    # _resolve_padding does)
    return y, composite.direct if eager_composite else None


def _traces_composite(x, weight, bias, stride, padding, dilation, groups, params, allow_tf32):
    """``composite_path.conv_traces_composite`` for these (already normalised) arguments; never
    with symbolic sizes or parameters (dynamic shapes keep the custom op; its arguments must
    be constants: ``_symbolic.py``)."""
    n, _, out_h, out_w = _output_shape(x, weight, stride, padding, dilation)
    n_pixels = n * out_h * out_w
    if not all_static(n_pixels, *weight.shape, *params):
        return False
    layout = "channels_last" if x.is_contiguous(memory_format=CHANNELS_LAST) else "nchw"
    return conv_traces_composite(x.device, x.dtype, allow_tf32, int(n_pixels),
                                 tuple(int(d) for d in weight.shape), groups, bias is not None,
                                 layout, tuple(float(p) for p in params), x.requires_grad,
                                 weight.requires_grad, records_grad(x, weight, bias))
