"""torch.compile with symbolic sizes and parameters: a fused model whose batch size changes
(dynamo's automatic dynamic shapes recompile it with a symbolic batch after the second size)
and ``dynamic=True`` (symbolic sizes, and the activations' float parameters too).

Both failed under ``fullgraph=True`` (without it they broke the graph): a symbolic size
reached a ``torch.compiler.assume_constant_result`` function (``composite_path``), whose
arguments must be constants (under dynamo ``isinstance(size, int)`` is true for a symbolic
size), and ``math.isfinite`` of a symbolic alpha in the parameter check."""
import copy

import pytest
import torch
from torch import nn

import elutriton
from tests.reference import DEVICE


def _model():
    model = nn.Sequential(
        nn.Conv2d(3, 6, 3, padding=1), nn.BatchNorm2d(6), nn.ELU(0.7),
        nn.Conv2d(6, 4, 3), nn.SELU(), nn.Flatten(), nn.Linear(4 * 4 * 4, 5), nn.CELU(1.3),
        nn.Linear(5, 3), nn.ELU())
    bn = model[1]
    bn.running_mean.uniform_(-0.5, 0.5)
    bn.running_var.uniform_(0.5, 2.0)
    return model.to(DEVICE)


@pytest.mark.parametrize("path", ["fused", "library"])
@pytest.mark.parametrize("dynamic", [None, True])
def test_compiled_fused_model_with_changing_batch_sizes(path, dynamic, monkeypatch):
    monkeypatch.setenv("ELUTRITON_PATH", path)
    torch._dynamo.reset()
    model = _model().eval()
    fused, report = elutriton.fuse(model)
    assert len(report.fused) == 4
    compiled = torch.compile(fused, fullgraph=True, dynamic=dynamic, backend="aot_eager")
    for batch in (2, 5, 3):  # the second size recompiles with a symbolic batch
        x = torch.randn(batch, 3, 6, 6, device=DEVICE)
        torch.testing.assert_close(compiled(x), model(x), atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("path", ["fused", "library"])
def test_compiled_training_step_with_changing_batch_sizes(path, monkeypatch):
    monkeypatch.setenv("ELUTRITON_PATH", path)
    torch._dynamo.reset()
    model = _model().train()
    del model[1]  # (a BatchNorm in training mode is left alone: nothing to compare there)
    fused, _ = elutriton.fuse(copy.deepcopy(model))
    compiled = torch.compile(fused, fullgraph=True, backend="aot_eager")
    for batch in (2, 5, 3):
        x = torch.randn(batch, 3, 6, 6, device=DEVICE)
        y, y_ref = compiled(x), model(x)
        torch.testing.assert_close(y, y_ref, atol=1e-5, rtol=1e-4)
        grad = torch.randn_like(y)
        y.backward(grad)
        y_ref.backward(grad)
        reference = dict(model.named_parameters())
        for name, parameter in fused.named_parameters():
            torch.testing.assert_close(parameter.grad, reference[name].grad, atol=1e-4,
                                       rtol=1e-3)
            parameter.grad = reference[name].grad = None


def test_functional_calls_with_symbolic_float_parameters():
    # dynamic=True makes float arguments symbolic too: alpha reaches the parameter checks
    torch._dynamo.reset()

    def step(x, w, b, alpha):
        h = elutriton.conv2d_bias_elu(x, w, b, padding=1, alpha=alpha)
        return elutriton.celu(elutriton.bias_elu(h, b, alpha=alpha), alpha)

    compiled = torch.compile(step, fullgraph=True, dynamic=True, backend="aot_eager")
    w, b = torch.randn(4, 3, 3, 3, device=DEVICE) / 5, torch.randn(4, device=DEVICE)
    for batch, alpha in ((2, 0.5), (3, 1.5), (4, 0.25)):
        x = torch.randn(batch, 3, 5, 5, device=DEVICE)
        h = torch.nn.functional.elu(torch.nn.functional.conv2d(x, w, b, padding=1), alpha)
        expected = torch.nn.functional.celu(
            torch.nn.functional.elu(h + b[:, None, None], alpha), alpha)
        torch.testing.assert_close(compiled(x, w, b, alpha), expected, atol=1e-5, rtol=1e-4)
