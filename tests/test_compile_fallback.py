"""torch.compile on a device without the kernels (the PyTorch fallback: CPU without
TRITON_INTERPRET) traces torch's composite of every public function and fused layer, so the
compiler sees and fuses the same aten ops as in the unfused model. Before, it traced the
custom ops, which a compiled graph calls back into Python on every run: a compiled fused
model took 2.16x the compiled unfused model's time on CPU (tiny model, inference)."""
import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import elutriton
from tests.fallback import force_pytorch_fallback
from tests.reference import SELU


def _compile(fn, graphs):
    """torch.compile with a backend that keeps dynamo's graphs (then runs them as AOT eager)."""
    from torch._dynamo.backends.common import aot_autograd
    from functorch.compile import make_boxed_func

    def keep(gm, example_inputs):
        graphs.append(gm)
        return aot_autograd(fw_compiler=lambda g, _: make_boxed_func(g.forward))(
            gm, example_inputs)
    torch._dynamo.reset()
    return torch.compile(fn, backend=keep, fullgraph=True)


def _ops(graphs):
    return {str(node.target) for gm in graphs for node in gm.graph.nodes
            if node.op == "call_function"}


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(3, 6, 3, padding=1)
        self.act1 = nn.ELU(0.7)
        self.even = nn.Conv2d(6, 6, 2, padding="same")  # odd total padding
        self.act2 = nn.SELU()
        self.reflect = nn.Conv2d(6, 4, 3, padding=1, padding_mode="reflect")
        self.act3 = nn.CELU(0.5)
        self.head = nn.Linear(4 * 5 * 4, 7)
        self.act4 = nn.ELU()

    def forward(self, x):
        x = self.act3(self.reflect(self.act2(self.even(self.act1(self.stem(x))))))
        return self.act4(self.head(x.flatten(1)))


@pytest.mark.parametrize("train", [False, True])
def test_a_compiled_fused_model_traces_torchs_composite(train, monkeypatch):
    force_pytorch_fallback(monkeypatch)
    from elutriton.nn import layers

    def public_call(*args):
        raise AssertionError("a traced fused layer went through the public call")
    # (the layer traces torch's composite itself: the public call's checks add guards)
    monkeypatch.setattr(layers, "conv2d_bias_elu_call", public_call)
    monkeypatch.setattr(layers, "linear_bias_elu_call", public_call)
    model = Net().train(train)
    fused, report = elutriton.fuse(copy.deepcopy(model))
    assert len(report.fused) == 4
    graphs = []
    compiled = _compile(fused, graphs)
    x = torch.randn(2, 3, 5, 4)
    for _ in range(2):
        y, expected = compiled(x), model(x)
        torch.testing.assert_close(y, expected, rtol=1e-5, atol=1e-6)
    ops = _ops(graphs)
    assert not [op for op in ops if "elutriton" in op], ops
    assert [op for op in ops if "conv2d" in op] and [op for op in ops if "elu" in op], ops
    if train:
        y.sum().backward()
        expected.sum().backward()
        for (name, got), (_, want) in zip(fused.named_parameters(), model.named_parameters()):
            torch.testing.assert_close(got.grad, want.grad, rtol=1e-5, atol=1e-6, msg=name)


@pytest.mark.parametrize("inplace", [False, True])
def test_compiled_public_functions_trace_torchs_composite(inplace, monkeypatch):
    force_pytorch_fallback(monkeypatch)
    w = torch.randn(4, 3, 2, 3) / 3
    lw, b4 = torch.randn(5, 64) / 8, torch.randn(4)

    def fn(x):
        y = elutriton.conv2d_bias_elu(x, w, b4, padding="same", alpha=0.7)
        y = elutriton.bias_elu(y, b4, *SELU.values(), dim=1)
        h = elutriton.linear_bias_elu(y.flatten(1), lw, None, 2.0)
        h = elutriton.celu(elutriton.selu(h), 0.5, inplace=inplace)
        return elutriton.elu(h, 0.3, 1.5, 0.5, inplace=inplace)

    def unfused(x):
        y = F.elu(F.conv2d(x, w, b4, padding="same"), 0.7)
        y = torch.selu(y + b4[:, None, None])
        h = F.elu(F.linear(y.flatten(1), lw), 2.0)
        return torch.ops.aten.elu(F.celu(torch.selu(h), 0.5), 0.3, 1.5, 0.5)

    graphs = []
    compiled = _compile(fn, graphs)
    x = torch.randn(2, 3, 4, 4)
    torch.testing.assert_close(compiled(x), unfused(x), rtol=1e-5, atol=1e-6)
    ops = _ops(graphs)
    assert not [op for op in ops if "elutriton" in op], ops


def test_a_traced_layer_takes_dilation_1_along_an_axis_of_one_tap(monkeypatch):
    """As the eager call does (torch's CPU convolution crashes for some such dilations:
    docs/torch_defects.md), the traced composite convolves with dilation 1 along an axis
    where the kernel has one tap; the result is the same."""
    force_pytorch_fallback(monkeypatch)
    layer = elutriton.nn.Conv2dELU(3, 4, (3, 1), padding=1, dilation=2)
    graphs = []
    x = torch.randn(2, 3, 6, 5)
    y = _compile(layer, graphs)(x)
    convs = [node for gm in graphs for node in gm.graph.nodes
             if node.op == "call_function" and "conv2d" in str(node.target)]
    assert len(convs) == 1 and list(convs[0].args[5]) == [2, 1], convs[0].args
    torch.testing.assert_close(y, F.elu(F.conv2d(x, layer.weight, layer.bias, 1, 1, 2)),
                               rtol=1e-5, atol=1e-6)


def test_export_on_the_fallback_gives_torchs_composite(monkeypatch):
    """torch.export traces what torch.compile traces: on a device without the kernels, a fused
    model exports as aten ops only (plain PyTorch), equal to the unfused model."""
    force_pytorch_fallback(monkeypatch)
    model = Net().eval()
    fused, _ = elutriton.fuse(copy.deepcopy(model))
    x = torch.randn(2, 3, 5, 4)
    program = torch.export.export(fused, (x,))
    targets = {str(node.target) for node in program.graph.nodes if node.op == "call_function"}
    assert all(target.startswith("aten.") for target in targets), targets
    assert "aten.elu.default" in targets or "aten.elu_.default" in targets, targets
    torch.testing.assert_close(program.module()(x), model(x), rtol=1e-5, atol=1e-6)
