"""Interpreter correctness pass for `make bench` without a GPU: the real Triton kernels on a
few small shapes of each op, against float64 PyTorch. Run in its own process because
TRITON_INTERPRET must be set before triton is imported."""
import os
import sys

os.environ["TRITON_INTERPRET"] = "1"

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

import elutriton  # noqa: E402

TOLERANCE = {torch.float32: 1e-4, torch.float16: 2e-2}


def main():
    failures = 0
    torch.manual_seed(0)
    for dtype in (torch.float32, torch.float16):
        x = torch.randn(8, 16, 9, 11).to(dtype).to(memory_format=torch.channels_last)
        w = (torch.randn(24, 16, 3, 3) / 12).to(dtype)
        b = torch.randn(24).to(dtype)
        rows, lw = x.flatten(0, 2), w.flatten(1)[:, :11]  # [792, 11] @ [24, 11]^T
        checks = {
            "bias_elu": (elutriton.bias_elu(x, b[:16]),
                         F.elu(x.double() + b[:16].double().view(1, -1, 1, 1))),
            "conv2d_bias_elu": (elutriton.conv2d_bias_elu(x, w, b, padding=1),
                                F.elu(F.conv2d(x.double(), w.double(), b.double(), padding=1))),
            "linear_bias_elu": (elutriton.linear_bias_elu(rows, lw, b),
                                F.elu(F.linear(rows.double(), lw.double(), b.double()))),
        }
        for name, (got, want) in checks.items():
            err = (got.double() - want).abs().max().item()
            ok = err <= TOLERANCE[dtype] * max(1.0, want.abs().max().item())
            failures += not ok
            print(f"  {name:16s} {str(dtype):14s} max abs error {err:.2e} {'ok' if ok else 'FAIL'}")
    return failures


if __name__ == "__main__":
    sys.exit(1 if main() else 0)
