"""Drop-in activation modules backed by the elutriton kernels.

``ELU``, ``SELU`` and ``CELU`` subclass their torch counterparts (same constructor, same
attributes, ``isinstance`` still holds), check their parameters at construction (torch's
accept ``alpha=nan`` and fail, or not, on the first forward) and replace ``forward``.
"""
import torch

from ..ops.bias_elu import bias_elu, celu, elu, selu
from ..params import celu_params, check_real


class ELU(torch.nn.ELU):
    """``torch.nn.ELU`` computed by :func:`elutriton.elu`."""

    def __init__(self, alpha: float = 1.0, inplace: bool = False):
        check_real("elutriton.nn.ELU", alpha=alpha)
        super().__init__(alpha, inplace)

    def forward(self, input: torch.Tensor) -> torch.Tensor:  # (torch's name: by keyword too)
        return elu(input, self.alpha, inplace=self.inplace)


class SELU(torch.nn.SELU):
    """``torch.nn.SELU`` computed by :func:`elutriton.selu`."""

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        return selu(input, inplace=self.inplace)


class CELU(torch.nn.CELU):
    """``torch.nn.CELU`` computed by :func:`elutriton.celu`."""

    def __init__(self, alpha: float = 1.0, inplace: bool = False):
        celu_params(alpha, "elutriton.nn.CELU")
        super().__init__(alpha, inplace)

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        return celu(input, self.alpha, inplace=self.inplace)


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
        return bias_elu(x, self.bias, self.alpha, self.scale, self.input_scale, dim=self.dim)

    def extra_repr(self) -> str:
        return (f"{self.num_channels}, alpha={self.alpha}, scale={self.scale}, "
                f"input_scale={self.input_scale}, dim={self.dim}")
