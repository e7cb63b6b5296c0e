"""FusedOp: eager calls run the implementation directly, traced calls the custom op, and both
give the same values, gradients and version-counter bumps."""
import torch
from torch.utils._python_dispatch import TorchDispatchMode

import elutriton
from elutriton.ops import bias_elu as bias_elu_ops
from tests.reference import (DEVICE, GRAD_TOLERANCES, assert_close, randn, ref_bias_elu,
                             ref_bias_elu_grads)


class _Passthrough(TorchDispatchMode):
    """A dispatch mode that changes nothing, as a tracer or profiler mode would sit."""

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        return func(*args, **(kwargs or {}))


def _count_custom_op_calls(monkeypatch, fused):
    calls = []
    real = fused.custom_op
    monkeypatch.setattr(fused, "custom_op", lambda *a: calls.append(1) or real(*a))
    return calls


def test_eager_call_skips_the_custom_op_and_a_dispatch_mode_uses_it(monkeypatch):
    calls = _count_custom_op_calls(monkeypatch, bias_elu_ops.bias_elu_op)
    x, b = randn((3, 5, 4), torch.float32), randn((5,), torch.float32)
    eager = elutriton.bias_elu(x, b)
    assert calls == []
    with _Passthrough():
        traced = elutriton.bias_elu(x, b)
    assert calls == [1]
    assert torch.equal(eager, traced)
    assert_close(eager, ref_bias_elu(x, b))


def test_eager_autograd_matches_the_custom_op_autograd():
    x = randn((4, 6, 3), torch.float32, special=False)
    b = randn((6,), torch.float32)
    grad_y = randn((4, 6, 3), torch.float32)
    results = []
    for call in (lambda x, b: elutriton.bias_elu(x, b, 0.7),                    # eager path
                 lambda x, b: torch.ops.elutriton.bias_elu(x, b, 0.7, 1.0, 1.0, 1)):  # op
        leaves = [x.clone().requires_grad_(), b.clone().requires_grad_()]
        y = call(*leaves)
        results.append((y.detach(), *torch.autograd.grad(y, leaves, grad_y)))
    for eager, op in zip(*results):
        assert_close(eager, op.double(), tolerances=GRAD_TOLERANCES)


def test_direct_inplace_call_bumps_the_version_like_the_dispatcher():
    for use_mode in (False, True):
        x = randn((7,), torch.float32)
        before = x._version
        if use_mode:
            with _Passthrough():
                elutriton.elu(x, inplace=True)
        else:
            elutriton.elu(x, inplace=True)
        assert x._version > before


def test_fused_op_registers_a_real_custom_op():
    op = bias_elu_ops.bias_elu_op
    assert op.name == "elutriton::bias_elu"
    assert torch.ops.elutriton.bias_elu.default is op.custom_op._opoverload
    x = randn((2, 3), torch.float32, device=DEVICE)
    torch.library.opcheck(torch.ops.elutriton.bias_elu.default, (x, None, 1.0, 1.0, 1.0, 0))


def test_eager_autograd_goes_straight_to_the_c_apply(monkeypatch):
    # torch.autograd.Function.apply's Python wrapper (functorch unwrapping, ~6 us) is skipped
    # for plain tensors outside functorch transforms; values and gradients are unchanged
    def refuse(*args, **kwargs):
        raise AssertionError("Function.apply's Python wrapper was called")
    monkeypatch.setattr(bias_elu_ops.bias_elu_op._function, "apply", classmethod(refuse))
    x = randn((4, 6, 3), torch.float32).requires_grad_()
    b = randn((6,), torch.float32).requires_grad_()
    grad_y = randn((4, 6, 3), torch.float32)
    gx, gb = torch.autograd.grad(elutriton.bias_elu(x, b), (x, b), grad_y)
    xd, bd = x.detach().double().requires_grad_(), b.detach().double().requires_grad_()
    ex, eb = torch.autograd.grad(ref_bias_elu(xd, bd), (xd, bd), grad_y.double())
    assert_close(gx, ex, tolerances=GRAD_TOLERANCES)
    assert_close(gb, eb, tolerances=GRAD_TOLERANCES)


def test_direct_is_the_function_call_runs():
    """``FusedOp.direct`` (the fused layers' memo of kernel calls): ``run`` itself without
    autograd or for a composite, the op's autograd Function with it; None where ``call`` takes
    another route."""
    op, run = bias_elu_ops.bias_elu_op, bias_elu_ops._bias_elu_impl
    x, b = randn((3, 5, 4), torch.float32), randn((5,), torch.float32)
    args = (x, b, 0.7, 1.0, 1.0, 1)
    assert op.direct(run, *args) is run
    b.requires_grad_()
    with torch.no_grad():
        assert op.direct(run, *args) is run
    y = op.direct(run, *args)(*args)
    assert type(y.grad_fn).__name__ == "bias_eluBackward"
    grad_y = randn(y.shape, torch.float32)
    assert_close(torch.autograd.grad(y, b, grad_y)[0],
                 ref_bias_elu_grads(x, b, grad_y, 0.7)[1], tolerances=GRAD_TOLERANCES)
    with _Passthrough():  # the custom op
        assert op.direct(run, *args) is None
    assert op.direct(run, x.as_subclass(_Subclass), *args[1:]) is None  # the custom op
    composite = bias_elu_ops.reference.bias_elu  # (torch's ops: call runs it as it is)
    assert op.direct(composite, *args) is composite
    inplace = bias_elu_ops.elu_inplace_op  # (call bumps the version of what it writes)
    assert inplace.direct(bias_elu_ops._elu_inplace_impl, x, 1.0, 1.0, 1.0) is None


class _Subclass(torch.Tensor):
    pass
