"""Random cases against float64 torch: convolutions, linear layers, bias+ELU and ELU.

The other test files pick their cases by hand; here each case is drawn at random (shapes with
odd and size-1 dimensions, every argument form, layouts, strides, dtypes, ELU parameters,
0 / -0.0 / NaN / inf inputs, the per-shape path or the PyTorch fallback, which inputs need
gradients) from a generator seeded by the case's number, so a failure names a case that
reproduces. Forward
results, dtypes and gradients are compared with float64 torch on contiguous copies of the same
rounded inputs (docs/torch_defects.md: torch's own CPU convolution backward is wrong for some
strided inputs; a run of these draws found that).

16-bit gradients are compared only for parameters whose derivative is continuous at 0
(alpha * input_scale == 1): elsewhere a 16-bit pre-activation rounded to the other side of 0
moves the gradient by the jump, which is not an error of the op.
"""
import math
import random

import pytest
import torch
import torch.nn.functional as F

import elutriton
from tests.fallback import force_pytorch_fallback
from tests.reference import (DEVICE, ELU_PARAMS, GEMM_TOLERANCES, assert_close,
                             assert_grad_close, ref_bias_elu, ref_bias_elu_grads)

N_CONV, N_LINEAR, N_POINTWISE = 160, 80, 120
SPECIALS = [float("nan"), float("inf"), -0.0, -float("inf")]
DTYPES_16 = (torch.float16, torch.bfloat16)


def _path(monkeypatch, path):
    """Run on ``path`` of the per-shape choice, as conftest's gemm_path fixture does."""
    monkeypatch.setenv("ELUTRITON_PATH", "fused" if path == "fused" else "library")
    if path == "library":  # as under CUDA-graph capture: no eager composite
        monkeypatch.setattr("elutriton.ops.composite_path.capturing", lambda device: True)


def _fallback(monkeypatch):
    """Run on the PyTorch fallback (a device without the kernels: torch's composite with the
    arguments the call's plan resolved, ``reference.fixed_conv2d_bias_elu`` and
    ``fixed_linear_bias_elu``); returns the path's name."""
    force_pytorch_fallback(monkeypatch)
    return "fallback"


def _with_specials(x, r):
    """``x`` (float64) with NaN, inf, -0.0 and -inf written at random places, or as it is."""
    if r.random() < 0.7 or x.numel() == 0:
        return x
    x = x.clone()
    flat = x.view(-1)
    for value in SPECIALS[:min(4, flat.numel())]:
        flat[r.randrange(flat.numel())] = value
    return x


def _layout(x, r):
    """``x`` contiguous, channels_last (4-D), sliced along its last dimension, or transposed
    storage of its last two dimensions."""
    kind = r.choice(["contiguous", "channels_last", "sliced", "transposed"])
    if kind == "channels_last" and x.dim() == 4:
        return x.contiguous(memory_format=torch.channels_last)
    if kind == "sliced":
        return torch.cat([x, x], dim=-1)[..., ::2]
    if kind == "transposed" and x.dim() >= 2:
        return x.transpose(-1, -2).contiguous().transpose(-1, -2)
    return x


def _leaves(tensors, flags):
    return [None if t is None else t.detach().clone().requires_grad_(f)
            for t, f in zip(tensors, flags)]


def _reference_leaves(tensors, flags):
    return [None if t is None else t.detach().double().contiguous().requires_grad_(f)
            for t, f in zip(tensors, flags)]


def _gradients_comparable(y, ref, dtype, params):
    """Whether y's gradients can be held to the float64 reference's: a finite, non-empty
    result, and in 16-bit a derivative continuous at 0 (module docstring)."""
    return (y.numel() > 0 and bool(torch.isfinite(ref).all())
            and (dtype not in DTYPES_16 or math.isclose(params[0] * params[2], 1.0)))


def _grad_y(shape, dtype):
    return (torch.randn(shape, dtype=torch.float64, device=DEVICE) * 0.5).to(dtype)


def _check_gradients(y, ref, leaves, ref_leaves, dtype, params, n_terms):
    """Backward of y and of the float64 ref with the same grad_y, gradient by gradient."""
    wanted = [i for i, t in enumerate(leaves) if t is not None and t.requires_grad]
    if not wanted or not _gradients_comparable(y, ref, dtype, params):
        return
    grad_y = _grad_y(ref.shape, dtype)
    got = torch.autograd.grad(y, [leaves[i] for i in wanted], grad_y)
    want = torch.autograd.grad(ref, [ref_leaves[i] for i in wanted], grad_y.double())
    for i, g, w in zip(wanted, got, want):
        assert g.dtype == leaves[i].dtype and g.shape == leaves[i].shape
        assert_grad_close(g, w, dtype, n_terms[i])


@pytest.mark.parametrize("case", range(N_CONV))
def test_random_conv2d(case, monkeypatch):
    r = random.Random(f"conv{case}")
    torch.manual_seed(r.randrange(2**31))
    groups_kind = r.choice(["one", "one", "grouped", "depthwise"])
    if groups_kind == "depthwise":
        c = r.randint(2, 8)
        groups, oc = c, c * r.choice([1, 2])
    else:
        groups = 1 if groups_kind == "one" else r.choice([2, 3])
        c, oc = groups * r.randint(1, 6), groups * r.randint(1, 6)
    kernel = (r.randint(1, 4), r.randint(1, 4))
    stride = r.choice([1, 2, (1, 2), (3, 1)])
    dilation = r.choice([1, 1, 2, (1, 2)])
    padding = r.choice([0, 1, (1, 0), (2, 1), "same", "valid"])
    if padding == "same":
        stride = 1
    n, h, w = r.randint(1, 3), r.randint(1, 9), r.randint(1, 9)
    spans = [d * (k - 1) + 1 for d, k in zip(F._pair(dilation), kernel)]
    pads = (0, 0) if padding in ("same", "valid") else F._pair(padding)
    if padding != "same":  # keep the output non-empty: F.conv2d rejects an empty one
        h, w = max(h, spans[0] - 2 * pads[0]), max(w, spans[1] - 2 * pads[1])
    dtype = r.choice([torch.float32, torch.float32, torch.float16, torch.bfloat16])
    params = r.choice(ELU_PARAMS)
    unbatched = r.random() < 0.2
    grad = r.random() < 0.6
    path = r.choice(["fused", "library", "composite"])
    _path(monkeypatch, path)

    x = _layout(_with_specials(torch.randn(n, c, h, w, dtype=torch.float64, device=DEVICE) * 2,
                               r).to(dtype), r)
    weight = (torch.randn(oc, c // groups, *kernel, dtype=torch.float64, device=DEVICE)
              / math.sqrt(c // groups * kernel[0] * kernel[1])).to(dtype)
    if r.random() < 0.4:
        weight = weight.contiguous(memory_format=torch.channels_last)
    bias = (torch.randn(oc, dtype=torch.float64, device=DEVICE) * 0.5).to(dtype) \
        if r.random() < 0.8 else None
    if unbatched:
        x = x[n - 1]
    flags = (grad and r.random() < 0.7, grad, grad)
    if r.random() < 0.25:  # (drawn last, so each case's other draws stay what they were)
        path = _fallback(monkeypatch)
    leaves = _leaves((x, weight, bias), flags)
    y = elutriton.conv2d_bias_elu(*leaves, stride, padding, dilation, groups, *params)
    ref_leaves = _reference_leaves((x, weight, bias), flags)
    ref = torch.ops.aten.elu(F.conv2d(*ref_leaves, stride, padding, dilation, groups), *params)
    assert y.dtype == dtype and y.shape == ref.shape
    if path != "fused":
        # the library and composite paths run torch's convolution in this dtype, which (CPU
        # bfloat16, docs/torch_defects.md) spreads NaN from non-finite inputs to outputs
        # whose float64 value is finite: there NaN is torch's answer too
        torch_nan = torch.isnan(F.conv2d(*(None if t is None else t.detach() for t in
                                           (x, weight, bias)), stride, padding, dilation,
                                         groups))
        ref = torch.where(torch_nan & torch.isnan(y.detach()), float("nan"), ref)
    assert_close(y, ref, tolerances=GEMM_TOLERANCES)
    pixels = math.prod(ref.shape[-2:]) * (1 if unbatched else n)
    taps = kernel[0] * kernel[1]
    _check_gradients(y, ref, leaves, ref_leaves, dtype, params,
                     (oc // groups * taps, pixels, pixels))


@pytest.mark.parametrize("case", range(N_LINEAR))
def test_random_linear(case, monkeypatch):
    r = random.Random(f"linear{case}")
    torch.manual_seed(r.randrange(2**31))
    lead = [r.choice([0, 1, 2, 3, 5]) if r.random() < 0.1 else r.randint(1, 6)
            for _ in range(r.choice([0, 1, 1, 2, 3]))]
    in_features, out_features = r.randint(1, 40), r.randint(1, 40)
    dtype = r.choice([torch.float32, torch.float16, torch.bfloat16])
    params = r.choice(ELU_PARAMS)
    grad = r.random() < 0.6
    path = r.choice(["fused", "library", "composite"])
    _path(monkeypatch, path)

    x = _layout(_with_specials(torch.randn(*lead, in_features, dtype=torch.float64,
                                           device=DEVICE), r).to(dtype), r)
    weight = _layout((torch.randn(out_features, in_features, dtype=torch.float64, device=DEVICE)
                      / math.sqrt(in_features)).to(dtype), r)
    bias = (torch.randn(out_features, dtype=torch.float64, device=DEVICE) * 0.5).to(dtype) \
        if r.random() < 0.8 else None
    flags = (grad and r.random() < 0.8, grad, grad)
    if r.random() < 0.25:  # (drawn last, so each case's other draws stay what they were)
        path = _fallback(monkeypatch)
    leaves = _leaves((x, weight, bias), flags)
    y = elutriton.linear_bias_elu(*leaves, *params)
    ref_leaves = _reference_leaves((x, weight, bias), flags)
    ref = torch.ops.aten.elu(F.linear(*ref_leaves), *params)
    assert y.dtype == dtype and y.shape == ref.shape
    assert_close(y, ref, tolerances=GEMM_TOLERANCES)
    rows = math.prod(lead)
    _check_gradients(y, ref, leaves, ref_leaves, dtype, params,
                     (out_features, rows, rows))


@pytest.mark.parametrize("case", range(N_POINTWISE))
def test_random_bias_elu_and_elu(case):
    r = random.Random(f"pointwise{case}")
    torch.manual_seed(r.randrange(2**31))
    shape = [r.choice([0, 1]) if r.random() < 0.05 else r.randint(1, 7)
             for _ in range(r.randint(1, 4))]
    dtype = r.choice([torch.float32, torch.float16, torch.bfloat16, torch.float64])
    params = r.choice(ELU_PARAMS)
    grad = r.random() < 0.6
    x = _layout(_with_specials(torch.randn(*shape, dtype=torch.float64, device=DEVICE) * 2,
                               r).to(dtype), r)
    if r.random() < 0.5:  # bias+ELU along a random dimension (negative ones too)
        dim = r.randint(-len(shape), len(shape) - 1)
        bias = (torch.randn(shape[dim], dtype=torch.float64, device=DEVICE)).to(dtype) \
            if r.random() < 0.85 else None
        leaves = _leaves((x, bias), (grad, grad))
        y = elutriton.bias_elu(*leaves, *params, dim=dim)
        ref = ref_bias_elu(x, bias, *params, dim=dim)
        assert y.dtype == dtype and y.shape == ref.shape
        assert_close(y, ref)
        if grad and _gradients_comparable(y, ref, dtype, params):
            grad_y = _grad_y(shape, dtype)
            got = torch.autograd.grad(y, [t for t in leaves if t is not None], grad_y)
            want = ref_bias_elu_grads(x, bias, grad_y, *params, dim=dim)
            assert_grad_close(got[0], want[0], dtype, 1)
            if bias is not None:
                assert_grad_close(got[1], want[1], dtype, y.numel() // max(1, shape[dim]))
        return
    # ELU, out of place or in place (in place on a fresh copy when autograd records it; torch
    # refuses in-place ELU with a negative alpha there)
    inplace = r.random() < 0.4 and not (grad and params[0] < 0)
    leaf = x.detach().clone().requires_grad_(grad)
    target = leaf.clone() if inplace and grad else leaf
    y = elutriton.elu(target, *params, inplace=inplace)
    assert (y is target) == inplace
    ref_leaf = x.detach().double().requires_grad_(grad)
    ref = torch.ops.aten.elu(ref_leaf, *params)
    assert y.dtype == dtype and y.shape == ref.shape and y.stride() == target.stride()
    assert_close(y, ref)
    _check_gradients(y, ref, [leaf], [ref_leaf], dtype, params, (1,))
