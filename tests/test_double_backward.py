"""Double backward (gradient penalties, gradgradcheck) of every op, on the kernel path (the
interpreter here, the GPU there) and on the PyTorch fallback, in float64."""
import pytest
import torch
import torch.nn.functional as F

import elutriton
from elutriton.ops import bias_elu as bias_elu_ops
from tests.fallback import force_pytorch_fallback
from tests.reference import DEVICE

# (alpha, scale, input_scale): from the result (ELU, SELU-like) and from the input (alpha < 0)
PARAMS = {"elu": (1.0, 1.0, 1.0), "general": (0.7, 1.3, 0.8), "neg_alpha": (-0.5, 1.0, 1.0)}


def leaf(*shape, scale=1.0):
    return (torch.randn(*shape, dtype=torch.float64, device=DEVICE) * scale).requires_grad_()


@pytest.fixture(params=["kernels", "fused", "fallback"])
def path(request, monkeypatch):
    """kernels: the per-shape choice as it falls (the library path for these NCHW convs and
    linears); fused: the fused kernel forced; fallback: the PyTorch composite."""
    if request.param == "fused":
        monkeypatch.setenv("ELUTRITON_PATH", "fused")
    if request.param == "fallback":
        force_pytorch_fallback(monkeypatch)
    return request.param


@pytest.mark.parametrize("params", PARAMS.values(), ids=PARAMS.keys())
def test_gradgradcheck_bias_elu(params, path):
    x, b = leaf(2, 3, 4), leaf(3)
    torch.autograd.gradgradcheck(lambda x, b: elutriton.bias_elu(x, b, *params), (x, b))
    torch.autograd.gradgradcheck(lambda x: elutriton.bias_elu(x, None, *params), (leaf(5, 3),))


def test_gradgradcheck_elu_selu_celu(path):
    x = leaf(3, 5)
    torch.autograd.gradgradcheck(lambda x: elutriton.elu(x, 0.6), (x,))
    torch.autograd.gradgradcheck(elutriton.selu, (x,))
    torch.autograd.gradgradcheck(lambda x: elutriton.celu(x, 1.5), (x,))
    # in place on a non-leaf: backward reads the overwritten result
    torch.autograd.gradgradcheck(lambda x: elutriton.elu(x * 1.0, 0.6, inplace=True), (x,))


@pytest.mark.parametrize("params", [PARAMS["elu"], PARAMS["neg_alpha"]], ids=["result", "input"])
def test_gradgradcheck_conv2d(params, path, monkeypatch):
    # cuDNN's float64 double-backward convolutions are nondeterministic by default (seen on
    # the H100: "Backward is not reentrant"): ask for its deterministic algorithms
    monkeypatch.setattr(torch.backends.cudnn, "deterministic", True)
    x, w, b = leaf(1, 2, 4, 4), leaf(3, 2, 3, 3, scale=0.4), leaf(3)
    torch.autograd.gradgradcheck(
        lambda x, w, b: elutriton.conv2d_bias_elu(x, w, b, padding=1, alpha=params[0]),
        (x, w, b))


@pytest.mark.parametrize("params", [PARAMS["general"], PARAMS["neg_alpha"]],
                         ids=["result", "input"])
def test_gradgradcheck_linear(params, path):
    x, w, b = leaf(3, 4), leaf(5, 4, scale=0.5), leaf(5)
    torch.autograd.gradgradcheck(lambda x, w, b: elutriton.linear_bias_elu(x, w, b, *params),
                                 (x, w, b))


def _penalty_grads(forward, inputs):
    y = forward(*inputs)
    (g,) = torch.autograd.grad(y.sum(), inputs[0], create_graph=True)
    return torch.autograd.grad(y.sum() + g.pow(2).sum(), inputs)


def test_gradient_penalty_weight_gradients_match_pytorch(path):
    """The issue's example: grad of (y.sum() + |dy/dx|^2) w.r.t. x, weight and bias."""
    x, w, b = leaf(2, 3, 5, 5), leaf(4, 3, 3, 3, scale=0.3), leaf(4)
    ours = _penalty_grads(lambda x, w, b: elutriton.conv2d_bias_elu(x, w, b, padding=1),
                          (x, w, b))
    theirs = _penalty_grads(lambda x, w, b: F.elu(F.conv2d(x, w, b, padding=1)), (x, w, b))
    for a, e in zip(ours, theirs):
        torch.testing.assert_close(a, e, atol=1e-10, rtol=1e-8)
    h, lw, lb = leaf(4, 6), leaf(5, 6, scale=0.4), leaf(5)
    ours = _penalty_grads(lambda h, w, b: elutriton.linear_bias_elu(h, w, b, 1.6, 1.05), (h, lw, lb))
    theirs = _penalty_grads(lambda h, w, b: 1.05 * F.elu(F.linear(h, w, b), 1.6), (h, lw, lb))
    for a, e in zip(ours, theirs):
        torch.testing.assert_close(a, e, atol=1e-10, rtol=1e-8)


def test_an_op_without_autograd_raises_instead_of_running_detached():
    x = leaf(4) * 1.0
    with pytest.raises(RuntimeError, match="no autograd formula"):
        bias_elu_ops.elu_inplace_op(x, 1.0, 1.0, 1.0)
    with torch.no_grad():  # allowed without autograd recording
        bias_elu_ops.elu_inplace_op(x, 1.0, 1.0, 1.0)
