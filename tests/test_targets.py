"""perf/targets.py: each open issue's target checked from a results folder's CSVs: met, not
met, or unmeasured with what is missing; never an estimate."""
import csv
from pathlib import Path

from perf import targets

H100 = Path(__file__).resolve().parents[1] / "perf" / "results" / "NVIDIA_H100_80GB_HBM3"
FIELDS = ["op", "shape", "dtype", "layout", "direction", "provider", "tf32", "median_ms",
          "q20_ms", "q80_ms", "gbps", "tflops", "speedup_vs_eager", "method"]


def by_target(results):
    return {text: (measured, status) for _, text, measured, status in results}


def test_the_committed_h100_results():
    results = by_target(targets.evaluate(H100))
    assert len(results) == len(targets.TARGETS) + len(targets.HOST_TARGETS)
    # that lease's host table had no module columns yet
    assert results[targets.HOST_TARGETS[0][1]][1] == "unmeasured"
    # figures as the README states them from the same CSVs
    assert results[targets.TARGETS[2][1]] == ("18 of 18 layers >= 1.0x (min 1.03x)", "met")
    assert results[targets.TARGETS[8][1]] == ("0.59x", "not met")
    assert results[targets.TARGETS[10][1]] == ("215 vs 297 MB: 0.72x", "met")
    assert results[targets.TARGETS[3][1]][1] == "unmeasured"  # no cuDNN frontend there
    every_layer = results[targets.TARGETS[0][1]]
    assert every_layer[1].startswith("not met") and "linear bf16 fwd min 0.81x" in every_layer[0]
    assert "not measured: conv bf16 nchw fwd" in every_layer[0]


def write_rows(folder, rows):
    with open(folder / "measured.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=FIELDS)
        writer.writeheader()
        for op, shape, dtype, layout, direction, provider, ms in rows:
            writer.writerow(dict(op=op, shape=shape, dtype=dtype, layout=layout,
                                 direction=direction, provider=provider, tf32="on",
                                 median_ms=ms, q20_ms=ms, q80_ms=ms, gbps=1, tflops=1,
                                 speedup_vs_eager="", method=targets.GRAPH))


def every_group(ours_ms):
    rows = []
    for op, dtype, layout, direction in targets.EXPECTED_GROUPS:
        shape = f"{op}_a"
        rows += [(op, shape, dtype, layout, direction, "elutriton", ours_ms),
                 (op, shape, dtype, layout, direction, "eager", 1.0)]
    return rows


def test_layer_targets_met_only_when_every_group_is_measured(tmp_path):
    write_rows(tmp_path, every_group(0.5))  # 2x eager everywhere
    results = by_target(targets.evaluate(tmp_path))
    assert results[targets.TARGETS[0][1]][1] == "met"
    assert results[targets.TARGETS[1][1]][1] == "met"
    write_rows(tmp_path, every_group(0.5)[2:])  # the first group missing
    measured, status = by_target(targets.evaluate(tmp_path))[targets.TARGETS[0][1]]
    assert status == "unmeasured" and "not measured: conv fp16 channels_last fwd" in measured
    write_rows(tmp_path, every_group(0.5)[2:] + [
        ("conv", "conv_a", "fp16", "channels_last", "fwd", "elutriton", 1.25),
        ("conv", "conv_a", "fp16", "channels_last", "fwd", "eager", 1.0)])
    measured, status = by_target(targets.evaluate(tmp_path))[targets.TARGETS[0][1]]
    assert status.startswith("not met") and "conv fp16 channels_last fwd min 0.80x" in measured


def test_backward_target_allows_a_tie_within_noise_and_nothing_more(tmp_path):
    # no forced Triton row: the choice is unknown, so the op counts as having run Triton
    rows = [("conv", "a", "fp16", "channels_last", "fwd+bwd", "elutriton", 1.01),
            ("conv", "a", "fp16", "channels_last", "fwd+bwd", targets.BACKWARD_CUDNN, 1.0)]
    write_rows(tmp_path, rows)
    assert by_target(targets.evaluate(tmp_path))[targets.TARGETS[7][1]][1] == "met"
    rows[0] = rows[0][:-1] + (1.05,)
    write_rows(tmp_path, rows)
    assert by_target(targets.evaluate(tmp_path))[targets.TARGETS[7][1]][1] == "not met"


def test_main_writes_the_table_and_without_a_gpu_or_folder_measures_nothing(tmp_path, capsys):
    write_rows(tmp_path, every_group(0.5))
    targets.main([str(tmp_path)])
    text = (tmp_path / "targets.md").read_text()
    assert "| 10 | every conv/linear layer" in text and "| 11 |" in text
    import torch
    if not torch.cuda.is_available():
        assert targets.main([]) is None
        assert "no GPU here" in capsys.readouterr().out


def test_backward_target_counts_only_layers_that_ran_the_triton_backward(tmp_path):
    """Where the op chose cuDNN its time is the forced cuDNN provider's kernels timed again:
    a 6% difference there is noise, not a slower backward; where it ran Triton's (its time
    nearer the forced Triton one), cuDNN being faster is a miss."""
    target = targets.TARGETS[7][1]
    assert target == "no layer's backward slower than cuDNN's"

    def rows(ours_b):
        return [("conv", "a", "fp16", "channels_last", "fwd+bwd", "elutriton", 1.06),
                ("conv", "a", "fp16", "channels_last", "fwd+bwd", targets.BACKWARD_CUDNN, 1.0),
                ("conv", "a", "fp16", "channels_last", "fwd+bwd", targets.BACKWARD_TRITON, 3.0),
                ("conv", "b", "fp16", "channels_last", "fwd+bwd", "elutriton", ours_b),
                ("conv", "b", "fp16", "channels_last", "fwd+bwd", targets.BACKWARD_CUDNN, 1.0),
                ("conv", "b", "fp16", "channels_last", "fwd+bwd", targets.BACKWARD_TRITON,
                 ours_b)]
    write_rows(tmp_path, rows(0.5))  # b ran Triton, 2x faster than cuDNN
    measured, status = by_target(targets.evaluate(tmp_path))[target]
    assert status == "met" and "1 ran cuDNN's backward" in measured and "2.00x" in measured
    write_rows(tmp_path, rows(1.2))  # b ran Triton, slower than cuDNN
    measured, status = by_target(targets.evaluate(tmp_path))[target]
    assert status == "not met" and "1 slower by more than 2% (min 0.83x)" in measured


def test_channels_last_default_question_from_nchw_rows(tmp_path):
    """Unmeasured without NCHW rows (the committed H100 folder has none); with them, the ratio
    of fuse(channels_last=True) to plain fuse per row, and the answer from the worst one."""
    results = by_target(targets.evaluate(H100))
    assert results[targets.TARGETS[-1][1]][1] == "unmeasured"

    def row(model, mode, per_s, layout="nchw"):
        return dict(model=model, layout=layout, task="infer", dtype="fp16", mode=mode, batch=8,
                    samples_per_s=per_s, median_ms=1.0, q20_ms=1.0, q80_ms=1.0, host_ms=1.0,
                    peak_mb=None, timer="t")
    models = [row("elu_cifar", "fused eager", 100.0), row("elu_cifar", "fused-cl eager", 125.0),
              row("elu_cifar", "fused cudagraphs", 200.0),
              row("elu_cifar", "fused-cl cudagraphs", 190.0),
              row("resnet50_elu", "fused-cl eager", 50.0),  # no plain row: not compared
              row("elu_cifar", "fused eager", 10.0, layout="channels_last")]
    text, status = targets.channels_last_default(models)
    assert status == "met"
    assert text == ("fused-cl / fused: elu_cifar infer fp16 cudagraphs 0.95x; elu_cifar infer "
                    "fp16 eager 1.25x (channels_last loses somewhere: keep it optional)")
    text, _ = targets.channels_last_default(models[:2])
    assert text.endswith("(channels_last wins everywhere: make it the CUDA default)")


def test_nchw_conversion_question_from_the_direct_kernel_rows(tmp_path):
    """Issue 10's NCHW question: answered (met) once the NCHW-direct provider has rows; the
    text names the layers where reading NCHW directly beat the op beyond the noise."""
    target = targets.TARGETS[-1][1]
    assert "NCHW" in target
    write_rows(tmp_path, every_group(0.5))
    assert by_target(targets.evaluate(tmp_path))[target][1] == "unmeasured"

    def rows(direct_b):
        return [("conv", "a", "fp16", "nchw", "fwd", "elutriton", 1.0),
                ("conv", "a", "fp16", "nchw", "fwd", targets.NCHW_DIRECT, 1.5),
                ("conv", "b", "fp16", "nchw", "fwd", "elutriton", 1.0),
                ("conv", "b", "fp16", "nchw", "fwd", targets.NCHW_DIRECT, direct_b),
                # channels_last rows do not answer it
                ("conv", "c", "fp16", "channels_last", "fwd", "elutriton", 1.0),
                ("conv", "c", "fp16", "channels_last", "fwd", targets.NCHW_DIRECT, 0.1)]
    write_rows(tmp_path, rows(0.99))  # within the noise: a tie
    measured, status = by_target(targets.evaluate(tmp_path))[target]
    assert status == "met" and "over 2 layers, direct faster on 0" in measured
    assert "never slower" in measured
    write_rows(tmp_path, rows(0.8))
    measured, status = by_target(targets.evaluate(tmp_path))[target]
    assert status == "met" and "0.80-1.50x" in measured and "would gain on b" in measured


def test_module_host_time_from_the_host_table(tmp_path):
    """The host table's module columns: met only where the fused layer's call is no slower
    than nn.Conv2d then nn.ELU in every case that has them."""
    def table(fused, unfused):
        (tmp_path / "host_overhead.md").write_text(
            "# Host time per call (MEASURED)\n\nsome GPU\n\n"
            "| case | public op | custom op | launcher | eager | fused module | unfused modules |\n"
            "|---|---|---|---|---|---|---|\n"
            f"| conv2d 3x3 | 30.0 | 70.0 | 10.0 | 28.0 | {fused} | {unfused} |\n"
            "| bias+ELU 256x256 | 16.0 | 31.0 | 9.0 | 15.0 | - | - |\n")
        return by_target(targets.evaluate(tmp_path))[targets.HOST_TARGETS[0][1]]
    measured, status = table(24.0, 30.0)
    assert status == "met" and "conv2d 3x3: 24.0 vs 30.0 us (1.25x)" in measured
    assert "bias+ELU" not in measured
    assert table(31.5, 30.0)[1] == "not met"
    assert table("-", "-")[1] == "unmeasured"
    (tmp_path / "host_overhead.md").unlink()
    assert by_target(targets.evaluate(tmp_path))[targets.HOST_TARGETS[0][1]][1] == "unmeasured"
