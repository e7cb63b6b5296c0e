"""One kernel, one config, one grid: the launcher a launch plan holds.

Triton's ``JITFunction.run`` binds the arguments, computes their specialization, looks the
compiled kernel up in its cache and only then launches: ~10-12 us of host time per call, and
the autotuner adds its own key lookup. A launch plan (``elutriton/plan.py``) already fixes
everything that decides the compiled kernel but one: shapes, strides, dtypes, the config and
the grid. The one is each pointer's 16-byte alignment, which Triton specializes on and the
plan key does not hold: ``FixedLaunch`` records it with the compiled kernel and launches
directly only while the pointers match it (else through Triton). So ``FixedLaunch`` goes through
Triton once, keeps the ``CompiledKernel`` it returns, and from the next call on launches it
directly with the same argument list ``JITFunction.run`` would pass (all parameters in
order, constexprs included: the compiled launcher drops what it specialized away).

- GPU, config known (tuned table or interpreter-independent choice): first call
  ``jit_fn[grid](...)``, later calls ``CompiledKernel.run`` directly.
- GPU, no config (only with ``ELUTRITON_AUTOTUNE=1``; otherwise the planners pass a tuned or
  default config): the first call runs the autotuner (it benchmarks, launches, and records
  ``best_config``); the plan then fixes that config as above.
- Interpreter: every call is ``jit_fn[grid](...)`` (there is no compiled kernel).

Anything unexpected while binding the compiled kernel (another Triton version's internals)
leaves the plan on the ``jit_fn[grid]`` path, which is always correct; ``direct`` says which.

Triton launches on the *current* CUDA device, torch ops on their tensors' device. With tensors
on another GPU than the current one (``model.to("cuda:1")`` without
``torch.cuda.set_device(1)``, as torch users may), a launch there would run the kernel on the
wrong device with the other device's pointers. So a launch whose tensors are not on the current
device runs under ``torch.cuda.device(their device)``, as torch's own ops do; the common case
(they are) costs nothing more: the direct launch already compares the current device with the
one it was bound on.
"""
import torch
from triton.runtime import driver
from triton.runtime.autotuner import Autotuner

from .._runtime import INTERPRET

try:
    from triton import knobs as _knobs
except ImportError:  # older Triton: no launch hooks to honour
    _knobs = None


class FixedLaunch:
    """Launch ``kernel`` over ``grid`` with ``config``; call with the runtime arguments.

    Args:
        kernel: a ``@triton.jit`` function, or an ``Autotuner`` wrapping one.
        grid: ``grid(meta) -> tuple`` of program counts, ``meta`` holding the config's kwargs.
        config: a ``triton.Config``, or None to let the autotuner choose on the first call.
        constexprs: the kernel's constexpr arguments other than the config's.
    """

    def __init__(self, kernel, grid, config, constexprs):
        self.autotuner = kernel if isinstance(kernel, Autotuner) else None
        self.jit_fn = kernel.fn if self.autotuner is not None else kernel
        self.grid_fn = grid
        self.constexprs = constexprs
        self.config = None
        self.compiled = None
        self.direct = False
        if config is not None:
            self._fix(config)

    def _fix(self, config):
        self.config = config
        self.kwargs = dict(self.constexprs, **config.all_kwargs())
        grid = tuple(self.grid_fn(self.kwargs))
        self.grid = grid + (1,) * (3 - len(grid))

    def __call__(self, *args):
        compiled = self.compiled
        if compiled is not None:
            if driver.active.get_current_device() != self.device:
                # (a plan's tensors are on one device: the plan key holds it)
                with torch.cuda.device(self.device):
                    return self(*args)
            if tuple(args[i].data_ptr() & 15 == 0 for i in self.pointers) == self.alignment:
                stream = driver.active.get_current_stream(self.device)
                full = args + self.tail
                hooks = _launch_hooks()
                compiled.run(self.grid[0], self.grid[1], self.grid[2], stream, compiled.function,
                             compiled.packed_metadata,
                             compiled.launch_metadata(self.grid, stream, *full), *hooks, *full)
                return
        else:
            device = cuda_device_of(args)
            if device is not None and device != driver.active.get_current_device():
                with torch.cuda.device(device):
                    return self(*args)
        if self.config is None:
            # No tuned entry: the autotuner benchmarks once (and launches); keep its choice.
            self.autotuner[self.grid_fn](*args, **self.constexprs)
            self._fix(self.autotuner.best_config)
            return
        kernel = self.jit_fn[self.grid](*args, **self.kwargs)
        if not INTERPRET and self.compiled is None:
            self._bind(kernel, args)

    def _bind(self, kernel, args):
        """Keep the compiled kernel for direct launches (see the module docstring)."""
        try:
            names = self.jit_fn.arg_names
            tail = tuple(self.kwargs[name] for name in names[len(args):])
            kernel.run, kernel.packed_metadata  # the direct launch needs both
            self.device = driver.active.get_current_device()
        except (AttributeError, KeyError, TypeError):
            return
        self.pointers = [i for i, a in enumerate(args) if hasattr(a, "data_ptr")]
        self.alignment = tuple(args[i].data_ptr() & 15 == 0 for i in self.pointers)
        self.tail = tail
        self.compiled = kernel
        self.direct = True


def cuda_device_of(args):
    """The CUDA device index of the first tensor among ``args`` (or under a TMA tensor
    descriptor's ``base``); None when it is not on a CUDA device (the interpreter's CPU
    tensors) or there is none."""
    for arg in args:
        arg = getattr(arg, "base", arg)
        if isinstance(arg, torch.Tensor):
            return arg.device.index if arg.is_cuda else None
    return None


def _launch_hooks():
    if _knobs is None:
        return (None, None)
    return (_knobs.runtime.launch_enter_hook, _knobs.runtime.launch_exit_hook)


def no_launch(*args):
    """The launcher of an empty output: nothing to run."""
    return None
