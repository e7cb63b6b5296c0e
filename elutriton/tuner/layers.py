"""The layer calls the tuner tunes: what a fused conv or linear op runs, read off a model.

A ``ConvCall`` is a ``conv2d_bias_elu`` call as the op runs it: 4-D input (an unbatched input
counts as a batch of one), symmetric padding (``'same'`` with an odd total and the padding
modes other than zeros pad the input first, so the op sees the padded size and the rest of
the padding), the operand dtype after autocast, whether the input is channels_last and the
TF32 flag that fp32 convolutions follow. A ``LinearCall`` is a ``linear_bias_elu`` call:
rows (every vector of the input), features, dtype, TF32 flag. Their ``key`` is the tuned
table's key for the shape (``kernels/conv2d.py``'s ``conv_shape_key``; a linear layer runs
the GEMM kernel as a 1x1 convolution of one-pixel images, so it keys as one).

``record_calls(model, *inputs)`` runs one forward without autograd and records the call of
every ``Conv2dELU`` and ``LinearELU`` in it (what ``elutriton.fuse`` produces), each distinct
call once, in call order. Calls of the functional ops from a model's own ``forward`` are not
seen; name those layers to the tuner directly (``perf.tune --conv/--linear``). The forward
runs in the model's own mode (a branch taken only in training is recorded), and leaves no
trace: the model's buffers (a training-mode BatchNorm's running statistics and batch count)
and the random number generators (a dropout's draws) are as they were before it.
"""
import contextlib
import dataclasses
import math
from typing import List, Tuple, Union

import torch
from torch.nn.parameter import UninitializedBuffer

from .._autocast import autocast_dtype, casts
from ..kernels.conv2d import conv_shape_key, dot_precision
from ..kernels.depthwise_conv2d import depthwise_shape_key, is_depthwise
from ..nn.layers import Conv2dELU, LinearELU
from ..ops.conv2d import _pair, _resolve_padding, conv_output_size
from ..plan import cudnn_allow_tf32, matmul_allow_tf32

Pair = Tuple[int, int]


@dataclasses.dataclass(frozen=True)
class ConvCall:
    """A ``conv2d_bias_elu`` call: input [n, c, h, w] (after any padding the op's caller
    adds), weight [out_channels, c / groups, *kernel], symmetric ``padding``."""

    n: int
    c: int
    h: int
    w: int
    out_channels: int
    kernel: Pair
    stride: Pair = (1, 1)
    padding: Pair = (0, 0)
    dilation: Pair = (1, 1)
    groups: int = 1
    has_bias: bool = True
    dtype: torch.dtype = torch.float16
    channels_last: bool = True
    allow_tf32: bool = True
    name: str = ""

    @property
    def out_hw(self) -> Pair:
        return tuple(conv_output_size(size, k, s, p, d) for size, k, s, p, d in zip(
            (self.h, self.w), self.kernel, self.stride, self.padding, self.dilation))

    @property
    def n_pixels(self) -> int:
        return self.n * math.prod(self.out_hw)

    @property
    def depthwise(self) -> bool:
        return is_depthwise(self.c, self.groups)

    @property
    def key(self) -> str:
        """The tuned table's key (of the depthwise kernel's section for a depthwise conv)."""
        if self.depthwise:
            return depthwise_shape_key(self.dtype, self.n_pixels, self.out_channels,
                                       *self.kernel, self.out_channels // self.c,
                                       self.has_bias)
        return conv_shape_key(self.dtype, dot_precision(self.dtype, self.allow_tf32),
                              self.n_pixels, self.out_channels // self.groups,
                              self.c // self.groups, *self.kernel, self.groups, self.has_bias)

    @property
    def io_bytes(self) -> int:
        """Input, weight, bias and output, each once (how many input copies keep L2
        cold)."""
        size = self.dtype.itemsize
        return size * (self.n * self.c * self.h * self.w
                       + self.out_channels * (self.c // self.groups) * math.prod(self.kernel)
                       + self.out_channels * self.has_bias + self.n_pixels * self.out_channels)

    def describe(self) -> str:
        layout = "channels_last" if self.channels_last else "NCHW"
        return (f"conv {self.n}x{self.c}x{self.h}x{self.w} -> {self.out_channels}, kernel "
                f"{self.kernel}, stride {self.stride}, padding {self.padding}, dilation "
                f"{self.dilation}, groups {self.groups}, {str(self.dtype)[6:]}, {layout}")


@dataclasses.dataclass(frozen=True)
class LinearCall:
    """A ``linear_bias_elu`` call: ``rows`` vectors of ``in_features``."""

    rows: int
    in_features: int
    out_features: int
    has_bias: bool = True
    dtype: torch.dtype = torch.float16
    allow_tf32: bool = True
    name: str = ""

    def as_conv(self) -> ConvCall:
        """The 1x1 convolution of one-pixel images that the GEMM kernel runs."""
        return ConvCall(self.rows, self.in_features, 1, 1, self.out_features, (1, 1),
                        has_bias=self.has_bias, dtype=self.dtype, allow_tf32=self.allow_tf32,
                        name=self.name)

    @property
    def key(self) -> str:
        return self.as_conv().key

    @property
    def io_bytes(self) -> int:
        return self.as_conv().io_bytes

    def describe(self) -> str:
        return (f"linear {self.rows}x{self.in_features} -> {self.out_features}, "
                f"{str(self.dtype)[6:]}")


LayerCall = Union[ConvCall, LinearCall]


def _operand_dtype(x):
    """x's dtype as the op computes in it: autocast's where autocast casts x."""
    cast = autocast_dtype(x)
    return cast if cast is not None and casts(x, x.device.type, cast) else x.dtype


def conv_call(layer: Conv2dELU, x: torch.Tensor) -> ConvCall:
    """The call ``layer(x)`` makes."""
    if x.dim() == 3:
        x = x.unsqueeze(0)
    n, c, h, w = x.shape
    stride, dilation = _pair("stride", layer.stride, 1), _pair("dilation", layer.dilation, 1)
    if layer.padding_mode != "zeros":
        # the layer pads x itself (by what its forward passes to F.pad: [left, right, top,
        # bottom]), then convolves unpadded
        left, right, top, bottom = layer._reversed_padding_repeated_twice
        padding, extra = [0, 0], [top + bottom, left + right]
    else:
        padding, extra = _resolve_padding(layer.padding, layer.weight, stride, dilation)
    if extra is not None:
        h, w = h + extra[0], w + extra[1]
    return ConvCall(n, c, h, w, layer.out_channels, tuple(layer.kernel_size), tuple(stride),
                    tuple(padding), tuple(dilation), layer.groups, layer.bias is not None,
                    _operand_dtype(x), x.is_contiguous(memory_format=torch.channels_last),
                    bool(cudnn_allow_tf32()))


def linear_call(layer: LinearELU, x: torch.Tensor) -> LinearCall:
    """The call ``layer(x)`` makes."""
    return LinearCall(math.prod(x.shape[:-1]), layer.in_features, layer.out_features,
                      layer.bias is not None, _operand_dtype(x), bool(matmul_allow_tf32()))


def record_calls(model: torch.nn.Module, *inputs, **kwargs) -> List[Tuple[str, LayerCall]]:
    """[(module name, call)] for every distinct call of a ``Conv2dELU`` or ``LinearELU`` of
    ``model`` in one forward on ``inputs`` (no autograd), in call order."""
    calls, seen = [], set()

    def hook(name):
        def record(module, args):
            x = args[0]
            call = conv_call(module, x) if isinstance(module, Conv2dELU) else linear_call(
                module, x)
            call = dataclasses.replace(call, name=name)
            fields = dataclasses.replace(call, name="")
            if fields not in seen:
                seen.add(fields)
                calls.append((name, call))
        return record

    handles = [module.register_forward_pre_hook(hook(name))
               for name, module in model.named_modules()
               if isinstance(module, (Conv2dELU, LinearELU))]
    devices = {t.device for t in list(model.parameters()) + list(model.buffers())}
    try:
        with torch.no_grad(), rng_preserved(*devices), buffers_preserved(model):
            model(*inputs, **kwargs)
    finally:
        for handle in handles:
            handle.remove()
    return calls


def rng_preserved(*devices):
    """A context that puts back the CPU generator's state, and that of the CUDA generators of
    the CUDA ``devices``, when it ends (the tuner draws random inputs; a recorded forward may
    run dropout): tuning a model must not change the random numbers its training draws
    next."""
    devices = [torch.device(d) for d in devices]
    indices = sorted({torch.cuda.current_device() if d.index is None else d.index
                      for d in devices if d.type == "cuda"})
    return torch.random.fork_rng(devices=indices)


@contextlib.contextmanager
def buffers_preserved(model):
    """A context that puts every buffer of ``model`` back as it was when it ends: the same
    tensor objects in the same places, holding the same values (a training-mode BatchNorm
    updates its running statistics in place on each forward). A lazy module's buffer that is
    not initialized yet has no value to keep: the forward initializes it, as a lazy model's
    first forward does, and it keeps what that forward leaves."""
    saved = [(module, name, buffer, buffer.detach().clone())
             for module in model.modules() for name, buffer in module._buffers.items()
             if buffer is not None and not isinstance(buffer, UninitializedBuffer)]
    try:
        yield
    finally:
        with torch.no_grad():
            for module, name, buffer, values in saved:
                module._buffers[name] = buffer
                if buffer.is_inference() and not torch.is_inference_mode_enabled():
                    continue  # (no forward could have written it in place: torch refuses)
                buffer.copy_(values)
