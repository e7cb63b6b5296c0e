"""Matplotlib plots for measured results and for the (predicted) traffic model."""
from collections import defaultdict

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def plot_measured(rows, path, title):
    """GB/s per shape, one line per provider (perf_report style)."""
    by_provider = defaultdict(list)
    shapes = []
    for r in rows:
        if r["shape"] not in shapes:
            shapes.append(r["shape"])
        by_provider[r["provider"]].append((shapes.index(r["shape"]), r["gbps"]))
    fig, ax = plt.subplots(figsize=(max(6, 0.7 * len(shapes) + 3), 4.5))
    for provider, points in by_provider.items():
        points.sort()
        ax.plot([p[0] for p in points], [p[1] for p in points], marker="o", label=provider)
    ax.set_xticks(range(len(shapes)))
    ax.set_xticklabels(shapes, rotation=45, ha="right", fontsize=7)
    ax.set_ylabel("effective bandwidth, GB/s (minimal bytes / median time)")
    ax.set_title(f"MEASURED: {title}", fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_speedup(rows, path, title):
    """Measured speedup of elutriton over each baseline per shape (baseline median time over
    elutriton's; above 1: elutriton is faster), one bar per baseline."""
    times = defaultdict(dict)
    shapes = []
    for r in rows:
        if r["shape"] not in shapes:
            shapes.append(r["shape"])
        times[r["shape"]][r["provider"]] = r["median_ms"]
    baselines = [p for p in dict.fromkeys(r["provider"] for r in rows)
                 if p != "elutriton" and not p.startswith("copy")]
    shapes = [s for s in shapes if "elutriton" in times[s]]
    if not shapes or not baselines:
        return
    width = 0.8 / len(baselines)
    fig, ax = plt.subplots(figsize=(max(6, 0.6 * len(shapes) + 3), 4.5))
    for i, provider in enumerate(baselines):
        xs = [j + i * width for j, s in enumerate(shapes) if provider in times[s]]
        ys = [times[s][provider] / times[s]["elutriton"] for s in shapes if provider in times[s]]
        ax.bar(xs, ys, width=width, label=f"vs {provider}")
    ax.axhline(1.0, color="black", lw=0.8)
    ax.set_xticks([j + 0.4 - width / 2 for j in range(len(shapes))])
    ax.set_xticklabels(shapes, rotation=45, ha="right", fontsize=7)
    ax.set_ylabel("speedup of elutriton (baseline time / elutriton time)")
    ax.set_title(f"MEASURED: {title}", fontsize=9)
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3, axis="y")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_predicted(rows, path, title):
    """Predicted speedup over eager per shape and pipeline (bars), clearly labelled."""
    shapes, pipelines = [], []
    values = {}
    for r in rows:
        if r["shape"] not in shapes:
            shapes.append(r["shape"])
        if r["pipeline"] not in pipelines:
            pipelines.append(r["pipeline"])
        values[(r["shape"], r["pipeline"])] = r["predicted_speedup_vs_eager"]
    width = 0.8 / max(1, len(pipelines))
    fig, ax = plt.subplots(figsize=(max(6, 0.6 * len(shapes) + 3), 4.5))
    for i, pipeline in enumerate(pipelines):
        xs = [j + i * width for j, s in enumerate(shapes) if (s, pipeline) in values]
        ys = [values[(s, pipeline)] for s in shapes if (s, pipeline) in values]
        ax.bar(xs, ys, width=width, label=pipeline, hatch="//", alpha=0.8)
    ax.axhline(1.0, color="black", lw=0.8)
    ax.set_xticks([j + 0.4 - width / 2 for j in range(len(shapes))])
    ax.set_xticklabels(shapes, rotation=45, ha="right", fontsize=7)
    ax.set_ylabel("PREDICTED speedup over eager (roofline)")
    ax.set_title(f"PREDICTED, not measured: {title}", fontsize=9)
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3, axis="y")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
