"""What the fused conv and linear keep for backward (ops/epilogue_autograd.py): y always, x only
when the weight needs a gradient, the weight only when x needs one; and the gradients when one
of them was not kept (the cuDNN path then passes a one-element stand-in, as torch.nn.grad
does), against float64. Library-path layers run torch's composite in eager calls that
autograd records (ops/composite_path.py), which keeps what eager PyTorch keeps (y, never z:
tests/test_composite_path.py); these tests pin the fused op's own autograd as it runs under
CUDA-graph capture."""
import pytest
import torch
import torch.nn.functional as F

import elutriton
from tests.reference import assert_grad_close, randn


@pytest.fixture(autouse=True)
def _fused_ops_own_autograd(monkeypatch):
    monkeypatch.setattr("elutriton.ops.composite_path.capturing", lambda is_cuda: True)


def saved_storages(fn):
    kept = []

    def pack(tensor):
        kept.append(tensor.untyped_storage().data_ptr())
        return tensor
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        out = fn()
    return out, set(kept)


def assert_grads_match(y, inputs, reference, n_terms):
    """The gradients of ``y`` for the ``inputs`` that require one, on fresh grad_y, against
    float64 autograd of ``reference(*inputs)`` (each gradient element a sum of ``n_terms``)."""
    leaves = [t for t in inputs if t.requires_grad]
    grad_y = randn(y.shape, torch.float32)
    got = torch.autograd.grad(y, leaves, grad_y)
    ref = [t.detach().double().requires_grad_(t.requires_grad) for t in inputs]
    expected = torch.autograd.grad(reference(*ref), [t for t in ref if t.requires_grad],
                                   grad_y.double())
    for g, e, t in zip(got, expected, leaves):
        assert g.shape == t.shape
        assert_grad_close(g, e, torch.float32, n_terms)


CASES = [(True, True), (False, True), (True, False)]  # (x needs grad, weight needs grad)


@pytest.mark.parametrize("grads", CASES, ids=["both", "weight_only", "input_only"])
@pytest.mark.parametrize("backward", ["cudnn", "triton"])
@pytest.mark.parametrize("channels_last", [False, True], ids=["nchw", "channels_last"])
def test_conv_keeps_what_its_gradients_need(grads, backward, channels_last, monkeypatch):
    monkeypatch.setenv("ELUTRITON_BACKWARD", backward)
    input_grad, weight_grad = grads
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    x = randn((2, 5, 7, 6), torch.float32).contiguous(memory_format=fmt)
    w = (randn((8, 5, 3, 3), torch.float32) / 7).contiguous(memory_format=fmt)
    b = randn((8,), torch.float32).requires_grad_()
    x.requires_grad_(input_grad)
    w.requires_grad_(weight_grad)
    y, kept = saved_storages(lambda: elutriton.conv2d_bias_elu(x, w, b, padding=1))
    assert y.untyped_storage().data_ptr() in kept
    assert (x.untyped_storage().data_ptr() in kept) == weight_grad
    assert (w.untyped_storage().data_ptr() in kept) == input_grad
    assert_grads_match(y, (x, w, b), lambda x, w, b: F.elu(F.conv2d(x, w, b, padding=1)), 84)


@pytest.mark.parametrize("grads", CASES, ids=["both", "weight_only", "input_only"])
def test_linear_keeps_what_its_gradients_need(grads):
    input_grad, weight_grad = grads
    x = randn((6, 9), torch.float32).requires_grad_(input_grad)
    w = (randn((5, 9), torch.float32) / 3).requires_grad_(weight_grad)
    b = randn((5,), torch.float32).requires_grad_()
    y, kept = saved_storages(lambda: elutriton.linear_bias_elu(x, w, b, 0.5, 2.0, 0.7))
    assert (x.untyped_storage().data_ptr() in kept) == weight_grad
    assert (w.untyped_storage().data_ptr() in kept) == input_grad
    assert_grads_match(y, (x, w, b), lambda x, w, b: torch.ops.aten.elu(F.linear(x, w, b), 0.5,
                                                                          2.0, 0.7), 9)


def test_without_a_result_recoverable_derivative_x_weight_and_bias_are_kept():
    x = randn((2, 3, 5, 5), torch.float32)  # needs no gradient, yet z is recomputed from it
    w = randn((4, 3, 3, 3), torch.float32).requires_grad_()
    b = randn((4,), torch.float32).requires_grad_()
    y, kept = saved_storages(lambda: elutriton.conv2d_bias_elu(x, w, b, padding=1, alpha=-0.5))
    assert {t.untyped_storage().data_ptr() for t in (x, w, b)} <= kept
