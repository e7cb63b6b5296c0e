"""``elutriton.fuse`` on randomly built models: the fused model computes what the model did.

tests/test_fuse.py checks each rewrite and skip by hand; here each model is drawn at random
from the pieces real model code is made of (conv with or without bias, groups, padding forms;
BatchNorm2d with running statistics, BatchNorm1d after the linear head, BatchNorms frozen
with ``.eval()`` in a model in training mode; nn.Identity and dropouts between a layer and its
activation; ELU / SELU / CELU modules, torch's or elutriton's, in place or not, ReLU, none;
elutriton Conv2dELU layers; one activation module object held in two places; functional
activations in a custom forward, sometimes with a second user of the pre-activation, after a
conv module or an ``F.conv2d`` call; residual blocks; max
pooling; Linear heads; a wrapper class with a method of its own), in training or eval mode,
fed NCHW or channels_last input, converted with or without ``channels_last=True``. The drawn
generator is seeded by the case number, so a failure names a model that reproduces.

Checked: the output against the unfused model's (fp32, run by the Triton kernels under the
interpreter), the parameter gradients in training mode (looked up by name: fusion keeps the
layers' names), that the user's class and its methods come back unless the report says why a
GraphModule did, and that something was fused or every skip has a reason. A few more models
are compiled (torch.compile, fullgraph) on the PyTorch fallback, where the compiled graph is
torch's composite, and checked the same way against the eager unfused model (120 such models
passed when this was written).
"""
import copy
import random

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import elutriton
from tests.fallback import force_pytorch_fallback

N_MODELS = 60
N_COMPILED = 6
FUNCTIONAL = [lambda z: F.elu(z), lambda z: F.elu(z, 0.7), lambda z: F.selu(z),
              lambda z: torch.selu(z), lambda z: F.celu(z, 1.5)]


def _activation(r):
    kind = r.choice(["elu", "selu", "celu", "relu", None])
    inplace = r.random() < 0.3
    modules = elutriton.nn if r.random() < 0.25 else nn  # torch's or elutriton's drop-ins
    if kind == "elu":
        return modules.ELU(alpha=r.choice([1.0, 0.5, 2.0]), inplace=inplace)
    if kind == "selu":
        return modules.SELU(inplace=inplace)
    if kind == "celu":
        return modules.CELU(alpha=r.choice([1.0, 0.3]), inplace=inplace)
    return nn.ReLU() if kind == "relu" else None


class FunctionalBlock(nn.Module):
    """A layer and a functional activation in forward; with ``reuse`` the pre-activation has a
    second user, so it must not be fused."""

    def __init__(self, layer, activation, reuse):
        super().__init__()
        self.layer, self.activation, self.reuse = layer, activation, reuse

    def forward(self, x):
        z = self.layer(x)
        y = self.activation(z)
        return y + 0.5 * z if self.reuse else y


class Residual(nn.Module):
    def __init__(self, body, activation):
        super().__init__()
        self.body, self.activation = body, activation

    def forward(self, x):
        return self.activation(self.body(x) + x)


class Wrapper(nn.Module):
    def __init__(self, inner):
        super().__init__()
        self.inner = inner

    def forward(self, x):
        return self.inner(x)

    def answer(self):
        return 42


def _batchnorm(r, channels, kind=nn.BatchNorm2d):
    bn = kind(channels)
    bn.running_mean.uniform_(-0.5, 0.5)
    bn.running_var.uniform_(0.5, 2.0)
    bn.weight.data.uniform_(0.5, 1.5)
    bn.bias.data.uniform_(-0.5, 0.5)
    return bn


def _conv_block(r, channels, size):
    """(modules to append, output channels, output size) for a ``size`` x ``size`` input."""
    out = r.choice([channels, 4, 6, 8])
    groups = 2 if channels % 2 == 0 and out % 2 == 0 and r.random() < 0.3 else 1
    kernel = r.choice([1, 2, 3])
    padding = r.choice([0, "same"] + ([1] if kernel == 3 else []))
    if padding == 0 and kernel > size:
        padding = "same"
    if r.random() < 0.2:
        layer = nn.Conv2d(channels, out, 3, padding=1)
        return [FunctionalBlock(layer, r.choice(FUNCTIONAL), r.random() < 0.3)], out, size
    size = size - kernel + 1 if padding == 0 else size
    if r.random() < 0.1:  # a layer fused already (fuse traces it as one call)
        return [elutriton.nn.Conv2dELU(channels, out, kernel, padding=padding, groups=groups,
                                       alpha=r.choice([1.0, 0.5]))], out, size
    modules = [nn.Conv2d(channels, out, kernel, padding=padding, groups=groups,
                         bias=r.random() < 0.7)]
    if r.random() < 0.4:
        modules.append(_batchnorm(r, out))
    if r.random() < 0.3:
        modules.append(r.choice([nn.Identity(), nn.Dropout(0.3), nn.Dropout2d(0.2)]))
    if out == channels and padding == "same" and r.random() < 0.25:
        return [Residual(nn.Sequential(*modules), _activation(r) or nn.ELU())], out, size
    activation = _activation(r)
    modules += [activation] if activation is not None else []
    return ([nn.Sequential(*modules)] if r.random() < 0.5 else modules), out, size


def _draw_model(r, size, extra):
    """``extra``: a generator of its own for pieces added later (so the draws of ``r``, and
    with them the earlier models, stay the same)."""
    layers, channels = [], 3
    for _ in range(r.randint(1, 4)):
        block, channels, size = _conv_block(r, channels, size)
        layers += block
        if size >= 2 and r.random() < 0.3:
            layers.append(nn.MaxPool2d(2, ceil_mode=True))
            size = -(-size // 2)
    layers.append(nn.Flatten())
    layers.append(nn.Linear(channels * size * size, 10, bias=r.random() < 0.8))
    if extra.random() < 0.3:
        layers.append(_batchnorm(extra, 10, nn.BatchNorm1d))
    activation = _activation(r)
    layers += [activation] if activation is not None else []
    if r.random() < 0.3:
        layers.append(nn.Linear(10, 5))
    model = nn.Sequential(*layers)
    return Wrapper(model) if r.random() < 0.3 else model


def _share_an_activation(r, model):
    """Half the time, put one activation module of ``model`` in a second activation's place
    too (code that reuses ``self.act``): a module registered in two places, which fx names by
    the first. Drawn from its own generator, so the models drawn before it stay the same."""
    slots = [(parent, name, child) for parent in model.modules()
             for name, child in parent._modules.items()
             if isinstance(child, (nn.ELU, nn.SELU, nn.CELU, elutriton.nn.ELU, elutriton.nn.SELU,
                                   elutriton.nn.CELU))]
    if len(slots) >= 2 and r.random() < 0.5:
        (_, _, shared), (parent, name, _) = r.sample(slots, 2)
        setattr(parent, name, shared)


class ConvCall(nn.Module):
    """A conv layer written as an ``F.conv2d`` call on a conv module's parameters (fx traces
    through it: the call is a function call in the graph)."""

    def __init__(self, conv):
        super().__init__()
        self.conv = conv

    def forward(self, x):
        conv = self.conv
        return F.conv2d(x, conv.weight, conv.bias, conv.stride, conv.padding, conv.dilation,
                        conv.groups)


def _layers_as_function_calls(r, model):
    """Half the time, write a functional block's conv as an ``F.conv2d`` call. Drawn from its
    own generator, so the models drawn before it stay the same."""
    for module in model.modules():
        if isinstance(module, FunctionalBlock) and r.random() < 0.5:
            module.layer = ConvCall(module.layer)


def _freeze_batchnorms(r, model):
    """Fine-tuning's frozen BatchNorms: in a model in training mode, put some BatchNorms in
    eval mode (fuse must not fold them: the model trains)."""
    for module in model.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm) and r.random() < 0.5:
            module.eval()


def _has_dropout(model):
    return any(isinstance(m, (nn.Dropout, nn.Dropout2d)) for m in model.modules())


def _drawn(case, prefix=""):
    """(model, x, training, the draw's generator) of case ``case`` (``prefix`` names another
    set of draws; "" the original one's)."""
    r = random.Random(f"fuse{prefix}{case}")
    torch.manual_seed(r.randrange(2**31))
    size = 8
    model = _draw_model(r, size, random.Random(f"extra{prefix}{case}"))
    _share_an_activation(random.Random(f"share{prefix}{case}"), model)
    _layers_as_function_calls(random.Random(f"calls{prefix}{case}"), model)
    training = r.random() < 0.5
    model.train(training)
    if training:
        _freeze_batchnorms(random.Random(f"freeze{prefix}{case}"), model)
    x = torch.randn(2, 3, size, size)
    if r.random() < 0.5:
        x = x.contiguous(memory_format=torch.channels_last)
    return model, x, training, r


def _assert_same_gradients(fused, unfused, y, y_ref):
    """Backward of both with one grad_y; each parameter's gradient, looked up by name."""
    grad = torch.randn_like(y_ref)
    y_ref.backward(grad)
    y.backward(grad)
    reference = dict(unfused.named_parameters())
    # a bias before a BatchNorm in training mode has gradient 0 (the batch mean cancels it),
    # computed as a sum of terms of the gradients' size: its rounding scales with them
    scale = max(p.grad.abs().max().item() for p in reference.values() if p.grad is not None)
    compared = 0
    for name, parameter in fused.named_parameters():
        if name in reference and reference[name].grad is not None:
            torch.testing.assert_close(parameter.grad, reference[name].grad,
                                       atol=1e-4 + 1e-5 * scale, rtol=1e-3)
            compared += 1
    assert compared == sum(1 for p in unfused.parameters() if p.grad is not None)


@pytest.mark.parametrize("case", range(N_MODELS))
def test_fuse_random_model(case):
    model, x, training, r = _drawn(case)
    unfused = copy.deepcopy(model)
    fused, report = elutriton.fuse(model, channels_last=r.random() < 0.3)
    assert report.fused or report.skipped or not any(
        isinstance(m, (nn.ELU, nn.SELU, nn.CELU, FunctionalBlock)) for m in model.modules())
    if report.graph_reason is None:
        assert type(fused) is type(model)
        if isinstance(model, Wrapper):
            assert fused.answer() == 42
    y_ref = unfused(x)
    y = fused(x)
    assert y.shape == y_ref.shape
    if training and _has_dropout(unfused):
        return  # dropout in training mode: random masks (and fuse does not look through it)
    torch.testing.assert_close(y, y_ref, atol=1e-5, rtol=1e-4)
    if training:
        _assert_same_gradients(fused, unfused, y, y_ref)


@pytest.mark.parametrize("case", range(N_COMPILED))
def test_compiled_fused_random_model_on_the_fallback(case, monkeypatch):
    force_pytorch_fallback(monkeypatch)
    model, x, training, r = _drawn(case, "compiled")
    unfused = copy.deepcopy(model)
    fused, _ = elutriton.fuse(model, channels_last=r.random() < 0.3)
    torch._dynamo.reset()
    compiled = torch.compile(fused, backend=("aot_eager", "inductor")[case % 2], fullgraph=True)
    y_ref, y = unfused(x), compiled(x)
    if training and _has_dropout(unfused):
        return  # random masks
    torch.testing.assert_close(y, y_ref, atol=1e-5, rtol=1e-4)
    if training:
        _assert_same_gradients(fused, unfused, y, y_ref)
