"""The Triton weight/bias gradient of the fused conv (ops/conv_weight_grad.py) against float64
torch: kernel sizes, stride, padding, dilation, odd sizes, dtypes, layouts, the input gradient
on and off, uneven split-K, determinism, gradcheck, and when it is used."""
import pytest
import torch
import torch.nn.functional as F

import elutriton
from elutriton.kernels import conv_weight_grad as wgrad_kernels
from elutriton.ops import conv_weight_grad as wgrad_ops
from tests.reference import SELU, assert_grad_close, randn


@pytest.fixture(autouse=True)
def triton_weight_grad(monkeypatch):
    monkeypatch.setenv("ELUTRITON_WGRAD", "triton")
    monkeypatch.setenv("ELUTRITON_PATH", "fused")


def spy(monkeypatch):
    used = []
    real = wgrad_ops.plan_conv2d_weight_grad
    monkeypatch.setattr(wgrad_ops, "plan_conv2d_weight_grad",
                        lambda *a: used.append(a[3]) or real(*a))
    return used


def run_case(dtype, n, c, hw, oc, k, stride=1, padding=0, dilation=1, params=(1.0, 1.0, 1.0),
             channels_last=False, input_grad=False, bias=True):
    x = randn((n, c) + hw, dtype)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    x.requires_grad_(input_grad)
    w = (randn((oc, c) + k, dtype) / (c * k[0] * k[1]) ** 0.5).requires_grad_()
    b = randn((oc,), dtype).requires_grad_() if bias else None
    y = elutriton.conv2d_bias_elu(x, w, b, stride, padding, dilation, 1, *params)
    grad_y = randn(y.shape, dtype)
    inputs = [t for t in (x, w, b) if t is not None and t.requires_grad]
    got = torch.autograd.grad(y, inputs, grad_y)
    # float64 reference from the same rounded inputs
    ref_inputs = [t.detach().double().requires_grad_(t.requires_grad) if t is not None else None
                  for t in (x, w, b)]
    z = F.conv2d(ref_inputs[0], ref_inputs[1], ref_inputs[2], stride, padding, dilation)
    yd = torch.ops.aten.elu(z, *params)
    expected = torch.autograd.grad(yd, [t for t in ref_inputs if t is not None and t.requires_grad],
                                   grad_y.double())
    n_terms = y.shape[0] * y.shape[2] * y.shape[3]
    for g, e, t in zip(got, expected, inputs):
        assert g.shape == t.shape and g.dtype == t.dtype
        assert_grad_close(g, e, dtype, n_terms if t is not x else k[0] * k[1] * oc)
    return got


CASES = [  # (n, c, (h, w), oc, (kh, kw), stride, padding, dilation)
    (2, 3, (9, 11), 10, (5, 5), 1, 2, 1),      # an RGB stem, 'same'
    (3, 1, (7, 6), 17, (3, 3), 2, 1, 1),       # one channel, stride 2, odd sizes
    (2, 5, (8, 9), 33, (3, 2), (1, 2), (1, 0), 1),  # rectangular kernel, pair args
    (1, 3, (10, 10), 8, (3, 3), 1, 2, 2),      # dilation
    (2, 4, (6, 5), 70, (1, 1), 1, 0, 1),       # 1x1, more channels than one OC block
]


@pytest.mark.parametrize("case", CASES, ids=lambda c: f"c{c[1]}k{c[4][0]}x{c[4][1]}s{c[5]}")
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16, torch.float64])
def test_weight_and_bias_gradients_match_float64(case, dtype, monkeypatch):
    used = spy(monkeypatch)
    n, c, hw, oc, k, stride, padding, dilation = case
    run_case(dtype, n, c, hw, oc, k, stride, padding, dilation)
    assert len(used) == 1


@pytest.mark.parametrize("params", [(1.0, 1.0, 1.0), (SELU["alpha"], SELU["scale"], 1.0),
                                    (0.5, 2.0, 0.7)], ids=["elu", "selu", "general"])
@pytest.mark.parametrize("input_grad", [False, True], ids=["images", "input_grad"])
@pytest.mark.parametrize("channels_last", [False, True], ids=["nchw", "channels_last"])
def test_parameters_layouts_and_the_input_gradient(params, input_grad, channels_last,
                                                   monkeypatch):
    used = spy(monkeypatch)
    run_case(torch.float32, 2, 3, (8, 7), 12, (3, 3), 1, 1, params=params,
             channels_last=channels_last, input_grad=input_grad)
    run_case(torch.float32, 2, 3, (8, 7), 12, (3, 3), 1, 1, params=params,
             channels_last=channels_last, input_grad=input_grad, bias=False)
    assert len(used) == 2


def test_uneven_pixel_splits_and_determinism(monkeypatch):
    monkeypatch.setattr(wgrad_kernels, "MIN_PIXELS_PER_SPLIT", 1)
    monkeypatch.setattr(wgrad_kernels, "TARGET_PROGRAMS", 7)  # 7 splits of 3*9*7 = 189 pixels
    n_splits, per_split = wgrad_kernels.weight_grad_splits(189, 1, 64)
    assert n_splits > 1 and n_splits * per_split >= 189 and 189 % per_split != 0
    run_case(torch.float32, 3, 3, (9, 7), 9, (3, 3), 1, 1)  # checked against float64
    torch.manual_seed(5)
    first = run_case(torch.float16, 3, 3, (9, 7), 9, (3, 3), 1, 1)
    torch.manual_seed(5)
    again = run_case(torch.float16, 3, 3, (9, 7), 9, (3, 3), 1, 1)
    for a, b in zip(first, again):
        assert torch.equal(a, b)  # same inputs, same plan: bitwise equal


def test_grad_y_with_other_strides_and_special_values(monkeypatch):
    x = randn((2, 3, 6, 6), torch.float32)
    w = (randn((5, 3, 3, 3), torch.float32) / 5).requires_grad_()
    b = randn((5,), torch.float32).requires_grad_()
    y = elutriton.conv2d_bias_elu(x, w, b, padding=1)
    grad_y = randn((2, 6, 6, 5), torch.float32).permute(0, 3, 1, 2)  # channels_last grad_y
    gw, gb = torch.autograd.grad(y, (w, b), grad_y)
    wd, bd = w.detach().double().requires_grad_(), b.detach().double().requires_grad_()
    yd = F.elu(F.conv2d(x.double(), wd, bd, padding=1))
    ew, eb = torch.autograd.grad(yd, (wd, bd), grad_y.double())
    assert_grad_close(gw, ew, torch.float32, 72)
    assert_grad_close(gb, eb, torch.float32, 72)
    # a NaN in grad_y reaches the weight gradient and the bias gradient of its channel
    grad_y = grad_y.contiguous()
    grad_y[0, 2, 3, 3] = float("nan")
    gw, gb = torch.autograd.grad(elutriton.conv2d_bias_elu(x, w, b, padding=1), (w, b), grad_y)
    assert torch.isnan(gb[2]) and not torch.isnan(gb[[0, 1, 3, 4]]).any()
    assert torch.isnan(gw[2]).any() and not torch.isnan(gw[[0, 1, 3, 4]]).any()


def test_gradcheck_and_double_backward_in_float64():
    x = randn((1, 2, 5, 5), torch.float64)
    w = (randn((3, 2, 3, 3), torch.float64) * 0.4).requires_grad_()
    b = randn((3,), torch.float64).requires_grad_()
    fn = lambda w, b: elutriton.conv2d_bias_elu(x, w, b, padding=1, alpha=0.8)  # noqa: E731
    assert torch.autograd.gradcheck(fn, (w, b))
    assert torch.autograd.gradgradcheck(fn, (w, b))  # create_graph: the cuDNN path


def test_when_the_triton_weight_gradient_is_used(monkeypatch):
    used = spy(monkeypatch)
    monkeypatch.setenv("ELUTRITON_WGRAD", "auto")
    run_case(torch.float32, 2, 3, (6, 6), 8, (3, 3), 1, 1)         # 3 channels: Triton
    run_case(torch.float32, 2, 16, (6, 6), 8, (3, 3), 1, 1)        # 16 channels: cuDNN
    # distinct shapes below, so a plan cached by an earlier call cannot hide the decision
    run_case(torch.float32, 2, 3, (7, 6), 8, (3, 3), 1, 1, params=(-0.5, 1.0, 1.0))  # no y
    run_case(torch.float32, 2, 3, (8, 6), 8, (3, 3), 1, 1, input_grad=True)  # x needs grad
    assert len(used) == 1
    monkeypatch.setenv("ELUTRITON_WGRAD", "cudnn")
    run_case(torch.float32, 2, 3, (9, 6), 8, (3, 3), 1, 1)
    assert len(used) == 1
    monkeypatch.setenv("ELUTRITON_WGRAD", "fast")
    x = randn((1, 3, 4, 4), torch.float32)
    w = randn((2, 3, 3, 3), torch.float32).requires_grad_()
    with pytest.raises(ValueError, match="ELUTRITON_WGRAD"):
        elutriton.conv2d_bias_elu(x, w, padding=1).sum().backward()


def test_splits_keep_the_partial_buffer_within_int32_offsets():
    n_splits, per_split = wgrad_kernels.weight_grad_splits(10**7, 1, 64, n_weights=2**26)
    assert n_splits * 2**26 <= 2**31 - 1 and n_splits * per_split >= 10**7
    assert wgrad_kernels.weight_grad_splits(10**7, 1, 64, n_weights=1)[0] == \
        wgrad_kernels.TARGET_PROGRAMS
