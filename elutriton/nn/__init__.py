"""Drop-in ``torch.nn`` modules backed by elutriton's fused kernels."""
from .activation import CELU, ELU, SELU, BiasELU

__all__ = ["ELU", "SELU", "CELU", "BiasELU"]
