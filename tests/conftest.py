"""Test setup: the real Triton kernels run on CPU through Triton's interpreter.

TRITON_INTERPRET must be set before triton (and so elutriton) is imported, because Triton
decides interpret mode when a kernel is decorated.
"""
import os
import zlib

os.environ.setdefault("TRITON_INTERPRET", "1")

import pytest  # noqa: E402
import torch  # noqa: E402


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available():
        return
    skip_gpu = pytest.mark.skip(reason="needs a CUDA device")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip_gpu)


@pytest.fixture(autouse=True)
def _seed(request):
    # A fresh seed per test (derived from its name) so inputs differ across tests but a
    # failure reproduces.
    torch.manual_seed(zlib.crc32(request.node.nodeid.encode()))


@pytest.fixture(autouse=True)
def _exact_fp32(monkeypatch):
    # The float64 references assume exact fp32 products. On a GPU torch's cuDNN default is
    # TF32 (and so, following it, is the fused conv): switch TF32 off for every test; tests
    # of the TF32 path set the flags themselves (monkeypatch restores them afterwards).
    monkeypatch.setattr(torch.backends.cudnn, "allow_tf32", False)
    monkeypatch.setattr(torch.backends.cuda.matmul, "allow_tf32", False)


@pytest.fixture(autouse=True)
def _fresh_plans():
    # Tests monkeypatch what plans are built from (use_triton, needs_int64_index, ...): a plan
    # cached by one test must not serve the next. Cache behaviour itself is tested within tests.
    from elutriton.plan import clear_plans
    clear_plans()
    yield
    clear_plans()


@pytest.fixture(params=["fused", "library", "composite"])
def gemm_path(request, monkeypatch):
    """Run a test on every path of the per-shape choice (ops/library_path.py): the fused kernel;
    cuDNN/cuBLAS followed by the in-place bias+ELU kernel ("library": as under CUDA-graph
    capture, where calls that autograd records take it too); and, for library-path calls that
    autograd records eagerly, torch's composite ("composite", ops/composite_path.py; calls
    without autograd take the library path, already covered, so tests that record none skip
    it). Tests of the fused kernel's own machinery (marked ``fused_kernel``) run the fused path
    alone. Modules opt in with ``pytestmark = pytest.mark.usefixtures("gemm_path")``."""
    if request.param != "fused" and request.node.get_closest_marker("fused_kernel"):
        pytest.skip("tests the fused kernel itself")
    if request.param == "composite" and not request.node.get_closest_marker("records_grad"):
        pytest.skip("records no gradient: the library path's case")
    monkeypatch.setenv("ELUTRITON_PATH", "fused" if request.param == "fused" else "library")
    if request.param == "library":
        monkeypatch.setattr("elutriton.ops.composite_path.capturing", lambda is_cuda: True)
    return request.param
