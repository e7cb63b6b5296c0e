"""elutriton: Triton kernels for the ELU family (ELU, SELU, CELU), fused with bias-add,
conv2d and linear."""
from . import nn
from .ops.bias_elu import bias_elu, celu, elu, selu
from .ops.conv2d import conv2d_bias_elu
from .ops.linear import linear_bias_elu
from .fuse import FuseReport, fuse
from .plan import clear_plans
from .tuner import TuneReport, tune

__all__ = ["elu", "selu", "celu", "bias_elu", "conv2d_bias_elu", "linear_bias_elu", "fuse",
           "FuseReport", "nn", "clear_plans", "tune", "TuneReport"]
__version__ = "0.1.0"
