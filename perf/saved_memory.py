"""Activation memory of a training step, measured exactly without a GPU: the bytes autograd
keeps for backward during the forward pass of each whole model (perf/models.py), unfused and
fused, against the README's per-layer formula (``models.formula_saving_mib``).

    python -m perf.saved_memory [--models ...] [--tiny]   # perf/results/no-gpu/saved_memory.md

Every tensor saved for backward passes through ``torch.autograd.graph.saved_tensors_hooks``
(torch's own autograd nodes and elutriton's ``save_for_backward`` alike); the table sums their
distinct storages. The forward runs the GPU code path (``TRITON_INTERPRET=1``: the same plans,
layouts, autocast casts and autograd as on a CUDA device) on CPU tensors at the models' real
sizes, with every Triton launch replaced by a no-op, since only the shapes of what is saved
matter here (cuDNN-path convolutions still compute on the CPU). Autocast runs in bfloat16, whose
elements are as large as float16's. This is what fusing saves in the autograd graph, not a
GPU's peak memory, which also holds weights, gradients, optimizer state and allocator slack.
"""
import argparse
import os
import subprocess
import sys
from pathlib import Path

from perf.results_io import NO_GPU

MODELS = ("elu_cifar", "selu_mlp", "resnet50_elu")


def saved_bytes(model, x, dtype):
    """Bytes of the distinct storages autograd saves during ``model(x)`` under autocast."""
    import torch
    storages = {}

    def pack(tensor):
        storage = tensor.untyped_storage()
        storages[storage.data_ptr()] = storage.nbytes()
        return tensor
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        with torch.autocast("cpu", dtype=dtype):
            model(x)
    return sum(storages.values())


def measure(name, tiny):
    """(unfused MiB, fused MiB, formula saving MiB) for one model's training forward."""
    import torch

    from perf import models
    base, batch, make_batch, image = models.build(name, tiny)
    x, _ = make_batch(batch, "cpu")
    if image:
        x = x.contiguous(memory_format=torch.channels_last)
    mib = {}
    for mode in ("unfused eager", "fused eager"):
        model, runner = models.prepare(base, mode, "train", image)
        mib[mode] = saved_bytes(runner, x, torch.bfloat16) / 2**20
    return mib["unfused eager"], mib["fused eager"], models.formula_saving_mib(name, tiny, "bf16")


def _child(names, tiny):
    from perf.host_overhead import stub_launches
    stub_launches()  # shapes only: no kernel work
    for name in names:
        unfused, fused, formula = measure(name, tiny)
        print(f"ROW\t{name}\t{unfused:.3f}\t{fused:.3f}\t{formula:.3f}")


def run_rows(names, tiny):
    """{model: (unfused MiB, fused MiB, formula MiB)}, measured in a fresh interpreter
    (TRITON_INTERPRET is read at import)."""
    env = dict(os.environ, TRITON_INTERPRET="1")
    command = [sys.executable, "-m", "perf.saved_memory", "--child", "--models", *names]
    out = subprocess.run(command + (["--tiny"] if tiny else []), env=env, capture_output=True,
                         text=True, check=True, cwd=Path(__file__).resolve().parents[1])
    rows = {}
    for line in out.stdout.splitlines():
        if line.startswith("ROW\t"):
            _, name, *values = line.split("\t")
            rows[name] = tuple(float(v) for v in values)
    return rows


def table(rows, tiny):
    lines = ["# Activation memory saved by fusing (MEASURED on CPU: bytes autograd keeps)", "",
             "One training forward per model at " + ("tiny test sizes" if tiny else
                                                     "the benchmark's sizes (perf/models.py)")
             + ", bfloat16 autocast, channels_last images; MiB of distinct storages saved "
             "for backward (`saved_tensors_hooks`), unfused and fused, and the README's "
             "per-layer formula for the saving (PREDICTED). Regenerate with "
             "`python -m perf.saved_memory`.", "",
             "| model | unfused MiB | fused MiB | measured saving MiB | formula saving MiB |",
             "|---|---|---|---|---|"]
    for name, (unfused, fused, formula) in rows.items():
        lines.append(f"| {name} | {unfused:.1f} | {fused:.1f} | {unfused - fused:.1f} | "
                     f"{formula:.1f} |")
    return "\n".join(lines) + "\n"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", nargs="*", default=list(MODELS), choices=MODELS)
    parser.add_argument("--tiny", action="store_true", help="tiny models (tests)")
    parser.add_argument("--out", type=Path, default=NO_GPU / "saved_memory.md")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        return _child(args.models, args.tiny)
    rows = run_rows(args.models, args.tiny)
    text = table(rows, args.tiny)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text)
    print(text)
    return rows


if __name__ == "__main__":
    main()
