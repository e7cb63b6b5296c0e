"""bias+ELU as torch sees it: opcheck, torch.compile, hypothesis layouts, fallback, int64, modules."""
import types

import pytest
import torch
from torch._subclasses.fake_tensor import FakeTensorMode
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import elutriton
import elutriton.kernels.bias_elu as bias_elu_kernels
import elutriton.ops.bias_elu as bias_elu_ops
from elutriton.plan import clear_plans
from elutriton._runtime import INT32_MAX, needs_int64_index
from tests.reference import (DEVICE, DTYPES, GRAD_TOLERANCES, SELU, assert_close, randn,
                             assert_grad_close, ref_bias_elu, ref_bias_elu_grads)


# --------------------------------------------------------------------------- torch.library
@pytest.mark.parametrize("layout", ["contiguous", "channels_last"])
def test_opcheck_forward_and_backward(layout):
    fmt = torch.channels_last if layout == "channels_last" else torch.contiguous_format
    x = randn((2, 3, 4, 5), torch.float32).to(memory_format=fmt).requires_grad_()
    b = randn((3,), torch.float32).requires_grad_()
    torch.library.opcheck(torch.ops.elutriton.bias_elu.default, (x, b, 1.0, 1.0, 1.0, 1))
    torch.library.opcheck(torch.ops.elutriton.bias_elu.default, (x, None, 0.5, 2.0, 0.7, 0))
    torch.library.opcheck(torch.ops.elutriton.bias_elu.default, (x, b, -0.5, 1.0, 1.0, 1))
    y = torch.ops.elutriton.bias_elu(x, b, 1.0, 1.0, 1.0, 1).detach()
    g = randn(y.shape, torch.float32)
    torch.library.opcheck(torch.ops.elutriton.bias_elu_backward.default,
                          (g, y, None, 1.0, 1.0, 1.0, 1, True, True))
    torch.library.opcheck(torch.ops.elutriton.bias_elu_backward.default,
                          (g, x.detach(), b.detach(), -0.5, 1.0, 1.0, 1, False, False))
    torch.library.opcheck(torch.ops.elutriton.elu_.default, (x.detach().clone(), 1.0, 1.0, 1.0))


def test_torch_compile_fullgraph_forward_and_backward():
    def block(x, b):
        return elutriton.selu(elutriton.bias_elu(x, b, 0.9, dim=1) * 2.0)

    compiled = torch.compile(block, fullgraph=True, backend="aot_eager")
    x = randn((2, 4, 3, 5), torch.float32).requires_grad_()
    b = randn((4,), torch.float32).requires_grad_()
    y = compiled(x, b)
    expected = block(x, b)
    torch.testing.assert_close(y, expected)
    gx, gb = torch.autograd.grad(y.sum(), (x, b))
    ex, eb = torch.autograd.grad(expected.sum(), (x, b))
    torch.testing.assert_close(gx, ex)
    torch.testing.assert_close(gb, eb)


def test_torch_compile_inductor_inference():
    compiled = torch.compile(lambda x, b: elutriton.bias_elu(x, b, dim=-1), fullgraph=True)
    x = randn((6, 9), torch.float32)
    b = randn((9,), torch.float32)
    assert_close(compiled(x, b), ref_bias_elu(x, b, dim=-1))


# --------------------------------------------------------------------------- hypothesis
@st.composite
def strided_inputs(draw):
    """A tensor of random rank/sizes, then a random permutation, slicing and/or expansion."""
    ndim = draw(st.integers(1, 4))
    shape = draw(st.lists(st.integers(0, 7), min_size=ndim, max_size=ndim))
    dtype = draw(st.sampled_from(DTYPES))
    x = randn([s * 2 for s in shape], dtype, special=draw(st.booleans()))
    steps = draw(st.lists(st.integers(1, 2), min_size=ndim, max_size=ndim))
    x = x[tuple(slice(0, s * st_, st_) for s, st_ in zip(shape, steps))]
    perm = draw(st.permutations(range(ndim)))
    x = x.permute(*perm)
    dim = draw(st.integers(-ndim, ndim - 1))
    return x, dim


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(strided_inputs(), st.sampled_from([(1.0, 1.0, 1.0), (SELU["alpha"], SELU["scale"], 1.0),
                                          (0.3, 1.0, 1 / 0.3)]))
def test_hypothesis_strides_forward_and_backward(inputs, params):
    x, dim = inputs
    b = randn((x.shape[dim],), x.dtype)
    y = elutriton.bias_elu(x, b, *params, dim=dim)
    assert_close(y, ref_bias_elu(x, b, *params, dim=dim))
    assert y.stride() == torch.empty_like(x).stride()
    xg = x.detach().requires_grad_()
    bg = b.detach().requires_grad_()
    yg = elutriton.bias_elu(xg, bg, *params, dim=dim)
    grad_y = randn(yg.shape, x.dtype)
    gx, gb = torch.autograd.grad(yg, (xg, bg), grad_y)
    rgx, rgb = ref_bias_elu_grads(x, b, grad_y, *params, dim=dim)
    assert_close(gx, rgx, tolerances=GRAD_TOLERANCES)
    assert_grad_close(gb, rgb, x.dtype, x.numel() // max(1, x.shape[dim]))


# --------------------------------------------------------------------------- fallback
def test_pytorch_fallback_matches(monkeypatch):
    """CPU without TRITON_INTERPRET runs torch's composite: same values and layouts, and with
    autograd recording torch differentiates it (its gradients, NaN handling included)."""
    monkeypatch.setattr(bias_elu_ops, "use_triton", lambda tensor: False)
    clear_plans()
    x = randn((3, 4, 5, 6), torch.float32, special=True).to(memory_format=torch.channels_last)
    x = x.detach().requires_grad_()
    b = randn((4,), torch.float32).requires_grad_()
    y = elutriton.bias_elu(x, b, 0.8)
    assert_close(y, ref_bias_elu(x, b, 0.8))
    assert y.stride() == x.stride()
    grad_y = randn(y.shape, torch.float32)
    assert y.grad_fn is not None and "Elu" in type(y.grad_fn).__name__  # torch's own node
    gx, gb = torch.autograd.grad(y, (x, b), grad_y)
    torch_gx, torch_gb = torch.autograd.grad(torch.nn.functional.elu(x + b[:, None, None], 0.8),
                                             (x, b), grad_y)
    torch.testing.assert_close(gx, torch_gx, equal_nan=True, atol=0, rtol=0)
    torch.testing.assert_close(gb, torch_gb, equal_nan=True, atol=0, rtol=0)
    finite = ~torch.isnan(x.detach())  # and where the input is a number, the float64 math
    rgx, _ = ref_bias_elu_grads(x, b, grad_y, 0.8)
    assert_close(gx[finite], rgx[finite], tolerances=GRAD_TOLERANCES)
    h = randn((7,), torch.float32)
    expected = ref_bias_elu(h, None, **SELU)
    elutriton.selu(h, inplace=True)
    assert_close(h, expected)


def test_pytorch_fallback_elu_is_torchs_own_op_per_call(monkeypatch):
    """On the fallback, elu/selu/celu run torch's own op with the call's checked parameters
    (``reference.fixed_elu``): each call, also repeated with other parameters, in place or
    not, with autograd or not, gets torch's result bit for bit, torch's autograd node and
    gradients, and bumps an in-place target's version once, as torch does."""
    monkeypatch.setattr(bias_elu_ops, "use_triton", lambda tensor: False)
    clear_plans()
    aten = torch.ops.aten
    x = randn((3, 5), torch.float32, special=True)
    for _ in range(2):  # (the second round hits the plans)
        for call, params in ((lambda t, i: elutriton.elu(t, 0.5, inplace=i), (0.5, 1.0, 1.0)),
                             (lambda t, i: elutriton.elu(t, 2, 1.5, 0.5, i), (2, 1.5, 0.5)),
                             (lambda t, i: elutriton.selu(t, i), tuple(SELU.values())),
                             (lambda t, i: elutriton.celu(t, 0.3, i), (0.3, 1.0, 1 / 0.3))):
            expected = aten.elu(x, *params)
            for inplace in (False, True):
                for grad in (False, True):
                    leaf = x.clone().requires_grad_(grad)
                    target = leaf.clone() if inplace and grad else leaf
                    version = target._version
                    y = call(target, inplace)
                    assert (y is target) == inplace
                    assert target._version == version + inplace
                    torch.testing.assert_close(y, expected, equal_nan=True, atol=0, rtol=0)
                    if grad:
                        assert type(y.grad_fn).__name__ == ("EluBackward1" if inplace
                                                            else "EluBackward0")
                        grad_y = randn(y.shape, torch.float32)
                        (got,) = torch.autograd.grad(y, leaf, grad_y)
                        torch_leaf = x.clone().requires_grad_()
                        torch_y = (aten.elu_(torch_leaf.clone(), *params) if inplace
                                   else aten.elu(torch_leaf, *params))
                        (want,) = torch.autograd.grad(torch_y, torch_leaf, grad_y)
                        torch.testing.assert_close(got, want, equal_nan=True, atol=0, rtol=0)
    with pytest.raises(RuntimeError, match="in-place ELU with autograd"):
        elutriton.elu(x.clone().requires_grad_().clone(), -0.5, inplace=True)


@pytest.mark.parametrize("params", [(1.0, 1.0, 1.0), tuple(SELU.values()), (1.0, 1.0, 0.5),
                                    (0.3, 1.0, 1 / 0.3), (SELU["alpha"], 1.0, 1.0)],
                         ids=["elu", "selu", "general", "celu", "selu_alpha_only"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float64])
def test_elu_op_bindings_are_aten_elu_bit_for_bit(params, dtype):
    """reference.elu_op picks torch.selu / elu's defaults for SELU's and plain ELU's
    parameters (cheaper bindings): the same bits as aten elu with the parameters, the same
    autograd node, in place (one version bump, the same tensor) or not."""
    from elutriton.reference import elu_op, elu_of_temporary_op
    bits = {torch.float32: torch.int32, torch.bfloat16: torch.int16, torch.float64: torch.int64}
    x = randn((7, 9), dtype, special=True)
    expected = torch.ops.aten.elu(x, *params)
    for inplace in (False, True):
        target = x.clone()
        version = target._version
        y = elu_op(*params, inplace=inplace)(target)
        assert (y is target) == inplace and target._version == version + inplace
        assert torch.equal(y.view(bits[dtype]), expected.view(bits[dtype]))
    leaf = x.clone().requires_grad_()
    for y, node in ((elu_op(*params)(leaf), "EluBackward0"),
                    (elu_op(*params, inplace=True)(leaf.clone()), "EluBackward1"),
                    (elu_of_temporary_op(*params)(leaf * 1), "EluBackward0")):
        assert type(y.grad_fn).__name__ == node
        assert torch.equal(y.detach().view(bits[dtype]), expected.view(bits[dtype]))
    fresh = x.clone()
    assert elu_of_temporary_op(*params)(fresh) is fresh  # no autograd: in place


def test_pytorch_fallback_bias_elu_takes_each_calls_arguments(monkeypatch):
    """On the fallback, bias_elu runs torch's composite with the call's checked parameters
    and the bias's view fixed (``reference.fixed_bias_elu``): calls on the same x with
    another dim, bias, parameters or grad mode each get torch's result bit for bit, and
    torch's gradients; a warm call does not go through the op's wrapper (FusedOp.call)."""
    monkeypatch.setattr(bias_elu_ops, "use_triton", lambda tensor: False)
    clear_plans()
    aten = torch.ops.aten
    x = randn((4, 4, 3), torch.float32, special=True)
    b4, b3 = randn((4,), torch.float32), randn((3,), torch.float32)
    for warm in range(2):  # (the second round hits the plans)
        if warm:
            monkeypatch.setattr(bias_elu_ops.bias_elu_op, "call",
                                lambda *args: pytest.fail("the op's wrapper ran"))
        for bias, dim, view in ((b4, 1, (1, 4, 1)), (b4, 0, (4, 1, 1)), (b3, -1, (1, 1, 3)),
                                (b4, -2, (1, 4, 1)), (None, 1, None)):
            for params in ((1.0, 1.0, 1.0), (0.5, 2.0, 1.5), (2, 1, 0.5)):
                z = x if bias is None else x + bias.view(view)
                expected = aten.elu(z, *params)
                y = elutriton.bias_elu(x, bias, *params, dim=dim)
                torch.testing.assert_close(y, expected, equal_nan=True, atol=0, rtol=0)
                leaves = [x.clone().requires_grad_()] + (
                    [] if bias is None else [bias.clone().requires_grad_()])
                y = elutriton.bias_elu(*leaves, *([None] if bias is None else []), *params,
                                       dim=dim)
                torch_leaves = [t.detach().clone().requires_grad_() for t in leaves]
                torch_z = torch_leaves[0] if bias is None else (
                    torch_leaves[0] + torch_leaves[1].view(view))
                grad_y = randn(y.shape, torch.float32)
                for got, want in zip(torch.autograd.grad(y, leaves, grad_y),
                                     torch.autograd.grad(aten.elu(torch_z, *params),
                                                         torch_leaves, grad_y)):
                    torch.testing.assert_close(got, want, equal_nan=True, atol=0, rtol=0)


def test_pytorch_fallback_lays_out_its_output_as_the_kernels(monkeypatch):
    """Where torch's elementwise math returns another layout than ``torch.empty_like(x)``'s
    (what the kernels write and the op's fake says), the fallback returns a copy in that
    layout, equal to torch's values: bias+ELU and plain ELU (their public calls and the
    custom op)."""
    from elutriton import reference
    monkeypatch.setattr(bias_elu_ops, "use_triton", lambda tensor: False)
    clear_plans()
    # (the fallback's composites call torch's elu bindings through reference._nn)
    nn = torch._C._nn
    monkeypatch.setattr(reference, "_nn", types.SimpleNamespace(
        elu=lambda *args: nn.elu(*args).contiguous(),
        elu_=lambda *args: nn.elu_(*args).contiguous()))
    x = randn((2, 3, 4, 5), torch.float32).to(memory_format=torch.channels_last)
    b = randn((3,), torch.float32)
    for _ in range(2):
        for y, expected in (
                (elutriton.bias_elu(x, b, 0.5), ref_bias_elu(x, b, 0.5)),
                (elutriton.elu(x, 0.5), ref_bias_elu(x, None, 0.5)),
                (torch.ops.elutriton.bias_elu(x, b, 0.5, 1.0, 1.0, 1), ref_bias_elu(x, b, 0.5))):
            assert y.stride() == x.stride() and not y.is_contiguous()
            assert_close(y, expected)


@pytest.mark.parametrize("fallback", [False, True], ids=["kernel", "pytorch_fallback"])
def test_backward_op_returns_grad_z_in_the_fakes_layout(fallback, monkeypatch):
    """grad_z has saved's layout, as the op's fake says (compiled code asserts it), whatever
    grad_y's layout: the fallback's elementwise math may follow grad_y's instead (a contiguous
    grad_y from a max-pool backward against a channels_last y broke compiled training)."""
    if fallback:
        monkeypatch.setattr(bias_elu_ops, "use_triton", lambda tensor: False)
    clear_plans()
    y = randn((2, 5, 3, 4), torch.float32).to(memory_format=torch.channels_last)
    b = randn((5,), torch.float32)
    for saved, grad_y in ((y, randn(y.shape, torch.float32)),                 # NCHW grad_y
                          (y.contiguous(), randn(y.shape, torch.float32).to(
                              memory_format=torch.channels_last))):          # the other way
        grad_z, grad_b = bias_elu_ops.bias_elu_backward_op(grad_y, saved, b, 1.0, 1.0, 1.0, 1,
                                                           True, True)
        with FakeTensorMode(allow_non_fake_inputs=True):
            fake_z, fake_b = bias_elu_ops.bias_elu_backward_op.custom_op(
                grad_y, saved, b, 1.0, 1.0, 1.0, 1, True, True)
        assert grad_z.stride() == fake_z.stride() == saved.stride()
        expected = torch.where(saved.double() > 0, grad_y.double(),
                               grad_y.double() * (saved.double() + 1.0))
        assert_close(grad_z, expected)
        assert_grad_close(grad_b, expected.sum(dim=(0, 2, 3)), torch.float32, 24)


# --------------------------------------------------------------------------- int64 indexing
def test_int64_selection():
    assert not needs_int64_index(INT32_MAX)
    assert needs_int64_index(INT32_MAX + 1)
    # storage extent, not numel, decides: a strided view reaching past 2^31 needs int64
    huge = torch.empty(0, device="meta").as_strided((2, 3), (2**31, 1))
    assert needs_int64_index(huge)
    assert not needs_int64_index(torch.empty((1024, 1024), device="meta"))
    assert needs_int64_index(torch.empty((2**16, 2**15 + 1), device="meta"))


def test_int64_kernel_path_matches(monkeypatch):
    """Force the int64 path on a small tensor: same values, so the promotion is sound."""
    monkeypatch.setattr(bias_elu_kernels, "needs_int64_index", lambda *args: True)
    x = randn((3, 5, 7), torch.float32).requires_grad_()
    b = randn((5,), torch.float32).requires_grad_()
    y = elutriton.bias_elu(x, b)
    assert_close(y, ref_bias_elu(x, b))
    gx, gb = torch.autograd.grad(y.sum(), (x, b))
    rgx, rgb = ref_bias_elu_grads(x, b, torch.ones_like(y))
    assert_close(gx, rgx, tolerances=GRAD_TOLERANCES)
    assert_close(gb, rgb, tolerances=GRAD_TOLERANCES)


@pytest.mark.gpu
def test_past_2_pow_31_elements_on_gpu():
    n = 2**31 + 4099
    x = torch.empty(n, dtype=torch.float16, device="cuda")
    x[-4096:].copy_(torch.linspace(-3, 3, 4096, device="cuda"))
    y = elutriton.elu(x[-4096:].clone())
    y_big = elutriton.elu(x)
    torch.testing.assert_close(y_big[-4096:], y)


# --------------------------------------------------------------------------- modules
@pytest.mark.parametrize("ours,theirs", [
    (elutriton.nn.ELU(0.7), torch.nn.ELU(0.7)),
    (elutriton.nn.SELU(), torch.nn.SELU()),
    (elutriton.nn.CELU(1.5), torch.nn.CELU(1.5)),
], ids=["elu", "selu", "celu"])
def test_activation_modules_are_drop_in(ours, theirs):
    assert isinstance(ours, type(theirs)) and repr(ours) == repr(theirs)
    x = randn((4, 9), torch.float64, special=True)
    assert_close(ours(x), theirs(x))
    inplace = type(ours)(*([ours.alpha] if hasattr(ours, "alpha") else []), inplace=True)
    h = x.clone()
    assert inplace(h) is h
    assert_close(h, theirs(x))


@pytest.mark.parametrize("make,theirs", [
    (lambda inplace: elutriton.nn.ELU(0.7, inplace), lambda inplace: torch.nn.ELU(0.7, inplace)),
    (lambda inplace: elutriton.nn.SELU(inplace), lambda inplace: torch.nn.SELU(inplace)),
    (lambda inplace: elutriton.nn.CELU(1.5, inplace),
     lambda inplace: torch.nn.CELU(1.5, inplace)),
], ids=["elu", "selu", "celu"])
def test_activation_modules_call_torchs_op_on_the_fallback(make, theirs, monkeypatch):
    """On a device without the kernels the drop-ins call torch's functional op directly, not
    the public function (whose plan would only pick that op): torch's module's result bit for
    bit, in its layout, in place or not, with its autograd node, gradients and one version
    bump. An fx Proxy still goes to the public function, which records itself."""
    import elutriton.nn.activation as activation
    monkeypatch.setattr(activation, "INTERPRET", False)
    traced = torch.fx.symbolic_trace(torch.nn.Sequential(make(False)))
    assert [node.target for node in traced.graph.nodes if node.op == "call_function"] == [
        getattr(elutriton, type(make(False)).__name__.lower())]
    for public in ("elu", "selu", "celu"):
        monkeypatch.setattr(activation, public,
                            lambda *args, **kwargs: pytest.fail("public function called"))
    x = randn((4, 6, 5), torch.float32, special=True).transpose(0, 2)[:, 1:]  # strided
    for inplace in (False, True):
        for grad in (False, True):
            leaf, torch_leaf = (x.clone().requires_grad_(grad) for _ in range(2))
            target, torch_target = ((t.clone() if inplace and grad else t)
                                    for t in (leaf, torch_leaf))
            version = target._version
            y, expected = make(inplace)(target), theirs(inplace)(torch_target)
            assert (y is target) == inplace and target._version == version + inplace
            torch.testing.assert_close(y, expected, equal_nan=True, atol=0, rtol=0)
            assert y.stride() == expected.stride()
            if grad:
                assert type(y.grad_fn) is type(expected.grad_fn)
                grad_y = randn(y.shape, torch.float32)
                (got,) = torch.autograd.grad(y, leaf, grad_y)
                (want,) = torch.autograd.grad(expected, torch_leaf, grad_y)
                torch.testing.assert_close(got, want, equal_nan=True, atol=0, rtol=0)


def test_bias_elu_module():
    module = elutriton.nn.BiasELU(6, alpha=0.5, dim=-1).to(DEVICE)
    assert [name for name, _ in module.named_parameters()] == ["bias"]
    assert list(module.state_dict()) == ["bias"]
    with torch.no_grad():
        module.bias.copy_(torch.randn(6, device=DEVICE))
    x = randn((3, 6), torch.float32)
    assert_close(module(x), ref_bias_elu(x, module.bias, 0.5, dim=-1))
    module(x).sum().backward()
    assert module.bias.grad is not None and module.bias.grad.shape == (6,)
    assert "6, alpha=0.5" in repr(module)
    with pytest.raises(ValueError, match="num_channels"):
        elutriton.nn.BiasELU(0)
    with pytest.raises(ValueError, match="`bias` of length"):
        module(randn((3, 5), torch.float32))
