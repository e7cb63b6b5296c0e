"""Whole-model benchmarks: what a training step and an inference call gain from elutriton.

    python -m perf.models                  # CUDA GPU: perf/results/<gpu>/models.{csv,md,png}
    python -m perf.models --tiny           # any machine: tiny models, every code path

Models (defined once elsewhere and imported): the ELU paper's CIFAR-100 network
(``examples/elu_cifar.py``, batch 128, 32x32 RGB), a SELU self-normalizing MLP
(``examples/selu_mlp.py``, 8 layers of 2048, batch 1024) and ResNet-50 with ELU
(``perf/resnet_elu.py``, batch 64, 224x224). Tasks: ``train`` (forward, backward, SGD step)
and ``infer`` (eval mode, no grad: BatchNorm folds). Modes: the unfused model and the fused one
(``elutriton.fuse``) in eager mode, under ``torch.compile`` (default), under CUDA graphs
(``torch.compile(mode="reduce-overhead")``), and the unfused model under max-autotune.
Layouts (``--layouts``): the image models run channels_last (model and input; the default) or
NCHW as written, where the "fused-cl" modes measure ``fuse(model, channels_last=True)``.
Each row: samples/s from the median step time (20%/80% quantiles too), and on a GPU the peak
memory (``torch.cuda.max_memory_allocated``). Without a GPU the numbers are CPU wall-clock
times of the code paths, labelled as such, not GPU predictions.
"""
import argparse
import copy
import csv
import gc
import importlib.util
import json
import math
import statistics
import sys
import time
from pathlib import Path

import torch
from torch import nn

from perf.results_io import NO_GPU, device_dir, environment

ROOT = Path(__file__).resolve().parents[1]
MODES = ("unfused eager", "fused eager", "unfused compile", "fused compile",
         "unfused max-autotune", "unfused cudagraphs", "fused cudagraphs")
# fuse(model, channels_last=True): for an NCHW model, what converting its weights gives
# (``--layouts nchw``); on a channels_last model the same as "fused"
CL_MODES = ("fused-cl eager", "fused-cl cudagraphs")
# the image models' layouts: channels_last model and input (the default), or NCHW ones as a
# model is written; the MLP's rows say "-"
LAYOUTS = ("channels_last", "nchw")
IMAGE_MODELS = ("elu_cifar", "resnet50_elu")
COMPILE_MODES = {"compile": None, "max-autotune": "max-autotune",
                 "cudagraphs": "reduce-overhead"}
DTYPES = {"fp32": None, "fp16": torch.float16, "bf16": torch.bfloat16}


def example_module(name):
    """A module of examples/ (the models are defined there once)."""
    spec = importlib.util.spec_from_file_location(f"elutriton_example_{name}",
                                                  ROOT / "examples" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def build(name, tiny):
    """(model, batch size, make_batch(batch, device) -> (x, target), is_image)."""
    if name == "elu_cifar":
        example = example_module("elu_cifar")
        model = example.EluCifarNet(0.05 if tiny else 1.0)
        return model, 4 if tiny else 128, _images(32, example.NUM_CLASSES), True
    if name == "selu_mlp":
        width, depth = (16, 2) if tiny else (2048, 8)
        model = example_module("selu_mlp").selu_mlp(width=width, depth=depth)
        return model, 8 if tiny else 1024, _vectors(784, 10), False
    if name == "resnet50_elu":
        from perf.resnet_elu import ResNet50ELU
        model = (ResNet50ELU(width=1 / 16, blocks=(1, 1, 1, 1), num_classes=10) if tiny
                 else ResNet50ELU())
        return model, 2 if tiny else 64, _images(32 if tiny else 224, 10 if tiny else 1000), True
    raise ValueError(name)


def _images(size, classes):
    def make(batch, device):
        return (torch.randn(batch, 3, size, size, device=device),
                torch.randint(0, classes, (batch,), device=device))
    return make


def _vectors(features, classes):
    def make(batch, device):
        return (torch.randn(batch, features, device=device),
                torch.randint(0, classes, (batch,), device=device))
    return make


def prepare(model, mode, task, channels_last):
    """The model a mode runs (a fused copy for 'fused ...', with its 4-D weights converted to
    channels_last by fuse for 'fused-cl ...'; compiled where the mode says)."""
    import elutriton
    model = copy.deepcopy(model)
    model.train(task == "train")
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    if mode.startswith("fused"):
        model, _ = elutriton.fuse(model, inplace=True, channels_last=mode.startswith("fused-cl"))
    compile_mode = mode.split(" ", 1)[1]
    if compile_mode != "eager":
        return model, torch.compile(model, mode=COMPILE_MODES[compile_mode])
    return model, model


def make_step(model, runner, task, dtype, x, target, device):
    """One training step or inference call, under autocast for fp16/bf16."""
    autocast = torch.autocast(device, dtype=DTYPES[dtype], enabled=DTYPES[dtype] is not None)
    if task == "infer":
        def infer():
            with torch.no_grad(), autocast:
                return runner(x)
        return infer
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)

    def train():
        with autocast:
            loss = nn.functional.cross_entropy(runner(x).float(), target)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        return loss
    return train


def time_step(step, device, steps, warmup=3):
    """(median, q20, q80, median host) seconds per step. Host: from the step's start to its
    return, before the synchronize: the host's own work (Python, dispatch, launches), as long
    as the GPU's queue does not fill. Close to the step time: a host-bound step."""
    for _ in range(warmup):
        step()
    times, host = [], []
    for _ in range(steps):
        if device == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        step()
        host.append(time.perf_counter() - start)
        if device == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    times.sort()
    return (statistics.median(times), times[int(0.2 * (len(times) - 1))],
            times[int(0.8 * (len(times) - 1))], statistics.median(host))


def release_memory(device):
    """Free what earlier rows left (unreachable objects, compiled code and its CUDA-graph
    memory pools, the allocator's cache) and start a new peak-memory count."""
    gc.collect()
    torch._dynamo.reset()
    if device == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()


def run(models, tasks, dtypes, modes, tiny, steps, device, on_row=None, deadline_s=None,
        layouts=("channels_last",)):
    """Time every (model, layout, task, dtype, mode); ``on_row(rows)`` after each row; after
    the first row, no new row is started once ``deadline_s`` seconds have passed. ``layouts``
    apply to the image models (the MLP runs once, layout "-")."""
    rows = []
    start = time.perf_counter()
    for name, layout in [(name, layout) for name in models
                         for layout in (layouts if name in IMAGE_MODELS else ("-",))]:
        base, batch, make_batch, image = build(name, tiny)
        base = base.to(device)
        x, target = make_batch(batch, device)
        channels_last = image and layout == "channels_last"
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        for task in tasks:
            for dtype in dtypes:
                for mode in modes:
                    if (rows and deadline_s is not None
                            and time.perf_counter() - start > deadline_s):
                        print(f"deadline: {name} {layout} {task} {dtype} {mode} and later "
                              "rows skipped", file=sys.stderr)
                        return rows
                    # the previous row's model, optimizer state and compiled graphs are freed
                    # first: else they count in this row's peak (the SELU MLP's fp32 weights
                    # and momentum buffers, ~240 MiB, did in the first H100 run)
                    model = runner = step = None
                    release_memory(device)
                    model, runner = prepare(base, mode, task, channels_last)
                    step = make_step(model, runner, task, dtype, x, target, device)
                    median, q20, q80, host = time_step(step, device, steps)
                    rows.append(dict(
                        model=name, layout=layout, task=task, dtype=dtype, mode=mode,
                        batch=batch,
                        samples_per_s=batch / median, median_ms=median * 1e3,
                        q20_ms=q20 * 1e3, q80_ms=q80 * 1e3, host_ms=host * 1e3,
                        peak_mb=(torch.cuda.max_memory_allocated() / 2**20
                                 if device == "cuda" else None),
                        timer="cuda sync + wall clock" if device == "cuda" else "CPU wall clock"))
                    print(f"{name} {layout} {task} {dtype} {mode}: {batch / median:.1f} "
                          "samples/s", file=sys.stderr)
                    if on_row is not None:
                        on_row(rows)
    return rows


ROW_KEY = ("model", "layout", "task", "dtype", "mode")


def default_layout(model):
    """The layout of a row measured before rows had one: the bench ran the image models
    channels_last."""
    return "channels_last" if model in IMAGE_MODELS else "-"


def baseline_key(row):
    """The row's unfused eager baseline: same model, layout, task and dtype."""
    return row["model"], row["layout"], row["task"], row["dtype"]


def read_rows(path):
    """The rows of a models CSV (none if there is no file), numbers parsed (an empty or
    "None" cell is None)."""
    if not path.is_file():
        return []
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    for r in rows:
        r["batch"] = int(r["batch"])
        r["layout"] = r.get("layout") or default_layout(r["model"])
        for field in ("samples_per_s", "median_ms", "q20_ms", "q80_ms", "host_ms", "peak_mb"):
            # (host_ms: rows measured before it existed have none)
            r[field] = float(r[field]) if r.get(field) not in ("", "None", None) else None
    return rows


def merge_rows(path, rows):
    """The rows of the CSV at ``path`` (if any) with ``rows`` replacing those of the same
    (model, layout, task, dtype, mode): separate runs (a lease's calls) add up to one table."""
    new_keys = {tuple(r[k] for k in ROW_KEY) for r in rows}
    return [r for r in read_rows(path)
            if tuple(r[k] for k in ROW_KEY) not in new_keys] + list(rows)


def fused_meta_model(name, tiny=False, train=False):
    """(the fused model on the meta device, an input batch there) at the model's benchmark
    batch size: shapes only, no memory, no GPU. ``train``: the model in training mode (eval
    mode folds BatchNorms into the convs, which fuses more layers)."""
    import elutriton
    base, batch, make_batch, _ = build(name, tiny)
    fused, _ = elutriton.fuse(base.train(train), inplace=True)
    return fused.to(device="meta"), make_batch(batch, "meta")[0]


def fused_layer_calls(name, tiny, train, dtype=None):
    """[(layer, input shape, output shape)] of every fused conv/linear + ELU layer (Conv2dELU,
    LinearELU) in one forward of the fused model at its benchmark batch size, in call order
    (``fused_meta_model``)."""
    from elutriton.nn.layers import Conv2dELU, LinearELU
    fused, x = fused_meta_model(name, tiny, train)
    element = (DTYPES[dtype] if dtype else None) or torch.float32
    fused = fused.to(element)
    calls = []
    hooks = [m.register_forward_hook(
        lambda module, inputs, output: calls.append((module, inputs[0].shape, output.shape)))
        for m in fused.modules() if isinstance(m, (Conv2dELU, LinearELU))]
    with torch.no_grad():
        fused(x.to(element))
    for hook in hooks:
        hook.remove()
    return calls


def formula_saving_mib(name, tiny, dtype):
    """The README's activation-memory formula for one training step of a model: each fused
    conv/linear + ELU layer keeps one output-sized tensor less than the unfused pair (autograd
    keeps y, never z). Summed over the fused layers' outputs at the model's batch size."""
    element = DTYPES[dtype] or torch.float32
    return sum(math.prod(out) * element.itemsize
               for _, _, out in fused_layer_calls(name, tiny, True, dtype)) / 2**20


def memory_lines(rows, tiny):
    """Markdown lines: measured peak-memory saving of fused training (unfused peak minus fused
    peak, eager and CUDA graphs) against ``formula_saving_mib``."""
    peaks = {baseline_key(r) + (r["mode"],): r["peak_mb"] for r in rows
             if r["peak_mb"] is not None}
    lines = []
    for model, layout, task, dtype, mode in sorted(peaks):
        if task != "train" or not mode.startswith("fused"):
            continue
        fused, compile_mode = mode.split(" ", 1)
        unfused = peaks.get((model, layout, task, dtype, f"unfused {compile_mode}"))
        if unfused is None:
            continue
        formula = formula_saving_mib(model, tiny, dtype)
        label = compile_mode + (", channels_last weights" if fused == "fused-cl" else "")
        saving = unfused - peaks[(model, layout, task, dtype, mode)]
        lines.append(f"| {model} | {layout} | {dtype} | {label} | {saving:.1f} | "
                     f"{formula:.1f} |")
    if not lines:
        return []
    return ["", "Activation memory of a training step: measured peak saving (unfused peak minus "
            "fused peak, MiB) against the README's formula (one output-sized tensor per fused "
            "layer, summed over the fused layers at this batch size; PREDICTED).", "",
            "| model | layout | dtype | mode | measured saving MiB | formula MiB |",
            "|---|---|---|---|---|---|"] + lines


def summary(rows, device_name, tiny):
    lines = [f"# Whole-model benchmark ({'MEASURED on ' + device_name if device_name else 'CPU'})",
             "",
             "Samples per second from the median step (train: forward, backward, SGD step; "
             "infer: eval mode, no grad) and the ratio to the unfused eager model of the same "
             "row; host ms: the median time until the step returned, before synchronizing "
             "(the host's own work; near the step's time: host-bound); peak memory where a GPU "
             "measured it. Layout: the image models' (channels_last model and input, or NCHW as "
             "written; \"fused-cl\" modes convert the weights with `fuse(channels_last=True)`). "
             "`python -m perf.models`" +
             (" --tiny: tiny models on CPU, the code paths, NOT GPU numbers." if tiny else "."),
             "", "| model | layout | task | dtype | mode | samples/s | x unfused eager | "
             "step ms | host ms | peak MB |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    eager = {baseline_key(r): r["samples_per_s"] for r in rows if r["mode"] == "unfused eager"}
    for r in rows:
        base = eager.get(baseline_key(r))
        ratio = f"{r['samples_per_s'] / base:.2f}" if base else ""
        peak = f"{r['peak_mb']:.0f}" if r["peak_mb"] is not None else ""
        host = f"{r['host_ms']:.2f}" if r.get("host_ms") is not None else ""
        lines.append(f"| {r['model']} | {r['layout']} | {r['task']} | {r['dtype']} | "
                     f"{r['mode']} | {r['samples_per_s']:.1f} | {ratio} | "
                     f"{r['median_ms']:.2f} | {host} | {peak} |")
    lines += memory_lines(rows, tiny)
    return "\n".join(lines) + "\n"


def case_label(row):
    """The plot's label of a row's case: model, task, dtype, and the layout unless it is the
    bench's default."""
    layout = "" if row["layout"] in ("channels_last", "-") else f" {row['layout']}"
    return f"{row['model']}{layout} {row['task']} {row['dtype']}"


def write(rows, out_dir, device_name, tiny):
    from perf.plots import bar_chart
    out_dir.mkdir(parents=True, exist_ok=True)
    stem = "models_tiny_cpu" if tiny else "models"
    rows = merge_rows(out_dir / f"{stem}.csv", rows)
    # every column of every row (rows of an older run may lack the newer ones)
    fields = list(dict.fromkeys([*ROW_KEY, *(k for r in rows for k in r)]))
    with open(out_dir / f"{stem}.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=fields)
        writer.writeheader()
        writer.writerows(rows)
    (out_dir / f"{stem}.md").write_text(summary(rows, device_name, tiny))
    eager = {baseline_key(r): r["samples_per_s"] for r in rows if r["mode"] == "unfused eager"}
    cases = list(dict.fromkeys(case_label(r) for r in rows))
    series = {}
    for r in rows:
        base = eager.get(baseline_key(r))
        if base and r["mode"] != "unfused eager":
            series.setdefault(r["mode"], {})[case_label(r)] = r["samples_per_s"] / base
    label = f"MEASURED on {device_name}" if device_name else "CPU code-path run, NOT GPU numbers"
    bar_chart(out_dir / f"{stem}.png", cases, series,
               "samples/s over the unfused eager model", f"{label}: whole models",
               "Above the line at 1: faster than running the unfused model eagerly. train: "
               "forward, backward and an SGD step; infer: eval mode, no grad, BatchNorm folded "
               "by fuse. perf/models.py.", xlabel="model, task, dtype")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--models", nargs="*", default=["elu_cifar", "selu_mlp", "resnet50_elu"],
                        choices=["elu_cifar", "selu_mlp", "resnet50_elu"], help="models to run")
    parser.add_argument("--tasks", nargs="*", default=["train", "infer"],
                        choices=["train", "infer"], help="training step and/or inference")
    parser.add_argument("--dtypes", nargs="*", default=["fp16", "bf16", "fp32"],
                        choices=list(DTYPES), help="fp16/bf16 under autocast, or fp32")
    parser.add_argument("--modes", nargs="*", default=list(MODES), choices=MODES + CL_MODES,
                        help="how each model runs (fused-cl: fuse with channels_last=True)")
    parser.add_argument("--layouts", nargs="*", default=["channels_last"], choices=LAYOUTS,
                        help="the image models' layout: channels_last model and input, or NCHW "
                             "as written (the MLP runs once)")
    parser.add_argument("--tiny", action="store_true",
                        help="tiny models and batches (any machine; exercises the code paths)")
    parser.add_argument("--steps", type=int, default=20, help="timed steps per row")
    parser.add_argument("--out", type=Path, default=None,
                        help="results folder (default: perf/results/<gpu> or perf/results/no-gpu)")
    parser.add_argument("--replot", type=Path, default=None, metavar="RESULTS_DIR",
                        help="measure nothing: rewrite models.md/png from models.csv there "
                             "(the device name from its environment.json)")
    parser.add_argument("--deadline-s", type=float, default=None,
                        help="start no new row after this many seconds (rows so far are kept: "
                             "the files are rewritten after every row)")
    args = parser.parse_args(argv)
    if args.replot is not None:
        env = args.replot / "environment.json"
        name = json.loads(env.read_text())["gpu"] if env.is_file() else None
        write([], args.replot, name, args.tiny)
        return merge_rows(args.replot / f"{'models_tiny_cpu' if args.tiny else 'models'}.csv", [])
    device = "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cpu" and not args.tiny:
        # make bench on a machine without a GPU: the code paths at tiny size, written as
        # models_tiny_cpu.* and labelled CPU (git ignores them: wall-clock noise every run)
        print("perf.models: no CUDA GPU, running --tiny on CPU (code paths, NOT GPU numbers)")
        args.tiny = True
    name = environment(device)["gpu"] if device == "cuda" else None
    out = args.out or (device_dir(name) if name else NO_GPU)
    rows = run(args.models, args.tasks, args.dtypes, args.modes, args.tiny, args.steps, device,
               on_row=lambda rows: write(rows, out, name, args.tiny),
               deadline_s=args.deadline_s, layouts=args.layouts)
    print(f"model results -> {out}")
    return rows


if __name__ == "__main__":
    main()
