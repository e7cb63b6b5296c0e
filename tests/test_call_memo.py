"""The fused layers' memo of kernel calls (ops/call_memo.py): a warm ``Conv2dELU``/``LinearELU``
call whose public op ran elutriton's kernels (the fused kernel, or the library path's bias+ELU
kernel; with and without autograd, under autocast) repeats that call without the public op,
with float64's results and gradients; and each fact the kernel's plan read that the memo key
does not hold makes the memo miss (``kernel_guard``). The composite's memo is tested in
test_composite_path.py."""
import copy

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

import elutriton
from elutriton.kernels import launch
from elutriton.plan import clear_plans
from tests.reference import DEVICE, GEMM_TOLERANCES, GRAD_TOLERANCES, assert_close, randn

PARAMS = (0.5, 2.0, 0.7)
DEVICE_TYPE = torch.device(DEVICE).type


@pytest.fixture
def counts(monkeypatch):
    """{"public": the fused layers' calls of the public op (memo misses), "launches": kernel
    launches}: a hit launches kernels without the public op."""
    counts = {"public": 0, "launches": 0}
    for name in ("conv2d_bias_elu_call", "linear_bias_elu_call"):
        original = getattr(elutriton.nn.layers, name)

        def counted(*args, _op=original):
            counts["public"] += 1
            return _op(*args)
        monkeypatch.setattr(f"elutriton.nn.layers.{name}", counted)
    original_launch = launch.FixedLaunch.__call__

    def counted_launch(self, *args):
        counts["launches"] += 1
        return original_launch(self, *args)
    monkeypatch.setattr(launch.FixedLaunch, "__call__", counted_launch)
    return counts


def choose(monkeypatch, path):
    """The per-shape choice forced to ``path``; the Triton backward, so that calls that
    autograd records on the library path keep its kernel (not torch's composite)."""
    monkeypatch.setenv("ELUTRITON_PATH", path)
    monkeypatch.setenv("ELUTRITON_BACKWARD", "triton")
    clear_plans()


LAYERS = {  # name -> (layer, input shape, channels_last input)
    "conv 3x3": (lambda: torch.nn.Conv2d(5, 8, 3, padding=1), (2, 5, 7, 6), True),
    "conv grouped nchw": (lambda: torch.nn.Conv2d(6, 4, (3, 2), stride=(2, 1), padding=(1, 0),
                                                  groups=2), (3, 6, 9, 5), False),
    "conv reflect": (lambda: torch.nn.Conv2d(4, 6, 3, padding=1, padding_mode="reflect"),
                     (2, 4, 5, 6), True),
    # 'same' with an even kernel: the call pads a copy of x (the extra row and column), and
    # runs the copy's plan
    "conv same 2x2": (lambda: torch.nn.Conv2d(5, 7, 2, padding="same"), (2, 5, 6, 5), False),
    "linear 3-D": (lambda: torch.nn.Linear(10, 6), (3, 4, 10), False),
}


def make(name):
    build, shape, channels_last = LAYERS[name]
    layer = build().to(DEVICE)
    fused_type = (elutriton.nn.Conv2dELU if isinstance(layer, torch.nn.Conv2d)
                  else elutriton.nn.LinearELU)
    fused = fused_type.from_layer(layer, *PARAMS)

    def inputs(grad=False, dtype=torch.float32):
        x = randn(shape, dtype)
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        return x.requires_grad_(grad)
    return fused, inputs


def unfused_float64(fused, x, cast=None):
    """float64 torch on the fused layer's current parameters (rounded to ``cast`` first, as
    autocast rounds them), then the ELU family."""
    round_ = (lambda t: t) if cast is None else (lambda t: t.to(cast))
    unfused = copy.deepcopy(fused)
    with torch.no_grad():
        for p in unfused.parameters():
            p.copy_(round_(p))
    unfused = unfused.double()
    xd = round_(x.detach()).double().requires_grad_(x.requires_grad)
    forward = super(type(unfused), unfused).forward
    return xd, unfused, torch.ops.aten.elu(forward(xd), *PARAMS)


@pytest.mark.parametrize("cast", [None, torch.float16], ids=["fp32", "fp16 autocast"])
@pytest.mark.parametrize("grad", [False, True], ids=["no grad", "grad"])
@pytest.mark.parametrize("path", ["fused", "library"])
@pytest.mark.parametrize("name", list(LAYERS))
def test_a_warm_kernel_call_skips_the_public_op_with_float64_results(
        counts, monkeypatch, name, path, grad, cast):
    choose(monkeypatch, path)
    fused, inputs = make(name)
    dtype = torch.float32 if cast is None else cast
    tolerances = {dtype: GEMM_TOLERANCES[dtype]}
    # kernel calls: the fused path's, and a conv library path's without autograd (a linear
    # library layer runs torch's composite, as does a conv one with autograd where the
    # backward is cuDNN's: the grouped layer's)
    kernel = path == "fused" or (name.startswith("conv") and not grad)
    for i in range(3):
        x = inputs(grad)
        launches = counts["launches"]
        with torch.set_grad_enabled(grad), torch.autocast(DEVICE_TYPE,
                                                          dtype=cast or torch.float16,
                                                          enabled=cast is not None):
            y = fused(x)
            launched = counts["launches"] > launches
            assert counts["public"] == 1  # the first call alone goes through the public op
            # bit for bit the public op's result (a copy keeps no memo: its call is the op's)
            assert torch.equal(y, copy.deepcopy(fused)(x))
            counts["public"] -= 1
        xd, unfused, expected = unfused_float64(fused, x, cast)
        assert y.dtype == dtype and y.shape == expected.shape
        assert_close(y, expected, tolerances=tolerances)
        (entry,) = fused._direct.values()  # one key: this call's
        guarded = entry[1] is not None  # (a kernel call's memo holds its guard)
        assert guarded == launched
        assert guarded or not kernel
    if grad:  # the last hit's gradients, through the op's autograd
        grad_y = randn(y.shape, dtype)
        got = torch.autograd.grad(y, (x, fused.weight, fused.bias), grad_y)
        expected_grads = torch.autograd.grad(expected, (xd, unfused.weight, unfused.bias),
                                             grad_y.double())
        for g, e in zip(got, expected_grads):
            assert_close(g, e, tolerances={g.dtype: GRAD_TOLERANCES[torch.float16 if cast
                                                                    else torch.float32]})


def test_the_kernel_memo_misses_where_the_plan_read_more_than_the_key(counts, monkeypatch):
    """What ``kernel_guard`` holds: each change below leaves ``module_call_key`` as it was."""
    choose(monkeypatch, "fused")
    fused, inputs = make("conv 3x3")
    x = inputs()

    def call(x, miss=True):
        before = counts["public"]
        with torch.no_grad():
            y = fused(x)
        assert counts["public"] == before + miss
        assert_close(y, unfused_float64(fused, x)[2], tolerances=GEMM_TOLERANCES)

    call(x)
    call(x, miss=False)
    weight = fused.weight.data
    assert weight.is_contiguous()
    # the weight's strides (the plan reads them)
    fused.weight.data = weight.contiguous(memory_format=torch.channels_last)
    call(x)
    call(x, miss=False)
    fused.weight.data = weight[:, :, :2, :2].clone()  # its shape: another kernel size
    call(x)
    fused.weight.data = weight
    call(x)
    bias = fused.bias
    fused.bias = None  # no bias (another key: the memo keeps both)
    call(x)
    fused.bias = bias
    call(x, miss=False)
    bias_values = bias.data
    bias.data = randn((16,), torch.float32)[::2]  # a strided bias (the plan reads its strides)
    call(x)
    call(x, miss=False)
    bias.data = bias_values
    call(x)
    # a negative view has x's strides; its storage holds -x: the public op's error
    before = counts["public"]
    with pytest.raises(TypeError, match="negative view"), torch.no_grad():
        fused(torch._neg_view(x))
    assert counts["public"] == before + 1
    call(x, miss=False)

    class Ops(TorchDispatchMode):  # a dispatch mode: it must see the custom op
        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            seen.append(str(func))
            return func(*args, **(kwargs or {}))
    seen = []
    with Ops():
        call(x)
    assert any("elutriton.conv2d_bias_elu" in op for op in seen)
    call(x, miss=False)  # (the custom op's call left the memo as it was)


def test_a_dead_functorch_wrapper_misses_the_kernel_memo(counts, monkeypatch):
    """A tensor kept from inside a torch.func transform that has ended is still wrapped:
    ``FusedOp.call`` takes the autograd Function's Python ``apply`` (which unwraps it) there,
    so a memoed call with autograd must go through the public op."""
    choose(monkeypatch, "fused")
    fused, inputs = make("conv 3x3")
    x = inputs(grad=True)
    fused(x)
    fused(x)
    assert counts["public"] == 1
    kept = []
    torch.func.grad(lambda t: kept.append(t) or t.sum())(x.detach())
    assert torch._C._functorch.is_functorch_wrapped_tensor(kept[0])
    y = fused(kept[0])
    assert counts["public"] == 2
    assert_close(y, unfused_float64(fused, x)[2], tolerances=GEMM_TOLERANCES)


def test_a_legacy_vmap_batch_misses_the_kernel_memo(counts, monkeypatch):
    """torch's legacy vmap (what ``autograd.grad(..., is_grads_batched=True)`` runs backward
    under) hands the layer a batched tensor with a plain tensor's class, shape and strides:
    the kernels cannot read it (``FusedOp.call`` sends it to the composite)."""
    from torch._vmap_internals import _vmap
    choose(monkeypatch, "fused")
    layer = torch.nn.Conv2d(5, 8, 3, padding=1, device=DEVICE)
    fused = elutriton.nn.Conv2dELU.from_layer(layer, *PARAMS)
    with torch.no_grad():
        for _ in range(2):
            fused(randn((2, 5, 7, 6), torch.float32))
        assert counts["public"] == 1
        batch = randn((3, 2, 5, 7, 6), torch.float32)
        y = _vmap(fused)(batch)
    assert counts["public"] == 2
    for i in range(3):
        assert_close(y[i], unfused_float64(fused, batch[i])[2], tolerances=GEMM_TOLERANCES)


def test_a_padded_fallback_call_is_memoed(counts, monkeypatch):
    """A device without the kernels and 'same' padding of an even kernel: the public op pads a
    copy and runs the fallback's composite on it; the memo repeats both."""
    monkeypatch.setattr("elutriton.ops.conv2d.use_triton", lambda tensor: False)
    choose(monkeypatch, "fused")
    fused, inputs = make("conv same 2x2")
    for _ in range(3):
        x = inputs()
        with torch.no_grad():
            y = fused(x)
            assert torch.equal(y, copy.deepcopy(fused)(x))
        counts["public"] -= 1
        assert_close(y, unfused_float64(fused, x)[2], tolerances=GEMM_TOLERANCES)
    assert counts["public"] == 1 and counts["launches"] == 0


@pytest.mark.parametrize("name", ["conv 3x3", "conv same 2x2", "linear 3-D"])
def test_the_public_functions_build_no_memo(monkeypatch, name):
    """``elutriton.conv2d_bias_elu`` / ``linear_bias_elu`` keep no memo, so they build no
    kernel-call repeat (host time on every functional call)."""
    def unwanted(*args):
        raise AssertionError("built a memo's function for a public function's call")
    for module in ("conv2d", "linear"):
        monkeypatch.setattr(f"elutriton.ops.{module}.kernel_call", unwanted)
    choose(monkeypatch, "fused")
    fused, inputs = make(name)
    x = inputs()
    with torch.no_grad():
        if name.startswith("conv"):
            y = elutriton.conv2d_bias_elu(x, fused.weight, fused.bias, fused.stride,
                                          fused.padding, fused.dilation, fused.groups, *PARAMS)
        else:
            y = elutriton.linear_bias_elu(x, fused.weight, fused.bias, *PARAMS)
    assert_close(y, unfused_float64(fused, x)[2], tolerances=GEMM_TOLERANCES)


def test_the_memo_holds_several_input_sizes_up_to_its_bound(counts, monkeypatch):
    """A layer applied to a few input sizes in turn (a head shared by the levels of a feature
    pyramid, a last smaller batch) hits for each after its first call; past
    ``MEMO_ENTRIES`` keys the memo starts over instead of growing."""
    from elutriton.nn.layers import MEMO_ENTRIES
    choose(monkeypatch, "library")
    layer = torch.nn.Conv2d(5, 8, 3, padding=1, device=DEVICE)
    fused = elutriton.nn.Conv2dELU.from_layer(layer, *PARAMS)
    sizes = [(2, 5, 7, 6), (2, 5, 4, 4), (1, 5, 7, 6)]
    with torch.no_grad():
        for round_ in range(2):
            for size in sizes:
                x = randn(size, torch.float32)
                assert_close(fused(x), unfused_float64(fused, x)[2], tolerances=GEMM_TOLERANCES)
            assert counts["public"] == len(sizes)  # the second round: hits only
        for batch in range(3, 3 + MEMO_ENTRIES):
            fused(randn((batch, 5, 4, 4), torch.float32))
            assert 0 < len(fused._direct) <= MEMO_ENTRIES
        assert counts["public"] == len(sizes) + MEMO_ENTRIES
        # a full memo whose key's entry is replaced (the weight's strides changed: its guard)
        # keeps the other keys
        fused._direct.clear()
        for batch in range(1, 1 + MEMO_ENTRIES):
            fused(randn((batch, 5, 4, 4), torch.float32))
        weight = fused.weight.data
        fused.weight.data = weight.contiguous(memory_format=torch.channels_last)
        before = counts["public"]
        fused(randn((1, 5, 4, 4), torch.float32))
        fused.weight.data = weight
        fused(randn((2, 5, 4, 4), torch.float32))
        assert counts["public"] == before + 1 and len(fused._direct) == MEMO_ENTRIES


@pytest.mark.parametrize("setting", ["padding", "stride", "dilation"])
def test_a_setting_assigned_as_a_list_is_not_memoed(counts, monkeypatch, setting):
    """``conv.padding = [1, 1]`` (a list, which nn.Conv2d itself never stores but F.conv2d
    takes): the memo key cannot be hashed, so such calls go through the public op."""
    choose(monkeypatch, "fused")
    fused, inputs = make("conv 3x3")
    setattr(fused, setting, list(getattr(fused, setting)))
    for i in range(2):
        x = inputs()
        with torch.no_grad():
            y = fused(x)
        assert counts["public"] == i + 1
        assert_close(y, unfused_float64(fused, x)[2], tolerances=GEMM_TOLERANCES)
