"""perf/models.py: the whole-model benchmark's code paths at tiny size (not its timings)."""
import csv

import pytest
import torch

import elutriton
from perf import models


def test_tiny_model_benchmark_writes_rows_table_and_plot(tmp_path):
    rows = models.main(["--tiny", "--dtypes", "fp32", "--modes", "unfused eager", "fused eager",
                        "--steps", "1", "--out", str(tmp_path)])
    assert {(r["model"], r["task"]) for r in rows} == {
        (m, t) for m in ("elu_cifar", "selu_mlp", "resnet50_elu") for t in ("train", "infer")}
    assert all(r["samples_per_s"] > 0 and r["host_ms"] > 0 for r in rows)
    # on CPU nothing runs after the step returns: its host time is the step's time
    assert all(r["host_ms"] <= r["q80_ms"] * 1.5 for r in rows)
    with open(tmp_path / "models_tiny_cpu.csv") as f:
        assert len(list(csv.DictReader(f))) == len(rows)
    table = (tmp_path / "models_tiny_cpu.md").read_text()
    assert "NOT GPU numbers" in table
    assert "| resnet50_elu | channels_last | infer | fp32 | fused eager |" in table
    assert {r["layout"] for r in rows if r["model"] == "selu_mlp"} == {"-"}
    assert (tmp_path / "models_tiny_cpu.png").is_file()
    # a second run (another lease call) adds its rows and replaces only rows of the same key
    again = models.main(["--tiny", "--models", "selu_mlp", "--tasks", "infer", "--dtypes",
                         "fp32", "--modes", "fused eager", "--steps", "1", "--out", str(tmp_path)])
    with open(tmp_path / "models_tiny_cpu.csv") as f:
        merged = list(csv.DictReader(f))
    assert len(merged) == len(rows)
    replaced = [r for r in merged if (r["model"], r["task"], r["mode"]) ==
                ("selu_mlp", "infer", "fused eager")]
    assert len(replaced) == 1 and float(replaced[0]["median_ms"]) == again[0]["median_ms"]


@pytest.mark.skipif(torch.cuda.is_available(), reason="the no-GPU behaviour of make bench")
def test_without_a_gpu_the_full_run_falls_back_to_tiny_cpu_results(tmp_path):
    rows = models.main(["--models", "selu_mlp", "--tasks", "infer", "--dtypes", "fp32",
                        "--modes", "unfused eager", "--steps", "1", "--out", str(tmp_path)])
    assert len(rows) == 1
    assert "NOT GPU numbers" in (tmp_path / "models_tiny_cpu.md").read_text()
    assert not (tmp_path / "models.csv").exists()


def test_model_benchmark_deadline_stops_before_the_next_row(tmp_path):
    rows = models.main(["--tiny", "--models", "selu_mlp", "--dtypes", "fp32", "--modes",
                        "unfused eager", "fused eager", "--steps", "1", "--deadline-s", "0",
                        "--out", str(tmp_path)])
    assert len(rows) == 1  # the first row starts at t=0; the deadline stops the second


def test_fused_models_compute_what_the_unfused_ones_do():
    for name in ("elu_cifar", "selu_mlp", "resnet50_elu"):
        base, batch, make_batch, image = models.build(name, tiny=True)
        for m in base.modules():  # non-trivial BatchNorm statistics to fold
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.3, 0.3)
                m.running_var.uniform_(0.5, 1.5)
        x, _ = make_batch(batch, "cpu")
        fused, runner = models.prepare(base, "fused eager", "infer", image)
        unfused, _ = models.prepare(base, "unfused eager", "infer", image)
        with torch.no_grad():
            torch.testing.assert_close(runner(x), unfused(x), atol=1e-4, rtol=1e-4)
        _, report = elutriton.fuse(unfused)
        assert report.fused, name  # something of each model was fused
    # ResNet-50-ELU in eval mode: every conv + BN + ELU of the bottlenecks and the stem folds
    base, *_ = models.build("resnet50_elu", tiny=True)
    _, report = elutriton.fuse(base.eval())
    assert len(report.fused) == 1 + 2 * 4  # stem + conv1/conv2 of each of the 4 blocks


def test_loss_curves_of_fused_and_unfused_training_track(tmp_path):
    """Two SGD steps on scikit-learn's bundled digits, the fused model's kernels under the
    interpreter: the losses agree to fp32 rounding, and the plot and CSV are written."""
    from perf import loss_curves
    images, labels = loss_curves.digits("cpu")
    assert images.shape == (1797, 3, 32, 32) and 0 <= images.min() and images.max() <= 1
    assert set(labels.tolist()) == set(range(10))
    losses, gap = loss_curves.main(["--steps", "2", "--batch", "4", "--out", str(tmp_path)])
    assert len(losses["fused"]) == len(losses["unfused"]) == 2
    assert gap < 1e-4 and all(0 < v < 10 for v in losses["fused"])
    assert (tmp_path / "loss_curves_digits.png").is_file()
    with open(tmp_path / "loss_curves_digits.csv") as f:
        assert len(list(csv.reader(f))) == 3


def test_step_profiler_reports_each_mode(tmp_path):
    from perf import profile_step
    report = profile_step.main(["--model", "selu_mlp", "--task", "infer", "--dtype", "fp32",
                                "--modes", "unfused eager", "fused eager", "--steps", "1",
                                "--out", str(tmp_path)])
    assert report.count("## selu_mlp infer fp32") == 2 and "blocking calls per step" in report
    assert "linear" in report  # the op table names the model's ops
    python = profile_step.main(["--model", "selu_mlp", "--task", "infer", "--dtype", "fp32",
                                "--modes", "fused eager", "--steps", "1", "--python",
                                "--out", str(tmp_path)])
    # cProfile sees the fused layer's Python: a warm call goes from its forward to the composite it
    # memoed (nn/layers.py)
    assert "elutriton/nn/layers.py" in python and "linear_composite_call" in python
    assert (tmp_path / "profile_python_selu_mlp_infer_fp32.txt").is_file()


def test_memory_formula_and_its_table_against_measured_peaks():
    base, batch, make_batch, _ = models.build("selu_mlp", tiny=True)
    outputs = []  # independent count: every ELU-family activation output of the unfused model
    for m in base.modules():
        if isinstance(m, (torch.nn.SELU, torch.nn.ELU, torch.nn.CELU)):
            m.register_forward_hook(lambda m, i, o: outputs.append(o.numel() * 4))
    base(make_batch(batch, "cpu")[0])
    expected = sum(outputs) / 2**20
    assert expected > 0
    assert models.formula_saving_mib("selu_mlp", True, "fp32") == pytest.approx(expected)
    assert models.formula_saving_mib("selu_mlp", True, "fp16") == pytest.approx(expected / 2)
    rows = [dict(model="selu_mlp", layout="-", task="train", dtype="fp32", mode=m, peak_mb=p)
            for m, p in (("unfused eager", 10.0), ("fused eager", 7.5), ("fused cudagraphs", 9.0))]
    lines = models.memory_lines(rows, tiny=True)
    assert f"| selu_mlp | - | fp32 | eager | 2.5 | {expected:.1f} |" in lines
    assert not any("cudagraphs" in line for line in lines)  # no unfused peak to compare with


def test_each_row_starts_after_the_previous_rows_model_is_freed(monkeypatch):
    # the models, optimizers and closures of a row form reference cycles: unless they are
    # collected before the next row, they count in its peak memory (the first H100 run's
    # SELU MLP fused rows)
    import gc
    import weakref
    prepared = []
    real = models.prepare

    def prepare(*args):
        assert all(ref() is None for ref in prepared), "an earlier row's model is alive"
        model, runner = real(*args)
        prepared.append(weakref.ref(model))
        return model, runner
    monkeypatch.setattr(models, "prepare", prepare)
    gc.disable()  # the collection must come from the benchmark, not from the interpreter
    try:
        rows = models.run(["selu_mlp"], ["train"], ["fp32"], ["unfused eager", "fused eager",
                                                             "unfused eager"], True, 1, "cpu")
    finally:
        gc.enable()
    assert len(rows) == 3 and len(prepared) == 3


def test_saved_activation_memory_is_measured_and_fusing_saves_about_the_formula(tmp_path):
    from perf import saved_memory
    rows = saved_memory.main(["--tiny", "--models", "elu_cifar", "--out",
                              str(tmp_path / "saved.md")])
    unfused, fused, formula = rows["elu_cifar"]
    assert formula > 0 and fused < unfused
    # the conv layers' z is what fusing drops: the saving is the formula's, within what small
    # saved tensors (biases, autocast copies) add on either side
    assert 0.85 * formula <= unfused - fused <= 1.05 * formula
    assert "| elu_cifar |" in (tmp_path / "saved.md").read_text()


def test_rows_measured_before_host_time_existed_merge_and_print(tmp_path):
    """A results folder from an earlier lease has no host_ms or layout column: a new run's rows
    merge with it (the CSV gains the columns, the old rows stay empty there or take the layout
    the bench ran then) and the table prints."""
    old = dict(model="elu_cifar", task="train", dtype="fp16", mode="unfused eager", batch=128,
               samples_per_s=20437.5, median_ms=6.263, q20_ms=6.204, q80_ms=6.284,
               peak_mb=296.8, timer="cuda sync + wall clock")
    with open(tmp_path / "models_tiny_cpu.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(old))
        writer.writeheader()
        writer.writerow(old)
    rows = models.main(["--tiny", "--models", "selu_mlp", "--tasks", "infer", "--dtypes",
                        "fp32", "--modes", "unfused eager", "--steps", "1", "--out",
                        str(tmp_path)])
    merged = models.read_rows(tmp_path / "models_tiny_cpu.csv")
    assert [r["host_ms"] for r in merged] == [None, rows[0]["host_ms"]]
    table = (tmp_path / "models_tiny_cpu.md").read_text()
    assert ("| elu_cifar | channels_last | train | fp16 | unfused eager | 20437.5 | 1.00 | 6.26 "
            "|  | 297 |") in table


def test_nchw_layout_rows_and_fuse_channels_last_mode(tmp_path):
    """--layouts nchw: the image models run as written (NCHW weights and input), in their own
    rows next to the channels_last ones; "fused-cl" converts the fused model's 4-D weights
    (fuse(channels_last=True)), so its convolutions run channels_last from the first layer on;
    both compute what the unfused model does."""
    base, batch, make_batch, image = models.build("elu_cifar", tiny=True)
    x, _ = make_batch(batch, "cpu")
    unfused, _ = models.prepare(base, "unfused eager", "infer", False)
    fused, _ = models.prepare(base, "fused eager", "infer", False)
    fused_cl, _ = models.prepare(base, "fused-cl eager", "infer", False)
    weights = lambda m: [p for p in m.parameters() if p.dim() == 4]
    assert all(p.is_contiguous() for p in weights(fused))
    assert all(p.is_contiguous(memory_format=torch.channels_last) and not p.is_contiguous()
               for p in weights(fused_cl) if p.shape[2:] != (1, 1))
    with torch.no_grad():
        expected = unfused(x)
        torch.testing.assert_close(fused(x), expected, atol=1e-4, rtol=1e-4)
        torch.testing.assert_close(fused_cl(x), expected, atol=1e-4, rtol=1e-4)

    args = ["--tiny", "--models", "elu_cifar", "selu_mlp", "--tasks", "infer", "--dtypes", "fp32",
            "--steps", "1", "--out", str(tmp_path)]
    first = models.main(args + ["--modes", "unfused eager", "fused eager"])
    rows = models.main(args + ["--layouts", "nchw", "--modes", "unfused eager", "fused eager",
                               "fused-cl eager"])
    assert {(r["model"], r["layout"], r["mode"]) for r in rows} == {
        ("elu_cifar", "nchw", "unfused eager"), ("elu_cifar", "nchw", "fused eager"),
        ("elu_cifar", "nchw", "fused-cl eager"), ("selu_mlp", "-", "unfused eager"),
        ("selu_mlp", "-", "fused eager"), ("selu_mlp", "-", "fused-cl eager")}
    merged = models.read_rows(tmp_path / "models_tiny_cpu.csv")
    # the nchw rows join the channels_last ones; the MLP's rows of the same key are replaced
    assert len(merged) == len(first) + 4
    table = (tmp_path / "models_tiny_cpu.md").read_text()
    assert "| elu_cifar | nchw | infer | fp32 | unfused eager |" in table
    assert "| elu_cifar | channels_last | infer | fp32 | unfused eager |" in table
    nchw_base = next(r for r in rows if (r["model"], r["layout"], r["mode"])
                     == ("elu_cifar", "nchw", "unfused eager"))
    cl_row = next(r for r in rows if r["mode"] == "fused-cl eager" and r["model"] == "elu_cifar")
    ratio = cl_row["samples_per_s"] / nchw_base["samples_per_s"]
    assert (f"| elu_cifar | nchw | infer | fp32 | fused-cl eager | "
            f"{cl_row['samples_per_s']:.1f} | {ratio:.2f} |") in table
