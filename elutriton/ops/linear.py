"""``elutriton.linear_bias_elu``: F.linear semantics with the bias + ELU-family epilogue.

Per shape, either the fused kernel or the library path (cuBLAS's linear, then the ELU in
place; ``ops/library_path.py`` says when). The fused GEMM runs on the implicit-GEMM conv
kernel as a 1x1 convolution of a 1x1 image
(``x [M, K] -> [M, K, 1, 1]``, ``weight [N, K] -> [N, K, 1, 1]``), so conv and linear share one
K loop and one epilogue. Autograd keeps y and, where the gradients need them, x and the
weight (ops/epilogue_autograd.py); grad_z and grad_bias come from the
fused bias+ELU backward kernel, grad_x and grad_weight from two matmuls (cuBLAS on a GPU).
"""
import math
from typing import Optional

import torch
import torch.nn.functional as F

from .. import reference
from .._autocast import autocast_cast, autocast_dtype
from .._layout import as_rows
from .._runtime import device_runs_triton, use_triton
from .._symbolic import all_static
from .._transforms import run_transformed, transformed
from .._validate import check_bias, check_float_tensor, check_same_device_dtype
from ..kernels.conv2d import plan_conv2d_bias_elu
from ..kernels.gemm_tma import plan_tma_gemm
from ..params import check_params
from ..plan import (NO_KEY, PlanCache, get_plan, kernel_plan, matmul_allow_tf32,
                    tensor_key)
from .epilogue_autograd import epilogue_backward, save_epilogue_context
from .call_memo import kernel_call
from .fused_op import FusedOp
from .library_path import LIBRARY, choose_path, plan_library_linear
from .composite_path import (eager_candidate, fixed_linear_composite, linear_composite,
                             linear_runs_composite, linear_traces_composite, records_grad)

OP = "elutriton.linear_bias_elu"
_is_compiling = torch.compiler.is_compiling
UNIT = [1, 1]
NO_PADDING = [0, 0]
# the plan's run where the kernels do not serve x: torch's composite (reference.py)
_FALLBACK = reference.linear_bias_elu


def _empty_output(x, weight):
    return torch.empty(x.shape[:-1] + (weight.shape[0],), dtype=x.dtype, device=x.device)


def _path(x, weight, bias, allow_tf32):
    """The per-shape choice (``library_path.choose_path``) for a linear call with these
    tensors: the GEMM has one row per vector of x."""
    out_features, in_features = weight.shape
    rows = math.prod(x.shape[:-1])
    return choose_path("linear_bias_elu", x.dtype, allow_tf32, rows, out_features, in_features,
                       1, 1, 1, bias is not None, x.device, None)


def _kernel_plan(x, weight, bias, allow_tf32, path=None):
    """``run(x, weight, bias, alpha, scale, input_scale)`` for tensors with this metadata;
    ``allow_tf32`` is torch's matmul TF32 flag (fp32 linear layers follow it); ``path``: the
    per-shape choice where the caller made it already (``_path``), else None."""
    if not use_triton(x):
        return _FALLBACK  # F.linear's result is contiguous, like ours
    out_shape = x.shape[:-1] + (weight.shape[0],)
    # no products to sum (in_features 0: y = elu(bias)): torch's ops, as the library path runs
    if weight.shape[1] == 0 or (path or _path(x, weight, bias, allow_tf32)) == LIBRARY:
        return plan_library_linear(torch.empty(out_shape, dtype=x.dtype, device="meta"),
                                   bias is not None)
    # [M, K] rows as a [M, K, 1, 1] image batch, weight [N, K] as [N, K, 1, 1] filters. The
    # rows are a view of x where reshape can make one, else a contiguous copy: a meta tensor
    # with x's strides shows which, and so the strides the kernel will see.
    in_features, out_features = weight.shape[1], weight.shape[0]
    x_meta = torch.empty_strided(x.shape, x.stride(), dtype=x.dtype, device="meta")
    rows_meta = x_meta.reshape(-1, in_features, 1, 1)
    y_meta = torch.empty((rows_meta.shape[0], out_features, 1, 1), dtype=x.dtype, device="meta")
    launch = plan_conv2d_bias_elu(
        rows_meta, weight.reshape(out_features, in_features, 1, 1), y_meta, bias is not None,
        UNIT, NO_PADDING, UNIT, 1, allow_tf32=allow_tf32, device=x.device)
    contiguous_bias = bias is None or bias.is_contiguous()
    # the TMA kernel where the table measured it faster (kernels/gemm_tma.py): unit column
    # strides of x's rows and the weight, checked here; y is allocated row-major
    rows_2d = rows_meta.reshape(-1, in_features)
    tma = None
    if rows_2d.stride()[1] == 1 and weight.stride()[1] == 1:
        tma = plan_tma_gemm(x.dtype, allow_tf32, rows_2d.shape[0], out_features, in_features,
                            bias is not None, x.device, rows_2d.stride()[0], weight.stride()[0],
                            out_features)

    def run(x, weight, bias, alpha, scale, input_scale):
        y = torch.empty(out_shape, dtype=x.dtype, device=x.device)
        bias = bias if contiguous_bias else bias.contiguous()
        if tma is None or not tma(x.reshape(-1, in_features), weight, bias,
                                  y.view(-1, out_features), alpha, scale, input_scale):
            launch(x.reshape(-1, in_features, 1, 1),
                   weight.reshape(out_features, in_features, 1, 1), bias,
                   y.view(-1, out_features, 1, 1), alpha, scale, input_scale)
        return y
    return run


_KERNEL_PLANS = PlanCache("linear_bias_elu kernel")


def _linear_bias_elu_impl(x: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor],
                          alpha: float, scale: float, input_scale: float) -> torch.Tensor:
    return get_plan(_KERNEL_PLANS, None, _kernel_plan, x, weight, bias, matmul_allow_tf32())(
        x, weight, bias, alpha, scale, input_scale)


linear_bias_elu_op = FusedOp("elutriton::linear_bias_elu", _linear_bias_elu_impl)


@linear_bias_elu_op.register_fake
def _(x, weight, bias, alpha, scale, input_scale):
    return _empty_output(x, weight)


def _setup(ctx, inputs, output):
    x, weight, bias, alpha, scale, input_scale = inputs
    save_epilogue_context(ctx, x, weight, bias, output, alpha, scale, input_scale)


def _backward(ctx, grad_y):
    x, weight, grad_z, grad_bias = epilogue_backward(ctx, grad_y, F.linear, grad_y.dim() - 1)
    grad_x = grad_z @ weight if ctx.needs_input_grad[0] else None
    grad_w = None
    if ctx.needs_input_grad[1]:
        grad_w = as_rows(grad_z).t() @ as_rows(x)
    return grad_x, grad_w, grad_bias, None, None, None


linear_bias_elu_op.register_autograd(_backward, setup_context=_setup)


def _call_plan(x, weight, bias, alpha, scale, input_scale, allow_tf32, cast):
    """Validate a call (F.linear's checks) and plan it: (kernel run, library, composite,
    fallback), ``library``: where the layer takes the library path on a Triton device, torch's
    composite with the call's ELU parameters (``composite_path.fixed_linear_composite``: what
    an eager call without autograd runs), else None; ``composite``: whether its parameters let
    an eager call that autograd records run it too (ops/composite_path.py); ``fallback``:
    where the kernels do not serve x, the whole call as a function of the tensors
    (``reference.fixed_linear_bias_elu``), else None.
    ``cast``: the autocast dtype (``_autocast.autocast_dtype``) the tensors are planned in, or
    None."""
    x, weight, bias = autocast_cast(cast, x, weight, bias)
    check_float_tensor(OP, "input", x)
    check_float_tensor(OP, "weight", weight)
    check_same_device_dtype(OP, "weight", weight, "input", x)
    check_params(OP, x.dtype, alpha, scale, input_scale)
    if weight.dim() != 2:
        raise ValueError(f"{OP}: expected 2-D `weight` [out_features, in_features], got shape "
                         f"{tuple(weight.shape)}")
    if x.dim() < 1 or x.shape[-1] != weight.shape[1]:
        raise ValueError(f"{OP}: `input` of shape {tuple(x.shape)} and `weight` of shape "
                         f"{tuple(weight.shape)} cannot be multiplied (last dim of input must "
                         f"be in_features = {weight.shape[1]})")
    if bias is not None:
        check_bias(OP, bias, x, "input", weight.shape[0], "out_features")
    if _is_compiling():  # traced calls plan at run time
        return None, None, False, None
    path = _path(x, weight, bias, allow_tf32)
    library = (fixed_linear_composite(float(alpha), float(scale), float(input_scale))
               if path == LIBRARY and device_runs_triton(x.device) else None)
    composite = library is not None and eager_candidate(x.device, (alpha, scale, input_scale))
    run = kernel_plan(_KERNEL_PLANS, _kernel_plan, x, weight, bias, allow_tf32, path)
    # where the kernels do not serve x, the whole call is torch's composite (reference.py)
    fallback = (reference.fixed_linear_bias_elu(alpha, scale, input_scale) if run is _FALLBACK
                else None)
    return run, library, composite, fallback


_CALL_PLANS = PlanCache("linear_bias_elu")


def linear_bias_elu(x: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor] = None,
                    alpha: float = 1.0, scale: float = 1.0,
                    input_scale: float = 1.0) -> torch.Tensor:
    """``elu(F.linear(x, weight, bias))`` in one kernel; ``x`` is ``[..., in_features]``.
    Under ``torch.autocast`` the tensors are cast as for ``F.linear`` (``elutriton/_autocast.py``)."""
    return linear_bias_elu_call(x, weight, bias, alpha, scale, input_scale, memo=False)[0]


def linear_bias_elu_call(x, weight, bias, alpha, scale, input_scale, memo=True):
    """``(linear_bias_elu(...), direct)``; ``direct`` as for ``ops.conv2d.conv2d_bias_elu_call``:
    the function of the call's own arguments that did the whole call (a composite, the
    fallback, or ``call_memo.kernel_call``'s repeat of a kernel call, which is built only
    with ``memo``), or None."""
    compiling = _is_compiling()  # (read once: ~0.1 us a read)
    if transformed(x, compiling):  # tracers, torch.func, forward AD (elutriton/_transforms.py)
        return run_transformed(linear_bias_elu, (x, weight, bias, alpha, scale, input_scale),
                               {}, OP, lambda: F.linear(x, weight, bias),
                               lambda: (alpha, scale, input_scale)), None
    cast = autocast_dtype(x)
    allow_tf32 = matmul_allow_tf32(compiling)
    try:  # a non-tensor argument: no key; validation will name it (none while dynamo traces)
        key = None if compiling else (
            tensor_key(x), tensor_key(weight), tensor_key(bias), alpha.__class__, alpha,
            scale.__class__, scale, input_scale.__class__, input_scale, allow_tf32, cast)
    except NO_KEY:
        key = None
    run, library, composite, fallback = get_plan(_CALL_PLANS, key, _call_plan, x, weight, bias,
                                                 alpha, scale, input_scale, allow_tf32, cast)
    if fallback is not None:
        # a device without the kernels: torch's composite, called as it is (torch's autograd)
        # on the tensors as given (under autocast F.linear casts them, in C++)
        return fallback(x, weight, bias), fallback
    params = (float(alpha), float(scale), float(input_scale))
    if library is not None and (not records_grad(x, weight, bias)
                                or (composite and linear_runs_composite(x))):
        # a library-path layer run eagerly: without autograd the library path's own ops
        # (cuBLAS with the bias, then elu_); with autograd torch's composite
        # (ops/composite_path.py). On the tensors as given: under autocast torch casts them.
        return library(x, weight, bias), library
    if compiling and not use_triton(x):
        # torch.compile on a device without the kernels: torch's composite, which the
        # compiler fuses as it fuses the unfused model's (the custom op would be an opaque
        # call back into Python on every run); under autocast torch casts the tensors
        return reference.linear_bias_elu(x, weight, bias, alpha, scale, input_scale), None
    x, weight, bias = autocast_cast(cast, x, weight, bias)
    if compiling and _traces_composite(x, weight, bias, params, allow_tf32):
        # a library-path layer traced by torch.compile: torch's composite
        return linear_composite(x, weight, bias, *params), None
    y = linear_bias_elu_op.call(run or _linear_bias_elu_impl, x, weight, bias, *params)
    if not memo or run is None:
        return y, None
    kernel = linear_bias_elu_op.direct(run, x, weight, bias, *params)
    return y, None if kernel is None else kernel_call(kernel, cast, True, params)


def _traces_composite(x, weight, bias, params, allow_tf32):
    """``composite_path.linear_traces_composite`` for these arguments; never with symbolic
    sizes or parameters (dynamic shapes keep the custom op; its arguments must be constants:
    ``_symbolic.py``)."""
    rows = math.prod(x.shape[:-1])
    if not all_static(rows, *weight.shape, *params):
        return False
    return linear_traces_composite(x.device, x.dtype, allow_tf32, int(rows),
                                   tuple(int(d) for d in weight.shape), bias is not None,
                                   tuple(float(p) for p in params),
                                   records_grad(x, weight, bias))
