"""Drop-in ``torch.nn`` modules backed by elutriton's fused kernels."""
from ..params import module_params as activation_params
from .activation import CELU, ELU, SELU, BiasELU
from .fused_away import FusedAway
from .layers import Conv2dELU, LinearELU

__all__ = ["ELU", "SELU", "CELU", "BiasELU", "Conv2dELU", "LinearELU", "FusedAway",
           "activation_params"]
