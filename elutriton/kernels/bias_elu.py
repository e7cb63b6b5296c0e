"""Fused bias-add + ELU family: forward and backward kernels, their configs and launchers.

Both kernels walk a dense tensor as flat storage (see :mod:`elutriton._layout`); the bias
channel of flat offset p is ``(p // n_inner) % n_channels``. Non-dense inputs are packed
by the caller first.
"""
import torch
import triton
import triton.language as tl

from .._runtime import INTERPRET, needs_int64_index
from .elu_math import elu_forward, elu_grad_from_input, elu_grad_from_result
from .tuning import autotune, compute_dtype

# ---------------------------------------------------------------------------------------
# Forward: y = elu(x + bias[channel])
# ---------------------------------------------------------------------------------------
FORWARD_CONFIGS = [
    triton.Config({"BLOCK_SIZE": 1024}, num_warps=4),
    triton.Config({"BLOCK_SIZE": 2048}, num_warps=8),
    triton.Config({"BLOCK_SIZE": 4096}, num_warps=8),
]
FORWARD_INTERPRETER_CONFIG = triton.Config({"BLOCK_SIZE": 8192}, num_warps=4)


@autotune(FORWARD_CONFIGS, FORWARD_INTERPRETER_CONFIG, key=["n_elements", "HAS_BIAS"])
@triton.jit
def bias_elu_forward_kernel(
    x_ptr, bias_ptr, y_ptr,
    n_elements, n_channels, n_inner,
    alpha, scale, input_scale,
    HAS_BIAS: tl.constexpr, COMPUTE_DTYPE: tl.constexpr, INT64_INDEX: tl.constexpr,
    BLOCK_SIZE: tl.constexpr,
):
    """y[p] = elu(x[p] + bias[(p // n_inner) % n_channels]) over flat storage offsets p.

    Args:
        x_ptr: input, dense, ``n_elements`` values from its data pointer.
        bias_ptr: 1-D contiguous bias of length ``n_channels`` (unused without HAS_BIAS).
        y_ptr: output, same strides as x, so the same flat offsets.
        n_elements: number of elements of x and y.
        n_channels: length of the bias dimension.
        n_inner: storage stride of the bias dimension (elements per channel run).
        alpha, scale, input_scale: aten ``elu`` parameters.
        HAS_BIAS: add the bias before the activation.
        COMPUTE_DTYPE: tl.float32 (fp16/bf16/fp32 inputs) or tl.float64.
        INT64_INDEX: compute offsets in int64 (storage extent past 2^31 - 1).
        BLOCK_SIZE: elements per program.
    """
    pid = tl.program_id(0)
    if INT64_INDEX:
        pid = pid.to(tl.int64)
    offsets = pid * BLOCK_SIZE + tl.arange(0, BLOCK_SIZE)
    mask = offsets < n_elements
    z = tl.load(x_ptr + offsets, mask=mask).to(COMPUTE_DTYPE)
    if HAS_BIAS:
        channel = (offsets // n_inner) % n_channels
        z += tl.load(bias_ptr + channel, mask=mask).to(COMPUTE_DTYPE)
    y = elu_forward(z, alpha, scale, input_scale)
    tl.store(y_ptr + offsets, y.to(y_ptr.dtype.element_ty), mask=mask)


def launch_bias_elu_forward(x, bias, y, n_channels, n_inner, alpha, scale, input_scale):
    """Run the forward kernel. ``x`` and ``y`` dense with equal strides (``y`` may be ``x``)."""
    n_elements = x.numel()
    if n_elements == 0:
        return y

    def grid(meta):
        return (triton.cdiv(n_elements, meta["BLOCK_SIZE"]),)

    bias_elu_forward_kernel[grid](
        x, bias if bias is not None else x, y,
        n_elements, n_channels, n_inner,
        float(alpha), float(scale), float(input_scale),
        HAS_BIAS=bias is not None,
        COMPUTE_DTYPE=compute_dtype(x.dtype),
        INT64_INDEX=needs_int64_index(n_elements),
    )
    return y


# ---------------------------------------------------------------------------------------
# Backward: grad_z = grad_y * elu'(.), grad_bias[c] = sum of grad_z over channel c.
# The tensor is walked as [n_outer, n_channels, n_inner]; each program owns a
# BLOCK_C x BLOCK_I tile of (channel, inner) and loops over a run of outer rows,
# accumulating grad_z in registers, then adds its per-channel sum to grad_bias atomically.
# ---------------------------------------------------------------------------------------
# Tile sizes are a function of the layout, not tuned: elements per tile per outer row.
BACKWARD_TILE_ELEMENTS = 8192 if INTERPRET else 1024
# Programs to aim for (enough to fill an H100's 132 SMs several times over).
BACKWARD_TARGET_PROGRAMS = 1 if INTERPRET else 4 * 132


def backward_tile(n_channels, n_inner):
    """(BLOCK_C, BLOCK_I, num_warps) for a [n_outer, n_channels, n_inner] walk.

    Channels-innermost layouts (channels_last, [..., C]) tile along C; NCHW tiles along
    the spatial run n_inner, with as many channels as fit.
    """
    block_i = min(triton.next_power_of_2(n_inner), BACKWARD_TILE_ELEMENTS)
    block_c = min(triton.next_power_of_2(n_channels), max(1, BACKWARD_TILE_ELEMENTS // block_i))
    num_warps = 4 if block_c * block_i <= 1024 else 8
    return block_c, block_i, num_warps


@triton.jit
def bias_elu_backward_kernel(
    grad_y_ptr, saved_ptr, bias_ptr, grad_z_ptr, grad_bias_ptr,
    n_outer, n_channels, n_inner, outer_per_program,
    alpha, scale, input_scale,
    FROM_RESULT: tl.constexpr, HAS_BIAS: tl.constexpr, BIAS_GRAD: tl.constexpr,
    COMPUTE_DTYPE: tl.constexpr, INT64_INDEX: tl.constexpr,
    BLOCK_C: tl.constexpr, BLOCK_I: tl.constexpr,
):
    """grad_z = grad_y * dy/dz and grad_bias = sum(grad_z) over all but the channel dim.

    All tensors but the bias are dense with equal strides, walked as flat storage viewed as
    ``[n_outer, n_channels, n_inner]``.

    Args:
        grad_y_ptr: incoming gradient dL/dy.
        saved_ptr: the forward result y if FROM_RESULT, else the forward input x.
        bias_ptr: the forward bias (read only when not FROM_RESULT and HAS_BIAS, to form z).
        grad_z_ptr: output dL/dz (= dL/dx); may alias grad_y_ptr.
        grad_bias_ptr: fp32/fp64 buffer of n_channels, zeroed by the caller, summed into.
        n_outer, n_channels, n_inner: the 3-D view of the storage.
        outer_per_program: outer rows each program accumulates.
        alpha, scale, input_scale: aten ``elu`` parameters.
        FROM_RESULT: derivative from y (``elu_grad_from_result``) or from z = x + bias.
        HAS_BIAS: the forward added a bias.
        BIAS_GRAD: accumulate grad_bias.
        COMPUTE_DTYPE: tl.float32 or tl.float64.
        INT64_INDEX: compute offsets in int64.
        BLOCK_C, BLOCK_I: tile extent along channels and along the inner run.
    """
    pid_outer = tl.program_id(0)
    channels = tl.program_id(1) * BLOCK_C + tl.arange(0, BLOCK_C)
    inner = tl.program_id(2) * BLOCK_I + tl.arange(0, BLOCK_I)
    if INT64_INDEX:
        pid_outer = pid_outer.to(tl.int64)
        channels = channels.to(tl.int64)
    tile_mask = (channels < n_channels)[:, None] & (inner < n_inner)[None, :]
    tile_offsets = channels[:, None] * n_inner + inner[None, :]
    if HAS_BIAS and not FROM_RESULT:
        bias = tl.load(bias_ptr + channels, mask=channels < n_channels).to(COMPUTE_DTYPE)
    row_stride = n_channels * n_inner
    acc = tl.zeros([BLOCK_C, BLOCK_I], dtype=COMPUTE_DTYPE)
    outer_start = pid_outer * outer_per_program
    outer_end = tl.minimum(outer_start + outer_per_program, n_outer)
    for outer in range(outer_start, outer_end):
        offsets = outer * row_stride + tile_offsets
        grad_y = tl.load(grad_y_ptr + offsets, mask=tile_mask, other=0.0).to(COMPUTE_DTYPE)
        saved = tl.load(saved_ptr + offsets, mask=tile_mask, other=0.0).to(COMPUTE_DTYPE)
        if FROM_RESULT:
            grad_z = elu_grad_from_result(grad_y, saved, alpha, scale, input_scale)
        else:
            if HAS_BIAS:
                saved += bias[:, None]
            grad_z = elu_grad_from_input(grad_y, saved, alpha, scale, input_scale)
        tl.store(grad_z_ptr + offsets, grad_z.to(grad_z_ptr.dtype.element_ty), mask=tile_mask)
        if BIAS_GRAD:
            acc += tl.where(tile_mask, grad_z, 0.0)
    if BIAS_GRAD:
        tl.atomic_add(grad_bias_ptr + channels, tl.sum(acc, axis=1), mask=channels < n_channels)


def launch_bias_elu_backward(grad_y, saved, bias, grad_z, grad_bias, split, alpha, scale,
                             input_scale, from_result):
    """Run the backward kernel over dense equal-strided ``grad_y``/``saved``/``grad_z``.

    ``split`` is ``(n_outer, n_channels, n_inner)``; ``grad_bias`` is a zeroed fp32 (fp64 for
    fp64 inputs) buffer of ``n_channels`` or None when no bias gradient is wanted.
    """
    n_outer, n_channels, n_inner = split
    if grad_y.numel() == 0:
        return
    block_c, block_i, num_warps = backward_tile(n_channels, n_inner)
    tiles = triton.cdiv(n_channels, block_c) * triton.cdiv(n_inner, block_i)
    outer_programs = max(1, min(n_outer, BACKWARD_TARGET_PROGRAMS // tiles))
    outer_per_program = triton.cdiv(n_outer, outer_programs)
    grid = (triton.cdiv(n_outer, outer_per_program), triton.cdiv(n_channels, block_c),
            triton.cdiv(n_inner, block_i))
    bias_elu_backward_kernel[grid](
        grad_y, saved, bias if bias is not None else saved, grad_z,
        grad_bias if grad_bias is not None else grad_z,
        n_outer, n_channels, n_inner, outer_per_program,
        float(alpha), float(scale), float(input_scale),
        FROM_RESULT=from_result, HAS_BIAS=bias is not None, BIAS_GRAD=grad_bias is not None,
        COMPUTE_DTYPE=compute_dtype(grad_y.dtype),
        INT64_INDEX=needs_int64_index(grad_y.numel() + n_channels * n_inner * outer_per_program),
        BLOCK_C=block_c, BLOCK_I=block_i, num_warps=num_warps,
    )
