"""elutriton.linear_bias_elu against float64 F.elu(F.linear(...))."""
import math

import pytest
import torch
import torch.nn.functional as F

import elutriton
from tests.fallback import force_pytorch_fallback
from tests.reference import (DEVICE, DTYPES, GEMM_TOLERANCES, SELU,
                             assert_close, assert_grad_close, randn)

aten = torch.ops.aten

# Both paths of the per-shape choice (conftest.py: gemm_path)
pytestmark = pytest.mark.usefixtures("gemm_path")


def linear_inputs(lead, k, n, dtype=torch.float32, bias=True):
    x = randn(lead + (k,), dtype)
    weight = (torch.randn(n, k, dtype=torch.float64, device=DEVICE) / math.sqrt(k)).to(dtype)
    return x, weight, (randn((n,), dtype) * 0.5 if bias else None)


def ref_linear(x, weight, bias, alpha=1.0, scale=1.0, input_scale=1.0):
    z = F.linear(x.double(), weight.double(), None if bias is None else bias.double())
    return aten.elu(z, alpha, scale, input_scale)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("lead,k,n", [((5,), 33, 17), ((2, 3), 64, 40), ((), 20, 9),
                                      ((0,), 8, 4), ((130,), 100, 70), ((4,), 0, 6), ((2, 3), 0, 5)],
                         ids=str)
def test_linear_matches_reference(dtype, lead, k, n):
    x, weight, b = linear_inputs(lead, k, n, dtype)
    for params in [(1.0, 1.0, 1.0), (SELU["alpha"], SELU["scale"], 1.0)]:
        y = elutriton.linear_bias_elu(x, weight, b, *params)
        assert y.shape == lead + (n,) and y.dtype == dtype
        assert_close(y, ref_linear(x, weight, b, *params), tolerances=GEMM_TOLERANCES)


def test_linear_no_bias_and_non_contiguous():
    x, weight, _ = linear_inputs((6, 9), 16, 12, bias=False)
    xt = x.transpose(0, 1)                      # [9, 6, 16], not contiguous
    wt = weight.t().contiguous().t()            # transposed storage
    assert_close(elutriton.linear_bias_elu(xt, wt), ref_linear(xt, weight, None),
                 tolerances=GEMM_TOLERANCES)


@pytest.mark.records_grad
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("lead,k,n", [((3, 7), 24, 18), ((5,), 0, 6), ((2, 3), 0, 4)],
                         ids=str)
def test_linear_gradients(dtype, lead, k, n):
    """(in_features 0: y = elu(bias) on every row; the kernel path reshaped the rows to
    [-1, 0, 1, 1] and raised, now it runs torch's ops as the library path does)"""
    x, weight, b = linear_inputs(lead, k, n, dtype)
    leaves = [t.detach().requires_grad_() for t in (x, weight, b)]
    y = elutriton.linear_bias_elu(*leaves, **SELU)
    grad_y = randn(y.shape, dtype) * 0.5
    grads = torch.autograd.grad(y, leaves, grad_y)
    ref_leaves = [t.detach().double().requires_grad_() for t in (x, weight, b)]
    ref_grads = torch.autograd.grad(ref_linear(*ref_leaves, **SELU), ref_leaves, grad_y.double())
    rows = math.prod(x.shape[:-1])
    # grad_x sums out_features terms, grad_w and grad_b one per row
    for got, want, n_terms in zip(grads, ref_grads, (weight.shape[0], rows, rows)):
        assert_grad_close(got, want, dtype, n_terms)


@pytest.mark.records_grad
@pytest.mark.parametrize("alpha", [1.0, -0.7], ids=["from_result", "from_input"])
def test_linear_gradcheck_float64(alpha):
    inputs = [t.requires_grad_() for t in linear_inputs((2, 3), 5, 4, torch.float64)]
    assert torch.autograd.gradcheck(
        lambda x, w, b: elutriton.linear_bias_elu(x, w, b, alpha), inputs)


@pytest.mark.records_grad
@pytest.mark.parametrize("device_kind", ["kernels", "fallback"])
def test_linear_opcheck_and_compile(device_kind, monkeypatch):
    """As ``test_conv_opcheck_and_compile``: with the kernels and on the PyTorch fallback."""
    if device_kind == "fallback":
        force_pytorch_fallback(monkeypatch)
    x, weight, b = linear_inputs((4,), 16, 8)
    torch.library.opcheck(torch.ops.elutriton.linear_bias_elu.default,
                          (x.requires_grad_(), weight.requires_grad_(), b, 1.0, 1.0, 1.0))
    torch.library.opcheck(torch.ops.elutriton.linear_bias_elu.default,
                          (x, weight, None, -0.5, 1.0, 1.0))
    empty_x, empty_w, _ = linear_inputs((4,), 0, 8)  # no input features
    torch.library.opcheck(torch.ops.elutriton.linear_bias_elu.default,
                          (empty_x, empty_w.requires_grad_(), b.requires_grad_(), 1.0, 1.0, 1.0))
    params = (0.5, 1.2, 0.8)
    compiled = torch.compile(lambda x: elutriton.linear_bias_elu(x, weight, b, *params),
                             fullgraph=True, backend="aot_eager")
    assert_close(compiled(x), ref_linear(x, weight, b, *params), tolerances=GEMM_TOLERANCES)


def test_linear_errors():
    x, weight, b = linear_inputs((3,), 8, 5)
    with pytest.raises(ValueError, match="cannot be multiplied"):
        elutriton.linear_bias_elu(x[:, :7], weight, b)
    with pytest.raises(ValueError, match="2-D `weight`"):
        elutriton.linear_bias_elu(x, weight[0], b)
    with pytest.raises(ValueError, match="`bias` of length"):
        elutriton.linear_bias_elu(x, weight, b[:4])
    with pytest.raises(TypeError, match="`weight`.*dtype"):
        elutriton.linear_bias_elu(x, weight.half(), b)
    with pytest.raises(TypeError, match="`input`.*floating"):
        elutriton.linear_bias_elu(x.long(), weight, b)


def test_pytorch_fallback_takes_each_calls_own_parameters(monkeypatch):
    """The fallback's plan fixes the checked ELU parameters (``reference.
    fixed_linear_bias_elu``): calls on the same tensors with other parameters, or other
    tensors, each get torch's own result (bit for bit), with and without autograd."""
    from elutriton.ops import linear as linear_ops
    monkeypatch.setattr(linear_ops, "use_triton", lambda tensor: False)
    x, weight, b = linear_inputs((3, 2), 8, 5)
    w_leaf = weight.clone().requires_grad_()
    for _ in range(2):
        for params in ((1.0, 1.0, 1.0), (0.5, 1.0, 1.0), tuple(SELU.values()), (2.0, 1.0, 0.5),
                       (1, 1, 1)):
            for w, bias in ((weight, b), (weight, None), (w_leaf, b), (weight[:4], b[:4])):
                y = elutriton.linear_bias_elu(x, w, bias, *params)
                expected = aten.elu(F.linear(x, w, bias), *params)
                torch.testing.assert_close(y, expected, atol=0, rtol=0)
                assert y.requires_grad == w.requires_grad
                if w.requires_grad:
                    assert y.grad_fn.name().startswith("EluBackward")
