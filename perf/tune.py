"""Sweep each GEMM kernel's config space on the present GPU for the shape sets and write the
per-architecture table the package ships (elutriton/configs/<arch>.json, e.g. sm90.json).

    python -m perf.tune [--sets elu_cifar resnet50 selu_mlp] [--dtypes fp16 bf16 fp32]

Launchers use the entry of the shape's key or of its batch-size bucket (elutriton/kernels/
tuning.py), else a default config; online autotuning only with ELUTRITON_AUTOTUNE=1. Shapes that
are plain 2-D GEMMs (linear, 1x1 stride-1 conv) on a GPU with TMA also get the TMA kernel's
configs swept (kernels/gemm_tma.py); its best goes to the ``gemm_tma`` section only where it
beat the implicit-GEMM kernel by more than PATH_MARGIN.

    python -m perf.tune --paths [--sets ...] [--dtypes ...]

times each conv/linear shape through the public op on both paths of the per-shape choice
(fused kernel; cuDNN/cuBLAS then the in-place bias+ELU kernel; elutriton/ops/library_path.py),
channels_last and NCHW for convolutions, CUDA-graph timer, and writes the faster one to the
table's ``paths`` section (fused unless the library path is faster by more than
PATH_MARGIN). Tune your own layers ahead of time the same way: add them to perf/shapes.py,
or name them on the command line (``--conv N,C,H,W,OC,K[,STRIDE[,GROUPS]]`` with padding
(K - 1) // 2, ``--linear M,K,N``; these replace ``--sets``), point ``--out`` at a folder and set
ELUTRITON_CONFIG_DIR to it:

    python -m perf.tune --conv 256,3,32,32,192,5 --linear 512,1024,1024 --out my_tables
    python -m perf.tune --paths --conv 256,3,32,32,192,5 --linear 512,1024,1024 --out my_tables

``--models resnet50_elu ...`` takes the fused layers of perf/models.py's models at their
benchmark batch sizes (inference: BatchNorm folded), so a model's own shapes are tuned (the
ResNet-50 of the model bench runs 16 conv shapes at batch 64, which the shape sets' five
batch-32 ResNet layers do not cover).

    python -m perf.tune --backward [--sets ...] [--dtypes ...]

times forward+backward of each conv shape (groups == 1, channels_last) with each backward
forced (elutriton's Triton gradient kernels, or the bias+ELU backward kernel then cuDNN;
elutriton/ops/backward_path.py), once with the input needing a gradient and once without (a
first layer), and writes the faster to the table's ``paths`` sections
``conv2d_bias_elu/backward`` and ``conv2d_bias_elu/backward_params`` (cuDNN unless Triton is
faster by more than PATH_MARGIN).

``--cpu-standin`` runs the sweep on CPU under the interpreter with a wall-clock stand-in timer
(tests only: its choices mean nothing) and writes ``interpreter.json`` to ``--out``.
"""
import argparse
import json
import os
import sys
from pathlib import Path

PACKAGED = Path(__file__).resolve().parents[1] / "elutriton" / "configs"


def gemm_geometry(shape):
    """(n, c, h, w, oc, k, stride, groups, padding) of the conv the GEMM kernel runs."""
    from perf.shapes import ConvShape
    if isinstance(shape, ConvShape):
        return (shape.n, shape.c, shape.h, shape.w, shape.oc, shape.k, shape.stride,
                shape.groups, shape.padding)
    # linear as a 1x1 conv on a 1x1 image, as the linear op runs it
    return shape.m, shape.k, 1, 1, shape.n, 1, 1, 1, 0


def sweep_key(shape, dtype, allow_tf32):
    """The tuned-table key the launcher will look up for this shape (bias present)."""
    import torch

    from elutriton.kernels import conv2d
    from elutriton.ops.conv2d import conv_output_size
    n, c, h, w, oc, k, stride, groups, pad = gemm_geometry(shape)
    t = getattr(torch, dtype)
    out_h, out_w = (conv_output_size(size, k, stride, pad, 1) for size in (h, w))
    return conv2d.conv_shape_key(t, conv2d.dot_precision(t, allow_tf32), n * out_h * out_w,
                                 oc // groups, c // groups, k, k, groups, True)


def sweep_conv(shape, dtype, device, allow_tf32, measure):
    """(key, best config dict, per-config ms) for one conv/linear shape."""
    import torch

    from elutriton.kernels import conv2d
    from elutriton.ops.conv2d import conv_output_size

    t = getattr(torch, dtype)
    n, c, h, w, oc, k, stride, groups, pad = gemm_geometry(shape)
    channels_last = torch.channels_last
    x = torch.randn(n, c, h, w, device=device).to(t).contiguous(memory_format=channels_last)
    weight = torch.randn(oc, c // groups, k, k, device=device).to(t).contiguous(
        memory_format=channels_last)
    bias = torch.randn(oc, device=device).to(t)
    out_h, out_w = (conv_output_size(size, k, stride, pad, 1) for size in (h, w))
    y = torch.empty(n, oc, out_h, out_w, device=device, dtype=t, memory_format=channels_last)
    precision = conv2d.dot_precision(t, allow_tf32)
    opg, ipg = oc // groups, c // groups
    # the base configs and their single-loop and split-K variants (conv2d.conv_candidates)
    candidates = conv2d.conv_candidates(conv2d.operand_class(t, precision), ipg, opg, k, k,
                                        conv2d.use_flat_k(ipg), n * out_h * out_w, groups)
    best, timings = time_configs(
        candidates, lambda cfg: conv2d.launch_conv2d_bias_elu(
            x, weight, bias, y, [stride] * 2, [pad] * 2, [1, 1], groups, 1.0, 1.0, 1.0,
            allow_tf32, config=cfg),
        f"{shape.name} {dtype}", device, measure)
    return sweep_key(shape, dtype, allow_tf32), best, timings


def sweep_tma(shape, dtype, device, allow_tf32, measure):
    """(best TMA config dict, its ms) for a conv/linear shape that is a plain 2-D GEMM (1x1,
    stride 1, no padding, groups 1) where the TMA kernel applies (kernels/gemm_tma.py), else
    (None, None)."""
    import torch

    from elutriton.kernels import conv2d, gemm_tma
    n, c, h, w, oc, k, stride, groups, pad = gemm_geometry(shape)
    t = getattr(torch, dtype)
    rows = n * h * w
    if ((k, stride, groups, pad) != (1, 1, 1, 0) or not gemm_tma.tma_supported(device)
            or not gemm_tma.gemm_tma_eligible(t, allow_tf32, rows, oc, c, c, c, oc)):
        return None, None
    x = torch.randn(rows, c, device=device).to(t)
    weight = torch.randn(oc, c, device=device).to(t)
    bias = torch.randn(oc, device=device).to(t)
    y = torch.empty(rows, oc, device=device, dtype=t)
    cls = conv2d.operand_class(t, conv2d.dot_precision(t, allow_tf32))
    try:
        best, timings = time_configs(
            gemm_tma.tma_candidates(cls, oc, c),
            lambda cfg: gemm_tma.plan_gemm_bias_elu_tma(t, allow_tf32, rows, oc, c, True, cfg,
                                                        torch.device(device))(
                x, weight, bias, y, 1.0, 1.0, 1.0),
            f"{shape.name} {dtype} TMA", device, measure)
    except ValueError:  # every config failed
        return None, None
    return best, min(timings.values())


def sweep_conv_tma(shape, dtype, device, allow_tf32, measure):
    """(best config dict, its ms) of the TMA implicit-GEMM conv (kernels/conv2d_tma.py) for a
    conv shape it may run (stride 1, groups 1, a tensor-core class, 16-byte rows; 1x1 convs
    too, next to the TMA GEMM), else (None, None)."""
    import torch

    from elutriton.kernels import conv2d, conv2d_tma, gemm_tma
    from perf.shapes import ConvShape
    if not isinstance(shape, ConvShape) or not gemm_tma.tma_supported(device):
        return None, None
    t = getattr(torch, dtype)
    if not conv2d_tma.conv_tma_eligible(t, allow_tf32, shape.c, shape.oc, shape.k, shape.k,
                                        [shape.stride] * 2, shape.groups):
        return None, None
    cl = torch.channels_last
    x = torch.randn(shape.n, shape.c, shape.h, shape.w, device=device).to(t).contiguous(
        memory_format=cl)
    weight = torch.randn(shape.oc, shape.c, shape.k, shape.k, device=device).to(t).contiguous(
        memory_format=cl)
    bias = torch.randn(shape.oc, device=device).to(t)
    out_h, out_w = shape.out_hw
    y = torch.empty(shape.n, shape.oc, out_h, out_w, device=device, dtype=t,
                    memory_format=cl)
    pad, cls = [shape.padding] * 2, conv2d.operand_class(t, conv2d.dot_precision(t, allow_tf32))
    try:
        best, timings = time_configs(
            conv2d_tma.conv_tma_candidates(cls, shape.oc, shape.c),
            lambda cfg: conv2d_tma.plan_conv2d_bias_elu_tma(
                x.shape, weight.shape, y.shape, t, True, pad, [1, 1], allow_tf32, cfg,
                torch.device(device))(x, weight, bias, y, 1.0, 1.0, 1.0),
            f"{shape.name} {dtype} TMA conv", device, measure)
    except ValueError:  # every config failed
        return None, None
    return best, min(timings.values())


def time_configs(candidates, launch, label, device, measure):
    """(best config dict, {config json: ms}) of ``launch(config)`` over ``candidates`` (the
    first two under the interpreter); a config that fails (out of resources, ...) is
    reported on stderr and left out."""
    if os.environ.get("TRITON_INTERPRET") == "1":
        candidates = candidates[:2]
    timings = {}
    for cfg in candidates:
        meta = dict(cfg.kwargs, num_warps=cfg.num_warps, num_stages=cfg.num_stages)
        try:
            timings[json.dumps(meta, sort_keys=True)] = measure(lambda: launch(cfg), device)[0]
        except Exception as exc:  # out of resources etc.: not a candidate
            print(f"  {label} {meta}: {type(exc).__name__}", file=sys.stderr)
    return json.loads(min(timings, key=timings.get)), timings


def sweep_depthwise(shape, dtype, device, measure):
    """(key, best config dict, per-config ms) for one depthwise shape (its own kernel and
    table section), channels_last input as the fused conv gives it."""
    import torch

    from elutriton.kernels import depthwise_conv2d as dw
    from elutriton.ops.conv2d import conv_output_size
    t = getattr(torch, dtype)
    pad = shape.padding
    x = torch.randn(shape.n, shape.c, shape.h, shape.w, device=device).to(t).contiguous(
        memory_format=torch.channels_last)
    weight = torch.randn(shape.oc, 1, shape.k, shape.k, device=device).to(t)
    bias = torch.randn(shape.oc, device=device).to(t)
    out_h, out_w = (conv_output_size(size, shape.k, shape.stride, pad, 1)
                    for size in (shape.h, shape.w))
    y = torch.empty(shape.n, shape.oc, out_h, out_w, device=device, dtype=t,
                    memory_format=torch.channels_last)
    best, timings = time_configs(
        dw.DEPTHWISE_CONFIGS, lambda cfg: dw.launch_depthwise_conv2d_bias_elu(
            x, weight, bias, y, [shape.stride] * 2, [pad] * 2, [1, 1], 1.0, 1.0, 1.0,
            config=cfg),
        f"{shape.name} {dtype}", device, measure)
    key = dw.depthwise_shape_key(t, shape.n * out_h * out_w, shape.oc, shape.k, shape.k,
                                 shape.oc // shape.c, True)
    return key, best, timings


PATH_MARGIN = 0.02  # library must be >2% faster: on a tie, one launch beats two


def path_inputs(shape, dtype, device, layout, with_tensors=False):
    """The call of the public op on ``shape`` in ``layout`` (``with_tensors``: and its
    (x, weight, bias))."""
    import torch

    import elutriton
    from perf.shapes import ConvShape
    t = getattr(torch, dtype)
    if isinstance(shape, ConvShape):
        memory_format = (torch.channels_last if layout == "channels_last"
                         else torch.contiguous_format)
        x = torch.randn(shape.n, shape.c, shape.h, shape.w, device=device).to(t).contiguous(
            memory_format=memory_format)
        weight = (torch.randn(shape.oc, shape.c // shape.groups, shape.k, shape.k, device=device)
                  / (shape.c // shape.groups * shape.k ** 2) ** 0.5).to(t).contiguous(
                      memory_format=memory_format)
        bias = torch.randn(shape.oc, device=device).to(t)

        def call():
            return elutriton.conv2d_bias_elu(x, weight, bias, shape.stride, shape.padding,
                                             groups=shape.groups)
        return (call, (x, weight, bias)) if with_tensors else call
    x = torch.randn(shape.m, shape.k, device=device).to(t)
    weight = (torch.randn(shape.n, shape.k, device=device) / shape.k ** 0.5).to(t)
    bias = torch.randn(shape.n, device=device).to(t)
    call = lambda: elutriton.linear_bias_elu(x, weight, bias)  # noqa: E731
    return (call, (x, weight, bias)) if with_tensors else call


def time_forced(call, device, measure, env_name, choices):
    """{choice: ms} of ``call`` timed with ``env_name`` set to each choice (restored after)."""
    from elutriton.plan import clear_plans
    before = os.environ.get(env_name)
    times = {}
    try:
        for choice in choices:
            os.environ[env_name] = choice
            clear_plans()
            times[choice] = measure(call, device)[0]
    finally:
        if before is None:
            os.environ.pop(env_name, None)
        else:
            os.environ[env_name] = before
        clear_plans()
    return times


def on_rotating_inputs(make_call, shape, dtype):
    """A call cycling over as many independent input sets (each ``make_call()``) as keep
    consecutive calls from hitting in L2, as the layer bench times (``perf/measure.py``), so a
    choice is made on the timing the bench reports. Seen on the H100 with one input set: a
    [1024, 1024] x [2048, 1024] fp16 linear (6 MB of inputs, within the 50 MB L2) measured
    0.0125 ms fused against 0.0133 ms on the library path, so the table chose fused; the
    bench, rotating inputs, then measured the fused op at 0.0168 ms against eager's 0.0136."""
    from perf import traffic
    from perf.measure import rotating
    size = traffic.minimal_bytes(shape, {"float16": "fp16", "bfloat16": "bf16",
                                         "float32": "fp32"}[dtype])
    return rotating(lambda call: call, lambda: (make_call(),), size)


def time_paths(shape, dtype, device, layout, measure):
    """{path: ms} of the public op on ``shape`` with each path forced (ELUTRITON_PATH)."""
    from elutriton.ops.library_path import FUSED, LIBRARY, PATH_ENV
    call = on_rotating_inputs(lambda: path_inputs(shape, dtype, device, layout), shape, dtype)
    return time_forced(call, device, measure, PATH_ENV, (FUSED, LIBRARY))


def time_backward(shape, dtype, device, input_grad, measure):
    """{backward: ms} of forward+backward of the public op on a conv ``shape``
    (channels_last) with each backward forced (ELUTRITON_BACKWARD); x needs a gradient only
    with ``input_grad``."""
    from elutriton.ops.backward_path import BACKWARD_ENV, CUDNN, TRITON
    step = on_rotating_inputs(lambda: training_step(shape, dtype, device, input_grad), shape,
                              dtype)
    return time_forced(step, device, measure, BACKWARD_ENV, (TRITON, CUDNN))


def training_step(shape, dtype, device, input_grad):
    """Forward and backward of the public op on fresh inputs of ``shape`` (x needs a gradient
    only with ``input_grad``)."""
    import torch

    forward, (x, weight, bias) = path_inputs(shape, dtype, device, "channels_last",
                                             with_tensors=True)
    x.requires_grad_(input_grad)
    weight.requires_grad_()
    bias.requires_grad_()

    def step():
        y = forward()
        torch.autograd.backward(y, grad_y)
        x.grad = weight.grad = bias.grad = None
    grad_y = torch.randn_like(forward().detach())
    return step


def tune_backward(shapes, dtypes, device, table, write, measure):
    """Fill the table's backward sections for every conv shape with groups == 1 (the Triton
    backward's domain) and dtype, with and without an input gradient."""
    import torch

    from elutriton.ops.backward_path import CUDNN, SECTION_INPUT_GRAD, SECTION_PARAMS_ONLY, TRITON
    from perf.shapes import op_of
    paths = table.setdefault("paths", {})
    for shape in shapes:
        if op_of(shape) != "conv" or shape.groups != 1:
            continue
        for dtype in dtypes:
            key = sweep_key(shape, dtype, torch.backends.cudnn.allow_tf32)
            for input_grad, section in ((True, SECTION_INPUT_GRAD),
                                        (False, SECTION_PARAMS_ONLY)):
                times = time_backward(shape, dtype, device, input_grad, measure)
                choice = (TRITON if times[TRITON] < times[CUDNN] * (1 - PATH_MARGIN)
                          else CUDNN)
                paths.setdefault(section, {})[key] = choice
                print(f"{shape.name} {dtype} {'input grad' if input_grad else 'params only'}: "
                      f"Triton {times[TRITON]:.4f} ms, cuDNN {times[CUDNN]:.4f} ms -> {choice}")
                write()


def tune_paths(shapes, dtypes, device, table, write, measure):
    """Fill ``table["paths"]`` with the measured choice of every shape, dtype and layout."""
    import torch

    from perf.shapes import op_of
    paths = table.setdefault("paths", {})
    for shape in shapes:
        conv = op_of(shape) == "conv"
        for dtype in dtypes:
            allow_tf32 = (torch.backends.cudnn.allow_tf32 if conv
                          else torch.backends.cuda.matmul.allow_tf32)
            key = sweep_key(shape, dtype, allow_tf32)
            for layout in (("channels_last", "nchw") if conv else (None,)):
                section = f"conv2d_bias_elu/{layout}" if conv else "linear_bias_elu"
                times = time_paths(shape, dtype, device, layout, measure)
                choice = ("library" if times["library"] < times["fused"] * (1 - PATH_MARGIN)
                          else "fused")
                paths.setdefault(section, {})[key] = choice
                print(f"{shape.name} {dtype} {layout or ''}: fused {times['fused']:.4f} ms, "
                      f"library {times['library']:.4f} ms -> {choice}")
                write()


def parse_shape(kind, text):
    """A ConvShape from ``N,C,H,W,OC,K[,STRIDE[,GROUPS]]`` or a LinearShape from ``M,K,N``."""
    from perf.shapes import ConvShape, LinearShape
    try:
        values = [int(v) for v in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"--{kind} {text!r}: expected comma-separated ints")
    if kind == "conv" and 6 <= len(values) <= 8 and all(v > 0 for v in values):
        return ConvShape(f"conv_{text.replace(',', 'x')}", *values)
    if kind == "linear" and len(values) == 3 and all(v > 0 for v in values):
        return LinearShape(f"linear_{text.replace(',', 'x')}", *values)
    raise argparse.ArgumentTypeError(
        f"--{kind} {text!r}: expected " + ("N,C,H,W,OC,K[,STRIDE[,GROUPS]] (positive)"
                                           if kind == "conv" else "M,K,N (positive)"))


def main(argv=None):
    from perf.shapes import SHAPE_SETS
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--sets", nargs="*", choices=sorted(SHAPE_SETS) + ["tiny"],
                        default=["elu_cifar", "resnet50", "depthwise", "memory_bound_conv",
                                 "selu_mlp"],
                        help="shape sets of perf/shapes.py to tune (depthwise layers get "
                             "their own kernel's table section)")
    parser.add_argument("--dtypes", nargs="*", default=["float16", "bfloat16", "float32"],
                        choices=["float16", "bfloat16", "float32"], help="operand dtypes")
    parser.add_argument("--out", type=Path, default=PACKAGED,
                        help="folder of the per-architecture tables (<arch>.json)")
    parser.add_argument("--resume", action="store_true",
                        help="keep entries already in the table; sweep only missing shapes")
    parser.add_argument("--shapes", nargs="*", default=None,
                        help="keep only these shape names of the selected sets")
    parser.add_argument("--conv", nargs="*", default=[], metavar="N,C,H,W,OC,K[,S[,G]]",
                        type=lambda t: parse_shape("conv", t),
                        help="conv layers of your own to tune (replace --sets)")
    parser.add_argument("--linear", nargs="*", default=[], metavar="M,K,N",
                        type=lambda t: parse_shape("linear", t),
                        help="linear layers of your own to tune (replace --sets)")
    parser.add_argument("--models", nargs="*", default=[],
                        choices=["elu_cifar", "selu_mlp", "resnet50_elu"],
                        help="the fused layers of these perf/models.py models at their benchmark "
                             "batch sizes, in inference (BatchNorm folded; replace --sets, add "
                             "to --conv/--linear)")
    parser.add_argument("--paths", action="store_true",
                        help="measure the per-shape choice (fused or library path) instead of "
                             "sweeping configs; writes the table's paths section")
    parser.add_argument("--backward", action="store_true",
                        help="measure the per-shape backward choice (Triton gradient kernels or "
                             "cuDNN), with and without an input gradient, instead of sweeping "
                             "configs; writes the table's backward sections")
    parser.add_argument("--cpu-standin", action="store_true",
                        help="sweep under the interpreter on CPU (tests the tuner; the timings "
                             "mean nothing)")
    args = parser.parse_args(argv)
    if args.cpu_standin:
        os.environ.setdefault("TRITON_INTERPRET", "1")
    import torch

    from elutriton.kernels.conv2d import KERNEL_NAME
    from elutriton.kernels.conv2d_tma import KERNEL_NAME as CONV_TMA_KERNEL
    from elutriton.kernels.depthwise_conv2d import KERNEL_NAME as DEPTHWISE_KERNEL
    from elutriton.kernels.depthwise_conv2d import is_depthwise
    from elutriton.kernels.gemm_tma import KERNEL_NAME as TMA_KERNEL
    from elutriton.kernels.tuning import arch_name
    from perf.measure import kernel_time
    from perf.results_io import select_shapes
    from perf.shapes import op_of

    device = "cuda" if torch.cuda.is_available() and not args.cpu_standin else "cpu"
    if device == "cpu" and not args.cpu_standin:
        sys.exit("perf.tune needs a CUDA GPU (or --cpu-standin for a test run)")
    arch = arch_name(torch.device(device))
    path = args.out / f"{arch}.json"
    table = json.loads(path.read_text()) if path.is_file() else {}
    args.out.mkdir(parents=True, exist_ok=True)

    def write():  # after every shape, so an interrupted run keeps what it measured
        path.write_text(json.dumps(table, indent=1, sort_keys=True) + "\n")
    selected = args.conv + args.linear
    for model in args.models:
        from perf.models import fused_layer_shapes
        shapes, skipped = fused_layer_shapes(model)
        selected += shapes
        for line in skipped:
            print(f"not tuned: {line}", file=sys.stderr)
    if not selected:
        selected = select_shapes(args.sets, args.shapes, ops=("conv", "linear"))
    if args.paths or args.backward:
        if args.paths:
            tune_paths(selected, args.dtypes, device, table, write, kernel_time)
        if args.backward:
            tune_backward(selected, args.dtypes, device, table, write, kernel_time)
        print(f"tuned paths -> {path}")
        return path
    # Depthwise layers run their own kernel, with a table section of its own.
    for shape in [s for s in selected if op_of(s) == "conv" and is_depthwise(s.c, s.groups)]:
        for dtype in args.dtypes:
            key, best, timings = sweep_depthwise(shape, dtype, device, kernel_time)
            table.setdefault(DEPTHWISE_KERNEL, {})[key] = best
            print(f"{shape.name} {dtype}: {best} ({min(timings.values()):.4f} ms)")
            write()
    shapes = [s for s in selected if op_of(s) == "linear" or not is_depthwise(s.c, s.groups)]
    entries = table.setdefault(KERNEL_NAME, {})
    for shape in shapes:
        for dtype in args.dtypes:
            allow_tf32 = (torch.backends.cudnn.allow_tf32 if op_of(shape) == "conv"
                          else torch.backends.cuda.matmul.allow_tf32)
            if args.resume and sweep_key(shape, dtype, allow_tf32) in entries:
                continue
            key, best, timings = sweep_conv(shape, dtype, device, allow_tf32, kernel_time)
            entries[key] = best
            print(f"{shape.name} {dtype}: {best} ({min(timings.values()):.4f} ms)")
            # each TMA kernel, where it applies, takes the shape only if measured faster
            for section, sweep, label in ((TMA_KERNEL, sweep_tma, "TMA"),
                                          (CONV_TMA_KERNEL, sweep_conv_tma, "TMA conv")):
                tma_best, tma_ms = sweep(shape, dtype, device, allow_tf32, kernel_time)
                tma_entries = table.setdefault(section, {})
                if tma_best is not None and tma_ms < min(timings.values()) * (1 - PATH_MARGIN):
                    tma_entries[key] = tma_best
                    print(f"{shape.name} {dtype}: {label} {tma_best} ({tma_ms:.4f} ms)")
                else:
                    tma_entries.pop(key, None)
            write()
    print(f"tuned table -> {path}")
    return path


if __name__ == "__main__":
    main()
