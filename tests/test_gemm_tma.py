"""The tensor-descriptor (TMA) GEMM kernel (kernels/gemm_tma.py) against float64 torch: linear
and 1x1 convolutions through the public ops when a tuned ``gemm_tma`` entry asks for it, odd
sizes (tiles past every edge), the shapes and pointers it must leave to the implicit-GEMM
kernel, and the table validation."""
import json

import pytest
import torch
import torch.nn.functional as F

import elutriton
from elutriton.kernels import gemm_tma, tuning
from tests.reference import DEVICE, GEMM_TOLERANCES, assert_close, randn
from tests.tma_cases import assert_entry_validated, counting_measure, spied_table

pytestmark = pytest.mark.skipif(not gemm_tma.tma_supported(torch.device(DEVICE)),
                                reason="no tensor descriptors on this device")


def entry(cls="16bit", n=64, k=64):
    config = gemm_tma.tma_candidates(cls, n, k)[-1]
    return dict(config.kwargs, num_warps=config.num_warps, num_stages=config.num_stages)


def key(dtype, precision, rows, cols, k, bias=True):
    return tuning.shape_key(dtype, precision, rows, cols, k, 1, 1, 1, bias)


@pytest.fixture
def table(tmp_path, monkeypatch):
    """Write a gemm_tma section for the given keys; ``table.launched`` lists the TMA calls."""
    return spied_table(tmp_path, monkeypatch, gemm_tma, "plan_gemm_bias_elu_tma", "gemm_tma")


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32])
def test_linear_runs_the_tma_kernel_where_the_table_says(dtype, table, monkeypatch):
    monkeypatch.setattr(torch.backends.cuda.matmul, "allow_tf32", dtype == torch.float32)
    rows, k, n = 100, 72, 40  # no dimension a multiple of the 64-wide tiles
    cls, precision = ("tf32", "tf32") if dtype == torch.float32 else ("16bit", "None")
    table({key(str(dtype).split(".")[1], precision, rows, n, k): entry(cls, n, k)})
    x = randn((rows, k), dtype)
    w = randn((n, k), dtype) / 8
    b = randn((n,), dtype)
    y = elutriton.linear_bias_elu(x, w, b, 0.5, 2.0, 0.7)
    assert table.launched == [True]
    expected = torch.ops.aten.elu(F.linear(x.double(), w.double(), b.double()), 0.5, 2.0, 0.7)
    if dtype == torch.float32:
        assert_within_tf32_bound(y, expected, x, w, scale=2.0 * 0.7)
    else:
        assert_close(y, expected, tolerances=GEMM_TOLERANCES)
    # a batch 3x larger is in the entry's bucket; no bias is another key (not tabled)
    elutriton.linear_bias_elu(randn((3 * rows, k), dtype), w, b)
    elutriton.linear_bias_elu(x, w, None)
    assert table.launched == [True, True]


def assert_within_tf32_bound(y, expected, x, w, scale):
    """TF32 products: the tensor cores keep 10 of each fp32 operand's 23 mantissa bits and may
    truncate rather than round the operands they read from shared memory (on an H100, 6 of 4000
    outputs here were off by up to 9e-3, over the fixed 5e-3 tolerance this test had), so each
    product is off by up to 2 * 2^-10 of |x_k w_k|. The pre-activation error is then at most
    that times sum_k |x_k w_k| (plus fp32 accumulation), and the ELU's slope is at most
    ``scale`` (alpha <= 1 here): an element-wise worst-case bound, far below the error of a
    dropped K block."""
    magnitude = x.double().abs() @ w.double().abs().t()
    bound = scale * magnitude * (2 * 2.0 ** -10 + x.shape[1] * 2.0 ** -24) + 1e-6
    error = (y.double() - expected).abs()
    assert bool((error <= bound).all()), (error - bound).max()


def test_pointwise_conv_runs_it_and_other_convs_do_not(table):
    n, c, h, w_, oc = 2, 32, 5, 7, 48
    table({key("float16", "None", n * h * w_, oc, c): entry("16bit", oc, c),
           key("float16", "None", n * 3 * 4, oc, c): entry("16bit", oc, c)})
    x = randn((n, c, h, w_), torch.float16).contiguous(memory_format=torch.channels_last)
    weight = (randn((oc, c, 1, 1), torch.float16) / 6).contiguous(
        memory_format=torch.channels_last)
    b = randn((oc,), torch.float16)
    y = elutriton.conv2d_bias_elu(x, weight, b)
    assert table.launched == [True]
    assert y.is_contiguous(memory_format=torch.channels_last)
    assert_close(y, F.elu(F.conv2d(x.double(), weight.double(), b.double())),
                 tolerances=GEMM_TOLERANCES)
    # the same GEMM key reached with stride 2 (3x4 output pixels) or padding: not a plain GEMM
    elutriton.conv2d_bias_elu(x, weight, b, stride=2)
    y_padded = elutriton.conv2d_bias_elu(x, weight, b, padding=1)
    assert table.launched == [True]
    assert_close(y_padded, F.elu(F.conv2d(x.double(), weight.double(), b.double(), padding=1)),
                 tolerances=GEMM_TOLERANCES)
    # NCHW tensors: an NCHW output is no [pixels, channels] matrix
    elutriton.conv2d_bias_elu(x.contiguous(), weight.contiguous(), b)
    assert table.launched == [True]


def test_misaligned_pointers_and_strides_fall_back_to_the_pointer_kernel(table):
    rows, k, n = 64, 64, 32
    table({key("float16", "None", rows, n, k): entry("16bit", n, k),
           key("float16", "None", rows, n, k - 4): entry("16bit", n, k - 4)})
    w = randn((n, k), torch.float16) / 8
    b = randn((n,), torch.float16)
    storage = randn((rows * k + 1,), torch.float16)
    x = storage[1:].view(rows, k)  # 2 bytes past a 16-byte boundary
    y = elutriton.linear_bias_elu(x, w, b)
    assert table.launched == [False]  # planned, refused at the call, pointer kernel ran
    assert_close(y, F.elu(F.linear(x.double(), w.double(), b.double())),
                 tolerances=GEMM_TOLERANCES)
    # K = 60 halfs = 120 bytes per row: not a multiple of 16, never planned
    x60 = randn((rows, k - 4), torch.float16)
    elutriton.linear_bias_elu(x60, w[:, :k - 4].contiguous(), b)
    assert table.launched == [False]


@pytest.mark.parametrize("fields,bad,reason", [
    (("float16", "None", 64, 64, 64, 3, 3, 1), None, "1x1, groups-1"),
    (("float64", "None", 64, 64, 64, 1, 1, 1), None, "tensor-core classes"),
    (("float32", "ieee", 64, 64, 64, 1, 1, 1), None, "tensor-core classes"),
    (("float16", "None", 64, 64, 64, 1, 1, 1), dict(BLOCK_M=100), "not among"),
    (("float16", "None", 64, 64, 64, 1, 1, 1), dict(SPLIT_K=2), "expected"),
])
def test_table_entries_are_validated(fields, bad, reason):
    assert_entry_validated("gemm_tma", fields, entry("16bit", 64, 64), bad, reason,
                           key("float16", "None", 64, 64, 64))


def test_the_tuner_sweeps_tma_configs_only_for_plain_gemms(tmp_path):
    from elutriton.tuner.sweeps import sweep_tma
    from perf import tune
    from perf.shapes import ConvShape, LinearShape
    measure, calls = counting_measure()

    def call(shape, dtype):
        return tune.layer_call(shape, dtype, False)
    best, ms = sweep_tma(call(LinearShape("l", 64, 64, 32), "float16"), DEVICE, measure)
    assert best in [entry("16bit", 32, 64)] + [
        dict(c.kwargs, num_warps=c.num_warps, num_stages=c.num_stages)
        for c in gemm_tma.tma_candidates("16bit", 32, 64)]
    assert ms == min(1.0 / n for n in range(1, len(calls) + 1))
    assert sweep_tma(call(ConvShape("c3", 2, 32, 6, 6, 48, 3), "float16"), DEVICE,
                     measure) == (None, None)
    assert sweep_tma(call(ConvShape("c1s2", 2, 32, 6, 6, 48, 1, 2), "float16"), DEVICE,
                     measure) == (None, None)
    assert sweep_tma(call(LinearShape("l64", 64, 64, 32), "float64"), DEVICE,
                     measure) == (None, None)
    # a whole tuner run: whatever it wrote loads without rejections
    standin = [] if DEVICE == "cuda" else ["--cpu-standin"]
    path = tune.main(standin + ["--linear", "64,64,32", "--conv", "2,32,6,6,48,1",
                                "--dtypes", "float16", "--out", str(tmp_path)])
    raw = json.loads(path.read_text())
    assert "gemm_tma" in raw
    loaded = tuning.TunedTable(raw)
    assert not loaded.rejected
