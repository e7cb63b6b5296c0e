"""Every provider the benchmarks time, defined once: elutriton and the baselines a user would
otherwise run. Each factory takes the inputs and returns a zero-argument callable."""
import sys

import torch
import torch.nn.functional as F

import elutriton
from perf import cudnn_graph
from perf.results_io import BACKWARD_CUDNN, BACKWARD_TRITON, NCHW_DIRECT


def compiled_baseline(fn, mode, graph_timer):
    """``fn`` under ``torch.compile`` in ``mode`` ("default" or "max-autotune"). Under the
    CUDA-graph timer the timer captures the graph itself: "max-autotune" (which also records
    CUDA graphs of its own, and those cannot be replayed inside another capture: "Cannot
    prepare for replay during capturing stage", seen on the H100) becomes
    "max-autotune-no-cudagraphs", the same kernel choice, timed in the same graph as every
    other provider."""
    if mode == "default":
        return torch.compile(fn)
    if graph_timer and mode == "max-autotune":
        mode = "max-autotune-no-cudagraphs"
    return torch.compile(fn, mode=mode)


# ---------------------------------------------------------------- bias + ELU, x [rows, C]
def bias_elu_providers(compile_modes=("default",), graph_timer=False):
    eager = lambda x, b: F.elu(x + b)  # noqa: E731
    providers = {
        "elutriton": lambda x, b: (lambda: elutriton.bias_elu(x, b, dim=-1)),
        "eager": lambda x, b: (lambda: eager(x, b)),
        "copy (limit)": lambda x, b: (lambda out=torch.empty_like(x): out.copy_(x)),
    }
    for mode in compile_modes:
        fn = compiled_baseline(eager, mode, graph_timer)
        providers[f"compile:{mode}"] = lambda x, b, fn=fn: (lambda: fn(x, b))
    return providers


# ---------------------------------------------------------------- conv2d + bias + ELU
def conv_providers(compile_modes=("default", "max-autotune"), graph_timer=False):
    def eager(x, w, b, stride, padding, groups):
        return F.elu(F.conv2d(x, w, b, stride, padding, 1, groups))

    providers = {
        "elutriton": lambda x, w, b, s, p, g: (
            lambda: elutriton.conv2d_bias_elu(x, w, b, s, p, 1, g)),
        "eager": lambda x, w, b, s, p, g: (lambda: eager(x, w, b, s, p, g)),
        "cudnn conv only": lambda x, w, b, s, p, g: (lambda: F.conv2d(x, w, b, s, p, 1, g)),
        # the same op with each backward forced (backward directions only; the choice is
        # ops/backward_path.py): what the Triton gradient kernels gain or lose per layer
        BACKWARD_CUDNN: with_env(lambda x, w, b, s, p, g: (
            lambda: elutriton.conv2d_bias_elu(x, w, b, s, p, 1, g)), ELUTRITON_BACKWARD="cudnn"),
        BACKWARD_TRITON: with_env(lambda x, w, b, s, p, g: (
            lambda: elutriton.conv2d_bias_elu(x, w, b, s, p, 1, g)),
            ELUTRITON_BACKWARD="triton"),
        NCHW_DIRECT: nchw_direct,
    }
    for mode in compile_modes:
        fn = compiled_baseline(eager, mode, graph_timer)
        providers[f"compile:{mode}"] = (
            lambda x, w, b, s, p, g, fn=fn: (lambda: fn(x, w, b, s, p, g)))
    usable, why = cudnn_graph.available()
    if usable:  # cuDNN's own fused conv -> bias -> ELU graph (forward directions only)
        providers[cudnn_graph.PROVIDER] = cudnn_graph.conv_bias_elu
    elif why not in _NOTED:
        _NOTED.add(why)
        print(f"baseline '{cudnn_graph.PROVIDER}' skipped: {why}", file=sys.stderr)
    return providers


_NOTED = set()
BACKWARD_ONLY = (BACKWARD_CUDNN, BACKWARD_TRITON)  # same forward as "elutriton"
NCHW_FORWARD_ONLY = (NCHW_DIRECT,)  # timed on NCHW inputs, forward only


def nchw_direct(x, w, b, stride, padding, groups):
    """The fused GEMM kernel on x as it is, reading an NCHW input and writing an NCHW output
    through their strides, so without the channels_last copy of x that the op makes for the
    kernel (issue 10: is that conversion pass worth it?). The weight is converted to
    channels_last once, here (as a model stored channels_last holds it), and the plan is made
    once; each call allocates y and launches, with the tuned config of the shape (tuned on
    channels_last tensors). The op's own choice for NCHW layers is often the library path:
    this provider says whether a kernel reading NCHW would beat it."""
    from elutriton.kernels.conv2d import plan_conv2d_bias_elu
    from elutriton.ops.conv2d import conv_output_size
    from elutriton.plan import cudnn_allow_tf32

    weight = w.contiguous(memory_format=torch.channels_last)
    n, _, h, width = x.shape
    out_hw = [conv_output_size(size, w.shape[2 + i], stride, padding, 1)
              for i, size in enumerate((h, width))]
    shape = (n, w.shape[0], *out_hw)
    meta_y = torch.empty(shape, dtype=x.dtype, device="meta")
    run = plan_conv2d_bias_elu(x, weight, meta_y, b is not None, (stride, stride),
                               (padding, padding), (1, 1), groups, cudnn_allow_tf32(),
                               x.device)

    def call():
        y = torch.empty(shape, dtype=x.dtype, device=x.device)
        run(x, weight, b, y, 1.0, 1.0, 1.0)
        return y
    return call


def with_env(factory, **env):
    """Mark a provider to be timed with these environment variables set (the benchmark sets
    them around its whole timing, backward included)."""
    factory.env = env
    return factory


# ---------------------------------------------------------------- linear + bias + ELU
def linear_providers(compile_modes=("default", "max-autotune"), graph_timer=False):
    def eager(x, w, b):
        return F.elu(F.linear(x, w, b))

    providers = {
        "elutriton": lambda x, w, b: (lambda: elutriton.linear_bias_elu(x, w, b)),
        "eager": lambda x, w, b: (lambda: eager(x, w, b)),
        "cublas linear only": lambda x, w, b: (lambda: F.linear(x, w, b)),
    }
    for mode in compile_modes:
        fn = compiled_baseline(eager, mode, graph_timer)
        providers[f"compile:{mode}"] = lambda x, w, b, fn=fn: (lambda: fn(x, w, b))
    return providers
