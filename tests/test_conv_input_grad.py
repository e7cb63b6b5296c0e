"""The Triton input gradient of the fused conv (ops/conv_input_grad.py) against float64 torch:
kernel sizes, strides that do and do not divide, padding, dilation, odd sizes, several channel
and output-channel blocks, dtypes, layouts and strides of x, grad_y and the weight, the ELU
family, NaN/inf, empty batches, determinism and gradcheck."""
import pytest
import torch
import torch.nn.functional as F

import elutriton
from elutriton.kernels import conv_input_grad as dgrad_kernels
from elutriton.kernels import conv_input_grad_taps as dgrad_taps
from elutriton.ops import conv_input_grad as dgrad_ops
from elutriton.plan import clear_plans
from tests.conv_grad_cases import run_case, spy_plans
from tests.reference import SELU, assert_grad_close, randn


@pytest.fixture(autouse=True)
def triton_backward(monkeypatch):
    monkeypatch.setenv("ELUTRITON_BACKWARD", "triton")
    monkeypatch.setenv("ELUTRITON_PATH", "fused")


@pytest.fixture(autouse=True, params=["tap_products", "transposed_gemm"])
def dgrad_kernel(request, monkeypatch):
    """Every test runs both input-gradient kernels: per-tap products and a gather for filters
    of at most TAP_PRODUCT_MAX_COLUMNS C * KH * KW (every geometry here), the transposed GEMM
    when that limit is 0."""
    if request.param == "transposed_gemm":
        monkeypatch.setattr(dgrad_taps, "TAP_PRODUCT_MAX_COLUMNS", 0)
    clear_plans()
    yield request.param
    clear_plans()


def spy(monkeypatch):
    """The x shape of each input-gradient plan built."""
    return spy_plans(monkeypatch, dgrad_ops, "plan_conv2d_input_grad", lambda a: a[0].shape)


CASES = [  # (n, c, (h, w), oc, (kh, kw), stride, padding, dilation)
    (2, 3, (9, 11), 10, (5, 5), 1, 2, 1),           # an RGB stem, 'same'
    (3, 1, (7, 6), 17, (3, 3), 2, 1, 1),            # one channel, stride 2, odd sizes
    (2, 5, (8, 9), 33, (3, 2), (1, 2), (1, 0), 1),  # rectangular kernel, pair args
    (1, 3, (10, 10), 8, (3, 3), 1, 2, 2),           # dilation
    (2, 4, (6, 5), 70, (1, 1), 1, 0, 1),            # 1x1, three output-channel blocks
    (2, 2, (11, 10), 6, (3, 3), 3, 0, 1),           # stride 3 > kernel reach: pixels no tap reads
    (1, 20, (5, 6), 9, (2, 2), 2, 1, 1),            # 20 channels: two channel blocks
]


@pytest.mark.parametrize("case", CASES, ids=lambda c: f"c{c[1]}k{c[4][0]}x{c[4][1]}s{c[5]}")
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16, torch.float64])
def test_input_gradient_matches_float64(case, dtype, monkeypatch):
    used = spy(monkeypatch)
    n, c, hw, oc, k, stride, padding, dilation = case
    run_case(dtype, n, c, hw, oc, k, stride, padding, dilation, input_grad=True)
    assert used == [torch.Size((n, c) + hw)]


def test_which_filters_take_the_tap_products(dgrad_kernel, monkeypatch):
    if dgrad_kernel == "transposed_gemm":
        assert not dgrad_taps.uses_tap_products(1, 1, 1)
        return
    # C * KH * KW up to 128 columns: the stem's 3 x 5 x 5, 14 x 3 x 3; not 16 x 3 x 3
    assert [dgrad_taps.uses_tap_products(*f) for f in
            ((3, 5, 5), (14, 3, 3), (128, 1, 1), (16, 3, 3), (129, 1, 1), (3, 7, 7))] == \
        [True, True, True, False, False, False]
    launched = []
    for kernel in (dgrad_taps.conv_input_grad_tap_products_kernel,
                   dgrad_taps.conv_input_grad_gather_kernel,
                   dgrad_kernels.conv2d_input_grad_kernel):
        monkeypatch.setattr(kernel, "run", lambda *a, _k=kernel, _run=kernel.run, **kw:
                            launched.append(_k.fn.__name__) or _run(*a, **kw))
    run_case(torch.float32, 2, 3, (6, 7), 8, (5, 5), 1, 2, input_grad=True)
    run_case(torch.float32, 1, 16, (5, 4), 8, (3, 3), 1, 1, input_grad=True)
    assert launched == ["conv_input_grad_tap_products_kernel", "conv_input_grad_gather_kernel",
                        "conv2d_input_grad_kernel"]


def test_block_c_follows_the_channels():
    assert [dgrad_kernels.input_grad_block_c(c) for c in (1, 3, 16, 17, 32, 33, 64, 512)] == \
        [16, 16, 16, 32, 32, 64, 64, 64]


@pytest.mark.parametrize("params", [(1.0, 1.0, 1.0), (SELU["alpha"], SELU["scale"], 1.0),
                                    (0.5, 2.0, 0.7), (2.0, 1.0, 0.5)],
                         ids=["elu", "selu", "general", "celu2"])
@pytest.mark.parametrize("channels_last", [False, True], ids=["nchw", "channels_last"])
def test_parameters_layouts_and_no_bias(params, channels_last, monkeypatch):
    used = spy(monkeypatch)
    run_case(torch.float32, 2, 3, (8, 7), 12, (3, 3), 1, 1, params=params,
             channels_last=channels_last, input_grad=True)
    run_case(torch.float16, 2, 3, (8, 7), 12, (3, 3), 1, 1, params=params,
             channels_last=channels_last, input_grad=True, bias=False)
    assert len(used) == 2


def reference_grad_x(x, w, b, grad_y, **conv):
    xd = x.detach().double().requires_grad_()
    y = F.elu(F.conv2d(xd, w.detach().double(), b.detach().double(), **conv))
    return torch.autograd.grad(y, xd, grad_y.double())[0]


def test_strided_x_weight_and_grad_y(monkeypatch):
    used = spy(monkeypatch)
    base = randn((2, 7, 9, 8), torch.float32)
    x = base[:, 1:4, ::2, 1:].requires_grad_()  # a sliced (non-contiguous) leaf view
    assert not x.is_contiguous() and not x.is_contiguous(memory_format=torch.channels_last)
    w = (randn((6, 3, 3, 3), torch.float32) / 5).contiguous(
        memory_format=torch.channels_last).requires_grad_()
    b = randn((6,), torch.float32).requires_grad_()
    y = elutriton.conv2d_bias_elu(x, w, b, padding=1)
    grad_y = randn(y.shape, torch.float32)  # NCHW; y is channels_last (the weight is)
    assert grad_y.stride() != y.stride()
    gx, = torch.autograd.grad(y, x, grad_y)
    assert gx.shape == x.shape
    assert_grad_close(gx, reference_grad_x(x, w, b, grad_y, padding=1), torch.float32, 54)
    assert len(used) == 1


def test_nan_and_inf_reach_exactly_the_pixels_that_read_them():
    x = randn((1, 3, 6, 6), torch.float32).requires_grad_()
    w = (randn((4, 3, 3, 3), torch.float32) / 5).requires_grad_()
    b = randn((4,), torch.float32).requires_grad_()
    y = elutriton.conv2d_bias_elu(x, w, b, padding=1)
    grad_y = randn(y.shape, torch.float32)
    grad_y[0, 1, 2, 3] = float("nan")
    grad_y[0, 2, 5, 0] = float("inf")
    gx, = torch.autograd.grad(y, x, grad_y)
    expected = reference_grad_x(x, w, b, grad_y, padding=1)
    # the NaN/inf output pixel's 3x3 neighbourhood (every channel) is non-finite, the rest not
    assert torch.equal(~torch.isfinite(gx), ~torch.isfinite(expected))
    assert (~torch.isfinite(gx)).sum() == 3 * (9 + 4)
    finite = torch.isfinite(expected)
    assert_grad_close(gx[finite], expected[finite], torch.float32, 36)


def test_empty_batch_and_determinism():
    x = randn((0, 3, 5, 5), torch.float16).requires_grad_()
    w = randn((4, 3, 3, 3), torch.float16).requires_grad_()
    b = randn((4,), torch.float16).requires_grad_()
    y = elutriton.conv2d_bias_elu(x, w, b, padding=1)
    gx, gw, gb = torch.autograd.grad(y, (x, w, b), torch.ones_like(y))
    assert gx.shape == x.shape and gx.numel() == 0
    assert torch.equal(gw, torch.zeros_like(gw)) and torch.equal(gb, torch.zeros_like(gb))
    torch.manual_seed(3)
    first = run_case(torch.float16, 2, 3, (7, 9), 40, (3, 3), 1, 1, input_grad=True)
    torch.manual_seed(3)
    again = run_case(torch.float16, 2, 3, (7, 9), 40, (3, 3), 1, 1, input_grad=True)
    for a, b in zip(first, again):
        assert torch.equal(a, b)  # same inputs, same plan: bitwise equal


def test_gradcheck_in_float64(monkeypatch):
    # (double backward takes the cuDNN path: test_conv_weight_grad.py, test_double_backward.py)
    used = spy(monkeypatch)
    x = randn((1, 2, 5, 6), torch.float64).requires_grad_()
    w = (randn((3, 2, 3, 3), torch.float64) * 0.4).requires_grad_()
    b = randn((3,), torch.float64).requires_grad_()
    for conv in (dict(padding=1), dict(stride=2, dilation=(1, 2), padding=(2, 1))):
        fn = lambda x, w, b: elutriton.conv2d_bias_elu(x, w, b, alpha=0.8, **conv)  # noqa: E731
        assert torch.autograd.gradcheck(fn, (x, w, b))
    assert len(used) == 2  # one plan per convolution, both the Triton input gradient
