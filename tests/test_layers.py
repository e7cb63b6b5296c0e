"""Conv2dELU / LinearELU modules: drop-in for nn.Conv2d / nn.Linear + activation."""
import pytest
import torch
from torch.nn.utils import prune

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


def _conv_pair():
    conv = torch.nn.Conv2d(3, 4, 3, padding=1).to(DEVICE)
    fused = Conv2dELU.from_modules(conv, torch.nn.ELU(0.7))
    return (lambda x: torch.nn.functional.elu(conv(x), 0.7)), conv, fused


def _linear_pair():
    linear = torch.nn.Linear(5, 3).to(DEVICE)
    fused = LinearELU.from_modules(linear, torch.nn.SELU())
    return (lambda x: torch.selu(linear(x))), linear, fused


def _prune(layer):
    prune.random_unstructured(layer, "weight", amount=0.5)
    prune.l1_unstructured(layer, "bias", amount=0.5)
    return [layer.weight_orig, layer.bias_orig]


def _weight_norm(layer):
    torch.nn.utils.parametrizations.weight_norm(layer)
    return list(layer.parametrizations.weight.parameters()) + [layer.bias]


def _orthogonal(layer):
    torch.nn.utils.parametrizations.orthogonal(layer)
    return [layer.parametrizations.weight.original, layer.bias]


def _plain_tensor(layer):
    """The weight replaced by a tensor attribute that is not a parameter."""
    weight = layer.weight.detach().clone().mul(1.5).requires_grad_()
    del layer.weight
    layer.weight = weight
    return [weight, layer.bias]


@pytest.mark.parametrize("make", [_conv_pair, _linear_pair], ids=["conv", "linear"])
@pytest.mark.parametrize("transform", [_prune, _weight_norm, _orthogonal, _plain_tensor])
def test_a_weight_that_is_not_the_registered_parameter(make, transform):
    """A fused layer reads its weight and bias from ``_parameters`` (cheaper than the
    attribute): where they are not there (pruned: a tensor a pre-hook computes; parametrized:
    a class property; a plain tensor attribute) it computes with what the attribute gives,
    as the unfused layer does, with the same gradients, also after the tensors change
    between calls (the memo keeps no tensor)."""
    unfused, layer, fused = make()
    torch.manual_seed(0)  # (the same random mask for both)
    leaves = transform(layer)
    torch.manual_seed(0)
    fused_leaves = transform(fused)
    shape = (2, 3, 5, 4) if isinstance(fused, Conv2dELU) else (4, 5)
    for step in range(3):
        x = randn(shape, torch.float32)
        y, expected = fused(x), unfused(x)
        torch.testing.assert_close(y, expected, atol=1e-5, rtol=1e-5)
        grad_y = randn(y.shape, torch.float32)
        got = torch.autograd.grad(y, fused_leaves, grad_y)
        want = torch.autograd.grad(expected, leaves, grad_y)
        for g, w in zip(got, want):
            torch.testing.assert_close(g, w, atol=1e-5, rtol=1e-5)
        with torch.no_grad():  # an optimizer-like step on both
            for a, b in zip(leaves, fused_leaves):
                a.add_(0.1 * step)
                b.add_(0.1 * step)


def test_functional_call_swaps_the_fused_layers_parameters():
    """torch.func.functional_call puts its tensors in ``_parameters`` for the call: the fused
    layer computes with them (a warm memo included), and with its own afterwards."""
    unfused, conv, fused = _conv_pair()
    x = randn((2, 3, 5, 4), torch.float32)
    fused(x)
    other = {"weight": randn(conv.weight.shape, torch.float32),
             "bias": randn(conv.bias.shape, torch.float32)}
    got = torch.func.functional_call(fused, other, (x,))
    expected = torch.nn.functional.elu(torch.func.functional_call(conv, other, (x,)), 0.7)
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(fused(x), unfused(x), atol=1e-5, rtol=1e-5)
