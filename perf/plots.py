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


def _bar_chart(path, shapes, series, ylabel, title, **bar_style):
    """Grouped bars: one group per shape, one bar per series ({label: {shape: value}}), and a
    reference line at 1."""
    width = 0.8 / max(1, len(series))
    fig, ax = plt.subplots(figsize=(max(6, 0.6 * len(shapes) + 3), 4.5))
    for i, (label, values) in enumerate(series.items()):
        xs = [j + i * width for j, s in enumerate(shapes) if s in values]
        ax.bar(xs, [values[s] for s in shapes if s in values], width=width, label=label,
               **bar_style)
    ax.axhline(1.0, color="black", lw=0.8)
    ax.set_xticks([j + 0.4 - width / 2 for j in range(len(shapes))])
    ax.set_xticklabels(shapes, rotation=45, ha="right", fontsize=7)
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3, axis="y")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


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
    series = {f"vs {p}": {s: times[s][p] / times[s]["elutriton"] for s in shapes if p in times[s]}
              for p in baselines}
    _bar_chart(path, shapes, series, "speedup of elutriton (baseline time / elutriton time)",
               f"MEASURED: {title}")


def plot_predicted(rows, path, title):
    """Predicted speedup over eager per shape and pipeline (bars), clearly labelled."""
    series = defaultdict(dict)
    for r in rows:
        series[r["pipeline"]][r["shape"]] = r["predicted_speedup_vs_eager"]
    shapes = list(dict.fromkeys(r["shape"] for r in rows))
    _bar_chart(path, shapes, dict(series), "PREDICTED speedup over eager (roofline)",
               f"PREDICTED, not measured: {title}", hatch="//", alpha=0.8)
