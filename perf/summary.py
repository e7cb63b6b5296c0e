"""The markdown summary of a benchmark run: measured rows (ratios to each baseline), the
traffic model's predictions, the kernel report and the interpreter pass, one section each."""
from perf.results_io import BACKWARD_CUDNN, BACKWARD_TRITON, NCHW_DIRECT

BASELINE_COLUMNS = (("eager", "x eager"), ("cudnn conv only", "x conv only"),
                    ("cublas linear only", "x linear only"), ("compile:default", "x compile"),
                    ("compile:max-autotune", "x max-autotune"),
                    (BACKWARD_CUDNN, "x cuDNN bwd"),
                    (BACKWARD_TRITON, "x Triton bwd"),
                    (NCHW_DIRECT, "x NCHW direct"),
                    ("cudnn fused graph", "x cuDNN fused graph"))


TIMER_NAMES = {"do_bench": "eager", "do_bench_cudagraph": "graph"}


def measured_table(rows):
    """Markdown lines: one row per case with elutriton's time and its ratio to each baseline."""
    cases = {}
    for r in rows:
        key = (r["op"], r["shape"], r["dtype"], r["layout"], r["direction"], r["tf32"],
               r["method"])
        cases.setdefault(key, {})[r["provider"]] = r
    present = [(p, title) for p, title in BASELINE_COLUMNS
               if any(p in providers for providers in cases.values())]
    lines = ["| op | shape | dtype | layout | dir | tf32 | timer | elutriton ms | GB/s | TFLOP/s | "
             + " | ".join(title for _, title in present) + " | % copy |",
             "|---" * (11 + len(present)) + "|"]
    for (op, shape, dtype, layout, direction, tf32, method), providers in cases.items():
        ours = providers.get("elutriton")
        if ours is None:
            continue
        ratios = [f"{providers[p]['median_ms'] / ours['median_ms']:.2f}" if p in providers else ""
                  for p, _ in present]
        copy = providers.get("copy (limit)")
        pct = f"{100 * copy['median_ms'] / ours['median_ms']:.0f}" if copy else ""
        lines.append(f"| {op} | {shape} | {dtype} | {layout} | {direction} | "
                     f"{tf32 if dtype == 'fp32' else ''} | {TIMER_NAMES.get(method, method)} | "
                     f"{ours['median_ms']:.4f} | "
                     f"{ours['gbps']:.0f} | {ours['tflops']:.1f} | " + " | ".join(ratios)
                     + f" | {pct} |")
    return lines


BACKWARD_PROVIDERS = (("elutriton", "elutriton"), ("eager", "eager"),
                      (BACKWARD_CUDNN, "cuDNN bwd forced"),
                      (BACKWARD_TRITON, "Triton bwd forced"))


def backward_table(rows):
    """Markdown lines: each conv/linear case's backward time, fwd+bwd minus fwd of the same
    provider, timer and case (the forced-backward providers share elutriton's forward); empty
    when no case has both directions."""
    medians = {}
    for r in rows:
        case = (r["op"], r["shape"], r["dtype"], r["layout"], r["tf32"], r["method"])
        medians[case + (r["direction"], r["provider"])] = r["median_ms"]
    lines = []
    for case in dict.fromkeys(k[:6] for k in medians):
        for direction in ("fwd+bwd", "fwd+bwd_params"):
            cells = []
            for provider, _ in BACKWARD_PROVIDERS:
                both = medians.get(case + (direction, provider))
                forward = medians.get(case + ("fwd", "eager" if provider == "eager"
                                              else "elutriton"))
                cells.append("" if both is None or forward is None
                             else f"{both - forward:.4f}")
            if any(cells):
                op, shape, dtype, layout, tf32, method = case
                lines.append(f"| {op} | {shape} | {dtype} | {layout} | {direction} | "
                             f"{TIMER_NAMES.get(method, method)} | " + " | ".join(cells) + " |")
    if not lines:
        return []
    return (["| op | shape | dtype | layout | dir | timer | "
             + " | ".join(title for _, title in BACKWARD_PROVIDERS) + " |",
             "|---" * (6 + len(BACKWARD_PROVIDERS)) + "|"] + lines)


def write_summary(path, env, measured, predicted, report, correctness_ok):
    # the date only where something was measured: a no-GPU run's outputs do not depend on it
    # (and a date line would change a tracked file on every run)
    lines = ["# elutriton benchmark summary", ""] + ([f"- date: {env['date']}"] if measured
                                                     else []) + [f"- GPU: {env['gpu']}" +
             (f" (driver {env['driver']})" if "driver" in env else ""),
             f"- torch {env['torch']}, triton {env['triton']}, Python {env['python']}", ""]
    if measured:
        lines += ["## Measured", "", "Times are medians of `triton.testing.do_bench` (timer "
                  "`eager`: each call launched from Python, host overhead included where the GPU "
                  "waits for it) or of `do_bench_cudagraph` (timer `graph`: the same calls "
                  "replayed from a CUDA graph, GPU time alone); `x P` is "
                  "P's median time over elutriton's (above 1: elutriton is faster); `% copy` is "
                  "elutriton's effective bandwidth over a device-to-device copy of the output "
                  "size. Every row: `measured.csv`.", ""] + measured_table(measured)
        backward = backward_table(measured)
        if backward:
            lines += ["", "### Backward alone", "", "Milliseconds of the backward pass: a "
                      "provider's fwd+bwd median minus its fwd median (the forced-backward "
                      "rows minus elutriton's forward), so a difference of two measurements; "
                      "`fwd+bwd_params`: the input needs no gradient (a first layer).", ""
                      ] + backward
        if any(r["method"] == "cpu-standin" for r in measured):
            lines += ["", "Timings by the CPU stand-in: they test the harness, not the kernels."]
    else:
        lines += ["## Measured", "", "No GPU on this machine: nothing was measured here. GPU "
                  "runs write theirs to `perf/results/<gpu-name>/`.", ""]
    if predicted:
        lines += ["", "## Predicted (traffic model; not measurements)", "",
                  "Mean speedup over eager PyTorch of a shape set, from bytes moved and "
                  "datasheet peaks (`predicted_traffic.csv`, `predicted_*.png`). torch.compile "
                  "moves the same bytes as eager for conv/linear (1.00x) and the fused op's for "
                  "bias+ELU alone; the conv/GEMM alone (in the CSV) moves the fused op's bytes, "
                  "so it is not a column. How far measurements are from these: "
                  "`calibration_*.png`.", "",
                  "| device figures | shape set | dtypes | elutriton (fused) | torch.compile |",
                  "|---|---|---|---|---|"]
        keyed = {}
        for r in predicted:
            keyed.setdefault((r["device_figures"], r["shape_set"]), {}).setdefault(
                r["dtype"], {}).setdefault(r["pipeline"], []).append(
                    r["predicted_speedup_vs_eager"])
        for (dev, set_name), by_dtype in keyed.items():
            cells = {}  # identical rows of several dtypes are merged into one
            for dtype, pipes in by_dtype.items():
                row = tuple(f"{sum(pipes[p]) / len(pipes[p]):.2f}x" if pipes.get(p) else "-"
                            for p in ("fused", "compile"))
                cells.setdefault(row, []).append(dtype)
            for row, dtypes in cells.items():
                lines.append(f"| {dev} | {set_name} | {', '.join(dtypes)} | " + " | ".join(row)
                             + " |")
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
