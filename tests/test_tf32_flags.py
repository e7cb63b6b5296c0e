"""torch's TF32 flags set through its per-op API (torch >= 2.9): ``torch.backends.cudnn.conv
.fp32_precision``, ``torch.backends.fp32_precision`` and friends.

Where those leave the flags that share a legacy flag different (cuDNN's conv and RNN), torch's
legacy getter (``torch.backends.cudnn.allow_tf32``) raises, while torch's own convolution reads
the conv precision and runs. elutriton read the legacy getter, so after
``torch.backends.cudnn.conv.fp32_precision = "ieee"`` every conv call raised. The flags are
global state, so each sequence of settings runs in a fresh interpreter (nothing to restore).
"""
import json
import os
import subprocess
import sys

import pytest
import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# Runs in a child process: applies each setting in turn (they accumulate, as in a user's
# script) and reports, per setting, what elutriton read, what torch's per-op precision says,
# whether the kernel was planned with that flag, and the largest error of the fp32 conv and
# linear calls against torch's own result under the same flags.
SCRIPT = r"""
import json, os, sys, torch, torch.nn.functional as F
import elutriton
from elutriton import plan
from elutriton.kernels import conv2d as conv_kernels

device = "cuda" if torch.cuda.is_available() else "cpu"
seen = []
real = conv_kernels.dot_precision
conv_kernels.dot_precision = lambda dtype, allow: seen.append(allow) or real(dtype, allow)
precision = torch._C._get_fp32_precision_getter

def legacy(getter):
    try:
        return getter()
    except RuntimeError:
        return "raises"

torch.manual_seed(0)
x = torch.randn(2, 5, 7, 6, device=device)
w = torch.randn(6, 5, 3, 3, device=device) / 7
b = torch.randn(6, device=device)
h = torch.randn(3, 9, device=device)
lw = torch.randn(4, 9, device=device) / 3
lb = torch.randn(4, device=device)
rows = []
for statement in json.loads(sys.argv[1]):
    exec(statement)
    del seen[:]
    elutriton.clear_plans()  # plan afresh (the flags' part in the key: test_plan.py)
    y = elutriton.conv2d_bias_elu(x, w, b, padding=1)
    z = elutriton.linear_bias_elu(h, lw, lb)
    rows.append(dict(
        statement=statement,
        ours=[plan.cudnn_allow_tf32(), plan.matmul_allow_tf32()],
        torch=[precision("cuda", "conv") == "tf32", precision("cuda", "matmul") == "tf32"],
        legacy=[legacy(torch._C._get_cudnn_allow_tf32), legacy(torch._C._get_cublas_allow_tf32)],
        planned=list(seen),
        conv_error=(y - F.elu(F.conv2d(x, w, b, padding=1))).abs().max().item(),
        linear_error=(z - F.elu(F.linear(h, lw, lb))).abs().max().item()))
print(json.dumps(rows))
"""

# Each sequence starts from torch's defaults in a fresh process.
SEQUENCES = {
    "conv ieee (new API)": ['torch.backends.cudnn.conv.fp32_precision = "ieee"'],
    "rnn ieee, conv tf32": ['torch.backends.cudnn.conv.fp32_precision = "tf32"',
                            'torch.backends.cudnn.rnn.fp32_precision = "ieee"'],
    "legacy off, then generic tf32": ["torch.backends.cudnn.allow_tf32 = False",
                                      'torch.backends.fp32_precision = "tf32"'],
    "matmul tf32 (new API), then legacy": ['torch.backends.cuda.matmul.fp32_precision = "tf32"',
                                           "torch.backends.cuda.matmul.allow_tf32 = False",
                                           "torch.backends.cudnn.allow_tf32 = True"],
}


def run_sequence(statements):
    env = dict(os.environ, ELUTRITON_PATH="fused",
               PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    done = subprocess.run([sys.executable, "-c", SCRIPT, json.dumps(statements)], env=env,
                          cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.mark.skipif(not hasattr(torch._C, "_get_fp32_precision_getter"),
                    reason="this torch has no per-op fp32 precision API")
@pytest.mark.parametrize("name", sorted(SEQUENCES))
def test_tf32_flags_set_per_op(name):
    rows = run_sequence(SEQUENCES[name])
    assert len(rows) == len(SEQUENCES[name])
    kernels = os.environ.get("TRITON_INTERPRET") == "1" or torch.cuda.is_available()
    for row in rows:
        # what torch's convolution and matmul follow (their op's resolved precision)
        assert row["ours"] == row["torch"], row
        # where the legacy getter answers, it agrees (so reading it first is sound)
        for legacy, expected in zip(row["legacy"], row["torch"]):
            assert legacy in ("raises", expected), row
        if kernels:  # the fused kernels were planned with those flags (conv, then linear)
            assert row["planned"] == row["torch"], row
        # TF32 on a GPU rounds the products to 10 mantissa bits; outputs are O(1)
        tolerance = 1e-2 if any(row["torch"]) and torch.cuda.is_available() else 2e-5
        assert row["conv_error"] <= tolerance and row["linear_error"] <= tolerance, row
    # the state that broke every conv call: the legacy getter raises there
    if name == "conv ieee (new API)":
        assert rows[0]["legacy"][0] == "raises" and rows[0]["ours"][0] is False
