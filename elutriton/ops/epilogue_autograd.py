"""Autograd of a GEMM (conv2d/linear) + bias + ELU-family op, shared by ``conv2d.py`` and
``linear.py``.

Forward keeps x, weight and y, never the pre-activation z. Backward: the fused bias+ELU
backward op turns grad_y and y into grad_z and the bias gradient in one pass; the op's own
GEMM backward (``aten.convolution_backward`` / two matmuls) gives grad_x and grad_weight.
Everything backward calls is differentiable (the bias+ELU backward op has an autograd formula
of its own), so double backward is exact.
"""
from ..params import result_backward_valid
from .bias_elu import bias_elu_backward_op


def save_epilogue_context(ctx, x, weight, bias, output, alpha, scale, input_scale):
    """Keep x, weight and y (or, without a result-recoverable derivative, see
    ``params.result_backward_valid``, x and weight alone: backward recomputes z)."""
    ctx.elu = (alpha, scale, input_scale)
    ctx.has_bias = bias is not None
    ctx.from_result = result_backward_valid(alpha, scale, input_scale)
    ctx.save_for_backward(x, weight, output if ctx.from_result else None, bias)


def epilogue_backward(ctx, grad_y, recompute_gemm, dim):
    """(x, weight, grad_z, grad_bias or None) for a context saved by ``save_epilogue_context``.

    ``recompute_gemm(x, weight)`` gives the bias-free GEMM output, used only when y was not
    kept; ``dim`` is the output's channel dimension. The bias gradient is None when the bias
    needs no gradient.
    """
    x, weight, y, bias = ctx.saved_tensors
    alpha, scale, input_scale = ctx.elu
    if ctx.from_result:
        saved, saved_bias = y, None
    else:
        saved, saved_bias = recompute_gemm(x, weight), bias
    bias_grad = ctx.has_bias and ctx.needs_input_grad[2]
    grad_z, grad_bias = bias_elu_backward_op(
        grad_y, saved, saved_bias, alpha, scale, input_scale, dim, ctx.from_result, bias_grad)
    return x, weight, grad_z, (grad_bias if bias_grad else None)
