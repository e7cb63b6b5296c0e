"""The open issues' performance targets, checked against one GPU's measured results.

    python -m perf.targets perf/results/NVIDIA_H100_80GB_HBM3     # -> <that folder>/targets.md
    python -m perf.targets                  # this machine's GPU's folder (part of `make bench`)

Reads the folder's ``measured.csv`` (layer bench, ``perf/bench.py``), ``models.csv``
(``perf/models.py``) and ``host_overhead.md`` (``perf/host_overhead.py``) and writes one row
per target: what was measured, and "met", "not met" or "unmeasured" (with what is missing).
Layer targets use the CUDA-graph timer (GPU time alone). Nothing here is predicted: a target
without its rows is unmeasured, never estimated.
"""
import argparse
import math
import statistics
from pathlib import Path

from perf.results_io import (BACKWARD_CUDNN, BACKWARD_TRITON, NCHW_DIRECT, markdown_table,
                              read_measured)

GRAPH = "do_bench_cudagraph"
OURS = "elutriton"
MET, NOT_MET, UNMEASURED = "met", "not met", "unmeasured"
LAYER_DTYPES = ("fp16", "bf16", "fp32")  # fp32 with TF32 on, as cuDNN's default
NOISE = 0.02  # a forced-path comparison within this is a tie (perf.tune's PATH_MARGIN)


def _ratios(rows, baseline, **where):
    """{(op, shape, dtype, layout, direction): baseline ms / elutriton ms} of graph-timer rows
    matching ``where``."""
    times = {}
    for r in rows:
        if r["method"] != GRAPH or any(r[k] != v for k, v in where.items()):
            continue
        if r["dtype"] == "fp32" and r["tf32"] != "on":
            continue
        key = (r["op"], r["shape"], r["dtype"], r["layout"], r["direction"])
        times.setdefault(key, {})[r["provider"]] = r["median_ms"]
    return {key: t[baseline] / t[OURS] for key, t in times.items()
            if OURS in t and baseline in t and t[OURS]}


def _eager_groups(rows):
    """{(op, dtype, layout, direction): [ratios to eager]} of the EXPECTED_GROUPS measured."""
    groups = {}
    for (op, _, dtype, layout, direction), ratio in _ratios(rows, "eager").items():
        groups.setdefault((op, dtype, layout, direction), []).append(ratio)
    return {g: v for g, v in groups.items() if g in EXPECTED_GROUPS}


# (op, dtype, layout, direction) groups the layer targets cover
EXPECTED_GROUPS = tuple(
    group for direction in ("fwd", "fwd+bwd") for dtype in LAYER_DTYPES
    for group in [("conv", dtype, "channels_last", direction), ("conv", dtype, "nchw", direction),
                  ("linear", dtype, "-", direction)])


def _name(group):
    op, dtype, layout, direction = group
    return f"{op} {dtype}{'' if layout == '-' else ' ' + layout} {direction}"


def every_layer_vs_eager(rows, models):
    return _group_target(rows, lambda values: min(values) >= 1.0,
                         lambda values: f"min {min(values):.2f}x")


def median_vs_eager(rows, models):
    return _group_target(rows, lambda values: statistics.median(values) >= 1.3,
                         lambda values: f"median {statistics.median(values):.2f}x")


def _group_target(rows, ok, describe):
    """(measured text, status) over the expected groups' ratios to eager: not met as soon as
    a measured group fails ``ok``; met only when every expected group was measured."""
    groups = _eager_groups(rows)
    failing = [g for g in EXPECTED_GROUPS if g in groups and not ok(groups[g])]
    missing = [g for g in EXPECTED_GROUPS if g not in groups]
    cells = "; ".join(f"{_name(g)} {describe(groups[g])} ({len(groups[g])} layers)"
                      for g in EXPECTED_GROUPS if g in groups)
    text = cells or "no rows"
    if missing:
        text += f"; not measured: {', '.join(_name(g) for g in missing)}"
    if failing:
        return text, NOT_MET + f" ({len(failing)} of {len(groups)} measured groups)"
    return text, UNMEASURED if missing else MET


def conv_alone(rows, models):
    ratios = _ratios(rows, "cudnn conv only", op="conv", dtype="fp16", layout="channels_last",
                     direction="fwd")
    if not ratios:
        return "no rows", UNMEASURED
    wins = sum(r >= 1.0 for r in ratios.values())
    return (f"{wins} of {len(ratios)} layers >= 1.0x (min {min(ratios.values()):.2f}x)",
            MET if wins >= 14 else NOT_MET)


def cudnn_graph(rows, models):
    ratios = _ratios(rows, "cudnn fused graph", op="conv", direction="fwd")
    if not ratios:
        return "no rows (the cuDNN frontend was not installed where it ran)", UNMEASURED
    median = statistics.median(ratios.values())
    return (f"median {median:.2f}x over {len(ratios)} layer cases",
            MET if median >= 1.0 else NOT_MET)


def max_autotune_cifar(rows, models):
    ratios = {k: v for k, v in _ratios(rows, "compile:max-autotune", op="conv").items()
              if k[1].startswith("cifar")}
    if not ratios:
        return "no rows", UNMEASURED
    return (f"min {min(ratios.values()):.2f}x over {len(ratios)} ELU-CIFAR layer cases",
            MET if min(ratios.values()) >= 1.0 else NOT_MET)


STEM = "cifar_s1_1_192x5"


def stem_fwd_bwd(rows, models):
    cells, statuses = [], []
    for direction in ("fwd+bwd", "fwd+bwd_params"):
        ratios = _ratios(rows, "eager", shape=STEM, dtype="fp16", layout="channels_last",
                         direction=direction)
        if not ratios:
            cells.append(f"{direction}: no rows")
            statuses.append(UNMEASURED)
            continue
        ratio = next(iter(ratios.values()))
        cells.append(f"{direction} {ratio:.2f}x")
        statuses.append(MET if ratio >= 3.0 else NOT_MET)
    return "; ".join(cells), _combine(statuses)


def cifar_summed(rows, models):
    from perf.shapes import SHAPE_SETS
    names = [s.name for s in SHAPE_SETS["elu_cifar"]]
    times = {}
    for r in rows:
        if (r["method"] == GRAPH and r["shape"] in names and r["dtype"] == "fp16"
                and r["layout"] == "channels_last" and r["direction"] == "fwd+bwd"):
            times.setdefault(r["provider"], {})[r["shape"]] = r["median_ms"]
    ours, eager = times.get(OURS, {}), times.get("eager", {})
    measured = [n for n in names if n in ours and n in eager]
    if len(measured) < len(names):
        return f"{len(measured)} of {len(names)} layers measured", UNMEASURED
    ratio = sum(eager[n] for n in names) / sum(ours[n] for n in names)
    return (f"{sum(ours[n] for n in names):.3f} ms vs eager {sum(eager[n] for n in names):.3f} "
            f"ms: {ratio:.2f}x", MET if ratio >= 1.5 else NOT_MET)


def backward_vs_cudnn(rows, models):
    """The op's own backward against the forced cuDNN one. Where the op chose cuDNN it runs
    the forced provider's kernels, so their ratio is two timings of the same work (seen 0.94x
    and 0.98x on the H100); the choice is read off the rows as the forced backward whose time
    is nearer the op's (both forced providers are measured in the same runs)."""
    cudnn, triton = {}, {}
    for direction in ("fwd+bwd", "fwd+bwd_params"):
        cudnn.update(_ratios(rows, BACKWARD_CUDNN, op="conv", direction=direction))
        triton.update(_ratios(rows, BACKWARD_TRITON, op="conv", direction=direction))
    if not cudnn:
        return "no rows (provider 'elutriton, cuDNN backward')", UNMEASURED
    # without the forced Triton row the choice is unknown: counted as Triton's (strict)
    ran_triton = [k for k in cudnn
                  if k not in triton or abs(math.log(triton[k])) < abs(math.log(cudnn[k]))]
    slower = [k for k in ran_triton if cudnn[k] < 1.0 - NOISE]
    return (f"min {min(cudnn.values()):.2f}x of the cuDNN backward over {len(cudnn)} cases; "
            f"{len(cudnn) - len(ran_triton)} ran cuDNN's backward (the same kernels); of the "
            f"{len(ran_triton)} that ran Triton's, {len(slower)} slower by more than "
            f"{NOISE:.0%}" + (f" (min {min(cudnn[k] for k in ran_triton):.2f}x)"
                             if ran_triton else ""),
            NOT_MET if slower else MET)


def _model_rows(models, model, task, dtype="fp16"):
    """{mode: row} of a model's rows in the bench's default layout (the targets' setting;
    ``--layouts nchw`` rows answer another question: perf/models.py)."""
    from perf.models import default_layout
    return {r["mode"]: r for r in models if (r["model"], r["layout"], r["task"], r["dtype"])
            == (model, default_layout(model), task, dtype)}


def cifar_train_eager(models_rows, target=1.3):
    rows = _model_rows(models_rows, "elu_cifar", "train")
    if "fused eager" not in rows or "unfused eager" not in rows:
        return "no rows", UNMEASURED
    ratio = rows["fused eager"]["samples_per_s"] / rows["unfused eager"]["samples_per_s"]
    return f"{ratio:.2f}x", MET if ratio >= target else NOT_MET


def cifar_graphs_vs_max_autotune(models_rows):
    rows = _model_rows(models_rows, "elu_cifar", "train")
    if "fused cudagraphs" not in rows or "unfused max-autotune" not in rows:
        return "no 'fused cudagraphs' and 'unfused max-autotune' rows", UNMEASURED
    ratio = (rows["fused cudagraphs"]["samples_per_s"]
             / rows["unfused max-autotune"]["samples_per_s"])
    return f"{ratio:.2f}x", MET if ratio > 1.0 else NOT_MET


def cifar_memory(models_rows):
    rows = _model_rows(models_rows, "elu_cifar", "train")
    fused, unfused = rows.get("fused eager"), rows.get("unfused eager")
    if not fused or not unfused or fused["peak_mb"] is None or unfused["peak_mb"] is None:
        return "no rows", UNMEASURED
    ratio = fused["peak_mb"] / unfused["peak_mb"]
    return (f"{fused['peak_mb']:.0f} vs {unfused['peak_mb']:.0f} MB: {ratio:.2f}x",
            MET if ratio <= 0.85 else NOT_MET)


def every_mode(models_rows, model, tasks, target=1.1):
    cells, statuses = [], []
    for task in tasks:
        rows = _model_rows(models_rows, model, task)
        for mode in sorted(rows):
            if not mode.startswith("fused "):
                continue
            unfused = rows.get("unfused " + mode[len("fused "):])
            if unfused is None:
                continue
            ratio = rows[mode]["samples_per_s"] / unfused["samples_per_s"]
            cells.append(f"{task} {mode[len('fused '):]} {ratio:.2f}x")
            statuses.append(MET if ratio >= target else NOT_MET)
    if not cells:
        return "no rows", UNMEASURED
    return "; ".join(cells), _combine(statuses)


def channels_last_default(models_rows):
    """Issue 11's question, not a threshold: on NCHW models as written (``perf.models
    --layouts nchw``), does ``fuse(channels_last=True)`` ("fused-cl") beat plain ``fuse``? Met
    once measured; the text gives the ratio per row and the answer."""
    rows = {(r["model"], r["task"], r["dtype"], r["mode"]): r for r in models_rows
            if r["layout"] == "nchw"}
    cells, ratios = [], []
    for (model, task, dtype, mode), row in sorted(rows.items()):
        if not mode.startswith("fused-cl "):
            continue
        plain = rows.get((model, task, dtype, "fused " + mode[len("fused-cl "):]))
        if plain is None:
            continue
        ratio = row["samples_per_s"] / plain["samples_per_s"]
        ratios.append(ratio)
        cells.append(f"{model} {task} {dtype} {mode[len('fused-cl '):]} {ratio:.2f}x")
    if not cells:
        return "no NCHW rows with fused-cl and fused modes (perf.models --layouts nchw)", UNMEASURED
    answer = ("channels_last wins everywhere: make it the CUDA default" if min(ratios) > 1.0
              else "channels_last loses somewhere: keep it optional")
    return f"fused-cl / fused: {'; '.join(cells)} ({answer})", MET


def nchw_conversion(rows, models):
    """Issue 10's NCHW question, not a threshold: the op on NCHW inputs (its per-shape choice:
    the library path, or the fused kernel after converting x to channels_last) against the
    fused kernel reading NCHW directly (provider NCHW_DIRECT). Met once measured; the text
    says on how many layers reading directly would be faster (beyond the noise)."""
    cells, faster = [], []
    for dtype in LAYER_DTYPES:
        ratios = _ratios(rows, NCHW_DIRECT, op="conv", dtype=dtype, layout="nchw",
                         direction="fwd")
        if not ratios:
            continue
        wins = sorted(key[1] for key, r in ratios.items() if r < 1.0 - NOISE)
        faster += wins
        cells.append(f"{dtype}: the op {min(ratios.values()):.2f}-{max(ratios.values()):.2f}x "
                     f"the direct kernel's speed over {len(ratios)} layers, direct faster on "
                     f"{len(wins)}")
    if not cells:
        return f"no NCHW forward rows with provider '{NCHW_DIRECT}'", UNMEASURED
    answer = (f"reading NCHW directly would gain on {', '.join(faster)}" if faster
              else "converting (or the library path) is never slower: keep it")
    return "; ".join(cells) + f" ({answer})", MET


def _combine(statuses):
    if NOT_MET in statuses:
        return NOT_MET
    return UNMEASURED if UNMEASURED in statuses else MET


# (issue, target, check(measured rows, model rows) -> (measured text, status))
TARGETS = [
    (10, "every conv/linear layer >= 1.0x eager PyTorch (fp16/bf16/TF32, channels_last and "
         "NCHW, fwd and fwd+bwd)", every_layer_vs_eager),
    (10, "median layer >= 1.3x eager, per group", median_vs_eager),
    (10, ">= 1.0x cuDNN's convolution alone on >= 14 of 18 fp16 channels_last layers (fwd)",
     conv_alone),
    (10, "ahead of cuDNN's fused conv+bias+ELU graph on the median layer", cudnn_graph),
    (10, "ahead of torch.compile max-autotune on the ELU-CIFAR layers", max_autotune_cifar),
    (14, "ELU-CIFAR first layer fwd+bwd >= 3x eager, with and without input gradient",
     stem_fwd_bwd),
    (14, "ELU-CIFAR summed conv fwd+bwd >= 1.5x eager (fp16 channels_last)", cifar_summed),
    (14, "no layer's backward slower than cuDNN's", backward_vs_cudnn),
    (11, "ELU-CIFAR train step, fp16: fused eager >= 1.3x unfused eager",
     lambda rows, models: cifar_train_eager(models)),
    (11, "ELU-CIFAR train step: fused with CUDA graphs ahead of max-autotune of the unfused "
         "model", lambda rows, models: cifar_graphs_vs_max_autotune(models)),
    (11, "ELU-CIFAR train peak memory <= 0.85x unfused (eager)",
     lambda rows, models: cifar_memory(models)),
    (11, "SELU MLP fused >= 1.1x unfused in every mode (train and infer)",
     lambda rows, models: every_mode(models, "selu_mlp", ("train", "infer"))),
    (11, "ResNet-50-ELU inference fused >= 1.1x unfused in every mode",
     lambda rows, models: every_mode(models, "resnet50_elu", ("infer",))),
    (11, "measured: should fuse convert NCHW models to channels_last on CUDA?",
     lambda rows, models: channels_last_default(models)),
    (10, "measured: NCHW inputs, is the op's conversion pass (or library path) faster than the "
         "fused kernel reading NCHW directly?", nchw_conversion),
]


def read_host_table(path):
    """[{column: cell}] of the table in a ``host_overhead.md`` (``perf/host_overhead.py``'s GPU
    mode), cells as written; none if there is no file."""
    return markdown_table(path.read_text()) if path.is_file() else []


def module_host_time(host_rows):
    """The rule "never pay" in eager mode, for the host: a warm fused layer's inference call
    (``Conv2dELU``, ``LinearELU``: their memo of their calls) against ``nn.Conv2d`` (or
    ``nn.Linear``) then ``nn.ELU``, host time per call on the GPU machine (every row with the
    module columns of ``host_overhead.md``; met where each row is)."""
    cells, ratios = [], []
    for row in host_rows:
        fused, unfused = row.get("fused module", "-"), row.get("unfused modules", "-")
        if fused in ("-", "") or unfused in ("-", ""):
            continue
        ratios.append(float(unfused) / float(fused))
        cells.append(f"{row['case']}: {fused} vs {unfused} us ({ratios[-1]:.2f}x)")
    if not cells:
        return ("no module columns in host_overhead.md (perf.host_overhead on a GPU)",
                UNMEASURED)
    return "; ".join(cells), MET if min(ratios) >= 1.0 else NOT_MET


# (issue, target, check(host_overhead.md rows) -> (measured text, status))
HOST_TARGETS = [
    (10, "eager host time per call: a warm fused conv or linear layer (inference) <= "
         "nn.Conv2d or nn.Linear then nn.ELU", module_host_time),
]


def evaluate(folder):
    """[(issue, target, measured text, status)] for a results folder."""
    from perf.models import read_rows
    rows = read_measured(folder / "measured.csv")
    models = read_rows(folder / "models.csv")
    host = read_host_table(folder / "host_overhead.md")
    return ([(issue, text, *check(rows, models)) for issue, text, check in TARGETS]
            + [(issue, text, *check(host)) for issue, text, check in HOST_TARGETS])


def markdown(results, folder):
    lines = [f"# Targets of the open issues against `{folder.name}`", "",
             "Checked by `python -m perf.targets` from this folder's `measured.csv` (CUDA-graph "
             "timer), `models.csv` and `host_overhead.md`; a target without rows is "
             "unmeasured, never estimated.",
             "", "| issue | target | measured | status |", "|---|---|---|---|"]
    lines += [f"| {issue} | {text} | {measured} | {status} |"
              for issue, text, measured, status in results]
    return "\n".join(lines) + "\n"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("folder", type=Path, nargs="?",
                        help="a GPU results folder (default: this machine's GPU's, "
                             "perf/results/<gpu-name>)")
    args = parser.parse_args(argv)
    if args.folder is None:
        import torch

        from perf.results_io import device_dir
        if not torch.cuda.is_available():
            print("perf.targets: no GPU here, so nothing was measured on this machine; pass a "
                  "results folder (e.g. perf/results/NVIDIA_H100_80GB_HBM3) to check its rows")
            return None
        args.folder = device_dir(torch.cuda.get_device_name())
    results = evaluate(args.folder)
    text = markdown(results, args.folder)
    (args.folder / "targets.md").write_text(text)
    print(text)
    return results


if __name__ == "__main__":
    main()
