"""Drop-in ``torch.nn`` modules backed by elutriton's fused kernels."""
from .activation import CELU, ELU, SELU, BiasELU, activation_params
from .layers import Conv2dELU, LinearELU

__all__ = ["ELU", "SELU", "CELU", "BiasELU", "Conv2dELU", "LinearELU", "activation_params"]
