"""A persistent GEMM + bias + ELU-family kernel that moves its tiles with tensor descriptors
(TMA on sm_90), for the GEMMs that are plain 2-D matrix products: linear layers, and 1x1
convolutions with stride 1 and no padding on channels_last tensors (x as [N*H*W, C], the
weight as [OC, C], y as [N*H*W, OC]).

Each program walks output tiles ``pid, pid + P, ...`` (P programs, at most one per SM), loads
its x and weight tiles through descriptors (out-of-bounds rows and columns read as zero, so M,
N and K need not divide the tiles) and stores y through a descriptor after the same bias + ELU
epilogue as the implicit-GEMM kernel (``conv2d.py``). TMA needs 16-byte aligned base pointers
and row strides, checked by the plan (``gemm_tma_eligible``) and, for the pointers, on every
call. Used only where the tuned table has a ``gemm_tma`` entry for the shape
(``python -m perf.tune`` writes one where this kernel measured faster than the pointer
kernel); sm_80 and every other shape keep the implicit-GEMM kernel. UNMEASURED on a GPU.
"""
import torch
import triton
import triton.language as tl

from .._runtime import INTERPRET, multiprocessor_count
from .conv2d import M_FIELD, MIN_DOT_TILE, conv_shape_key, dot_precision, operand_class
from .elu_math import ELU_PARAM, bias_elu_epilogue, elu_params
from .launch import FixedLaunch
from .tuning import register_validator, tuned_config

try:
    from triton.tools.tensor_descriptor import TensorDescriptor
except ImportError:  # a Triton without host tensor descriptors: the kernel is never used
    TensorDescriptor = None

KERNEL_NAME = "gemm_tma"
TMA_CLASSES = ("16bit", "tf32")  # tensor-core operand classes; exact fp32 and fp64 never


def _cfg(m, n, k, warps, stages):
    return triton.Config({"BLOCK_M": m, "BLOCK_N": n, "BLOCK_K": k}, num_warps=warps,
                         num_stages=stages)


TMA_CONFIGS_BY_CLASS = {
    "16bit": [_cfg(128, 128, 64, 8, 3), _cfg(128, 64, 64, 4, 4), _cfg(64, 128, 64, 4, 4),
              _cfg(64, 64, 64, 4, 4)],
    "tf32": [_cfg(128, 128, 32, 8, 3), _cfg(128, 64, 32, 4, 3), _cfg(64, 64, 32, 4, 3)],
}


@triton.jit
def gemm_bias_elu_tma_kernel(
    x_desc, w_desc, y_desc, bias_ptr, M, N, K,
    alpha: ELU_PARAM, scale: ELU_PARAM, input_scale: ELU_PARAM,
    HAS_BIAS: tl.constexpr, INPUT_PRECISION: tl.constexpr, UPCAST_OPERANDS: tl.constexpr,
    ACC_DTYPE: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
    BLOCK_K: tl.constexpr,
):
    """y = elu(x @ w^T + bias), output tiles walked persistently by the launched programs.

    Args:
        x_desc: descriptor of x [M, K] (row-major), block [BLOCK_M, BLOCK_K].
        w_desc: descriptor of the weight [N, K] (row-major), block [BLOCK_N, BLOCK_K].
        y_desc: descriptor of y [M, N] (row-major), block [BLOCK_M, BLOCK_N].
        bias_ptr: contiguous [N] bias (unused without HAS_BIAS).
        M, N, K: the GEMM's rows (pixels or samples), output channels and reduction length.
        alpha, scale, input_scale: aten ``elu`` parameters of the epilogue.
        HAS_BIAS: add the bias in the epilogue.
        INPUT_PRECISION: ``tl.dot`` precision for fp32 operands ("tf32"), else None.
        UPCAST_OPERANDS: convert the tiles to ACC_DTYPE before the dot (bf16 under the
            interpreter, whose bf16 dot is broken; docs/interpreter.md).
        ACC_DTYPE: accumulator and epilogue dtype (tl.float32).
        BLOCK_M, BLOCK_N, BLOCK_K: tile sizes along M, N and K.
    """
    n_tiles_n = tl.cdiv(N, BLOCK_N)
    n_tiles = tl.cdiv(M, BLOCK_M) * n_tiles_n
    alpha, scale, input_scale = elu_params(alpha, scale, input_scale, ACC_DTYPE)
    for tile in range(tl.program_id(0), n_tiles, tl.num_programs(0)):
        row = (tile // n_tiles_n) * BLOCK_M
        col = (tile % n_tiles_n) * BLOCK_N
        acc = tl.zeros([BLOCK_M, BLOCK_N], dtype=ACC_DTYPE)
        for k0 in range(0, K, BLOCK_K):
            a = x_desc.load([row, k0])
            b = w_desc.load([col, k0])
            if UPCAST_OPERANDS:
                a = a.to(ACC_DTYPE)
                b = b.to(ACC_DTYPE)
            acc = tl.dot(a, b.T, acc, input_precision=INPUT_PRECISION, out_dtype=ACC_DTYPE)
        offs_n = col + tl.arange(0, BLOCK_N)
        acc = bias_elu_epilogue(acc, bias_ptr + offs_n, offs_n < N, alpha, scale, input_scale,
                                HAS_BIAS)
        y_desc.store([row, col], acc.to(y_desc.dtype))


def tma_supported(device) -> bool:
    """Host tensor descriptors exist and the device has TMA (sm_90+), or the interpreter runs
    the kernels (where descriptors are emulated)."""
    if TensorDescriptor is None:
        return False
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.get_device_capability(device)[0] >= 9
    return INTERPRET and device.type == "cpu"


def gemm_tma_eligible(dtype, allow_tf32, rows, cols, k, x_row_stride, w_row_stride,
                      y_row_stride):
    """Whether a [rows, k] x [cols, k]^T GEMM with these row strides (in elements; unit
    column strides assumed by the caller) may run this kernel: a tensor-core operand class and
    16-byte aligned row strides (TMA's rule); the base pointers are checked per call."""
    if operand_class(dtype, dot_precision(dtype, allow_tf32)) not in TMA_CLASSES:
        return False
    return (rows > 0 and cols > 0 and k > 0
            and all(stride * dtype.itemsize % 16 == 0 for stride in (x_row_stride, w_row_stride,
                                                                      y_row_stride)))


def tma_candidates(cls, cols, k):
    """The class's configs minus tiles much larger than the problem; never empty."""
    return capped_configs(TMA_CONFIGS_BY_CLASS[cls], cols, k)


def capped_configs(configs, cols, k):
    """``configs`` minus tiles much larger than the problem (BLOCK_N above N, BLOCK_K above K,
    both rounded up to a power of two >= 16); never empty (the smallest tiles stay)."""
    n_cap = max(MIN_DOT_TILE, triton.next_power_of_2(cols))
    k_cap = max(MIN_DOT_TILE, triton.next_power_of_2(k))
    kept = [c for c in configs if c.kwargs["BLOCK_N"] <= n_cap and c.kwargs["BLOCK_K"] <= k_cap]
    return kept or [min(configs, key=lambda c: (c.kwargs["BLOCK_N"], c.kwargs["BLOCK_K"]))]


def tma_table_config(dtype, allow_tf32, rows, cols, k, has_bias, device):
    """The tuned table's TMA config for this GEMM (a 1x1 conv's key), or None."""
    key = conv_shape_key(dtype, dot_precision(dtype, allow_tf32), rows, cols, k, 1, 1, 1,
                         has_bias)
    return tuned_config(KERNEL_NAME, key, device)


def plan_tma_gemm(dtype, allow_tf32, rows, cols, k, has_bias, device, x_row_stride,
                  w_row_stride, y_row_stride):
    """The TMA kernel's ``run`` (``plan_gemm_bias_elu_tma``) for a 2-D GEMM with these row
    strides where it applies: TMA on the device, an eligible GEMM, and a tuned ``gemm_tma``
    table entry for the shape or its bucket (where it measured faster); else None."""
    if not tma_supported(device) or not gemm_tma_eligible(dtype, allow_tf32, rows, cols, k,
                                                          x_row_stride, w_row_stride,
                                                          y_row_stride):
        return None
    config = tma_table_config(dtype, allow_tf32, rows, cols, k, has_bias, device)
    if config is None:
        return None
    return plan_gemm_bias_elu_tma(dtype, allow_tf32, rows, cols, k, has_bias, config, device)


def plan_gemm_bias_elu_tma(dtype, allow_tf32, rows, cols, k, has_bias, config, device):
    """``run(x2d, w2d, bias, y2d, alpha, scale, input_scale) -> bool``: launch the kernel on
    [rows, k] x, [cols, k] weight and [rows, cols] y (row-major views), or return False
    without launching when a base pointer is not 16-byte aligned (the caller then runs the
    implicit-GEMM kernel)."""
    precision = dot_precision(dtype, allow_tf32)
    block_m, block_n, block_k = (config.kwargs[name] for name in ("BLOCK_M", "BLOCK_N",
                                                                   "BLOCK_K"))
    n_tiles = triton.cdiv(rows, block_m) * triton.cdiv(cols, block_n)
    programs = max(1, min(n_tiles, multiprocessor_count(device)))
    launch = FixedLaunch(gemm_bias_elu_tma_kernel, lambda meta: (programs,), config,
                         dict(HAS_BIAS=has_bias, INPUT_PRECISION=precision,
                              UPCAST_OPERANDS=INTERPRET and dtype == torch.bfloat16,
                              ACC_DTYPE=tl.float32))

    def run(x2d, w2d, bias, y2d, alpha, scale, input_scale):
        if x2d.data_ptr() % 16 or w2d.data_ptr() % 16 or y2d.data_ptr() % 16:
            return False
        launch(TensorDescriptor(x2d, [rows, k], [x2d.stride(0), 1], [block_m, block_k]),
               TensorDescriptor(w2d, [cols, k], [w2d.stride(0), 1], [block_n, block_k]),
               TensorDescriptor(y2d, [rows, cols], [y2d.stride(0), 1], [block_m, block_n]),
               w2d if bias is None else bias, rows, cols, k, alpha, scale, input_scale)
        return True
    return run


def validate_table_entry(fields, entry):
    """None if ``entry`` is a TMA config for the key ``fields`` (a 1x1, groups-1 GEMM of a
    tensor-core class, one of ``tma_candidates``), else the reason."""
    return tma_entry_reason(
        fields, entry, ("BLOCK_M", "BLOCK_N", "BLOCK_K", "num_warps", "num_stages"),
        lambda kernel_h, kernel_w, groups: None if (kernel_h, kernel_w, groups) == (1, 1, 1)
        else "TMA serves 1x1, groups-1 GEMMs only", tma_candidates, "TMA")


def tma_entry_reason(fields, entry, names, shape_reason, candidates, what):
    """The validation the TMA kernels' table entries share: ``entry`` must hold exactly the
    fields ``names`` (in the order the message lists them), the key ``fields`` (``conv2d.conv_shape_key``'s) a shape ``shape_reason(KH, KW,
    groups)`` accepts (None) and a tensor-core operand class, and the entry must be one of
    ``candidates(cls, out_per_group, in_per_group)``; None, else the reason (``what`` names
    the kernel)."""
    if not isinstance(entry, dict) or set(entry) != set(names):
        return "expected " + ", ".join(names)
    try:
        dtype, precision = fields[0], fields[1]
        out_pg, in_pg, kernel_h, kernel_w, groups = (int(f) for f in fields[3:8])
    except (IndexError, ValueError):
        return "malformed key"
    reason = shape_reason(kernel_h, kernel_w, groups)
    if reason is not None:
        return reason
    wrong_class = f"{what} serves the tensor-core classes only, not {dtype}/{precision}"
    if dtype not in ("float16", "bfloat16", "float32") or precision not in ("None", "tf32"):
        return wrong_class
    cls = operand_class(getattr(torch, dtype), None if precision == "None" else precision)
    if cls not in TMA_CLASSES:
        return wrong_class
    if not any(entry == dict(c.kwargs, num_warps=c.num_warps, num_stages=c.num_stages)
               for c in candidates(cls, out_pg, in_pg)):
        return f"not among the {what} configs for this shape"
    return None


register_validator(KERNEL_NAME, validate_table_entry, M_FIELD)
