"""PyTorch composites with the fused ops' semantics.

These are the fallback on devices the Triton kernels do not serve (CPU without
``TRITON_INTERPRET=1``). Each writes into an output laid out exactly like the Triton path's,
so the custom ops' fake kernels describe both.
"""
import torch

aten = torch.ops.aten


def bias_view(bias: torch.Tensor, ndim: int, dim: int) -> torch.Tensor:
    """Reshape a 1-D ``bias`` to broadcast along ``dim`` of an ``ndim``-D tensor."""
    shape = [1] * ndim
    shape[dim] = bias.shape[0]
    return bias.view(shape)


def bias_elu(x, bias, alpha, scale, input_scale, dim, out):
    """out = elu(x + bias along dim); written into ``out`` (which keeps its strides)."""
    z = x if bias is None else x + bias_view(bias, x.dim(), dim)
    return aten.elu.out(z, alpha, scale, input_scale, out=out)


def bias_elu_backward(grad_y, saved, bias, alpha, scale, input_scale, dim, from_result,
                      grad_z):
    """grad_z = dL/dz from the saved result (from_result) or input; returns grad_z."""
    if not from_result and bias is not None:
        saved = saved + bias_view(bias, saved.dim(), dim)
    aten.elu_backward.grad_input(grad_y, alpha, scale, input_scale, from_result, saved,
                                 grad_input=grad_z)
    # aten's scalar path gives grad * scale at NaN; the kernels' rule is NaN in, NaN out.
    return grad_z.masked_fill_(torch.isnan(saved), float("nan"))


def reduce_bias_grad(grad_z: torch.Tensor, dim: int) -> torch.Tensor:
    """Sum ``grad_z`` over every dimension but ``dim``."""
    return grad_z.sum(dim=[d for d in range(grad_z.dim()) if d != dim])
