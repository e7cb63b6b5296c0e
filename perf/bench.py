"""`make bench`: the perf harness.

On a CUDA GPU: times elutriton and the baselines (perf/baselines.py) on the named shape sets
(perf/shapes.py), forward and forward+backward, and writes CSV, PNG plots and a summary to
perf/results/<device-name>/. All numbers there are MEASURED.

Without a GPU it still does real work, written to perf/results/:
  1. the static kernel report (perf/kernel_report.py) for sm_80 and sm_90;
  2. the traffic model (perf/traffic.py): bytes per pipeline and roofline times from stated
     device figures, CSV and plots, every number labelled PREDICTED (perf/results/no-gpu/);
  3. an interpreter correctness pass of each op on small shapes (perf/check_interpreter.py).

`--cpu-standin` runs the measured path on the CPU (under TRITON_INTERPRET=1) so tests exercise
the GPU code paths; its timings mean nothing.
"""
import argparse
import csv
import datetime
import os
import platform
import subprocess
import sys
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"
DTYPES = {"fp16": "float16", "bf16": "bfloat16", "fp32": "float32"}


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--ops", nargs="*", default=["bias_elu", "conv", "linear"])
    parser.add_argument("--sets", nargs="*", default=None,
                        help="shape sets from perf/shapes.py (default: all), or 'tiny'")
    parser.add_argument("--dtypes", nargs="*", default=["fp16", "bf16", "fp32"])
    parser.add_argument("--layouts", nargs="*", default=["channels_last", "nchw"])
    parser.add_argument("--directions", nargs="*", default=["fwd", "fwd+bwd"])
    parser.add_argument("--compile-modes", nargs="*", default=["default", "max-autotune"],
                        help="torch.compile baselines to include (none: skip)")
    parser.add_argument("--tf32", choices=["on", "off"], default="on",
                        help="value of torch.backends.cudnn/matmul.allow_tf32 for this run")
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--cpu-standin", action="store_true",
                        help="run the measured path on CPU (tests; timings meaningless)")
    parser.add_argument("--report-arch", type=int, nargs="*", default=[80, 90])
    parser.add_argument("--report-kernels", nargs="*", default=None)
    return parser.parse_args(argv)


def environment(device):
    import torch
    import triton
    info = {"date": datetime.date.today().isoformat(), "torch": torch.__version__,
            "triton": triton.__version__, "python": platform.python_version()}
    if device == "cuda":
        info["gpu"] = torch.cuda.get_device_name()
        try:
            info["driver"] = subprocess.run(
                ["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                capture_output=True, text=True, check=True).stdout.strip()
        except (OSError, subprocess.CalledProcessError):
            info["driver"] = "unknown"
    else:
        info["gpu"] = "none"
    return info


def write_csv(rows, path):
    if not rows:
        return
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


# ------------------------------------------------------------------------ measured path
def _selected_shapes(args):
    from perf.shapes import SHAPE_SETS, TINY_SETS, op_of
    sets = args.sets or list(SHAPE_SETS)
    shapes = []
    for name in sets:
        shapes += [s for group in TINY_SETS.values() for s in group] if name == "tiny" \
            else SHAPE_SETS[name]
    return [s for s in shapes if op_of(s) in args.ops]


def _make_case(shape, dtype, layout, device, compile_modes):
    """(inputs factory, providers dict, call signature adapter, minimal bytes, flops)."""
    import torch

    from perf import baselines, traffic
    from perf.shapes import ConvShape, LinearShape
    t = getattr(torch, DTYPES[dtype])
    modes = [m for m in compile_modes if m != "none"]

    def tensor(*shape_, scale=1.0):
        return (torch.randn(*shape_, device=device) * scale).to(t)

    if isinstance(shape, ConvShape):
        fmt = torch.channels_last if layout == "channels_last" else torch.contiguous_format

        def inputs():
            x = tensor(shape.n, shape.c, shape.h, shape.w).to(memory_format=fmt)
            w = tensor(shape.oc, shape.c // shape.groups, shape.k, shape.k,
                       scale=(shape.c // shape.groups * shape.k ** 2) ** -0.5)
            return x, w, tensor(shape.oc), shape.stride, shape.padding, shape.groups
        providers = baselines.conv_providers(modes)
    elif isinstance(shape, LinearShape):
        def inputs():
            return tensor(shape.m, shape.k), tensor(shape.n, shape.k, scale=shape.k ** -0.5), \
                tensor(shape.n)
        providers = baselines.linear_providers(modes)
    else:
        def inputs():
            return tensor(shape.rows, shape.channels), tensor(shape.channels)
        providers = baselines.bias_elu_providers(modes)
    return inputs, providers, traffic.minimal_bytes(shape, dtype), traffic.flops(shape)



def run_measured(args, device, out_dir):
    import torch

    from perf.measure import measure, rotating
    from perf.plots import plot_measured
    from perf.shapes import op_of
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = args.tf32 == "on"
    try:
        from tqdm import tqdm
    except ImportError:
        def tqdm(it, **_):
            return it
    jobs = []
    for shape in _selected_shapes(args):
        layouts = args.layouts if op_of(shape) == "conv" else ["-"]
        for dtype in args.dtypes:
            for layout in layouts:
                for direction in args.directions:
                    jobs.append((shape, dtype, layout, direction))
    rows = []
    for shape, dtype, layout, direction in tqdm(jobs, desc="benchmarking", file=sys.stderr):
        inputs, providers, min_bytes, flop = _make_case(shape, dtype, layout, device,
                                                         args.compile_modes)
        eager_ms = None
        for name, factory in providers.items():
            if direction == "fwd+bwd" and name.startswith("copy"):
                continue

            def make_call(*case, factory=factory):
                if direction == "fwd":
                    return factory(*case)
                leaves = [c.requires_grad_() for c in case if isinstance(c, torch.Tensor)]
                forward = factory(*case)

                def step():
                    y = forward()
                    y.backward(torch.ones_like(y))
                    for leaf in leaves:
                        leaf.grad = None
                return step
            try:
                fn = rotating(make_call, inputs, min_bytes)
                median, q20, q80, method = measure(fn, device)
            except Exception as exc:  # a baseline failing on a shape is reported, not fatal
                print(f"  {shape.name} {dtype} {layout} {direction} {name}: "
                      f"{type(exc).__name__}: {exc}"[:300], file=sys.stderr)
                continue
            if name == "eager":
                eager_ms = median
            rows.append(dict(
                op=op_of(shape), shape=shape.name, dtype=dtype, layout=layout,
                direction=direction, provider=name, tf32=args.tf32, median_ms=median,
                q20_ms=q20, q80_ms=q80,
                gbps=(min_bytes * (3 if direction == "fwd+bwd" else 1)) / (median * 1e-3) / 1e9,
                tflops=(flop * (3 if direction == "fwd+bwd" else 1)) / (median * 1e-3) / 1e12,
                speedup_vs_eager=None, method=method))
        for r in rows:
            if (r["shape"], r["dtype"], r["layout"], r["direction"]) == \
                    (shape.name, dtype, layout, direction) and eager_ms:
                r["speedup_vs_eager"] = eager_ms / r["median_ms"]
    write_csv(rows, out_dir / "measured.csv")
    groups = sorted({(r["op"], r["dtype"], r["layout"], r["direction"]) for r in rows})
    for op, dtype, layout, direction in groups:
        subset = [r for r in rows if (r["op"], r["dtype"], r["layout"], r["direction"])
                  == (op, dtype, layout, direction)]
        tag = f"{op}_{dtype}_{layout}_{direction}".replace("+", "_").replace("-", "")
        plot_measured(subset, out_dir / f"{tag}.png",
                      f"{op} {dtype} {layout} {direction} tf32={args.tf32} ({device})")
    return rows


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


def write_summary(path, env, measured, predicted, report, correctness_ok):
    lines = ["# elutriton benchmark summary", "",
             f"- date: {env['date']}", f"- GPU: {env['gpu']}" +
             (f" (driver {env['driver']})" if "driver" in env else ""),
             f"- torch {env['torch']}, triton {env['triton']}, Python {env['python']}", ""]
    if measured:
        lines += ["## Measured", "",
                  "| op | shape | dtype | layout | dir | provider | median ms | GB/s | TFLOP/s | "
                  "x eager |", "|---|---|---|---|---|---|---|---|---|---|"]
        for r in measured:
            speed = f"{r['speedup_vs_eager']:.2f}" if r["speedup_vs_eager"] else ""
            lines.append(f"| {r['op']} | {r['shape']} | {r['dtype']} | {r['layout']} | "
                         f"{r['direction']} | {r['provider']} | {r['median_ms']:.4f} | "
                         f"{r['gbps']:.1f} | {r['tflops']:.2f} | {speed} |")
        if any(r["method"] != "do_bench" for r in measured):
            lines += ["", "Timings by the CPU stand-in: they test the harness, not the kernels."]
    else:
        lines += ["## Measured", "", "No GPU on this machine: nothing was measured.", ""]
    if predicted:
        lines += ["", "## Predicted (traffic model; not measurements)", "",
                  "Speedup over eager from bytes moved and datasheet peaks "
                  "(`predicted_traffic.csv`, `predicted_*.png`):", "",
                  "| device figures | shape set | dtype | fused | compile | conv/linear only |",
                  "|---|---|---|---|---|---|"]
        keyed = {}
        for r in predicted:
            keyed.setdefault((r["device_figures"], r["shape_set"], r["dtype"]), {}).setdefault(
                r["pipeline"], []).append(r["predicted_speedup_vs_eager"])
        for (dev, set_name, dtype), pipes in keyed.items():
            def mean(p):
                v = pipes.get(p)
                return f"{sum(v) / len(v):.2f}x" if v else "-"
            lines.append(f"| {dev} | {set_name} | {dtype} | {mean('fused')} | {mean('compile')} "
                         f"| {mean('conv_only')} |")
    if report is not None:
        bad = [r for r in report if not r["ok"]]
        lines += ["", "## Static kernel report", "",
                  f"{len(report)} kernel configs compiled for sm_80/sm_90, {len(bad)} with "
                  "problems (spills, narrow global access, missing tensor-core instructions); "
                  "see `kernel_report.md`."]
    if correctness_ok is not None:
        lines += ["", "## Interpreter correctness pass", "",
                  "passed" if correctness_ok else "FAILED"]
    path.write_text("\n".join(lines) + "\n")


def main(argv=None):
    args = parse_args(argv)
    if args.cpu_standin:
        os.environ.setdefault("TRITON_INTERPRET", "1")
    import torch
    device = "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda" or args.cpu_standin:
        env = environment(device)
        name = env["gpu"].replace(" ", "_") if device == "cuda" else "cpu-standin"
        out_dir = args.out / name
        out_dir.mkdir(parents=True, exist_ok=True)
        measured = run_measured(args, device, out_dir)
        write_summary(out_dir / "summary.md", env, measured, None, None, None)
        print(f"measured results -> {out_dir}")
        return measured
    print("no CUDA GPU: static kernel report, traffic model (predicted), interpreter check")
    from perf import kernel_report
    report = kernel_report.main(["--out", str(args.out), "--arch", *map(str, args.report_arch)]
                                + (["--kernels", *args.report_kernels]
                                   if args.report_kernels else []))
    out_dir = args.out / "no-gpu"
    out_dir.mkdir(parents=True, exist_ok=True)
    predicted = run_model(out_dir)
    check = subprocess.run([sys.executable, "-m", "perf.check_interpreter"],
                           cwd=Path(__file__).resolve().parents[1])
    write_summary(out_dir / "summary.md", environment(device), None, predicted, report,
                  check.returncode == 0)
    print(f"predicted results and summary -> {out_dir}")
    if check.returncode != 0:
        sys.exit("interpreter correctness pass failed")
    return predicted


if __name__ == "__main__":
    main()
