"""When the fused conv and linear run torch's composite (ops/composite_path.py): the
convolution or linear, then the in-place ELU, for library-path layers whose backward is cuDNN's,
both where torch.compile traces them and in eager calls that autograd records (not under
CUDA-graph capture); the custom op or the library path otherwise. Results and gradients against
float64, and autograd keeping y, not the pre-activation, on the composite. Also the fused
layers' memo of it (nn/layers.py): warm calls skip the public op, and every fact the choice
reads makes the memo miss."""
import copy
import importlib
import io

import pytest
import torch
import torch.autograd.forward_ad as fwAD
import torch.nn.functional as F

import elutriton
from elutriton.plan import clear_plans
from tests.reference import (DEVICE, GEMM_TOLERANCES, GRAD_TOLERANCES, assert_close,
                             assert_grad_close, randn)

DEVICE_TYPE = torch.device(DEVICE).type


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


# ------------------------------------------------------------------ eager calls with autograd
def runs_composite(y):
    """Whether an eager call's output came from torch's composite: the in-place ELU's node
    (elu_ keeps its result) rather than the fused op's autograd Function."""
    node = y.grad_fn
    if node.name().startswith(("SqueezeBackward", "ViewBackward")):  # a view of the output
        node = node.next_functions[0][0]
    name = node.name()
    assert name.startswith(("EluBackward", "conv2d_bias_elu", "linear_bias_elu")), name
    return name.startswith("EluBackward")


def assert_composite_matches_float64(y, inputs, gemm, params, n_terms):
    """y = elu(gemm(*inputs), *params) from the composite against float64 autograd, output and
    the gradients of every input (each element of those a sum of ``n_terms`` products)."""
    dtype = y.dtype
    doubles = [t.detach().double().requires_grad_() for t in inputs]
    ref = torch.ops.aten.elu(gemm(*doubles), *params)
    # rounded twice (z, then y) on top of the GEMM's accumulation: two ulps
    tolerances = {dtype: {k: 2 * v for k, v in GEMM_TOLERANCES[dtype].items()}}
    assert_close(y, ref, tolerances=tolerances)
    grad_y = randn(y.shape, dtype)
    got = torch.autograd.grad(y, inputs, grad_y)
    expected = torch.autograd.grad(ref, doubles, grad_y.double())
    for g, e in zip(got, expected):
        assert_grad_close(g, e, dtype, n_terms=n_terms)


@pytest.fixture
def captured(monkeypatch):
    """Pretend a CUDA graph is being captured (what composite_path.capturing asks torch)."""
    def capture(on=True):
        monkeypatch.setattr("elutriton.ops.composite_path.capturing", lambda is_cuda: on)
    return capture


CONV_CASES = [  # (x shape, weight shape, stride, padding, dilation, groups)
    ((2, 5, 7, 6), (8, 5, 3, 3), 1, 1, 1, 1),
    ((3, 6, 9, 5), (4, 3, 3, 2), (2, 1), (1, 0), 1, 2),
    ((5, 11, 10), (7, 5, 2, 2), 1, "same", 1, 1),  # unbatched, F.pad's extra row and column
    ((1, 3, 8, 8), (6, 1, 3, 3), 1, 2, 2, 3),  # depthwise, dilated
]


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16], ids=str)
@pytest.mark.parametrize("layout", ["channels_last", "nchw", "sliced"])
@pytest.mark.parametrize("case", range(len(CONV_CASES)))
def test_an_eager_library_layer_with_autograd_runs_the_composite_with_exact_results(
        path, case, layout, dtype):
    path("library")
    x_shape, w_shape, stride, padding, dilation, groups = CONV_CASES[case]
    params = (0.5, 2.0, 0.7)
    # (1) 0, -0.0, NaN and +-inf among the inputs: the forward; (2) finite inputs: gradients
    for special in (True, False):
        x = randn(x_shape, dtype, special=special)
        if layout == "channels_last" and x.dim() == 4:
            x = x.contiguous(memory_format=torch.channels_last)
        if layout == "sliced":
            x = randn(x_shape[:-1] + (2 * x_shape[-1],), dtype, special=special)[..., ::2]
        w = (randn(w_shape, dtype) / 4).requires_grad_()
        b = randn((w_shape[0],), dtype).requires_grad_()
        x.requires_grad_()
        y = elutriton.conv2d_bias_elu(x, w, b, stride, padding, dilation, groups, *params)
        assert runs_composite(y)
        expected = F.conv2d(x.detach(), w.detach(), b.detach(), stride, padding, dilation,
                            groups)
        assert y.shape == expected.shape and y.stride() == expected.stride()
        # what eager PyTorch gives in this dtype, bit for bit (oneDNN's bf16 channels_last
        # convolution on CPU spreads NaN and inf differently from a float64 convolution)
        torch.testing.assert_close(y, torch.ops.aten.elu(expected, *params), atol=0, rtol=0,
                                   equal_nan=True)
    assert_composite_matches_float64(
        y, (x, w, b), lambda x, w, b: F.conv2d(x, w, b, stride, padding, dilation, groups),
        params, n_terms=y.numel() // y.shape[-3])


def test_which_eager_calls_run_the_composite(path, captured, monkeypatch):
    layer = lambda x, w, b, **kw: elutriton.conv2d_bias_elu(x, w, b, padding=1, **kw)  # noqa
    x, w, b = conv_inputs()
    path("library")
    assert runs_composite(layer(x, w, b))
    assert runs_composite(layer(x.detach(), w, b))  # no input gradient: cuDNN's all the same
    # the backward choice is read on each call, as backward reads it, so no clear_plans here
    monkeypatch.setenv("ELUTRITON_BACKWARD", "triton")
    assert not runs_composite(layer(x, w, b))  # the Triton backward needs the custom op
    monkeypatch.setenv("ELUTRITON_BACKWARD", "cudnn")
    assert runs_composite(layer(x, w, b))
    # the rule without a table entry, fp32 and < 16 input channels: Triton's backward without
    # an input gradient, cuDNN's with one; the same plan must follow the flags of each call
    monkeypatch.setenv("ELUTRITON_BACKWARD", "auto")
    assert runs_composite(layer(x, w, b))
    assert not runs_composite(layer(x.detach(), w, b))
    monkeypatch.setenv("ELUTRITON_BACKWARD", "cudnn")
    # parameters whose derivative y cannot give: the recompute backward (same shapes: the
    # plan must miss on the parameters)
    assert not runs_composite(layer(x, w, b, alpha=-0.5))
    assert runs_composite(layer(x, w, b, alpha=0.5))
    captured()  # a CUDA graph being captured: the library path's fewer passes
    y = layer(x, w, b)
    assert not runs_composite(y)
    assert_close(y, reference_conv(x, w, b), tolerances=GEMM_TOLERANCES)
    captured(False)
    path("fused")  # the fused kernel keeps its own autograd
    assert not runs_composite(layer(x, w, b))
    path("library")
    elus = []
    composite = importlib.import_module("elutriton.ops.conv2d").conv_composite
    monkeypatch.setattr("elutriton.ops.conv2d.conv_composite",
                        lambda *args: elus.append(1) or composite(*args))
    with torch.no_grad():  # nothing recorded: the library path, one launch for bias and ELU
        y = layer(x, w, b)
    xd = x.detach()
    y = layer(xd, w.detach(), b.detach())
    assert elus == [] and y.grad_fn is None
    assert_close(y, reference_conv(xd, w, b), tolerances=GEMM_TOLERANCES)
    assert runs_composite(layer(xd, w.detach(), b))  # the bias alone needs a gradient
    assert elus == [1]


def test_the_eager_composite_keeps_y_not_z(path):
    path("library")
    x, w, b = conv_inputs()
    saved = []
    with torch.autograd.graph.saved_tensors_hooks(lambda t: saved.append(t) or t, lambda t: t):
        y = elutriton.conv2d_bias_elu(x, w, b, padding=1)
    assert runs_composite(y)
    z = F.conv2d(x, w, b, padding=1).detach()
    outputs = [t for t in saved if t.shape == y.shape]
    assert any(torch.equal(t, y.detach()) for t in outputs)
    assert not any(torch.equal(t, z) for t in outputs)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16], ids=str)
def test_an_eager_linear_library_layer_with_autograd_runs_the_composite(path, captured, dtype):
    x = randn((3, 4, 10), dtype).requires_grad_()
    w = (randn((6, 10), dtype) / 3).requires_grad_()
    b = randn((6,), dtype).requires_grad_()
    params = (0.5, 2.0, 0.7)
    path("library")
    y = elutriton.linear_bias_elu(x, w, b, *params)
    assert runs_composite(y)
    assert_composite_matches_float64(y, (x, w, b), F.linear, params, n_terms=12)
    assert not runs_composite(elutriton.linear_bias_elu(x, w, b, -0.5))  # recompute backward
    captured()
    assert not runs_composite(elutriton.linear_bias_elu(x, w, b, *params))
    captured(False)
    path("fused")
    assert not runs_composite(elutriton.linear_bias_elu(x, w, b, *params))


# ------------------------------------------------------ the fused layers' memo (nn/layers.py)
@pytest.fixture
def public_calls(monkeypatch):
    """Count the fused layers' calls that go through the public op (a memo miss)."""
    calls = []
    for name in ("conv2d_bias_elu_call", "linear_bias_elu_call"):
        original = getattr(elutriton.nn.layers, name)
        monkeypatch.setattr(f"elutriton.nn.layers.{name}",
                            lambda *args, _op=original: calls.append(1) or _op(*args))
    return calls


LAYER_CASES = {  # name -> (layer, input shape, channels_last input)
    "conv 3x3": (lambda: torch.nn.Conv2d(5, 8, 3, padding=1), (2, 5, 7, 6), True),
    # 'same' with an even kernel: the public op pads a copy; the memo calls F.conv2d on x
    "conv same 2x2": (lambda: torch.nn.Conv2d(5, 7, 2, padding="same"), (3, 5, 6, 5), True),
    "conv unbatched": (lambda: torch.nn.Conv2d(3, 6, 3, stride=(2, 1), groups=3), (3, 9, 7), False),
    "conv reflect": (lambda: torch.nn.Conv2d(4, 6, 3, padding=1, padding_mode="reflect"),
                     (2, 4, 5, 6), False),
    "linear 3-D": (lambda: torch.nn.Linear(10, 6), (3, 4, 10), False),
}


def fused_layer(name, params=(0.5, 2.0, 0.7)):
    make, shape, channels_last = LAYER_CASES[name]
    layer = make().to(DEVICE)
    fused = (elutriton.nn.Conv2dELU if isinstance(layer, torch.nn.Conv2d)
             else elutriton.nn.LinearELU).from_layer(layer, *params)

    def inputs(grad=True):
        x = randn(shape, torch.float32)
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        return x.requires_grad_(grad)
    return layer, fused, inputs


def expected_output(layer, x, params):
    """float64 torch: the unfused layer, then the ELU family."""
    double = copy.deepcopy(layer).double()
    return torch.ops.aten.elu(double(x.detach().double()), *params)


@pytest.mark.parametrize("name", list(LAYER_CASES))
def test_a_warm_library_layer_call_skips_the_public_op_with_the_same_results(
        path, public_calls, name):
    path("library")
    params = (0.5, 2.0, 0.7)
    layer, fused, inputs = fused_layer(name, params)
    # (an unbatched conv keeps no memo: elu_ on F.conv2d's unbatched output, a view, would
    # make autograd rebase it)
    memo = name != "conv unbatched"
    first = fused(inputs())
    assert runs_composite(first) and len(public_calls) == 1
    for i in range(2):  # memo hits: no public op, torch's composite, float64's results
        x = inputs()
        y = fused(x)
        assert len(public_calls) == (1 if memo else i + 2) and runs_composite(y)
        assert y.shape == first.shape and y.stride() == first.stride()
        assert_close(y, expected_output(layer, x, params), tolerances=GEMM_TOLERANCES)
    grad_y = randn(y.shape, torch.float32)
    got = torch.autograd.grad(y, (x, fused.weight, fused.bias), grad_y)
    double = copy.deepcopy(fused).double()
    xd = x.detach().double().requires_grad_()
    expected = torch.autograd.grad(
        torch.ops.aten.elu(super(type(double), double).forward(xd), *params),
        (xd, double.weight, double.bias), grad_y.double())
    for g, e in zip(got, expected):
        assert_close(g, e, tolerances={torch.float32: GRAD_TOLERANCES[torch.float32]})
    assert set(fused.state_dict()) == {"weight", "bias"}  # the memo is not state


def test_the_layer_memo_misses_wherever_the_choice_may_differ(path, public_calls, captured,
                                                              monkeypatch):
    path("library")
    params = (0.5, 2.0, 0.7)
    layer, fused, inputs = fused_layer("conv 3x3", params)

    def call(x, composite, miss=True):
        """One call: whether it went through the public op and ran the composite; the
        result against float64."""
        before = len(public_calls)
        y = fused(x)
        assert len(public_calls) == before + miss
        if y.grad_fn is not None:
            assert runs_composite(y) == composite
        else:
            assert not composite
        assert_close(y, expected_output(unfused(), x, (fused.alpha, fused.scale,
                                                         fused.input_scale)),
                     tolerances=GEMM_TOLERANCES)
        return y

    def unfused():  # the fused layer's conv as it is now, as an nn.Conv2d
        conv = torch.nn.Conv2d(5, 8, 3, padding=fused.padding, device=DEVICE)
        conv.load_state_dict(fused.state_dict())
        return conv

    x = inputs()

    def fresh():
        """A memo holding the base call alone (x, autograd on, the layer's settings); each
        change below then misses, and the base still hits (the memo holds several keys)."""
        fused.__dict__.pop("_direct", None)
        call(x, True)
        call(x, True, miss=False)

    fresh()
    call(inputs()[:1], True)  # another batch size
    call(x, True, miss=False)
    call(x.contiguous(), True)  # NCHW strides
    call(x.detach(), True)  # no input gradient
    fused.weight.requires_grad_(False)
    call(x.detach(), True)  # the bias alone needs a gradient
    fused.weight.requires_grad_(True)
    call(x, True, miss=False)
    fresh()
    with torch.no_grad():  # nothing recorded: the library path's kernel, not the composite
        call(x, False)
    call(x, True, miss=False)
    with pytest.raises(TypeError, match="elutriton.conv2d_bias_elu"):  # elutriton's check
        fused(x.double())
    call(x, True, miss=False)  # (a call that raised leaves the memo as it was)
    with torch.autocast(DEVICE_TYPE, torch.bfloat16):
        before = len(public_calls)
        y = fused(x)
        assert len(public_calls) == before + 1 and y.dtype == torch.bfloat16
    call(x, True, miss=False)
    fresh()
    monkeypatch.setenv("ELUTRITON_BACKWARD", "triton")  # read on each call
    call(x, False)
    call(x, False, miss=False)  # (the kernel call with autograd: memoed too, call_memo.py)
    monkeypatch.setenv("ELUTRITON_BACKWARD", "cudnn")
    call(x, True, miss=False)
    captured()
    call(x, False)
    captured(False)
    call(x, True, miss=False)
    fresh()
    fused.alpha = -0.5  # y cannot give the derivative: the custom op's recompute backward
    call(x, False)
    fused.alpha = 0.5
    call(x, True, miss=False)
    fused.padding = (2, 0)
    assert call(x, True).shape[-2:] == (9, 4)
    fused.padding = (1, 1)
    call(x, True, miss=False)
    monkeypatch.setenv("ELUTRITON_PATH", "fused")  # read when plans are made:
    call(x, True, miss=False)
    clear_plans()  # ... and clear_plans makes the memo stale too
    call(x, False)
    monkeypatch.setenv("ELUTRITON_PATH", "library")
    clear_plans()
    call(x, True)
    fused.double()  # the parameters' dtype
    with pytest.raises(TypeError, match="elutriton.conv2d_bias_elu"):  # elutriton's check
        fused(x)
    before = len(public_calls)
    y = fused(x.double())
    assert len(public_calls) == before + 1 and y.dtype == torch.float64


def test_a_memoed_layer_under_forward_ad_and_vmap_goes_through_the_public_op(path,
                                                                             public_calls):
    path("library")
    params = (0.5, 2.0, 0.7)
    layer, fused, inputs = fused_layer("conv 3x3", params)
    x = inputs(grad=False)
    fused(x)  # (the parameters need gradients: the composite)
    fused(x)
    assert len(public_calls) == 1  # warm: the memo hit
    tangent = randn(x.shape, torch.float32)
    with fwAD.dual_level():
        y = fused(fwAD.make_dual(x.detach(), tangent))
        got = fwAD.unpack_dual(y).tangent
    assert len(public_calls) == 2
    conv = copy.deepcopy(layer).double()
    _, expected = torch.func.jvp(lambda t: torch.ops.aten.elu(conv(t), *params),
                                 (x.detach().double(),), (tangent.double(),))
    assert_close(got, expected, tolerances=GEMM_TOLERANCES)
    batched = torch.stack([x.detach(), 2 * x.detach()])
    fused(x)
    before = len(public_calls)
    y = torch.func.vmap(fused)(batched)
    assert len(public_calls) == before + 1
    for i in range(2):
        assert_close(y[i], expected_output(layer, batched[i], params),
                     tolerances=GEMM_TOLERANCES)


def test_the_layer_memo_keeps_the_pytorch_fallback(path, public_calls, monkeypatch):
    """A device without the kernels: the public op hands the call to the PyTorch fallback,
    which the memo keeps (no autograd: nothing else would be memoed)."""
    path("library")
    monkeypatch.setattr("elutriton.ops.conv2d.use_triton", lambda tensor: False)
    params = (0.5, 2.0, 0.7)
    layer, fused, inputs = fused_layer("conv 3x3", params)
    for _ in range(3):
        x = inputs()
        with torch.no_grad():
            y = fused(x)
        assert y.stride() == F.conv2d(x, layer.weight, layer.bias, padding=1).stride()
        assert_close(y, expected_output(layer, x, params), tolerances=GEMM_TOLERANCES)
    assert len(public_calls) == 1
    # the memo holds the fallback, a local function: the layer still pickles (torch.save of
    # the whole module), and the copy builds its own memo
    buffer = io.BytesIO()
    torch.save(fused, buffer)
    buffer.seek(0)
    loaded = torch.load(buffer, weights_only=False)
    assert "_direct" not in vars(loaded) and "_direct" not in vars(copy.deepcopy(fused))
    with torch.no_grad():
        assert_close(loaded(x), expected_output(layer, x, params), tolerances=GEMM_TOLERANCES)
    assert len(public_calls) == 2


def test_env_reader_follows_os_environ(monkeypatch):
    from elutriton._runtime import env_reader
    read = env_reader("ELUTRITON_TEST_VARIABLE")
    monkeypatch.delenv("ELUTRITON_TEST_VARIABLE", raising=False)
    assert read() is None
    monkeypatch.setenv("ELUTRITON_TEST_VARIABLE", "a")
    first = read()
    assert first in ("a", b"a")
    monkeypatch.setenv("ELUTRITON_TEST_VARIABLE", "b")
    assert read() not in (None, first)
    monkeypatch.delenv("ELUTRITON_TEST_VARIABLE")
    assert read() is None


def test_clear_plans_moves_the_plans_generation():
    from elutriton.plan import plans_generation
    before = plans_generation()
    clear_plans()
    assert plans_generation() == before + 1


def test_the_linear_layer_memo(path, public_calls, captured):
    path("library")
    params = (0.5, 2.0, 0.7)
    layer, fused, inputs = fused_layer("linear 3-D", params)
    x = inputs()

    def call(miss, composite):
        before = len(public_calls)
        y = fused(x)
        assert len(public_calls) == before + miss
        assert (y.grad_fn is not None and runs_composite(y)) == composite
        assert_close(y, expected_output(layer, x, params), tolerances=GEMM_TOLERANCES)

    call(True, True)
    call(False, True)
    with torch.no_grad():  # cuBLAS with the bias, then elu_: torch's ops, memoed too
        call(True, False)
        call(False, False)
    call(False, True)  # (the memo holds both keys)
    captured()
    call(True, False)
    call(False, False)  # (the library path's kernel call with autograd: memoed too)
    captured(False)
    call(False, True)
    fused.alpha = -0.5
    params = (-0.5, 2.0, 0.7)
    call(True, False)
