"""Conv2dELU / LinearELU modules: drop-in for nn.Conv2d / nn.Linear + activation."""
import pytest
import torch

import elutriton
from elutriton.nn import Conv2dELU, LinearELU
from tests.reference import DEVICE, GEMM_TOLERANCES, GRAD_TOLERANCES, assert_close, randn

ACTIVATIONS = [torch.nn.ELU(0.8), torch.nn.SELU(inplace=True), torch.nn.CELU(1.7)]


@pytest.mark.parametrize("activation", ACTIVATIONS, ids=["elu", "selu", "celu"])
@pytest.mark.parametrize("padding_mode", ["zeros", "reflect", "circular", "replicate"])
def test_conv2d_elu_from_modules(activation, padding_mode):
    conv = torch.nn.Conv2d(4, 6, 3, stride=1, padding=1, groups=2,
                           padding_mode=padding_mode).to(DEVICE)
    fused = Conv2dELU.from_modules(conv, activation)
    assert isinstance(fused, torch.nn.Conv2d)
    assert list(fused.state_dict()) == list(conv.state_dict()) == ["weight", "bias"]
    x = randn((2, 4, 7, 6), torch.float32)
    expected = activation(conv(x.double().to(torch.float32)).double())
    assert_close(fused(x), expected, dtype=torch.float32, tolerances=GEMM_TOLERANCES)


def test_conv2d_elu_state_dict_round_trip_and_training():
    conv = torch.nn.Conv2d(3, 5, (3, 2), padding="same", bias=True).to(DEVICE)
    fused = Conv2dELU(3, 5, (3, 2), padding="same", alpha=0.5, device=DEVICE)
    fused.load_state_dict(conv.state_dict())
    restored = torch.nn.Conv2d(3, 5, (3, 2), padding="same", device=DEVICE)
    restored.load_state_dict(fused.state_dict())
    assert torch.equal(restored.weight, conv.weight) and torch.equal(restored.bias, conv.bias)
    x = randn((2, 3, 6, 5), torch.float32)
    expected = torch.nn.functional.elu(conv(x), 0.5)
    assert_close(fused(x), expected.double(), dtype=torch.float32, tolerances=GEMM_TOLERANCES)
    fused(x).square().sum().backward()
    conv_ref = torch.nn.Conv2d(3, 5, (3, 2), padding="same", device=DEVICE)
    conv_ref.load_state_dict(conv.state_dict())
    torch.nn.functional.elu(conv_ref(x), 0.5).square().sum().backward()
    for got, want in [(fused.weight.grad, conv_ref.weight.grad), (fused.bias.grad, conv_ref.bias.grad)]:
        torch.testing.assert_close(got, want, atol=1e-4, rtol=1e-4)
    assert "alpha=0.5" in repr(fused)


@pytest.mark.parametrize("activation", ACTIVATIONS, ids=["elu", "selu", "celu"])
def test_linear_elu_from_modules(activation):
    linear = torch.nn.Linear(12, 7, device=DEVICE)
    fused = LinearELU.from_modules(linear, activation)
    assert isinstance(fused, torch.nn.Linear)
    assert list(fused.state_dict()) == ["weight", "bias"]
    x = randn((3, 4, 12), torch.float32)
    assert_close(fused(x), activation(linear(x)).double(), dtype=torch.float32,
                 tolerances=GEMM_TOLERANCES)
    xg = x.detach().requires_grad_()
    (gx,) = torch.autograd.grad(fused(xg).sum(), xg)
    xr = x.detach().requires_grad_()
    (rx,) = torch.autograd.grad(activation(linear(xr)).sum(), xr)
    assert_close(gx, rx.double(), dtype=torch.float32, tolerances=GRAD_TOLERANCES)


def test_from_modules_keeps_parameter_strides_and_requires_grad():
    """A channels_last conv weight stays channels_last (else every call converts it), a
    transposed linear weight keeps its strides, and frozen parameters stay frozen."""
    conv = torch.nn.Conv2d(4, 6, 3, padding=1).to(DEVICE).to(memory_format=torch.channels_last)
    conv.bias.requires_grad_(False)
    linear = torch.nn.Linear(5, 7, device=DEVICE)
    linear.weight = torch.nn.Parameter(torch.randn(5, 7, device=DEVICE).t(), requires_grad=False)
    for layer, cls in [(conv, Conv2dELU), (linear, LinearELU)]:
        fused = cls.from_modules(layer, torch.nn.ELU())
        for name, source in layer.named_parameters():
            copy = getattr(fused, name)
            assert type(copy) is torch.nn.Parameter, name
            assert copy.stride() == source.stride(), name
            assert copy.requires_grad == source.requires_grad, name
            assert torch.equal(copy, source) and copy.data_ptr() != source.data_ptr(), name
    x = randn((2, 4, 5, 6), torch.float32).to(memory_format=torch.channels_last).requires_grad_()
    fused = Conv2dELU.from_modules(conv, torch.nn.ELU())
    fused(x).sum().backward()
    assert fused.bias.grad is None and fused.weight.grad is not None
    assert conv.weight.is_contiguous(memory_format=torch.channels_last)


def test_from_modules_refuses_layers_it_cannot_reproduce():
    """A weight computed by a pre-hook (weight_norm), extra buffers or hooks would be lost:
    an error naming the reason, never a fused layer with a random weight."""
    with pytest.warns(FutureWarning):
        normed = torch.nn.utils.weight_norm(torch.nn.Conv2d(3, 4, 3))
    with pytest.raises(ValueError, match="weight_g"):
        Conv2dELU.from_modules(normed, torch.nn.ELU())
    hooked = torch.nn.Linear(3, 2)
    hooked.register_forward_hook(lambda *args: None)
    with pytest.raises(ValueError, match="forward hooks"):
        LinearELU.from_modules(hooked, torch.nn.SELU())
    buffered = torch.nn.Linear(3, 2)
    buffered.register_buffer("mask", torch.ones(2, 3))
    with pytest.raises(ValueError, match="buffers"):
        LinearELU.from_layer(buffered)


def test_linear_elu_constructor_and_errors():
    layer = LinearELU(5, 3, bias=False, alpha=2.0, dtype=torch.float64)
    assert layer.bias is None and layer.weight.dtype == torch.float64
    with pytest.raises(TypeError, match="nn.Linear"):
        LinearELU.from_modules(torch.nn.Conv2d(1, 1, 1), torch.nn.ELU())
    with pytest.raises(TypeError, match="nn.ELU, nn.SELU or nn.CELU"):
        LinearELU.from_modules(torch.nn.Linear(2, 2), torch.nn.ReLU())
    with pytest.raises(TypeError, match="nn.Conv2d"):
        Conv2dELU.from_modules(torch.nn.Linear(2, 2), torch.nn.ELU())
    assert elutriton.nn.activation_params(torch.nn.CELU(0.5)) == (0.5, 1.0, 2.0)


def test_drop_ins_take_their_torch_modules_arguments_by_keyword():
    """Model code may call a layer or an activation with its input by keyword (``self.conv(
    input=x)``): the drop-ins' forward names it as torch's does, so such a call, and a model
    fused around one, still runs (a forward named ``x`` raised "unexpected keyword argument
    'input'")."""
    import inspect
    pairs = [(Conv2dELU, torch.nn.Conv2d), (LinearELU, torch.nn.Linear),
             (elutriton.nn.ELU, torch.nn.ELU), (elutriton.nn.SELU, torch.nn.SELU),
             (elutriton.nn.CELU, torch.nn.CELU)]
    for ours, theirs in pairs:
        assert (list(inspect.signature(ours.forward).parameters)
                == list(inspect.signature(theirs.forward).parameters)), ours

    class KeywordCalls(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.conv, self.act = torch.nn.Conv2d(3, 4, 3), torch.nn.ELU()
            self.lin, self.act2 = torch.nn.Linear(4, 2), torch.nn.SELU()

        def forward(self, x):
            y = self.act(input=self.conv(input=x)).mean((2, 3))
            return self.act2(input=self.lin(input=y))

    model = KeywordCalls().to(DEVICE)
    fused, report = elutriton.fuse(model)
    assert len(report.fused) == 2 and isinstance(fused.conv, Conv2dELU)
    x = randn((2, 3, 6, 6), torch.float32)
    assert_close(fused(x), model(x.double().float()).double(), dtype=torch.float32,
                 tolerances=GEMM_TOLERANCES)
    h = randn((3, 4), torch.float32)
    assert_close(elutriton.nn.CELU(0.5)(input=h), torch.nn.CELU(0.5)(h).double(),
                 dtype=torch.float32)
