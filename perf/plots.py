"""Matplotlib plots for measured results and for the (predicted) traffic model.

Every plot has its full title (wrapped, never clipped), labelled axes, the legend outside the
data, and a caption under it saying what the series and the shape names are.
"""
import textwrap
from collections import defaultdict

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

SHAPE_NAMES = ("Shape names: cifar_s<stack>_<layer>_<out channels>x<kernel> are the ELU paper's "
               "CIFAR net (batch 128); rn50_* ResNet-50 layers; dw_* depthwise; the others "
               "memory-bound convs, SELU-MLP linear layers and bias+ELU alone (perf/shapes.py).")
PROVIDER_NAMES = {
    "elutriton": "elutriton (fused op)",
    "eager": "eager PyTorch (the unfused composite)",
    "copy (limit)": "device copy of the same bytes (limit)",
    "cudnn conv only": "cuDNN conv + bias alone, no activation",
    "cublas linear only": "cuBLAS linear + bias alone, no activation",
    "compile:default": "torch.compile (default)",
    "compile:max-autotune": "torch.compile (max-autotune)",
    "cudnn fused graph": "cuDNN's fused conv+bias+ELU graph (cuDNN frontend)",
}
PREDICTED_SERIES = {"fused": "elutriton (fused op)", "compile": "torch.compile"}


def finish_figure(fig, ax, path, title, caption, xlabel="layer (shape name)"):
    """Title wrapped to the figure, legend right of the axes, caption below, saved."""
    ax.set_xlabel(xlabel)
    ax.set_title("\n".join(textwrap.wrap(title, 90)), fontsize=9)
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0)
    fig.text(0.01, 0.01, "\n".join(textwrap.wrap(caption, 170)), fontsize=6.5, va="bottom")
    fig.tight_layout(rect=(0, 0.08, 1, 1))
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_measured(rows, path, title):
    """GB/s per shape, one line per provider (perf_report style)."""
    by_provider = defaultdict(list)
    shapes = []
    for r in rows:
        if r["shape"] not in shapes:
            shapes.append(r["shape"])
        by_provider[r["provider"]].append((shapes.index(r["shape"]), r["gbps"]))
    fig, ax = plt.subplots(figsize=(max(9, 0.7 * len(shapes) + 6), 5.5))
    for provider, points in by_provider.items():
        points.sort()
        ax.plot([p[0] for p in points], [p[1] for p in points], marker="o",
                label=PROVIDER_NAMES.get(provider, provider))
    ax.set_xticks(range(len(shapes)))
    ax.set_xticklabels(shapes, rotation=45, ha="right", fontsize=7)
    ax.set_ylabel("effective bandwidth, GB/s\n(minimal bytes / median time)")
    ax.grid(alpha=0.3)
    finish_figure(fig, ax, path, f"MEASURED: {title}",
            "Higher is better. Minimal bytes: each input read once, the output written once. "
            + SHAPE_NAMES)


def bar_chart(path, shapes, series, ylabel, title, caption, xlabel="layer (shape name)",
              **bar_style):
    """Grouped bars: one group per shape, one bar per series ({label: {shape: value}}), and a
    reference line at 1."""
    width = 0.8 / max(1, len(series))
    fig, ax = plt.subplots(figsize=(max(9, 0.6 * len(shapes) + 6), 5.5))
    for i, (label, values) in enumerate(series.items()):
        xs = [j + i * width for j, s in enumerate(shapes) if s in values]
        ax.bar(xs, [values[s] for s in shapes if s in values], width=width, label=label,
               **bar_style)
    ax.axhline(1.0, color="black", lw=0.8)
    ax.set_xticks([j + 0.4 - width / 2 for j in range(len(shapes))])
    ax.set_xticklabels(shapes, rotation=45, ha="right", fontsize=7)
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3, axis="y")
    finish_figure(fig, ax, path, title, caption, xlabel)


def plot_speedup(rows, path, title):
    """Measured speedup of elutriton over each baseline per shape (baseline median time over
    elutriton's; above 1: elutriton is faster), one bar per baseline."""
    times = defaultdict(dict)
    for r in rows:
        times[r["shape"]][r["provider"]] = r["median_ms"]
    shapes = [s for s in dict.fromkeys(r["shape"] for r in rows) if "elutriton" in times[s]]
    baselines = [p for p in dict.fromkeys(r["provider"] for r in rows)
                 if p != "elutriton" and not p.startswith("copy")]
    if not shapes or not baselines:
        return
    series = {f"vs {PROVIDER_NAMES.get(p, p)}": {s: times[s][p] / times[s]["elutriton"]
                                                  for s in shapes if p in times[s]}
              for p in baselines}
    bar_chart(path, shapes, series, "speedup of elutriton\n(baseline time / elutriton time)",
               f"MEASURED: {title}",
               "Above the line at 1: elutriton is faster than that baseline. " + SHAPE_NAMES)


def plot_predicted(rows, path, title):
    """Predicted speedup over eager per shape for the fused op and torch.compile (bars)."""
    series = defaultdict(dict)
    for r in rows:
        if r["pipeline"] in PREDICTED_SERIES:
            series[PREDICTED_SERIES[r["pipeline"]]][r["shape"]] = r["predicted_speedup_vs_eager"]
    shapes = list(dict.fromkeys(r["shape"] for r in rows))
    bar_chart(path, shapes, dict(series), "PREDICTED speedup over eager PyTorch\n(roofline)",
               f"PREDICTED, not measured: {title}",
               "Eager PyTorch is the line at 1. The model counts bytes and FLOPs at datasheet "
               "peaks (perf/traffic.py). torch.compile runs the conv/GEMM as an extern kernel "
               "and bias+ELU as one pointwise pass: for conv/linear the same passes over memory "
               "as eager (so 1.00x), for bias+ELU alone the fused op's. Real kernels do not "
               "reach peak on small layers: compare the calibration plot. " + SHAPE_NAMES,
               hatch="//", alpha=0.8)


def plot_calibration(pairs, path, title):
    """Predicted against measured time, one point per (case, pipeline), log-log with y = x.

    ``pairs``: dicts with ``predicted_us``, ``measured_us``, ``pipeline`` and ``shape``."""
    fig, ax = plt.subplots(figsize=(9, 6.5))
    for pipeline in dict.fromkeys(p["pipeline"] for p in pairs):
        points = [p for p in pairs if p["pipeline"] == pipeline]
        ax.scatter([p["predicted_us"] for p in points], [p["measured_us"] for p in points],
                   s=18, alpha=0.8, label=pipeline)
    values = [v for p in pairs for v in (p["predicted_us"], p["measured_us"])]
    lo, hi = min(values) / 1.5, max(values) * 1.5
    ax.plot([lo, hi], [lo, hi], color="black", lw=0.8, label="measured = predicted")
    ax.plot([lo, hi], [2 * lo, 2 * hi], color="grey", lw=0.6, ls="--",
            label="measured = 2 x predicted")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_ylabel("MEASURED GPU time, us (CUDA-graph timer, median)")
    ax.grid(alpha=0.3, which="both")
    worst = max(pairs, key=lambda p: p["measured_us"] / p["predicted_us"])
    finish_figure(fig, ax, path, title,
            "One point per layer and pipeline, forward, channels_last. x: the traffic model's "
            "roofline time from datasheet figures (PREDICTED); y: the time measured on the GPU. "
            "Points above the black line ran slower than the model, which assumes peak "
            f"bandwidth and FLOP/s; the worst is {worst['shape']} ({worst['pipeline']}) at "
            f"{worst['measured_us'] / worst['predicted_us']:.1f}x the prediction.",
            xlabel="PREDICTED time, us (traffic model, roofline)")
