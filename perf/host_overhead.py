"""Host (CPU) time per call of elutriton's ops next to eager PyTorch.

    python -m perf.host_overhead          # CUDA GPU: perf/results/<gpu-name>/host_overhead.md
    python -m perf.host_overhead --cpu    # no GPU needed: perf/results/no-gpu/host_overhead_cpu.md

GPU mode: each callable runs back to back N times with one synchronize at the end, on layers
small enough that the GPU finishes each call before the next is launched: the time per call
is then the host's (validation, dispatch, kernel launch). Rows:
  - public op: ``elutriton.conv2d_bias_elu`` / ``elutriton.bias_elu`` as a user calls them;
  - custom op: the ``torch.library`` op called directly (``torch.ops.elutriton...``), the path
    ``torch.compile`` traces; the public op's eager path skips it (``ops/fused_op.py``);
  - launcher: a kernel plan's launch alone (``plan_*`` built once: after the first call the
    compiled kernel is launched directly, ``kernels/launch.py``);
  - eager: ``F.elu(F.conv2d(x, w, b))`` / ``F.elu(x + b)``.

CPU mode (MEASURED on this machine's CPU, as ratios: absolute times on a shared machine
drift, ratios taken in the same rounds do not): tiny CPU tensors, so the time is host time.
  1. the public call on the PyTorch fallback (no ``TRITON_INTERPRET``: what a CPU user runs)
     against eager PyTorch's composite on the same tensors, forward and forward+backward;
  2. the path a CUDA call takes up to the kernel launch: the same calls built with
     ``TRITON_INTERPRET=1`` (so validation, plans, allocations, the autograd Function and the
     Python backward are the GPU path's) with every kernel launch replaced by a no-op, against
     the same composite. (A CUDA launch itself adds ~3-4 us per kernel on top: Triton's
     compiled-kernel launcher; not measurable here.)
Each round times ours and the composite back to back (``CALLS`` calls each); the table gives
the median time per call and the median of the per-round ratios.
"""
import argparse
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

from perf.results_io import NO_GPU, device_dir, markdown_table

CALLS = 300
CPU_CALLS = 200
CPU_ROUNDS = 15
# Targets of the host-path issue (CPU, warm plan): ours / eager composite at most this.
CPU_TARGETS = {"conv2d fwd": 1.5, "linear fwd": 1.5, "bias_elu fwd": 2.0,
               "conv2d fwd+bwd": 1.3}


def per_call_us(fn, calls=CALLS):
    import torch
    fn()
    torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(calls):
        fn()
    torch.cuda.synchronize()
    return (time.perf_counter() - start) / calls * 1e6


GPU_COLUMNS = ("public op", "custom op", "launcher", "eager", "fused module", "unfused modules")


def cases(device="cuda"):
    """(name, {column: callable}) of the GPU table (``GPU_COLUMNS``; a case may lack some).
    The module columns time inference calls (no autograd) of a ``Conv2dELU`` (``LinearELU``)
    holding the case's tensors, whose memo repeats its warm call (``ops/call_memo.py``), and
    of ``nn.Conv2d`` (``nn.Linear``) then ``nn.ELU``."""
    import torch
    import torch.nn.functional as F

    import elutriton
    from elutriton.kernels.bias_elu import plan_bias_elu_forward
    from elutriton.kernels.conv2d import plan_conv2d_bias_elu

    half = dict(device=device, dtype=torch.float16)
    x = torch.randn(8, 64, 8, 8, **half).to(memory_format=torch.channels_last)
    w = (torch.randn(64, 64, 3, 3, **half) / 24).contiguous(memory_format=torch.channels_last)
    b = torch.randn(64, **half)
    y = torch.empty_like(x)
    conv = torch.nn.Conv2d(64, 64, 3, padding=1, **half)
    with torch.no_grad():
        conv.weight.copy_(w)
        conv.bias.copy_(b)
    conv = conv.to(memory_format=torch.channels_last)
    fused = elutriton.nn.Conv2dELU.from_modules(conv, torch.nn.ELU())
    unfused = torch.nn.Sequential(conv, torch.nn.ELU())
    yield "conv2d 3x3 8x64x8x8 fp16", {
        "public op": lambda: elutriton.conv2d_bias_elu(x, w, b, padding=1),
        "custom op": lambda: torch.ops.elutriton.conv2d_bias_elu(
            x, w, b, [1, 1], [1, 1], [1, 1], 1, 1.0, 1.0, 1.0),
        "launcher": lambda run=plan_conv2d_bias_elu(x, w, y, True, [1, 1], [1, 1], [1, 1], 1,
                                                       False, x.device): run(x, w, b, y, 1.0, 1.0,
                                                                             1.0),
        "eager": lambda: F.elu(F.conv2d(x, w, b, padding=1)),
        "fused module": lambda: _without_grad(fused, x),
        "unfused modules": lambda: _without_grad(unfused, x),
    }
    h = torch.randn(256, 256, **half)
    hb = torch.randn(256, **half)
    out = torch.empty_like(h)
    yield "bias+ELU 256x256 fp16", {
        "public op": lambda: elutriton.bias_elu(h, hb, dim=-1),
        "custom op": lambda: torch.ops.elutriton.bias_elu(h, hb, 1.0, 1.0, 1.0, 1),
        "launcher": lambda run=plan_bias_elu_forward(h.numel(), 256, 1, h.dtype, True):
            run(h, hb, out, 1.0, 1.0, 1.0),
        "eager": lambda: F.elu(h + hb),
    }
    # the standalone activation, which has nothing to fuse: against torch's own op it can
    # only match it (the same pass over memory), so its host time decides
    yield "ELU 256x256 fp16", {
        "public op": lambda: elutriton.elu(h),
        "custom op": lambda: torch.ops.elutriton.bias_elu(h, None, 1.0, 1.0, 1.0, 0),
        "launcher": lambda run=plan_bias_elu_forward(h.numel(), 1, h.numel(), h.dtype, False):
            run(h, None, out, 1.0, 1.0, 1.0),
        "eager": lambda: F.elu(h),
    }
    lw = torch.randn(256, 256, **half) / 16
    linear = torch.nn.Linear(256, 256, **half)
    with torch.no_grad():
        linear.weight.copy_(lw)
        linear.bias.copy_(hb)
    fused_linear = elutriton.nn.LinearELU.from_modules(linear, torch.nn.ELU())
    unfused_linear = torch.nn.Sequential(linear, torch.nn.ELU())
    yield "linear 256x256 -> 256 fp16", {
        "public op": lambda: elutriton.linear_bias_elu(h, lw, hb),
        "custom op": lambda: torch.ops.elutriton.linear_bias_elu(h, lw, hb, 1.0, 1.0, 1.0),
        "eager": lambda: F.elu(F.linear(h, lw, hb)),
        "fused module": lambda: _without_grad(fused_linear, h),
        "unfused modules": lambda: _without_grad(unfused_linear, h),
    }


def _without_grad(module, x):
    import torch
    with torch.no_grad():
        return module(x)


def gpu_main():
    import torch
    lines = ["# Host time per call (MEASURED)", "",
             f"{torch.cuda.get_device_name()}, torch {torch.__version__}; {CALLS} calls back to "
             "back, one synchronize; microseconds per call (see perf/host_overhead.py; the "
             "module columns: inference calls of a warm `Conv2dELU` (`LinearELU`) and of "
             "`nn.Conv2d` (`nn.Linear`) then `nn.ELU`).", "",
             "| case | " + " | ".join(GPU_COLUMNS) + " |", "|---" * (len(GPU_COLUMNS) + 1) + "|"]
    for name, fns in cases():
        us = {k: per_call_us(fn) for k, fn in fns.items()}
        lines.append(f"| {name} | " + " | ".join(f"{us[k]:.1f}" if k in us else "-"
                                                  for k in GPU_COLUMNS) + " |")
    text = "\n".join(lines) + "\n"
    out = device_dir(torch.cuda.get_device_name())
    out.mkdir(parents=True, exist_ok=True)
    (out / "host_overhead.md").write_text(text)
    print(text)


# ----------------------------------------------------------------------------------- CPU
def cpu_cases():
    """(name, ours, eager composite[, environment]) on tiny CPU tensors; fwd+bwd cases end in
    backward(); the environment (ELUTRITON_* variables) is set before the case's plans are
    made and stays set for later cases."""
    import torch
    import torch.nn.functional as F

    import elutriton

    def leaf(*shape):
        return torch.randn(*shape).requires_grad_()

    x, w, b = torch.randn(1, 4, 4, 4), torch.randn(4, 4, 3, 3) / 6, torch.randn(4)
    xg, wg, bg = leaf(1, 4, 4, 4), leaf(4, 4, 3, 3), leaf(4)
    h, lw, lb = torch.randn(4, 8), torch.randn(8, 8) / 3, torch.randn(8)
    hg, lwg, lbg = leaf(4, 8), leaf(8, 8), leaf(8)
    yield ("conv2d fwd", lambda: elutriton.conv2d_bias_elu(x, w, b, padding=1),
           lambda: F.elu(F.conv2d(x, w, b, padding=1)))
    yield ("conv2d fwd+bwd", lambda: elutriton.conv2d_bias_elu(xg, wg, bg, padding=1).sum().backward(),
           lambda: F.elu(F.conv2d(xg, wg, bg, padding=1)).sum().backward())
    yield ("linear fwd", lambda: elutriton.linear_bias_elu(h, lw, lb),
           lambda: F.elu(F.linear(h, lw, lb)))
    yield ("linear fwd+bwd", lambda: elutriton.linear_bias_elu(hg, lwg, lbg).sum().backward(),
           lambda: F.elu(F.linear(hg, lwg, lbg)).sum().backward())
    yield ("bias_elu fwd", lambda: elutriton.bias_elu(x, b),
           lambda: F.elu(x + b[:, None, None]))
    yield ("bias_elu fwd+bwd", lambda: elutriton.bias_elu(xg, bg).sum().backward(),
           lambda: F.elu(xg + bg[:, None, None]).sum().backward())
    yield ("elu fwd", lambda: elutriton.elu(x), lambda: F.elu(x))
    # the library path (cuDNN/cuBLAS, then the bias+ELU pass), which the rule takes for large
    # layers and NCHW ones: with autograd, eager calls run torch's composite there
    # (elutriton/ops/composite_path.py)
    library = {"ELUTRITON_PATH": "library", "ELUTRITON_BACKWARD": "cudnn"}
    yield ("library conv2d fwd+bwd",
           lambda: elutriton.conv2d_bias_elu(xg, wg, bg, padding=1).sum().backward(),
           lambda: F.elu(F.conv2d(xg, wg, bg, padding=1)).sum().backward(), library)
    yield from model_cases(library)


MODEL_CASES = [  # (model, task, dtype, batch): perf/models.py's tiny models
    ("elu_cifar", "train", "fp32", 1), ("elu_cifar", "infer", "fp32", 1),
    ("elu_cifar", "infer", "bf16", 1), ("resnet50_elu", "infer", "fp32", 1),
    ("selu_mlp", "train", "fp32", 8), ("selu_mlp", "train", "bf16", 8),
    ("selu_mlp", "infer", "bf16", 8)]


def model_cases(env):
    """Training steps and inference calls of the tiny bench models (perf/models.py; bf16:
    under CPU autocast), fused against unfused, with ``env`` set while their plans are
    made."""
    import torch

    from perf import models
    for name, task, dtype, batch in MODEL_CASES:
        base, _, make_batch, image = models.build(name, tiny=True)
        x, target = make_batch(batch, "cpu")
        if image:
            x = x.contiguous(memory_format=torch.channels_last)
        steps = [models.make_step(*models.prepare(base, mode, task, image), task, dtype, x,
                                  target, "cpu") for mode in ("fused eager", "unfused eager")]
        yield (f"model {name} {task} {dtype}, library path", *steps, env)


def _time(fn, calls):
    start = time.perf_counter()
    for _ in range(calls):
        fn()
    return (time.perf_counter() - start) / calls * 1e6


def measure_ratios(calls=CPU_CALLS, rounds=CPU_ROUNDS):
    """{case: (ours us, eager us, median ratio)}; rounds interleave ours and eager."""
    import torch
    torch.set_num_threads(1)
    from elutriton import clear_plans
    results = {}
    for name, ours, eager, *env in cpu_cases():
        os.environ.update(*env)  # read when plans are made: in the warm-up calls below
        clear_plans()
        for fn in (ours, eager):  # warm: plans built, allocator primed
            for _ in range(20):
                fn()
        t_ours, t_eager, ratios = [], [], []
        for _ in range(rounds):
            a, e = _time(ours, calls), _time(eager, calls)
            t_ours.append(a)
            t_eager.append(e)
            ratios.append(a / e)
        results[name] = (statistics.median(t_ours), statistics.median(t_eager),
                         statistics.median(ratios))
    return results


def stub_launches():
    """Replace every kernel launch by a no-op (host-path measurements; perf/saved_memory.py,
    which needs the shapes of what is saved, not the kernels' work)."""
    from elutriton.kernels import launch
    launch.FixedLaunch.__call__ = lambda self, *args: None


def _child(mode, calls, rounds):
    """Run in a fresh interpreter (TRITON_INTERPRET is read at import); print rows."""
    if mode == "launch-path":
        stub_launches()
    for name, (ours, eager, ratio) in measure_ratios(calls, rounds).items():
        print(f"ROW\t{name}\t{ours:.2f}\t{eager:.2f}\t{ratio:.3f}")


def _run_child(mode, calls, rounds):
    env = dict(os.environ, TRITON_INTERPRET="1" if mode == "launch-path" else "0")
    out = subprocess.run([sys.executable, "-m", "perf.host_overhead", "--child", mode,
                          "--calls", str(calls), "--rounds", str(rounds)],
                         env=env, capture_output=True, text=True, check=True,
                         cwd=Path(__file__).resolve().parents[1])
    rows = {}
    for line in out.stdout.splitlines():
        if line.startswith("ROW\t"):
            _, name, ours, eager, ratio = line.split("\t")
            rows[name] = (float(ours), float(eager), float(ratio))
    return rows


def cpu_table(fallback, launch_path, calls=CPU_CALLS, rounds=CPU_ROUNDS):
    """The markdown report: ratios first (what the targets are about), then times."""
    lines = [
        "# Host time per call on CPU (MEASURED, this machine's CPU)", "",
        "Tiny CPU tensors (conv 1x4x4x4 with a 4x4x3x3 filter, linear 4x8 -> 8, bias+ELU "
        "1x4x4x4), one thread; each round runs ours and the eager PyTorch composite "
        f"(`F.elu(F.conv2d(...))`, `F.elu(F.linear(...))`, `F.elu(x + b)`) {calls} times "
        f"each, {rounds} rounds; median us per call and median per-round ratio "
        "(ours / eager; lower is better). fwd+bwd ends in `.sum().backward()`. Regenerate "
        "with `python -m perf.host_overhead --cpu` (part of `make bench`). Rows marked "
        "library path force it (`ELUTRITON_PATH=library`, cuDNN backward); the model rows time "
        "a training step (SGD) or an inference call of perf/models.py's tiny ELU-CIFAR "
        "network and ResNet-50-ELU (batch 1, channels_last; inference folds ResNet's "
        "BatchNorms into the fused layers) and SELU MLP (batch 8), fp32 or under CPU autocast "
        "to bf16, fused against unfused.", "",
        "- **fallback**: the public call on the PyTorch fallback (CPU without "
        "`TRITON_INTERPRET`), what a CPU user runs; a warm launch plan.",
        "- **to the launch**: the GPU path's host work (validation/plan lookup, output "
        "allocation, layout decisions, the autograd Function and its Python backward) built "
        "under the interpreter with each kernel launch replaced by a no-op; the eager "
        "composite does its (tiny) CPU math. A CUDA launch adds ~3-4 us per kernel (not "
        "measurable here).", "",
        "| case | fallback ratio | target | met | to the launch ratio | fallback us (ours / "
        "eager) | to the launch us (ours / eager) |",
        "|---|---|---|---|---|---|---|"]
    for name in fallback:
        f_ours, f_eager, f_ratio = fallback[name]
        l_ours, l_eager, l_ratio = launch_path.get(name, (float("nan"),) * 3)
        target = CPU_TARGETS.get(name)
        met = "" if target is None else ("yes" if f_ratio <= target else "no")
        lines.append(f"| {name} | {f_ratio:.2f}x | {'' if target is None else f'<= {target}x'}"
                     f" | {met} | {l_ratio:.2f}x | {f_ours:.1f} / {f_eager:.1f} | "
                     f"{l_ours:.1f} / {l_eager:.1f} |")
    return "\n".join(lines) + "\n"


# A new table replaces the file only when some ratio moved by more than this (relative):
# below it the difference is this machine's noise, and rewriting would dirty the checkout.
NOISE = 0.10


def _ratios(text):
    """{(case, column): ratio} of a table written by ``cpu_table``."""
    ratios = {}
    for row in markdown_table(text):
        fallback, launch = row.get("fallback ratio", ""), row.get("to the launch ratio", "")
        if fallback.endswith("x") and launch.endswith("x"):
            ratios[(row["case"], "fallback")] = float(fallback[:-1])
            ratios[(row["case"], "launch")] = float(launch[:-1])
    return ratios


def cpu_main(calls, rounds, out_path):
    fallback = _run_child("fallback", calls, rounds)
    launch_path = _run_child("launch-path", calls, rounds)
    text = cpu_table(fallback, launch_path, calls, rounds)
    print(text)
    if out_path.is_file() and not changed_beyond_noise(out_path.read_text(), text):
        print(f"{out_path}: every ratio within {NOISE:.0%} of the file's; left unchanged")
    else:
        out_path.parent.mkdir(parents=True, exist_ok=True)
        out_path.write_text(text)
    return fallback, launch_path


def changed_beyond_noise(old_text, new_text):
    """True when the tables differ in their cases or some ratio moved by more than NOISE."""
    old, new = _ratios(old_text), _ratios(new_text)
    return old.keys() != new.keys() or any(abs(new[k] / old[k] - 1) > NOISE for k in new)


def main(argv=None):
    parser = argparse.ArgumentParser(
        description="Host time per call of elutriton's ops against eager PyTorch.")
    parser.add_argument("--cpu", action="store_true",
                        help="measure on CPU (no GPU needed): the PyTorch fallback and the GPU "
                             "path up to the launch, as ratios to eager PyTorch (default: GPU)")
    parser.add_argument("--calls", type=int, default=CPU_CALLS,
                        help=f"--cpu: calls per timing (default {CPU_CALLS})")
    parser.add_argument("--rounds", type=int, default=CPU_ROUNDS,
                        help=f"--cpu: interleaved rounds, the median is reported "
                             f"(default {CPU_ROUNDS})")
    parser.add_argument("--out", type=Path, default=NO_GPU / "host_overhead_cpu.md",
                        help="--cpu: where the table goes (default %(default)s)")
    parser.add_argument("--child", choices=["fallback", "launch-path"], help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        return _child(args.child, args.calls, args.rounds)
    if args.cpu:
        return cpu_main(args.calls, args.rounds, args.out)
    import torch
    if not torch.cuda.is_available():
        sys.exit("perf.host_overhead needs a CUDA GPU (or --cpu)")
    return gpu_main()


if __name__ == "__main__":
    main()
