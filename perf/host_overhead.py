"""Host (CPU) time per call of elutriton's ops next to eager PyTorch, on a CUDA GPU.

    python -m perf.host_overhead      # writes perf/results/<gpu-name>/host_overhead.md

Each callable runs back to back N times with one synchronize at the end, on layers small
enough that the GPU finishes each call before the next is launched: the time per call is
then the host's (validation, dispatch, kernel launch). Rows:
  - public op: ``elutriton.conv2d_bias_elu`` / ``elutriton.bias_elu`` as a user calls them;
  - custom op: the ``torch.library`` op called directly (``torch.ops.elutriton...``), the path
    ``torch.compile`` traces; the public op's eager path skips it (``ops/fused_op.py``);
  - launcher: the Triton launch alone (``launch_*``), no validation, no dispatcher;
  - eager: ``F.elu(F.conv2d(x, w, b))`` / ``F.elu(x + b)``.
"""
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

RESULTS = Path(__file__).resolve().parent / "results"
CALLS = 300


def per_call_us(fn, calls=CALLS):
    fn()
    torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(calls):
        fn()
    torch.cuda.synchronize()
    return (time.perf_counter() - start) / calls * 1e6


def cases():
    import elutriton
    from elutriton.kernels.bias_elu import launch_bias_elu_forward
    from elutriton.kernels.conv2d import launch_conv2d_bias_elu

    half = dict(device="cuda", dtype=torch.float16)
    x = torch.randn(8, 64, 8, 8, **half).to(memory_format=torch.channels_last)
    w = (torch.randn(64, 64, 3, 3, **half) / 24).contiguous(memory_format=torch.channels_last)
    b = torch.randn(64, **half)
    y = torch.empty_like(x)
    yield "conv2d 3x3 8x64x8x8 fp16", {
        "public op": lambda: elutriton.conv2d_bias_elu(x, w, b, padding=1),
        "custom op": lambda: torch.ops.elutriton.conv2d_bias_elu(
            x, w, b, [1, 1], [1, 1], [1, 1], 1, 1.0, 1.0, 1.0),
        "launcher": lambda: launch_conv2d_bias_elu(x, w, b, y, [1, 1], [1, 1], [1, 1], 1,
                                                   1.0, 1.0, 1.0, False),
        "eager": lambda: F.elu(F.conv2d(x, w, b, padding=1)),
    }
    h = torch.randn(256, 256, **half)
    hb = torch.randn(256, **half)
    out = torch.empty_like(h)
    yield "bias+ELU 256x256 fp16", {
        "public op": lambda: elutriton.bias_elu(h, hb, dim=-1),
        "custom op": lambda: torch.ops.elutriton.bias_elu(h, hb, 1.0, 1.0, 1.0, 1),
        "launcher": lambda: launch_bias_elu_forward(h, hb, out, 256, 1, 1.0, 1.0, 1.0),
        "eager": lambda: F.elu(h + hb),
    }


def main():
    if not torch.cuda.is_available():
        sys.exit("perf.host_overhead needs a CUDA GPU")
    lines = ["# Host time per call (MEASURED)", "",
             f"{torch.cuda.get_device_name()}, torch {torch.__version__}; {CALLS} calls back to "
             "back, one synchronize; microseconds per call (see perf/host_overhead.py).", "",
             "| case | public op | custom op | launcher | eager |", "|---|---|---|---|---|"]
    for name, fns in cases():
        us = {k: per_call_us(fn) for k, fn in fns.items()}
        lines.append(f"| {name} | " + " | ".join(f"{us[k]:.1f}" for k in
                                                  ("public op", "custom op", "launcher", "eager"))
                     + " |")
    text = "\n".join(lines) + "\n"
    out = RESULTS / torch.cuda.get_device_name().replace(" ", "_")
    out.mkdir(parents=True, exist_ok=True)
    (out / "host_overhead.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
