"""perf/cudnn_graph.py, the optional cuDNN fused-graph baseline: skipped with a note where the
cuDNN frontend or a GPU is missing, and (against a stand-in of the frontend's module, since
neither exists here) the graph it builds: conv -> bias -> ELU with the case's stride, padding
and tensor metadata, executed on the caller's stream with the case's tensors."""
import sys
import types

import pytest
import torch

from perf import baselines, cudnn_graph


@pytest.mark.skipif(torch.cuda.is_available(), reason="the no-GPU skip path")
def test_without_a_gpu_the_provider_is_left_out_with_a_note(capsys):
    usable, why = cudnn_graph.available()
    assert not usable and why
    baselines._NOTED.clear()
    providers = baselines.conv_providers(compile_modes=())
    assert cudnn_graph.PROVIDER not in providers and "eager" in providers
    assert f"'{cudnn_graph.PROVIDER}' skipped" in capsys.readouterr().err


class FakeNode:
    def __init__(self, log, kind, **attrs):
        self.log, self.kind, self.attrs = log, kind, attrs

    def set_output(self, flag):
        self.log.append(("output", self.kind, flag))
        return self

    def set_data_type(self, data_type):
        self.log.append(("output dtype", data_type))
        return self


def fake_cudnn(log):
    """A stand-in for the frontend's ``cudnn`` module that records what the graph asks for."""
    module = types.SimpleNamespace(
        data_type=types.SimpleNamespace(HALF="half", BFLOAT16="bf16", FLOAT="float"),
        heur_mode=types.SimpleNamespace(A="A", FALLBACK="FALLBACK"),
        create_handle=lambda: "handle",
        set_stream=lambda handle, stream: log.append(("stream", handle, stream)))

    class Graph:
        def __init__(self, **kwargs):
            log.append(("graph", kwargs))

        def tensor(self, **kwargs):
            return FakeNode(log, kwargs["name"], **kwargs)

        def conv_fprop(self, **kwargs):
            log.append(("conv", kwargs["image"].kind, kwargs["weight"].kind, kwargs["padding"],
                        kwargs["stride"], kwargs["dilation"]))
            return FakeNode(log, "conv")

        def bias(self, input, bias):
            log.append(("bias", input.kind, bias.kind))
            return FakeNode(log, "bias")

        def elu(self, input):
            log.append(("elu", input.kind))
            return FakeNode(log, "elu")

        def get_workspace_size(self):
            return 64

        def execute(self, pack, workspace, handle):
            log.append(("execute", {node.kind: t for node, t in pack.items()}, handle))

        def __getattr__(self, name):  # validate, build_operation_graph, ...
            return lambda *args: log.append((name,) + args)

    module.pygraph = Graph
    return module


def test_the_graph_is_conv_bias_elu_with_the_case_geometry(monkeypatch):
    log = []
    monkeypatch.setitem(sys.modules, "cudnn", fake_cudnn(log))
    monkeypatch.setattr(torch.cuda, "current_stream",
                        lambda device=None: types.SimpleNamespace(cuda_stream=7))
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)
    monkeypatch.setattr(cudnn_graph, "_HANDLES", {})
    x = torch.randn(2, 8, 9, 9, dtype=torch.float16).to(memory_format=torch.channels_last)
    w = torch.randn(16, 8, 3, 3, dtype=torch.float16)
    b = torch.randn(16, dtype=torch.float16)
    run = cudnn_graph.conv_bias_elu(x, w, b, 2, 1, 1)
    assert ("graph", dict(io_data_type="half", intermediate_data_type="float",
                          compute_data_type="float", handle="handle")) in log
    assert ("conv", "X", "W", [1, 1], [2, 2], [1, 1]) in log
    assert log.index(("bias", "conv", "B")) < log.index(("elu", "bias"))
    assert ("output", "elu", True) in log and ("output dtype", "half") in log
    assert [entry[0] for entry in log if entry[0] in ("validate", "build_plans")] == \
        ["validate", "build_plans"]
    y = run()
    (_, pack, handle), = [entry for entry in log if entry[0] == "execute"]
    assert pack["X"] is x and pack["W"] is w and pack["elu"] is y and handle == "handle"
    assert pack["B"].shape == (1, 16, 1, 1) and pack["B"].data_ptr() == b.data_ptr()
    assert y.shape == (2, 16, 5, 5) and y.is_contiguous(memory_format=torch.channels_last)
    assert ("stream", "handle", 7) in log
    with pytest.raises(NotImplementedError, match="groups"):
        cudnn_graph.conv_bias_elu(x, w[:, :4], b, 1, 1, 2)
    with pytest.raises(NotImplementedError, match="float64"):
        cudnn_graph.conv_bias_elu(x.double(), w.double(), b.double(), 1, 1, 1)
