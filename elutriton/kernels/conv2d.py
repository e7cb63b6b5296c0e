"""Implicit-GEMM conv2d with the bias + ELU-family epilogue: configs, kernel, launcher.

GEMM view, per group g:  Y[m, n] = sum_k X_col[m, k] * W[n, k]
  m = (batch, oh, ow) output pixel   (M = N * OH * OW)
  n = output channel within the group (OCg = OC / groups)
  k = (kh, kw, c) tap and input channel within the group (K = KH * KW * Cg)
X_col is never materialised: each K step loads a [BLOCK_M, BLOCK_K] tile of input channels at
one filter tap straight from x, so with channels_last (NHWC) storage a tile row is BLOCK_K
contiguous channels. The K steps are (tap, channel block) pairs, walked in one of two orders
(a config's ``SINGLE_K_LOOP``): taps outside and channel blocks inside (nested loops; Triton
software-pipelines only the inner one, which runs 1-4 steps on small-channel and 3x3 layers),
or all pairs in one loop that Triton pipelines across taps. With fewer than 16 channels per
group (an RGB first layer: 3) a channel tile would be mostly padding (3 live columns of 16,
and one K step per tap), so those convolutions walk the flattened K = KH * KW * Cg instead
(``FLAT_K``): each K step covers several taps, decoded per column.

Split-K (a config's ``SPLIT_K`` > 1, for output grids with fewer tiles than the GPU has SMs):
grid axis 2 splits the K steps into SPLIT_K contiguous ranges; each program writes its fp32
(fp64) partial tile to a ``[SPLIT_K, N * OH * OW, OC]`` buffer, and ``split_k_epilogue.py``
sums the partials in a fixed order, then applies bias + ELU once (ELU is not linear) and
stores y: deterministic for a given config.

The kernel accepts any strides, but the conv op hands it NHWC inputs and [OC, KH, KW,
Cg]-stored weights (the channels_last format), converting NCHW inputs first: with channels
H*W elements apart a K-major tile load would be a gather.

A linear layer is this kernel on a 1x1 image with a 1x1 filter (see ``ops/linear.py``), so
both ops share the loop and the epilogue.
"""
import torch
import triton
import triton.language as tl

from .._runtime import INTERPRET, multiprocessor_count, needs_int64_index
from .conv_tiles import (flat_k_taps, load_input_taps, output_pixel_coords,
                         output_tile_offsets, store_output_tile, tap_input_rows)
from .launch import FixedLaunch, no_launch
from .split_k_epilogue import plan_split_k_epilogue
from .elu_math import ELU_PARAM, bias_elu_epilogue, elu_params
from .tuning import (autotune, online_autotune_requested, register_validator, shape_key,
                     tuned_config)

# BLOCK_M x BLOCK_N output tile, BLOCK_K channels per step; one short list per operand class,
# sized so that every config compiles with zero spills on sm_80 and sm_90 (see
# perf/results/kernel_report.md). These base configs walk K in nested loops, without split-K;
# ``conv_candidates`` adds their single-loop and split-K variants for the tuner. A flattened
# R*S*C K loop with num_warps=8 has miscompiled conv before (pytorch#173068): every flattened
# walk here (FLAT_K, SINGLE_K_LOOP, split-K) is limited to num_warps <= 4.
def _cfg(m, n, k, warps, stages, split_k=1, single_k_loop=False):
    return triton.Config({"BLOCK_M": m, "BLOCK_N": n, "BLOCK_K": k, "SPLIT_K": split_k,
                          "SINGLE_K_LOOP": single_k_loop}, num_warps=warps, num_stages=stages)


CONV_CONFIGS_BY_CLASS = {
    # fp16 / bf16 operands on tensor cores
    "16bit": [_cfg(128, 128, 32, 8, 3), _cfg(128, 64, 32, 4, 4), _cfg(64, 128, 32, 4, 4),
              _cfg(128, 32, 32, 4, 4), _cfg(64, 64, 64, 4, 3), _cfg(64, 16, 16, 4, 3)],
    # fp32 operands on tensor cores as TF32
    "tf32": [_cfg(128, 128, 32, 8, 3), _cfg(128, 64, 32, 8, 3), _cfg(64, 64, 32, 4, 3),
             _cfg(64, 32, 32, 4, 3), _cfg(64, 16, 16, 4, 3)],
    # exact fp32 (FMA) and fp64 (DMMA): smaller tiles, the accumulator lives in registers
    "fp32": [_cfg(64, 64, 16, 8, 2), _cfg(64, 32, 16, 4, 2), _cfg(32, 32, 16, 4, 2)],
    "fp64": [_cfg(64, 32, 16, 8, 2), _cfg(32, 32, 16, 4, 2)],
}
CONV_CONFIGS = [c for configs in CONV_CONFIGS_BY_CLASS.values() for c in configs]
CONV_INTERPRETER_CONFIG = _cfg(128, 64, 32, 4, 1)
# tl.dot needs every tile dimension >= 16.
MIN_DOT_TILE = 16
# Split-K variants: offered for grids of fewer tiles than SMALL_GRID_TILES (about one wave on
# an H100's 132 SMs), SPLIT_K in SPLIT_K_CHOICES, each split keeping >= 2 K steps.
SMALL_GRID_TILES = 132
SPLIT_K_CHOICES = (2, 4, 8)
# Split-K variants run 2 stages (each split's K loop is short; with 3-4 stages some compiled
# with 8-16 byte spills on sm_80, kernel_report.md). Only the tensor-core classes get loop
# variants, and only 16-bit ones split-K: exact fp32 and fp64 are correctness paths, not
# tuned for speed, and in the static report several of their variants and two TF32 split-K
# configs on sm_80 spilled a register (8-16 bytes of stack) where their base configs do not.
SPLIT_K_STAGES = 2
VARIANT_CLASSES = ("16bit", "tf32")
SPLIT_K_CLASSES = ("16bit",)
LOOP_DEFAULTS = {"SPLIT_K": 1, "SINGLE_K_LOOP": False}


def with_loop_defaults(config):
    """``config`` with SPLIT_K and SINGLE_K_LOOP set (tuned-table entries written before they
    existed leave them out: nested loops, no split)."""
    if all(name in config.kwargs for name in LOOP_DEFAULTS):
        return config
    return triton.Config(dict(LOOP_DEFAULTS, **config.kwargs), num_warps=config.num_warps,
                         num_stages=config.num_stages)


def loop_variant(config, num_stages=None, **loop):
    """``config`` with the loop fields ``loop`` (SPLIT_K, SINGLE_K_LOOP) and ``num_stages``."""
    return triton.Config(dict(config.kwargs, **loop), num_warps=config.num_warps,
                         num_stages=num_stages or config.num_stages)


def k_steps(block_k, in_per_group, kernel_h, kernel_w, flat_k):
    """K steps of one output tile: flattened K blocks (FLAT_K) or (tap, channel block) pairs."""
    if flat_k:
        return triton.cdiv(kernel_h * kernel_w * in_per_group, block_k)
    return kernel_h * kernel_w * triton.cdiv(in_per_group, block_k)


def use_flat_k(in_per_group: int) -> bool:
    """Walk the flattened K = KH * KW * Cg when a channel tile would be mostly padding."""
    return in_per_group < MIN_DOT_TILE


def flat_k_config_ok(config) -> bool:
    """Configs the FLAT_K loop may use: 4 warps (a flattened R*S*C K loop with num_warps=8
    has miscompiled conv before, pytorch#173068) and BLOCK_N <= 64 (its per-column tap
    decoding costs registers: 64x128 tiles spilled on sm_90, kernel_report.md)."""
    return config.num_warps <= 4 and config.kwargs["BLOCK_N"] <= 64


def single_loop_config_ok(config) -> bool:
    """Configs the single (tap, channel block) loop may use: 4 warps (pytorch#173068)."""
    return config.num_warps <= 4


def operand_class(dtype: torch.dtype, input_precision) -> str:
    """Which config list serves a dtype: '16bit', 'tf32', 'fp32' (exact) or 'fp64'."""
    if dtype in (torch.float16, torch.bfloat16):
        return "16bit"
    if dtype == torch.float64:
        return "fp64"
    return "tf32" if input_precision == "tf32" else "fp32"


def conv_candidates(cls, in_per_group, out_per_group, kernel_h, kernel_w, flat_k,
                    n_pixels=None, groups=1):
    """The operand class's base configs minus tiles much larger than the problem: BLOCK_N >
    OCg and BLOCK_K > Cg (both rounded up to a power of two >= 16; for FLAT_K the K extent is
    KH * KW * Cg, and only ``flat_k_config_ok`` configs stay). Never empty.

    With ``n_pixels`` (the tuner's sweep, the table validator) and a VARIANT_CLASSES class,
    their loop variants follow: each 4-warp base config with SINGLE_K_LOOP (not for FLAT_K,
    which has one loop anyway), and, for SPLIT_K_CLASSES, split-K variants (SPLIT_K_STAGES
    stages) of those whose grid has fewer than SMALL_GRID_TILES tiles, SPLIT_K in
    SPLIT_K_CHOICES with >= 2 K steps per split."""
    candidates = CONV_CONFIGS_BY_CLASS[cls]
    k_extent = in_per_group
    if flat_k:
        candidates = [c for c in candidates if flat_k_config_ok(c)]
        k_extent *= kernel_h * kernel_w
    n_cap = max(MIN_DOT_TILE, triton.next_power_of_2(out_per_group))
    k_cap = max(MIN_DOT_TILE, triton.next_power_of_2(k_extent))
    kept = [c for c in candidates if c.kwargs["BLOCK_N"] <= n_cap and c.kwargs["BLOCK_K"] <= k_cap]
    kept = kept or [min(candidates, key=lambda c: (c.kwargs["BLOCK_N"], c.kwargs["BLOCK_K"]))]
    if n_pixels is None or cls not in VARIANT_CLASSES:
        return kept
    variants = []
    for config in kept:
        if not single_loop_config_ok(config):
            continue
        if not flat_k:
            variants.append(loop_variant(config, SINGLE_K_LOOP=True))
        tiles = (triton.cdiv(n_pixels, config.kwargs["BLOCK_M"])
                 * triton.cdiv(out_per_group, config.kwargs["BLOCK_N"]) * groups)
        steps = k_steps(config.kwargs["BLOCK_K"], in_per_group, kernel_h, kernel_w, flat_k)
        if tiles < SMALL_GRID_TILES and cls in SPLIT_K_CLASSES:
            variants += [loop_variant(config, SPLIT_K=split, SINGLE_K_LOOP=not flat_k,
                                      num_stages=SPLIT_K_STAGES)
                         for split in SPLIT_K_CHOICES if steps >= 2 * split]
    return kept + variants


def prune_conv_configs(configs, named_args, **kwargs):
    """The autotuner's pruning: ``conv_candidates`` for the call's arguments."""
    cls = operand_class(named_args["x_ptr"].dtype, kwargs.get("INPUT_PRECISION"))
    kept = conv_candidates(cls, named_args["in_per_group"], named_args["out_per_group"],
                           named_args["kernel_h"], named_args["kernel_w"], kwargs.get("FLAT_K"))
    return [c for c in configs if any(c is k for k in kept)]


def default_conv_config(dtype, precision, n_pixels, out_per_group, in_per_group, kernel_h,
                        kernel_w, groups, n_sms):
    """The config of a shape the tuned table misses (no online benchmarking; PREDICTED to be
    reasonable, not measured): the first candidate, largest tiles first, whose grid still
    gives every SM a tile; the smallest tiles where none does."""
    candidates = conv_candidates(operand_class(dtype, precision), in_per_group, out_per_group,
                                 kernel_h, kernel_w, use_flat_k(in_per_group))
    for config in candidates:
        tiles = (triton.cdiv(n_pixels, config.kwargs["BLOCK_M"])
                 * triton.cdiv(out_per_group, config.kwargs["BLOCK_N"]) * groups)
        if tiles >= n_sms:
            return config
    return min(candidates, key=lambda c: c.kwargs["BLOCK_M"] * c.kwargs["BLOCK_N"])


# Bounds of a config a tuned table may hold (``validate_table_entry``): powers of two, and
# num_stages an int in its range; SPLIT_K and SINGLE_K_LOOP may be left out (no split, nested
# loops: the entries written before they existed).
_POW2_BOUNDS = {"BLOCK_M": (16, 256), "BLOCK_N": (16, 256), "BLOCK_K": (16, 128),
                "num_warps": (1, 16), "SPLIT_K": (1, 64)}
_STAGES_BOUNDS = (1, 8)
_SHARED_MEMORY_LIMIT = 227 * 1024  # bytes per block on sm_90 (sm_80: 163 KB; checked there)
_DTYPE_BYTES = {"float16": 2, "bfloat16": 2, "float32": 4, "float64": 8}


def config_entry(config) -> dict:
    """A config as a tuned-table entry (all parameters, loop fields included)."""
    return dict(config.kwargs, num_warps=config.num_warps, num_stages=config.num_stages)


def validate_table_entry(fields, entry):
    """None if ``entry`` is a config this kernel may run at the key ``fields`` (dtype,
    precision, M, OCg, Cg, KH, KW, groups, has_bias), else the reason: the five tile
    parameters (and optionally SPLIT_K, SINGLE_K_LOOP), powers of two in bounds, one of the
    configs ``conv_candidates`` keeps for the key (the operand class's list minus tiles larger
    than the problem; FLAT_K's warp and BLOCK_N limits; the loop variants for the key's M),
    and a shared-memory estimate."""
    required = {"BLOCK_M", "BLOCK_N", "BLOCK_K", "num_warps", "num_stages"}
    if not isinstance(entry, dict) or not required <= set(entry) \
            or not set(entry) <= required | set(LOOP_DEFAULTS):
        return f"expected {sorted(required)}, optionally {sorted(LOOP_DEFAULTS)}"
    entry = dict(LOOP_DEFAULTS, **entry)
    for name, (low, high) in _POW2_BOUNDS.items():
        value = entry[name]
        if type(value) is not int or not low <= value <= high or value & (value - 1):
            return f"{name}={value!r} is not a power of two in [{low}, {high}]"
    if type(entry["SINGLE_K_LOOP"]) is not bool:
        return f"SINGLE_K_LOOP={entry['SINGLE_K_LOOP']!r} is not a bool"
    stages = entry["num_stages"]
    if type(stages) is not int or not _STAGES_BOUNDS[0] <= stages <= _STAGES_BOUNDS[1]:
        return f"num_stages={stages!r} is not an int in {list(_STAGES_BOUNDS)}"
    try:
        dtype, n_pixels, out_pg, in_pg, kernel_h, kernel_w, groups = (
            fields[0], int(fields[2]), int(fields[3]), int(fields[4]), int(fields[5]),
            int(fields[6]), int(fields[7]))
    except (IndexError, ValueError):
        return "malformed key"
    if dtype not in _DTYPE_BYTES:
        return f"unknown dtype {dtype!r}"
    if fields[1] not in ("None", "tf32", "ieee"):
        return f"unknown dot precision {fields[1]!r}"
    if use_flat_k(in_pg) and not flat_k_config_ok(_as_config(entry)):
        return "FLAT_K needs num_warps <= 4 and BLOCK_N <= 64"
    cls = operand_class(getattr(torch, dtype), None if fields[1] == "None" else fields[1])
    candidates = conv_candidates(cls, in_pg, out_pg, kernel_h, kernel_w, use_flat_k(in_pg),
                                 n_pixels, groups)
    if not any(entry == config_entry(c) for c in candidates):
        return "not among the configs the pruning rules keep for this shape"
    smem = ((entry["BLOCK_M"] + entry["BLOCK_N"]) * entry["BLOCK_K"] * _DTYPE_BYTES[dtype]
            * entry["num_stages"])
    if smem > _SHARED_MEMORY_LIMIT:
        return f"operand stages need ~{smem} bytes of shared memory"
    return None


def _as_config(entry):
    return triton.Config({k: v for k, v in entry.items() if k not in ("num_warps", "num_stages")},
                         num_warps=entry["num_warps"], num_stages=entry["num_stages"])


@triton.jit
def load_channel_tiles(x_tap_ptrs, w_tap_ptrs, in_image, mask_n, k0, in_per_group,
                       stride_xc, stride_wi, UPCAST_OPERANDS: tl.constexpr,
                       ACC_DTYPE: tl.constexpr, BLOCK_K: tl.constexpr):
    """(a [BLOCK_M, BLOCK_K], b [BLOCK_K, BLOCK_N]): channels k0 .. k0 + BLOCK_K of one tap,
    from the per-pixel input pointers ``x_tap_ptrs`` (rows outside ``in_image`` read zeros)
    and the per-output-channel weight pointers ``w_tap_ptrs``."""
    offs_k = k0 + tl.arange(0, BLOCK_K)
    mask_k = offs_k < in_per_group
    a = tl.load(x_tap_ptrs[:, None] + offs_k[None, :] * stride_xc,
                mask=in_image[:, None] & mask_k[None, :], other=0.0)
    b = tl.load(w_tap_ptrs[None, :] + offs_k[:, None] * stride_wi,
                mask=mask_k[:, None] & mask_n[None, :], other=0.0)
    if UPCAST_OPERANDS:
        a = a.to(ACC_DTYPE)
        b = b.to(ACC_DTYPE)
    return a, b


@autotune(CONV_CONFIGS, CONV_INTERPRETER_CONFIG,
          prune_configs_by={"early_config_prune": prune_conv_configs},
          key=["n_pixels", "out_per_group", "in_per_group", "kernel_h", "kernel_w", "groups",
              "HAS_BIAS", "INPUT_PRECISION"])
@triton.jit
def conv2d_bias_elu_kernel(
    x_ptr, w_ptr, bias_ptr, y_ptr, partial_ptr,
    n_pixels, out_h, out_w, in_h, in_w,
    in_per_group, out_per_group, groups, kernel_h, kernel_w,
    stride_h, stride_w, pad_h, pad_w, dil_h, dil_w,
    stride_xn, stride_xc, stride_xh, stride_xw,
    stride_wo, stride_wi, stride_wh, stride_ww,
    stride_yn, stride_yc, stride_yh, stride_yw,
    alpha: ELU_PARAM, scale: ELU_PARAM, input_scale: ELU_PARAM,
    HAS_BIAS: tl.constexpr, INPUT_PRECISION: tl.constexpr, UPCAST_OPERANDS: tl.constexpr,
    ACC_DTYPE: tl.constexpr, INT64_INDEX: tl.constexpr, FLAT_K: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
    SPLIT_K: tl.constexpr, SINGLE_K_LOOP: tl.constexpr,
):
    """y = elu(conv2d(x, w) + bias), one output tile per program, written once (or, with
    SPLIT_K > 1, one K range of a tile per program, written as fp32 partial sums).

    Args:
        x_ptr: input [N, C, H, W] with strides ``stride_x{n,c,h,w}`` (NCHW or NHWC storage).
        w_ptr: weight [OC, C / groups, KH, KW] with strides ``stride_w{o,i,h,w}``.
        bias_ptr: contiguous [OC] bias (unused without HAS_BIAS).
        y_ptr: output [N, OC, OH, OW] with strides ``stride_y{n,c,h,w}`` (unused with SPLIT_K > 1).
        partial_ptr: with SPLIT_K > 1, the contiguous ACC_DTYPE ``[SPLIT_K, n_pixels, OC]``
            partial sums (``split_k_epilogue.py`` finishes them); else unused.
        n_pixels: N * OH * OW, the GEMM M.
        out_h, out_w: OH, OW. in_h, in_w: H, W.
        in_per_group, out_per_group: C / groups and OC / groups (GEMM K per tap, GEMM N).
        groups: number of groups; grid axis 1 runs over them.
        kernel_h, kernel_w: KH, KW.
        stride_h/w, pad_h/w, dil_h/w: conv stride, top/left zero padding, dilation.
        alpha, scale, input_scale: aten ``elu`` parameters of the epilogue (fp64 scalars, see
            ``elu_math.ELU_PARAM``).
        HAS_BIAS: add the bias in the epilogue.
        INPUT_PRECISION: ``tl.dot`` precision for fp32 operands ("tf32" or "ieee"), else None.
        UPCAST_OPERANDS: convert operand tiles to ACC_DTYPE before the dot (used for bf16 under
            the interpreter, whose bf16 dot is broken; see docs/interpreter.md).
        ACC_DTYPE: accumulator and epilogue dtype (tl.float32, or tl.float64 for fp64).
        INT64_INDEX: compute offsets in int64 (tensors past 2^31 - 1 elements of extent).
        FLAT_K: walk K = KH * KW * Cg flattened (channel fastest) instead of (tap, channel
            block) pairs (for Cg < 16; see the module docstring).
        BLOCK_M, BLOCK_N, BLOCK_K: tile sizes along pixels, output channels, K.
        SPLIT_K: number of K ranges (grid axis 2); 1 = the whole K loop and the epilogue here.
        SINGLE_K_LOOP: walk the (tap, channel block) pairs in one loop instead of taps outside
            and channel blocks inside (needed with SPLIT_K > 1 unless FLAT_K).
    """
    pid = tl.program_id(0)
    group = tl.program_id(1)
    n_blocks_n = tl.cdiv(out_per_group, BLOCK_N)
    pid_m = pid // n_blocks_n
    pid_n = pid % n_blocks_n

    offs_m, offs_n, mask_m, mask_n = output_tile_offsets(pid_m, pid_n, n_pixels, out_per_group,
                                                         BLOCK_M, BLOCK_N, INT64_INDEX)
    batch, oh, ow = output_pixel_coords(offs_m, out_h, out_w)
    out_channel = group * out_per_group + offs_n

    x_batch_ptrs = x_ptr + batch * stride_xn + (group * in_per_group) * stride_xc
    w_out_ptrs = w_ptr + out_channel * stride_wo
    acc = tl.zeros([BLOCK_M, BLOCK_N], dtype=ACC_DTYPE)
    # K steps: FLAT_K blocks of the flattened K, else (tap, channel block) pairs; with
    # SPLIT_K this program walks one contiguous range of them.
    n_channel_blocks = tl.cdiv(in_per_group, BLOCK_K)
    if FLAT_K:
        k_total = kernel_h * kernel_w * in_per_group
        n_steps = tl.cdiv(k_total, BLOCK_K)
    else:
        n_steps = kernel_h * kernel_w * n_channel_blocks
    step_start = 0
    step_end = n_steps
    if SPLIT_K > 1:
        steps_per_split = tl.cdiv(n_steps, SPLIT_K)
        step_start = tl.program_id(2) * steps_per_split
        step_end = tl.minimum(step_start + steps_per_split, n_steps)
    if FLAT_K:
        # k = (kh * KW + kw) * Cg + c: each column of the tile decodes its own tap.
        for step in range(step_start, step_end):
            offs_k = step * BLOCK_K + tl.arange(0, BLOCK_K)
            mask_k = offs_k < k_total
            channel, kh, kw = flat_k_taps(offs_k, in_per_group, kernel_w)
            a = load_input_taps(x_batch_ptrs, oh, ow, mask_m, channel, kh, kw, mask_k, in_h,
                                in_w, stride_h, stride_w, pad_h, pad_w, dil_h, dil_w,
                                stride_xc, stride_xh, stride_xw)
            b = tl.load(w_out_ptrs[None, :] + (channel * stride_wi + kh * stride_wh
                                               + kw * stride_ww)[:, None],
                        mask=mask_k[:, None] & mask_n[None, :], other=0.0)
            if UPCAST_OPERANDS:
                a = a.to(ACC_DTYPE)
                b = b.to(ACC_DTYPE)
            acc = tl.dot(a, b, acc, input_precision=INPUT_PRECISION, out_dtype=ACC_DTYPE)
    elif SINGLE_K_LOOP:  # one loop over (tap, channel block): pipelined across taps
        for step in range(step_start, step_end):
            tap = step // n_channel_blocks
            k0 = (step - tap * n_channel_blocks) * BLOCK_K
            kh = tap // kernel_w
            kw = tap - kh * kernel_w
            x_tap_ptrs, in_image = tap_input_rows(x_batch_ptrs, oh, ow, mask_m, kh, kw, in_h,
                                                  in_w, stride_h, stride_w, pad_h, pad_w, dil_h,
                                                  dil_w, stride_xh, stride_xw)
            a, b = load_channel_tiles(x_tap_ptrs, w_out_ptrs + kh * stride_wh + kw * stride_ww,
                                      in_image, mask_n, k0, in_per_group, stride_xc, stride_wi,
                                      UPCAST_OPERANDS, ACC_DTYPE, BLOCK_K)
            acc = tl.dot(a, b, acc, input_precision=INPUT_PRECISION, out_dtype=ACC_DTYPE)
    else:  # taps outside, channels inside: a tile row is BLOCK_K contiguous NHWC channels
        for kh in range(0, kernel_h):
            for kw in range(0, kernel_w):
                x_tap_ptrs, in_image = tap_input_rows(x_batch_ptrs, oh, ow, mask_m, kh, kw,
                                                      in_h, in_w, stride_h, stride_w, pad_h,
                                                      pad_w, dil_h, dil_w, stride_xh, stride_xw)
                w_tap_ptrs = w_out_ptrs + kh * stride_wh + kw * stride_ww
                for k0 in range(0, in_per_group, BLOCK_K):
                    a, b = load_channel_tiles(x_tap_ptrs, w_tap_ptrs, in_image, mask_n, k0,
                                              in_per_group, stride_xc, stride_wi,
                                              UPCAST_OPERANDS, ACC_DTYPE, BLOCK_K)
                    acc = tl.dot(a, b, acc, input_precision=INPUT_PRECISION, out_dtype=ACC_DTYPE)

    if SPLIT_K > 1:  # partial sums; the epilogue runs once they are all in
        out_channels = groups * out_per_group
        split = tl.program_id(2)
        if INT64_INDEX:
            split = split.to(tl.int64)
        partial_ptrs = (partial_ptr + split * n_pixels * out_channels
                        + offs_m[:, None] * out_channels + out_channel[None, :])
        tl.store(partial_ptrs, acc, mask=mask_m[:, None] & mask_n[None, :])
    else:  # epilogue: bias + ELU family in ACC_DTYPE, one cast, one store
        alpha, scale, input_scale = elu_params(alpha, scale, input_scale, ACC_DTYPE)
        acc = bias_elu_epilogue(acc, bias_ptr + out_channel, mask_n, alpha, scale, input_scale,
                                HAS_BIAS)
        store_output_tile(y_ptr, acc, batch, oh, ow, out_channel, mask_m, mask_n,
                          stride_yn, stride_yc, stride_yh, stride_yw)


def dot_precision(dtype: torch.dtype, allow_tf32: bool):
    """``tl.dot`` input precision: TF32 for fp32 only when torch's flag allows it."""
    if dtype != torch.float32:
        return None
    return "tf32" if allow_tf32 else "ieee"


def plan_conv2d_bias_elu(x, weight, y, has_bias, stride, padding, dilation, groups,
                         allow_tf32, device, config=None):
    """``run(x, weight, bias, y, alpha, scale, input_scale)`` for tensors with the metadata of
    x [N, C, H, W], weight [OC, C/groups, KH, KW] and y [N, OC, OH, OW] (any strides; only
    their shapes, strides and dtype are read here: they may be meta tensors); ``padding`` is
    (top, left); ``device`` is where the tensors of the calls will be (it picks the tuned table).

    The config is ``config`` when given (perf/tune.py sweeps this way), else the tuned-table
    entry for the shape or its bucket, else ``default_conv_config`` (or, with
    ``ELUTRITON_AUTOTUNE=1``, the autotuner's choice on the first call, among the base configs:
    no split-K). A split-K config (SPLIT_K > 1) makes each call allocate its fp32 partial
    buffer and launch ``split_k_epilogue.py`` after the GEMM.
    """
    n_batch, in_channels, in_h, in_w = x.shape
    out_channels, in_per_group, kernel_h, kernel_w = weight.shape
    _, _, out_h, out_w = y.shape
    n_pixels = n_batch * out_h * out_w
    if y.numel() == 0:
        return no_launch
    out_per_group = out_channels // groups

    def grid(meta):
        return (triton.cdiv(n_pixels, meta["BLOCK_M"]) * triton.cdiv(out_per_group, meta["BLOCK_N"]),
                groups, meta["SPLIT_K"])

    precision = dot_precision(x.dtype, allow_tf32)
    key = conv_shape_key(x.dtype, precision, n_pixels, out_per_group, in_per_group, kernel_h,
                         kernel_w, groups, has_bias)
    config = config or tuned_config(KERNEL_NAME, key, device)
    if config is None and INTERPRET:
        config = CONV_INTERPRETER_CONFIG
    elif config is None and not online_autotune_requested():
        config = default_conv_config(x.dtype, precision, n_pixels, out_per_group, in_per_group,
                                     kernel_h, kernel_w, groups, multiprocessor_count(device))
    if config is not None:
        config = with_loop_defaults(config)
    k_splits = 1 if config is None else config.kwargs["SPLIT_K"]
    acc_dtype = tl.float64 if x.dtype == torch.float64 else tl.float32
    partial_numel = k_splits * n_pixels * out_channels if k_splits > 1 else 0
    int64_index = needs_int64_index(x, weight, y, partial_numel)
    launch = FixedLaunch(conv2d_bias_elu_kernel, grid, config, dict(
        HAS_BIAS=has_bias,
        INPUT_PRECISION=precision,
        UPCAST_OPERANDS=INTERPRET and x.dtype == torch.bfloat16,
        ACC_DTYPE=acc_dtype,
        INT64_INDEX=int64_index,
        FLAT_K=use_flat_k(in_per_group),
    ))
    fixed = (n_pixels, out_h, out_w, in_h, in_w,
             in_per_group, out_per_group, groups, kernel_h, kernel_w,
             stride[0], stride[1], padding[0], padding[1], dilation[0], dilation[1],
             *x.stride(), *weight.stride(), *y.stride())
    if k_splits == 1:
        def run(x, weight, bias, y, alpha, scale, input_scale):
            launch(x, weight, weight if bias is None else bias, y, y, *fixed, alpha, scale,
                   input_scale)
        return run

    finish = plan_split_k_epilogue(y, k_splits, has_bias, acc_dtype, int64_index)
    partial_dtype = torch.float64 if x.dtype == torch.float64 else torch.float32

    def run_split_k(x, weight, bias, y, alpha, scale, input_scale):
        partial = torch.empty(partial_numel, dtype=partial_dtype, device=x.device)
        bias_arg = weight if bias is None else bias
        launch(x, weight, bias_arg, y, partial, *fixed, alpha, scale, input_scale)
        finish(partial, bias_arg, y, alpha, scale, input_scale)
    return run_split_k


def launch_conv2d_bias_elu(x, weight, bias, y, stride, padding, dilation, groups, alpha, scale,
                           input_scale, allow_tf32, config=None):
    """Plan and run the kernel once (benchmarks, the tuner and tests; the ops cache plans)."""
    run = plan_conv2d_bias_elu(x, weight, y, bias is not None, stride, padding, dilation,
                               groups, allow_tf32, x.device, config)
    run(x, weight, bias, y, float(alpha), float(scale), float(input_scale))
    return y


KERNEL_NAME = "conv2d_bias_elu"
M_FIELD = 2  # the pixel count's place in conv_shape_key: the bucketed field
register_validator(KERNEL_NAME, validate_table_entry, M_FIELD)


def conv_shape_key(dtype, precision, n_pixels, out_per_group, in_per_group, kernel_h, kernel_w,
                   groups, has_bias):
    """Key of a shape in the tuned tables (the autotune key plus the operand dtype)."""
    return shape_key(str(dtype).replace("torch.", ""), precision, n_pixels, out_per_group,
                     in_per_group, kernel_h, kernel_w, groups, has_bias)
