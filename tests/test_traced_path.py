"""What torch.compile traces for the fused ops (ops/traced_path.py): torch's composite (the
convolution or linear, then the in-place ELU) for library-path layers whose backward is cuDNN's,
the custom op otherwise; results and gradients against float64, and autograd keeping y, not the
pre-activation, on the composite."""
import pytest
import torch
import torch.nn.functional as F

import elutriton
from elutriton.plan import clear_plans
from tests.reference import GEMM_TOLERANCES, GRAD_TOLERANCES, assert_close, randn


def traced_ops(fn, *args):
    """(output, names of the functions the traced graph calls) of ``torch.compile(fn)``; the
    graph runs as traced (eager autograd over its ops)."""
    graphs = []

    def backend(gm, example_inputs):
        graphs.append(gm)
        return gm.forward
    torch._dynamo.reset()
    out = torch.compile(fn, backend=backend, fullgraph=True)(*args)
    names = {str(node.target) for gm in graphs for node in gm.graph.nodes
             if node.op == "call_function"}
    return out, names


def uses_custom_op(names):
    return any("elutriton" in name for name in names)


@pytest.fixture
def path(monkeypatch):
    def choose(path, backward="cudnn"):
        monkeypatch.setenv("ELUTRITON_PATH", path)
        monkeypatch.setenv("ELUTRITON_BACKWARD", backward)
        clear_plans()
    yield choose
    torch._dynamo.reset()


def conv_inputs(grad=True, channels_last=True):
    x = randn((2, 5, 7, 6), torch.float32)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    w = randn((8, 5, 3, 3), torch.float32) / 6
    b = randn((8,), torch.float32)
    return [t.requires_grad_(grad) for t in (x, w, b)]


def reference_conv(x, w, b, params=(1.0, 1.0, 1.0)):
    return torch.ops.aten.elu(F.conv2d(x.double(), w.double(), b.double(), 1, 1), *params)


@pytest.mark.parametrize("channels_last", [True, False])
def test_a_library_layer_traces_the_composite_with_the_same_results_and_gradients(
        path, channels_last):
    path("library")
    x, w, b = conv_inputs(channels_last=channels_last)
    y, names = traced_ops(lambda x, w, b: elutriton.conv2d_bias_elu(x, w, b, padding=1), x, w, b)
    assert not uses_custom_op(names) and any("elu_" in n for n in names)
    assert_close(y, reference_conv(x, w, b), tolerances=GEMM_TOLERANCES)
    assert y.stride() == F.conv2d(x, w, b, padding=1).stride()
    grad_y = randn(y.shape, torch.float32)
    got = torch.autograd.grad(y, (x, w, b), grad_y)
    xd, wd, bd = (t.detach().double().requires_grad_() for t in (x, w, b))
    expected = torch.autograd.grad(reference_conv(xd, wd, bd), (xd, wd, bd), grad_y.double())
    for g, e in zip(got, expected):
        assert_close(g, e, tolerances={torch.float32: GRAD_TOLERANCES[torch.float32]})


def test_the_composite_keeps_y_for_the_elu_backward_not_z(path):
    path("library")
    x, w, b = conv_inputs()
    saved = []
    with torch.autograd.graph.saved_tensors_hooks(lambda t: saved.append(t) or t, lambda t: t):
        y, names = traced_ops(lambda x, w, b: elutriton.conv2d_bias_elu(x, w, b, padding=1),
                              x, w, b)
    assert not uses_custom_op(names)
    z = F.conv2d(x, w, b, padding=1).detach()
    outputs = [t for t in saved if t.shape == y.shape]
    assert any(torch.equal(t, y.detach()) for t in outputs)
    assert not any(torch.equal(t, z) for t in outputs)


def test_layers_that_keep_the_custom_op(path):
    x, w, b = conv_inputs()
    layer = lambda x, w, b: elutriton.conv2d_bias_elu(x, w, b, padding=1)  # noqa: E731
    path("fused")  # the fused kernel
    assert uses_custom_op(traced_ops(layer, x, w, b)[1])
    path("library", backward="triton")  # a Triton backward
    assert uses_custom_op(traced_ops(layer, x, w, b)[1])
    with torch.no_grad():  # ... but without gradients the composite
        assert not uses_custom_op(traced_ops(layer, x, w, b)[1])
    path("library")
    negative = lambda x, w, b: elutriton.conv2d_bias_elu(x, w, b, padding=1,  # noqa: E731
                                                         alpha=-0.5)
    y, names = traced_ops(negative, x, w, b)  # y cannot give the derivative: recompute path
    assert uses_custom_op(names)
    assert_close(y, reference_conv(x, w, b, (-0.5, 1.0, 1.0)), tolerances=GEMM_TOLERANCES)
    x, w, b = conv_inputs(grad=False)
    y, names = traced_ops(negative, x, w, b)  # no gradient: the composite is fine
    assert not uses_custom_op(names)
    assert_close(y, reference_conv(x, w, b, (-0.5, 1.0, 1.0)), tolerances=GEMM_TOLERANCES)


def test_linear_library_layer_traces_the_composite(path):
    x = randn((3, 4, 10), torch.float32).requires_grad_()  # [..., in]: 12 rows
    w = (randn((6, 10), torch.float32) / 3).requires_grad_()
    b = randn((6,), torch.float32).requires_grad_()
    layer = lambda x, w, b: elutriton.linear_bias_elu(x, w, b, 0.5, 2.0, 0.7)  # noqa: E731
    path("library")
    y, names = traced_ops(layer, x, w, b)
    assert not uses_custom_op(names)
    expected = torch.ops.aten.elu(F.linear(x.double(), w.double(), b.double()), 0.5, 2.0, 0.7)
    assert_close(y, expected, tolerances=GEMM_TOLERANCES)
    y.sum().backward()
    assert x.grad is not None and w.grad is not None and b.grad is not None
    path("fused")
    assert uses_custom_op(traced_ops(layer, x, w, b)[1])
