"""Autotuning helpers shared by the kernel files.

Multi-config ``triton.autotune`` needs a GPU driver to benchmark, which the interpreter does
not have, so under ``TRITON_INTERPRET=1`` each kernel is tuned over a single config chosen
for the interpreter (large blocks: the interpreter costs ~1 ms per program instance).
"""
import functools
import json
import math
import os
import warnings
from pathlib import Path

import torch
import triton
import triton.language as tl

from .._runtime import INTERPRET
from ..plan import on_clear_plans


def autotune(configs, interpreter_config, key, **gpu_kwargs):
    """``triton.autotune`` over ``configs`` on a GPU (with ``gpu_kwargs``: pruning, on-disk
    caching of results), over ``[interpreter_config]`` alone under the interpreter."""
    if INTERPRET:
        return triton.autotune(configs=[interpreter_config], key=key)
    return triton.autotune(configs=configs, key=key, cache_results=True, **gpu_kwargs)


def compute_dtype(tensor_dtype):
    """Triton dtype the math runs in: fp64 for fp64 tensors, fp32 for everything else."""
    return tl.float64 if tensor_dtype == torch.float64 else tl.float32


# --------------------------------------------------------------------------- tuned tables
# The tuner (elutriton/tuner/: perf/tune.py for shape sets, elutriton.tune for a model) writes
# one JSON table per architecture (elutriton/configs/sm90.json, ...):
#   {kernel name: {shape key: {"BLOCK_M": .., ..., "num_warps": .., "num_stages": ..}},
#    "paths": {op/layout: {shape key: "fused" | "library"},
#              "conv2d_bias_elu/backward", ".../backward_params": {shape key: "triton" | "cudnn"}}}
# A shape key is "|"-joined fields (``shape_key``); one of them, the GEMM's M (the output
# pixel count, which scales with the batch size), is bucketed: a lookup takes the exact key,
# else the entry whose other fields match and whose M is nearest in log2, within a factor of
# BUCKET_RATIO. So a table tuned at batch 128 serves batch 64 to 512 of the same layer.
# Every entry is validated on load (``register_validator``); an invalid one is dropped with a
# warning, never used.
CONFIG_DIR_ENV = "ELUTRITON_CONFIG_DIR"
PACKAGED_CONFIG_DIR = Path(__file__).resolve().parents[1] / "configs"
PATHS = "paths"
PATH_CHOICES = ("fused", "library")
# the backward's choice (ops/backward_path.py), with and without an input gradient
BACKWARD_SECTIONS = ("conv2d_bias_elu/backward", "conv2d_bias_elu/backward_params")
BACKWARD_CHOICES = ("triton", "cudnn")
BUCKET_RATIO = 4.0
_VALIDATORS = {}
_BUCKET_FIELD = {}


def register_validator(kernel: str, validate, bucket_field: int) -> None:
    """``validate(key_fields, entry) -> None or a reason`` checks ``kernel``'s table entries
    (the kernel's own pruning rules); ``bucket_field`` is the index of M in its keys."""
    _VALIDATORS[kernel] = validate
    _BUCKET_FIELD[kernel] = bucket_field


def arch_name(device) -> str:
    """'sm90' for a CUDA device of capability 9.0; 'interpreter' for CPU tensors."""
    if device.type != "cuda":
        return "interpreter"
    return _cuda_arch(device.index if device.index is not None else torch.cuda.current_device())


@functools.lru_cache(maxsize=None)
def _cuda_arch(index: int) -> str:
    # cached: the launcher asks on every call, and the query is not free
    major, minor = torch.cuda.get_device_capability(index)
    return f"sm{major}{minor}"


def shape_key(*parts) -> str:
    return "|".join(str(p) for p in parts)


class TunedTable:
    """One architecture's table, validated and indexed for bucketed lookups.

    ``sections`` maps a section name (a kernel, or ``paths/<op>``) to {key: entry};
    ``rejected`` lists (section, key, reason) of the entries dropped on load.
    """

    def __init__(self, raw: dict, source: str = "<table>"):
        self.rejected = []
        self.sections = {}
        self._bucket_field = {}  # section -> index of M in its keys
        self._buckets = {}
        for kernel, entries in raw.items():
            if kernel == PATHS:
                for op, choices in entries.items():
                    self._add(f"{PATHS}/{op}", choices, _path_validator(op), _op_kernel(op),
                              source)
            else:
                self._add(kernel, entries, _VALIDATORS.get(kernel), kernel, source)

    def _add(self, section, entries, validate, kernel, source):
        bucket_field = _BUCKET_FIELD.get(kernel)
        kept = {}
        for key, entry in entries.items():
            fields = key.split("|")
            reason = None
            if validate is None:
                reason = "no validator registered for this kernel"
            elif bucket_field is None or len(fields) <= bucket_field \
                    or not fields[bucket_field].isdigit():
                reason = "malformed key"
            else:
                reason = validate(fields, entry)
            if reason is not None:
                self.rejected.append((section, key, reason))
                warnings.warn(f"elutriton: tuned table {source}: {section} entry {key!r} "
                              f"rejected ({reason}); that shape is planned without it")
                continue
            kept[key] = entry
            m, rest = _bucket_of(fields, bucket_field)
            self._buckets.setdefault((section, rest), []).append((m, entry))
        self.sections[section] = kept
        self._bucket_field[section] = bucket_field

    def lookup(self, section: str, key: str):
        """The entry at ``key`` (exact, else the nearest M bucket; see above), or None."""
        entries = self.sections.get(section)
        if not entries:
            return None
        entry = entries.get(key)
        if entry is not None:
            return entry
        m, rest = _bucket_of(key.split("|"), self._bucket_field[section])
        best, best_distance = None, math.log2(BUCKET_RATIO)
        for tuned_m, candidate in self._buckets.get((section, rest), ()):
            distance = abs(math.log2(max(m, 1) / max(tuned_m, 1)))
            if distance <= best_distance:
                best, best_distance = candidate, distance
        return best


def _bucket_of(fields, bucket_field):
    """(M, the other fields) of a split key: M decides the bucket, the rest must match."""
    return int(fields[bucket_field]), tuple(f for i, f in enumerate(fields) if i != bucket_field)


# The ops whose path is chosen and the GEMM kernel whose keys they share.
_PATH_OPS = {"conv2d_bias_elu": "conv2d_bias_elu", "linear_bias_elu": "conv2d_bias_elu"}


def _op_kernel(op: str) -> str:
    """``conv2d_bias_elu/nchw`` -> the kernel whose keys (and bucket field) it uses."""
    return _PATH_OPS.get(op.split("/", 1)[0], op)


def _path_validator(op: str):
    """Checks a ``paths/<op>`` entry: one of the choices that section decides between."""
    choices = BACKWARD_CHOICES if op in BACKWARD_SECTIONS else PATH_CHOICES

    def validate(fields, entry):
        return None if entry in choices else f"path must be one of {choices}"
    return validate


@functools.lru_cache(maxsize=None)
def _load_table(path: str) -> TunedTable:
    if not Path(path).is_file():
        return TunedTable({})
    return TunedTable(json.loads(Path(path).read_text()), path)


on_clear_plans(_load_table.cache_clear)  # a table re-tuned in place is read again


def table_path(arch: str) -> Path:
    """Where the table in effect for ``arch`` is (or would be): ``ELUTRITON_CONFIG_DIR``'s
    folder, else the packaged one."""
    return Path(os.environ.get(CONFIG_DIR_ENV, str(PACKAGED_CONFIG_DIR))) / f"{arch}.json"


def table_for(device) -> TunedTable:
    """The validated tuned table of ``device``'s architecture (empty where none ships)."""
    return _load_table(str(table_path(arch_name(device))))


def tuned_config(kernel: str, key: str, device):
    """The tuned ``triton.Config`` for ``kernel`` at ``key`` (or its bucket) on ``device``'s
    arch, or None."""
    entry = table_for(device).lookup(kernel, key)
    if entry is None:
        return None
    entry = dict(entry)
    num_warps, num_stages = entry.pop("num_warps"), entry.pop("num_stages")
    return triton.Config(entry, num_warps=num_warps, num_stages=num_stages)


def tuned_path(op: str, key: str, device):
    """The measured choice for ``op`` (e.g. ``conv2d_bias_elu/channels_last``: "fused" or
    "library"; ``conv2d_bias_elu/backward``: "triton" or "cudnn") at ``key`` or its bucket, where
    the table has one, else None."""
    return table_for(device).lookup(f"{PATHS}/{op}", key)


def online_autotune_requested() -> bool:
    """Whether the user asked for online autotuning of shapes the table misses
    (``ELUTRITON_AUTOTUNE=1``); by default they get a fixed default config instead, so no
    call benchmarks configs inside a user's step."""
    return os.environ.get("ELUTRITON_AUTOTUNE", "0") == "1"
