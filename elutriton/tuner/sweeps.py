"""What the tuner measures for one layer call (``layers.py``), and the table sections it fills.

- ``sweep_configs``: every candidate config of the kernel that runs the call (the implicit
  GEMM of ``kernels/conv2d.py``, or the depthwise kernel), timed without host overhead
  (``timing.kernel_time``); for calls the TMA kernels may run (sm_90), their candidates too,
  whose best enters the table only where it beat the implicit GEMM by more than
  ``PATH_MARGIN``.
- ``time_paths``: the public op with each path of the per-shape choice forced
  (``ELUTRITON_PATH``: the fused kernel, or cuDNN/cuBLAS then the in-place bias+ELU kernel).
- ``time_backward``: forward+backward of a conv with each backward forced
  (``ELUTRITON_BACKWARD``: elutriton's gradient kernels, or cuDNN).

Choices are timed on rotating inputs (``timing.rotating``), as the layer bench times: with one
input set in L2 a layer can look faster than it runs in a model. ``tune_configs``,
``tune_paths`` and ``tune_backward`` fill a table dict (``kernels/tuning.py`` describes its
sections) and call ``write()`` after every layer, so an interrupted run keeps what it
measured.
"""
import json
import os
import sys

import torch

from ..kernels import conv2d, conv2d_tma, depthwise_conv2d, gemm_tma
from ..ops.backward_path import (BACKWARD_ENV, CUDNN, SECTION_INPUT_GRAD,
                                 SECTION_PARAMS_ONLY, TRITON)
from ..ops.library_path import FUSED, LIBRARY, PATH_ENV
from ..plan import clear_plans
from .layers import ConvCall, LinearCall
from .timing import rotating

PATH_MARGIN = 0.02  # the second choice must be >2% faster: on a tie, one launch beats two


def conv_tensors(call: ConvCall, device, channels_last=None):
    """(x, weight, bias, y) for ``call`` (weights scaled to keep activations O(1)); x and the
    weight channels_last unless ``channels_last`` (default: the call's layout) says not."""
    channels_last = call.channels_last if channels_last is None else channels_last
    layout = torch.channels_last if channels_last else torch.contiguous_format
    in_per_group = call.c // call.groups
    fan_in = in_per_group * call.kernel[0] * call.kernel[1]
    x = torch.randn(call.n, call.c, call.h, call.w, device=device).to(call.dtype).contiguous(
        memory_format=layout)
    weight = (torch.randn(call.out_channels, in_per_group, *call.kernel, device=device)
              / fan_in ** 0.5).to(call.dtype).contiguous(memory_format=layout)
    bias = torch.randn(call.out_channels, device=device).to(call.dtype) if call.has_bias else None
    y = torch.empty(call.n, call.out_channels, *call.out_hw, device=device, dtype=call.dtype,
                    memory_format=layout)
    return x, weight, bias, y


def time_configs(candidates, launch, label, device, measure):
    """(best config dict, {config json: ms}) of ``launch(config)`` over ``candidates`` (the
    first two under the interpreter); a config that fails (out of resources, ...) is
    reported on stderr and left out. Raises ValueError when every config failed."""
    if os.environ.get("TRITON_INTERPRET") == "1":
        candidates = candidates[:2]
    timings = {}
    for cfg in candidates:
        meta = dict(cfg.kwargs, num_warps=cfg.num_warps, num_stages=cfg.num_stages)
        try:
            timings[json.dumps(meta, sort_keys=True)] = measure(lambda: launch(cfg), device)[0]
        except Exception as exc:  # out of resources etc.: not a candidate
            print(f"  {label} {meta}: {type(exc).__name__}", file=sys.stderr)
    if not timings:
        raise ValueError(f"{label}: every config failed")
    return json.loads(min(timings, key=timings.get)), timings


def _gemm_call(call):
    return call.as_conv() if isinstance(call, LinearCall) else call


def sweep_gemm(call, device, measure):
    """(best config dict, per-config ms) of the implicit-GEMM kernel for a conv (not
    depthwise) or linear call."""
    conv = _gemm_call(call)
    x, weight, bias, y = conv_tensors(conv, device, channels_last=True)
    precision = conv2d.dot_precision(conv.dtype, conv.allow_tf32)
    in_per_group, out_per_group = conv.c // conv.groups, conv.out_channels // conv.groups
    candidates = conv2d.conv_candidates(
        conv2d.operand_class(conv.dtype, precision), in_per_group, out_per_group,
        *conv.kernel, conv2d.use_flat_k(in_per_group), conv.n_pixels, conv.groups)
    return time_configs(candidates, lambda cfg: conv2d.launch_conv2d_bias_elu(
        x, weight, bias, y, list(conv.stride), list(conv.padding), list(conv.dilation),
        conv.groups, 1.0, 1.0, 1.0, conv.allow_tf32, config=cfg), call.name, device, measure)


def sweep_depthwise(call: ConvCall, device, measure):
    """(best config dict, per-config ms) of the depthwise kernel for a depthwise conv call
    (channels_last input, as the fused conv gives it)."""
    x, weight, bias, y = conv_tensors(call, device, channels_last=True)
    weight = weight.contiguous()  # the depthwise kernel reads [OC, 1, KH, KW] by its strides
    return time_configs(
        depthwise_conv2d.DEPTHWISE_CONFIGS,
        lambda cfg: depthwise_conv2d.launch_depthwise_conv2d_bias_elu(
            x, weight, bias, y, list(call.stride), list(call.padding), list(call.dilation),
            1.0, 1.0, 1.0, config=cfg), call.name, device, measure)


def sweep_tma(call, device, measure):
    """(best TMA config dict, its ms) for a call that is a plain 2-D GEMM (a linear layer, or
    a 1x1, stride-1, unpadded, ungrouped conv) where the TMA GEMM applies
    (``kernels/gemm_tma.py``), else (None, None)."""
    conv = _gemm_call(call)
    rows, cols, depth = conv.n_pixels, conv.out_channels, conv.c
    if ((conv.kernel, conv.stride, conv.padding, conv.dilation, conv.groups)
            != ((1, 1), (1, 1), (0, 0), (1, 1), 1) or not gemm_tma.tma_supported(device)
            or not gemm_tma.gemm_tma_eligible(conv.dtype, conv.allow_tf32, rows, cols, depth,
                                              depth, depth, cols)):
        return None, None
    x = torch.randn(rows, depth, device=device).to(conv.dtype)
    weight = torch.randn(cols, depth, device=device).to(conv.dtype)
    bias = torch.randn(cols, device=device).to(conv.dtype) if conv.has_bias else None
    y = torch.empty(rows, cols, device=device, dtype=conv.dtype)
    cls = conv2d.operand_class(conv.dtype, conv2d.dot_precision(conv.dtype, conv.allow_tf32))
    try:
        best, timings = time_configs(
            gemm_tma.tma_candidates(cls, cols, depth),
            lambda cfg: gemm_tma.plan_gemm_bias_elu_tma(
                conv.dtype, conv.allow_tf32, rows, cols, depth, conv.has_bias, cfg,
                torch.device(device))(x, weight, bias, y, 1.0, 1.0, 1.0),
            f"{call.name} TMA", device, measure)
    except ValueError:  # every config failed
        return None, None
    return best, min(timings.values())


def sweep_conv_tma(call, device, measure):
    """(best config dict, its ms) of the TMA implicit-GEMM conv (``kernels/conv2d_tma.py``)
    for a conv call it may run (stride 1, groups 1, a tensor-core class, 16-byte rows), else
    (None, None)."""
    if not isinstance(call, ConvCall) or not gemm_tma.tma_supported(device):
        return None, None
    if not conv2d_tma.conv_tma_eligible(call.dtype, call.allow_tf32, call.c, call.out_channels,
                                        *call.kernel, list(call.stride), call.groups):
        return None, None
    x, weight, bias, y = conv_tensors(call, device, channels_last=True)
    cls = conv2d.operand_class(call.dtype, conv2d.dot_precision(call.dtype, call.allow_tf32))
    try:
        best, timings = time_configs(
            conv2d_tma.conv_tma_candidates(cls, call.out_channels, call.c),
            lambda cfg: conv2d_tma.plan_conv2d_bias_elu_tma(
                x.shape, weight.shape, y.shape, call.dtype, call.has_bias, list(call.padding),
                list(call.dilation), call.allow_tf32, cfg, torch.device(device))(
                    x, weight, bias, y, 1.0, 1.0, 1.0),
            f"{call.name} TMA conv", device, measure)
    except ValueError:  # every config failed
        return None, None
    return best, min(timings.values())


def public_call(call, device, channels_last=None, with_tensors=False):
    """A call of the public op as ``call`` (for a conv, in ``channels_last`` layout or the
    call's); ``with_tensors``: and its (x, weight, bias)."""
    import elutriton
    if isinstance(call, LinearCall):
        x = torch.randn(call.rows, call.in_features, device=device).to(call.dtype)
        weight = (torch.randn(call.out_features, call.in_features, device=device)
                  / call.in_features ** 0.5).to(call.dtype)
        bias = (torch.randn(call.out_features, device=device).to(call.dtype)
                if call.has_bias else None)

        def run():
            return elutriton.linear_bias_elu(x, weight, bias)
    else:
        x, weight, bias, _ = conv_tensors(call, device, channels_last)

        def run():
            return elutriton.conv2d_bias_elu(x, weight, bias, call.stride, call.padding,
                                             call.dilation, call.groups)
    return (run, (x, weight, bias)) if with_tensors else run


def time_forced(run, device, measure, env_name, choices):
    """{choice: ms} of ``run`` timed with ``env_name`` set to each choice (restored after,
    and the plans made under it dropped)."""
    before = os.environ.get(env_name)
    times = {}
    try:
        for choice in choices:
            os.environ[env_name] = choice
            clear_plans()
            times[choice] = measure(run, device)[0]
    finally:
        if before is None:
            os.environ.pop(env_name, None)
        else:
            os.environ[env_name] = before
        clear_plans()
    return times


def on_rotating_inputs(make_run, call):
    """A run cycling over as many independent input sets (each ``make_run()``) as keep
    consecutive runs from hitting in L2, as the layer bench times. Seen on the H100 with one
    input set: a [1024, 1024] x [2048, 1024] fp16 linear (6 MB of inputs, within the 50 MB
    L2) measured 0.0125 ms fused against 0.0133 ms on the library path, so the table chose
    fused; the bench, rotating inputs, then measured the fused op at 0.0168 ms against
    eager's 0.0136."""
    return rotating(lambda run: run, lambda: (make_run(),), call.io_bytes)


def time_paths(call, device, measure, channels_last=None):
    """{path: ms} of the public op on ``call`` with each path forced."""
    run = on_rotating_inputs(lambda: public_call(call, device, channels_last), call)
    return time_forced(run, device, measure, PATH_ENV, (FUSED, LIBRARY))


def training_step(call: ConvCall, device, input_grad):
    """Forward and backward of the public op on fresh inputs of a conv ``call``
    (channels_last); x needs a gradient only with ``input_grad``."""
    forward, (x, weight, bias) = public_call(call, device, True, with_tensors=True)
    x.requires_grad_(input_grad)
    weight.requires_grad_()
    if bias is not None:
        bias.requires_grad_()

    def step():
        y = forward()
        torch.autograd.backward(y, grad_y)
        x.grad = weight.grad = None
        if bias is not None:
            bias.grad = None
    grad_y = torch.randn_like(forward().detach())
    return step


def time_backward(call: ConvCall, device, input_grad, measure):
    """{backward: ms} of forward+backward of a conv ``call`` with each backward forced."""
    step = on_rotating_inputs(lambda: training_step(call, device, input_grad), call)
    return time_forced(step, device, measure, BACKWARD_ENV, (TRITON, CUDNN))


def tune_configs(calls, device, table, write, measure, resume=False):
    """Fill the kernels' sections of ``table`` with each call's best config (TMA sections:
    only where a TMA kernel beat the implicit GEMM by more than PATH_MARGIN); ``resume``:
    keep calls whose key the section has. Yields a line per call."""
    for call in calls:
        depthwise = isinstance(call, ConvCall) and call.depthwise
        kernel, sweep = ((depthwise_conv2d.KERNEL_NAME, sweep_depthwise) if depthwise
                         else (conv2d.KERNEL_NAME, sweep_gemm))
        entries = table.setdefault(kernel, {})
        if resume and call.key in entries:
            continue
        best, timings = sweep(call, device, measure)
        entries[call.key] = best
        yield f"{call.name}: {best} ({min(timings.values()):.4f} ms)"
        # (the TMA kernels are GEMMs: no depthwise conv is eligible)
        for section, tma_sweep, label in ((gemm_tma.KERNEL_NAME, sweep_tma, "TMA"),
                                          (conv2d_tma.KERNEL_NAME, sweep_conv_tma, "TMA conv")):
            tma_best, tma_ms = tma_sweep(call, device, measure)
            tma_entries = table.setdefault(section, {})
            if tma_best is not None and tma_ms < min(timings.values()) * (1 - PATH_MARGIN):
                tma_entries[call.key] = tma_best
                yield f"{call.name}: {label} {tma_best} ({tma_ms:.4f} ms)"
            else:
                tma_entries.pop(call.key, None)
        write()


def tune_paths(calls, device, table, write, measure, both_layouts=False):
    """Fill ``table["paths"]`` with the measured choice of every call: a conv in its own
    layout (``both_layouts``: channels_last and NCHW), a linear layer. Yields a line per
    choice."""
    paths = table.setdefault("paths", {})
    for call in calls:
        if isinstance(call, LinearCall):
            layouts = [(None, "linear_bias_elu")]
        else:
            layouts = [(cl, "conv2d_bias_elu/" + ("channels_last" if cl else "nchw"))
                       for cl in ((True, False) if both_layouts else (call.channels_last,))]
        for channels_last, section in layouts:
            times = time_paths(call, device, measure, channels_last)
            choice = LIBRARY if times[LIBRARY] < times[FUSED] * (1 - PATH_MARGIN) else FUSED
            paths.setdefault(section, {})[call.key] = choice
            layout = section.split("/")[1] if "/" in section else ""
            yield (f"{call.name} {layout}: fused {times[FUSED]:.4f} ms, library "
                   f"{times[LIBRARY]:.4f} ms -> {choice}")
            write()


def tune_backward(calls, device, table, write, measure):
    """Fill the table's backward sections for every conv call with groups == 1 (the Triton
    backward's domain), with and without an input gradient. Yields a line per choice."""
    paths = table.setdefault("paths", {})
    for call in calls:
        if not isinstance(call, ConvCall) or call.groups != 1:
            continue
        for input_grad, section in ((True, SECTION_INPUT_GRAD), (False, SECTION_PARAMS_ONLY)):
            times = time_backward(call, device, input_grad, measure)
            choice = TRITON if times[TRITON] < times[CUDNN] * (1 - PATH_MARGIN) else CUDNN
            paths.setdefault(section, {})[call.key] = choice
            yield (f"{call.name} {'input grad' if input_grad else 'params only'}: Triton "
                   f"{times[TRITON]:.4f} ms, cuDNN {times[CUDNN]:.4f} ms -> {choice}")
            write()
