"""Drop-in activation modules backed by the elutriton kernels.

``ELU``, ``SELU`` and ``CELU`` subclass their torch counterparts (same constructor, same
attributes, ``isinstance`` still holds) and only replace ``forward``.
"""
import torch

from ..ops.bias_elu import SELU_ALPHA, SELU_SCALE, bias_elu, celu, elu, selu


class ELU(torch.nn.ELU):
    """``torch.nn.ELU`` computed by :func:`elutriton.elu`."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return elu(x, self.alpha, inplace=self.inplace)


class SELU(torch.nn.SELU):
    """``torch.nn.SELU`` computed by :func:`elutriton.selu`."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return selu(x, inplace=self.inplace)


class CELU(torch.nn.CELU):
    """``torch.nn.CELU`` computed by :func:`elutriton.celu`."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return celu(x, self.alpha, inplace=self.inplace)


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
        self.num_channels = num_channels
        self.alpha, self.scale, self.input_scale, self.dim = alpha, scale, input_scale, dim
        self.bias = torch.nn.Parameter(torch.zeros(num_channels, device=device, dtype=dtype))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return bias_elu(x, self.bias, self.alpha, self.scale, self.input_scale, dim=self.dim)

    def extra_repr(self) -> str:
        return (f"{self.num_channels}, alpha={self.alpha}, scale={self.scale}, "
                f"input_scale={self.input_scale}, dim={self.dim}")


def activation_params(module: torch.nn.Module):
    """(alpha, scale, input_scale) of an ``nn.ELU``, ``nn.SELU`` or ``nn.CELU`` (or ours)."""
    if isinstance(module, torch.nn.ELU):
        return float(module.alpha), 1.0, 1.0
    if isinstance(module, torch.nn.SELU):
        return SELU_ALPHA, SELU_SCALE, 1.0
    if isinstance(module, torch.nn.CELU):
        if module.alpha == 0:
            raise ValueError("CELU with alpha == 0 has no ELU form (it divides by alpha)")
        return float(module.alpha), 1.0, 1.0 / module.alpha
    raise TypeError(f"expected nn.ELU, nn.SELU or nn.CELU, got {type(module).__name__}")
