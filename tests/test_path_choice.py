"""The per-shape choice between the fused kernel and the library path, and the tuned tables
it reads: bucketed lookups, validation on load, the measured choice and the default rule."""
import json
import warnings

import pytest
import torch
import torch.nn.functional as F

import elutriton
from elutriton.kernels import conv2d as conv_kernels
from elutriton.kernels import tuning
from elutriton.ops import library_path
from tests.reference import DEVICE, GEMM_TOLERANCES, assert_close, randn

GOOD = {"BLOCK_M": 128, "BLOCK_N": 64, "BLOCK_K": 32, "num_warps": 4, "num_stages": 4}


def key(m, dtype="float16", precision="None", opg=64, ipg=64, k=3, groups=1, bias=True):
    return tuning.shape_key(dtype, precision, m, opg, ipg, k, k, groups, bias)


def table(entries, paths=None):
    raw = {"conv2d_bias_elu": entries}
    if paths is not None:
        raw["paths"] = paths
    return tuning.TunedTable(raw)


def test_lookup_takes_the_exact_key_else_the_nearest_bucket_within_a_factor_of_4():
    small = dict(GOOD, BLOCK_M=64, BLOCK_K=64, num_stages=3)
    t = table({key(8192): GOOD, key(512): small})
    assert t.lookup("conv2d_bias_elu", key(8192)) == GOOD
    assert t.lookup("conv2d_bias_elu", key(8192 * 3)) == GOOD      # between buckets, nearer
    assert t.lookup("conv2d_bias_elu", key(8192 * 4)) == GOOD      # at the edge
    assert t.lookup("conv2d_bias_elu", key(8192 * 5)) is None      # beyond: no entry
    assert t.lookup("conv2d_bias_elu", key(1024)) == small         # nearer to 512 than 8192
    assert t.lookup("conv2d_bias_elu", key(4096)) == GOOD          # nearer to 8192
    # any other field differs: never a bucket of it
    assert t.lookup("conv2d_bias_elu", key(8192, dtype="bfloat16")) is None
    assert t.lookup("conv2d_bias_elu", key(8192, opg=128)) is None
    assert t.lookup("conv2d_bias_elu", key(8192, k=1)) is None
    assert t.lookup("conv2d_bias_elu", key(8192, bias=False)) is None


@pytest.mark.parametrize("broken,reason", [
    (dict(GOOD, BLOCK_M=100), "power of two"),
    (dict(GOOD, BLOCK_N=256), "pruning rules"),               # wider than OCg=64
    (dict(GOOD, num_stages=0), "num_stages"),
    (dict(GOOD, num_stages=2.0), "num_stages"),
    ({k: v for k, v in GOOD.items() if k != "BLOCK_K"}, "expected"),
    (dict(GOOD, BLOCK_SIZE=64), "expected"),
    (dict(GOOD, BLOCK_M=64, BLOCK_N=64, BLOCK_K=64, num_stages=4), "pruning rules"),
])
def test_a_hand_broken_entry_is_rejected_with_a_warning(broken, reason):
    with pytest.warns(UserWarning, match="rejected"):
        t = table({key(8192): broken, key(512): GOOD})
    assert t.lookup("conv2d_bias_elu", key(8192)) is None
    # its neighbour is still served, and the broken entry is no bucket for anything
    assert t.lookup("conv2d_bias_elu", key(512)) == GOOD
    assert t.lookup("conv2d_bias_elu", key(6000)) is None
    assert len(t.rejected) == 1 and reason in t.rejected[0][2]


def test_flat_k_entries_keep_the_miscompile_constraint():
    flat = key(4096, ipg=3, k=5, opg=192)  # an RGB stem: FLAT_K
    ok = {"BLOCK_M": 128, "BLOCK_N": 64, "BLOCK_K": 32, "num_warps": 4, "num_stages": 4}
    eight_warps = {"BLOCK_M": 128, "BLOCK_N": 128, "BLOCK_K": 32, "num_warps": 8,
                   "num_stages": 3}
    assert table({flat: ok}).lookup("conv2d_bias_elu", flat) == ok
    with pytest.warns(UserWarning, match="FLAT_K"):
        assert table({flat: eight_warps}).lookup("conv2d_bias_elu", flat) is None


def test_malformed_keys_and_path_values_are_rejected():
    with pytest.warns(UserWarning, match="malformed key"):
        t = table({"float16|None|many|64": GOOD})
    assert t.sections["conv2d_bias_elu"] == {}
    with pytest.warns(UserWarning, match="path must be one of"):
        t = table({}, {"conv2d_bias_elu/channels_last": {key(512): "fast"}})
    assert t.lookup("paths/conv2d_bias_elu/channels_last", key(512)) is None


def test_the_shipped_table_loads_without_rejections():
    for path in tuning.PACKAGED_CONFIG_DIR.glob("sm*.json"):
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            t = tuning.TunedTable(json.loads(path.read_text()), str(path))
        assert not t.rejected and t.sections["conv2d_bias_elu"]


def choose(op="conv2d_bias_elu", m=8192, opg=64, ipg=64, k=3, layout="channels_last",
           dtype=torch.float16):
    return library_path.choose_path(op, dtype, True, m, opg, ipg, k, k, 1, True,
                                    torch.device("cpu"), layout)


def test_default_rule_without_a_table_entry(monkeypatch):
    monkeypatch.delenv("ELUTRITON_PATH", raising=False)
    monkeypatch.setenv("ELUTRITON_CONFIG_DIR", "/nonexistent")  # no table at all
    tuning._load_table.cache_clear()
    assert choose("linear_bias_elu", layout=None) == "library"
    assert choose(layout="nchw") == "library"
    # rn50_conv5_3x3 (batch 32): 1568 pixels, 512 channels, K = 4608: few tiles, large layer
    assert choose(m=1568, opg=512, ipg=512) == "library"
    # the ELU-CIFAR 1x1 heads: few tiles but tiny layers: one launch beats two
    assert choose(m=128, opg=100, ipg=300, k=1) == "fused"
    # a grid that fills the GPU
    assert choose(m=100352, opg=64, ipg=256, k=1) == "fused"
    monkeypatch.setenv("ELUTRITON_PATH", "library")
    assert choose(m=100352, opg=64, ipg=256, k=1) == "library"
    monkeypatch.setenv("ELUTRITON_PATH", "fast")
    with pytest.raises(ValueError, match="ELUTRITON_PATH"):
        choose()


def test_the_tables_measured_choice_decides_and_serves_other_batch_sizes(tmp_path, monkeypatch):
    monkeypatch.delenv("ELUTRITON_PATH", raising=False)
    x = randn((4, 16, 6, 6), torch.float32)  # NCHW: the default rule says library
    w, b = randn((24, 16, 3, 3), torch.float32) / 12, randn((24,), torch.float32)
    m = 4 * 6 * 6
    k32 = tuning.shape_key("float32", "ieee", m, 24, 16, 3, 3, 1, True)  # TF32 off (conftest)
    arch = tuning.arch_name(torch.device(DEVICE))
    (tmp_path / f"{arch}.json").write_text(json.dumps(
        {"paths": {"conv2d_bias_elu/nchw": {k32: "fused"}}}))
    monkeypatch.setenv("ELUTRITON_CONFIG_DIR", str(tmp_path))
    used = []
    real_library = library_path.plan_library_conv2d
    monkeypatch.setattr("elutriton.ops.conv2d.plan_library_conv2d",
                        lambda *a: used.append("library") or real_library(*a))
    real_fused = conv_kernels.plan_conv2d_bias_elu
    monkeypatch.setattr("elutriton.ops.conv2d.plan_conv2d_bias_elu",
                        lambda *a, **k: used.append("fused") or real_fused(*a, **k))
    expected = F.elu(F.conv2d(x.double(), w.double(), b.double(), padding=1))
    tolerances = GEMM_TOLERANCES
    assert_close(elutriton.conv2d_bias_elu(x, w, b, padding=1), expected,
                 tolerances=tolerances)
    assert used == ["fused"]
    # batch 8: twice the pixels, the same bucket; batch 40: beyond it, the default rule
    for batch, path in ((8, "fused"), (40, "library")):
        xb = randn((batch, 16, 6, 6), torch.float32)
        used.clear()
        y = elutriton.conv2d_bias_elu(xb, w, b, padding=1)
        assert used == [path]
        assert_close(y, F.elu(F.conv2d(xb.double(), w.double(), b.double(), padding=1)),
                     tolerances=tolerances)


@pytest.mark.parametrize("captured", [True, False], ids=["captured", "eager"])
@pytest.mark.parametrize("layout", ["nchw", "channels_last"])
def test_library_path_output_layout_gradients_and_inputs_untouched(layout, captured,
                                                                   monkeypatch):
    # captured: the library path's own autograd; eager: torch's composite (composite_path.py)
    monkeypatch.setenv("ELUTRITON_PATH", "library")
    monkeypatch.setattr("elutriton.ops.composite_path.capturing", lambda is_cuda: captured)
    x = randn((3, 5, 7, 9), torch.float16, special=True)
    if layout == "channels_last":
        x = x.contiguous(memory_format=torch.channels_last)
    w = (randn((6, 5, 3, 3), torch.float16) / 8).requires_grad_()
    b = randn((6,), torch.float16).requires_grad_()
    before = x.clone()
    y = elutriton.conv2d_bias_elu(x, w, b, padding=1, alpha=0.3, scale=1.2, input_scale=0.9)
    torch.testing.assert_close(x, before, equal_nan=True, atol=0, rtol=0)
    ref = F.conv2d(x.double(), w.double(), b.double(), padding=1)
    assert y.is_contiguous(memory_format=torch.channels_last) == (layout == "channels_last")
    assert_close(y, torch.ops.aten.elu(ref, 0.3, 1.2, 0.9), tolerances=GEMM_TOLERANCES)
    y.nan_to_num().sum().backward()  # backward runs from y, as on the fused path
    assert w.grad is not None and b.grad is not None


def test_clear_plans_is_public_and_a_changed_path_applies_after_it(monkeypatch):
    x, w = randn((6, 10), torch.float32), randn((4, 10), torch.float32)
    used = []
    real = library_path.plan_library_linear
    monkeypatch.setattr("elutriton.ops.linear.plan_library_linear",
                        lambda *a: used.append("library") or real(*a))
    monkeypatch.setenv("ELUTRITON_PATH", "fused")
    elutriton.linear_bias_elu(x, w)
    monkeypatch.setenv("ELUTRITON_PATH", "library")
    elutriton.linear_bias_elu(x, w)
    assert used == []  # planned once, with the path of that time (documented)
    elutriton.clear_plans()
    y = elutriton.linear_bias_elu(x, w)
    assert used == ["library"]
    assert_close(y, F.elu(F.linear(x.double(), w.double())), tolerances=GEMM_TOLERANCES)


def test_depthwise_table_entries_are_swept_validated_and_used(tmp_path, monkeypatch):
    from elutriton.kernels import depthwise_conv2d as dw
    from perf import tune
    standin = [] if DEVICE == "cuda" else ["--cpu-standin"]
    monkeypatch.setenv("ELUTRITON_PATH", "fused")
    path = tune.main(standin + ["--conv", "2,8,6,6,8,3,1,8", "--dtypes", "float32",
                                "--out", str(tmp_path)])
    entries = json.loads(path.read_text())[dw.KERNEL_NAME]
    (key, entry), = entries.items()
    assert key == dw.depthwise_shape_key(torch.float32, 72, 8, 3, 3, 1, True)
    assert dw.validate_table_entry(key.split("|"), entry) is None
    assert "not one of" in dw.validate_table_entry(key.split("|"), dict(entry, BLOCK_C=48))
    # the launcher reads the entry (and its bucket) from the table on the calls' device
    monkeypatch.setenv("ELUTRITON_CONFIG_DIR", str(tmp_path))
    looked_up = []
    real = dw.tuned_config
    monkeypatch.setattr(dw, "tuned_config", lambda *a: looked_up.append(a[1]) or real(*a))
    monkeypatch.setattr(dw, "INTERPRET", False)  # plan as on a GPU (the launch still interprets)
    x = randn((4, 8, 6, 6), torch.float32).contiguous(memory_format=torch.channels_last)
    w = randn((8, 1, 3, 3), torch.float32) / 3
    plan = dw.plan_depthwise_conv2d_bias_elu(x, w, torch.empty(4, 8, 6, 6), True, [1, 1],
                                             [1, 1], [1, 1], device=x.device)
    assert looked_up == [dw.depthwise_shape_key(torch.float32, 144, 8, 3, 3, 1, True)]
    assert real(dw.KERNEL_NAME, looked_up[0], x.device).kwargs == {
        k: v for k, v in entry.items() if k.startswith("BLOCK")}  # 144 pixels: 72's bucket
    assert callable(plan)
