"""Drop-in activation modules backed by the elutriton kernels.

``ELU``, ``SELU`` and ``CELU`` subclass their torch counterparts (same constructor, same
attributes, ``isinstance`` still holds), check their parameters at construction (torch's
accept ``alpha=nan`` and fail, or not, on the first forward) and replace ``forward``.

On a device without the kernels (the PyTorch fallback: CPU without ``TRITON_INTERPRET``) the
public functions run torch's own op; there ``ELU``, ``SELU`` and ``CELU`` call it directly
(``runs_torchs_op``), as torch's modules do, without the public call's plan lookup: ~2 us less
per call on CPU, where nothing can be faster than torch's op (the same pass over memory).

Under ``torch.jit.script`` each ``forward`` is torch's own (``F.elu``, ``F.selu``, ``F.celu``;
``BiasELU``: the add, then aten ``elu``): TorchScript cannot call elutriton's Python and
Triton code, so a script computes with torch's ops and loads without elutriton
(``nn/layers.py`` does the same for the fused layers).
"""
import torch
import torch.nn.functional as F
from torch.jit import is_scripting

from .._runtime import INTERPRET
from ..ops.bias_elu import bias_elu, celu, elu, selu
from ..params import celu_params, check_real

_Tensor = torch.Tensor


def runs_torchs_op(x) -> bool:
    """Whether a call on ``x`` would run torch's own ELU op: a plain tensor (not an fx Proxy,
    which the public function records, or a subclass) on a device without the kernels. (A
    plain tensor is what torch.compile's tracing and torch.func transforms pass too; torch's
    op traces and batches as in torch's modules.)"""
    return x.__class__ is _Tensor and not x.is_cuda and not INTERPRET


class ELU(torch.nn.ELU):
    """``torch.nn.ELU`` computed by :func:`elutriton.elu`."""

    def __init__(self, alpha: float = 1.0, inplace: bool = False):
        check_real("elutriton.nn.ELU", alpha=alpha)
        super().__init__(alpha, inplace)

    def forward(self, input: torch.Tensor) -> torch.Tensor:  # (torch's name: by keyword too)
        if not is_scripting():  # torch's op (module docstring)
            if not runs_torchs_op(input):
                return elu(input, self.alpha, inplace=self.inplace)
        return F.elu(input, self.alpha, self.inplace)


class SELU(torch.nn.SELU):
    """``torch.nn.SELU`` computed by :func:`elutriton.selu`."""

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        if not is_scripting():
            if not runs_torchs_op(input):
                return selu(input, inplace=self.inplace)
        return F.selu(input, self.inplace)


class CELU(torch.nn.CELU):
    """``torch.nn.CELU`` computed by :func:`elutriton.celu`."""

    def __init__(self, alpha: float = 1.0, inplace: bool = False):
        celu_params(alpha, "elutriton.nn.CELU")
        super().__init__(alpha, inplace)

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        if not is_scripting():
            if not runs_torchs_op(input):
                return celu(input, self.alpha, inplace=self.inplace)
        return F.celu(input, self.alpha, self.inplace)


class BiasELU(torch.nn.Module):
    """``elu(x + bias)`` with a learnable bias of ``num_channels`` along ``dim``.

    Args:
        num_channels: length of the bias, ``x.shape[dim]``.
        alpha, scale, input_scale: aten ``elu`` parameters (SELU: see ``elutriton.ops``).
        dim: the channel dimension; 1 for conv outputs, -1 for linear outputs.
        device, dtype: of the bias parameter, which starts at zero.
    """

    def __init__(self, num_channels: int, alpha: float = 1.0, scale: float = 1.0,
                 input_scale: float = 1.0, dim: int = 1, device=None, dtype=None):
        super().__init__()
        if isinstance(num_channels, bool) or not isinstance(num_channels, int) or num_channels < 1:
            raise ValueError(f"BiasELU: `num_channels` must be a positive int, got {num_channels!r}")
        check_real("elutriton.nn.BiasELU", alpha=alpha, scale=scale, input_scale=input_scale)
        self.num_channels = num_channels
        self.alpha, self.scale, self.input_scale, self.dim = alpha, scale, input_scale, dim
        self.bias = torch.nn.Parameter(torch.zeros(num_channels, device=device, dtype=dtype))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if is_scripting():  # torch's ops, with the public op's checks (module docstring)
            return self._scripted(x)
        return bias_elu(x, self.bias, self.alpha, self.scale, self.input_scale, dim=self.dim)

    def _scripted(self, x: torch.Tensor) -> torch.Tensor:
        """What ``forward`` compiles to under ``torch.jit.script``: ``elu(x + bias)`` in torch's
        ops, raising where ``elutriton.bias_elu`` raises for the bias's shape, dtype or device
        (where an add would broadcast or promote instead)."""
        dim = self.dim + x.dim() if self.dim < 0 else self.dim
        if dim < 0 or dim >= x.dim():
            raise IndexError("BiasELU: `dim` is out of range for the input's dimensions")
        if x.shape[dim] != self.bias.shape[0]:
            raise ValueError("BiasELU: the input's size along `dim` is not the bias's length")
        if x.dtype != self.bias.dtype or x.device != self.bias.device:
            raise ValueError("BiasELU: the input's dtype and device must be the bias's")
        shape = [1] * x.dim()
        shape[dim] = -1
        return torch.ops.aten.elu(x + self.bias.view(shape), self.alpha, self.scale,
                                  self.input_scale)

    def extra_repr(self) -> str:
        return (f"{self.num_channels}, alpha={self.alpha}, scale={self.scale}, "
                f"input_scale={self.input_scale}, dim={self.dim}")
