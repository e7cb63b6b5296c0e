"""Fused bias-add + ELU family: forward and backward kernels, their configs and launchers.

Both kernels walk a dense tensor as flat storage (see :mod:`elutriton._layout`); the bias
channel of flat offset p is ``(p // n_inner) % n_channels``. Non-dense inputs are packed
by the caller first.
"""
import triton
import triton.language as tl

from .._runtime import INTERPRET, needs_int64_index
from .elu_math import (ELU_PARAM, elu_forward, elu_grad_from_input, elu_grad_from_result,
                       elu_params)
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


# The in-place op runs this kernel with y_ptr == x_ptr: autotuning must restore x after each
# timed run, or the winning config would see x with ELU applied once per earlier run.
@autotune(FORWARD_CONFIGS, FORWARD_INTERPRETER_CONFIG, key=["n_elements", "HAS_BIAS"],
          restore_value=["x_ptr"])
@triton.jit
def bias_elu_forward_kernel(
    x_ptr, bias_ptr, y_ptr,
    n_elements, n_channels, n_inner,
    alpha: ELU_PARAM, scale: ELU_PARAM, input_scale: ELU_PARAM,
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
        alpha, scale, input_scale: aten ``elu`` parameters (fp64 scalars, see ``ELU_PARAM``).
        HAS_BIAS: add the bias before the activation.
        COMPUTE_DTYPE: tl.float32 (fp16/bf16/fp32 inputs) or tl.float64.
        INT64_INDEX: compute offsets in int64 (storage extent past 2^31 - 1).
        BLOCK_SIZE: elements per program.
    """
    alpha, scale, input_scale = elu_params(alpha, scale, input_scale, COMPUTE_DTYPE)
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
# The dense storage is walked as a row-major matrix of BLOCK_R x BLOCK_COL tiles:
#   channels innermost (channels_last, [..., C]):  [n_outer, C]        columns are channels
#   channel runs (NCHW):                            [n_outer * C, n_inner]  row r is channel r % C
# Each program owns one column block and a run of rows, so the bias partial sums stay in
# registers and reach grad_bias with one atomic add per channel per program (channels
# innermost) or per row (channel runs).
# ---------------------------------------------------------------------------------------
# Elements per tile (power of two); tile shape follows the layout, it is not autotuned.
BACKWARD_TILE_ELEMENTS = 8192 if INTERPRET else 2048
# Programs to aim for: enough to fill an H100's 132 SMs several times over.
BACKWARD_TARGET_PROGRAMS = 1 if INTERPRET else 8 * 132
MAX_GRID_AXIS_1 = 65535


def backward_tile(n_rows, n_cols):
    """(BLOCK_R, BLOCK_COL, num_warps) for a [n_rows, n_cols] row-major walk."""
    block_col = min(triton.next_power_of_2(max(n_cols, 1)), BACKWARD_TILE_ELEMENTS)
    block_r = min(triton.next_power_of_2(max(n_rows, 1)),
                  max(1, BACKWARD_TILE_ELEMENTS // block_col))
    num_warps = 4 if block_r * block_col <= 1024 else 8
    return block_r, block_col, num_warps


def backward_matrix(split):
    """(n_rows, n_cols, channels_in_columns) for a ``(n_outer, n_channels, n_inner)`` split."""
    n_outer, n_channels, n_inner = split
    if n_inner == 1:
        return n_outer, n_channels, True
    return n_outer * n_channels, n_inner, False


@triton.jit
def bias_elu_backward_kernel(
    grad_y_ptr, saved_ptr, bias_ptr, grad_z_ptr, grad_bias_ptr,
    n_rows, n_cols, n_channels, rows_per_program,
    alpha: ELU_PARAM, scale: ELU_PARAM, input_scale: ELU_PARAM,
    CHANNELS_IN_COLUMNS: tl.constexpr, FROM_RESULT: tl.constexpr, HAS_BIAS: tl.constexpr,
    BIAS_GRAD: tl.constexpr, COMPUTE_DTYPE: tl.constexpr, INT64_INDEX: tl.constexpr,
    BLOCK_R: tl.constexpr, BLOCK_COL: tl.constexpr,
):
    """grad_z = grad_y * dy/dz and grad_bias = sum(grad_z) over all but the channel dim.

    grad_y, saved and grad_z are dense with equal strides, walked as a row-major
    ``[n_rows, n_cols]`` matrix (see the comment above).

    Args:
        grad_y_ptr: incoming gradient dL/dy.
        saved_ptr: the forward result y if FROM_RESULT, else the forward input x.
        bias_ptr: the forward bias (read only when not FROM_RESULT and HAS_BIAS, to form z).
        grad_z_ptr: output dL/dz (= dL/dx).
        grad_bias_ptr: fp32/fp64 buffer of n_channels, zeroed by the caller, summed into.
        n_rows, n_cols: the matrix view of the storage.
        n_channels: bias length; the channel of (row, col) is col if CHANNELS_IN_COLUMNS
            else row % n_channels.
        rows_per_program: rows each program walks (a multiple of BLOCK_R).
        alpha, scale, input_scale: aten ``elu`` parameters (fp64 scalars, see ``ELU_PARAM``).
        CHANNELS_IN_COLUMNS: the layout case (channels innermost or channel runs).
        FROM_RESULT: derivative from y (``elu_grad_from_result``) or from z = x + bias.
        HAS_BIAS: the forward added a bias. BIAS_GRAD: accumulate grad_bias.
        COMPUTE_DTYPE: tl.float32 or tl.float64. INT64_INDEX: compute offsets in int64.
        BLOCK_R, BLOCK_COL: tile extent along rows and columns.
    """
    alpha, scale, input_scale = elu_params(alpha, scale, input_scale, COMPUTE_DTYPE)
    cols = tl.program_id(0) * BLOCK_COL + tl.arange(0, BLOCK_COL)
    row_start = tl.program_id(1) * rows_per_program
    if INT64_INDEX:
        row_start = row_start.to(tl.int64)
    row_end = tl.minimum(row_start + rows_per_program, n_rows)
    col_mask = cols < n_cols
    if HAS_BIAS and not FROM_RESULT and CHANNELS_IN_COLUMNS:
        col_bias = tl.load(bias_ptr + cols, mask=col_mask, other=0.0).to(COMPUTE_DTYPE)
    acc = tl.zeros([BLOCK_R, BLOCK_COL], dtype=COMPUTE_DTYPE)
    for r0 in range(row_start, row_end, BLOCK_R):
        rows = r0 + tl.arange(0, BLOCK_R)
        row_mask = rows < row_end
        mask = row_mask[:, None] & col_mask[None, :]
        offsets = rows[:, None] * n_cols + cols[None, :]
        grad_y = tl.load(grad_y_ptr + offsets, mask=mask, other=0.0).to(COMPUTE_DTYPE)
        saved = tl.load(saved_ptr + offsets, mask=mask, other=0.0).to(COMPUTE_DTYPE)
        if FROM_RESULT:
            grad_z = elu_grad_from_result(grad_y, saved, alpha, scale, input_scale)
        else:
            if HAS_BIAS:
                if CHANNELS_IN_COLUMNS:
                    saved += col_bias[None, :]
                else:
                    row_bias = tl.load(bias_ptr + rows % n_channels, mask=row_mask, other=0.0)
                    saved += row_bias.to(COMPUTE_DTYPE)[:, None]
            grad_z = elu_grad_from_input(grad_y, saved, alpha, scale, input_scale)
        tl.store(grad_z_ptr + offsets, grad_z.to(grad_z_ptr.dtype.element_ty), mask=mask)
        if BIAS_GRAD:
            if CHANNELS_IN_COLUMNS:
                acc += tl.where(mask, grad_z, 0.0)
            else:
                row_sums = tl.sum(tl.where(mask, grad_z, 0.0), axis=1)
                tl.atomic_add(grad_bias_ptr + rows % n_channels, row_sums, mask=row_mask)
    if BIAS_GRAD and CHANNELS_IN_COLUMNS:
        tl.atomic_add(grad_bias_ptr + cols, tl.sum(acc, axis=0), mask=col_mask)


def launch_bias_elu_backward(grad_y, saved, bias, grad_z, grad_bias, split, alpha, scale,
                             input_scale, from_result):
    """Run the backward kernel over dense equal-strided ``grad_y``/``saved``/``grad_z``.

    ``split`` is ``(n_outer, n_channels, n_inner)``; ``grad_bias`` is a zeroed fp32 (fp64 for
    fp64 inputs) buffer of ``n_channels`` or None when no bias gradient is wanted.
    """
    if grad_y.numel() == 0:
        return
    n_rows, n_cols, channels_in_columns = backward_matrix(split)
    block_r, block_col, num_warps = backward_tile(n_rows, n_cols)
    col_blocks = triton.cdiv(n_cols, block_col)
    row_programs = max(1, min(triton.cdiv(n_rows, block_r), MAX_GRID_AXIS_1,
                              BACKWARD_TARGET_PROGRAMS // col_blocks))
    rows_per_program = triton.cdiv(triton.cdiv(n_rows, row_programs), block_r) * block_r
    grid = (col_blocks, triton.cdiv(n_rows, rows_per_program))
    bias_elu_backward_kernel[grid](
        grad_y, saved, bias if bias is not None else saved, grad_z,
        grad_bias if grad_bias is not None else grad_z,
        n_rows, n_cols, split[1], rows_per_program,
        float(alpha), float(scale), float(input_scale),
        CHANNELS_IN_COLUMNS=channels_in_columns, FROM_RESULT=from_result,
        HAS_BIAS=bias is not None, BIAS_GRAD=grad_bias is not None,
        COMPUTE_DTYPE=compute_dtype(grad_y.dtype),
        INT64_INDEX=needs_int64_index(grad_y.numel() + rows_per_program * n_cols),
        BLOCK_R=block_r, BLOCK_COL=block_col, num_warps=num_warps,
    )
