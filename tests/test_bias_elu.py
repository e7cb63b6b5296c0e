"""elutriton.elu / selu / celu / bias_elu against a float64 PyTorch reference."""
import math

import pytest
import torch
import torch.nn.functional as F

import elutriton
from tests.reference import (DEVICE, DTYPES, ELU_PARAMS, GRAD_TOLERANCES, SELU, assert_close,
                             assert_grad_close, randn, ref_bias_elu, ref_bias_elu_grads)

SHAPES = [(), (0,), (3, 0, 5), (1,), (1027,), (7, 33), (2, 5, 9, 11), (2, 3, 4, 5, 6)]


# --------------------------------------------------------------------------- forward values
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_elu_matches_reference(dtype, shape):
    x = randn(shape, dtype, special=True)
    for alpha, scale, input_scale in ELU_PARAMS:
        y = elutriton.elu(x, alpha, scale, input_scale)
        assert y.dtype == dtype and y.shape == x.shape
        assert_close(y, ref_bias_elu(x, None, alpha, scale, input_scale))


@pytest.mark.parametrize("dtype", DTYPES)
def test_selu_celu_forms(dtype):
    x = randn((5, 77), dtype, special=True)
    assert_close(elutriton.selu(x), ref_bias_elu(x, None, **SELU))
    assert_close(elutriton.celu(x, 0.3), ref_bias_elu(x, None, 0.3, 1.0, 1 / 0.3))
    assert_close(elutriton.celu(x), ref_bias_elu(x, None, 1.0, 1.0, 1.0))
    # the torch functions themselves agree with the reference forms used above
    assert_close(F.selu(x.double()), ref_bias_elu(x, None, **SELU), dtype=torch.float64)
    assert_close(F.celu(x.double(), 0.3), ref_bias_elu(x, None, 0.3, 1.0, 1 / 0.3),
                 dtype=torch.float64)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.float16])
def test_special_values_follow_torch(dtype):
    x = torch.tensor([0.0, -0.0, float("nan"), float("inf"), -float("inf"), -1e-30, 1e-30,
                      -100.0, 100.0], dtype=dtype, device=DEVICE)
    for alpha, scale, input_scale in ELU_PARAMS:
        y = elutriton.elu(x, alpha, scale, input_scale)
        expected = torch.ops.aten.elu(x, alpha, scale, input_scale)
        torch.testing.assert_close(y, expected, equal_nan=True, atol=0, rtol=1e-6)
        # the sign of zero results matches torch (-0.0 in -> -0.0 out). With alpha < 0 torch's
        # CPU and CUDA kernels differ on +0.0 (x < 0 vs x <= 0 branch), so only alpha > 0.
        if alpha > 0:
            assert torch.equal(torch.signbit(y[:2]), torch.signbit(expected[:2]))


def test_expm1_accurate_near_zero():
    x = -torch.logspace(-12, -3, 200, dtype=torch.float32, device=DEVICE)
    exact = torch.expm1(x.double())
    rel = ((elutriton.elu(x).double() - exact) / exact).abs().max().item()
    assert rel <= 1e-6
    # the bound is one naive exp(x) - 1 cannot meet: this test can fail
    naive = (torch.exp(x) - 1).double()
    assert ((naive - exact) / exact).abs().max().item() > 1e-6


def test_negative_branch_continuity_around_series_cutoff():
    # expm1 switches from the series to exp(x) - 1 at |x| = 0.5; both sides must be accurate.
    x = torch.linspace(-0.55, -0.45, 1001, dtype=torch.float32, device=DEVICE)
    assert_close(elutriton.elu(x), torch.expm1(x.double()))


# --------------------------------------------------------------------------- layouts
def _layouts(dtype):
    base = randn((3, 6, 5, 7), dtype, special=True)
    return {
        "contiguous": base,
        "channels_last": base.to(memory_format=torch.channels_last),
        "sliced": base[:, 1::2, :, 1:6],
        "transposed": base.transpose(1, 3),
        "expanded": randn((6, 1, 7), dtype).expand(6, 5, 7),
        "channels_last_sliced": base.to(memory_format=torch.channels_last)[:, :, 1:4],
        "storage_offset": base.reshape(-1)[11:11 + 4 * 6 * 5].view(4, 6, 5),
    }


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
@pytest.mark.parametrize("layout", ["contiguous", "channels_last", "sliced", "transposed",
                                    "expanded", "channels_last_sliced", "storage_offset"])
def test_layouts_values_and_output_strides(dtype, layout):
    x = _layouts(dtype)[layout]
    y = elutriton.elu(x, 0.7)
    assert_close(y, ref_bias_elu(x, None, 0.7))
    assert y.stride() == F.elu(x, 0.7).stride()
    if x.dim() == 4 and x.shape[1] == 6:
        b = randn((6,), dtype)
        y = elutriton.bias_elu(x, b, 0.7, dim=1)
        assert_close(y, ref_bias_elu(x, b, 0.7, dim=1))
        assert y.stride() == (x + b.view(1, -1, 1, 1)).stride()


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape,dim", [((4, 6, 5, 7), 1), ((4, 6, 5, 7), -1), ((4, 6, 5, 7), 0),
                                       ((9, 13), -1), ((9, 13), 0), ((2, 3, 17), 1), ((31,), 0),
                                       ((4, 1, 3), 1), ((0, 5), 1)])
def test_bias_elu_matches_reference(dtype, shape, dim):
    x = randn(shape, dtype, special=True)
    b = randn((shape[dim],), dtype)
    for alpha, scale, input_scale in ELU_PARAMS[:3]:
        y = elutriton.bias_elu(x, b, alpha, scale, input_scale, dim=dim)
        assert_close(y, ref_bias_elu(x, b, alpha, scale, input_scale, dim=dim))


def test_bias_none_is_plain_elu():
    x = randn((4, 5), torch.float32)
    torch.testing.assert_close(elutriton.bias_elu(x, None, 0.3), elutriton.elu(x, 0.3))


# --------------------------------------------------------------------------- autograd
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("layout", ["contiguous", "channels_last", "sliced"])
@pytest.mark.parametrize("params", [ELU_PARAMS[0], ELU_PARAMS[2], ELU_PARAMS[4]],
                         ids=["elu", "selu", "negative_alpha"])
def test_bias_elu_gradients(dtype, layout, params):
    x = _layouts(dtype)[layout].detach().requires_grad_()
    b = randn((x.shape[1],), dtype).requires_grad_()
    y = elutriton.bias_elu(x, b, *params, dim=1)
    grad_y = randn(y.shape, dtype)
    gx, gb = torch.autograd.grad(y, (x, b), grad_y)
    rgx, rgb = ref_bias_elu_grads(x, b, grad_y, *params, dim=1)
    assert_close(gx, rgx, tolerances=GRAD_TOLERANCES)
    assert_grad_close(gb, rgb, dtype, x.numel() // x.shape[1])


@pytest.mark.parametrize("dim", [0, 1, -1])
def test_bias_grad_only_when_needed(dim):
    x = randn((3, 4, 5), torch.float32).requires_grad_()
    b = randn((x.shape[dim],), torch.float32)  # no grad for the bias
    y = elutriton.bias_elu(x, b, dim=dim)
    (gx,) = torch.autograd.grad(y.sum(), x)
    rgx, _ = ref_bias_elu_grads(x, b, torch.ones_like(y), dim=dim)
    assert_close(gx, rgx, tolerances=GRAD_TOLERANCES)


@pytest.mark.parametrize("params", ELU_PARAMS, ids=["elu", "general", "selu", "celu", "neg"])
def test_gradcheck_float64(params):
    x = (torch.randn(2, 3, 4, 5, dtype=torch.float64, device=DEVICE) * 2).requires_grad_()
    b = torch.randn(3, dtype=torch.float64, device=DEVICE, requires_grad=True)
    assert torch.autograd.gradcheck(lambda x, b: elutriton.bias_elu(x, b, *params), (x, b))
    xc = x.detach().to(memory_format=torch.channels_last).requires_grad_()
    assert torch.autograd.gradcheck(lambda x, b: elutriton.bias_elu(x, b, *params, dim=1), (xc, b))
    assert torch.autograd.gradcheck(lambda x: elutriton.elu(x, *params), (x,))


def test_gradcheck_selu_celu_last_dim():
    x = (torch.randn(5, 7, dtype=torch.float64, device=DEVICE) * 2).requires_grad_()
    b = torch.randn(7, dtype=torch.float64, device=DEVICE, requires_grad=True)
    assert torch.autograd.gradcheck(lambda x, b: elutriton.bias_elu(x, b, dim=-1), (x, b))
    assert torch.autograd.gradcheck(elutriton.selu, (x,))
    assert torch.autograd.gradcheck(lambda x: elutriton.celu(x, 0.4), (x,))


def test_backward_keeps_output_not_preactivation():
    x = randn((4, 5), torch.float32).requires_grad_()
    b = randn((5,), torch.float32).requires_grad_()
    y = elutriton.bias_elu(x, b, dim=-1)
    # Checked through the public effect: changing x after the forward (through .data, which
    # autograd's version check does not see) does not change the gradient, so x was not kept.
    with torch.no_grad():
        x_before = x.detach().clone()
        x.data.add_(100.0)
    gx, gb = torch.autograd.grad(y, (x, b), torch.ones_like(y))
    rgx, rgb = ref_bias_elu_grads(x_before, b, torch.ones_like(y), dim=-1)
    assert_close(gx, rgx, tolerances=GRAD_TOLERANCES)
    assert_close(gb, rgb, tolerances=GRAD_TOLERANCES)


# --------------------------------------------------------------------------- in place
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_inplace_values_and_version(dtype):
    x = randn((5, 9, 3), dtype, special=True)
    expected = ref_bias_elu(x, None, 1.3)
    version = x._version
    out = elutriton.elu(x, 1.3, inplace=True)
    assert out is x and x._version == version + 1  # (torch's in-place ops bump it once)
    assert_close(x, expected)


@pytest.mark.parametrize("grad", [False, True], ids=["no_grad", "autograd"])
@pytest.mark.parametrize("layout", ["dense", "sliced"])
def test_inplace_bumps_the_version_once(grad, layout):
    """As torch's in-place ops: one bump per call, with autograd recording (the Function's
    ``mark_dirty``) or not, on a dense x and on a sliced one (computed in a dense copy, then
    written back)."""
    base = randn((4, 10), torch.float32).requires_grad_(grad)
    x = base * 1.0 if grad else base
    if layout == "sliced":
        x = x[:, ::2]
    expected = ref_bias_elu(x.detach(), None, 0.7)
    version = x._version
    elutriton.elu(x, 0.7, inplace=True)
    assert x._version == version + 1
    assert_close(x, expected)


def test_inplace_non_dense_and_expanded():
    base = randn((6, 8), torch.float32)
    view = base[:, ::2]
    expected_view = ref_bias_elu(view)
    untouched = base[:, 1::2].clone()
    elutriton.elu(view, inplace=True)
    assert_close(base[:, ::2], expected_view)
    assert torch.equal(base[:, 1::2], untouched)
    expanded = randn((1, 4), torch.float32).expand(3, 4)
    with pytest.raises(RuntimeError):
        elutriton.elu(expanded, inplace=True)


def test_inplace_autograd_from_result():
    a = randn((4, 6), torch.float64).requires_grad_()
    h = a * 1.0
    y = elutriton.selu(h, inplace=True)
    assert y is h
    (ga,) = torch.autograd.grad(y.sum(), a)
    expected, _ = ref_bias_elu_grads(a, None, torch.ones_like(a), **SELU)
    assert_close(ga, expected, tolerances=GRAD_TOLERANCES)
    assert torch.autograd.gradcheck(lambda a: elutriton.celu(a * 1.0, 0.7, inplace=True),
                                    (a.detach().requires_grad_(),))


def test_inplace_rules_follow_torch():
    leaf = randn((3,), torch.float32).requires_grad_()
    with pytest.raises(RuntimeError, match="leaf"):
        elutriton.elu(leaf, inplace=True)
    h = leaf * 1.0
    with pytest.raises(RuntimeError, match="alpha"):
        elutriton.elu(h, -0.5, inplace=True)
    # torch raises too (at backward), so both refuse negative alpha in place with autograd
    with pytest.raises(RuntimeError):
        F.elu(leaf * 1.0, -0.5, inplace=True).sum().backward()
    # without autograd a negative alpha in place is fine
    x = randn((4,), torch.float32, special=False)
    expected = ref_bias_elu(x, None, -0.5)
    elutriton.elu(x, -0.5, inplace=True)
    assert_close(x, expected)


def test_inplace_on_an_inference_tensor_follows_torch():
    with torch.inference_mode():
        x = randn((3, 5), torch.float32, special=True)
        inside, for_torch = x.clone(), x.clone()
        elutriton.elu(inside, 0.7, inplace=True)  # allowed in inference mode
    assert_close(inside, ref_bias_elu(x, None, 0.7))
    before = x.clone()
    with pytest.raises(RuntimeError, match="[Ii]nference"):  # torch refuses it outside
        F.elu(for_torch, inplace=True)  # (after writing it: torch checks after its kernel)
    for call in (lambda: elutriton.elu(x, inplace=True), lambda: elutriton.selu(x, True),
                 lambda: elutriton.nn.CELU(0.5, inplace=True)(x)):
        with pytest.raises(RuntimeError, match="inference"):
            call()
        torch.testing.assert_close(x, before, rtol=0, atol=0, equal_nan=True)  # not written
    assert_close(elutriton.elu(x, 0.7), ref_bias_elu(x, None, 0.7))  # out of place: fine


# --------------------------------------------------------------------------- bad input
def test_errors_name_the_argument():
    x = randn((2, 3, 4), torch.float32)
    with pytest.raises(TypeError, match="`x`.*floating"):
        elutriton.elu(torch.arange(4))
    with pytest.raises(TypeError, match="`x`.*floating"):
        elutriton.elu(torch.randn(4, dtype=torch.complex64))
    with pytest.raises(TypeError, match="`x`.*torch.Tensor"):
        elutriton.elu([1.0, 2.0])
    with pytest.raises(ValueError, match="`bias` of length"):
        elutriton.bias_elu(x, torch.randn(4, device=DEVICE), dim=1)
    with pytest.raises(ValueError, match="`bias` of length.*got shape \\(1, 3\\)"):
        elutriton.bias_elu(x, torch.randn(1, 3, device=DEVICE), dim=1)
    with pytest.raises(TypeError, match="`bias`.*dtype"):
        elutriton.bias_elu(x, torch.randn(3, dtype=torch.float64, device=DEVICE), dim=1)
    with pytest.raises(TypeError, match="`bias`.*floating"):
        elutriton.bias_elu(x, torch.arange(3), dim=1)
    with pytest.raises(ValueError, match="`bias`.*device"):
        elutriton.bias_elu(x, torch.randn(3, device="meta"), dim=1)
    with pytest.raises(IndexError, match="`dim`"):
        elutriton.bias_elu(x, torch.randn(3, device=DEVICE), dim=3)
    with pytest.raises(IndexError, match="0-d"):
        elutriton.bias_elu(torch.tensor(1.0, device=DEVICE), torch.randn(1, device=DEVICE))
    with pytest.raises(ValueError, match="`alpha` must be nonzero"):
        elutriton.celu(x, 0.0)
    with pytest.raises(TypeError, match="`alpha`"):
        elutriton.elu(x, "1.0")
    with pytest.raises(ValueError, match="`scale`"):
        elutriton.elu(x, 1.0, math.inf)
