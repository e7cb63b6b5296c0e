"""Optional baseline: cuDNN's own fused convolution -> bias add -> ELU, built as one operation
graph through the cuDNN frontend's Python API (``pip install nvidia-cudnn-frontend``, module
``cudnn``). cuDNN decides whether an engine fuses the three; where the package, the GPU or a
supporting engine is missing the provider is left out (``available``) or its case fails to
build, and the benchmark reports that on stderr and skips it, as for any failing baseline.

Forward only (the graph has no autograd), ELU with alpha = 1 (the frontend's ELU node has no
alpha), groups == 1, dilation 1: the conv shape sets' layers.
"""
import importlib

import torch

from elutriton.ops.conv2d import conv_output_format, conv_output_size

PROVIDER = "cudnn fused graph"
_HANDLES = {}


def available():
    """(True, "") where the cuDNN frontend imports and a CUDA device exists, else (False, why)."""
    if not torch.cuda.is_available():
        return False, "no CUDA device"
    try:
        importlib.import_module("cudnn")
    except ImportError as exc:
        return False, f"the cuDNN frontend is not installed (nvidia-cudnn-frontend: {exc})"
    return True, ""


def _pair(value):
    return [int(value)] * 2 if isinstance(value, int) else [int(v) for v in value]


def _data_type(cudnn, dtype):
    types = {torch.float16: cudnn.data_type.HALF, torch.bfloat16: cudnn.data_type.BFLOAT16,
             torch.float32: cudnn.data_type.FLOAT}
    if dtype not in types:
        raise NotImplementedError(f"{PROVIDER}: no cuDNN data type for {dtype}")
    return types[dtype]


def _handle(cudnn, device):
    index = device.index if device.index is not None else torch.cuda.current_device()
    if index not in _HANDLES:
        _HANDLES[index] = cudnn.create_handle()
    return _HANDLES[index]


def conv_bias_elu(x, weight, bias, stride, padding, groups):
    """A zero-argument callable that runs cuDNN's conv -> bias -> ELU graph on these tensors
    and returns its output (channels_last when x is). Raises where cuDNN has no engine for it."""
    import cudnn
    if groups != 1:
        raise NotImplementedError(f"{PROVIDER}: groups={groups} (the graph is built for 1)")
    io_type = _data_type(cudnn, x.dtype)
    handle = _handle(cudnn, x.device)
    graph = cudnn.pygraph(io_data_type=io_type, intermediate_data_type=cudnn.data_type.FLOAT,
                          compute_data_type=cudnn.data_type.FLOAT, handle=handle)
    bias4 = bias.view(1, -1, 1, 1)
    nodes = {}
    for name, tensor in (("X", x), ("W", weight), ("B", bias4)):
        nodes[name] = graph.tensor(name=name, dim=list(tensor.shape), stride=list(tensor.stride()),
                                   data_type=io_type)
    conv = graph.conv_fprop(image=nodes["X"], weight=nodes["W"], padding=_pair(padding),
                            stride=_pair(stride), dilation=[1, 1])
    out = graph.elu(input=graph.bias(input=conv, bias=nodes["B"]))
    out.set_output(True).set_data_type(io_type)
    graph.validate()
    graph.build_operation_graph()
    graph.create_execution_plans([cudnn.heur_mode.A, cudnn.heur_mode.FALLBACK])
    graph.check_support()
    graph.build_plans()
    workspace = torch.empty(graph.get_workspace_size(), device=x.device, dtype=torch.uint8)
    out_hw = [conv_output_size(size, k, s, p, 1) for size, k, s, p in
              zip(x.shape[2:], weight.shape[2:], _pair(stride), _pair(padding))]
    y = torch.empty((x.shape[0], weight.shape[0], *out_hw), dtype=x.dtype, device=x.device,
                    memory_format=conv_output_format(x, weight))
    pack = {nodes["X"]: x, nodes["W"]: weight, nodes["B"]: bias4, out: y}

    def run():
        # on the caller's stream (the CUDA-graph timer captures on a side stream)
        cudnn.set_stream(handle=handle, stream=torch.cuda.current_stream(x.device).cuda_stream)
        graph.execute(pack, workspace, handle=handle)
        return y
    return run
