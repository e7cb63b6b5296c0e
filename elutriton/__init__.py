"""elutriton: Triton kernels for the ELU family (ELU, SELU, CELU), fused with bias-add."""
from . import nn
from .ops.bias_elu import bias_elu, celu, elu, selu

__all__ = ["elu", "selu", "celu", "bias_elu", "nn"]
__version__ = "0.1.0"
