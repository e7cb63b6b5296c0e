"""Autograd of a GEMM (conv2d/linear) + bias + ELU-family op, shared by ``conv2d.py`` and
``linear.py``.

Forward keeps y and, where their gradients need them, x and the weight; never the
pre-activation z. Backward: the fused bias+ELU
backward op turns grad_y and y into grad_z and the bias gradient in one pass; the op's own
GEMM backward (``aten.convolution_backward`` / two matmuls) gives grad_x and grad_weight.
Everything backward calls is differentiable (the bias+ELU backward op has an autograd formula
of its own), so double backward is exact.
"""
from ..params import result_backward_valid
from .bias_elu import bias_elu_backward_op


def save_epilogue_context(ctx, x, weight, bias, output, alpha, scale, input_scale):
    """Keep what backward reads: y; x when the weight needs a gradient and the weight when x
    needs one (a first layer's images need none: then the weight, or its autocast copy, is not
    kept, as torch's convolution and linear do not keep it). Without a result-recoverable
    derivative (``params.result_backward_valid``) x, weight and bias instead: backward
    recomputes z."""
    ctx.elu = (alpha, scale, input_scale)
    ctx.has_bias = bias is not None
    ctx.from_result = result_backward_valid(alpha, scale, input_scale)
    recompute = not ctx.from_result
    ctx.save_for_backward(x if recompute or ctx.needs_input_grad[1] else None,
                          weight if recompute or ctx.needs_input_grad[0] else None,
                          output if ctx.from_result else None, bias if recompute else None)


def epilogue_backward(ctx, grad_y, recompute_gemm, dim):
    """(x, weight, grad_z, grad_bias or None) for a context saved by ``save_epilogue_context``
    (x or the weight None where it was not kept).

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
