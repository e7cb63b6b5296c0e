"""Random sequences of changes to a fused layer and calls of it, against float64 torch.

A ``Conv2dELU``/``LinearELU`` memoes its calls (``ops/call_memo.py``) and its public op caches
launch plans (``plan.py``): each cache must miss when what it decided from changes. The other
tests change one thing at a time; here each case draws a layer, a path, then sixteen steps,
each either a call (often the last call's kind again, which the memo serves: input size and
layout, grad mode, which inputs need gradients) or a change (activation parameters, the
weight written in place or replaced, a conv's in the other layout, the bias removed or
replaced, the weight frozen or unfrozen, stride, padding, dilation, ``clear_plans()``,
``ELUTRITON_BACKWARD``), and compares every call's result, and where the derivative is
continuous its gradients, with float64 torch on the layer's current state. A failure names
the case's number, which reproduces its draws (``history``: the steps so far).
"""
import random

import pytest
import torch
import torch.nn.functional as F

import elutriton
from tests.fallback import force_pytorch_fallback
from tests.reference import DEVICE, GEMM_TOLERANCES, assert_close, assert_grad_close

N_SEQUENCES = 60
STEPS = 16
PARAMS = [(1.0, 1.0, 1.0), (0.5, 2.0, 0.7), (1.6732632423543772, 1.0507009873554805, 1.0),
          (-0.3, 1.0, 1.0)]


def _change(r, layer, conv, monkeypatch):
    """Apply one random change to ``layer``; returns its name."""
    # (a replaced weight twice as often: its layout is what a memoed kernel call reads most)
    changes = ["params", "weight_data", "weight_param", "weight_param", "bias", "freeze",
               "clear", "backward"]
    change = r.choice(changes + (["stride", "padding", "dilation"] if conv else []))
    if change == "params":
        layer.alpha, layer.scale, layer.input_scale = r.choice(PARAMS)
    elif change == "weight_data":
        with torch.no_grad():
            layer.weight.copy_(torch.randn_like(layer.weight))
    elif change == "weight_param":  # (a conv weight in the other layout: NCHW <-> NHWC)
        weight = torch.randn_like(layer.weight, memory_format=torch.contiguous_format)
        if conv and layer.weight.is_contiguous():
            weight = weight.contiguous(memory_format=torch.channels_last)
        layer.weight = torch.nn.Parameter(weight, requires_grad=layer.weight.requires_grad)
    elif change == "bias":
        keep = layer.bias is None or r.random() < 0.5
        layer.bias = (torch.nn.Parameter(torch.randn(layer.weight.shape[0], device=DEVICE))
                      if keep else None)
    elif change == "freeze":
        layer.weight.requires_grad_(not layer.weight.requires_grad)
    elif change == "clear":
        elutriton.clear_plans()
    elif change == "backward":
        monkeypatch.setenv("ELUTRITON_BACKWARD", r.choice(["triton", "cudnn", "auto"]))
    elif change == "stride":
        layer.stride = r.choice([(1, 1), (2, 2), (1, 2)])
    elif change == "padding":
        layer.padding = r.choice([(0, 0), (1, 1), (2, 1)])
    else:
        layer.dilation = r.choice([(1, 1), (2, 1), (2, 2)])
    return change


def _reference(layer, conv, x):
    """float64 leaves (x, weight, bias) and the layer's result on them."""
    leaves = [None if t is None else t.detach().double().requires_grad_()
              for t in (x, layer.weight, layer.bias)]
    z = (F.conv2d(*leaves, layer.stride, layer.padding, layer.dilation, layer.groups) if conv
         else F.linear(*leaves))
    return leaves, torch.ops.aten.elu(z, layer.alpha, layer.scale, layer.input_scale)


@pytest.mark.parametrize("case", range(N_SEQUENCES))
def test_random_layer_sequence(case, monkeypatch):
    r = random.Random(f"sequence{case}")
    torch.manual_seed(r.randrange(2**31))
    monkeypatch.setenv("ELUTRITON_PATH", r.choice(["fused", "library", "auto"]))
    monkeypatch.setenv("ELUTRITON_BACKWARD", r.choice(["triton", "cudnn", "auto"]))
    if r.random() < 0.25:
        force_pytorch_fallback(monkeypatch)
    conv = r.random() < 0.6
    if conv:
        channels, out_channels, groups = r.choice([(4, 6, 1), (4, 4, 2), (3, 3, 3)])
        layer = elutriton.nn.Conv2dELU(channels, out_channels, r.choice([1, 2, 3, (3, 2)]),
                                       groups=groups, device=DEVICE)
    else:
        layer = elutriton.nn.LinearELU(5, 7, device=DEVICE)
    history, call = [], None
    for _ in range(STEPS):
        if r.random() < 0.4:
            history.append(_change(r, layer, conv, monkeypatch))
            continue
        if call is None or r.random() < 0.4:  # else the last call's kind again: a memo hit
            if conv:
                shape = (r.choice([1, 2, 3]), layer.in_channels, r.choice([6, 7]),
                         r.choice([5, 8]))
            else:
                shape = (*r.choice([(3,), (2, 3), ()]), 5)
            call = (shape, conv and r.random() < 0.5, r.random() < 0.5, r.random() < 0.7)
        shape, channels_last, x_grad, grad_mode = call
        x = torch.randn(shape, device=DEVICE)
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        x.requires_grad_(x_grad)
        history.append(f"call {call}")
        with torch.set_grad_enabled(grad_mode):
            y = layer(x)
        leaves, ref = _reference(layer, conv, x)
        assert_close(y, ref, tolerances=GEMM_TOLERANCES)
        wanted = [i for i, t in enumerate((x, layer.weight, layer.bias))
                  if t is not None and t.requires_grad]
        if (not grad_mode or not wanted or not torch.isfinite(ref).all()
                or layer.alpha * layer.input_scale != 1.0):
            continue  # (where alpha * input_scale != 1 the derivative jumps at 0: a
            # pre-activation summed in another order may land on the other side)
        grad_y = torch.randn_like(y)
        tensors = (x, layer.weight, layer.bias)
        got = torch.autograd.grad(y, [tensors[i] for i in wanted], grad_y)
        want = torch.autograd.grad(ref, [leaves[i] for i in wanted], grad_y.double())
        for g, w in zip(got, want):
            assert_grad_close(g, w, torch.float32, 64)
