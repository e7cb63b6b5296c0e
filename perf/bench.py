"""`make bench`: the perf harness.

On a CUDA GPU: times elutriton and the baselines (perf/baselines.py) on the named shape sets
(perf/shapes.py), forward and forward+backward, and writes CSV, PNG plots and a summary to
perf/results/<device-name>/. All numbers there are MEASURED.

Without a GPU it still does real work, written to perf/results/:
  1. the static kernel report (perf/kernel_report.py) for sm_80 and sm_90;
  2. the traffic model (perf/traffic.py): bytes per pipeline and roofline times from stated
     device figures, CSV and plots, every number labelled PREDICTED (perf/results/no-gpu/),
     and a calibration plot of those predictions against every measured results folder;
  3. an interpreter correctness pass of each op on small shapes (perf/check_interpreter.py);
  4. host time per call on CPU against eager PyTorch (perf/host_overhead.py --cpu, MEASURED).

`--cpu-standin` runs the measured path on the CPU (under TRITON_INTERPRET=1) so tests exercise
the GPU code paths; its timings mean nothing.
"""
import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

from perf.results_io import (NO_GPU, RESULTS, device_dir, environment, merge_rows, progress,
                             read_measured, select_shapes, write_csv)
from perf.summary import write_summary
DTYPES = {"fp16": "float16", "bf16": "bfloat16", "fp32": "float32"}


def parse_args(argv):
    from perf.shapes import SHAPE_SETS
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--ops", nargs="*", default=["bias_elu", "conv", "linear"],
                        choices=["bias_elu", "conv", "linear"], help="ops to time")
    parser.add_argument("--sets", nargs="*", default=None,
                        choices=sorted(SHAPE_SETS) + ["tiny"],
                        help="shape sets from perf/shapes.py (None: all); 'tiny' exercises "
                             "every code path in seconds")
    parser.add_argument("--shapes", nargs="*", default=None,
                        help="keep only these shape names (perf/shapes.py) from the selected "
                             "sets (None: all of them)")
    parser.add_argument("--dtypes", nargs="*", default=["fp16", "bf16", "fp32"],
                        choices=["fp16", "bf16", "fp32"], help="tensor dtypes")
    parser.add_argument("--layouts", nargs="*", default=["channels_last", "nchw"],
                        choices=["channels_last", "nchw"], help="conv input/output layouts")
    parser.add_argument("--directions", nargs="*",
                        default=["fwd", "fwd+bwd", "fwd+bwd_params"],
                        choices=["fwd", "fwd+bwd", "fwd+bwd_params"],
                        help="forward alone, forward + backward of every input, or forward + "
                             "backward of the parameters alone (the input needs no gradient, "
                             "as the images at a network's first layer)")
    parser.add_argument("--compile-modes", nargs="*", default=["default", "max-autotune"],
                        choices=["default", "max-autotune", "none"],
                        help="torch.compile baselines to include (none: skip)")
    parser.add_argument("--tf32", choices=["on", "off"], default="on",
                        help="value of torch.backends.cudnn/matmul.allow_tf32 for this run")
    parser.add_argument("--out", type=Path, default=RESULTS,
                        help="results folder (a sub-folder per device is written)")
    parser.add_argument("--cpu-standin", action="store_true",
                        help="run the measured path on CPU (tests; timings meaningless)")
    parser.add_argument("--timer", choices=["do_bench", "cudagraph"], default="do_bench",
                        help="do_bench: per-call time as a user sees it in eager mode (host "
                             "launch overhead included where the GPU waits for it); cudagraph: "
                             "the calls replayed from a CUDA graph, so GPU time alone")
    parser.add_argument("--deadline-s", type=float, default=None,
                        help="start no new benchmark after this many seconds (results so far "
                             "are kept: measured.csv is rewritten after every case)")
    parser.add_argument("--fresh", action="store_true",
                        help="discard earlier rows of measured.csv in the output folder "
                             "(default: rows of this run replace rows with the same key)")
    parser.add_argument("--replot", type=Path, default=None, metavar="RESULTS_DIR",
                        help="measure nothing: redraw the plots and summary of a folder of "
                             "measured results (measured.csv, environment.json)")
    parser.add_argument("--report-arch", type=int, nargs="*", default=[80, 90], choices=[80, 90],
                        help="no GPU: compute capabilities the static kernel report compiles for")
    parser.add_argument("--report-kernels", nargs="*", default=None,
                        help="no GPU: kernels the static report compiles (None: all; names as "
                             "in perf/kernel_specs.py JOB_SOURCES)")
    parser.add_argument("--host-rounds", type=int, default=15,
                        help="no GPU: interleaved rounds of the CPU host-time table "
                             "(perf/host_overhead.py --cpu)")
    return parser.parse_args(argv)


# ------------------------------------------------------------------------ measured path
def _make_case(shape, dtype, layout, device, compile_modes, graph_timer=False):
    """(inputs factory, providers dict, call signature adapter, minimal bytes, flops)."""
    import torch

    from perf import baselines, traffic
    from perf.shapes import ConvShape, LinearShape
    t = getattr(torch, DTYPES[dtype])
    modes = [m for m in compile_modes if m != "none"]

    def tensor(*shape_, scale=1.0):
        return (torch.randn(*shape_, device=device) * scale).to(t)

    if isinstance(shape, ConvShape):
        # the layout of a model's input and its weights, as `model.to(memory_format=...)`
        # leaves them (rows before 2026-11-25 had NCHW weights in both layouts, which every
        # provider converted on each channels_last call)
        fmt = torch.channels_last if layout == "channels_last" else torch.contiguous_format

        def inputs():
            x = tensor(shape.n, shape.c, shape.h, shape.w).to(memory_format=fmt)
            w = tensor(shape.oc, shape.c // shape.groups, shape.k, shape.k,
                       scale=(shape.c // shape.groups * shape.k ** 2) ** -0.5).to(
                           memory_format=fmt)
            return x, w, tensor(shape.oc), shape.stride, shape.padding, shape.groups
        providers = baselines.conv_providers(modes, graph_timer)
    elif isinstance(shape, LinearShape):
        def inputs():
            return tensor(shape.m, shape.k), tensor(shape.n, shape.k, scale=shape.k ** -0.5), \
                tensor(shape.n)
        providers = baselines.linear_providers(modes, graph_timer)
    else:
        def inputs():
            return tensor(shape.rows, shape.channels), tensor(shape.channels)
        providers = baselines.bias_elu_providers(modes, graph_timer)
    return inputs, providers, traffic.minimal_bytes(shape, dtype), traffic.flops(shape)



def run_measured(args, device, out_dir):
    import torch

    from perf import baselines, cudnn_graph
    from perf.measure import kernel_time, measure, rotating
    from perf.shapes import op_of
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = args.tf32 == "on"
    jobs = []
    for shape in select_shapes(args.sets, args.shapes, args.ops):
        layouts = args.layouts if op_of(shape) == "conv" else ["-"]
        for dtype in args.dtypes:
            for layout in layouts:
                for direction in args.directions:
                    jobs.append((shape, dtype, layout, direction))
    earlier = [] if args.fresh else read_measured(out_dir / "measured.csv")
    rows = []
    start = time.monotonic()
    for shape, dtype, layout, direction in progress(jobs, desc="benchmarking"):
        if args.deadline_s is not None and time.monotonic() - start > args.deadline_s:
            print(f"deadline of {args.deadline_s:.0f} s reached: stopping before "
                  f"{shape.name} {dtype} {layout} {direction}", file=sys.stderr)
            break
        inputs, providers, min_bytes, flop = _make_case(shape, dtype, layout, device,
                                                         args.compile_modes,
                                                         args.timer == "cudagraph")
        case_rows = []
        for name, factory in providers.items():
            if direction != "fwd" and name.startswith("copy"):
                continue
            if direction == "fwd" and name in baselines.BACKWARD_ONLY:
                continue  # same forward as elutriton's
            if name in baselines.NCHW_FORWARD_ONLY and (layout != "nchw" or direction != "fwd"):
                continue
            if direction != "fwd" and name == cudnn_graph.PROVIDER:
                continue  # a forward graph: no backward

            def make_call(*case, factory=factory):
                if direction == "fwd":
                    return factory(*case)
                # fwd+bwd_params: the input needs no gradient, as the images at a network's
                # first layer (only the weight and bias gradients are computed)
                leaves = [c.requires_grad_() for i, c in enumerate(case)
                          if isinstance(c, torch.Tensor)
                          and not (direction == "fwd+bwd_params" and i == 0)]
                forward = factory(*case)

                def step():
                    y = forward()
                    y.backward(torch.ones_like(y))
                    for leaf in leaves:
                        leaf.grad = None
                return step
            env = getattr(factory, "env", {})
            saved_env = {k: os.environ.get(k) for k in env}
            os.environ.update(env)
            try:
                fn = rotating(make_call, inputs, min_bytes)
                timer = kernel_time if args.timer == "cudagraph" else measure
                median, q20, q80, method = timer(fn, device)
            except Exception as exc:  # a baseline failing on a shape is reported, not fatal
                print(f"  {shape.name} {dtype} {layout} {direction} {name}: "
                      f"{type(exc).__name__}: {exc}"[:300], file=sys.stderr)
                continue
            finally:
                for k, v in saved_env.items():
                    if v is None:
                        os.environ.pop(k, None)
                    else:
                        os.environ[k] = v
            # backward ~ twice the forward work (once without the input gradient)
            passes = {"fwd": 1, "fwd+bwd": 3, "fwd+bwd_params": 2}[direction]
            case_rows.append(dict(
                op=op_of(shape), shape=shape.name, dtype=dtype, layout=layout,
                direction=direction, provider=name, tf32=args.tf32, median_ms=median,
                q20_ms=q20, q80_ms=q80,
                gbps=min_bytes * passes / (median * 1e-3) / 1e9,
                tflops=flop * passes / (median * 1e-3) / 1e12,
                speedup_vs_eager=None, method=method))
        eager_ms = next((r["median_ms"] for r in case_rows if r["provider"] == "eager"), None)
        for r in case_rows:
            r["speedup_vs_eager"] = eager_ms / r["median_ms"] if eager_ms else None
        rows += case_rows
        write_csv(merge_rows(earlier, rows), out_dir / "measured.csv")
    all_rows = merge_rows(earlier, rows)
    plot_all(all_rows, out_dir, device)
    return rows, all_rows


def plot_all(rows, out_dir, device):
    """One plot per (op, dtype, layout, direction, tf32, timer) group of measured rows."""
    from perf.plots import plot_measured, plot_speedup
    from perf.shapes import SHAPE_SETS, TINY_SETS
    group_key = ("op", "dtype", "layout", "direction", "tf32", "method")
    order = {s.name: i for i, s in enumerate(
        s for sets in (SHAPE_SETS, TINY_SETS) for group in sets.values() for s in group)}
    rows = sorted(rows, key=lambda r: order.get(r["shape"], len(order)))  # set order on x
    groups = sorted({tuple(r[k] for k in group_key) for r in rows})
    for op, dtype, layout, direction, tf32, method in groups:
        subset = [r for r in rows if tuple(r[k] for k in group_key)
                  == (op, dtype, layout, direction, tf32, method)]
        tag = f"{op}_{dtype}_{layout}_{direction}".replace("+", "_").replace("-", "")
        if method == "do_bench_cudagraph":
            tag += "_cudagraph"
        tf32_note = ""
        if dtype == "fp32":
            tag += f"_tf32{tf32}"
            tf32_note = f" tf32={tf32}"
        title = f"{op} {dtype} {layout} {direction}{tf32_note}, {method} ({device})"
        plot_measured(subset, out_dir / f"{tag}.png", title)
        plot_speedup(subset, out_dir / f"{tag}_speedup.png", title)


# ------------------------------------------------------------------------ no-GPU path
def run_model(out_dir):
    from perf import traffic
    from perf.plots import plot_predicted
    from perf.shapes import SHAPE_SETS
    rows = []
    for figures in traffic.DEVICES.values():
        for set_name, shapes in SHAPE_SETS.items():
            set_rows = traffic.model_rows(shapes, ["fp16", "fp32"], figures)
            for r in set_rows:
                r["shape_set"] = set_name
            rows += set_rows
            for dtype in ("fp16", "fp32"):
                plot_predicted([r for r in set_rows if r["dtype"] == dtype],
                               out_dir / f"predicted_{set_name}_{dtype}_{figures.name}.png",
                               f"{set_name} {dtype}, roofline from {figures.name} datasheet figures")
    write_csv(rows, out_dir / "predicted_traffic.csv")
    return rows


# measured provider -> traffic-model pipeline, for the calibration plot
CALIBRATED_PIPELINES = {"elutriton": "fused", "eager": "eager", "compile:default": "compile"}


def calibration_pairs(measured, predicted, figures):
    """(predicted us, measured us) for every forward channels_last case under the CUDA-graph
    timer (GPU time, as the model predicts) that both tables have; fp32 with TF32 on."""
    model = {(r["shape"], r["dtype"], r["pipeline"]): r["predicted_us"] for r in predicted
             if r["device_figures"] == figures}
    pairs = []
    for r in measured:
        if (r["method"] != "do_bench_cudagraph" or r["direction"] != "fwd"
                or r["layout"] not in ("channels_last", "-", "")
                or (r["dtype"] == "fp32" and r["tf32"] != "on")):
            continue
        pipeline = CALIBRATED_PIPELINES.get(r["provider"])
        us = model.get((r["shape"], r["dtype"], pipeline))
        if pipeline and us:
            pairs.append(dict(shape=f"{r['shape']} {r['dtype']}", pipeline=pipeline,
                              predicted_us=us, measured_us=r["median_ms"] * 1e3))
    return pairs


def write_calibration(out_dir, predicted):
    """calibration_<gpu>.png for every measured results folder whose GPU the model has
    figures for (an H100 folder against the H100-SXM figures). Returns {gpu: pairs}."""
    from perf.plots import plot_calibration
    done = {}
    for measured_csv in sorted(RESULTS.glob("*/measured.csv")):
        gpu = measured_csv.parent.name
        figures = "H100-SXM" if "H100" in gpu else "A100-SXM-80GB" if "A100" in gpu else None
        pairs = calibration_pairs(read_measured(measured_csv), predicted, figures)
        if not figures or not pairs:
            continue
        plot_calibration(pairs, out_dir / f"calibration_{figures}.png",
                         f"Traffic model (PREDICTED, {figures} datasheet figures) against "
                         f"measurements on {gpu.replace('_', ' ')}")
        done[gpu] = pairs
    return done


def replot(out_dir):
    """Plots and summary of ``out_dir`` again from its measured.csv and environment.json."""
    rows = read_measured(out_dir / "measured.csv")
    if not rows:
        sys.exit(f"no measured.csv in {out_dir}")
    env = json.loads((out_dir / "environment.json").read_text())
    device = "cpu" if env["gpu"] == "none" else "cuda"
    plot_all(rows, out_dir, device)
    write_summary(out_dir / "summary.md", env, rows, None, None, None)
    print(f"replotted {len(rows)} rows -> {out_dir}")
    return rows


def main(argv=None):
    args = parse_args(argv)
    if args.replot is not None:
        return replot(args.replot)
    if args.cpu_standin:
        os.environ.setdefault("TRITON_INTERPRET", "1")
    import torch
    device = "cuda" if torch.cuda.is_available() and not args.cpu_standin else "cpu"
    if device == "cuda" or args.cpu_standin:
        env = environment(device)
        out_dir = device_dir(env["gpu"] if device == "cuda" else "cpu-standin", args.out)
        out_dir.mkdir(parents=True, exist_ok=True)
        (out_dir / "environment.json").write_text(json.dumps(env, indent=1) + "\n")
        measured, all_rows = run_measured(args, device, out_dir)
        write_summary(out_dir / "summary.md", env, all_rows, None, None, None)
        print(f"measured results -> {out_dir}")
        return measured
    print("no CUDA GPU: static kernel report, traffic model (predicted), interpreter check")
    from perf import kernel_report
    report = kernel_report.main(["--out", str(args.out), "--arch", *map(str, args.report_arch)]
                                + (["--kernels", *args.report_kernels]
                                   if args.report_kernels else []))
    out_dir = args.out / NO_GPU.name
    out_dir.mkdir(parents=True, exist_ok=True)
    predicted = run_model(out_dir)
    write_calibration(out_dir, predicted)
    check = subprocess.run([sys.executable, "-m", "perf.check_interpreter"],
                           cwd=Path(__file__).resolve().parents[1])
    from perf import host_overhead
    host_overhead.main(["--cpu", "--rounds", str(args.host_rounds),
                        "--out", str(out_dir / "host_overhead_cpu.md")])
    write_summary(out_dir / "summary.md", environment(device), None, predicted, report,
                  check.returncode == 0)
    print(f"predicted results and summary -> {out_dir}")
    if check.returncode != 0:
        sys.exit("interpreter correctness pass failed")
    return predicted


if __name__ == "__main__":
    main()
