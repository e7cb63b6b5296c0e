"""The perf harness: traffic model, static kernel report, measured path (CPU stand-in),
no-GPU path, and the tuner with its tables. Timings here mean nothing; code paths must run."""
import csv
import json
import math
import os

import pytest
import torch

import elutriton
import elutriton.kernels.conv2d as conv_kernels
from perf import bench, kernel_report, traffic, tune
from perf.shapes import (SHAPE_SETS, TINY_SETS, ConvShape, ElementwiseShape, LinearShape,
                         elu_cifar_layers)
from tests.reference import DEVICE, GEMM_TOLERANCES, assert_close


def test_shape_sets_match_the_elu_paper_network():
    layers = elu_cifar_layers(batch=100)
    assert len(layers) == 11
    assert [(l.oc, l.k) for l in layers] == [
        (192, 5), (192, 1), (240, 3), (240, 1), (260, 2), (260, 1), (280, 2), (280, 1), (300, 2),
        (300, 1), (100, 1)]
    assert layers[0].h == 32 and layers[1].h == 16 and layers[-1].h == 1
    # shape names key the measured rows and the tuned tables: unique across every set
    names = [s.name for shapes in SHAPE_SETS.values() for s in shapes]
    assert len(names) == len(set(names))


def test_traffic_model_counts_passes():
    s = 2  # fp16 bytes
    eltwise = ElementwiseShape("e", rows=1000, channels=64)
    n = 1000 * 64
    assert traffic.minimal_bytes(eltwise, "fp16") == (2 * n + 64) * s
    assert traffic.pipeline_bytes(eltwise, "fp16", "eager") == (4 * n + 64) * s  # add + elu
    conv = ConvShape("c", n=2, c=3, h=8, w=8, oc=4, k=3)
    x, w, y = 2 * 3 * 64 * s, (4 * 3 * 9 + 4) * s, 2 * 4 * 64 * s
    assert traffic.pipeline_bytes(conv, "fp16", "fused") == x + w + y
    assert traffic.pipeline_bytes(conv, "fp16", "eager") == x + w + 3 * y
    assert traffic.pipeline_bytes(conv, "fp16", "eager", backward=True) == x + w + 7 * y
    assert traffic.pipeline_bytes(conv, "fp16", "fused", backward=True) == x + w + 4 * y
    assert traffic.flops(conv) == 2 * 2 * 64 * 4 * 3 * 9
    linear = LinearShape("l", 4096, 2048, 2048)
    h100 = traffic.DEVICES["H100-SXM"]
    # compute-bound GEMM: the fused time is the FLOP time plus nothing
    fused = traffic.roofline_seconds(linear, "fp16", "fused", h100)
    assert math.isclose(fused, 2 * 4096 * 2048 * 2048 / h100.tensor_flops)
    rows = traffic.model_rows([conv, eltwise], ["fp16"], h100)
    assert all(r["predicted_speedup_vs_eager"] >= 1.0 for r in rows if r["pipeline"] == "fused")
    assert all(k.startswith(("predicted_", "shape", "dtype", "pipeline", "device")) for k in rows[0])


def test_occupancy_model():
    assert kernel_report.occupancy(90, 32, 0, 4) == 64
    assert kernel_report.occupancy(90, 255, 0, 4) == 8        # 256 regs/thread -> 2 blocks
    assert kernel_report.occupancy(80, 64, 100_000, 4) == 4   # shared memory bound: 1 block
    assert kernel_report.occupancy(90, 128, 0, 8) == 16


def test_kernel_report_compiles_and_reads_cubin(tmp_path):
    records = kernel_report.main(["--out", str(tmp_path), "--arch", "90", "--kernels",
                                  "bias_elu_forward", "--jobs", "2"])
    assert records and all(r["ok"] for r in records), [r.get("problems") for r in records]
    for r in records:
        assert r["registers"] > 0 and r["spill_bytes"] == 0
        assert r["max_load_bits"] == 128 and r["max_store_bits"] == 128
        assert set(r) >= {"kernel", "arch", "dtype", "config", "registers", "spill_bytes",
                          "shared_bytes", "max_load_bits", "max_store_bits", "tensor_core_ops",
                          "occupancy"}
    saved = json.loads((tmp_path / "kernel_report.json").read_text())
    assert len(saved) == len(records)
    assert "| bias_elu_forward | sm_90 |" in (tmp_path / "kernel_report.md").read_text()


def test_measured_path_runs_with_cpu_standin(tmp_path):
    rows = bench.main(["--cpu-standin", "--sets", "tiny", "--compile-modes", "none",
                       "--dtypes", "fp32", "--out", str(tmp_path)])
    out = tmp_path / "cpu-standin"
    providers = {r["provider"] for r in rows}
    assert {"elutriton", "eager", "cudnn conv only", "cublas linear only",
            "copy (limit)"} <= providers
    assert {r["direction"] for r in rows} == {"fwd", "fwd+bwd", "fwd+bwd_params"}
    for provider in ("elutriton, cuDNN backward", "elutriton, Triton backward"):
        backward_rows = [r for r in rows if r["provider"] == provider]
        assert {r["direction"] for r in backward_rows} == {"fwd+bwd", "fwd+bwd_params"}
        assert {r["op"] for r in backward_rows} == {"conv"}
    assert "ELUTRITON_BACKWARD" not in os.environ  # set around those providers' timings only
    assert {r["layout"] for r in rows if r["op"] == "conv"} == {"channels_last", "nchw"}
    with open(out / "measured.csv") as f:
        assert len(list(csv.DictReader(f))) == len(rows)
    assert list(out.glob("*.png"))
    summary = (out / "summary.md").read_text()
    assert "CPU stand-in" in summary and "Predicted" not in summary
    assert "### Backward alone" in summary and "| conv | tiny_conv | fp32 |" in summary
    assert list(out.glob("*_speedup.png"))

    # a second run replaces the rows of its cases and keeps the others
    again = bench.main(["--cpu-standin", "--sets", "tiny", "--compile-modes", "none",
                        "--dtypes", "fp32", "--ops", "linear", "--directions", "fwd",
                        "--out", str(tmp_path)])
    merged = bench.read_measured(out / "measured.csv")
    assert len(merged) == len(rows)
    linear_fwd = [r for r in merged if r["op"] == "linear" and r["direction"] == "fwd"]
    assert sorted(r["median_ms"] for r in linear_fwd) == sorted(r["median_ms"] for r in again)

    # --replot redraws plots and summary from the CSV alone
    for png in out.glob("*.png"):
        png.unlink()
    assert len(bench.main(["--replot", str(out)])) == len(rows)
    assert list(out.glob("*_speedup.png")) and "CPU stand-in" in (out / "summary.md").read_text()


def test_no_gpu_path_writes_predicted_results(tmp_path):
    if torch.cuda.is_available():
        pytest.skip("the no-GPU path runs only without a GPU")
    bench.main(["--out", str(tmp_path), "--report-arch", "90", "--report-kernels",
                "bias_elu_backward", "--host-rounds", "1"])
    out = tmp_path / "no-gpu"
    summary = (out / "summary.md").read_text()
    assert "No GPU on this machine: nothing was measured" in summary
    assert "Predicted (traffic model; not measurements)" in summary
    assert "Interpreter correctness pass\n\npassed" in summary
    with open(out / "predicted_traffic.csv") as f:
        header = next(csv.reader(f))
    assert not any("measured" in h for h in header)
    assert list(out.glob("predicted_*.png"))
    assert (tmp_path / "kernel_report.json").is_file()
    host = (out / "host_overhead_cpu.md").read_text()
    rows = [line for line in host.splitlines() if line.startswith("| conv2d fwd")]
    assert len(rows) == 2 and all("x |" in row for row in rows)  # fwd and fwd+bwd, with ratios


def test_tuner_table_is_used_by_the_launcher(tmp_path, monkeypatch):
    monkeypatch.setenv("ELUTRITON_PATH", "fused")
    # On a GPU the real sweep runs (sm<NN>.json); elsewhere the interpreter stand-in.
    standin = [] if DEVICE == "cuda" else ["--cpu-standin"]
    path = tune.main(standin + ["--sets", "tiny", "--dtypes", "float32", "--out", str(tmp_path)])
    table = json.loads(path.read_text())[conv_kernels.KERNEL_NAME]
    assert table and all(conv_kernels.validate_table_entry(k.split("|"), v) is None
                         and {"BLOCK_M", "BLOCK_N", "BLOCK_K", "num_warps", "num_stages",
                              "SPLIT_K", "SINGLE_K_LOOP"} == set(v)
                         for k, v in table.items())
    monkeypatch.setenv("ELUTRITON_CONFIG_DIR", str(tmp_path))
    hits = []
    real = conv_kernels.tuned_config

    def spy(kernel, key, device):
        cfg = real(kernel, key, device)
        hits.append(cfg is not None)
        return cfg

    monkeypatch.setattr(conv_kernels, "tuned_config", spy)
    shape = TINY_SETS["conv"][0]
    x = torch.randn(shape.n, shape.c, shape.h, shape.w, device=DEVICE)
    w = torch.randn(shape.oc, shape.c, shape.k, shape.k, device=DEVICE) / 8
    b = torch.randn(shape.oc, device=DEVICE)
    y = elutriton.conv2d_bias_elu(x, w, b, padding=shape.padding)
    assert hits == [True]
    expected = torch.nn.functional.elu(torch.nn.functional.conv2d(
        x.double(), w.double(), b.double(), padding=shape.padding))
    assert_close(y, expected, tolerances=GEMM_TOLERANCES)
    elutriton.conv2d_bias_elu(x[:1], w, b)      # a shape far from the table: default config
    assert hits == [True, False]


def test_host_table_is_rewritten_only_beyond_noise():
    from perf import host_overhead
    rows = {"conv2d fwd": (12.0, 8.0, 1.50), "conv2d fwd+bwd": (100.0, 90.0, 1.11)}
    table = host_overhead.cpu_table(rows, rows)
    assert not host_overhead.changed_beyond_noise(table, table)
    near = {k: (a, e, r * 1.05) for k, (a, e, r) in rows.items()}
    assert not host_overhead.changed_beyond_noise(table, host_overhead.cpu_table(near, rows))
    far = dict(rows, **{"conv2d fwd": (15.0, 8.0, 1.80)})
    assert host_overhead.changed_beyond_noise(table, host_overhead.cpu_table(far, rows))
    fewer = {"conv2d fwd": rows["conv2d fwd"]}
    assert host_overhead.changed_beyond_noise(table, host_overhead.cpu_table(fewer, fewer))


def test_path_tuner_writes_a_choice_per_shape_dtype_and_layout_that_the_ops_follow(
        tmp_path, monkeypatch):
    monkeypatch.delenv("ELUTRITON_PATH", raising=False)
    standin = [] if DEVICE == "cuda" else ["--cpu-standin"]
    path = tune.main(standin + ["--paths", "--sets", "tiny", "--dtypes", "float32",
                                "--out", str(tmp_path)])
    paths = json.loads(path.read_text())["paths"]
    assert set(paths) == {"conv2d_bias_elu/channels_last", "conv2d_bias_elu/nchw",
                          "linear_bias_elu"}
    assert all(len(v) == 1 and set(v.values()) <= {"fused", "library"} for v in paths.values())
    assert "ELUTRITON_PATH" not in os.environ  # the tuner put it back
    # flip every measured choice to the opposite of the default rule; the op must follow it
    for section, entries in paths.items():
        for key in entries:
            entries[key] = "fused" if section != "conv2d_bias_elu/channels_last" else "library"
    path.write_text(json.dumps({"paths": paths}))
    monkeypatch.setenv("ELUTRITON_CONFIG_DIR", str(tmp_path))
    from elutriton.ops import library_path
    chosen = []
    real = library_path.choose_path
    monkeypatch.setattr("elutriton.ops.conv2d.choose_path",
                        lambda *a: chosen.append(real(*a)) or chosen[-1])
    monkeypatch.setattr("elutriton.ops.linear.choose_path",
                        lambda *a: chosen.append(real(*a)) or chosen[-1])
    shape = TINY_SETS["conv"][0]
    x = torch.randn(shape.n, shape.c, shape.h, shape.w, device=DEVICE)
    w = torch.randn(shape.oc, shape.c, shape.k, shape.k, device=DEVICE) / 8
    b = torch.randn(shape.oc, device=DEVICE)
    for layout in (torch.contiguous_format, torch.channels_last):
        xl, wl = x.contiguous(memory_format=layout), w.contiguous(memory_format=layout)
        tolerances = GEMM_TOLERANCES  # TF32 is off in tests (conftest)
        assert_close(elutriton.conv2d_bias_elu(xl, wl, b, padding=shape.padding),
                     torch.nn.functional.elu(torch.nn.functional.conv2d(
                         x.double(), w.double(), b.double(), padding=shape.padding)),
                     tolerances=tolerances)
    lin = TINY_SETS["linear"][0]
    elutriton.linear_bias_elu(torch.randn(lin.m, lin.k, device=DEVICE),
                              torch.randn(lin.n, lin.k, device=DEVICE), None)
    elutriton.linear_bias_elu(torch.randn(lin.m, lin.k, device=DEVICE),
                              torch.randn(lin.n, lin.k, device=DEVICE),
                              torch.randn(lin.n, device=DEVICE))
    assert chosen == ["fused", "library", "library", "fused"]  # no bias: another key


def test_tuner_takes_a_users_own_shapes_and_rejects_malformed_ones(tmp_path, capsys):
    standin = [] if DEVICE == "cuda" else ["--cpu-standin"]
    path = tune.main(standin + ["--conv", "2,3,6,6,8,3", "--linear", "4,16,8", "--dtypes",
                                "float32", "--out", str(tmp_path)])
    entries = json.loads(path.read_text())[conv_kernels.KERNEL_NAME]
    pixels = {int(key.split("|")[2]) for key in entries}
    assert pixels == {2 * 6 * 6, 4}  # the conv's output pixels and the linear's rows
    tune.main(standin + ["--paths", "--conv", "2,3,6,6,8,3,2", "--dtypes", "float32",
                         "--out", str(tmp_path)])
    paths = json.loads(path.read_text())["paths"]
    assert {int(k.split("|")[2]) for k in paths["conv2d_bias_elu/nchw"]} == {2 * 3 * 3}
    for bad in (["--conv", "2,3,6,6"], ["--conv", "2,3,6,6,8,x"], ["--linear", "4,0,8"]):
        with pytest.raises(SystemExit):
            tune.main(standin + bad + ["--out", str(tmp_path)])
        assert "expected" in capsys.readouterr().err


def test_backward_tuner_writes_both_sections_and_the_backward_follows_them(tmp_path,
                                                                         monkeypatch):
    monkeypatch.delenv("ELUTRITON_BACKWARD", raising=False)
    standin = [] if DEVICE == "cuda" else ["--cpu-standin"]
    path = tune.main(standin + ["--backward", "--conv", "2,3,6,6,8,3", "2,4,6,6,8,3,1,2",
                                "--dtypes", "float32", "--out", str(tmp_path)])
    paths = json.loads(path.read_text())["paths"]
    assert set(paths) == {"conv2d_bias_elu/backward", "conv2d_bias_elu/backward_params"}
    for entries in paths.values():  # the grouped conv (not Triton's) gets no entry
        assert [int(k.split("|")[2]) for k in entries] == [2 * 6 * 6]
        assert set(entries.values()) <= {"triton", "cudnn"}
    assert "ELUTRITON_BACKWARD" not in os.environ  # the tuner put it back
    # write the opposite of the default rule (Triton for 3 channels): the backward follows
    for entries in paths.values():
        for key in entries:
            entries[key] = "cudnn"
    path.write_text(json.dumps({"paths": paths}))
    monkeypatch.setenv("ELUTRITON_CONFIG_DIR", str(tmp_path))
    from elutriton.ops import conv_weight_grad
    used = []
    real = conv_weight_grad.plan_conv2d_weight_grad
    monkeypatch.setattr(conv_weight_grad, "plan_conv2d_weight_grad",
                        lambda *a: used.append(a) or real(*a))
    x = torch.randn(2, 3, 6, 6, device=DEVICE).contiguous(memory_format=torch.channels_last)
    w = torch.randn(8, 3, 3, 3, device=DEVICE).contiguous(memory_format=torch.channels_last)
    b = torch.randn(8, device=DEVICE)
    for input_grad in (False, True):
        leaves = [t.detach().requires_grad_(t is not x or input_grad) for t in (x, w, b)]
        elutriton.conv2d_bias_elu(*leaves, padding=1).sum().backward()
    assert used == []
    x10 = torch.randn(10, 3, 6, 6, device=DEVICE)  # 5x the tabled pixels: beyond its bucket
    elutriton.conv2d_bias_elu(x10, w.detach().requires_grad_(), b, padding=1).sum().backward()
    assert len(used) == 1  # the rule: Triton


def test_summary_shows_each_backward_alone():
    from perf.summary import backward_table

    def row(direction, provider, ms):
        return dict(op="conv", shape="stem", dtype="fp16", layout="channels_last", tf32="off",
                    method="do_bench_cudagraph", direction=direction, provider=provider,
                    median_ms=ms)
    rows = [row("fwd", "elutriton", 1.0), row("fwd", "eager", 1.25),
            row("fwd+bwd", "elutriton", 3.5), row("fwd+bwd", "eager", 4.0),
            row("fwd+bwd", "elutriton, cuDNN backward", 5.0),
            row("fwd+bwd_params", "elutriton, Triton backward", 2.0)]
    lines = backward_table(rows)
    assert lines[2] == "| conv | stem | fp16 | channels_last | fwd+bwd | graph | 2.5000 | " \
                       "2.7500 | 4.0000 |  |"
    assert lines[3] == "| conv | stem | fp16 | channels_last | fwd+bwd_params | graph |  |  " \
                       "|  | 1.0000 |"
    assert len(lines) == 4
    assert backward_table([r for r in rows if r["direction"] != "fwd"]) == []  # no forward


def test_nchw_probe_compiles_each_config_for_both_layouts_and_tabulates_them(tmp_path):
    from perf import kernel_specs
    jobs = kernel_specs.all_jobs([90], None, str(tmp_path), kernel_specs.PROBE_SOURCES)
    variants = {j["variant"] for j in jobs}
    assert variants == {f"{layer}_{layout}" for layer in kernel_specs.NCHW_PROBE_LAYERS
                        for layout in ("nhwc", "nchw")}
    specs = list(kernel_specs.nchw_probe_jobs())
    nchw = next(s for s in specs if s["variant"] == "conv3x3_nchw")["args"]
    assert (nchw["stride_xw"], nchw["stride_xc"], nchw["stride_yw"]) == (1, 56 * 56, 1)
    nhwc = next(s for s in specs if s["variant"] == "conv3x3_nhwc")["args"]
    assert (nhwc["stride_xc"], nhwc["stride_xw"]) == (1, 64)

    def record(layout, regs, spill):
        return dict(kernel="conv2d_bias_elu_nchw_probe", arch=90, dtype="fp16",
                    variant=f"conv3x3_{layout}", config={"BLOCK_M": 64}, registers=regs,
                    spill_bytes=spill, max_load_bits=128, max_store_bits=16, ok=not spill)
    kernel_report.nchw_probe_markdown([record("nhwc", 100, 0), record("nchw", 255, 64)],
                                      tmp_path / "probe.md")
    text = (tmp_path / "probe.md").read_text()
    assert "| sm_90 | fp16 | conv3x3 | BLOCK_M=64 | 100 / 0 / 128 / 16 | 255 / 64 / 128 / 16 |" \
        in text
    assert "NHWC 0 of 1, NCHW 1 of 1" in text


def test_max_autotune_baseline_leaves_cuda_graphs_to_the_graph_timer(monkeypatch):
    """Under the CUDA-graph timer the max-autotune baseline must not record graphs of its own
    (they cannot replay inside the timer's capture); elsewhere it is the mode a user runs."""
    from perf import baselines
    modes = []
    monkeypatch.setattr(baselines.torch, "compile",
                        lambda fn, mode=None: modes.append(mode) or fn)
    for graph_timer in (False, True):
        for factory in (baselines.conv_providers, baselines.linear_providers,
                        baselines.bias_elu_providers):
            factory(("default", "max-autotune"), graph_timer)
    assert modes == [None, "max-autotune"] * 3 + [None, "max-autotune-no-cudagraphs"] * 3


def test_the_tuners_choices_are_timed_on_rotating_inputs_like_the_bench():
    """A path or backward choice measured on one input set that sits in L2 can disagree with
    the bench, which rotates inputs (perf/measure.py): the tuner must time the same way."""
    from elutriton.tuner import sweeps
    from perf import measure
    for shape, expected_copies in ((LinearShape("small", 1024, 1024, 2048), 8),
                                   (LinearShape("large", 32768, 4096, 4096), 1),
                                   (ConvShape("conv", 8, 64, 32, 32, 96, 3, 2, 2), 8)):
        made = []

        def make():
            made.append(len(made))
            return lambda i=made[-1]: i
        call = sweeps.on_rotating_inputs(make, tune.layer_call(shape, "float16", False))
        assert len(made) == expected_copies == measure.copies_needed(
            traffic.minimal_bytes(shape, "fp16"))
        assert sorted(call() for _ in range(2 * len(made))) == sorted(2 * made)


def test_a_models_fused_layers_as_calls_and_the_tuner_taking_them(tmp_path, monkeypatch):
    from perf import models
    from perf.shapes import elu_cifar_layers
    monkeypatch.setattr(torch.backends.cudnn, "allow_tf32", True)
    calls = tune.model_calls("elu_cifar", ["float16"])
    # the ELU paper's network at batch 128: every layer of the shape set, the 2x2 'same'
    # convs as the op runs them (the input padded by one on the bottom and right, then no
    # padding), each distinct call once
    ours = {(c.n, c.c, c.h, c.w, c.out_channels, c.kernel[0], c.padding[0]) for c in calls}
    paper = {(s.n, s.c, s.h, s.w, s.oc, s.k, s.padding) for s in elu_cifar_layers(batch=128)}
    padded = {(n, c, h + (k == 2), w + (k == 2), oc, k, p) for n, c, h, w, oc, k, p in paper}
    assert ours == padded and len(calls) == 11
    assert all(c.dtype == torch.float16 and c.groups == 1 and c.has_bias for c in calls)
    rn50 = tune.model_calls("resnet50_elu", ["float32"])
    assert len(rn50) == 16  # inference: every conv whose BN folds, distinct
    stem = [c for c in rn50 if c.c == 3]
    assert [(c.n, c.h, c.w, c.out_channels, c.kernel, c.stride, c.padding) for c in stem] == [
        (64, 224, 224, 64, (7, 7), (2, 2), (3, 3))]
    mlp = tune.model_calls("selu_mlp", ["float32", "bfloat16"])
    assert {(c.rows, c.in_features, c.out_features, c.dtype) for c in mlp} == {
        (1024, 784, 2048, t) for t in (torch.float32, torch.bfloat16)} | {
        (1024, 2048, 2048, t) for t in (torch.float32, torch.bfloat16)}
    # the tuner on a model's layers (tiny here: the interpreter's stand-in timer)
    real = models.fused_meta_model
    monkeypatch.setattr(models, "fused_meta_model", lambda name: real(name, tiny=True))
    standin = [] if DEVICE == "cuda" else ["--cpu-standin"]
    path = tune.main(standin + ["--paths", "--models", "selu_mlp", "--dtypes", "float32",
                                "--out", str(tmp_path)])
    paths = json.loads(path.read_text())["paths"]["linear_bias_elu"]
    tiny_mlp = tune.model_calls("selu_mlp", ["float32"])
    assert {k for k in paths} == {c.key for c in tiny_mlp}


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
@pytest.mark.parametrize("stride, groups, bias", [(1, 1, True), (2, 2, False)])
def test_nchw_direct_provider_reads_and_writes_nchw_without_a_conversion(dtype, stride, groups,
                                                                         bias, monkeypatch):
    """The bench's NCHW-direct provider (issue 10's question: is the op's conversion pass
    worth it?) runs the fused kernel on the NCHW input as it is and returns an NCHW output
    equal to float64 torch; it copies no input (only the weight, once, in the factory)."""
    from perf.baselines import conv_providers, nchw_direct
    from perf.results_io import NCHW_DIRECT
    assert conv_providers(())[NCHW_DIRECT] is nchw_direct
    monkeypatch.setattr(torch.backends.cudnn, "allow_tf32", False)
    x = torch.randn(2, 6, 9, 7, dtype=torch.float64, device=DEVICE).to(dtype)
    w = (torch.randn(4, 6 // groups, 3, 3, dtype=torch.float64, device=DEVICE) / 4).to(dtype)
    b = torch.randn(4, dtype=torch.float64, device=DEVICE).to(dtype) if bias else None
    call = nchw_direct(x, w, b, stride, 1, groups)
    copies = []
    real_contiguous = torch.Tensor.contiguous
    monkeypatch.setattr(torch.Tensor, "contiguous",
                        lambda t, *a, **k: copies.append(t.shape) or real_contiguous(t, *a, **k))
    y = call()
    assert not copies
    assert y.is_contiguous() and y.dtype == dtype
    expected = torch.nn.functional.elu(torch.nn.functional.conv2d(
        x.double(), w.double(), None if b is None else b.double(), stride, 1, 1, groups))
    assert_close(y, expected, dtype, GEMM_TOLERANCES)


def test_nchw_direct_rows_only_for_nchw_forward(tmp_path):
    from perf.results_io import NCHW_DIRECT
    rows = bench.main(["--cpu-standin", "--sets", "tiny", "--ops", "conv", "--compile-modes",
                       "none", "--dtypes", "fp32", "--directions", "fwd", "fwd+bwd",
                       "--out", str(tmp_path)])
    direct = [r for r in rows if r["provider"] == NCHW_DIRECT]
    assert direct and {(r["layout"], r["direction"]) for r in direct} == {("nchw", "fwd")}
    assert "x NCHW direct" in (tmp_path / "cpu-standin" / "summary.md").read_text()


def test_gpu_host_cases_run_and_agree():
    """Every callable of the GPU host table runs (without a GPU on CPU tensors, through the
    interpreter), the columns are the table's, and the calls compute eager PyTorch's result
    (fp16, both rounded: twice the GEMM tolerance; the launcher writes its own output)."""
    from perf import host_overhead
    twice = {torch.float16: {k: 2 * v for k, v in GEMM_TOLERANCES[torch.float16].items()}}
    for name, fns in host_overhead.cases(DEVICE):
        assert set(fns) <= set(host_overhead.GPU_COLUMNS) and "eager" in fns
        expected = fns["eager"]().double()
        for column, fn in fns.items():
            out = fn()
            if column != "launcher":
                assert_close(out, expected, tolerances=twice)
