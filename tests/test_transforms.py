"""The public functions and modules under torch.fx, torch.jit.trace, torch.func transforms and
forward-mode AD (elutriton/_transforms.py), and fuse on models that already hold elutriton
modules."""
import warnings

import pytest
import torch
import torch.nn.functional as F
from torch import fx, nn

import elutriton
from tests.reference import DEVICE, SELU, randn


class Mixed(nn.Module):
    """Every public function and module, called as user code calls them."""

    def __init__(self):
        super().__init__()
        self.stem = elutriton.nn.Conv2dELU(3, 6, 3, padding=1, alpha=0.7)
        self.same = elutriton.nn.Conv2dELU(6, 6, 2, padding="same", **SELU)  # odd total pad
        self.bias = elutriton.nn.BiasELU(6, alpha=1.3)
        self.act = elutriton.nn.CELU(0.5)
        self.inplace = elutriton.nn.ELU(0.9, inplace=True)
        self.head = elutriton.nn.LinearELU(6 * 5 * 4, 7, alpha=0.5, scale=2.0)
        self.selu = elutriton.nn.SELU()
        self.w = nn.Parameter(torch.randn(6, 6, 1, 1) / 3)

    def forward(self, x):
        x = self.inplace(self.act(self.bias(self.same(self.stem(x)))))
        x = elutriton.conv2d_bias_elu(x, self.w, None, stride=1, alpha=0.4)
        x = elutriton.bias_elu(x, None, 1.0, 1.0, 1.0, dim=1)
        x = elutriton.celu(elutriton.elu(x, alpha=0.3), alpha=2.0)
        x = self.head(x.flatten(1))
        h = elutriton.linear_bias_elu(x, self.head.weight[:, :7], None, alpha=0.2)
        return self.selu(h) + elutriton.selu(x)


def unfused(x, model):
    """The same function in torch's ops, float64."""
    m = {name: p.detach().double() for name, p in model.named_parameters()}
    x = F.elu(F.conv2d(x.double(), m["stem.weight"], m["stem.bias"], padding=1), 0.7)
    x = torch.selu(F.conv2d(x, m["same.weight"], m["same.bias"], padding="same"))
    x = F.elu(x + m["bias.bias"][:, None, None], 1.3)
    x = F.elu(F.celu(x, 0.5), 0.9)
    x = F.elu(F.conv2d(x, m["w"]), 0.4)
    x = F.elu(x)
    x = F.celu(F.elu(x, 0.3), 2.0)
    x = torch.ops.aten.elu(F.linear(x.flatten(1), m["head.weight"], m["head.bias"]), 0.5, 2.0, 1.0)
    h = F.elu(F.linear(x, m["head.weight"][:, :7]), 0.2)
    return torch.selu(h) + torch.selu(x)


def test_fx_symbolic_trace_records_each_public_call():
    """fx passes Proxies, which have no metadata to check or plan with: each call becomes one
    call_function node of the public function (before, fx raised a TypeError, so fuse could
    not trace a model holding elutriton modules)."""
    model = Mixed().to(DEVICE)
    graph_module = fx.symbolic_trace(model)
    targets = [node.target for node in graph_module.graph.nodes if node.op == "call_function"]
    for public in (elutriton.conv2d_bias_elu, elutriton.linear_bias_elu, elutriton.bias_elu,
                   elutriton.elu, elutriton.selu, elutriton.celu):
        assert public in targets, public.__name__
    x = randn((2, 3, 5, 4), torch.float32)
    expected = unfused(x, model)
    torch.testing.assert_close(graph_module(x).double(), expected, atol=2e-5, rtol=2e-5)
    torch.testing.assert_close(model(x).double(), expected, atol=2e-5, rtol=2e-5)


def jit_trace(model, x, check_trace=True):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        warnings.simplefilter("ignore", DeprecationWarning)  # torch 2.13 deprecates jit.trace
        # check_trace traces again (under no_grad), compares the graphs, and compares the
        # trace's output with the model run eagerly
        return torch.jit.trace(model, x, check_trace=check_trace)


@pytest.mark.parametrize("path", ["fused", "library"])
def test_jit_trace_records_torch_ops_that_replay_correctly(path, monkeypatch):
    """torch.jit.trace records only dispatcher ops: a Triton launch is not one, so a trace of
    the kernel path would replay an uninitialised output. Traced calls record torch's
    composite: aten ops only, equal to the model on new inputs, with no kernel launched."""
    monkeypatch.setenv("ELUTRITON_PATH", path)
    elutriton.clear_plans()
    model = Mixed().to(DEVICE)
    x = randn((2, 3, 5, 4), torch.float32)
    model(x)  # warm plans: a traced call must not take them
    from elutriton.kernels import launch
    with monkeypatch.context() as patch:
        patch.setattr(launch.FixedLaunch, "__call__",
                      lambda *a: pytest.fail("a kernel launched while jit traced"))
        jit_trace(model, x, check_trace=False)
    traced = jit_trace(model, x)
    kinds = {node.kind() for node in traced.inlined_graph.nodes()}
    assert not [k for k in kinds if not k.startswith(("aten::", "prim::"))], kinds
    assert "prim::PythonOp" not in kinds
    assert {"aten::_convolution", "aten::linear", "aten::elu", "aten::elu_"} <= kinds, kinds
    x2 = randn((2, 3, 5, 4), torch.float32)
    torch.testing.assert_close(traced(x2).double(), unfused(x2, model), atol=2e-5, rtol=2e-5)


def test_jit_trace_checks_the_activation_parameters():
    layer = elutriton.nn.LinearELU(4, 3).to(DEVICE)
    layer.alpha = float("nan")  # set after construction, which checks it
    with pytest.raises(ValueError, match="alpha"):
        jit_trace(layer, randn((2, 4), torch.float32))


def test_fuse_traces_models_holding_elutriton_modules():
    """fuse traces elutriton's modules as leaves: a model mixing them with torch layers is
    fused on the fx path (before, tracing failed and the Sequential fallback fused nothing);
    an elutriton.nn.ELU/SELU/CELU after a conv/linear fuses like torch's; fusing a fused model
    again changes nothing."""
    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.block = elutriton.nn.Conv2dELU(3, 8, 3, padding=1)
            self.conv = nn.Conv2d(8, 8, 3, padding=1)
            self.act = elutriton.nn.CELU(0.5)
            self.conv2 = nn.Conv2d(8, 4, 1)
            self.act2 = nn.SELU()
            self.lin = nn.Linear(4 * 5 * 5, 6)
            self.act3 = elutriton.nn.ELU(0.3)

        def forward(self, x):
            x = self.act2(self.conv2(self.act(self.conv(self.block(x)))))
            return self.act3(self.lin(x.flatten(1)))

    model = Net().to(DEVICE).eval()
    fused, report = elutriton.fuse(model)
    assert report.path == "fx" and type(fused) is Net
    assert sorted(name for name, _ in report.fused) == ["conv", "conv2", "lin"], report
    assert isinstance(fused.conv, elutriton.nn.Conv2dELU) and fused.conv.alpha == 0.5
    assert isinstance(fused.lin, elutriton.nn.LinearELU) and fused.lin.alpha == 0.3
    x = randn((2, 3, 5, 5), torch.float32)
    torch.testing.assert_close(fused(x), model(x), atol=1e-5, rtol=1e-5)
    again, report = elutriton.fuse(fused)
    assert report.path == "fx" and report.fused == [] and type(again) is Net
    torch.testing.assert_close(again(x), model(x), atol=1e-5, rtol=1e-5)


def test_fuse_sequential_path_fuses_elutriton_activation_modules():
    model = nn.Sequential(nn.Linear(5, 4), elutriton.nn.SELU()).to(DEVICE)
    children = list(model.children())
    from elutriton.fuse import FuseReport, _fuse_sequentials
    report = FuseReport(path="sequential")
    _fuse_sequentials(model, "", report)
    assert isinstance(model[0], elutriton.nn.LinearELU) and type(model[1]) is elutriton.nn.FusedAway
    x = randn((3, 5), torch.float32)
    torch.testing.assert_close(model(x), children[1](children[0](x)), atol=1e-6, rtol=1e-6)


# (public call, the same in torch's ops) on one example x of shape [batch, ...]
CALLS = {
    "elu": (lambda x, p: elutriton.elu(x, 0.5, 2.0, 0.7),
            lambda x, p: torch.ops.aten.elu(x, 0.5, 2.0, 0.7)),
    "elu_inplace": (lambda x, p: elutriton.elu(x.clone(), 0.5, inplace=True),
                    lambda x, p: F.elu(x, 0.5)),
    "selu": (lambda x, p: elutriton.selu(x), lambda x, p: torch.selu(x)),
    "celu": (lambda x, p: elutriton.celu(x, 0.3), lambda x, p: F.celu(x, 0.3)),
    "bias_elu": (lambda x, p: elutriton.bias_elu(x, p["bias"], 1.3, dim=-1),
                 lambda x, p: F.elu(x + p["bias"], 1.3)),
    "linear": (lambda x, p: elutriton.linear_bias_elu(x, p["weight"], p["bias"][:5], alpha=0.4),
               lambda x, p: F.elu(F.linear(x, p["weight"], p["bias"][:5]), 0.4)),
    "conv": (lambda x, p: elutriton.conv2d_bias_elu(x.reshape(-1, 2, 3, 3), p["filters"],
                                                     p["bias"][:4], padding=1, **SELU),
             lambda x, p: torch.selu(F.conv2d(x.reshape(-1, 2, 3, 3), p["filters"],
                                              p["bias"][:4], padding=1))),
}


def transform_inputs():
    """x [batch 3, 18] (a conv reads each sample as a 2x3x3 image) and parameters (the conv's
    filters need a gradient: the Triton backward computes dX only with dW)."""
    x = randn((3, 18), torch.float64, special=True).float()
    x[0, :4] = torch.tensor([0.0, -0.0, -1e-3, 1e-3])  # around the break point, no NaN
    x = torch.nan_to_num(x, nan=0.5, posinf=3.0, neginf=-3.0)
    params = {"weight": randn((5, 18), torch.float32) / 4, "bias": randn((18,), torch.float32),
              "filters": (randn((4, 2, 3, 3), torch.float32) / 4).requires_grad_()}
    return x, params


@pytest.fixture(params=["fused", "library"])
def either_path(request, monkeypatch):
    monkeypatch.setenv("ELUTRITON_PATH", request.param)
    elutriton.clear_plans()
    yield request.param
    elutriton.clear_plans()


@pytest.mark.parametrize("name", list(CALLS))
def test_torch_func_vmap_grad_and_jvp_are_torchs(name, either_path):
    """Under torch.func transforms the kernels cannot serve a call (a vmap batch's storage
    belongs to its wrapper: the kernel path raised; torch's custom ops refuse torch.func's
    autograd: grad raised), so it runs torch's composite: torch's own batching rules and
    derivatives."""
    ours, theirs = CALLS[name]
    x, p = transform_inputs()
    per_sample = lambda f: (lambda row: f(row[None], p).sum())  # noqa: E731
    torch.testing.assert_close(torch.func.vmap(lambda row: ours(row[None], p))(x),
                               torch.func.vmap(lambda row: theirs(row[None], p))(x))
    torch.testing.assert_close(torch.func.vmap(torch.func.grad(per_sample(ours)))(x),
                               torch.func.vmap(torch.func.grad(per_sample(theirs)))(x))
    tangent = randn(x.shape, torch.float32)
    got = torch.func.jvp(lambda v: ours(v, p), (x,), (tangent,))
    want = torch.func.jvp(lambda v: theirs(v, p), (x,), (tangent,))
    for g, w in zip(got, want):
        torch.testing.assert_close(g, w)


@pytest.mark.parametrize("name", list(CALLS))
def test_forward_mode_ad_tangents_are_torchs(name, either_path):
    """Inside a forward-mode AD level a kernel would drop the tangent (it came back None) and
    the library path's conv returned the convolution's tangent without the ELU's derivative:
    silently wrong. The call runs torch's composite there."""
    import torch.autograd.forward_ad as forward_ad
    ours, theirs = CALLS[name]
    x, p = transform_inputs()
    tangent = randn(x.shape, torch.float32)
    with forward_ad.dual_level():
        got = forward_ad.unpack_dual(ours(forward_ad.make_dual(x, tangent), p))
        want = forward_ad.unpack_dual(theirs(forward_ad.make_dual(x, tangent), p))
    assert got.tangent is not None
    torch.testing.assert_close(got.primal, want.primal)
    torch.testing.assert_close(got.tangent, want.tangent)


@pytest.mark.parametrize("backward", ["auto", "triton"])
@pytest.mark.parametrize("name", list(CALLS))
def test_vmapped_backward_is_torchs(name, backward, either_path, monkeypatch):
    """autograd.grad(..., is_grads_batched=True) and jacobian(..., vectorize=True) run the
    backward of an eagerly recorded call under (legacy) vmap: the backward kernels raised
    there ('Cannot access storage of BatchedTensorImpl'). The bias+ELU backward op runs
    torch's ops there (FusedOp's composite); the Triton conv gradients, forced, run as custom
    ops, which vmap runs one sample at a time."""
    monkeypatch.setenv("ELUTRITON_BACKWARD", backward)
    ours, theirs = CALLS[name]
    x, p = transform_inputs()
    x.requires_grad_()
    grads = randn((4,) + ours(x, p).shape, torch.float32)
    got = torch.autograd.grad(ours(x, p), x, grads, is_grads_batched=True)[0]
    want = torch.autograd.grad(theirs(x, p), x, grads, is_grads_batched=True)[0]
    torch.testing.assert_close(got, want)
    jacobian = torch.autograd.functional.jacobian
    torch.testing.assert_close(jacobian(lambda v: ours(v, p), x.detach(), vectorize=True),
                               jacobian(lambda v: theirs(v, p), x.detach(), vectorize=True))


def test_transformed_takes_the_callers_compiling_flag():
    """``transformed(x, compiling)``: an fx Proxy is traced whatever the flag; a transform
    (here a forward-AD level) counts only where dynamo is not tracing (it traces the custom
    ops); None reads the flag (False here)."""
    import torch.autograd.forward_ad as fwAD
    from elutriton._transforms import transformed
    x = randn((3,), torch.float32)
    assert not any(transformed(x, flag) for flag in (None, False, True))
    with fwAD.dual_level():
        assert transformed(x) and transformed(x, None) and transformed(x, False)
        assert not transformed(x, True)
    graph = fx.Graph()
    node = graph.placeholder("t")
    assert all(transformed(fx.Proxy(node), flag) for flag in (None, False, True))
