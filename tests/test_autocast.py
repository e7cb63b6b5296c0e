"""torch.autocast: the fused conv and linear cast their tensors as F.conv2d/F.linear do.

On CPU the autocast device type is "cpu" (fp16 and bf16 are both supported there); on a GPU
the tensors are CUDA tensors and the autocast device type is "cuda". The reference is the
unfused composite in float64 on the inputs cast to the autocast dtype, i.e. exactly what the
kernel was given.
"""
import pytest
import torch
import torch.nn.functional as F

import elutriton
from tests.reference import DEVICE, GEMM_TOLERANCES, assert_close, assert_grad_close, randn

DEVICE_TYPE = torch.device(DEVICE).type


# Both paths of the per-shape choice (conftest.py: gemm_path)
pytestmark = pytest.mark.usefixtures("gemm_path")


def conv_inputs():
    x = randn((2, 5, 7, 6), torch.float32, special=True)
    w = (randn((6, 5, 3, 3), torch.float32) / 6).requires_grad_()
    b = randn((6,), torch.float32).requires_grad_()
    return x, w, b


@pytest.mark.records_grad
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_conv_under_autocast_runs_in_the_autocast_dtype(dtype):
    x, w, b = conv_inputs()
    with torch.autocast(DEVICE_TYPE, dtype=dtype):
        y = elutriton.conv2d_bias_elu(x, w, b, padding=1, alpha=0.7)
        expected_dtype = F.conv2d(x, w, b, padding=1).dtype
    assert y.dtype == expected_dtype == dtype
    z = F.conv2d(x.to(dtype).double(), w.to(dtype).double(), b.to(dtype).double(), padding=1)
    assert_close(y, F.elu(z, 0.7), tolerances=GEMM_TOLERANCES)


@pytest.mark.records_grad
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_conv_gradients_under_autocast_reach_the_fp32_parameters(dtype):
    x = randn((2, 5, 7, 6), torch.float32)
    w = (randn((6, 5, 3, 3), torch.float32) / 6).requires_grad_()
    b = randn((6,), torch.float32).requires_grad_()
    grad_y = randn((2, 6, 7, 6), torch.float32)
    with torch.autocast(DEVICE_TYPE, dtype=dtype):
        y = elutriton.conv2d_bias_elu(x, w, b, padding=1)
    got = torch.autograd.grad(y, (w, b), grad_y.to(dtype))
    # float64 reference of the same function: the casts to dtype, then the conv and ELU
    wd, bd = w.detach().double().requires_grad_(), b.detach().double().requires_grad_()
    yd = F.elu(F.conv2d(x.to(dtype).double(), wd.to(dtype).double(), bd.to(dtype).double(),
                        padding=1))
    expected = torch.autograd.grad(yd, (wd, bd), grad_y.to(dtype).double())
    for g, e in zip(got, expected):
        assert g.dtype == torch.float32
        error = ((g.double() - e).norm() / e.norm()).item()
        assert error < (5e-3 if dtype == torch.float16 else 3e-2), error


def test_linear_under_autocast_and_plans_that_must_miss_it():
    x = randn((9, 13), torch.float32, special=True)
    w, b = randn((11, 13), torch.float32) / 4, randn((11,), torch.float32)
    with torch.autocast(DEVICE_TYPE, dtype=torch.float16):
        y16 = elutriton.linear_bias_elu(x, w, b, alpha=1.5)
    assert y16.dtype == torch.float16
    z16 = F.linear(x.half().double(), w.half().double(), b.half().double())
    assert_close(y16, F.elu(z16, 1.5), tolerances=GEMM_TOLERANCES)
    # the same call outside autocast: fp32 again (a plan made for fp16 must not serve it)
    y32 = elutriton.linear_bias_elu(x, w, b, alpha=1.5)
    assert y32.dtype == torch.float32
    assert_close(y32, F.elu(F.linear(x.double(), w.double(), b.double()), 1.5),
                 tolerances=GEMM_TOLERANCES)
    # and under another autocast dtype: bf16 (plans are keyed by the autocast dtype)
    with torch.autocast(DEVICE_TYPE, dtype=torch.bfloat16):
        y_bf16 = elutriton.linear_bias_elu(x, w, b, alpha=1.5)
    assert y_bf16.dtype == torch.bfloat16
    z_bf16 = F.linear(x.bfloat16().double(), w.bfloat16().double(), b.bfloat16().double())
    assert_close(y_bf16, F.elu(z_bf16, 1.5), tolerances=GEMM_TOLERANCES)


@pytest.mark.parametrize("op", ["linear", "conv"])
def test_library_path_composites_leave_the_casts_to_torch(op, gemm_path, monkeypatch):
    """Where a call runs torch's composite (the library path's linear, with or without
    autograd; its conv with autograd), elutriton casts nothing in Python under autocast: torch's
    convolution and linear cast their arguments in C++ (elutriton/_autocast.py)."""
    if gemm_path != "fused":
        pytest.skip("sets the path itself: runs once")
    from elutriton import _autocast
    monkeypatch.setenv("ELUTRITON_PATH", "library")
    monkeypatch.setenv("ELUTRITON_BACKWARD", "cudnn")
    casts = []
    real = _autocast._cast
    monkeypatch.setattr(_autocast, "_cast", lambda *a: casts.append(1) or real(*a))
    if op == "linear":
        x = randn((6, 10), torch.float32)
        w = (randn((5, 10), torch.float32) / 3).requires_grad_()
        b = randn((5,), torch.float32).requires_grad_()
        call = lambda: elutriton.linear_bias_elu(x, w, b, alpha=0.5)  # noqa: E731
        reference = lambda x, w, b: F.elu(F.linear(x, w, b), 0.5)  # noqa: E731
    else:
        x, w, b = conv_inputs()
        call = lambda: elutriton.conv2d_bias_elu(x, w, b, padding=1, alpha=0.5)  # noqa: E731
        reference = lambda x, w, b: F.elu(F.conv2d(x, w, b, padding=1), 0.5)  # noqa: E731
    with torch.autocast(DEVICE_TYPE, dtype=torch.bfloat16):
        call()  # the plan is made from cast tensors, once
        casts.clear()
        y = call()
        expected = reference(x, w, b)  # eager PyTorch under the same autocast
    assert casts == [] and y.dtype == torch.bfloat16
    torch.testing.assert_close(y, expected, atol=0, rtol=0, equal_nan=True)
    grad_y = randn(y.shape, torch.bfloat16)
    for got, want in zip(torch.autograd.grad(y, (w, b), grad_y),
                         torch.autograd.grad(expected, (w, b), grad_y)):
        assert got.dtype == torch.float32  # reached the fp32 parameters through torch's casts
        # the in-place ELU's derivative comes from y, eager's from z: bf16 rounding apart
        assert_grad_close(got, want, torch.bfloat16, n_terms=y.numel() // y.shape[1])


def test_autocast_leaves_float64_alone():
    x, w, b = (t.detach() for t in conv_inputs())
    with torch.autocast(DEVICE_TYPE, dtype=torch.float16):  # float64 is not cast, as in torch
        y64 = elutriton.conv2d_bias_elu(x.double(), w.double(), b.double(), padding=1)
    assert y64.dtype == torch.float64


@pytest.mark.gpu
def test_an_autocast_region_of_another_device_type_casts_nothing():
    x, w = randn((4, 9), torch.float32), randn((3, 9), torch.float32)
    with torch.autocast("cpu", dtype=torch.bfloat16):  # CUDA tensors: not this region's
        y = elutriton.linear_bias_elu(x, w)
    assert y.dtype == torch.float32


@pytest.mark.records_grad
def test_fused_module_under_autocast_matches_the_unfused_one():
    torch.manual_seed(1)
    model = torch.nn.Sequential(torch.nn.Linear(16, 12), torch.nn.SELU(),
                                torch.nn.Linear(12, 8), torch.nn.ELU()).to(DEVICE)
    fused, _ = elutriton.fuse(model)
    x = randn((5, 16), torch.float32)
    with torch.autocast(DEVICE_TYPE, dtype=torch.float16):
        expected = model(x)
        actual = fused(x)
    assert actual.dtype == expected.dtype == torch.float16
    torch.testing.assert_close(actual, expected, atol=4e-3, rtol=4e-3)


def test_library_conv_without_autograd_casts_only_the_bias(gemm_path, monkeypatch):
    """The library path's conv without autograd under autocast: F.conv2d casts x and the
    weight itself; elutriton casts only the bias, which its bias+ELU kernel reads in y's dtype.
    A call that needs the layout copy of 'same' padding casts in Python as before."""
    if gemm_path != "fused":
        pytest.skip("sets the path itself: runs once")
    from elutriton import _autocast
    monkeypatch.setenv("ELUTRITON_PATH", "library")
    casts = []
    real = _autocast._cast
    monkeypatch.setattr(_autocast, "_cast", lambda *a: casts.append(1) or real(*a))
    x, w, b = (t.detach() for t in conv_inputs())
    for unbatched in (False, True):
        xi = x[0] if unbatched else x
        with torch.no_grad(), torch.autocast(DEVICE_TYPE, dtype=torch.bfloat16):
            elutriton.conv2d_bias_elu(xi, w, b, padding=1, alpha=0.5)  # plans, from casts
            casts.clear()
            y = elutriton.conv2d_bias_elu(xi, w, b, padding=1, alpha=0.5)
        assert casts == [1] and y.dtype == torch.bfloat16 and y.shape[-3:] == (6, 7, 6)
        expected = F.elu(F.conv2d(*(t.bfloat16().double() for t in (xi, w, b)), padding=1), 0.5)
        assert_close(y, expected, tolerances=GEMM_TOLERANCES)
    with torch.no_grad(), torch.autocast(DEVICE_TYPE, dtype=torch.bfloat16):
        w2 = randn((6, 5, 2, 2), torch.float32) / 4
        elutriton.conv2d_bias_elu(x, w2, b, padding="same")
        casts.clear()
        y = elutriton.conv2d_bias_elu(x, w2, b, padding="same")
    assert len(casts) == 3  # x, weight and bias: the padded copy's plan is per call
    expected = F.elu(F.conv2d(*(t.bfloat16().double() for t in (x, w2, b)), padding="same"))
    assert_close(y, expected, tolerances=GEMM_TOLERANCES)


@pytest.mark.parametrize("op", ["linear", "conv"])
def test_pytorch_fallback_leaves_the_casts_to_torch(op, monkeypatch):
    """On a device without the kernels (CPU without TRITON_INTERPRET) the whole call is torch's
    composite: under autocast it gets the tensors as given and torch casts them in C++, so a
    fused model costs no Python casts (each was ~1-3 us per tensor on CPU). Same values as eager
    PyTorch, gradients in the parameters' fp32."""
    from elutriton import _autocast
    from elutriton.ops import conv2d as conv_ops
    from elutriton.ops import linear as linear_ops
    monkeypatch.setattr(conv_ops, "use_triton", lambda tensor: False)
    monkeypatch.setattr(linear_ops, "use_triton", lambda tensor: False)
    elutriton.clear_plans()
    casts = []
    real = _autocast._cast
    monkeypatch.setattr(_autocast, "_cast", lambda *a: casts.append(1) or real(*a))
    if op == "linear":
        x = randn((2, 3, 10), torch.float32, special=True).cpu()
        w = (randn((5, 10), torch.float32) / 3).cpu().requires_grad_()
        b = randn((5,), torch.float32).cpu().requires_grad_()
        call = lambda: elutriton.linear_bias_elu(x, w, b, alpha=0.5)  # noqa: E731
        reference = lambda: F.elu(F.linear(x, w, b), 0.5)  # noqa: E731
    else:
        x, w, b = (t.detach().cpu() for t in conv_inputs())
        x = x.to(memory_format=torch.channels_last)
        w.requires_grad_()
        b.requires_grad_()
        call = lambda: elutriton.conv2d_bias_elu(x, w, b, padding=1, alpha=0.5)  # noqa: E731
        reference = lambda: F.elu(F.conv2d(x, w, b, padding=1), 0.5)  # noqa: E731
    with torch.autocast("cpu", dtype=torch.bfloat16):
        call()  # the plan is made (and validated) from cast tensors, once
        casts.clear()
        y = call()
        expected = reference()
    assert casts == [] and y.dtype == torch.bfloat16
    torch.testing.assert_close(y, expected, atol=0, rtol=0, equal_nan=True)
    assert y.stride() == expected.stride()
    grad_y = randn(y.shape, torch.bfloat16).cpu()
    for got, want in zip(torch.autograd.grad(y, (w, b), grad_y),
                         torch.autograd.grad(expected, (w, b), grad_y)):
        assert got.dtype == torch.float32
        # the in-place ELU's derivative comes from y, eager's from z: bf16 rounding apart
        channels = y.shape[-1] if op == "linear" else y.shape[1]
        assert_grad_close(got, want, torch.bfloat16, n_terms=y.numel() // channels)


def test_device_type_of_reads_the_device_type():
    """``_autocast.device_type_of``: ``x.device.type`` for tensors (read through is_cuda /
    is_cpu where it can), None for anything else."""
    from elutriton._autocast import device_type_of

    class Sub(torch.Tensor):
        pass
    cpu = torch.zeros(2)
    for t, expected in [(cpu, "cpu"), (torch.nn.Parameter(cpu), "cpu"),
                        (cpu.as_subclass(Sub), "cpu"), (torch.zeros(2, device="meta"), "meta"),
                        (None, None), ([1.0], None), (2.0, None)]:
        assert device_type_of(t) == expected
    if torch.cuda.is_available():
        assert device_type_of(torch.zeros(2, device="cuda")) == "cuda"
