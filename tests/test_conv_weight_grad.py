"""The Triton weight/bias gradient of the fused conv (ops/conv_weight_grad.py) against float64
torch: kernel sizes, stride, padding, dilation, odd sizes, dtypes, layouts, the input gradient
on and off, uneven split-K, determinism, gradcheck. When it is used: test_backward_path.py."""
import pytest
import torch
import torch.nn.functional as F

import elutriton
from elutriton.kernels import conv_weight_grad as wgrad_kernels
from elutriton.ops import conv_weight_grad as wgrad_ops
from tests.conv_grad_cases import run_case, spy_plans
from tests.reference import SELU, assert_grad_close, randn


@pytest.fixture(autouse=True)
def triton_weight_grad(monkeypatch):
    monkeypatch.setenv("ELUTRITON_BACKWARD", "triton")
    monkeypatch.setenv("ELUTRITON_PATH", "fused")


def spy(monkeypatch):
    """The weight shape of each weight-gradient plan built."""
    return spy_plans(monkeypatch, wgrad_ops, "plan_conv2d_weight_grad", lambda a: a[3])


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


def test_splits_keep_the_partial_buffer_within_int32_offsets():
    n_splits, per_split = wgrad_kernels.weight_grad_splits(10**7, 1, 64, n_weights=2**26)
    assert n_splits * 2**26 <= 2**31 - 1 and n_splits * per_split >= 10**7
    assert wgrad_kernels.weight_grad_splits(10**7, 1, 64, n_weights=1)[0] == \
        wgrad_kernels.TARGET_PROGRAMS
