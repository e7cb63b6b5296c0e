"""Fused bias-add + ELU family: forward and backward kernels, their configs and launchers.

Both kernels walk a dense tensor as flat storage (see :mod:`elutriton._layout`); the bias
channel of flat offset p is ``(p // n_inner) % n_channels``. Non-dense inputs are packed
by the caller first.
"""
import torch
import triton
import triton.language as tl

from .._runtime import INTERPRET, needs_int64_index
from .elu_math import (ELU_PARAM, elu_forward, elu_grad_from_input, elu_grad_from_result,
                       elu_params)
from .launch import FixedLaunch, no_launch
from .tuning import autotune, compute_dtype, online_autotune_requested

# ---------------------------------------------------------------------------------------
# Forward: y = elu(x + bias[channel])
# ---------------------------------------------------------------------------------------
FORWARD_CONFIGS = [
    triton.Config({"BLOCK_SIZE": 1024}, num_warps=4),
    triton.Config({"BLOCK_SIZE": 2048}, num_warps=8),
    triton.Config({"BLOCK_SIZE": 4096}, num_warps=8),
]
FORWARD_INTERPRETER_CONFIG = triton.Config({"BLOCK_SIZE": 8192}, num_warps=4)


def default_forward_config(n_elements):
    """The config without ELUTRITON_AUTOTUNE=1 (no benchmarking inside a call; PREDICTED, not
    measured per size): the 1024-element tile for small tensors, where more programs keep
    more SMs busy, 4096 elements per 8-warp program from 4M elements on."""
    return FORWARD_CONFIGS[0] if n_elements < 2**22 else FORWARD_CONFIGS[2]


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


def plan_bias_elu_forward(n_elements, n_channels, n_inner, dtype, has_bias):
    """``run(x, bias, y, alpha, scale, input_scale)`` for dense ``x``/``y`` of equal strides
    (``y`` may be ``x``) with this metadata; the config and grid are fixed here."""
    if n_elements == 0:
        return no_launch

    def grid(meta):
        return (triton.cdiv(n_elements, meta["BLOCK_SIZE"]),)

    if INTERPRET:
        config = FORWARD_INTERPRETER_CONFIG
    else:
        config = None if online_autotune_requested() else default_forward_config(n_elements)
    launch = FixedLaunch(
        bias_elu_forward_kernel, grid, config,
        dict(HAS_BIAS=has_bias, COMPUTE_DTYPE=compute_dtype(dtype),
             INT64_INDEX=needs_int64_index(n_elements)))

    def run(x, bias, y, alpha, scale, input_scale):
        launch(x, x if bias is None else bias, y, n_elements, n_channels, n_inner, alpha, scale,
               input_scale)
    return run


def launch_bias_elu_forward(x, bias, y, n_channels, n_inner, alpha, scale, input_scale):
    """Plan and run the forward kernel once (benchmarks and tests; the ops cache the plan)."""
    plan_bias_elu_forward(x.numel(), n_channels, n_inner, x.dtype, bias is not None)(
        x, bias, y, float(alpha), float(scale), float(input_scale))
    return y


# ---------------------------------------------------------------------------------------
# Backward: grad_z = grad_y * elu'(.), grad_bias[c] = sum of grad_z over channel c.
# The dense storage is walked as a row-major matrix of BLOCK_R x BLOCK_COL tiles:
#   channels innermost (channels_last, [..., C]):  [n_outer, C]        columns are channels
#   channel runs (NCHW):                            [n_outer * C, n_inner]  row r is channel r % C
# Each program owns one column block and a run of rows, so the bias partial sums stay in
# registers. No atomics: each program writes its partial sums to its own slot of a
# [n_partials, C] fp32 (fp64) buffer, and one small kernel sums the slots in a fixed order and
# casts once (deterministic for a given plan). Where one program covers every row of every
# channel (n_partials == 1: small tensors, the common host-bound case) the main kernel writes
# grad_bias in its final dtype itself: no buffer, no second launch, no zero-fill, no cast.
#   channels innermost: slot = row program,                  n_partials = row programs
#   channel runs:       slot = (column block, batch index),  n_partials = col blocks * n_outer
# ---------------------------------------------------------------------------------------
# Elements per tile (power of two); tile shape follows the layout, it is not autotuned.
BACKWARD_TILE_ELEMENTS = 8192 if INTERPRET else 2048
# Programs to aim for: enough to fill an H100's 132 SMs several times over.
BACKWARD_TARGET_PROGRAMS = 1 if INTERPRET else 8 * 132
MAX_GRID_AXIS_1 = 65535
# Channels innermost: at most this many columns (channels) per tile, so a wide layer (a linear
# layer's 2048 features) splits into column blocks, whose programs need no partial sums of
# each other, and at most MAX_BIAS_PARTIALS row programs per column block, so the partial
# buffer stays small next to the tensor and the reduction kernel reads it in one or a few
# steps. Before these bounds a [1024, 2048] gradient walked 1 x 2048 tiles in 1024 row
# programs: an 8.4 MB fp32 partial buffer next to 12.6 MB of gradient traffic, summed by 16
# programs of 32 serial steps each; it is the likeliest cause of the fused linear's slower
# forward+backward on the H100 (0.74x eager; PREDICTED, not yet re-measured).
BACKWARD_MAX_COLUMNS = 128
MAX_BIAS_PARTIALS = 256


def backward_tile(n_rows, n_cols, channels_in_columns):
    """(BLOCK_R, BLOCK_COL, num_warps) for a [n_rows, n_cols] row-major walk."""
    max_cols = BACKWARD_MAX_COLUMNS if channels_in_columns else BACKWARD_TILE_ELEMENTS
    block_col = min(triton.next_power_of_2(max(n_cols, 1)), max_cols, BACKWARD_TILE_ELEMENTS)
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
    grad_y_ptr, saved_ptr, bias_ptr, grad_z_ptr, partial_ptr,
    n_rows, n_cols, n_channels, rows_per_program,
    alpha: ELU_PARAM, scale: ELU_PARAM, input_scale: ELU_PARAM,
    CHANNELS_IN_COLUMNS: tl.constexpr, FROM_RESULT: tl.constexpr, HAS_BIAS: tl.constexpr,
    BIAS_GRAD: tl.constexpr, COMPUTE_DTYPE: tl.constexpr, INT64_INDEX: tl.constexpr,
    BLOCK_R: tl.constexpr, BLOCK_COL: tl.constexpr,
):
    """grad_z = grad_y * dy/dz, and per-program partial sums of grad_z per channel.

    grad_y, saved and grad_z are dense with equal strides, walked as a row-major
    ``[n_rows, n_cols]`` matrix (see the comment above).

    Args:
        grad_y_ptr: incoming gradient dL/dy.
        saved_ptr: the forward result y if FROM_RESULT, else the forward input x.
        bias_ptr: the forward bias (read only when not FROM_RESULT and HAS_BIAS, to form z).
        grad_z_ptr: output dL/dz (= dL/dx).
        partial_ptr: bias-gradient sums (written only with BIAS_GRAD), row-major
            ``[n_partials, n_channels]``: with CHANNELS_IN_COLUMNS, row = program_id(1);
            else row = program_id(0) * (n_rows / n_channels) + batch index. When it has one
            row (n_partials == 1) it is grad_bias itself and takes the final dtype.
        n_rows, n_cols: the matrix view of the storage.
        n_channels: bias length; the channel of (row, col) is col if CHANNELS_IN_COLUMNS
            else row % n_channels.
        rows_per_program: rows each program walks (a multiple of BLOCK_R).
        alpha, scale, input_scale: aten ``elu`` parameters (fp64 scalars, see ``ELU_PARAM``).
        CHANNELS_IN_COLUMNS: the layout case (channels innermost or channel runs).
        FROM_RESULT: derivative from y (``elu_grad_from_result``) or from z = x + bias.
        HAS_BIAS: the forward added a bias. BIAS_GRAD: write the bias-gradient sums.
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
                # row r = (batch, channel) -> slot (column block, batch), column channel:
                # partial offset col_block * n_rows + r.
                row_sums = tl.sum(tl.where(mask, grad_z, 0.0), axis=1)
                tl.store(partial_ptr + tl.program_id(0) * n_rows + rows,
                         row_sums.to(partial_ptr.dtype.element_ty), mask=row_mask)
    if BIAS_GRAD and CHANNELS_IN_COLUMNS:
        tl.store(partial_ptr + tl.program_id(1) * n_cols + cols,
                 tl.sum(acc, axis=0).to(partial_ptr.dtype.element_ty), mask=col_mask)


@triton.jit
def bias_grad_reduce_kernel(partial_ptr, grad_bias_ptr, n_partials, n_channels,
                            BLOCK_P: tl.constexpr, BLOCK_C: tl.constexpr):
    """grad_bias[c] = sum over p of partial[p, c], in a fixed order, cast once.

    Args:
        partial_ptr: row-major ``[n_partials, n_channels]`` fp32 (fp64) sums.
        grad_bias_ptr: output ``[n_channels]`` in the parameter's dtype.
        n_partials, n_channels: the buffer's shape.
        BLOCK_P, BLOCK_C: rows summed per step, channels per program.
    """
    cols = tl.program_id(0) * BLOCK_C + tl.arange(0, BLOCK_C)
    col_mask = cols < n_channels
    acc = tl.zeros([BLOCK_P, BLOCK_C], dtype=partial_ptr.dtype.element_ty)
    for p0 in range(0, n_partials, BLOCK_P):
        rows = p0 + tl.arange(0, BLOCK_P)
        mask = (rows < n_partials)[:, None] & col_mask[None, :]
        acc += tl.load(partial_ptr + rows[:, None] * n_channels + cols[None, :], mask=mask,
                       other=0.0)
    tl.store(grad_bias_ptr + cols, tl.sum(acc, axis=0).to(grad_bias_ptr.dtype.element_ty),
             mask=col_mask)


# Reduction tile: 128 partial rows x 32 channels per step, so the grid has a program per 32
# channels and MAX_BIAS_PARTIALS rows take two steps (each step waits for its loads).
REDUCE_BLOCK_P = 128
REDUCE_BLOCK_C = 32


def backward_grid(n_rows, n_cols, block_r, block_col, cap_partials):
    """(column blocks, row programs, rows per program) for the backward walk; with
    ``cap_partials`` (channels innermost, bias gradient wanted) at most MAX_BIAS_PARTIALS row
    programs, as each writes a row of partial sums."""
    col_blocks = triton.cdiv(n_cols, block_col)
    row_programs = max(1, min(triton.cdiv(n_rows, block_r), MAX_GRID_AXIS_1,
                              BACKWARD_TARGET_PROGRAMS // col_blocks,
                              MAX_BIAS_PARTIALS if cap_partials else MAX_GRID_AXIS_1))
    rows_per_program = triton.cdiv(triton.cdiv(n_rows, row_programs), block_r) * block_r
    return col_blocks, triton.cdiv(n_rows, rows_per_program), rows_per_program


def plan_bias_elu_backward(split, dtype, device, from_result, has_bias, bias_grad):
    """``run(grad_y, saved, bias, grad_z, alpha, scale, input_scale) -> grad_bias or None``.

    ``grad_y``/``saved``/``grad_z`` dense with equal strides, split ``(n_outer, n_channels,
    n_inner)``; ``bias`` contiguous or None. grad_bias is new, in ``dtype``.
    """
    n_outer, n_channels, n_inner = split
    n_rows, n_cols, channels_in_columns = backward_matrix(split)
    if n_rows * n_cols == 0:
        def run_empty(grad_y, saved, bias, grad_z, alpha, scale, input_scale):
            return torch.zeros(n_channels, dtype=dtype, device=device) if bias_grad else None
        return run_empty
    block_r, block_col, num_warps = backward_tile(n_rows, n_cols, channels_in_columns)
    col_blocks, row_programs, rows_per_program = backward_grid(
        n_rows, n_cols, block_r, block_col, bias_grad and channels_in_columns)
    n_partials = row_programs if channels_in_columns else col_blocks * n_outer
    acc_dtype = torch.float64 if dtype == torch.float64 else torch.float32
    main = FixedLaunch(
        bias_elu_backward_kernel, lambda meta: (col_blocks, row_programs),
        triton.Config({"BLOCK_R": block_r, "BLOCK_COL": block_col}, num_warps=num_warps),
        dict(CHANNELS_IN_COLUMNS=channels_in_columns, FROM_RESULT=from_result,
             HAS_BIAS=has_bias, BIAS_GRAD=bias_grad, COMPUTE_DTYPE=compute_dtype(dtype),
             INT64_INDEX=needs_int64_index(n_rows * n_cols + rows_per_program * n_cols)))
    reduce = None
    if bias_grad and n_partials > 1:
        reduce = FixedLaunch(
            bias_grad_reduce_kernel, lambda meta: (triton.cdiv(n_channels, REDUCE_BLOCK_C),),
            triton.Config({"BLOCK_P": REDUCE_BLOCK_P, "BLOCK_C": REDUCE_BLOCK_C}, num_warps=4),
            {})

    def run(grad_y, saved, bias, grad_z, alpha, scale, input_scale):
        grad_bias = partial = None
        if bias_grad:
            grad_bias = torch.empty(n_channels, dtype=dtype, device=device)
            partial = grad_bias if reduce is None else torch.empty(
                n_partials * n_channels, dtype=acc_dtype, device=device)
        main(grad_y, saved, saved if bias is None else bias, grad_z,
             grad_z if partial is None else partial, n_rows, n_cols, n_channels,
             rows_per_program, alpha, scale, input_scale)
        if reduce is not None:
            reduce(partial, grad_bias, n_partials, n_channels)
        return grad_bias
    return run
