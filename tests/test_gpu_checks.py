"""tools/gpu_checks.sh, the script a session with a GPU runs: its lease preset, its time budget
and the archive it leaves in $OUT (the device tool brings back at most 8 files from there).

Run on a copy of the script in a scratch repository, with a stand-in ``python`` that records
each call and writes what the real stage would write, so no GPU (and no real stage) is needed.
"""
import os
import shutil
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "tools" / "gpu_checks.sh"

STAND_IN = """#!/usr/bin/env bash
echo "$*" >> "$CALLS"
case "$*" in
  *"import cudnn"*) exit 1 ;;
  *pytest*) echo "[gw0] [ 50%] PASSED tests/test_a.py::test_one "
            echo "[gw1] [ 67%] FAILED tests/test_b.py::test_two "
            sleep "${FAKE_TEST_SLEEP:-0}"
            echo "[gw0] [100%] PASSED tests/test_a.py::test_three " ;;
  *perf.models*) mkdir -p perf/results/FAKE_GPU; echo row > perf/results/FAKE_GPU/models.csv ;;
  *perf.tune*) echo '{"tuned": 1}' > elutriton/configs/sm90.json ;;
  *perf.bench*) mkdir -p perf/results/FAKE_GPU; echo row > perf/results/FAKE_GPU/measured.csv ;;
esac
exit 0
"""


@pytest.fixture
def repo(tmp_path):
    """A scratch repository: the script, a results file and a table from before the run."""
    root = tmp_path / "repo"
    (root / "tools").mkdir(parents=True)
    shutil.copy(SCRIPT, root / "tools" / "gpu_checks.sh")
    old = [root / "perf" / "results" / "OLD_GPU" / "summary.md", root / "elutriton" / "configs"
           / "sm80.json"]
    table = root / "elutriton" / "configs" / "sm90.json"
    for path in old + [table]:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("before\n")
        hour_ago = time.time() - 3600
        os.utime(path, (hour_ago, hour_ago))
    python = tmp_path / "python"
    python.write_text(STAND_IN)
    python.chmod(0o755)
    return root, python, tmp_path


def _run(repo, *stages, **env):
    root, python, tmp = repo
    calls = tmp / "calls.txt"
    out = tmp / "out"
    out.mkdir(exist_ok=True)
    environment = {k: v for k, v in os.environ.items()
                   if k not in ("BUDGET_S", "TESTS_LIMIT_S", "OUT")}
    environment.update(PYTHON=str(python), CALLS=str(calls), OUT=str(out), **env)
    result = subprocess.run(["bash", str(root / "tools" / "gpu_checks.sh"), str(tmp / "logs"),
                             *stages], env=environment, capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0, result.stderr
    lines = calls.read_text().splitlines() if calls.exists() else []
    return result.stdout, lines, out


def _archived(out, read=None):
    """(the names of the files in $OUT's archive, the bytes of the file ``read`` or None)."""
    with tarfile.open(out / "gpu_results.tar.gz") as archive:
        names = {m.name for m in archive.getmembers() if m.isfile()}
        return names, read and archive.extractfile(read).read()


def test_lease_preset_runs_its_stages_in_order_and_packs_what_changed(repo):
    stdout, calls, out = _run(repo, "lease15")
    modules = [c.split()[1] for c in calls if c.startswith("-m ")]
    assert modules == ["pytest", "perf.tune", "perf.models", "perf.models", "perf.bench",
                       "perf.host_overhead", "perf.targets"]
    assert "--paths --sets selu_mlp" in next(c for c in calls if "perf.tune" in c)
    assert " -v " in next(c for c in calls if "pytest" in c)  # a line per test as it ends
    assert "== tests: 2 passed, 1 failed or errors so far" in stdout
    # the models the open targets read, ResNet-50 inference in a run of its own
    models = [c for c in calls if "perf.models" in c]
    assert "--models elu_cifar selu_mlp" in models[0]
    assert "--models resnet50_elu --tasks infer" in models[1]
    for stage in ("tests", "linear_paths", "models_targets", "models_rn50_infer", "layers_graph",
                  "host_overhead"):
        assert f"== {stage}: rc=0" in stdout
    # one archive (not a file per result), holding exactly what this run wrote, and the logs
    assert [p.name for p in out.iterdir()] == ["gpu_results.tar.gz"]
    names, table = _archived(out, "elutriton/configs/sm90.json")
    assert {"perf/results/FAKE_GPU/models.csv", "perf/results/FAKE_GPU/measured.csv",
            "elutriton/configs/sm90.json", "logs/tests.log", "logs/models_targets.log",
            "logs/targets.log"} <= names
    assert table == b'{"tuned": 1}\n'
    assert not {"perf/results/OLD_GPU/summary.md", "elutriton/configs/sm80.json"} & names
    assert not [n for n in names if n.startswith(("/", "tmp", ".."))]


def test_budget_skips_a_stage_that_would_not_fit_and_runs_later_ones_that_do(repo):
    # the tests stage takes 2 s; models (130 s limit) would then end past the 131 s budget;
    # layers_graph (80 s) still fits
    stdout, calls, out = _run(repo, "tests", "models", "layers_graph", BUDGET_S="131",
                              TESTS_LIMIT_S="10", FAKE_TEST_SLEEP="2")
    assert "== tests: rc=0" in stdout
    assert "== models: skipped (needs 130 s" in stdout
    assert not any("perf.models" in c for c in calls)
    assert "== layers_graph: rc=0" in stdout and any("perf.bench" in c for c in calls)


def test_no_budget_runs_everything_asked(repo):
    stdout, calls, _ = _run(repo, "models", "layers_graph")
    assert "skipped" not in stdout
    assert any("perf.models" in c for c in calls) and any("perf.bench" in c for c in calls)


def test_a_stage_killed_at_its_limit_still_leaves_its_log_in_the_archive(repo):
    stdout, _, out = _run(repo, "tests", "models", TESTS_LIMIT_S="1", FAKE_TEST_SLEEP="5")
    assert "== tests: rc=124" in stdout
    # the lines written before the cut still name the failure and count what ran
    assert "FAILED tests/test_b.py::test_two" in stdout
    assert "== tests: 1 passed, 1 failed or errors so far" in stdout
    names, _ = _archived(out)
    assert {"logs/tests.log", "perf/results/FAKE_GPU/models.csv"} <= names


PARSE_ONLY = """import argparse, runpy, sys
sys.path.insert(0, {repo!r})
args = sys.argv[1:]
if args[0] == "-c":  # the cuDNN frontend probe: not installed
    sys.exit(1)
if args[1] == "pytest":
    sys.exit(0)
parse = argparse.ArgumentParser.parse_args


def parse_only(self, argv=None, namespace=None):
    parse(self, argv, namespace)  # a bad option exits with status 2 here
    raise SystemExit(0)  # ... else stop before anything runs


argparse.ArgumentParser.parse_args = parse_only
sys.argv = [args[1]] + args[2:]
runpy.run_module(args[1], run_name="__main__", alter_sys=True)
"""


def test_every_stage_the_lease_plan_names_runs_commands_that_parse(repo):
    """docs/gpu_plan.md's lease table names stages the script knows, and each stage's commands
    take the options it passes (a typo in either would waste a lease): every command of those
    stages runs with the real perf modules up to their argument parsing."""
    root, python, tmp = repo
    plan = (SCRIPT.parents[1] / "docs" / "gpu_plan.md").read_text()
    rows = [line.split("|") for line in plan.splitlines() if line.startswith("| ")]
    stages = set()
    for cells in rows[1:]:  # (the header row)
        quoted = cells[2].split("`")[1::2]  # `lease15` = `tests ...`, or `stage stage ...`
        stages.update(s for part in quoted for s in part.split() if s != "lease15")
    assert {"tests", "retune", "paths", "models_compile", "nchw_bwd", "models_dtypes"} <= stages
    driver = tmp / "parse_only.py"
    driver.write_text(PARSE_ONLY.format(repo=str(SCRIPT.parents[1])))
    python.write_text(f'#!/usr/bin/env bash\nexec {sys.executable} {driver} "$@"\n')
    stdout, _, _ = _run(repo, *sorted(stages))
    assert "unknown stage" not in stdout
    ran = [line for line in stdout.splitlines() if line.startswith("== ") and " rc=" in line]
    for stage in stages - {"profile"}:  # (it logs under profile_mlp, profile_cifar, ...)
        assert f"== {stage}: rc=0" in stdout, ran
    assert all(": rc=0 " in line for line in ran), ran
