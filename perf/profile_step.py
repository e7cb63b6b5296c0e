"""Profile whole-model steps of perf/models.py with torch.profiler: where a mode's host and
GPU time go (for the eager rows where fused and unfused differ).

    python -m perf.profile_step --model elu_cifar --task train --dtype fp16 \\
        --modes "unfused eager" "fused eager" [--steps 5] [--out DIR]

Prints, per mode: the step's wall time, the host time the profiler attributes to each op
(self CPU, top rows), the GPU time per kernel (top rows), and the calls that block the host
on the GPU (synchronize, device-to-host copies); writes the same tables to --out.
"""
import argparse
import sys
import time
from pathlib import Path

import torch

from perf import models

BLOCKING = ("cudaStreamSynchronize", "cudaDeviceSynchronize", "cudaEventSynchronize",
            "cudaMemcpy", "aten::item", "aten::_local_scalar_dense")


def profile(name, task, dtype, mode, steps, device, python=False):
    base, batch, make_batch, image = models.build(name, tiny=device != "cuda")
    base = base.to(device)
    x, target = make_batch(batch, device)
    if image:
        x = x.contiguous(memory_format=torch.channels_last)
    model, runner = models.prepare(base, mode, task, image)
    step = models.make_step(model, runner, task, dtype, x, target, device)
    for _ in range(5):
        step()
    if device == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(steps):
        step()
    if device == "cuda":
        torch.cuda.synchronize()
    wall_ms = (time.perf_counter() - start) / steps * 1e3
    if python:
        import cProfile
        import io
        import pstats
        profiler = cProfile.Profile()
        profiler.enable()
        for _ in range(steps):
            step()
        if device == "cuda":
            torch.cuda.synchronize()
        profiler.disable()
        text = io.StringIO()
        pstats.Stats(profiler, stream=text).sort_stats("tottime").print_stats(30)
        return (f"## {name} {task} {dtype} {mode}: {wall_ms:.3f} ms per step (unprofiled); "
                f"Python profile of {steps} steps\n\n{text.getvalue()}")
    activities = [torch.profiler.ProfilerActivity.CPU]
    if device == "cuda":
        activities.append(torch.profiler.ProfilerActivity.CUDA)
    with torch.profiler.profile(activities=activities) as prof:
        for _ in range(steps):
            step()
        if device == "cuda":
            torch.cuda.synchronize()
    events = prof.key_averages()
    lines = [f"## {name} {task} {dtype} {mode}: {wall_ms:.3f} ms per step (unprofiled)", ""]
    lines.append(events.table(sort_by="self_cpu_time_total", row_limit=25, max_name_column_width=60))
    if device == "cuda":
        lines.append(events.table(sort_by="self_cuda_time_total", row_limit=15,
                                  max_name_column_width=60))
    blocking = [e for e in events if any(b in e.key for b in BLOCKING)]
    lines.append("blocking calls per step: " + (", ".join(
        f"{e.key} x{e.count / steps:g}" for e in blocking) or "none"))
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="elu_cifar",
                        choices=["elu_cifar", "selu_mlp", "resnet50_elu"])
    parser.add_argument("--task", default="train", choices=["train", "infer"])
    parser.add_argument("--dtype", default="fp16", choices=list(models.DTYPES))
    parser.add_argument("--modes", nargs="*", default=["unfused eager", "fused eager"],
                        choices=models.MODES + models.CL_MODES)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--python", action="store_true",
                        help="cProfile the Python code instead (host time per function)")
    parser.add_argument("--out", type=Path, default=None, help="also write the report here")
    args = parser.parse_args(argv)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    report = "\n\n".join(profile(args.model, args.task, args.dtype, mode, args.steps, device,
                                 args.python) for mode in args.modes)
    print(report)
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        kind = "python" if args.python else "torch"
        (args.out / f"profile_{kind}_{args.model}_{args.task}_{args.dtype}.txt").write_text(report)
    return report


if __name__ == "__main__":
    sys.exit(main() and 0)
