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

The sweeps, timings and table sections are the package's (``elutriton/tuner/``), which
``elutriton.tune(model, *example_inputs, out_dir=...)`` runs on a model's own layers; this
script runs them on named shape sets, every dtype, both conv layouts for the path choice.
"""
import argparse
import os
import sys
from pathlib import Path

PACKAGED = Path(__file__).resolve().parents[1] / "elutriton" / "configs"


def layer_call(shape, dtype, allow_tf32):
    """The package's call record (``elutriton/tuner/layers.py``) of a perf/shapes.py conv or
    linear shape in ``dtype`` (a name: "float16") with the bias, channels_last."""
    import torch

    from elutriton.tuner import ConvCall, LinearCall
    from perf.shapes import ConvShape
    t = getattr(torch, dtype)
    name = f"{shape.name} {dtype}"
    if isinstance(shape, ConvShape):
        return ConvCall(shape.n, shape.c, shape.h, shape.w, shape.oc, (shape.k, shape.k),
                        (shape.stride,) * 2, (shape.padding,) * 2, (1, 1), shape.groups,
                        True, t, True, bool(allow_tf32), name)
    return LinearCall(shape.m, shape.k, shape.n, True, t, bool(allow_tf32), name)


def shape_calls(shapes, dtypes):
    """The calls of every shape in every dtype, with torch's TF32 flags as they are (cuDNN's
    for convolutions, cuBLAS's for linear layers)."""
    import torch

    from perf.shapes import op_of
    return [layer_call(shape, dtype, torch.backends.cudnn.allow_tf32 if op_of(shape) == "conv"
                       else torch.backends.cuda.matmul.allow_tf32)
            for shape in shapes for dtype in dtypes]


def model_calls(name, dtypes):
    """The distinct fused-layer calls of perf/models.py's model ``name`` at its benchmark batch
    size, in inference (BatchNorm folded), in each of ``dtypes``: read off a forward on the
    meta device (``elutriton.tuner.record_calls``), so every layer's own arguments are kept."""
    import dataclasses

    import torch

    from elutriton.tuner import record_calls
    from perf.models import fused_meta_model
    model, example = fused_meta_model(name)
    calls = []
    for dtype in dtypes:
        t = getattr(torch, dtype)
        for layer, call in record_calls(model.to(t), example.to(t)):
            calls.append(dataclasses.replace(call, name=f"{name} {layer} {dtype}"))
    return calls


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

    from elutriton.kernels.tuning import arch_name
    from elutriton.tuner import tune_calls
    from perf.results_io import select_shapes

    device = "cuda" if torch.cuda.is_available() and not args.cpu_standin else "cpu"
    if device == "cpu" and not args.cpu_standin:
        sys.exit("perf.tune needs a CUDA GPU (or --cpu-standin for a test run)")
    path = args.out / f"{arch_name(torch.device(device))}.json"
    calls = shape_calls(args.conv + args.linear, args.dtypes)
    for model in args.models:
        calls += model_calls(model, args.dtypes)
    if not calls:
        calls = shape_calls(select_shapes(args.sets, args.shapes, ops=("conv", "linear")),
                            args.dtypes)
    tuning_choices = args.paths or args.backward
    tune_calls(calls, device, path, configs=not tuning_choices, paths=args.paths,
               backward=args.backward, resume=args.resume, both_layouts=True,
               copy_in_effect=False, log=print)
    print(f"tuned {'paths' if tuning_choices else 'table'} -> {path}")
    return path


if __name__ == "__main__":
    main()
