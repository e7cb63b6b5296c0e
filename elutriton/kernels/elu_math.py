"""Shared ``@triton.jit`` helpers: accurate expm1 and the ELU-family epilogue.

Every kernel in elutriton calls these, so the numerics live in one place.

ELU family (aten ``elu(x, alpha, scale, input_scale)``)::

    y = scale * z                                  for z > 0
    y = alpha * scale * expm1(input_scale * z)     for z <= 0 (and NaN propagates)

Derivative, written two ways (aten ``elu_backward``)::

    from the result y:  dy/dz = scale                              for y > 0
                        dy/dz = input_scale * (y + alpha * scale)   for y <= 0
    from the input z:   dy/dz = scale                              for z > 0
                        dy/dz = alpha * scale * input_scale * exp(input_scale * z)  for z <= 0

A NaN pre-activation gets a NaN gradient, as in torch's vectorized CPU kernel (its scalar
path and its CUDA kernel return grad * scale there; NaN-in, NaN-out is the rule we keep).
"""
import triton
import triton.language as tl

# Below this magnitude expm1 uses its Taylor series; above it exp(x) - 1 loses at most
# a factor exp(x) / |expm1(x)| <= 1.55 to cancellation, i.e. about one ulp.
EXPM1_SERIES_CUTOFF = tl.constexpr(0.5)


@triton.jit
def expm1(x):
    """exp(x) - 1, accurate near 0, built only from ``tl.exp``/``tl.log``.

    ``libdevice.expm1`` is unavailable in the Triton interpreter and the naive
    ``exp(x) - 1`` has large relative error for small |x|. fp32: a degree-8 Taylor series for
    |x| < 0.5 (truncation error < 1.1e-8 relative) and exp(x) - 1 beyond. fp64: Kahan's
    ``(u - 1) * x / log(u)`` with u = exp(x), exact to a few ulp when exp/log are correctly
    rounded (they are in fp64 on both the GPU and the interpreter).

    Args:
        x: a block of fp32 or fp64 values. NaN gives NaN, -inf gives -1, +inf gives +inf.
    """
    if x.dtype == tl.float64:
        u = tl.exp(x)
        um1 = u - 1.0
        kahan = um1 * x / tl.log(u)
        # u == 1: x is below half an ulp, expm1(x) == x. u == 0: x -> -inf, expm1 == -1.
        # u == inf: the ratio is inf / inf, expm1 == inf.
        res = tl.where(u == 1.0, x, tl.where(um1 == -1.0, -1.0, kahan))
        return tl.where(u == float("inf"), u, res)
    else:
        # Horner form of x + x^2/2! + ... + x^8/8!
        p = 1.0 / 40320.0
        p = p * x + 1.0 / 5040.0
        p = p * x + 1.0 / 720.0
        p = p * x + 1.0 / 120.0
        p = p * x + 1.0 / 24.0
        p = p * x + 1.0 / 6.0
        p = p * x + 0.5
        p = p * x + 1.0
        series = p * x
        return tl.where(tl.abs(x) < EXPM1_SERIES_CUTOFF, series, tl.exp(x) - 1.0)


# Kernels declare the ELU parameters with this annotation so a compiled kernel receives them as
# fp64 scalars (a plain Python float argument is passed as fp32, which would round SELU's scale
# by 3e-8 relative: wrong for fp64 tensors). ``elu_params`` then rounds them once to the
# compute dtype, so fp32 kernels keep fp32 arithmetic, as torch's opmath does.
ELU_PARAM = tl.float64


@triton.jit
def elu_params(alpha, scale, input_scale, COMPUTE_DTYPE: tl.constexpr):
    """``(alpha, scale, input_scale)`` in the compute dtype: rounded to fp32 for fp32 compute,
    kept exact (fp64 on the GPU, Python floats in the interpreter) for fp64 compute."""
    if COMPUTE_DTYPE != tl.float64:
        alpha = tl.cast(alpha, tl.float32)
        scale = tl.cast(scale, tl.float32)
        input_scale = tl.cast(input_scale, tl.float32)
    return alpha, scale, input_scale


# What the negative branch sees in place of a positive z (its result is discarded there): a
# finite negative number, so no exp overflows. Not 0.0: with 0.0, `where(z > 0, 0.0, z)` equals
# `where(z >= 0, 0.0, z)` up to the sign of zero, and triton 3.6 made that rewrite for fp16/bf16
# inputs on sm_90, turning -0.0 into +0.0 (caught by tests/test_bias_elu.py on an H100).
POSITIVE_STAND_IN = tl.constexpr(-1.0)


@triton.jit
def nonpositive_part(z):
    """``z`` where ``z <= 0`` (keeping -0.0 and NaN), a finite negative stand-in elsewhere."""
    return tl.where(z > 0, POSITIVE_STAND_IN, z)


@triton.jit
def elu_forward(z, alpha, scale, input_scale):
    """ELU family on a block ``z`` already in the compute dtype (fp32 or fp64).

    ``alpha``, ``scale``, ``input_scale`` are aten's ``elu`` parameters. The exponential is
    evaluated on the non-positive part of z only, so large positive z never produces inf in
    the unused branch; NaN stays NaN because ``tl.where(z > 0, ...)`` sends it to the negative
    branch, where expm1(NaN) is NaN, as in torch; -0.0 gives -0.0.
    """
    z_nonpos = nonpositive_part(z)
    negative = (alpha * scale) * expm1(z_nonpos * input_scale)
    return tl.where(z > 0, z * scale, negative)


@triton.jit
def elu_grad_from_result(grad_y, y, alpha, scale, input_scale):
    """dL/dz from dL/dy and the saved result y (aten ``elu_backward(is_result=True)``).

    dy/dz = scale for y > 0, else input_scale * (y + alpha * scale). Valid when alpha >= 0,
    scale > 0 and input_scale > 0 (then y > 0 exactly when z > 0); the host checks this.
    A NaN y gives a NaN gradient (it takes the second branch).
    """
    return tl.where(y > 0, grad_y * scale, grad_y * input_scale * (y + alpha * scale))


@triton.jit
def elu_grad_from_input(grad_y, z, alpha, scale, input_scale):
    """dL/dz from dL/dy and the pre-activation z (aten ``elu_backward(is_result=False)``).

    dy/dz = scale for z > 0, else alpha * scale * input_scale * exp(input_scale * z).
    A NaN z gives a NaN gradient (exp(NaN) in the second branch).
    """
    z_nonpos = nonpositive_part(z)
    negative = grad_y * (alpha * scale * input_scale) * tl.exp(z_nonpos * input_scale)
    return tl.where(z > 0, grad_y * scale, negative)


@triton.jit
def bias_elu_epilogue(acc, bias_ptrs, bias_mask, alpha, scale, input_scale,
                      HAS_BIAS: tl.constexpr):
    """GEMM epilogue on a [BLOCK_M, BLOCK_N] accumulator, still in fp32/fp64.

    Adds ``bias[n]`` (loaded from ``bias_ptrs``, a [BLOCK_N] block of pointers, masked by
    ``bias_mask``) along the columns, then applies the ELU family. The caller casts once and
    stores once.
    """
    if HAS_BIAS:
        acc += tl.load(bias_ptrs, mask=bias_mask, other=0.0).to(acc.dtype)[None, :]
    return elu_forward(acc, alpha, scale, input_scale)
