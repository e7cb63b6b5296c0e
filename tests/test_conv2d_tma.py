"""The tensor-descriptor (TMA) implicit-GEMM conv (kernels/conv2d_tma.py) against float64 torch
through the public op when a tuned ``conv2d_tma`` entry asks for it: kernel sizes, padding
(zero-filled out-of-bounds boxes), dilation, output tiles past the image edges, channel blocks
that straddle filter taps, dtypes and parameters; the convs it must leave to the pointer
kernel; misaligned pointers; the table validation and the tuner's sweep."""
import json

import pytest
import torch
import torch.nn.functional as F

import elutriton
from elutriton.kernels import conv2d_tma, gemm_tma, tuning
from tests.reference import DEVICE, GEMM_TOLERANCES, assert_close, randn
from tests.tma_cases import assert_entry_validated, counting_measure, spied_table

pytestmark = pytest.mark.skipif(not gemm_tma.tma_supported(torch.device(DEVICE)),
                                reason="no tensor descriptors on this device")
CL = torch.channels_last


def entry(cls, out_channels, in_channels, index=-1):
    config = conv2d_tma.conv_tma_candidates(cls, out_channels, in_channels)[index]
    return dict(config.kwargs, num_warps=config.num_warps, num_stages=config.num_stages)


def key(dtype, precision, pixels, out_channels, in_channels, k, bias=True):
    return tuning.shape_key(dtype, precision, pixels, out_channels, in_channels, k, k, 1, bias)


@pytest.fixture
def table(tmp_path, monkeypatch):
    """Write a conv2d_tma section; ``table.launched`` lists each TMA call's outcome."""
    return spied_table(tmp_path, monkeypatch, conv2d_tma, "plan_conv2d_bias_elu_tma",
                       "conv2d_tma")


def reference(x, w, b, padding, dilation, params=(1.0, 1.0, 1.0)):
    z = F.conv2d(x.double(), w.double(), None if b is None else b.double(), 1, padding,
                 dilation)
    return torch.ops.aten.elu(z, *params)


CASES = [  # (n, c, h, w, oc, k, padding, dilation)
    (2, 16, 9, 11, 24, 3, 1, 1),    # 'same' 3x3: tiles past both image edges
    (1, 24, 7, 20, 40, 5, 2, 1),    # 24 channels in 16-wide blocks: blocks straddle taps
    (2, 8, 10, 9, 16, 3, 0, 1),     # no padding: output smaller than the input
    (1, 16, 12, 12, 8, 3, 2, 2),    # dilation 2
    (1, 32, 6, 5, 72, 3, 1, 1),     # output channels past one BLOCK_N
]


@pytest.mark.parametrize("case", CASES, ids=lambda c: f"c{c[1]}k{c[5]}p{c[6]}d{c[7]}")
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_runs_where_the_table_says_and_matches_float64(case, dtype, table):
    n, c, h, w, oc, k, padding, dilation = case
    out_h = h + 2 * padding - dilation * (k - 1)
    out_w = w + 2 * padding - dilation * (k - 1)
    # the smallest tiles (8x8 pixels, 64 x 16-wide channel blocks) so every edge is crossed
    cls_entry = entry("16bit", oc, c, index=-1)
    table({key(str(dtype).split(".")[1], "None", n * out_h * out_w, oc, c, k): cls_entry})
    x = randn((n, c, h, w), dtype).contiguous(memory_format=CL)
    weight = (randn((oc, c, k, k), dtype) / (c * k * k) ** 0.5).contiguous(memory_format=CL)
    b = randn((oc,), dtype)
    y = elutriton.conv2d_bias_elu(x, weight, b, padding=padding, dilation=dilation)
    assert table.launched == [True]
    assert y.is_contiguous(memory_format=CL) and y.shape == (n, oc, out_h, out_w)
    assert_close(y, reference(x, weight, b, padding, dilation), tolerances=GEMM_TOLERANCES)


def test_parameters_no_bias_tf32_and_an_nchw_weight(table, monkeypatch):
    n, c, h, w, oc, k = 2, 16, 7, 9, 32, 3
    monkeypatch.setattr(torch.backends.cudnn, "allow_tf32", True)
    table({key("float16", "None", n * h * w, oc, c, k, bias=False): entry("16bit", oc, c),
           key("float32", "tf32", n * h * w, oc, c, k): entry("tf32", oc, c)})
    x = randn((n, c, h, w), torch.float16).contiguous(memory_format=CL)
    weight = randn((oc, c, k, k), torch.float16) / 12  # NCHW: converted for the kernel
    y = elutriton.conv2d_bias_elu(x, weight, None, padding=1, alpha=0.5, scale=2.0,
                                  input_scale=0.7)
    assert_close(y, reference(x, weight, None, 1, 1, (0.5, 2.0, 0.7)), tolerances=GEMM_TOLERANCES)
    x32, w32 = x.float(), (weight.float()).contiguous(memory_format=CL)
    b32 = randn((oc,), torch.float32)
    y32 = elutriton.conv2d_bias_elu(x32, w32, b32, padding=1)
    assert table.launched == [True, True]
    # TF32 operands: an element-wise worst-case bound (tests/test_gemm_tma.py)
    expected = reference(x32, w32, b32, 1, 1)
    magnitude = F.conv2d(x32.double().abs(), w32.double().abs(), None, 1, 1)
    assert bool(((y32.double() - expected).abs() <= magnitude * 2 * 2.0 ** -10 + 1e-5).all())


def test_convs_it_must_leave_to_the_pointer_kernel(table):
    n, c, h, w, oc, k = 2, 16, 8, 8, 24, 3
    everything = {key("float16", "None", pixels, oc, c, k): entry("16bit", oc, c)
                  for pixels in (n * 8 * 8, n * 4 * 4, n * 6 * 6)}
    table(everything)
    x = randn((n, c, h, w), torch.float16).contiguous(memory_format=CL)
    weight = (randn((oc, c, k, k), torch.float16) / 12).contiguous(memory_format=CL)
    b = randn((oc,), torch.float16)
    y = elutriton.conv2d_bias_elu(x, weight, b, stride=2, padding=1)  # stride 2: 4x4 pixels
    assert_close(y, F.elu(F.conv2d(x.double(), weight.double(), b.double(), 2, 1)),
                 tolerances=GEMM_TOLERANCES)
    elutriton.conv2d_bias_elu(x.contiguous(), weight.contiguous(), b, padding=1)  # NCHW
    groups = randn((oc, c // 2, k, k), torch.float16).contiguous(memory_format=CL)
    elutriton.conv2d_bias_elu(x, groups, b, padding=1, groups=2)
    elutriton.conv2d_bias_elu(x.double(), weight.double(), b.double(), padding=1)  # fp64
    assert table.launched == []
    # C = 12 halfs = 24 bytes per pixel: not a multiple of 16, never planned
    assert not conv2d_tma.conv_tma_eligible(torch.float16, False, 12, 24, 3, 3, [1, 1], 1)
    assert conv2d_tma.conv_tma_eligible(torch.float16, False, 16, 24, 3, 3, [1, 1], 1)
    assert not conv2d_tma.conv_tma_eligible(torch.float32, False, 16, 24, 3, 3, [1, 1], 1)


def test_a_misaligned_pointer_falls_back_at_the_call(table):
    n, c, h, w, oc, k = 1, 16, 6, 6, 16, 3
    table({key("float16", "None", n * h * w, oc, c, k): entry("16bit", oc, c)})
    storage = randn((n * c * h * w + 1,), torch.float16)
    x = storage[1:].view(n, h, w, c).permute(0, 3, 1, 2)  # channels_last, 2 bytes off
    assert x.is_contiguous(memory_format=CL) and x.data_ptr() % 16
    weight = (randn((oc, c, k, k), torch.float16) / 12).contiguous(memory_format=CL)
    b = randn((oc,), torch.float16)
    y = elutriton.conv2d_bias_elu(x, weight, b, padding=1)
    assert table.launched == [False]
    assert_close(y, reference(x, weight, b, 1, 1), tolerances=GEMM_TOLERANCES)


@pytest.mark.parametrize("fields,bad,reason", [
    (("float16", "None", 64, 32, 32, 3, 3, 2), None, "groups-1"),
    (("float64", "None", 64, 32, 32, 3, 3, 1), None, "tensor-core classes"),
    (("float32", "ieee", 64, 32, 32, 3, 3, 1), None, "tensor-core classes"),
    (("float16", "None", 64, 32, 32, 3, 3, 1), dict(TILE_H=3), "not among"),
    (("float16", "None", 64, 32, 32, 3, 3, 1), dict(BLOCK_M=64), "expected"),
])
def test_table_entries_are_validated(fields, bad, reason):
    assert_entry_validated("conv2d_tma", fields, entry("16bit", 32, 32), bad, reason,
                           key("float16", "None", 64, 32, 32, 3))


def test_the_tuner_sweeps_it_for_eligible_convs_and_writes_a_loadable_table(tmp_path):
    from elutriton.tuner.sweeps import sweep_conv_tma
    from perf import tune
    from perf.shapes import ConvShape, LinearShape
    measure, calls = counting_measure()
    best, ms = sweep_conv_tma(tune.layer_call(ConvShape("c3", 2, 16, 6, 6, 24, 3), "float16",
                                              False), DEVICE, measure)
    assert best in [entry("16bit", 24, 16, i)
                    for i in range(len(conv2d_tma.conv_tma_candidates("16bit", 24, 16)))]
    assert ms == min(1.0 / n for n in range(1, len(calls) + 1))
    for shape, dtype in ((ConvShape("s2", 2, 16, 6, 6, 24, 3, 2), "float16"),
                         (ConvShape("c12", 2, 12, 6, 6, 24, 3), "float16"),
                         (ConvShape("c3", 2, 16, 6, 6, 24, 3), "float32"),
                         (LinearShape("l", 64, 64, 32), "float16")):
        assert sweep_conv_tma(tune.layer_call(shape, dtype, False), DEVICE,
                              measure) == (None, None)
    standin = [] if DEVICE == "cuda" else ["--cpu-standin"]
    path = tune.main(standin + ["--conv", "2,16,6,6,24,3", "--dtypes", "float16", "--out",
                                str(tmp_path)])
    raw = json.loads(path.read_text())
    assert "conv2d_tma" in raw
    assert not tuning.TunedTable(raw).rejected
