"""The ELU-family parameter rules (elutriton/params.py) on every path: overflow of the
compute dtype, construction-time checks of the modules, the shared SELU/CELU forms."""
import pytest
import torch

import elutriton
from elutriton import params
from tests.fallback import force_pytorch_fallback
from tests.reference import SELU, assert_close, randn, ref_bias_elu


def _calls(dtype):
    x = randn((2, 3, 4, 4), dtype)
    w = randn((3, 3, 1, 1), dtype)
    h, lw = randn((2, 3), dtype), randn((4, 3), dtype)
    yield "elu", lambda **p: elutriton.elu(x, **p)
    yield "elu_", lambda **p: elutriton.elu(x.clone(), inplace=True, **p)
    yield "bias_elu", lambda **p: elutriton.bias_elu(x, randn((3,), dtype), **p)
    yield "conv", lambda **p: elutriton.conv2d_bias_elu(x, w, **p)
    yield "linear", lambda **p: elutriton.linear_bias_elu(h, lw, **p)


@pytest.mark.parametrize("fallback", [False, True], ids=["kernels", "fallback"])
@pytest.mark.parametrize("name", ["alpha", "scale", "input_scale"])
def test_parameters_that_overflow_the_compute_dtype_are_refused(name, fallback, monkeypatch):
    if fallback:
        force_pytorch_fallback(monkeypatch)
    for dtype in (torch.float16, torch.bfloat16, torch.float32):
        for op, call in _calls(dtype):
            with pytest.raises(ValueError, match=f"`{name}`=1e\\+300 overflows float32"):
                call(**{name: 1e300})
            with pytest.raises(ValueError, match=f"`{name}`=-1e\\+39 overflows float32"):
                call(**{name: -1e39})
    for op, call in _calls(torch.float64):  # float64 holds it
        call(**{name: 1e300}) if name != "input_scale" else call(input_scale=1e-300)
    with pytest.raises(ValueError, match="`alpha`=1e\\+300 overflows float32"):
        elutriton.celu(randn((3,), torch.float32), alpha=1e300)


def test_largest_float32_parameter_is_accepted():
    x = randn((16,), torch.float32, special=True)
    big = float(torch.finfo(torch.float32).max)
    assert_close(elutriton.elu(x, scale=big / 4), ref_bias_elu(x, None, 1.0, big / 4))


def test_modules_check_parameters_at_construction():
    with pytest.raises(ValueError, match="`alpha`"):
        elutriton.nn.ELU(alpha=float("nan"))
    with pytest.raises(ValueError, match="`alpha` must be nonzero"):
        elutriton.nn.CELU(alpha=0.0)
    with pytest.raises(TypeError, match="`alpha`"):
        elutriton.nn.BiasELU(4, alpha="1")
    with pytest.raises(ValueError, match="`scale`"):
        elutriton.nn.Conv2dELU(3, 4, 3, scale=float("inf"))
    with pytest.raises(ValueError, match="`input_scale`"):
        elutriton.nn.LinearELU(3, 4, input_scale=float("nan"))


def test_one_set_of_family_parameters():
    assert params.selu_params() == (SELU["alpha"], SELU["scale"], 1.0)
    assert params.celu_params(2.0) == (2.0, 1.0, 0.5)
    assert params.elu_params(0.3) == (0.3, 1.0, 1.0)
    assert params.module_params(torch.nn.SELU()) == params.selu_params()
    assert params.module_params(torch.nn.CELU(0.5)) == (0.5, 1.0, 2.0)
    assert not params.result_backward_valid(-0.1, 1.0, 1.0)
    assert params.result_backward_valid(0.0, 1.0, 1.0)
