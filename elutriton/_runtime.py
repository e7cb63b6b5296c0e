"""Where the kernels run: the dispatch rule shared by every op.

- CUDA tensors run the Triton kernels (compiled).
- CPU tensors run the same Triton kernels when ``TRITON_INTERPRET=1`` was set before
  elutriton (and so Triton) was imported: Triton decides interpret mode when a kernel is
  decorated, so the flag is read once here, at import time.
- Anything else runs the PyTorch composite in :mod:`elutriton.reference`.
"""
import functools
import os

import torch

INTERPRET = os.environ.get("TRITON_INTERPRET", "0") == "1"

# Largest element offset that int32 arithmetic in a kernel can address safely.
INT32_MAX = 2**31 - 1


def env_reader(name: str):
    """A function of no arguments that returns environment variable ``name`` as
    ``os.environ`` holds it (None where unset), for hot paths that read a variable on every
    call. ``os.environ.get`` costs ~0.75 us (it encodes the key and decodes the value); on
    POSIX this reads the dict that ``os.environ`` keeps its encoded entries in (every write
    through ``os.environ`` updates it; like ``os.environ.get``, it does not see a bare
    ``os.putenv``), ~0.05 us, and returns the value as bytes. Only for comparing readings
    with each other (a cache key); anything that parses the value reads ``os.environ``."""
    data = getattr(os.environ, "_data", None)
    if os.name != "posix" or not isinstance(data, dict):
        return functools.partial(os.environ.get, name)
    return functools.partial(data.get, os.fsencode(name))


def use_triton(tensor: torch.Tensor) -> bool:
    """True when ``tensor``'s device runs the Triton kernels (see module docstring)."""
    return device_runs_triton(tensor.device)


def device_runs_triton(device: torch.device) -> bool:
    """True when tensors on ``device`` run the Triton kernels (see module docstring)."""
    if device.type == "cuda":
        return True
    return INTERPRET and device.type == "cpu"


def needs_int64_index(*tensors_or_sizes) -> bool:
    """True when some offset computed in a kernel may exceed int32 range.

    Accepts tensors (their storage extent in elements is checked) or plain element counts.
    Kernels take the result as a constexpr and promote their program id to int64 only then,
    so the common case keeps cheaper int32 address arithmetic.
    """
    for item in tensors_or_sizes:
        if isinstance(item, torch.Tensor):
            extent = 1 + sum((n - 1) * abs(s) for n, s in zip(item.shape, item.stride()) if n > 0)
            extent = extent if item.numel() > 0 else 0
        else:
            extent = int(item)
        if extent > INT32_MAX:
            return True
    return False


@functools.lru_cache(maxsize=None)
def _cuda_multiprocessors(index: int) -> int:
    return torch.cuda.get_device_properties(index).multi_processor_count


def multiprocessor_count(device) -> int:
    """SMs of a CUDA ``device`` (cached per device); 132 (an H100) elsewhere, so that plans
    made under the interpreter pick what they would on that GPU."""
    device = torch.device(device)
    if device.type != "cuda":
        return 132
    return _cuda_multiprocessors(device.index if device.index is not None
                                 else torch.cuda.current_device())
