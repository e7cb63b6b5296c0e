"""``elutriton.tune(model, *example_inputs, out_dir=...)``: the layer calls it reads off a
model, the table it writes, and the ops following that table once it is put to use. Under the
interpreter the timer is a wall-clock stand-in: the choices mean nothing, the code paths and
the table must be right."""
import json
import os

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import elutriton
from elutriton.kernels import conv2d as conv_kernels
from elutriton.kernels import tuning
from elutriton.tuner import ConvCall, LinearCall, record_calls
from tests.reference import DEVICE, GEMM_TOLERANCES, assert_close


class Net(nn.Module):
    """Convolutions of every argument form the recorder must resolve, then a linear head on
    3-D input (rows = batch x tokens)."""

    def __init__(self):
        super().__init__()
        self.same = elutriton.nn.Conv2dELU(3, 8, 2, padding="same")        # odd total: padded
        self.reflect = elutriton.nn.Conv2dELU(8, 8, 3, padding=1, padding_mode="reflect")
        self.replicate = elutriton.nn.Conv2dELU(8, 8, (4, 3), padding="same",
                                                padding_mode="replicate")  # 1 + 2 rows
        self.dilated = elutriton.nn.Conv2dELU(8, 6, (3, 1), stride=(2, 1), padding=(2, 0),
                                              dilation=(2, 1), groups=2, bias=False)
        self.depthwise = elutriton.nn.Conv2dELU(6, 12, 3, padding=1, groups=6)
        self.head = elutriton.nn.LinearELU(12, 5, alpha=0.5)

    def forward(self, x):
        y = self.depthwise(self.dilated(self.replicate(self.reflect(self.same(x)))))
        tokens = y.flatten(2).transpose(1, 2)                              # [N, H*W, C]
        return self.head(tokens)


def _outputs_by_layer(model, x):
    """{module name: (input, output)} of every fused layer in one forward."""
    seen = {}
    hooks = [m.register_forward_hook(
        lambda m, args, out, name=name: seen.setdefault(name, (args[0], out)) and None)
        for name, m in model.named_modules()
        if isinstance(m, (elutriton.nn.Conv2dELU, elutriton.nn.LinearELU))]
    with torch.no_grad():
        model(x)
    for hook in hooks:
        hook.remove()
    return seen


def test_recorded_calls_are_what_each_layer_computes():
    model = Net().to(DEVICE)
    x = torch.randn(2, 3, 9, 7, device=DEVICE).contiguous(memory_format=torch.channels_last)
    calls = dict(record_calls(model, x))
    assert list(calls) == ["same", "reflect", "replicate", "dilated", "depthwise", "head"]
    seen = _outputs_by_layer(model, x)
    for name, call in calls.items():
        layer = getattr(model, name)
        x_in, y = seen[name]
        if isinstance(call, LinearCall):
            assert (call.rows, call.in_features, call.out_features) == (
                x_in.shape[0] * x_in.shape[1], 12, 5)
            continue
        # torch's convolution on an input of the recorded size, with the recorded symmetric
        # padding, gives the layer's output shape
        probe = F.conv2d(torch.zeros(call.n, call.c, call.h, call.w), layer.weight.cpu(), None,
                         call.stride, call.padding, call.dilation, call.groups)
        assert probe.shape == y.shape and call.out_hw == tuple(y.shape[2:])
        assert call.has_bias == (layer.bias is not None) and call.dtype == torch.float32
    # the padded forms: 'same' with a 2x2 kernel pads one row and column (bottom/right) first;
    # reflect padding pads the input itself and convolves unpadded
    assert (calls["same"].h, calls["same"].w, calls["same"].padding) == (10, 8, (0, 0))
    assert (calls["reflect"].h, calls["reflect"].w, calls["reflect"].padding) == (11, 9, (0, 0))
    # 'same' with a padding mode: the layer pads (1 top, 2 bottom; 1 each side) and no more
    assert (calls["replicate"].h, calls["replicate"].w, calls["replicate"].padding) == (
        12, 9, (0, 0))
    assert calls["dilated"].kernel == (3, 1) and calls["dilated"].dilation == (2, 1)
    assert calls["depthwise"].depthwise and not calls["dilated"].depthwise
    assert calls["same"].channels_last and not calls["head"].key.startswith("None")


def test_each_distinct_call_once_and_the_operand_dtype_under_autocast():
    layer = elutriton.nn.Conv2dELU(4, 8, 3).to(DEVICE)
    model = nn.Sequential(layer)
    x = torch.randn(2, 4, 6, 6, device=DEVICE)

    class Twice(nn.Module):  # one layer, called on two sizes and twice on the same one
        def __init__(self):
            super().__init__()
            self.layer = layer

        def forward(self, x):
            return self.layer(x), self.layer(x[:1]), self.layer(x)
    calls = [call for _, call in record_calls(Twice(), x)]
    assert [(c.n, c.h) for c in calls] == [(2, 6), (1, 6)]
    assert not calls[0].channels_last  # an NCHW input is recorded as such
    unbatched = record_calls(model, x[0])[0][1]
    assert (unbatched.n, unbatched.c, unbatched.h) == (1, 4, 6)
    with torch.autocast(DEVICE, dtype=torch.bfloat16):
        (_, call), = record_calls(model, x)
    assert call.dtype == torch.bfloat16 and "bfloat16" in call.key
    outputs = []
    layer.register_forward_hook(lambda m, args, out: outputs.append(out))
    (_, call), = record_calls(model.double(), x.double().requires_grad_())
    assert call.dtype == torch.float64
    assert not outputs[-1].requires_grad  # the forward ran without autograd


def test_tune_writes_a_table_the_ops_follow_once_activated(tmp_path, monkeypatch):
    # no table in effect (on a GPU the packaged one would be copied in: tested below)
    empty = tmp_path / "empty"
    monkeypatch.setenv("ELUTRITON_CONFIG_DIR", str(empty))
    monkeypatch.delenv("ELUTRITON_PATH", raising=False)
    monkeypatch.delenv("ELUTRITON_BACKWARD", raising=False)
    monkeypatch.setattr(torch.backends.cudnn, "allow_tf32", False)
    torch.manual_seed(0)
    conv = elutriton.nn.Conv2dELU(3, 8, 3, padding=1).to(DEVICE)
    lin = elutriton.nn.LinearELU(8, 4).to(DEVICE)
    model = nn.Sequential(conv, nn.AdaptiveAvgPool2d(1), nn.Flatten(), lin)
    x = torch.randn(2, 3, 6, 6, device=DEVICE).contiguous(memory_format=torch.channels_last)
    lines = []
    out = tmp_path / "out"
    report = elutriton.tune(model, x, out_dir=out, backward=True, log=lines.append)
    assert report.path == out / f"{tuning.arch_name(torch.device(DEVICE))}.json"
    assert lines == report.lines  # configs, paths, backward: two calls, one conv
    assert len([line for line in lines if "TMA" not in line]) == 2 + 2 + 2
    assert "ELUTRITON_PATH" not in os.environ and "ELUTRITON_BACKWARD" not in os.environ
    assert os.environ["ELUTRITON_CONFIG_DIR"] == str(empty)  # nothing global until activate()
    raw = json.loads(report.path.read_text())
    conv_call, lin_call = (call for _, call in report.calls)
    assert set(raw[conv_kernels.KERNEL_NAME]) == {conv_call.key, lin_call.key}
    assert set(raw["paths"]) == {"conv2d_bias_elu/channels_last", "linear_bias_elu",
                                 "conv2d_bias_elu/backward", "conv2d_bias_elu/backward_params"}
    assert not tuning.TunedTable(raw).rejected
    # put it to use, with the path choices flipped to the opposite of the default rule: the
    # ops must follow the table (and stay right)
    raw["paths"]["conv2d_bias_elu/channels_last"][conv_call.key] = "library"
    raw["paths"]["linear_bias_elu"][lin_call.key] = "fused"
    report.path.write_text(json.dumps(raw))
    report.activate()
    assert os.environ["ELUTRITON_CONFIG_DIR"] == str(out)
    chosen = []
    real = elutriton.ops.library_path.choose_path
    for module in ("conv2d", "linear"):
        monkeypatch.setattr(f"elutriton.ops.{module}.choose_path",
                            lambda *a: chosen.append(real(*a)) or chosen[-1])
    with torch.no_grad():
        y = model(x)
    assert chosen == ["library", "fused"]
    z = F.elu(F.conv2d(x.double(), conv.weight.double(), conv.bias.double(), padding=1))
    expected = F.elu(F.linear(z.mean((2, 3)), lin.weight.double(), lin.bias.double()))
    assert_close(y, expected, tolerances=GEMM_TOLERANCES)
    elutriton.clear_plans()


def test_a_depthwise_layer_gets_its_own_kernels_entry(tmp_path, monkeypatch):
    monkeypatch.setenv("ELUTRITON_CONFIG_DIR", str(tmp_path / "empty"))
    model = nn.Sequential(elutriton.nn.Conv2dELU(4, 8, 3, padding=1, groups=4)).to(DEVICE)
    x = torch.randn(2, 4, 5, 5, device=DEVICE).contiguous(memory_format=torch.channels_last)
    report = elutriton.tune(model, x, out_dir=tmp_path / "out", paths=False)
    raw = json.loads(report.path.read_text())
    (_, call), = report.calls
    assert call.depthwise and list(raw["depthwise_conv2d_bias_elu"]) == [call.key]
    assert not raw.get(conv_kernels.KERNEL_NAME) and not tuning.TunedTable(raw).rejected


def test_tune_starts_from_the_table_in_effect_and_keeps_what_out_dir_has(tmp_path,
                                                                        monkeypatch):
    arch = tuning.arch_name(torch.device(DEVICE))
    foreign = tuning.shape_key("float16", "None", 4096, 64, 64, 3, 3, 1, True)
    in_effect, out = tmp_path / "in_effect", tmp_path / "out"
    in_effect.mkdir()
    (in_effect / f"{arch}.json").write_text(json.dumps({"paths": {"linear_bias_elu": {
        foreign.replace("|3|3|", "|1|1|"): "library"}}}))
    monkeypatch.setenv("ELUTRITON_CONFIG_DIR", str(in_effect))
    monkeypatch.delenv("ELUTRITON_PATH", raising=False)
    model = nn.Sequential(elutriton.nn.LinearELU(8, 4)).to(DEVICE)
    report = elutriton.tune(model, torch.randn(3, 8, device=DEVICE), out_dir=out, configs=False)
    paths = json.loads(report.path.read_text())["paths"]["linear_bias_elu"]
    assert set(paths) == {foreign.replace("|3|3|", "|1|1|"), report.calls[0][1].key}
    # a second model tuned into the same folder adds to it
    other = nn.Sequential(elutriton.nn.LinearELU(8, 6)).to(DEVICE)
    second = elutriton.tune(other, torch.randn(3, 8, device=DEVICE), out_dir=out, configs=False)
    assert set(json.loads(second.path.read_text())["paths"]["linear_bias_elu"]) == set(paths) | {
        second.calls[0][1].key}


def test_tune_times_each_call_in_its_own_dtype_without_the_callers_autocast(tmp_path,
                                                                          monkeypatch):
    """Called inside the user's autocast (so the recorded dtypes are what the model runs),
    the timings must not run under it: autocast would recast a call's tensors."""
    monkeypatch.delenv("ELUTRITON_PATH", raising=False)
    states = []

    def spy(fn, device):
        states.append(torch.is_autocast_enabled(DEVICE))
        return 1.0, 1.0, 1.0, "spy"
    monkeypatch.setattr("elutriton.tuner.kernel_time", spy)
    model = nn.Sequential(elutriton.nn.LinearELU(8, 4)).to(DEVICE)
    with torch.autocast(DEVICE, dtype=torch.bfloat16):
        report = elutriton.tune(model, torch.randn(3, 8, device=DEVICE), out_dir=tmp_path,
                                configs=False)
        assert torch.is_autocast_enabled(DEVICE)  # the caller's context is back
    assert report.calls[0][1].dtype == torch.bfloat16
    assert states == [False, False]  # the fused and the library path, each timed once


class TrainingNet(nn.Module):
    """A model whose forward changes state in training mode: a BatchNorm's running statistics,
    a dropout's random draws, a buffer replaced by a new tensor, and a layer called only
    while training."""

    def __init__(self):
        super().__init__()
        self.conv = elutriton.nn.Conv2dELU(3, 4, 3, padding=1)
        self.bn = nn.BatchNorm2d(4)
        self.drop = nn.Dropout(0.5)
        self.head = elutriton.nn.LinearELU(4, 3)
        self.aux = elutriton.nn.LinearELU(4, 2)
        self.register_buffer("calls", torch.zeros((), dtype=torch.long))

    def forward(self, x):
        self.calls = self.calls + 1  # a new tensor in the buffer's place
        features = self.drop(self.bn(self.conv(x))).mean((2, 3))
        if self.training:
            return self.head(features), self.aux(features)
        return self.head(features)


def test_tune_leaves_the_model_and_the_random_generators_as_they_were(tmp_path, monkeypatch):
    """Tuning before training must not change what the training does: the recorded forward
    runs in the model's own mode (the training-only layer is recorded) yet leaves its buffers
    (the BatchNorm's statistics and batch count, a replaced buffer) and the generators (the
    dropout's draws, the timings' random inputs) as they were."""
    monkeypatch.delenv("ELUTRITON_PATH", raising=False)
    monkeypatch.setattr("elutriton.tuner.kernel_time",
                        lambda fn, device: (1.0, 1.0, 1.0, "spy"))
    model = TrainingNet().to(DEVICE).train()
    with torch.no_grad():  # statistics that one batch would visibly move
        model.bn.running_mean.fill_(3.0)
        model.bn.running_var.fill_(5.0)
    x = torch.randn(2, 3, 5, 5, device=DEVICE)
    buffers = {name: (b, b.clone()) for name, b in model.named_buffers()}
    rng = torch.get_rng_state()
    report = elutriton.tune(model, x, out_dir=tmp_path, configs=False)
    assert [name for name, _ in report.calls] == ["conv", "head", "aux"]
    assert torch.equal(torch.get_rng_state(), rng)
    assert set(dict(model.named_buffers())) == set(buffers)
    for name, buffer in model.named_buffers():
        original, values = buffers[name]
        assert buffer is original, name
        assert torch.equal(buffer, values), name
    assert model.training


def test_tune_takes_a_model_made_under_inference_mode(tmp_path, monkeypatch):
    """Its buffers are inference tensors, which nothing may write outside inference mode,
    putting them back included."""
    monkeypatch.delenv("ELUTRITON_PATH", raising=False)
    monkeypatch.setattr("elutriton.tuner.kernel_time",
                        lambda fn, device: (1.0, 1.0, 1.0, "spy"))
    with torch.inference_mode():
        model = TrainingNet().to(DEVICE).eval()
    report = elutriton.tune(model, torch.randn(2, 3, 5, 5, device=DEVICE), out_dir=tmp_path,
                            configs=False)
    assert [name for name, _ in report.calls] == ["conv", "head"]
    assert model.calls.item() == 0 and model.bn.running_var.eq(1).all()


def test_tune_takes_a_model_with_lazy_modules_still_uninitialized(tmp_path, monkeypatch):
    """Their buffers and parameters have no values yet: the recorded forward initializes
    them, as a lazy model's first forward does; the initialized buffers are kept as before."""
    monkeypatch.delenv("ELUTRITON_PATH", raising=False)
    monkeypatch.setattr("elutriton.tuner.kernel_time",
                        lambda fn, device: (1.0, 1.0, 1.0, "spy"))
    model = nn.Sequential(elutriton.nn.Conv2dELU(3, 4, 3, padding=1), nn.LazyBatchNorm2d(),
                          nn.BatchNorm2d(4), nn.Flatten(), nn.LazyLinear(3),
                          elutriton.nn.LinearELU(3, 2)).to(DEVICE).train()
    x = torch.randn(2, 3, 5, 5, device=DEVICE)
    report = elutriton.tune(model, x, out_dir=tmp_path, configs=False)
    assert [name for name, _ in report.calls] == ["0", "5"]
    assert type(model[1]) is nn.BatchNorm2d and model[4].weight.shape == (3, 100)
    assert model[2].num_batches_tracked.item() == 0 and model[2].running_mean.eq(0).all()
    assert model(x).shape == (2, 2)


def test_tune_refuses_models_it_cannot_tune(monkeypatch, tmp_path):
    plain = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ELU())
    with pytest.raises(ValueError, match="elutriton.fuse"):
        elutriton.tune(plain, torch.randn(1, 3, 5, 5), out_dir=tmp_path)
    fused, _ = elutriton.fuse(plain)
    monkeypatch.setattr("elutriton.tuner.device_runs_triton", lambda device: False)
    with pytest.raises(ValueError, match="do not run on"):
        elutriton.tune(fused, torch.randn(1, 3, 5, 5), out_dir=tmp_path)
    assert not list(tmp_path.iterdir())


def test_clear_plans_rereads_a_table_retuned_in_place(tmp_path, monkeypatch):
    """The loaded tables are a cache too: a table rewritten under the same folder must be
    read again after clear_plans (the docstring's promise), not served from memory."""
    arch = tuning.arch_name(torch.device(DEVICE))
    monkeypatch.setenv("ELUTRITON_CONFIG_DIR", str(tmp_path))
    monkeypatch.delenv("ELUTRITON_PATH", raising=False)
    call = LinearCall(3, 8, 4, True, torch.float32, False)
    assert call.key == ConvCall(3, 8, 1, 1, 4, (1, 1), dtype=torch.float32,
                                allow_tf32=False).key
    h, w, b = (torch.randn(3, 8, device=DEVICE), torch.randn(4, 8, device=DEVICE),
               torch.randn(4, device=DEVICE))
    monkeypatch.setattr(torch.backends.cuda.matmul, "allow_tf32", False)
    chosen = []
    real = elutriton.ops.library_path.choose_path
    monkeypatch.setattr("elutriton.ops.linear.choose_path",
                        lambda *a: chosen.append(real(*a)) or chosen[-1])
    for choice in ("fused", "library"):
        (tmp_path / f"{arch}.json").write_text(json.dumps(
            {"paths": {"linear_bias_elu": {call.key: choice}}}))
        elutriton.clear_plans()
        assert_close(elutriton.linear_bias_elu(h, w, b),
                     F.elu(F.linear(h.double(), w.double(), b.double())),
                     tolerances=GEMM_TOLERANCES)
    assert chosen == ["fused", "library"]
    elutriton.clear_plans()
