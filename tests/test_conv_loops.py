"""The fused conv kernel's K-loop variants against float64 torch: nested (taps outside), one
(tap, channel block) loop, FLAT_K, and split-K with its epilogue pass; their candidates, table
entries and validation."""
import json
import math

import pytest
import torch
import torch.nn.functional as F

import elutriton
from elutriton.kernels import conv2d as conv_kernels
from elutriton.kernels import tuning
from tests.reference import DEVICE, GEMM_TOLERANCES, SELU, assert_close, assert_grad_close, randn

aten = torch.ops.aten


def cfg(m=32, n=16, k=16, split=1, single=False, warps=4):
    return conv_kernels._cfg(m, n, k, warps, 1, split_k=split, single_k_loop=single)


# (n, c, h, w, oc, (kh, kw), stride, padding, dilation, groups)
GEOMETRIES = {
    "3x3_two_channel_blocks": (2, 20, 6, 7, 11, (3, 3), (1, 1), (1, 1), (1, 1), 1),   # 18 steps
    "1x1_linear_like": (3, 40, 3, 5, 9, (1, 1), (1, 1), (0, 0), (1, 1), 1),           # 3 steps
    "grouped_strided_dilated": (2, 32, 9, 8, 12, (3, 2), (2, 1), (2, 1), (2, 2), 2),  # 6 steps
    "flat_k_rgb_5x5": (2, 3, 7, 6, 10, (5, 5), (1, 1), (2, 2), (1, 1), 1),           # 5 steps
}
LOOPS = {
    "nested": cfg(),
    "single": cfg(single=True),
    "split2": cfg(split=2, single=True),
    "split4_uneven": cfg(split=4, single=True),
    "split8_some_empty": cfg(split=8, single=True),
}


def run_kernel(geometry, config, dtype=torch.float32, layout="channels_last", params=(1.0,) * 3,
               bias=True):
    """(y from the kernel with ``config``, float64 reference) for one geometry."""
    n, c, h, w, oc, (kh, kw), stride, padding, dilation, groups = GEOMETRIES[geometry]
    x = randn((n, c, h, w), dtype)
    weight = (randn((oc, c // groups, kh, kw), torch.float64)
              / math.sqrt(c // groups * kh * kw)).to(dtype)
    b = randn((oc,), dtype) * 0.5 if bias else None
    z = F.conv2d(x.double(), weight.double(), None if b is None else b.double(), stride, padding,
                 dilation, groups)
    expected = aten.elu(z, *params)
    memory_format = (torch.channels_last if layout == "channels_last"
                     else torch.contiguous_format)
    x = x.contiguous(memory_format=memory_format)
    weight = weight.contiguous(memory_format=memory_format)
    y = torch.empty(expected.shape, dtype=dtype, device=DEVICE, memory_format=memory_format)
    if layout == "sliced_nchw":  # non-contiguous input read through its strides
        wide = randn((n, c, h, w + 3), dtype)
        wide[..., 1:-2] = x
        x = wide[..., 1:-2]
    conv_kernels.launch_conv2d_bias_elu(x, weight, b, y, stride, padding, dilation, groups,
                                        *params, allow_tf32=False, config=config)
    return y, expected


@pytest.mark.parametrize("loop", LOOPS)
@pytest.mark.parametrize("geometry", GEOMETRIES)
def test_every_loop_matches_float64(geometry, loop):
    if geometry == "flat_k_rgb_5x5" and loop == "nested":
        pytest.skip("FLAT_K walks one loop whatever SINGLE_K_LOOP says (tested as 'single')")
    y, expected = run_kernel(geometry, LOOPS[loop])
    assert_close(y, expected, tolerances=GEMM_TOLERANCES)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float64], ids=str)
@pytest.mark.parametrize("loop", ["single", "split4_uneven"])
def test_loops_in_every_dtype_with_selu_and_no_bias(dtype, loop):
    params = (SELU["alpha"], SELU["scale"], 1.0)
    for geometry in ("3x3_two_channel_blocks", "flat_k_rgb_5x5"):
        y, expected = run_kernel(geometry, LOOPS[loop], dtype, params=params, bias=False)
        assert y.dtype == dtype
        assert_close(y, expected, tolerances=GEMM_TOLERANCES)


@pytest.mark.parametrize("layout", ["nchw", "sliced_nchw"])
def test_split_k_reads_and_writes_any_strides(layout):
    y, expected = run_kernel("grouped_strided_dilated", LOOPS["split4_uneven"], layout=layout)
    assert y.is_contiguous()
    assert_close(y, expected, tolerances=GEMM_TOLERANCES)


def test_split_k_is_deterministic_and_applies_elu_once_to_the_full_sum():
    """Bitwise equal from run to run; and the result is ELU of the summed partials (ELU per
    split would differ wherever the partial sums disagree in sign with the total)."""
    torch.manual_seed(0)
    first, expected = run_kernel("3x3_two_channel_blocks", LOOPS["split4_uneven"])
    torch.manual_seed(0)
    second, _ = run_kernel("3x3_two_channel_blocks", LOOPS["split4_uneven"])
    assert torch.equal(first, second)
    assert (expected < 0).any() and (expected > 0).any()
    assert_close(first, expected, tolerances=GEMM_TOLERANCES)


def test_split_k_propagates_nan_and_inf():
    n, c, h, w, oc = 1, 20, 4, 4, 8
    x = randn((n, c, h, w), torch.float32).contiguous(memory_format=torch.channels_last)
    x[0, 3, 1, 1] = float("nan")
    x[0, 7, 2, 2] = float("inf")
    weight = randn((oc, c, 3, 3), torch.float32).abs().contiguous(
        memory_format=torch.channels_last) / 10
    y = torch.empty((n, oc, h, w), device=DEVICE, memory_format=torch.channels_last)
    conv_kernels.launch_conv2d_bias_elu(x, weight, None, y, (1, 1), (1, 1), (1, 1), 1, 1.0, 1.0,
                                        1.0, allow_tf32=False, config=LOOPS["split4_uneven"])
    expected = F.elu(F.conv2d(x.double(), weight.double(), None, 1, 1))
    assert torch.equal(y.isnan(), expected.isnan())
    assert torch.equal(y.isinf(), expected.isinf())
    finite = expected.isfinite()
    assert_close(y[finite], expected[finite], tolerances=GEMM_TOLERANCES)


def test_candidates_offer_split_k_only_for_small_grids_and_long_k_loops():
    # rn50 conv5 3x3 at batch 32: 1568 pixels x 512 channels, 144 K steps with BLOCK_K 32
    small = conv_kernels.conv_candidates("16bit", 512, 512, 3, 3, False, 1568)
    splits = [c for c in small if c.kwargs["SPLIT_K"] > 1]
    assert splits and all(c.num_warps <= 4 and c.kwargs["SINGLE_K_LOOP"] for c in splits)
    for c in splits:
        tiles = math.ceil(1568 / c.kwargs["BLOCK_M"]) * math.ceil(512 / c.kwargs["BLOCK_N"])
        assert tiles < conv_kernels.SMALL_GRID_TILES
    # the same layer at batch 512: every grid has enough tiles, no split offered
    large = conv_kernels.conv_candidates("16bit", 512, 512, 3, 3, False, 1568 * 16)
    assert not [c for c in large if c.kwargs["SPLIT_K"] > 1]
    assert [c for c in large if c.kwargs["SINGLE_K_LOOP"]]
    # one K step per split at most: a 1x1 layer with 32 channels (1-2 steps) gets no split
    short = conv_kernels.conv_candidates("16bit", 32, 64, 1, 1, False, 64)
    assert not [c for c in short if c.kwargs["SPLIT_K"] > 1]
    # FLAT_K: split variants keep its limits and never ask for SINGLE_K_LOOP
    flat = conv_kernels.conv_candidates("16bit", 3, 192, 11, 11, True, 256)
    flat_splits = [c for c in flat if c.kwargs["SPLIT_K"] > 1]
    assert flat_splits and all(conv_kernels.flat_k_config_ok(c) for c in flat_splits)
    assert not any(c.kwargs["SINGLE_K_LOOP"] for c in flat)
    # the autotuner's list (no buffer to plan for split-K) stays the base configs
    assert all(c.kwargs["SPLIT_K"] == 1 and not c.kwargs["SINGLE_K_LOOP"]
               for c in conv_kernels.CONV_CONFIGS)


SMALL_KEY = tuning.shape_key("float16", "None", 1568, 512, 512, 3, 3, 1, True)
SPLIT_ENTRY = {"BLOCK_M": 128, "BLOCK_N": 64, "BLOCK_K": 32, "num_warps": 4, "num_stages": 2,
               "SPLIT_K": 4, "SINGLE_K_LOOP": True}


@pytest.mark.parametrize("broken,reason", [
    (dict(SPLIT_ENTRY, SPLIT_K=3), "power of two"),
    (dict(SPLIT_ENTRY, SINGLE_K_LOOP=1), "bool"),
    (dict(SPLIT_ENTRY, SINGLE_K_LOOP=False), "pruning rules"),   # split-K needs the one loop
    (dict(SPLIT_ENTRY, SPLIT_K=16), "pruning rules"),            # not a SPLIT_K choice
    (dict(SPLIT_ENTRY, BLOCK_M=128, BLOCK_N=128, num_warps=8, num_stages=3), "pruning rules"),
])
def test_broken_loop_entries_are_rejected(broken, reason):
    assert conv_kernels.validate_table_entry(SMALL_KEY.split("|"), SPLIT_ENTRY) is None
    assert reason in conv_kernels.validate_table_entry(SMALL_KEY.split("|"), broken)
    # a split entry at a batch size whose grid is large is not a candidate there
    big_key = tuning.shape_key("float16", "None", 1568 * 16, 512, 512, 3, 3, 1, True)
    assert "pruning rules" in conv_kernels.validate_table_entry(big_key.split("|"), SPLIT_ENTRY)
    # entries written before the loop fields existed still load: nested loops, no split
    old = {k: v for k, v in SPLIT_ENTRY.items() if k not in ("SPLIT_K", "SINGLE_K_LOOP")}
    old["num_stages"] = 4  # the base config's
    assert conv_kernels.validate_table_entry(SMALL_KEY.split("|"), old) is None
    table = tuning.TunedTable({"conv2d_bias_elu": {SMALL_KEY: old}})
    assert not table.rejected
    tiles = {k: old[k] for k in ("BLOCK_M", "BLOCK_N", "BLOCK_K")}
    config = conv_kernels.triton.Config(tiles, num_warps=4, num_stages=3)
    assert conv_kernels.with_loop_defaults(config).kwargs == dict(tiles, SPLIT_K=1,
                                                                  SINGLE_K_LOOP=False)


@pytest.mark.fused_kernel
def test_a_split_k_table_entry_is_used_by_the_op_forward_and_backward(tmp_path, monkeypatch):
    """The op plans a tabled split-K config (and a batch in its bucket), the epilogue pass
    runs, and values and gradients match float64."""
    monkeypatch.setenv("ELUTRITON_PATH", "fused")
    n, c, h, w, oc = 2, 20, 5, 5, 12
    dtype = torch.float16
    key = tuning.shape_key("float16", "None", n * h * w, oc, c, 3, 3, 1, True)
    candidates = conv_kernels.conv_candidates("16bit", c, oc, 3, 3, False, n * h * w)
    entry = conv_kernels.config_entry(next(cand for cand in candidates
                                           if cand.kwargs["SPLIT_K"] == 4))
    assert conv_kernels.validate_table_entry(key.split("|"), entry) is None
    arch = tuning.arch_name(torch.device(DEVICE))
    (tmp_path / f"{arch}.json").write_text(json.dumps({"conv2d_bias_elu": {key: entry}}))
    monkeypatch.setenv("ELUTRITON_CONFIG_DIR", str(tmp_path))
    finished = []
    real = conv_kernels.plan_split_k_epilogue
    monkeypatch.setattr(conv_kernels, "plan_split_k_epilogue",
                        lambda *a: finished.append(a[1]) or real(*a))
    for batch in (n, 2 * n):  # the tabled batch, and one in its bucket
        x = randn((batch, c, h, w), dtype).contiguous(memory_format=torch.channels_last)
        weight = randn((oc, c, 3, 3), dtype) / 13
        b = randn((oc,), dtype)
        xs, ws, bs = (t.clone().requires_grad_() for t in (x, weight, b))
        y = elutriton.conv2d_bias_elu(xs, ws, bs, padding=1)
        x64, w64, b64 = (t.double().requires_grad_() for t in (x, weight, b))
        expected = F.elu(F.conv2d(x64, w64, b64, padding=1))
        assert_close(y, expected, tolerances=GEMM_TOLERANCES)
        grad_y = randn(y.shape, dtype)
        grads = torch.autograd.grad(y, (xs, ws, bs), grad_y)
        ref_grads = torch.autograd.grad(expected, (x64, w64, b64), grad_y.double())
        for got, ref in zip(grads, ref_grads):
            assert_grad_close(got, ref, dtype, c * 9)
    assert finished == [4, 4]


def test_exact_fp32_and_fp64_get_no_loop_variants():
    for cls in ("fp32", "fp64"):
        candidates = conv_kernels.conv_candidates(cls, 512, 512, 3, 3, False, 1568)
        assert all(c.kwargs["SPLIT_K"] == 1 and not c.kwargs["SINGLE_K_LOOP"]
                   for c in candidates)
    fp32_key = tuning.shape_key("float32", "ieee", 1568, 512, 512, 3, 3, 1, True)
    entry = {"BLOCK_M": 64, "BLOCK_N": 32, "BLOCK_K": 16, "num_warps": 4, "num_stages": 2}
    assert conv_kernels.validate_table_entry(fp32_key.split("|"), entry) is None
    assert "pruning rules" in conv_kernels.validate_table_entry(
        fp32_key.split("|"), dict(entry, SPLIT_K=2, SINGLE_K_LOOP=True))


def test_tf32_gets_the_single_loop_but_no_split_k():
    candidates = conv_kernels.conv_candidates("tf32", 512, 512, 3, 3, False, 1568)
    assert any(c.kwargs["SINGLE_K_LOOP"] for c in candidates)
    assert all(c.kwargs["SPLIT_K"] == 1 for c in candidates)
