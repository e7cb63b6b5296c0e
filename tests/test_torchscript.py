"""elutriton's modules under torch.jit.script: each scripts to torch's composite of what it
computes (nn/layers.py, nn/activation.py), equal to the unfused float64 function, with torch's
gradients, leaving the eager module as it was; a saved script loads without elutriton."""
import subprocess
import sys
import warnings

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import elutriton
from tests.reference import DEVICE, SELU, randn

aten = torch.ops.aten


def script(module):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # torch 2.13 deprecates TorchScript
        return torch.jit.script(module)


def assert_matches(actual, expected, rtol=2e-6, atol=2e-6):
    """Values (NaN where expected is NaN, infinities and the sign of zero included)."""
    expected = expected.to(actual.dtype)
    torch.testing.assert_close(actual, expected, rtol=rtol, atol=atol, equal_nan=True)
    zeros = expected == 0
    assert torch.equal(torch.signbit(actual[zeros]), torch.signbit(expected[zeros]))


ACTIVATIONS = [
    (lambda: elutriton.nn.ELU(0.7), lambda z: F.elu(z, 0.7)),
    (lambda: elutriton.nn.ELU(-0.5, inplace=True), lambda z: F.elu(z, -0.5)),
    (lambda: elutriton.nn.SELU(), torch.selu),
    (lambda: elutriton.nn.SELU(inplace=True), torch.selu),
    (lambda: elutriton.nn.CELU(2.0), lambda z: F.celu(z, 2.0)),
    (lambda: elutriton.nn.CELU(0.5, inplace=True), lambda z: F.celu(z, 0.5)),
]


@pytest.mark.parametrize("make, reference", ACTIVATIONS)
def test_activation_modules_script_to_torchs_op(make, reference):
    module = make()
    scripted = script(module)
    x = randn((3, 5, 7), torch.float32, special=True)[:, 1:, ::2]  # odd sizes, not contiguous
    expected = reference(x.double())
    given = x.clone()
    y = scripted(given)
    assert_matches(y, expected)
    if module.inplace:  # writes its input, as torch's in-place activation does
        assert y.data_ptr() == given.data_ptr()
    else:
        assert torch.equal(given.nan_to_num(), x.nan_to_num())
    assert type(module) is type(make())  # the eager module is not replaced
    assert_matches(module(x.clone()), expected)


@pytest.mark.parametrize("dim, shape", [(1, (2, 5, 3, 4)), (-1, (3, 4, 5)), (0, (5,))])
def test_bias_elu_module_scripts_to_the_add_and_elu(dim, shape):
    module = elutriton.nn.BiasELU(5, alpha=0.6, scale=1.7, input_scale=0.8, dim=dim).to(DEVICE)
    with torch.no_grad():
        module.bias.normal_()
    scripted = script(module)
    x = randn(shape, torch.float32, special=True).requires_grad_()
    y = scripted(x)
    view = [1] * len(shape)
    view[dim] = 5
    x64 = x.detach().double().requires_grad_()
    b64 = module.bias.detach().double().requires_grad_()
    expected = aten.elu(x64 + b64.view(view), 0.6, 1.7, 0.8)
    assert_matches(y, expected)
    grad_y = torch.randn_like(y)
    y.backward(grad_y)
    expected.backward(grad_y.double())
    finite = x64.grad.isfinite()
    torch.testing.assert_close(x.grad[finite], x64.grad[finite].float(), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("x_shape, error, problem", [
    ((2, 4, 3), ValueError, "size along `dim`"),
    ((2,), IndexError, "out of range"),
    ((), IndexError, "out of range"),
])
def test_scripted_bias_elu_raises_where_the_op_raises(x_shape, error, problem):
    module = elutriton.nn.BiasELU(5).to(DEVICE)
    with pytest.raises(error):
        module(torch.randn(x_shape, device=DEVICE))
    with pytest.raises(torch.jit.Error, match=problem):
        script(module)(torch.randn(x_shape, device=DEVICE))


def test_scripted_bias_elu_does_not_broadcast_or_promote():
    """A length-1 bias would broadcast over any channel count, and an fp32 bias would promote an
    fp16 input, under a plain add: the scripted module raises, as the public op does."""
    one = elutriton.nn.BiasELU(1).to(DEVICE)
    with pytest.raises(ValueError):
        one(torch.randn(2, 3, device=DEVICE))
    with pytest.raises(torch.jit.Error, match="size along `dim`"):
        script(one)(torch.randn(2, 3, device=DEVICE))
    module = elutriton.nn.BiasELU(3).to(DEVICE)
    half = torch.randn(2, 3, device=DEVICE).half()
    with pytest.raises(TypeError):
        module(half)
    with pytest.raises(torch.jit.Error, match="dtype and device"):
        script(module)(half)


CONVS = [
    dict(),
    dict(stride=2, padding=1),
    dict(padding=(2, 0), dilation=(1, 2)),
    dict(padding="same", dilation=2),
    dict(padding="valid", groups=3, bias=False),
    dict(padding=1, padding_mode="reflect"),
    dict(padding=(1, 2), padding_mode="circular", stride=(2, 1)),
    dict(padding="same", padding_mode="replicate"),
]


@pytest.mark.parametrize("kwargs", CONVS)
@pytest.mark.parametrize("params", [(1.0, 1.0, 1.0), (SELU["alpha"], SELU["scale"], 1.0),
                                    (2.0, 1.0, 0.5)])
def test_conv2d_elu_scripts_to_the_conv_and_elu(kwargs, params):
    alpha, scale, input_scale = params
    layer = elutriton.nn.Conv2dELU(6, 9, 3, alpha=alpha, scale=scale, input_scale=input_scale,
                                   **kwargs).to(DEVICE)
    scripted = script(layer)
    x = randn((2, 6, 9, 8), torch.float32, special=True)
    x = x.to(memory_format=torch.channels_last)[:, :, :, 1:]  # odd width, sliced
    x.requires_grad_()
    y = scripted(x)
    params64 = {name: p.detach().double().requires_grad_() for name, p in
                layer.named_parameters()}
    x64 = x.detach().double().requires_grad_()
    conv64 = nn.Conv2d(6, 9, 3, **kwargs).double().to(DEVICE)
    z = conv64._conv_forward(x64, params64["weight"], params64.get("bias"))
    expected = aten.elu(z, alpha, scale, input_scale)
    finite = expected.isfinite()
    assert torch.equal(y.isnan(), expected.isnan())
    torch.testing.assert_close(y[finite], expected[finite].float(), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(layer(x).detach(), y.detach(), rtol=1e-5, atol=1e-5,
                               equal_nan=True)
    # gradients: on finite inputs (a NaN or infinity makes the whole conv gradient NaN)
    x = torch.randn(2, 6, 9, 8, device=DEVICE).requires_grad_()
    x64 = x.detach().double().requires_grad_()
    grad_y = None
    for module, inp in ((scripted, x), (None, x64)):
        if module is None:
            out = aten.elu(conv64._conv_forward(inp, params64["weight"], params64.get("bias")),
                           alpha, scale, input_scale)
        else:
            out = module(inp)
        if grad_y is None:
            grad_y = torch.randn_like(out)
        out.backward(grad_y.to(out.dtype))
    torch.testing.assert_close(x.grad, x64.grad.float(), rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(layer.weight.grad, params64["weight"].grad.float(), rtol=1e-4,
                               atol=1e-4)


@pytest.mark.parametrize("bias", [True, False])
def test_linear_elu_scripts_to_the_linear_and_elu(bias):
    layer = elutriton.nn.LinearELU(7, 5, bias=bias, **SELU).to(DEVICE)
    scripted = script(layer)
    x = randn((3, 4, 9), torch.float32, special=True)[:, :, 1:8]  # 3-D, sliced
    expected = torch.selu(F.linear(x.double(), layer.weight.double(),
                                   None if layer.bias is None else layer.bias.double()))
    y = scripted(x)
    assert torch.equal(y.isnan(), expected.isnan())
    finite = expected.isfinite()
    torch.testing.assert_close(y[finite], expected[finite].float(), rtol=1e-5, atol=1e-5)


def test_scripted_linear_with_a_folded_batchnorm1d_refuses_3d_input():
    model = nn.Sequential(nn.Linear(4, 3), nn.BatchNorm1d(3), nn.ELU()).to(DEVICE).eval()
    fused, _ = elutriton.fuse(model)
    scripted = script(fused)
    x = torch.randn(5, 4, device=DEVICE)
    torch.testing.assert_close(scripted(x), model(x), rtol=1e-5, atol=1e-6)
    with pytest.raises(torch.jit.Error, match="BatchNorm1d folded in"):
        scripted(torch.randn(2, 5, 4, device=DEVICE))


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 8, 3, padding=1)
        self.act1 = nn.ELU()
        self.conv2 = nn.Conv2d(8, 8, 3, padding=1, padding_mode="reflect")
        self.bn = nn.BatchNorm2d(8)
        self.drop = nn.Identity()
        self.act2 = nn.SELU()
        self.fc = nn.Linear(8, 5)
        self.act3 = nn.CELU(0.5)

    def forward(self, x):
        x = self.act2(self.drop(self.bn(self.conv2(self.act1(self.conv1(x))))))
        return self.act3(self.fc(x.mean((2, 3))))


class FunctionalNet(Net):
    """Functional activations: fuse returns the traced GraphModule."""

    def forward(self, x):
        x = F.selu(self.bn(self.conv2(F.elu(self.conv1(x)))))
        return F.celu(self.fc(x.mean((2, 3))), 0.5)


@pytest.mark.parametrize("cls", [Net, FunctionalNet])
def test_a_fused_model_scripts_to_the_unfused_function(cls, tmp_path):
    """Both of fuse's results (the model's own class, a GraphModule) script; the script equals
    the model before fusing, the fused eager model is unchanged by scripting, and a saved
    script loads and runs in a process that never imports elutriton."""
    model = cls().to(DEVICE).eval()
    with torch.no_grad():
        model.bn.running_mean.normal_()
        model.bn.running_var.uniform_(0.5, 2.0)
    fused, report = elutriton.fuse(model)
    assert len(report.fused) == 3, report
    scripted = script(fused)
    x = torch.randn(2, 3, 7, 6, device=DEVICE)
    expected = model(x)
    torch.testing.assert_close(scripted(x), expected, rtol=1e-5, atol=1e-5)
    assert isinstance(fused.conv1, elutriton.nn.Conv2dELU)
    assert isinstance(fused.conv2, elutriton.nn.Conv2dELU)
    torch.testing.assert_close(fused(x), expected, rtol=1e-5, atol=1e-5)
    path = tmp_path / "scripted.pt"
    torch.jit.save(scripted, str(path))
    torch.save({"x": x.cpu(), "y": expected.detach().cpu()}, tmp_path / "io.pt")
    check = (
        "import sys, torch\n"
        f"m = torch.jit.load({str(path)!r}, map_location='cpu')\n"
        f"io = torch.load({str(tmp_path / 'io.pt')!r})\n"
        "torch.testing.assert_close(m(io['x']), io['y'], rtol=1e-5, atol=1e-5)\n"
        "assert not [name for name in sys.modules if name.startswith('elutriton')]\n"
        "print('loaded')\n")
    done = subprocess.run([sys.executable, "-c", check], capture_output=True, text=True,
                          timeout=300, cwd=tmp_path)
    assert done.returncode == 0 and "loaded" in done.stdout, done.stderr[-2000:]


def test_scripting_keeps_the_eager_layers_memo_working():
    """The eager layer still runs elutriton's call (its memo fills) before and after it is
    scripted; the script holds the same parameters (an update shows in both)."""
    layer = elutriton.nn.Conv2dELU(3, 4, 3, padding=1).to(DEVICE)
    x = torch.randn(2, 3, 5, 5, device=DEVICE)
    with torch.no_grad():
        layer(x)
    assert layer._direct
    scripted = script(layer)
    with torch.no_grad():
        layer.weight.mul_(2)
        torch.testing.assert_close(scripted(x), layer(x), rtol=1e-5, atol=1e-5)
    assert layer._direct and type(layer) is elutriton.nn.Conv2dELU
