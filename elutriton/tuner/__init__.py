"""``elutriton.tune(model, *example_inputs, out_dir=...)``: tune a model's fused layers ahead
of time, on the GPU it will run on.

The shipped table (``elutriton/configs/<arch>.json``) covers the layers of ``perf/shapes.py``
and, through its batch-size buckets, batch sizes within 4x of those; any other layer gets a
default config and the default per-shape rule (``ops/library_path.py``), which are predicted,
not measured. ``tune`` measures the layers of your model instead: it runs one forward of
``model`` on the example inputs (no autograd; inside your ``torch.autocast`` context if you
call it in one, so the operand dtypes are the ones your model runs), records every
``Conv2dELU``/``LinearELU`` call (``layers.py``), and for each distinct call times

- ``configs``: the candidate configs of the kernel that runs it (``sweeps.py``);
- ``paths``: the fused kernel against the library path, in the call's layout;
- ``backward`` (for training): elutriton's gradient kernels against cuDNN's backward.

It writes ``<out_dir>/<arch>.json`` (``sm90.json`` on an H100): the table in effect (the
packaged one, or ``ELUTRITON_CONFIG_DIR``'s) or the one already in ``out_dir``, with this
model's entries added or replaced, after every layer. Nothing global changes: to use it, set
``ELUTRITON_CONFIG_DIR`` to ``out_dir`` before the run that uses it, or call the report's
``activate()`` (which sets it in this process and clears the launch plans). The model is
left as it was: its buffers (a training-mode BatchNorm's statistics) and the random number
generators are put back after the recorded forward and the timings.
"""
import contextlib
import dataclasses
import json
import os
from pathlib import Path
from typing import List, Tuple

import torch

from .._runtime import device_runs_triton
from ..kernels.tuning import CONFIG_DIR_ENV, arch_name, table_path
from ..nn.layers import Conv2dELU, LinearELU
from ..plan import clear_plans
from .layers import ConvCall, LayerCall, LinearCall, record_calls, rng_preserved
from .sweeps import tune_backward, tune_configs, tune_paths
from .timing import kernel_time

__all__ = ["tune", "TuneReport", "ConvCall", "LinearCall", "record_calls", "tune_calls"]


@dataclasses.dataclass
class TuneReport:
    """What :func:`tune` measured: ``path`` (the table written), ``calls`` ((module name,
    call) pairs) and ``lines`` (a line per measured choice, with its timings)."""

    path: Path
    calls: List[Tuple[str, LayerCall]]
    lines: List[str] = dataclasses.field(default_factory=list)

    def activate(self) -> None:
        """Use the tuned table from now on in this process: sets ``ELUTRITON_CONFIG_DIR`` to
        its folder and clears the launch plans (which were made from the old table)."""
        os.environ[CONFIG_DIR_ENV] = str(self.path.parent)
        clear_plans()

    def __str__(self):
        return "\n".join([f"elutriton.tune: {len(self.calls)} layer calls -> {self.path}"]
                         + [f"  {line}" for line in self.lines])


def _device_of(model):
    devices = {module.weight.device for module in model.modules()
               if isinstance(module, (Conv2dELU, LinearELU))}
    if not devices:
        raise ValueError("elutriton.tune: the model has no Conv2dELU or LinearELU layers "
                         "(convert it with elutriton.fuse first)")
    if len(devices) > 1:
        raise ValueError(f"elutriton.tune: the fused layers are on several devices "
                         f"({sorted(map(str, devices))}); tune one device at a time")
    device = devices.pop()
    if not device_runs_triton(device):
        raise ValueError(f"elutriton.tune: the kernels do not run on {device} (a CUDA GPU, "
                         "or the CPU under TRITON_INTERPRET=1 for a test run)")
    return device


def _starting_table(out_path: Path, arch: str, copy_in_effect: bool) -> dict:
    """The table in ``out_path`` if there is one, else a copy of the table in effect
    (``copy_in_effect``) or an empty one."""
    if out_path.is_file():
        return json.loads(out_path.read_text())
    if not copy_in_effect:
        return {}
    in_effect = table_path(arch)
    return json.loads(in_effect.read_text()) if in_effect.is_file() else {}


def tune_calls(calls, device, out_path: Path, configs=True, paths=True, backward=False,
               resume=False, both_layouts=False, copy_in_effect=True, log=None) -> List[str]:
    """Measure ``calls`` (``layers.py`` records) on ``device`` and write the table at
    ``out_path``, starting from the one there, else from a copy of the table in effect
    (``copy_in_effect``) or an empty one; returns the lines (also passed to ``log`` as they
    come). The steps run without autocast: each call names its own dtype. ``resume``: skip
    config sweeps whose key the table has; ``both_layouts``: time each conv's path choice for
    channels_last and NCHW inputs alike."""
    device = torch.device(device)
    table = _starting_table(out_path, arch_name(device), copy_in_effect)
    out_path.parent.mkdir(parents=True, exist_ok=True)

    def write():  # after every layer, so an interrupted run keeps what it measured
        out_path.write_text(json.dumps(table, indent=1, sort_keys=True) + "\n")
    timing_device = "cuda" if device.type == "cuda" else "cpu"
    steps = []
    if configs:
        steps.append(tune_configs(calls, timing_device, table, write, kernel_time, resume))
    if paths:
        steps.append(tune_paths(calls, timing_device, table, write, kernel_time, both_layouts))
    if backward:
        steps.append(tune_backward(calls, timing_device, table, write, kernel_time))
    lines = []
    device_context = (torch.cuda.device(device) if device.type == "cuda"
                      else contextlib.nullcontext())
    # (the timed inputs are random draws: the caller's generators are put back afterwards)
    with device_context, torch.autocast(device.type, enabled=False), rng_preserved(device):
        for step in steps:
            for line in step:
                lines.append(line)
                if log is not None:
                    log(line)
    write()
    return lines


def tune(model: torch.nn.Module, *example_inputs, out_dir, configs: bool = True,
         paths: bool = True, backward: bool = False, log=None, **example_kwargs) -> TuneReport:
    """Tune the fused layers of ``model`` (module docstring) and write the table to
    ``out_dir``; ``backward=True`` also for training (the backward's choice per conv layer).
    ``log``: a callable given each line as it is measured (e.g. ``print``). Returns a
    :class:`TuneReport`; its ``activate()`` puts the table to use in this process."""
    device = _device_of(model)
    calls = record_calls(model, *example_inputs, **example_kwargs)
    out_path = Path(out_dir) / f"{arch_name(device)}.json"
    lines = tune_calls([call for _, call in calls], device, out_path, configs, paths,
                       backward, log=log)
    return TuneReport(out_path, calls, lines)
