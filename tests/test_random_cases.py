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
from elutriton._layout import batched_view
from tests.fallback import force_pytorch_fallback
from tests.reference import (DEVICE, ELU_PARAMS, GEMM_TOLERANCES, assert_close,
                             assert_grad_close, bias_view, ref_bias_elu, ref_bias_elu_grads)

N_CONV, N_LINEAR, N_POINTWISE = 160, 80, 120
SPECIALS = [float("nan"), float("inf"), -0.0, -float("inf")]
DTYPES_16 = (torch.float16, torch.bfloat16)


def _path(monkeypatch, path):
    """Run on ``path`` of the per-shape choice, as conftest's gemm_path fixture does."""
    monkeypatch.setenv("ELUTRITON_PATH", "fused" if path == "fused" else "library")
    if path == "library":  # as under CUDA-graph capture: no eager composite
        monkeypatch.setattr("elutriton.ops.composite_path.capturing", lambda is_cuda: True)


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


def _strided_copy(t):
    """A copy of ``t`` with ``t``'s own strides (differentiable: a leaf where ``t`` is a
    detached tensor): ``clone()`` gives a sliced (non-dense) tensor contiguous strides, so the
    op would never see the sliced layout."""
    copy = torch.empty_strided(t.shape, t.stride(), dtype=t.dtype, device=t.device)
    return copy.copy_(t)


def _same_layout(a, b):
    """Whether ``a`` and ``b`` (same shape) have the same strides where strides mean
    something: along dimensions of size > 1 of a non-empty tensor (torch itself gives an empty
    or size-1 dimension any stride)."""
    return a.numel() == 0 or all(n == 1 or sa == sb
                                 for n, sa, sb in zip(a.shape, a.stride(), b.stride()))


def _leaves(tensors, flags):
    return [None if t is None else _strided_copy(t.detach()).requires_grad_(f)
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


def _check_gradients(y, ref, leaves, ref_leaves, dtype, params, n_terms, torch_own=None):
    """Backward of y and of the float64 ref with the same grad_y, gradient by gradient.

    ``torch_own``: where the op may have run torch's own CPU bfloat16 convolution, a function
    of ``(grad_y, leaves)`` giving torch's own gradients in that dtype, on copies of the
    leaves laid out alike: a gradient that misses the float64 one is skipped
    (``_skip_torch_defect``) when torch's own misses it too."""
    wanted = [i for i, t in enumerate(leaves) if t is not None and t.requires_grad]
    if not wanted or not _gradients_comparable(y, ref, dtype, params):
        return
    grad_y = _grad_y(ref.shape, dtype)
    got = torch.autograd.grad(y, [leaves[i] for i in wanted], grad_y)
    want = torch.autograd.grad(ref, [ref_leaves[i] for i in wanted], grad_y.double())
    for i, g, w in zip(wanted, got, want):
        assert g.dtype == leaves[i].dtype and g.shape == leaves[i].shape
        try:
            assert_grad_close(g, w, dtype, n_terms[i])
        except AssertionError:
            if torch_own is not None:
                own = torch_own(grad_y, _leaves(leaves, [t is not None and t.requires_grad
                                                         for t in leaves]))
                _skip_torch_defect(lambda: assert_grad_close(own[i], w, dtype, n_terms[i]),
                                   "gradient")
            raise


def _skip_torch_defect(check_torch, what):
    """Skip the case where ``check_torch()`` (the float64 comparison of torch's own CPU
    bfloat16 convolution on these tensors, which the op ran) fails: torch's convolution is
    wrong there (docs/torch_defects.md), and the op's path returns what it gives; otherwise
    return, so that the caller re-raises its own failure."""
    try:
        check_torch()
    except AssertionError:
        pytest.skip(f"torch's own CPU bfloat16 convolution {what} is wrong for these tensors "
                    "(docs/torch_defects.md); this path runs it")


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
    if r.random() < 0.2:  # a weight or bias sliced from a larger one (drawn after the above)
        if r.random() < 0.5:
            weight = torch.cat([weight, weight], dim=-1)[..., ::2]
        elif bias is not None:
            bias = torch.cat([bias, bias])[::2]
    leaves = _leaves((x, weight, bias), flags)
    y = elutriton.conv2d_bias_elu(*leaves, stride, padding, dilation, groups, *params)
    # torch's own convolutions below take dilation 1 along an axis of one tap (where it means
    # nothing), as the op does: torch's CPU convolution crashes for some others there
    # (docs/torch_defects.md)
    dilation = tuple(1 if k == 1 else d for d, k in zip(F._pair(dilation), kernel))
    ref_leaves = _reference_leaves((x, weight, bias), flags)
    ref = torch.ops.aten.elu(F.conv2d(*ref_leaves, stride, padding, dilation, groups), *params)
    # torch's layout (channels_last where x or the weight is), for an unbatched x that of its
    # batched view (README "API": F.conv2d's own unsqueeze makes an unbatched channels-innermost
    # x look contiguous, and gives a contiguous output there)
    def torch_conv(x, weight, bias):  # torch's convolution of what the op convolves
        if unbatched:
            return F.conv2d(batched_view(x), weight, bias, stride, padding, dilation, groups)[0]
        return F.conv2d(x, weight, bias, stride, padding, dilation, groups)

    x0, w0, b0 = (None if t is None else t.detach() for t in leaves)
    torch_z = torch_conv(x0, w0, b0)
    assert y.dtype == dtype and y.shape == ref.shape and _same_layout(y, torch_z)
    torch_own = None  # (set below for CPU bfloat16)
    if path != "fused":
        # the library and composite paths run torch's convolution in this dtype, which (CPU
        # bfloat16, docs/torch_defects.md) spreads NaN from non-finite inputs to outputs
        # whose float64 value is finite, in a pattern that depends on the input's strides:
        # there NaN is torch's answer too, on x as given or on the batched view of an
        # unbatched x that the op convolves (_layout.batched_view)
        torch_nan = torch.isnan(torch_z) | torch.isnan(
            F.conv2d(x0, w0, b0, stride, padding, dilation, groups))
        ref = torch.where(torch_nan & torch.isnan(y.detach()), float("nan"), ref)
    if dtype == torch.bfloat16 and torch_z.device.type == "cpu":
        # every path's gradients may be torch's convolution backward (the fused path's too,
        # where its backward is the cuDNN path: ops/backward_path.py)
        def torch_own_gradients(grad_y, leaves):
            z = torch_conv(*leaves)
            wanted = [t for t in leaves if t is not None and t.requires_grad]
            got = iter(torch.autograd.grad(torch.ops.aten.elu(z, *params), wanted, grad_y))
            return [next(got) if t is not None and t.requires_grad else None for t in leaves]
        torch_own = torch_own_gradients
    try:
        assert_close(y, ref, tolerances=GEMM_TOLERANCES)
    except AssertionError:
        if torch_own is not None and path != "fused":  # (the fused forward is the kernel's)
            _skip_torch_defect(lambda: assert_close(torch.ops.aten.elu(torch_z, *params), ref,
                                                    tolerances=GEMM_TOLERANCES), "forward")
        raise
    pixels = math.prod(ref.shape[-2:]) * (1 if unbatched else n)
    taps = kernel[0] * kernel[1]
    _check_gradients(y, ref, leaves, ref_leaves, dtype, params,
                     (oc // groups * taps, pixels, pixels), torch_own)


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
    torch_z = F.linear(*(None if t is None else t.detach() for t in leaves))
    assert y.dtype == dtype and y.shape == ref.shape and _same_layout(y, torch_z)
    assert_close(y, ref, tolerances=GEMM_TOLERANCES)
    rows = math.prod(lead)
    _check_gradients(y, ref, leaves, ref_leaves, dtype, params,
                     (out_features, rows, rows))


@pytest.mark.parametrize("case", range(N_POINTWISE))
def test_random_bias_elu_and_elu(case, monkeypatch):
    r = random.Random(f"pointwise{case}")
    torch.manual_seed(r.randrange(2**31))
    if random.Random(f"pointwise-fallback{case}").random() < 0.25:  # (its own generator, so
        _fallback(monkeypatch)  # the other draws stay what they were)
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
        torch_z = torch.ops.aten.elu(x if bias is None else x + bias_view(bias, x.dim(), dim))
        assert y.dtype == dtype and y.shape == ref.shape and _same_layout(y, torch_z)
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
    leaf = _strided_copy(x.detach()).requires_grad_(grad)
    target = _strided_copy(leaf) if inplace and grad else leaf
    y = elutriton.elu(target, *params, inplace=inplace)
    assert (y is target) == inplace
    ref_leaf = x.detach().double().requires_grad_(grad)
    ref = torch.ops.aten.elu(ref_leaf, *params)
    # the layout torch gives (a sliced input: a dense output in the input's dimension order)
    torch_y = target if inplace else torch.ops.aten.elu(target.detach(), *params)
    assert y.dtype == dtype and y.shape == ref.shape and _same_layout(y, torch_y)
    assert_close(y, ref)
    _check_gradients(y, ref, [leaf], [ref_leaf], dtype, params, (1,))
