"""The library path, and the per-shape choice between it and the fused kernel.

Library path: cuDNN's convolution (cuBLAS's linear) computes z, then elutriton's bias+ELU
kernel rewrites z into y in place. That is eager PyTorch's traffic (one extra pass over the
output, no extra allocation) under the same autograd as the fused op: backward still keeps y
alone (never z), so a user loses nothing where the fused kernel is slower, e.g. on small output
grids where cuDNN splits K over more SMs than the fused kernel has tiles, or for cuBLAS's
GEMMs, which the fused GEMM does not match (perf/results/NVIDIA_H100_80GB_HBM3/summary.md).
Eager calls that autograd records (outside CUDA-graph capture) and traced calls of a
library-path layer whose backward is torch's run torch's composite instead
(``ops/composite_path.py``): the same autograd memory, less host time.

Choice, per shape (``choose_path``):
1. ``ELUTRITON_PATH=fused`` or ``=library`` forces one path (tests, benchmarks of each path;
   read when a plan is made: set it before the first call, or call ``elutriton.clear_plans``);
2. else the tuned table's measured choice for the shape or its batch-size bucket
   (``kernels/tuning.py``: ``paths`` entries written by ``python -m perf.tune --paths``);
3. else a rule from the H100 measurements (PREDICTED for shapes that were not measured):
   linear layers take the library path (the fused GEMM lost to cuBLAS on all 9 measured
   cases); NCHW convolutions too (the fused kernel needs an NHWC copy of the input and lost on
   9 of 18); channels_last convolutions take it when a grid of 128x64 tiles would not give
   every SM a tile and the layer is large enough (>= 2^24 multiply-adds) that a second launch
   is cheap next to it (cuDNN then splits K, which the fused kernel does not), and otherwise
   run fused. On the 17 measured fp16 channels_last GEMM layers (H100, CUDA graphs) the rule
   picks library exactly where the fused kernel measured slower than eager PyTorch (eager's
   time standing in for the library path's).
"""
import os

import torch
import torch.nn.functional as F

from .._runtime import multiprocessor_count
from ..kernels.bias_elu import plan_bias_elu_forward
from ..kernels.conv2d import conv_shape_key, dot_precision
from ..kernels.tuning import tuned_path
from .bias_elu import bias_arg, flat_split

PATH_ENV = "ELUTRITON_PATH"
FUSED, LIBRARY = "fused", "library"
LARGE_LAYER_MACS = 2**24
REFERENCE_TILE = (128, 64)  # (pixels, channels): the fused kernel's usual 16-bit tile


def forced_path():
    """The path ``ELUTRITON_PATH`` forces ("fused", "library"), or None (choose per shape)."""
    value = os.environ.get(PATH_ENV, "auto")
    if value not in (FUSED, LIBRARY, "auto"):
        raise ValueError(f"{PATH_ENV} must be 'fused', 'library' or 'auto', got {value!r}")
    return None if value == "auto" else value


def choose_path(op, dtype, allow_tf32, n_pixels, out_per_group, in_per_group, kernel_h,
                kernel_w, groups, has_bias, device, layout):
    """"fused" or "library" for a conv (``op="conv2d_bias_elu"``, ``layout`` "channels_last"
    or "nchw": whether the input needs a layout copy for the fused kernel) or linear
    (``op="linear_bias_elu"``, ``layout`` None) of this GEMM shape; see the module docstring."""
    forced = forced_path()
    if forced is not None:
        return forced
    precision = dot_precision(dtype, allow_tf32)
    key = conv_shape_key(dtype, precision, n_pixels, out_per_group, in_per_group, kernel_h,
                         kernel_w, groups, has_bias)
    section = op if layout is None else f"{op}/{layout}"
    measured = tuned_path(section, key, device)
    if measured is not None:
        return measured
    if op == "linear_bias_elu" or layout == "nchw":
        return LIBRARY
    tiles = (-(-n_pixels // REFERENCE_TILE[0]) * -(-out_per_group // REFERENCE_TILE[1])
             * groups)
    macs = n_pixels * out_per_group * groups * in_per_group * kernel_h * kernel_w
    if tiles < multiprocessor_count(device) and macs >= LARGE_LAYER_MACS:
        return LIBRARY
    return FUSED


def _inplace_epilogue(y_meta, has_bias):
    """``run(y, bias, alpha, scale, input_scale)``: y = elu(y + bias[channel]) in place, for a
    dense conv output y with ``y_meta``'s strides (channels along dim 1)."""
    _, n_channels, n_inner = flat_split(y_meta, has_bias, 1)
    launch = plan_bias_elu_forward(y_meta.numel(), n_channels, n_inner, y_meta.dtype, has_bias)

    def run(y, bias, alpha, scale, input_scale):
        launch(y, bias_arg(bias), y, alpha, scale, input_scale)
    return run


def plan_library_conv2d(y_meta, has_bias):
    """``run(x, weight, bias, stride, padding, dilation, groups, alpha, scale, input_scale)``
    for the library path of a convolution whose output has ``y_meta``'s metadata."""
    epilogue = _inplace_epilogue(y_meta, has_bias)
    out_stride, out_shape = y_meta.stride(), y_meta.shape

    def run(x, weight, bias, stride, padding, dilation, groups, alpha, scale, input_scale):
        y = F.conv2d(x, weight, None, stride, padding, dilation, groups)
        if y.stride() != out_stride:  # torch chose another layout: the epilogue needs ours
            y = torch.empty_strided(out_shape, out_stride, dtype=y.dtype,
                                    device=y.device).copy_(y)
        epilogue(y, bias, alpha, scale, input_scale)
        return y
    # x and the weight may come uncast under autocast: F.conv2d casts them (ops/conv2d.py)
    run.library = True
    return run


def plan_library_linear(y_meta, has_bias):
    """``run(x, weight, bias, alpha, scale, input_scale)`` for the library path of a linear
    layer whose (contiguous) output has ``y_meta``'s metadata: cuBLAS adds the bias in its
    epilogue, so only the ELU is left, and torch's own in-place ``elu_`` applies it (the same
    pass over y as elutriton's kernel, with less host time per call: measured on the H100
    machine, where the SELU MLP's eager steps are bound by host time)."""
    def run(x, weight, bias, alpha, scale, input_scale):
        y = F.linear(x, weight, bias)
        _elu_(y, alpha, scale, input_scale)
        return y
    return run


_elu_ = torch._C._nn.elu_  # what F.elu(inplace=True) calls: no Python torch.ops dispatch
