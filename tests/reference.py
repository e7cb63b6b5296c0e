"""One float64 reference and one tolerance table for every test."""
import math

import torch

aten = torch.ops.aten

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"

DTYPES = [torch.float16, torch.bfloat16, torch.float32, torch.float64]

# Tolerances of a once-rounded result against the float64 reference of the same inputs.
# bf16: the interpreter truncates fp32 -> bf16 stores instead of rounding (docs/interpreter.md),
# so up to one bf16 ulp (2^-7 relative) is allowed; on a GPU it rounds to nearest.
TOLERANCES = {
    torch.float16: dict(atol=1e-5, rtol=1e-3),
    torch.bfloat16: dict(atol=1e-4, rtol=8e-3),
    torch.float32: dict(atol=1e-7, rtol=4e-6),
    torch.float64: dict(atol=1e-14, rtol=1e-12),
}

# Gradients are computed from the rounded output y (no pre-activation is kept), so for
# z <= 0 the derivative input_scale * (y + alpha * scale) carries y's rounding error as an
# absolute error of up to |grad_y| * input_scale * ulp(1): with |grad_y| <= ~8 in these tests
# that is ~4e-3 in fp16 and ~3e-2 in bf16 (a full ulp: the interpreter truncates bf16).
GRAD_TOLERANCES = {
    torch.float16: dict(atol=8e-3, rtol=4e-3),
    torch.bfloat16: dict(atol=6e-2, rtol=3e-2),
    torch.float32: dict(atol=1e-5, rtol=1e-5),
    torch.float64: dict(atol=1e-12, rtol=1e-10),
}

SELU = dict(alpha=1.6732632423543772848170429916717, scale=1.0507009873554804934193349852946,
            input_scale=1.0)

# (alpha, scale, input_scale): plain ELU, a general one, SELU, CELU(2), negative alpha.
ELU_PARAMS = [
    (1.0, 1.0, 1.0),
    (0.5, 2.0, 0.7),
    (SELU["alpha"], SELU["scale"], 1.0),
    (2.0, 1.0, 0.5),
    (-0.5, 1.0, 1.0),
]


def bias_view(bias, ndim, dim):
    shape = [1] * ndim
    shape[dim] = bias.shape[0]
    return bias.view(shape)


def ref_bias_elu(x, bias=None, alpha=1.0, scale=1.0, input_scale=1.0, dim=1):
    """float64 elu(x + bias), computed from the (already rounded) inputs."""
    z = x.double()
    if bias is not None:
        z = z + bias_view(bias.double(), x.dim(), dim)
    return aten.elu(z, alpha, scale, input_scale)


def ref_bias_elu_grads(x, bias, grad_y, alpha=1.0, scale=1.0, input_scale=1.0, dim=1):
    """float64 (grad_x, grad_bias) of elu(x + bias) by autograd."""
    xd = x.detach().double().requires_grad_()
    bd = bias.detach().double().requires_grad_() if bias is not None else None
    y = ref_bias_elu(xd, bd, alpha, scale, input_scale, dim)
    inputs = [xd] + ([bd] if bd is not None else [])
    grads = torch.autograd.grad(y, inputs, grad_y.double())
    # NaN in, NaN out: the gradient at a NaN pre-activation is NaN (torch's CPU kernel gives
    # that on its vectorized path but grad * scale on its scalar tail, so fix it here).
    z = x.double() if bias is None else x.double() + bias_view(bias.double(), x.dim(), dim)
    grad_x = grads[0].masked_fill(torch.isnan(z), float("nan"))
    grad_bias = None
    if bd is not None:
        other_dims = [d for d in range(z.dim()) if d != dim % z.dim()]
        nan_channel = torch.isnan(z).any(dim=other_dims) if other_dims else torch.isnan(z)
        grad_bias = grads[1].masked_fill(nan_channel, float("nan"))
    return grad_x, grad_bias


def assert_close(actual, expected, dtype=None, tolerances=TOLERANCES):
    """Compare ``actual`` (any dtype) with a float64 ``expected``; NaNs must match."""
    dtype = dtype or actual.dtype
    torch.testing.assert_close(actual.double(), expected.double(), equal_nan=True,
                               **tolerances[dtype])


def randn(shape, dtype, device=DEVICE, special=False):
    """Fresh normal inputs in ``dtype``; with ``special`` also 0, -0.0, NaN and +-inf."""
    x = torch.randn(shape, dtype=torch.float64, device=device) * 2
    flat = x.view(-1)
    if special and flat.numel() >= 6:
        flat[:6] = torch.tensor([0.0, -0.0, float("nan"), float("inf"), -float("inf"), -1e-30],
                                dtype=torch.float64)
    return x.to(dtype)

# GEMM outputs: the fp32 (or fp64) accumulation over K adds error beyond the final rounding.
# Inputs are scaled so outputs are O(1) (weights ~ 1/sqrt(fan_in)).
GEMM_TOLERANCES = {
    torch.float16: dict(atol=3e-3, rtol=2e-3),
    torch.bfloat16: dict(atol=2.5e-2, rtol=1.6e-2),
    torch.float32: dict(atol=2e-5, rtol=2e-5),
    torch.float64: dict(atol=1e-12, rtol=1e-10),
}


def assert_grad_close(actual, expected, dtype, n_terms):
    """Compare a gradient with its float64 reference when each of its elements is a sum of
    ``n_terms`` products (a bias gradient sums N*H*W terms, a weight gradient N*OH*OW).

    Each term carries the rounding error of the once-rounded tensors it is made of (the table
    ``GRAD_TOLERANCES`` is sized for one such term); the errors have random signs (they follow
    grad_y's), so their sum grows like sqrt(n_terms), the way rounding error accumulates, not
    like n_terms. The fp32 (fp64) accumulation itself adds far less.
    """
    tol = GRAD_TOLERANCES[dtype]
    torch.testing.assert_close(actual.double(), expected.double(), equal_nan=True,
                               atol=tol["atol"] * math.sqrt(max(1, n_terms)), rtol=tol["rtol"])
