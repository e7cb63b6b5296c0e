"""What the tests of the TMA kernels share (test_gemm_tma.py, test_conv2d_tma.py): a tuned
table with one kernel's section written for the test, with every TMA launch recorded, the check
that a section's entries are validated on load, and a stand-in timer for the tuner's sweeps."""
import json

import pytest
import torch

from elutriton.kernels import tuning
from elutriton.plan import clear_plans
from tests.reference import DEVICE


def spied_table(tmp_path, monkeypatch, module, planner, section):
    """``write(entries)``: make ``{section: entries}`` the table the ops read (plans cleared);
    ``write.launched`` lists the outcome (True: launched, False: refused at the call) of every
    call of a plan that ``module.planner`` builds."""
    monkeypatch.setenv("ELUTRITON_PATH", "fused")
    launched = []
    real = getattr(module, planner)

    def spy(*args):
        run = real(*args)

        def counted(*call):
            done = run(*call)
            launched.append(done)
            return done
        return counted
    monkeypatch.setattr(module, planner, spy)

    def write(entries):
        arch = tuning.arch_name(torch.device(DEVICE))
        (tmp_path / f"{arch}.json").write_text(json.dumps({section: entries}))
        monkeypatch.setenv("ELUTRITON_CONFIG_DIR", str(tmp_path))
        clear_plans()
    write.launched = launched
    return write


def assert_entry_validated(section, fields, good, bad, reason, good_key):
    """A table entry of ``section`` for the shape ``fields`` (``good`` with ``bad``'s changes,
    or ``good`` itself for a shape the kernel does not serve) is dropped on load with a warning
    naming ``reason``; ``good`` under ``good_key`` loads."""
    value = good if bad is None else dict(good, **bad)
    raw_key = tuning.shape_key(*fields, True)
    with pytest.warns(UserWarning, match=reason):
        table = tuning.TunedTable({section: {raw_key: value}})
    assert table.lookup(section, raw_key) is None
    table = tuning.TunedTable({section: {good_key: good}})
    assert table.lookup(section, good_key) == good


def counting_measure():
    """(measure, calls): a tuner timer that runs the launch once (a failing config raises)
    and reports 1/n ms for its n-th call, so the last config timed is the fastest."""
    calls = []

    def measure(fn, device):
        fn()
        calls.append(1)
        return (1.0 / len(calls), None, None, "stand-in")
    return measure, calls
