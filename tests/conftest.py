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
