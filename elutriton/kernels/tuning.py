"""Autotuning helpers shared by the kernel files.

Multi-config ``triton.autotune`` needs a GPU driver to benchmark, which the interpreter does
not have, so under ``TRITON_INTERPRET=1`` each kernel is tuned over a single config chosen
for the interpreter (large blocks: the interpreter costs ~1 ms per program instance).
"""
import functools
import json
import os
from pathlib import Path

import torch
import triton
import triton.language as tl

from .._runtime import INTERPRET


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
# perf/tune.py writes one JSON table per architecture (elutriton/configs/sm90.json, ...):
#   {kernel name: {shape key: {"BLOCK_M": .., ..., "num_warps": .., "num_stages": ..}}}
# Launchers use the table entry when the shape key is present and fall back to online
# autotuning (results cached on disk by triton) when it is not.
CONFIG_DIR_ENV = "ELUTRITON_CONFIG_DIR"
PACKAGED_CONFIG_DIR = Path(__file__).resolve().parents[1] / "configs"


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


@functools.lru_cache(maxsize=None)
def _load_table(config_dir: str, arch: str) -> dict:
    path = Path(config_dir) / f"{arch}.json"
    if not path.is_file():
        return {}
    return json.loads(path.read_text())


def shape_key(*parts) -> str:
    return "|".join(str(p) for p in parts)


def tuned_config(kernel: str, key: str, device):
    """The tuned ``triton.Config`` for ``kernel`` at ``key`` on ``device``'s arch, or None."""
    config_dir = os.environ.get(CONFIG_DIR_ENV, str(PACKAGED_CONFIG_DIR))
    entry = _load_table(config_dir, arch_name(device)).get(kernel, {}).get(key)
    if entry is None:
        return None
    entry = dict(entry)
    num_warps, num_stages = entry.pop("num_warps"), entry.pop("num_stages")
    return triton.Config(entry, num_warps=num_warps, num_stages=num_stages)
