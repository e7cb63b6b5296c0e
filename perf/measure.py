"""Timing for the perf harness: the package's tuner timing (``elutriton/tuner/timing.py``:
``do_bench`` / ``do_bench_cudagraph`` on a GPU, rotating input copies past L2, a labelled
wall-clock stand-in off the GPU), plus the synchronization the bench needs."""
import torch

from elutriton.tuner.timing import copies_needed, kernel_time, measure, rotating

__all__ = ["copies_needed", "kernel_time", "measure", "rotating", "sync"]


def sync(device: str):
    if device == "cuda":
        torch.cuda.synchronize()
