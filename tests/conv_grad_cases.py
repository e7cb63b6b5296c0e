"""What the tests of the Triton backward kernels share (test_conv_weight_grad.py,
test_conv_input_grad.py, test_backward_path.py): the gradient check, and a spy on plans."""
import torch
import torch.nn.functional as F

import elutriton
from tests.reference import assert_grad_close, randn


def run_case(dtype, n, c, hw, oc, k, stride=1, padding=0, dilation=1, params=(1.0, 1.0, 1.0),
             channels_last=False, input_grad=False, bias=True):
    """Gradients of ``elutriton.conv2d_bias_elu`` on fresh inputs (x requires grad only with
    ``input_grad``) against float64 autograd of F.conv2d + aten.elu on the same rounded
    inputs; returns them. x's gradient must come back in x's layout."""
    x = randn((n, c) + hw, dtype)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    x.requires_grad_(input_grad)
    w = (randn((oc, c) + k, dtype) / (c * k[0] * k[1]) ** 0.5).requires_grad_()
    b = randn((oc,), dtype).requires_grad_() if bias else None
    y = elutriton.conv2d_bias_elu(x, w, b, stride, padding, dilation, 1, *params)
    grad_y = randn(y.shape, dtype)
    inputs = [t for t in (x, w, b) if t is not None and t.requires_grad]
    got = torch.autograd.grad(y, inputs, grad_y)
    # float64 reference from the same rounded inputs
    ref_inputs = [t.detach().double().requires_grad_(t.requires_grad) if t is not None else None
                  for t in (x, w, b)]
    z = F.conv2d(ref_inputs[0], ref_inputs[1], ref_inputs[2], stride, padding, dilation)
    yd = torch.ops.aten.elu(z, *params)
    expected = torch.autograd.grad(yd, [t for t in ref_inputs if t is not None and t.requires_grad],
                                   grad_y.double())
    n_terms = y.shape[0] * y.shape[2] * y.shape[3]
    for g, e, t in zip(got, expected, inputs):
        assert g.shape == t.shape and g.dtype == t.dtype
        if t is x:
            assert g.is_contiguous(memory_format=torch.channels_last if channels_last
                                   else torch.contiguous_format)
        assert_grad_close(g, e, dtype, n_terms if t is not x else k[0] * k[1] * oc)
    return got


def spy_plans(monkeypatch, module, name, record, used=None):
    """Record ``record(args)`` in ``used`` (a new list by default) each time ``module.name``
    (a kernel plan builder) is called; returns ``used``."""
    used = [] if used is None else used
    real = getattr(module, name)
    monkeypatch.setattr(module, name, lambda *args: used.append(record(args)) or real(*args))
    return used
