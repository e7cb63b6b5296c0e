"""elutriton.fuse: patterns, equivalence, state_dict, training, torch.compile, DDP, examples."""
import copy
import os
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import fx, nn

import elutriton
from elutriton.nn import Conv2dELU, LinearELU

ROOT = Path(__file__).resolve().parents[1]


def close(a, b, tol=1e-4):
    torch.testing.assert_close(a, b, atol=tol, rtol=tol)


class Functional(nn.Module):
    """Every functional spelling, with and without bias, inplace too."""

    def __init__(self):
        super().__init__()
        self.c1 = nn.Conv2d(3, 8, 3, padding=1)
        self.c2 = nn.Conv2d(8, 8, 1, bias=False)
        self.c3 = nn.Conv2d(8, 8, 3, padding=1)
        self.c4 = nn.Conv2d(8, 8, 1)
        self.c5 = nn.Conv2d(8, 8, 1)
        self.l1 = nn.Linear(8, 6)

    def forward(self, x):
        x = F.elu(self.c1(x), alpha=0.7)
        x = torch.selu(self.c2(x))
        x = F.celu(self.c3(x), 1.5, inplace=True)
        x = F.elu_(self.c4(x), 0.3)
        x = torch.celu(self.c5(x), alpha=0.8)
        return F.selu(self.l1(x.mean((2, 3))))


def modules_model():
    return nn.Sequential(
        nn.Conv2d(3, 6, 3, padding=1), nn.ELU(inplace=True),
        nn.Conv2d(6, 6, 3, padding=1, bias=False), nn.BatchNorm2d(6), nn.SELU(),
        nn.Conv2d(6, 4, 1), nn.CELU(0.5),
        nn.Flatten(), nn.Linear(4 * 5 * 5, 7), nn.SELU(), nn.Linear(7, 3), nn.ELU())


def _randomize_bn(model):
    """Random running statistics and affine parameters (where it has them) for every
    BatchNorm in ``model`` (which may be a BatchNorm itself)."""
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            if m.running_mean is not None:
                m.running_mean.uniform_(-0.5, 0.5)
                m.running_var.uniform_(0.5, 2.0)
            if m.affine:
                m.weight.data.uniform_(0.5, 1.5)
                m.bias.data.uniform_(-0.5, 0.5)


def test_module_patterns_bn_folding_and_state_dict():
    model = modules_model()
    _randomize_bn(model)
    model.eval()
    fused, report = elutriton.fuse(model)
    assert report.path == "fx" and len(report.fused) == 5 and not report.skipped
    assert isinstance(fused.get_submodule("0"), Conv2dELU)
    assert isinstance(fused.get_submodule("8"), LinearELU)
    x = torch.randn(2, 3, 5, 5)
    close(fused(x), model(x))
    # untouched and fused layers keep their keys; the folded BN's keys are gone
    before = set(model.state_dict())
    after = set(fused.state_dict())
    assert {k for k in before if not k.startswith("3.")} <= after
    assert not any(k.startswith("3.") for k in after)
    assert "2.bias" in after  # the folded BN put a bias on the bias-free conv
    # the original is untouched
    assert type(model[0]) is nn.Conv2d and model(x).shape == (2, 3)


def test_functional_forms():
    model = Functional().eval()
    fused, report = elutriton.fuse(model)
    assert len(report.fused) == 6, str(report)
    assert "F.elu" not in fused.code and "selu" not in fused.code
    x = torch.randn(2, 3, 6, 5)
    close(fused(x), model(x))


def test_training_bn_and_multi_user_are_left_alone():
    class Branchy(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(3, 4, 3, padding=1)
            self.bn_conv = nn.Conv2d(4, 4, 1)
            self.bn = nn.BatchNorm2d(4)
            self.act = nn.ELU()

        def forward(self, x):
            y = self.conv(x)
            z = F.elu(y) + y                       # conv output used twice
            return self.act(self.bn(self.bn_conv(z)))

    model = Branchy().train()
    fused, report = elutriton.fuse(model)
    assert not report.fused
    reasons = " ".join(r for _, r in report.skipped)
    assert "2 users" in reasons and "training mode" in reasons
    x = torch.randn(2, 3, 4, 4)
    close(fused(x), model(x))


def test_nested_modules_and_shared_module():
    class Block(nn.Module):
        def __init__(self):
            super().__init__()
            self.body = nn.Sequential(nn.Conv2d(4, 4, 3, padding=1), nn.ELU())

        def forward(self, x):
            return self.body(x) + x

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.blocks = nn.ModuleList([Block(), Block()])
            self.shared = nn.Linear(4, 4)

        def forward(self, x):
            for b in self.blocks:
                x = b(x)
            v = x.mean((2, 3))
            return F.elu(self.shared(F.elu(self.shared(v))))

    model = Net()
    fused, report = elutriton.fuse(model)
    assert {name for name, _ in report.fused} == {"blocks.0.body.0", "blocks.1.body.0"}
    assert any("more than once" in r for _, r in report.skipped)
    x = torch.randn(2, 4, 5, 5)
    close(fused(x), model(x))


class _ConvUnderTwoNames(nn.Module):
    def __init__(self):
        super().__init__()
        self.a = self.b = nn.Conv2d(3, 3, 3, padding=1)  # fx names it "a"; forward calls "b"
        self.act = nn.SELU()

    def forward(self, x):
        return self.act(self.b(x))


class _ActivationUnderTwoNames(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 3, 3, padding=1)
        self.first = self.second = nn.CELU(0.7)

    def forward(self, x):
        return self.second(self.conv(x))


def _one_activation_twice():
    act = nn.ELU(0.5)
    return nn.Sequential(nn.Conv2d(3, 3, 3, padding=1), act, nn.Conv2d(3, 3, 3, padding=1), act)


@pytest.mark.parametrize("build", [_one_activation_twice, _ConvUnderTwoNames,
                                   _ActivationUnderTwoNames])
def test_a_module_registered_in_several_places_is_replaced_in_all(build):
    # fx names a module by its first name; the rewrite was applied there only, so the other
    # place still held the conv (ELU dropped) or the activation (ELU applied twice): silently
    # wrong outputs, 0.1-0.2 off
    model = build()
    unfused, parameters = copy.deepcopy(model), dict(model.named_parameters())
    fused, report = elutriton.fuse(model, inplace=True)
    assert report.graph_reason is None and type(fused) is type(model) and report.fused
    x = torch.randn(2, 3, 6, 6)
    close(fused(x), unfused(x))
    activations = [m for m in fused.modules() if isinstance(m, (nn.ELU, nn.SELU, nn.CELU))]
    assert activations == []
    # every place holds the fused layer, which holds the conv's own parameters
    assert dict(fused.named_parameters()) == parameters


def test_untraceable_model_uses_sequential_fallback():
    class DataDependent(nn.Module):
        def __init__(self):
            super().__init__()
            self.head = nn.Sequential(nn.Conv2d(3, 5, 3), nn.BatchNorm2d(5), nn.CELU(2.0),
                                      nn.Conv2d(5, 5, 1), nn.ReLU())
            self.tail = nn.Sequential(nn.Linear(5, 3), nn.SELU())

        def forward(self, x):
            if x.sum() > 0:  # data-dependent control flow: fx cannot trace this
                x = x * 2
            return self.tail(self.head(x).mean((2, 3)))

    model = DataDependent()
    _randomize_bn(model)
    model.eval()
    fused, report = elutriton.fuse(model)
    assert report.path == "sequential" and report.trace_error
    assert {n for n, _ in report.fused} == {"head.0", "tail.0"}
    assert isinstance(fused.head[1], nn.Identity) and isinstance(fused.head[4], nn.ReLU)
    x = torch.randn(2, 3, 6, 6)
    close(fused(x), model(x))


def test_nothing_to_fuse_and_bad_input():
    model = nn.Sequential(nn.Conv2d(3, 3, 1), nn.ReLU())
    fused, report = elutriton.fuse(model)
    assert not report.fused and "nothing to fuse" in str(report)
    x = torch.randn(1, 3, 2, 2)
    close(fused(x), model(x))
    with pytest.raises(TypeError, match="nn.Module"):
        elutriton.fuse(lambda x: x)


def test_inplace_flag_shares_parameters():
    model = nn.Sequential(nn.Linear(4, 4), nn.ELU(), nn.Linear(4, 2))
    first = model[0]
    fused_copy, _ = elutriton.fuse(model)
    assert fused_copy.get_submodule("2").weight is not model[2].weight
    assert fused_copy.get_submodule("0").weight is not first.weight
    fused, _ = elutriton.fuse(model, inplace=True)
    assert fused.get_submodule("2").weight is model[2].weight
    # the fused layer holds the linear's own parameters
    assert isinstance(fused[0], LinearELU) and fused[0].weight is first.weight
    assert fused[0].bias is first.bias


def test_optimizer_built_before_an_inplace_fuse_trains_the_fused_model():
    """fuse(inplace=True) keeps the parameter objects, so an optimizer made before it (and a
    parameter's own attributes) still apply; BN-folded layers are the exception."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ELU(), nn.Flatten(), nn.Linear(36, 3),
                          nn.SELU())
    reference = copy.deepcopy(model)
    initial_conv_weight = model[0].weight.detach().clone()
    model[3].weight.no_decay = True
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    fused, report = elutriton.fuse(model, inplace=True)
    assert len(report.fused) == 2
    assert fused[3].weight.no_decay
    x, target = torch.randn(4, 3, 5, 5), torch.randn(4, 3)
    ref_optimizer = torch.optim.SGD(reference.parameters(), lr=0.1)
    for _ in range(3):
        for net, opt in [(fused, optimizer), (reference, ref_optimizer)]:
            opt.zero_grad()
            F.mse_loss(net(x), target).backward()
            opt.step()
    close(fused(x), reference(x))
    # the optimizer moved the fused layers' weights (else the comparison above proves nothing)
    assert not torch.allclose(fused[0].weight, initial_conv_weight, atol=1e-3)


def _train(model, batches, lr=0.05):
    optimizer = torch.optim.SGD(model.parameters(), lr=lr)
    losses = []
    for x, target in batches:
        loss = F.cross_entropy(model(x), target)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    return losses


def test_training_tracks_unfused_model():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 6, 3, padding=1), nn.ELU(), nn.Conv2d(6, 6, 3),
                          nn.SELU(), nn.Flatten(), nn.Linear(6 * 3 * 3, 5), nn.CELU(0.9),
                          nn.Linear(5, 4))
    fused, _ = elutriton.fuse(model)
    batches = [(torch.randn(8, 3, 5, 5), torch.randint(0, 4, (8,))) for _ in range(4)]
    reference = copy.deepcopy(model)
    ref_losses = _train(reference, batches)
    fused_losses = _train(fused, batches)
    close(torch.tensor(fused_losses), torch.tensor(ref_losses), tol=1e-4)
    # and the weights the two trainings end with (the fused model keeps the layers' names)
    trained = reference.state_dict()
    assert set(fused.state_dict()) == set(trained)
    for name, value in fused.state_dict().items():
        close(value, trained[name], tol=1e-4)
    assert not torch.equal(trained["0.weight"], model.state_dict()["0.weight"])  # it trained


def test_fused_model_compiles_fullgraph():
    model = modules_model().eval()
    fused, _ = elutriton.fuse(model)
    compiled = torch.compile(fused, fullgraph=True, backend="aot_eager")
    x = torch.randn(2, 3, 5, 5, requires_grad=True)
    close(compiled(x), model(x))
    compiled(x).sum().backward()
    assert x.grad is not None


def _ddp_worker(rank, world, init_file, out_dir):
    os.environ.setdefault("TRITON_INTERPRET", "1")
    sys.path.insert(0, str(ROOT))
    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel as DDP

    import elutriton as et

    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ELU(), nn.Flatten(),
                          nn.Linear(4 * 4 * 4, 6), nn.SELU(), nn.Linear(6, 3))
    reference = copy.deepcopy(model)
    fused, _ = et.fuse(model)
    torch.manual_seed(100 + rank)  # each rank its own data
    batches = [(torch.randn(4, 3, 4, 4), torch.randint(0, 3, (4,))) for _ in range(3)]
    fused_losses = _train(DDP(fused), batches)
    ref_losses = _train(DDP(reference), batches)
    torch.save({"fused": [p.detach() for p in fused.parameters()],
                "reference": [p.detach() for p in reference.parameters()],
                "fused_losses": fused_losses, "ref_losses": ref_losses},
               os.path.join(out_dir, f"rank{rank}.pt"))
    dist.destroy_process_group()


def test_ddp_gloo_two_processes(tmp_path):
    import torch.multiprocessing as mp

    mp.spawn(_ddp_worker, args=(2, str(tmp_path / "store"), str(tmp_path)), nprocs=2, join=True)
    r0, r1 = (torch.load(tmp_path / f"rank{r}.pt") for r in (0, 1))
    for a, b in zip(r0["fused"], r1["fused"]):
        torch.testing.assert_close(a, b)           # gradients were all-reduced
    for a, b in zip(r0["fused"], r0["reference"]):
        close(a, b)                                # and they match unfused DDP training
    close(torch.tensor(r0["fused_losses"]), torch.tensor(r0["ref_losses"]))


def test_examples_run_at_reduced_size():
    sys.path.insert(0, str(ROOT / "examples"))
    import elu_cifar
    import selu_mlp

    ref_losses, fused_losses = elu_cifar.main(["--width", "0.03", "--batch", "2", "--steps", "2"])
    close(torch.tensor(fused_losses), torch.tensor(ref_losses))
    losses = selu_mlp.main(["--width", "32", "--depth", "2", "--batch", "8", "--steps", "2"])
    assert len(losses) == 2 and all(v == v for v in losses)


def test_runtime_alpha_and_zero_alpha_celu_are_left_alone():
    class RuntimeAlpha(nn.Module):
        def __init__(self):
            super().__init__()
            self.a = nn.Linear(3, 3)
            self.b = nn.Linear(3, 3)

        def forward(self, x):
            x = F.elu(self.a(x), alpha=x.shape[0] * 0.5)  # alpha depends on the input: a Node
            return F.celu(self.b(x), alpha=0.0)

    model = RuntimeAlpha()
    fused, report = elutriton.fuse(model)
    assert not report.fused and len(report.skipped) == 2
    assert all("parameters not usable" in reason for _, reason in report.skipped)


@pytest.mark.parametrize("alpha", [float("nan"), float("inf")])
@pytest.mark.parametrize("untraceable", [False, True], ids=["fx", "sequential"])
def test_activations_with_non_finite_alpha_are_left_alone(alpha, untraceable):
    """torch takes ``nn.ELU(alpha=nan)`` and ``F.elu(x, alpha=inf)``; a fused layer refuses
    a non-finite alpha, so such a pair is left alone and reported, where fuse raised the
    layer's ValueError and converted nothing; the other pairs are fused."""
    class Functional(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv, self.conv2 = nn.Conv2d(3, 4, 3), nn.Conv2d(4, 4, 1)

        def forward(self, x):
            return F.elu(self.conv2(F.elu(self.conv(x), alpha=alpha)))

    body = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ELU(alpha), nn.Conv2d(4, 4, 1), nn.ELU())
    model = _Untraceable(body) if untraceable else body
    fused, report = elutriton.fuse(model)
    assert len(report.fused) == 1 and len(report.skipped) == 1, report
    assert "expected `alpha` to be finite" in report.skipped[0][1]
    x = torch.randn(2, 3, 6, 6)
    torch.testing.assert_close(fused(x), model(x), equal_nan=True, atol=1e-4, rtol=1e-4)
    if not untraceable:
        _, report = elutriton.fuse(Functional())
        assert len(report.fused) == 1 and "F.elu: expected `alpha` to be finite" in \
            report.skipped[0][1]


def test_elutritons_own_functions_are_fused():
    """Model code that calls elutriton's functions (elu with its three parameters, by
    position or keyword, in place too; selu; celu) after a conv or linear layer is fused like
    torch's F.elu, with those parameters; one computed at run time leaves the pair alone."""
    class OwnFunctions(nn.Module):
        def __init__(self):
            super().__init__()
            self.c1, self.c2, self.c3, self.c4 = (nn.Conv2d(3, 4, 3), nn.Conv2d(4, 4, 1),
                                                  nn.Conv2d(4, 4, 1), nn.Conv2d(4, 4, 1))
            self.fc, self.fc2 = nn.Linear(4, 3), nn.Linear(3, 3)

        def forward(self, x):
            x = elutriton.elu(self.c1(x), 0.5, scale=1.5)
            x = elutriton.celu(self.c2(x), alpha=0.7)
            x = elutriton.elu(self.c3(x), inplace=True)
            x = elutriton.selu(self.c4(x)).mean((2, 3))
            x = elutriton.elu(self.fc(x), 1.0, 1.0, 2.0)
            return elutriton.elu(self.fc2(x), x.shape[0] * 0.5)  # (alpha from the input)

    model = OwnFunctions()
    fused, report = elutriton.fuse(model)
    described = dict(report.fused)
    assert set(described) == {"c1", "c2", "c3", "c4", "fc"}
    assert "ELU(alpha=0.5, scale=1.5, input_scale=1)" in described["c1"]
    assert "ELU(alpha=0.7, scale=1, input_scale=1.42857)" in described["c2"]
    assert "ELU(alpha=1.67326, scale=1.0507" in described["c4"]
    assert "ELU(alpha=1, scale=1, input_scale=2)" in described["fc"]
    assert len(report.skipped) == 1 and "not usable" in report.skipped[0][1]
    x = torch.randn(2, 3, 6, 6)
    close(fused(x), model(x))


class _FunctionalLayers(nn.Module):
    """Layers as function calls on the module's own parameters: a conv with keyword
    arguments and a standardized weight computed in forward, then an activation module; a
    conv through an nn.Identity by keyword form; a linear layer with F.selu; a conv whose
    output has a second user; one with a BatchNorm, one with an eval-mode dropout before the
    activation."""

    def __init__(self):
        super().__init__()
        self.w1, self.b1 = nn.Parameter(torch.randn(6, 3, 3, 3)), nn.Parameter(torch.randn(6))
        self.w2 = nn.Parameter(torch.randn(6, 3, 2, 2) / 4)
        self.w3 = nn.Parameter(torch.randn(4, 6, 1, 1) / 3)
        self.w4 = nn.Parameter(torch.randn(4, 4, 1, 1) / 2)
        self.w5 = nn.Parameter(torch.randn(4, 4, 1, 1) / 2)
        self.fc = nn.Parameter(torch.randn(5, 4) / 2)
        self.act, self.id = nn.ELU(0.6), nn.Identity()
        self.bn, self.drop = nn.BatchNorm2d(4).eval(), nn.Dropout(0.3).eval()

    def forward(self, x):
        w = self.w1 - self.w1.mean((1, 2, 3), keepdim=True)  # (weight standardization)
        h = self.act(F.conv2d(x, w, self.b1, stride=1, padding=1))
        h = h + F.elu(self.id(torch.conv2d(input=x, weight=self.w2, dilation=(1, 2),
                                           padding="same")), 0.5)
        z = F.conv2d(h, self.w3)
        h = F.celu(z, 1.5) * z  # (two users)
        h = F.elu(self.bn(F.conv2d(h, self.w4)))
        h = F.elu(self.drop(F.conv2d(h, self.w5)))
        return F.selu(F.linear(h.mean((2, 3)), self.fc, bias=None))


def test_function_calls_of_conv2d_and_linear_are_fused():
    """F.conv2d / F.linear calls (positional or keyword arguments, defaults, tensors computed
    in forward) followed by an activation, module or function, through an nn.Identity, become
    one call of elutriton's fused function in the traced graph, which computes what the model
    did, gradients included; an output with a second user, a BatchNorm (no layer module to
    fold it into) and a dropout (no fused layer to say it was removed) leave theirs alone, each
    reported."""
    model = _FunctionalLayers()
    fused, report = elutriton.fuse(model)
    assert isinstance(fused, fx.GraphModule) and "call of F.conv2d" in report.graph_reason
    described = dict(report.fused)
    assert set(described) == {"conv2d", "conv2d_1", "linear"}
    assert described["conv2d"].startswith("F.conv2d + ELU(alpha=0.6, scale=1")
    assert "through Identity id" in described["conv2d_1"]
    assert described["linear"].startswith("F.linear + ELU(alpha=1.67326, scale=1.0507")
    reasons = dict(report.skipped)
    assert "2 users" in reasons["celu"]
    assert "BatchNorm2d input is not an nn.Conv2d" in reasons["elu_1"]
    assert "drop stands between conv2d_4, a function call" in reasons["elu_2"]
    called = [n.target for n in fused.graph.nodes if n.op == "call_function"]
    assert called.count(elutriton.conv2d_bias_elu) == 2
    assert called.count(elutriton.linear_bias_elu) == 1
    assert "act" not in dict(fused.named_modules()) and "id" not in dict(fused.named_modules())
    x = torch.randn(2, 3, 7, 6, requires_grad=True)
    y, y_ref = fused(x), model(x)
    close(y, y_ref)
    grad = torch.randn_like(y)
    names = [name for name, _ in model.named_parameters()]
    fused_parameters = dict(fused.named_parameters())
    assert set(fused_parameters) == set(names)
    for got, want in zip(torch.autograd.grad(y, [x] + [fused_parameters[n] for n in names], grad),
                         torch.autograd.grad(y_ref, [x, *model.parameters()], grad)):
        close(got, want)


class _IdentityBlocks(nn.Module):
    """Optional layers left out as nn.Identity, and dropouts, between layer and activation."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 6, 3, padding=1, bias=False)
        self.norm = nn.Identity()            # "BatchNorm off"
        self.conv2 = nn.Conv2d(6, 6, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(6)
        self.drop2 = nn.Dropout2d(0.2)
        self.fc = nn.Linear(6 * 4 * 4, 5)
        self.drop = nn.Dropout(0.5)
        self.act = nn.SELU()

    def forward(self, x):
        x = F.elu(self.norm(self.conv(x)), 0.8)
        x = F.celu(self.drop2(self.bn2(self.conv2(x))), 1.3)
        return self.act(self.drop(self.fc(x.flatten(1))))


def test_fusion_looks_through_identity_and_eval_dropout():
    model = _IdentityBlocks()
    _randomize_bn(model)
    model.eval()
    fused, report = elutriton.fuse(model)
    assert report.path == "fx" and not report.skipped
    assert [name for name, _ in report.fused] == ["conv", "conv2", "fc"]
    assert "through Identity norm" in report.fused[0][1]
    assert "through Dropout2d drop2" in report.fused[1][1]
    assert "through Dropout drop" in report.fused[2][1]
    assert isinstance(fused.get_submodule("fc"), LinearELU)
    x = torch.randn(3, 3, 4, 4)
    close(fused(x), model(x))
    assert not any(isinstance(m, (nn.Dropout, nn.Dropout2d, nn.Identity))
                   for m in fused.modules())  # removed from the graph and the module tree
    # a dropout in training mode is not the identity: left alone, and said so
    model.train()
    model.bn2.eval()
    _, report = elutriton.fuse(model)
    assert [name for name, _ in report.fused] == ["conv"]
    reasons = dict(report.skipped)
    assert any("drop2: Dropout2d in training mode" in r for r in reasons.values())
    assert any("drop: Dropout in training mode" in r for r in reasons.values())


def test_sequential_fallback_looks_through_identity_and_eval_dropout():
    class Untraceable(nn.Module):
        def __init__(self):
            super().__init__()
            self.body = nn.Sequential(nn.Conv2d(3, 4, 3, bias=False), nn.Identity(),
                                      nn.BatchNorm2d(4), nn.Dropout(0.1), nn.ELU(),
                                      nn.Conv2d(4, 4, 1), nn.Dropout(0.3), nn.CELU(0.7))

        def forward(self, x):
            return self.body(x) if x.sum() > -1e9 else x  # data-dependent: fx cannot trace

    model = Untraceable()
    _randomize_bn(model)
    model.eval()
    fused, report = elutriton.fuse(model)
    assert report.path == "sequential" and not report.skipped
    assert "through Identity body.1, Dropout body.3" in report.fused[0][1]
    assert isinstance(fused.body[5], Conv2dELU) and type(fused.body[6]) is elutriton.nn.FusedAway
    x = torch.randn(2, 3, 6, 6)
    close(fused(x), model(x))
    model.train()
    _, report = elutriton.fuse(model)
    assert not report.fused and len(report.skipped) == 2


def _training_mode_warnings(model, mode=True):
    """The messages of the warnings ``model.train(mode)`` gives (every one recorded)."""
    import warnings
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        model.train(mode)
    return [str(w.message) for w in caught if issubclass(w.category, UserWarning)]


def test_layers_fused_for_inference_say_so_and_warn_in_training_mode():
    """A layer that took in a BatchNorm or eval-mode dropouts names them
    (``fused_for_inference``, also in its repr; an nn.Identity is not named: it is the
    identity in training mode too), and ``train()`` warns for it and no other layer; the
    result, unchanged by the mode switch, is still what the model computed at inference."""
    model = _IdentityBlocks()
    _randomize_bn(model)
    model.eval()
    fused, report = elutriton.fuse(model)
    assert report.path == "fx"
    layers = {name: fused.get_submodule(name) for name in ("conv", "conv2", "fc")}
    assert layers["conv"].fused_for_inference == ()
    assert layers["conv2"].fused_for_inference == ("BatchNorm2d bn2", "Dropout2d drop2")
    assert layers["fc"].fused_for_inference == ("Dropout drop",)
    assert "fused_for_inference=('Dropout drop',)" in repr(layers["fc"])
    assert "fused_for_inference" not in repr(layers["conv"])
    assert _training_mode_warnings(fused, False) == []
    x = torch.randn(3, 3, 4, 4)
    expected = model(x)
    messages = _training_mode_warnings(fused)
    assert len(messages) == 2 and all("elutriton.fuse folded in or removed" in m
                                      for m in messages)
    assert any("BatchNorm2d bn2, Dropout2d drop2" in m for m in messages)
    assert any("Dropout drop here" in m for m in messages)
    assert all(layer.training for layer in layers.values())
    close(fused(x), expected)
    # fused in training mode (its dropouts drop): those pairs are left alone, nothing warns
    model.train()
    refused, _ = elutriton.fuse(model)
    assert _training_mode_warnings(refused) == []


def test_sequential_fallback_layers_fused_for_inference_warn_in_training_mode():
    model = _Untraceable(nn.Sequential(nn.Linear(4, 6), nn.BatchNorm1d(6), nn.Identity(),
                                       nn.AlphaDropout(0.2), nn.SELU(), nn.Linear(6, 3),
                                       nn.Identity(), nn.ELU()))
    _randomize_bn(model)
    model.eval()
    fused, report = elutriton.fuse(model)
    assert report.path == "sequential" and len(report.fused) == 2
    assert fused.body[0].fused_for_inference == ("BatchNorm1d body.1", "AlphaDropout body.3")
    assert fused.body[5].fused_for_inference == ()
    messages = _training_mode_warnings(fused)
    assert len(messages) == 1 and "LinearELU.train()" in messages[0]
    assert "BatchNorm1d body.1, AlphaDropout body.3" in messages[0]


@pytest.mark.parametrize("untraceable", [False, True], ids=["fx", "sequential"])
def test_batchnorms_that_cannot_be_folded_are_left_alone(untraceable):
    """A BatchNorm without running statistics (it normalizes with the batch's in eval mode
    too), one that normalizes another dimension than the layer's outputs (a BatchNorm2d
    after an nn.Linear on 4-D input normalizes dim 1, not the features), and one whose input
    is no layer: each pair is left alone, with the reason, and the model computes what it
    did."""
    cases = [
        (nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4, track_running_stats=False),
                       nn.ELU()), "has no running statistics"),
        (nn.Sequential(nn.Linear(6, 6), nn.BatchNorm2d(3), nn.ELU()),
         "BatchNorm2d after an nn.Linear is not an nn.BatchNorm1d"),
        (nn.Sequential(nn.BatchNorm2d(3), nn.ELU()), None),
    ]
    for body, reason in cases:
        _randomize_bn(body)
        body.eval()
        model = _Untraceable(body) if untraceable else body
        fused, report = elutriton.fuse(model)
        assert not report.fused, report
        if reason is not None:  # (a BatchNorm before the activation alone is no pattern
            # for the nn.Sequential path: only fx names it)
            assert len(report.skipped) == 1 and reason in report.skipped[0][1], report
        elif not untraceable:
            assert len(report.skipped) == 1 and "not an nn.Conv2d or nn.Linear" in \
                report.skipped[0][1], report
        x = torch.randn(2, 3, 6, 6)
        close(fused(x), model(x))


class _ReadsItsLayers(nn.Module):
    """A forward that reads tensors of its own layers: a BatchNorm's weight or buffer, the
    conv before it, or a conv with no BatchNorm after it."""

    def __init__(self, read):
        super().__init__()
        self.read = read
        self.conv = nn.Conv2d(3, 4, 3)
        self.bn = nn.BatchNorm2d(4)
        self.conv2 = nn.Conv2d(4, 4, 1)
        self.act, self.act2 = nn.ELU(), nn.CELU(0.7)

    def forward(self, x):
        y = self.act2(self.conv2(self.act(self.bn(self.conv(x)))))
        module, name = self.read.split(".")
        return y * getattr(getattr(self, module), name).mean()  # (fx: one get_attr node)


@pytest.mark.parametrize("read", ["bn.weight", "bn.running_mean", "conv.bias", "conv2.bias"])
def test_forward_that_reads_a_folded_or_removed_module_keeps_it(read):
    """Folding a BatchNorm removes it and changes the conv's weight and bias: a forward that
    reads either (fx: a get_attr) keeps that pattern unfused, with the reason, where fusing
    raised fx's "references nonexistent attribute" (or would read the folded values). A conv
    without a BatchNorm keeps its own parameters: it is fused, and the traced graph, which
    reads them, comes back (GraphModule)."""
    model = _ReadsItsLayers(read)
    _randomize_bn(model)
    model.eval()
    fused, report = elutriton.fuse(model)
    x = torch.randn(2, 3, 6, 6)
    close(fused(x), model(x))
    if read == "conv2.bias":
        assert {name for name, _ in report.fused} == {"conv", "conv2"}
        assert isinstance(fused, fx.GraphModule) and "conv2.bias" in report.graph_reason
    else:
        assert [name for name, _ in report.fused] == ["conv2"]
        assert len(report.skipped) == 1 and f"forward reads {read}" in report.skipped[0][1]
        assert isinstance(fused, _ReadsItsLayers) and isinstance(fused.bn, nn.BatchNorm2d)


def test_graph_that_comes_back_reads_buffers_as_they_are():
    """A returned GraphModule (here: a functional activation was fused) reads the buffers
    forward reads from the module, as the model does, not copies of their values when it
    was traced: a BatchNorm's running statistics updated later are seen. So a forward whose
    control flow reads a buffer's value cannot be traced: fuse takes the nn.Sequential
    path there, and the flag keeps working."""
    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv, self.bn, self.conv2 = nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), \
                nn.Conv2d(4, 4, 1)

        def forward(self, x):
            y = F.celu(self.conv2(self.bn(self.conv(x))), 0.7)
            return y * self.bn.running_mean.mean()

    model = Net()
    _randomize_bn(model)
    model.eval()
    fused, report = elutriton.fuse(model)
    assert isinstance(fused, fx.GraphModule) and [n for n, _ in report.fused] == ["conv2"]
    x = torch.randn(2, 3, 6, 6)
    close(fused(x), model(x))
    for m in (model, fused):
        m.bn.running_mean.add_(0.25)
    close(fused(x), model(x))

    class BufferControlFlow(nn.Module):  # its control flow reads a buffer: not traceable
        def __init__(self):
            super().__init__()
            self.body = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ELU())
            self.register_buffer("flag", torch.tensor(1.0))

        def forward(self, x):
            y = self.body(x)
            return y * 2 if self.flag > 0 else y

    model = BufferControlFlow()
    fused, report = elutriton.fuse(model)
    assert report.path == "sequential" and "control flow" in report.trace_error
    assert [n for n, _ in report.fused] == ["body.0"]
    model.flag.fill_(-1.0)
    fused.flag.fill_(-1.0)
    close(fused(x), model(x))


class _OwnNet(nn.Module):
    """A user's model class with a method of its own and module activations."""

    def __init__(self, functional=False, shared_act=False):
        super().__init__()
        self.functional, self.shared_act = functional, shared_act
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.act = nn.ELU(0.6)
        self.conv2 = nn.Conv2d(4, 4, 1)
        self.act2 = nn.SELU()
        self.head = nn.Linear(4, 2)

    def features(self, x):
        x = F.elu(self.conv(x), 0.6) if self.functional else self.act(self.conv(x))
        x = self.act2(self.conv2(x))
        return x.mean((2, 3))

    def forward(self, x):
        y = self.head(self.features(x))
        return self.act(y) if self.shared_act else y  # self.act reused after the Linear


def test_the_model_class_is_kept_when_the_module_tree_can_carry_the_fusion():
    model = _OwnNet().eval()
    fused, report = elutriton.fuse(model)
    assert type(fused) is _OwnNet and report.graph_reason is None
    assert isinstance(fused.conv, Conv2dELU) and type(fused.act) is elutriton.nn.FusedAway
    assert type(fused.act2) is elutriton.nn.FusedAway and isinstance(fused.conv2, Conv2dELU)
    x = torch.randn(2, 3, 5, 5)
    close(fused(x), model(x))
    close(fused.features(x), model.features(x))  # the model's own methods still work
    assert type(model.conv) is nn.Conv2d  # the original untouched
    # a shared activation module whose every call is fused becomes the identity too
    shared = _OwnNet(shared_act=True).eval()
    fused, report = elutriton.fuse(shared)
    assert type(fused) is _OwnNet and isinstance(fused.head, LinearELU)
    close(fused(x), shared(x))


def test_a_graph_module_comes_back_when_forward_itself_must_change():
    model = _OwnNet(functional=True).eval()
    fused, report = elutriton.fuse(model)
    assert isinstance(fused, torch.fx.GraphModule) and "function call" in report.graph_reason
    assert "returned an fx.GraphModule" in str(report)
    x = torch.randn(2, 3, 5, 5)
    close(fused(x), model(x))

    class SharedUnfusable(_OwnNet):
        def forward(self, x):
            return self.act(self.head(self.features(x)) + 1.0)  # act on a sum: not fusable

    model = SharedUnfusable().eval()
    fused, report = elutriton.fuse(model)
    assert isinstance(fused, torch.fx.GraphModule)
    assert "act is also called where it was not fused" in report.graph_reason
    close(fused(x), model(x))


def test_fused_model_keeps_channels_last_weights_and_frozen_parameters():
    """A model already in channels_last keeps channels_last weights through fuse (BN folding
    included) without the option, so no call converts them; frozen parameters stay frozen."""
    model = modules_model()
    _randomize_bn(model)
    model.eval().to(memory_format=torch.channels_last)
    # a conv bias, a linear weight, and a conv without bias whose BN is frozen: its folded
    # weight and bias are frozen too
    frozen = {"0.bias", "8.weight", "2.weight", "2.bias"}
    for name in ["0.bias", "8.weight", "2.weight", "3.weight", "3.bias"]:
        model.get_parameter(name).requires_grad_(False)
    fused, report = elutriton.fuse(model)
    assert not report.channels_last and len(report.fused) == 5
    params = dict(fused.named_parameters())
    assert sum(p.dim() == 4 for p in params.values()) == 3
    for name, p in params.items():
        if p.dim() == 4:
            assert p.is_contiguous(memory_format=torch.channels_last), name
        assert p.requires_grad == (name not in frozen), name
    assert frozen <= set(params)
    xc = torch.randn(2, 3, 5, 5).to(memory_format=torch.channels_last)
    close(fused(xc), model(xc))
    # a trainable BN makes both folded parameters trainable (torch's folding alone would
    # freeze the bias of a conv that had none)
    model[3].weight.requires_grad_(True)
    fused, _ = elutriton.fuse(model)
    assert fused.get_parameter("2.weight").requires_grad
    assert fused.get_parameter("2.bias").requires_grad


def test_channels_last_option_converts_weights_and_keeps_outputs():
    model = modules_model()
    _randomize_bn(model)
    model.eval()
    fused, report = elutriton.fuse(model, channels_last=True)
    assert report.channels_last and "channels_last" in str(report)
    for name, p in fused.named_parameters():
        if p.dim() == 4:
            assert p.is_contiguous(memory_format=torch.channels_last), name
    assert type(model[0].weight) is torch.nn.Parameter and model[0].weight.is_contiguous()
    x = torch.randn(2, 3, 5, 5)
    close(fused(x), model(x))
    xc = x.to(memory_format=torch.channels_last)
    close(fused(xc), model(xc))
    assert fused[0](xc).is_contiguous(memory_format=torch.channels_last)
    # the checkpoint still loads into the unfused layout and back
    reloaded, _ = elutriton.fuse(model)
    reloaded.load_state_dict(fused.state_dict())
    close(reloaded(x), model(x))


class _Untraceable(nn.Module):
    """Wraps a model in data-dependent control flow, so fuse takes its Sequential path."""

    def __init__(self, body):
        super().__init__()
        self.body = body

    def forward(self, x):
        if x.sum() > 1e9:
            x = x * 2
        return self.body(x)


def _hooked_models():
    """(which module gets the hook, its index in the body, a factory of the body)."""
    def body():
        return nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.Identity(), nn.ELU(),
                             nn.Flatten(), nn.Linear(36, 5), nn.SELU())
    return [(kind, index, body) for kind, index in
            [("activation", 3), ("identity", 2), ("bn", 1), ("conv", 0)]]


@pytest.mark.parametrize("untraceable", [False, True], ids=["fx", "sequential"])
@pytest.mark.parametrize("hook", ["forward", "forward_pre", "full_backward"])
@pytest.mark.parametrize("case", _hooked_models(), ids=lambda c: c[0])
def test_modules_with_hooks_are_left_alone_and_their_hooks_still_run(case, hook, untraceable):
    """Fusing would drop a hook (a feature hook on an activation, a conv's weight pre-hook):
    the pattern is left alone, reported, and the hook still runs; the other pattern fuses."""
    kind, index, make_body = case
    torch.manual_seed(0)
    body = make_body()
    _randomize_bn(body)
    body.eval()
    calls = []

    def record(*args):
        calls.append(1)

    getattr(body[index], f"register_{hook}_hook")(record)
    model = _Untraceable(body) if untraceable else body
    fused, report = elutriton.fuse(model)
    assert report.path == ("sequential" if untraceable else "fx")
    prefix = "body." if untraceable else ""
    assert [name for name, _ in report.fused] == [prefix + "5"]
    assert len(report.skipped) == 1 and "hooks, which fusing would drop" in report.skipped[0][1]
    x = torch.randn(2, 3, 5, 5, requires_grad=True)
    out = fused(x)
    out.sum().backward()
    assert calls, "the hook did not run in the fused model"
    close(out, model(x))


def test_weight_norm_conv_is_left_alone():
    """torch.nn.utils.weight_norm computes the weight in a forward pre-hook from weight_g and
    weight_v: a fused layer would hold neither, so the pair stays unfused."""
    with pytest.warns(FutureWarning):
        conv = torch.nn.utils.weight_norm(nn.Conv2d(3, 4, 3))
    model = nn.Sequential(conv, nn.ELU())  # inplace: torch cannot deep-copy weight_norm
    x = torch.randn(2, 3, 5, 5)
    expected = model(x)
    fused, report = elutriton.fuse(model, inplace=True)
    assert not report.fused and "weight_g" in report.skipped[0][1]
    with torch.no_grad():
        conv.weight_g.mul_(2.0)  # the weight is still computed from weight_g on each call
    v = conv.weight_v.detach()
    weight = conv.weight_g.detach() * v / v.flatten(1).norm(dim=1).view(-1, 1, 1, 1)
    close(fused(x), F.elu(F.conv2d(x, weight, conv.bias)))
    assert not torch.allclose(fused(x), expected)
    # a layer's own buffers would vanish from the fused layer (and its state_dict) too
    linear = nn.Linear(3, 2)
    linear.register_buffer("mask", torch.ones(2, 3))
    _, report = elutriton.fuse(nn.Sequential(linear, nn.ELU()))
    assert not report.fused and "buffers ['mask']" in report.skipped[0][1]


def test_tied_weights_stay_tied():
    """Two layers sharing one weight (weight tying) still share it after fusing, so training
    updates both as in the unfused model."""
    torch.manual_seed(0)
    first, second = nn.Linear(4, 4), nn.Linear(4, 4)
    second.weight = first.weight
    model = nn.Sequential(first, nn.ELU(), second, nn.SELU())
    reference = copy.deepcopy(model)
    assert reference[0].weight is reference[2].weight
    fused, report = elutriton.fuse(model)
    assert len(report.fused) == 2 and fused[0].weight is fused[2].weight
    x, target = torch.randn(3, 4), torch.randn(3, 4)
    for net in (fused, reference):
        optimizer = torch.optim.SGD(net.parameters(), lr=0.5)
        for _ in range(3):
            optimizer.zero_grad()
            F.mse_loss(net(x), target).backward()
            optimizer.step()
    close(fused(x), reference(x))
    assert not torch.allclose(fused[0].weight, model[0].weight, atol=1e-3)  # it trained


# ---------------------------------------------------------- outputs modified in place
class _ThenInPlace(nn.Module):
    """conv -> ELU, then ``after(out, x)``: code that may write the activation's output."""

    def __init__(self, after, untraceable=False):
        super().__init__()
        self.conv = nn.Conv2d(3, 3, 3, padding=1)
        self.act = nn.ELU(0.8)
        self.relu = nn.ReLU(inplace=True)
        self.after, self.untraceable = after, untraceable

    def forward(self, x):
        out = self.act(self.conv(x))
        return self.after(self, out, x)


def _iadd(m, out, x):
    out += x
    return out


def _view_then_zero(m, out, x):
    out[:, :1].zero_()
    return out


def _setitem(m, out, x):
    out[:, 0] = 0.0
    return out


def _flatten_then_mul(m, out, x):
    out.flatten(1).mul_(2.0)
    return out


def _data_then_zero(m, out, x):
    out.data.mul_(0.5)  # (no version bump: the fused backward was silently wrong)
    return out


WRITERS = {
    "augmented assignment": _iadd,
    "through .data": _data_then_zero,
    "a view, then an in-place method": _view_then_zero,
    "item assignment": _setitem,
    "a view method, then an in-place method": _flatten_then_mul,
    "an inplace module after it": lambda m, out, x: m.relu(out),
    "an inplace functional after it": lambda m, out, x: F.relu(out, True),
    "an in-place torch function": lambda m, out, x: torch.relu_(out),
}
READERS = {  # the output only read, or something else written: fused
    "read": lambda m, out, x: out + x,
    "stored into another tensor": lambda m, out, x: _store(out, x),
    "a new tensor computed from it written": lambda m, out, x: _add_to_a_copy(out),
}


def _add_to_a_copy(out):
    scaled = out * 2
    scaled += 1  # (a new tensor, not a view of out)
    return scaled


def _store(out, x):
    buffer = torch.zeros_like(x)
    buffer[:, :2] = out[:, :2]  # (out only read)
    return buffer + out


@pytest.mark.parametrize("what", sorted(WRITERS) + sorted(READERS))
def test_an_output_modified_in_place_is_not_fused(what):
    # the fused layer's backward reads its saved output; code that writes it trains unfused
    # but made the fused model's backward raise "modified by an inplace operation"
    writes = what in WRITERS
    model = _ThenInPlace((WRITERS if writes else READERS)[what])
    unfused = copy.deepcopy(model)
    fused, report = elutriton.fuse(model)
    assert report.path == "fx"  # (item assignment traces too)
    if writes:
        assert report.fused == [] and "modified in place" in report.skipped[0][1]
    else:
        assert [name for name, _ in report.fused] == ["conv"]
    x = torch.randn(2, 3, 5, 5)
    y, y_ref = fused(x), unfused(x)
    close(y, y_ref)
    grad = torch.randn_like(y)
    y.backward(grad)
    y_ref.backward(grad)
    for (name, p), p_ref in zip(fused.named_parameters(), unfused.parameters()):
        close(p.grad, p_ref.grad)


def test_sequential_fallback_leaves_an_activation_before_an_inplace_module():
    class Untraceable(nn.Module):
        def __init__(self):
            super().__init__()
            self.body = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ELU(), nn.Identity(),
                                      nn.ReLU(inplace=True), nn.Conv2d(4, 4, 1), nn.SELU(),
                                      nn.ReLU())

        def forward(self, x):
            if x.sum() > 0:  # data-dependent control flow: fx cannot trace this
                x = x * 2
            return self.body(x)

    model = Untraceable()
    unfused = copy.deepcopy(model)
    fused, report = elutriton.fuse(model)
    assert report.path == "sequential"
    assert [name for name, _ in report.fused] == ["body.4"]
    assert report.skipped[0][0] == "body.1" and "in place" in report.skipped[0][1]
    x = torch.randn(2, 3, 6, 6)
    y, y_ref = fused(x), unfused(x)
    close(y, y_ref)
    y.sum().backward()
    y_ref.sum().backward()
    close(fused.body[0].weight.grad, unfused.body[0].weight.grad)


class _LinearBN(nn.Module):
    """Linear -> BatchNorm1d -> ELU-family, the tabular-MLP block, written in forward."""

    def __init__(self, affine=True, bias=True):
        super().__init__()
        self.fc = nn.Linear(5, 6, bias=bias)
        self.bn = nn.BatchNorm1d(6, affine=affine)
        self.act = nn.CELU(0.7)
        self.head = nn.Linear(6, 2)

    def forward(self, x):
        return self.head(self.act(self.bn(self.fc(x))))


@pytest.mark.parametrize("affine, bias", [(True, True), (False, True), (True, False)])
@pytest.mark.parametrize("untraceable", [False, True], ids=["fx", "sequential"])
def test_linear_batchnorm1d_folding(affine, bias, untraceable):
    """An eval-mode BatchNorm1d after an nn.Linear folds into the fused layer (also without
    affine parameters, or a bias); the fused layer equals the unfused model on [N, features]
    input and refuses other input, where BatchNorm1d normalizes dim 1 instead."""
    if untraceable:
        block = _LinearBN(affine, bias)
        model = _Untraceable(nn.Sequential(block.fc, block.bn, block.act, block.head))
    else:
        model = _LinearBN(affine, bias)
    _randomize_bn(model)
    model.eval()
    fused, report = elutriton.fuse(model)
    assert report.path == ("sequential" if untraceable else "fx")
    assert len(report.fused) == 1 and "BatchNorm1d (folded)" in report.fused[0][1], str(report)
    layer = fused.get_submodule("body.0" if untraceable else "fc")
    assert isinstance(layer, LinearELU) and layer.folded_batchnorm1d
    assert "folded_batchnorm1d=True" in repr(layer)
    x = torch.randn(7, 5)
    expected = model.double()(x.double())
    close(fused(x), expected.float())
    # [N, L, C] with L == features: BatchNorm1d normalizes the L positions there, unfused
    wide = torch.randn(3, 6, 5)
    if not untraceable:
        assert model.float()(wide).shape == (3, 6, 2)  # runs unfused
    with pytest.raises(ValueError, match="BatchNorm1d folded in"):
        fused(wide)
    # the folded parameters train where the layer's or the BN's did
    assert layer.weight.requires_grad and layer.bias.requires_grad


def test_batchnorm1d_that_does_not_normalize_the_linear_features_is_left_alone():
    """Linear(5, 6) -> BatchNorm1d(4): unfused it runs only on [N, 4, 6] input, normalizing
    dim 1; folding it over the 6 features would be wrong, so it is left alone."""
    model = nn.Sequential(nn.Linear(5, 6), nn.BatchNorm1d(4), nn.ELU()).eval()
    _randomize_bn(model)
    fused, report = elutriton.fuse(model)
    assert not report.fused
    assert "does not normalize the 6 output features" in report.skipped[0][1]
    x = torch.randn(2, 4, 5)
    close(fused(x), model(x))


@pytest.mark.parametrize("untraceable", [False, True], ids=["fx", "sequential"])
@pytest.mark.parametrize("build", [
    lambda: nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ELU()),
    lambda: nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4), nn.SELU())], ids=["conv", "linear"])
def test_a_training_model_with_frozen_batchnorms_is_not_folded(build, untraceable):
    """Fine-tuning often freezes the BatchNorms (``bn.eval()``) in a model in training mode:
    folding them would train other parameters, so the pair is left alone and reported (fuse
    raised torch's 'Fusion only for eval!' AssertionError before)."""
    body = build()
    _randomize_bn(body)
    body.train()
    body[1].eval()
    model = _Untraceable(body) if untraceable else body
    fused, report = elutriton.fuse(model)
    assert not report.fused
    assert "is in training mode (BN folding is for inference" in report.skipped[0][1]
    x = torch.randn(2, 3, 5, 5) if isinstance(body[0], nn.Conv2d) else torch.randn(2, 3)
    close(fused(x), model(x))


def test_fused_away_modules_are_identities_without_the_module_call():
    """Where fuse removed a module (the activation, a folded BatchNorm, an eval-mode dropout)
    it leaves a ``FusedAway``: an nn.Identity (names, indices and state_dict keys stay) whose
    call returns its input without nn.Module's call machinery (~0.8 us a call, which the
    unfused model did not pay): no hooks run on it, fx sees no call, and the model still
    pickles, traces, compiles and equals the unfused one."""
    import pickle

    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.Dropout(), nn.ELU(),
                          nn.Flatten(), nn.Linear(4 * 3 * 3, 5), nn.SELU()).eval()
    fused, report = elutriton.fuse(model)
    assert [type(m).__name__ for m in fused] == [
        "Conv2dELU", "FusedAway", "FusedAway", "FusedAway", "Flatten", "LinearELU", "FusedAway"]
    assert all(isinstance(m, nn.Identity) for m in fused if type(m).__name__ == "FusedAway")
    assert list(fused.state_dict()) == ["0.weight", "0.bias", "5.weight", "5.bias"]
    x = torch.randn(2, 3, 5, 5)
    assert fused[1](x) is x
    seen = []
    hook = fused[1].register_forward_hook(lambda *args: seen.append(args))
    expected = model(x)
    close(fused(x), expected)
    assert seen == []  # (documented: no module call, so no hooks)
    hook.remove()
    traced = fx.symbolic_trace(fused)
    assert not {"1", "2", "3", "6"} & {n.target for n in traced.graph.nodes}
    close(traced(x), expected)
    close(pickle.loads(pickle.dumps(fused))(x), expected)
    torch._dynamo.reset()
    close(torch.compile(fused, fullgraph=True, backend="aot_eager")(x), expected)
