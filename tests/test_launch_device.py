"""Kernels launch on their tensors' GPU, not on whatever device is current.

Triton launches on the current CUDA device; torch ops run on their tensors' device. A model
moved with ``.to("cuda:1")`` (no ``torch.cuda.set_device``) must not have its kernels launched
on cuda:0 with cuda:1's pointers (``kernels/launch.py``). Without two GPUs the device switch is
checked against a stand-in driver: which device is current when the kernel is launched, on the
first call (through Triton) and on later ones (the compiled kernel directly)."""
import contextlib

import pytest
import torch

import elutriton
from elutriton.kernels import launch as launch_module
from tests.reference import GEMM_TOLERANCES, assert_close


class _Devices:
    """A stand-in for Triton's driver and ``torch.cuda.device``: the current device index."""

    def __init__(self, current):
        self.current = current
        self.active = self

    def get_current_device(self):
        return self.current

    def get_current_stream(self, device):
        return f"stream of {device}"

    @contextlib.contextmanager
    def device(self, index):
        previous, self.current = self.current, index
        try:
            yield
        finally:
            self.current = previous


@pytest.fixture
def devices(monkeypatch):
    devices = _Devices(current=0)
    monkeypatch.setattr(launch_module, "driver", devices)
    monkeypatch.setattr(torch.cuda, "device", devices.device)
    # the launched tensors live on cuda:1 (stand-ins: CPU tensors cannot say so)
    monkeypatch.setattr(launch_module, "cuda_device_of", lambda args: 1, raising=False)
    return devices


class _Kernel:
    """A ``jit_fn`` stand-in: ``kernel[grid](...)`` records the current device."""

    arg_names = ["x"]

    def __init__(self, devices):
        self.devices, self.launched_on = devices, []

    def __getitem__(self, grid):
        def launch(*args, **kwargs):
            self.launched_on.append(self.devices.current)
        return launch


class _Compiled:
    """A compiled-kernel stand-in: ``run`` records the current device and the stream."""

    function = packed_metadata = None

    def __init__(self, devices):
        self.devices, self.launched_on = devices, []

    def launch_metadata(self, grid, stream, *args):
        return None

    def run(self, *args):
        self.launched_on.append((self.devices.current, args[3]))


def test_first_launch_runs_on_the_tensors_device(devices):
    kernel = _Kernel(devices)
    launch = launch_module.FixedLaunch(kernel, lambda meta: (1,), _config(), {})
    launch(torch.zeros(4))
    assert kernel.launched_on == [1]
    assert devices.current == 0  # the user's current device is back


def test_direct_launch_runs_on_the_tensors_device(devices):
    launch = launch_module.FixedLaunch(_Kernel(devices), lambda meta: (1,), _config(), {})
    compiled = _Compiled(devices)
    x = torch.zeros(4)
    launch.compiled, launch.device, launch.pointers, launch.tail = compiled, 1, [0], ()
    launch.alignment = (x.data_ptr() & 15 == 0,)
    launch(x)
    assert compiled.launched_on == [(1, "stream of 1")]
    assert devices.current == 0
    devices.current = 1  # already current: launched as it is
    launch(x)
    assert compiled.launched_on[-1] == (1, "stream of 1")


def _config():
    import triton
    return triton.Config({"BLOCK": 16})


@pytest.mark.gpu
@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs two CUDA devices")
def test_ops_on_the_second_gpu_with_the_first_current():
    torch.cuda.set_device(0)
    x = torch.randn(2, 16, 8, 8, device="cuda:1", dtype=torch.float16)
    w = torch.randn(32, 16, 3, 3, device="cuda:1", dtype=torch.float16) / 12
    b = torch.randn(32, device="cuda:1", dtype=torch.float16)
    for _ in range(2):  # through Triton, then the compiled kernel directly
        y = elutriton.conv2d_bias_elu(x, w, b, padding=1)
        assert y.device == x.device
        want = torch.nn.functional.elu(torch.nn.functional.conv2d(x.double(), w.double(),
                                                                  b.double(), padding=1))
        assert_close(y, want, tolerances=GEMM_TOLERANCES)
        assert_close(elutriton.bias_elu(x, b[:16]),
                     torch.nn.functional.elu(x.double() + b[:16, None, None].double()))
    assert torch.cuda.current_device() == 0


class _OnSecondGPU(torch.Tensor):
    """A CPU tensor that says it lives on cuda:1 (what ``cuda_device_of`` reads)."""

    @property
    def is_cuda(self):
        return True

    @property
    def device(self):
        return torch.device("cuda", 1)


def test_device_of_the_launched_tensors():
    """The first tensor decides; CPU tensors (the interpreter) need no switch; a TMA descriptor
    stands for its base tensor."""
    from elutriton.kernels.launch import cuda_device_of

    class Descriptor:
        def __init__(self, base):
            self.base = base

    x = torch.zeros(4)
    on_gpu1 = torch.zeros(4).as_subclass(_OnSecondGPU)
    assert cuda_device_of((3, on_gpu1, x)) == 1
    assert cuda_device_of((x, on_gpu1)) is None
    assert cuda_device_of((3, None)) is None
    assert cuda_device_of((Descriptor(on_gpu1), x)) == 1
