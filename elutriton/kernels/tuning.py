"""Autotuning helpers shared by the kernel files.

Multi-config ``triton.autotune`` needs a GPU driver to benchmark, which the interpreter does
not have, so under ``TRITON_INTERPRET=1`` each kernel is tuned over a single config chosen
for the interpreter (large blocks: the interpreter costs ~1 ms per program instance).
"""
import triton

from .._runtime import INTERPRET


def autotune(configs, interpreter_config, key, **kwargs):
    """``triton.autotune`` over ``configs`` on a GPU, over ``[interpreter_config]`` otherwise."""
    return triton.autotune(configs=[interpreter_config] if INTERPRET else configs, key=key, **kwargs)


def compute_dtype(tensor_dtype):
    """Triton dtype the math runs in: fp64 for fp64 tensors, fp32 for everything else."""
    import torch
    import triton.language as tl

    return tl.float64 if tensor_dtype == torch.float64 else tl.float32
