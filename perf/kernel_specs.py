"""What the static kernel report compiles: each shipped kernel with each shipped config, on a
representative layer shape, specialised exactly as the JIT would specialise real arguments
(ints equal to 1 become constants, ints and pointers divisible by 16 get divisibility hints)."""
import itertools

import torch
import triton
import triton.language as tl
from triton._C.libtriton import native_specialize_impl
from triton.backends.compiler import BaseBackend

from elutriton.kernels import (bias_elu, conv2d, conv2d_tma, conv_input_grad,
                               conv_input_grad_taps, conv_weight_grad, depthwise_conv2d,
                               gemm_tma, split_k_epilogue)

TORCH_DTYPES = {"fp16": torch.float16, "bf16": torch.bfloat16, "fp32": torch.float32,
                "fp64": torch.float64}
ELU = dict(alpha=1.0, scale=1.0, input_scale=1.0)


def _ptr(dtype):
    return torch.empty(16, dtype=dtype, device="meta")


def _compute(dtype):
    return tl.float64 if dtype == torch.float64 else tl.float32


# ----------------------------------------------------------------------------- bias + ELU
FORWARD_VARIANTS = {
    # (HAS_BIAS, n_channels, n_inner): channels_last conv output / NCHW conv output / plain ELU
    "bias_channels_last": (True, 256, 1),
    "bias_nchw": (True, 64, 56 * 56),
    "no_bias": (False, 1, 2**24),
}


def forward_jobs():
    for (variant, (has_bias, channels, inner)), dtype, cfg in itertools.product(
            FORWARD_VARIANTS.items(), ["fp16", "bf16", "fp32", "fp64"], bias_elu.FORWARD_CONFIGS):
        t = TORCH_DTYPES[dtype]
        args = dict(x_ptr=_ptr(t), bias_ptr=_ptr(t), y_ptr=_ptr(t), n_elements=2**24,
                    n_channels=channels, n_inner=inner, **ELU, HAS_BIAS=has_bias,
                    COMPUTE_DTYPE=_compute(t), INT64_INDEX=False, **cfg.kwargs)
        yield dict(kernel="bias_elu_forward", fn=bias_elu.bias_elu_forward_kernel.fn, args=args,
                   dtype=dtype, variant=variant, config=dict(cfg.kwargs, num_warps=cfg.num_warps),
                   num_warps=cfg.num_warps, num_stages=cfg.num_stages,
                   expect=dict(vector_io=True))


BACKWARD_VARIANTS = {"channels_last": (25088, 256, 1), "channels_last_c16": (524288, 16, 1),
                     "nchw": (32, 64, 56 * 56)}


def backward_jobs():
    for (variant, split), dtype in itertools.product(BACKWARD_VARIANTS.items(),
                                                     ["fp16", "bf16", "fp32", "fp64"]):
        t = TORCH_DTYPES[dtype]
        n_rows, n_cols, channels_in_columns = bias_elu.backward_matrix(split)
        block_r, block_col, num_warps = bias_elu.backward_tile(n_rows, n_cols,
                                                                channels_in_columns)
        acc = torch.float64 if t == torch.float64 else torch.float32
        args = dict(grad_y_ptr=_ptr(t), saved_ptr=_ptr(t), bias_ptr=_ptr(t), grad_z_ptr=_ptr(t),
                    partial_ptr=_ptr(acc), n_rows=n_rows, n_cols=n_cols, n_channels=split[1],
                    rows_per_program=64, **ELU, CHANNELS_IN_COLUMNS=channels_in_columns,
                    FROM_RESULT=True, HAS_BIAS=True, BIAS_GRAD=True, COMPUTE_DTYPE=_compute(t),
                    INT64_INDEX=False, BLOCK_R=block_r, BLOCK_COL=block_col)
        yield dict(kernel="bias_elu_backward", fn=bias_elu.bias_elu_backward_kernel, args=args,
                   dtype=dtype, variant=variant,
                   config=dict(BLOCK_R=block_r, BLOCK_COL=block_col, num_warps=num_warps),
                   num_warps=num_warps, num_stages=3, expect=dict(vector_io=True))


def bias_grad_reduce_jobs():
    """The deterministic bias-gradient reduction: fp32 (fp64) partial sums -> parameter dtype."""
    for dtype in ["fp16", "bf16", "fp32", "fp64"]:
        t = TORCH_DTYPES[dtype]
        acc = torch.float64 if t == torch.float64 else torch.float32
        args = dict(partial_ptr=_ptr(acc), grad_bias_ptr=_ptr(t),
                    n_partials=bias_elu.MAX_BIAS_PARTIALS, n_channels=256,
                    BLOCK_P=bias_elu.REDUCE_BLOCK_P, BLOCK_C=bias_elu.REDUCE_BLOCK_C)
        yield dict(kernel="bias_grad_reduce", fn=bias_elu.bias_grad_reduce_kernel, args=args,
                   dtype=dtype, variant=f"{bias_elu.MAX_BIAS_PARTIALS}x256",
                   config=dict(BLOCK_P=bias_elu.REDUCE_BLOCK_P, BLOCK_C=bias_elu.REDUCE_BLOCK_C,
                               num_warps=4),
                   num_warps=4, num_stages=3, expect=dict(vector_io=False))


# ----------------------------------------------------------------------------- conv / linear
def _nhwc_strides(c, h, w):
    return (h * w * c, 1, w * c, c)


def _nchw_strides(c, h, w):
    return (c * h * w, h * w, w, 1)


def _strides(prefix, strides):
    """{``stride_<prefix>n``, ``..c``, ``..h``, ``..w``: strides}."""
    return dict(zip((f"stride_{prefix}{dim}" for dim in "nchw"), strides))


def _conv_args(n, c, h, w, oc, k, stride, pad, groups):
    """Kernel arguments (less pointers/constexprs) for an NHWC conv, as the launcher passes them."""
    out_h = (h + 2 * pad - k) // stride + 1
    out_w = (w + 2 * pad - k) // stride + 1
    cg = c // groups
    return dict(
        n_pixels=n * out_h * out_w, out_h=out_h, out_w=out_w, in_h=h, in_w=w,
        in_per_group=cg, out_per_group=oc // groups, groups=groups, kernel_h=k, kernel_w=k,
        stride_h=stride, stride_w=stride, pad_h=pad, pad_w=pad, dil_h=1, dil_w=1,
        stride_xn=h * w * c, stride_xc=1, stride_xh=w * c, stride_xw=c,
        stride_wo=cg * k * k, stride_wi=1, stride_wh=k * cg, stride_ww=cg,
        stride_yn=out_h * out_w * oc, stride_yc=1, stride_yh=out_w * oc, stride_yw=oc)


GEMM_VARIANTS = {
    "conv3x3_nhwc": _conv_args(32, 64, 56, 56, 64, 3, 1, 1, 1),    # ResNet-50 stage-1 3x3
    "linear": _conv_args(4096, 1024, 1, 1, 1024, 1, 1, 0, 1),      # SELU MLP layer as 1x1
    "conv5x5_rgb_flat_k": _conv_args(128, 3, 32, 32, 192, 5, 1, 2, 1),  # ELU-CIFAR layer 1
}
# (dtype name, torch dtype, dot input precision, tensor cores expected)
GEMM_DTYPES = [("fp16", torch.float16, None, True), ("bf16", torch.bfloat16, None, True),
               ("tf32", torch.float32, "tf32", True), ("fp32", torch.float32, "ieee", False),
               ("fp64", torch.float64, None, False)]


def gemm_report_configs(flat_k, cls):
    """The configs the report compiles for one operand class: each base config the launcher
    may use and, for 4-warp ones of the tensor-core classes, its single-loop variant (not
    FLAT_K: one loop already) and, for 16-bit, a split-K variant (SPLIT_K=4: the partial-sum store instead
    of the epilogue), as ``conv2d.conv_candidates`` offers them."""
    for cfg in conv2d.CONV_CONFIGS_BY_CLASS[cls]:
        if flat_k and not conv2d.flat_k_config_ok(cfg):  # the launcher prunes these too
            continue
        yield cfg
        if conv2d.single_loop_config_ok(cfg) and cls in conv2d.VARIANT_CLASSES:
            if not flat_k:
                yield conv2d.loop_variant(cfg, SINGLE_K_LOOP=True)
            if cls in conv2d.SPLIT_K_CLASSES:
                yield conv2d.loop_variant(cfg, SPLIT_K=4, SINGLE_K_LOOP=not flat_k,
                                          num_stages=conv2d.SPLIT_K_STAGES)


def gemm_jobs():
    for (variant, shape_args), (dtype, t, precision, tc) in itertools.product(
            GEMM_VARIANTS.items(), GEMM_DTYPES):
        flat_k = conv2d.use_flat_k(shape_args["in_per_group"])
        acc = torch.float64 if t == torch.float64 else torch.float32
        for cfg in gemm_report_configs(flat_k, conv2d.operand_class(t, precision)):
            args = dict(x_ptr=_ptr(t), w_ptr=_ptr(t), bias_ptr=_ptr(t), y_ptr=_ptr(t),
                        partial_ptr=_ptr(acc), **shape_args, **ELU, HAS_BIAS=True,
                        INPUT_PRECISION=precision, UPCAST_OPERANDS=False, ACC_DTYPE=_compute(t),
                        INT64_INDEX=False, FLAT_K=flat_k, **cfg.kwargs)
            yield dict(kernel="conv2d_bias_elu", fn=conv2d.conv2d_bias_elu_kernel.fn, args=args,
                       dtype=dtype, variant=variant, config=conv2d.config_entry(cfg),
                       num_warps=cfg.num_warps, num_stages=cfg.num_stages,
                       expect=dict(tensor_cores=tc))


def _with_nchw_tensors(args, c, oc):
    """``args`` of an NHWC conv (``_conv_args``) with x and y stored NCHW instead."""
    h, w, out_h, out_w = args["in_h"], args["in_w"], args["out_h"], args["out_w"]
    return dict(args, **_strides("x", _nchw_strides(c, h, w)),
                **_strides("y", _nchw_strides(oc, out_h, out_w)))


NCHW_PROBE_LAYERS = {  # (N, C, H, W, OC, K, padding): ResNet-50 stage-1 3x3 and 1x1 layers
    "conv3x3": (32, 64, 56, 56, 64, 3, 1),
    "conv1x1": (32, 256, 56, 56, 64, 1, 0),
}


def nchw_probe_jobs():
    """Not shipped, not in ``make report``: the 16-bit GEMM configs compiled for NCHW x and y
    read and written through their strides (what skipping the NHWC conversion would run),
    next to the same layers in NHWC (``python -m perf.kernel_report --nchw-probe``)."""
    for (name, (n, c, h, w, oc, k, pad)), layout, (dtype, t, precision, tc) in \
            itertools.product(NCHW_PROBE_LAYERS.items(), ("nhwc", "nchw"), GEMM_DTYPES[:2]):
        shape_args = _conv_args(n, c, h, w, oc, k, 1, pad, 1)
        if layout == "nchw":
            shape_args = _with_nchw_tensors(shape_args, c, oc)
        for cfg in gemm_report_configs(False, conv2d.operand_class(t, precision)):
            args = dict(x_ptr=_ptr(t), w_ptr=_ptr(t), bias_ptr=_ptr(t), y_ptr=_ptr(t),
                        partial_ptr=_ptr(torch.float32), **shape_args, **ELU, HAS_BIAS=True,
                        INPUT_PRECISION=precision, UPCAST_OPERANDS=False,
                        ACC_DTYPE=_compute(t), INT64_INDEX=False, FLAT_K=False, **cfg.kwargs)
            yield dict(kernel="conv2d_bias_elu_nchw_probe", fn=conv2d.conv2d_bias_elu_kernel.fn,
                       args=args, dtype=dtype, variant=f"{name}_{layout}",
                       config=conv2d.config_entry(cfg), num_warps=cfg.num_warps,
                       num_stages=cfg.num_stages, expect=dict(tensor_cores=tc))


def split_k_epilogue_jobs():
    """The split-K finishing pass: partial sums -> bias + ELU -> y (channels_last)."""
    n, out_h, out_w, oc = 32, 7, 7, 512
    cfg = split_k_epilogue.SPLIT_K_EPILOGUE_CONFIG
    for dtype in ["fp16", "bf16", "fp32", "fp64"]:
        t = TORCH_DTYPES[dtype]
        acc = torch.float64 if t == torch.float64 else torch.float32
        args = dict(partial_ptr=_ptr(acc), bias_ptr=_ptr(t), y_ptr=_ptr(t),
                    n_pixels=n * out_h * out_w, out_channels=oc, out_h=out_h, out_w=out_w,
                    k_splits=4, stride_yn=out_h * out_w * oc, stride_yc=1, stride_yh=out_w * oc,
                    stride_yw=oc, **ELU, HAS_BIAS=True, ACC_DTYPE=_compute(t),
                    INT64_INDEX=False, **cfg.kwargs)
        yield dict(kernel="split_k_epilogue", fn=split_k_epilogue.split_k_epilogue_kernel,
                   args=args, dtype=dtype, variant="rn50_conv5_nhwc",
                   config=dict(cfg.kwargs, num_warps=cfg.num_warps), num_warps=cfg.num_warps,
                   num_stages=cfg.num_stages, expect=dict(vector_io=False))


def depthwise_jobs():
    """ResNet/MobileNet-sized NHWC depthwise 3x3 (the perf shape set's depthwise layer)."""
    n, c, h, w, k = 32, 128, 56, 56, 3
    args = dict(n_pixels=n * h * w, out_h=h, out_w=w, in_h=h, in_w=w, out_channels=c,
                multiplier=1, kernel_h=k, kernel_w=k, stride_h=1, stride_w=1, pad_h=1,
                pad_w=1, dil_h=1, dil_w=1,
                stride_xn=h * w * c, stride_xc=1, stride_xh=w * c, stride_xw=c,
                stride_wo=k * k, stride_wh=k, stride_ww=1,
                stride_yn=h * w * c, stride_yc=1, stride_yh=w * c, stride_yw=c)
    for dtype, cfg in itertools.product(["fp16", "bf16", "fp32", "fp64"],
                                        depthwise_conv2d.DEPTHWISE_CONFIGS):
        t = TORCH_DTYPES[dtype]
        yield dict(kernel="depthwise_conv2d_bias_elu",
                   fn=depthwise_conv2d.depthwise_conv2d_bias_elu_kernel.fn,
                   args=dict(x_ptr=_ptr(t), w_ptr=_ptr(t), bias_ptr=_ptr(t), y_ptr=_ptr(t),
                             **args, **ELU, HAS_BIAS=True, ACC_DTYPE=_compute(t),
                             INT64_INDEX=False, **cfg.kwargs),
                   dtype=dtype, variant="dw3x3_nhwc",
                   config=dict(cfg.kwargs, num_warps=cfg.num_warps), num_warps=cfg.num_warps,
                   num_stages=cfg.num_stages, expect=dict(vector_io=dtype != "fp64"))


def weight_grad_jobs():
    """The weight-gradient kernel on the ELU-CIFAR stem (3 -> 192, 5x5, 32x32, batch 128),
    channels_last and NCHW tensors; tensor cores expected for 16-bit and TF32."""
    n, c, h, w, oc, k = 128, 3, 32, 32, 192, 5
    layouts = {f"stem_{name}": dict(**_strides("x", layout(c, h, w)),
                                    **_strides("y", layout(oc, h, w)))
               for name, layout in (("nhwc", _nhwc_strides), ("nchw", _nchw_strides))}
    for (variant, strides), (dtype, t, precision, tc) in itertools.product(
            layouts.items(), GEMM_DTYPES):
        cfg = conv_weight_grad.WGRAD_CONFIGS[conv2d.operand_class(t, precision)]
        acc = torch.float64 if t == torch.float64 else torch.float32
        args = dict(grad_y_ptr=_ptr(t), y_ptr=_ptr(t), x_ptr=_ptr(t), partial_w_ptr=_ptr(acc),
                    partial_b_ptr=_ptr(acc), n_pixels=n * h * w, out_h=h, out_w=w, in_h=h,
                    in_w=w, in_channels=c, out_channels=oc, kernel_w=k, n_taps_total=k * k * c,
                    stride_h=1, stride_w=1, pad_h=2, pad_w=2, dil_h=1, dil_w=1, **strides,
                    pixels_per_split=1024, **ELU, BIAS_GRAD=True, INPUT_PRECISION=precision,
                    UPCAST_OPERANDS=False, ACC_DTYPE=_compute(t), INT64_INDEX=False,
                    **cfg.kwargs)
        yield dict(kernel="conv2d_weight_grad", fn=conv_weight_grad.conv2d_weight_grad_kernel,
                   args=args, dtype=dtype, variant=variant,
                   config=dict(cfg.kwargs, num_warps=cfg.num_warps, num_stages=cfg.num_stages),
                   num_warps=cfg.num_warps, num_stages=cfg.num_stages,
                   expect=dict(tensor_cores=tc))


INPUT_GRAD_VARIANTS = {
    # (N, C, H, W, OC, K, padding, layout): the ELU-CIFAR stem (BLOCK_C 16) and a 3x3 layer
    # with 64 channels (BLOCK_C 64), channels_last; the stem with NCHW tensors
    "stem_nhwc": (128, 3, 32, 32, 192, 5, 2, _nhwc_strides),
    "stem_nchw": (128, 3, 32, 32, 192, 5, 2, _nchw_strides),
    "c64_3x3_nhwc": (128, 64, 16, 16, 64, 3, 1, _nhwc_strides),
}


def input_grad_jobs():
    """The input-gradient kernel on the variants above (stride 1); tensor cores expected for
    16-bit and TF32."""
    for (variant, (n, c, h, w, oc, k, pad, strides)), (dtype, t, precision, tc) in \
            itertools.product(INPUT_GRAD_VARIANTS.items(), GEMM_DTYPES):
        cfg = conv_input_grad.DGRAD_CONFIGS[conv2d.operand_class(t, precision)]
        block_c = conv_input_grad.input_grad_block_c(c)
        y_strides, x_strides = strides(oc, h, w), strides(c, h, w)
        w_strides = (k * k * c, 1, k * c, c) if strides is _nhwc_strides else (c * k * k, k * k,
                                                                               k, 1)
        args = dict(grad_y_ptr=_ptr(t), y_ptr=_ptr(t), w_ptr=_ptr(t), grad_x_ptr=_ptr(t),
                    n_pixels=n * h * w, in_h=h, in_w=w, out_h=h, out_w=w, in_channels=c,
                    out_channels=oc, kernel_h=k, kernel_w=k, stride_h=1, stride_w=1,
                    pad_h=pad, pad_w=pad, dil_h=1, dil_w=1,
                    **_strides("y", y_strides),
                    **dict(zip(("stride_wo", "stride_wc", "stride_wh", "stride_ww"), w_strides)),
                    **_strides("g", x_strides),
                    **ELU, INPUT_PRECISION=precision, UPCAST_OPERANDS=False,
                    ACC_DTYPE=_compute(t), INT64_INDEX=False, BLOCK_C=block_c, **cfg.kwargs)
        yield dict(kernel="conv2d_input_grad", fn=conv_input_grad.conv2d_input_grad_kernel,
                   args=args, dtype=dtype, variant=variant,
                   config=dict(cfg.kwargs, BLOCK_C=block_c, num_warps=cfg.num_warps,
                               num_stages=cfg.num_stages),
                   num_warps=cfg.num_warps, num_stages=cfg.num_stages,
                   expect=dict(tensor_cores=tc))


def input_grad_taps_jobs():
    """The stem's input gradient through per-tap products and a gather
    (``conv_input_grad_taps.py``), channels_last and NCHW grad_y/y and dX: the products GEMM
    (75 columns in a 128-wide tile; tensor cores expected for 16-bit and TF32) and the gather
    (a sum of loads: no dot)."""
    n, c, h, w, oc, k = 128, 3, 32, 32, 192, 5
    pixels = n * h * w
    columns = c * k * k
    for (variant, strides), (dtype, t, precision, tc) in itertools.product(
            (("stem_nhwc", _nhwc_strides), ("stem_nchw", _nchw_strides)), GEMM_DTYPES):
        acc = torch.float64 if t == torch.float64 else torch.float32
        cfg = conv_input_grad_taps.TAP_PRODUCT_CONFIGS[conv2d.operand_class(t, precision)]
        block_n = max(16, triton.next_power_of_2(columns))
        args = dict(grad_y_ptr=_ptr(t), y_ptr=_ptr(t), w_ptr=_ptr(t), products_ptr=_ptr(acc),
                    n_out_pixels=pixels, out_h=h, out_w=w, out_channels=oc, in_channels=c,
                    n_columns=columns, tap_stride=pixels * c,
                    **_strides("y", strides(oc, h, w)), stride_wo=columns, stride_wj=1, **ELU,
                    INPUT_PRECISION=precision, UPCAST_OPERANDS=False, ACC_DTYPE=_compute(t),
                    INT64_INDEX=False, BLOCK_N=block_n, **cfg.kwargs)
        yield dict(kernel="conv_input_grad_taps", fn=conv_input_grad_taps.
                   conv_input_grad_tap_products_kernel, args=args, dtype=dtype,
                   variant=f"{variant}_products",
                   config=dict(cfg.kwargs, BLOCK_N=block_n, num_warps=cfg.num_warps,
                               num_stages=cfg.num_stages),
                   num_warps=cfg.num_warps, num_stages=cfg.num_stages,
                   expect=dict(tensor_cores=tc))
        if precision == "ieee":  # the gather has no dot: one job per tensor dtype
            continue
        block_m, block_c = conv_input_grad_taps.GATHER_BLOCK_M, triton.next_power_of_2(c)
        args = dict(products_ptr=_ptr(acc), grad_x_ptr=_ptr(t), n_pixels=pixels, in_h=h,
                    in_w=w, out_h=h, out_w=w, in_channels=c, kernel_h=k, kernel_w=k,
                    stride_h=1, stride_w=1, pad_h=2, pad_w=2, dil_h=1, dil_w=1,
                    tap_stride=pixels * c, **_strides("g", strides(c, h, w)),
                    ACC_DTYPE=_compute(t), INT64_INDEX=False, BLOCK_M=block_m, BLOCK_C=block_c)
        warps = conv_input_grad_taps.GATHER_WARPS
        yield dict(kernel="conv_input_grad_taps",
                   fn=conv_input_grad_taps.conv_input_grad_gather_kernel, args=args,
                   dtype="fp32" if dtype == "tf32" else dtype, variant=f"{variant}_gather",
                   config=dict(BLOCK_M=block_m, BLOCK_C=block_c, num_warps=warps,
                               num_stages=1),
                   num_warps=warps, num_stages=1, expect=dict(vector_io=False))


JOB_SOURCES = {"bias_elu_forward": forward_jobs, "bias_elu_backward": backward_jobs,
               "bias_grad_reduce": bias_grad_reduce_jobs,
               "conv2d_bias_elu": gemm_jobs, "depthwise_conv2d_bias_elu": depthwise_jobs,
               "conv2d_weight_grad": weight_grad_jobs, "conv2d_input_grad": input_grad_jobs,
               "conv_input_grad_taps": input_grad_taps_jobs,
               "split_k_epilogue": split_k_epilogue_jobs}


TMA_VARIANTS = {  # (M, N, K): a SELU-MLP layer and ResNet-50's stage-1 1x1 expand
    "linear": (4096, 1024, 1024),
    "conv1x1_expand": (32 * 56 * 56, 256, 64),
}


def gemm_tma_jobs():
    """The TMA GEMM kernel's configs on sm_90 only (sm_80 has no TMA and never runs it), with
    the descriptors as the launcher passes them; tensor cores expected."""
    from triton.tools.tensor_descriptor import TensorDescriptor
    for (variant, (m, n, k)), (dtype, t, precision, tc) in itertools.product(
            TMA_VARIANTS.items(), GEMM_DTYPES[:3]):
        for cfg in gemm_tma.tma_candidates(conv2d.operand_class(t, precision), n, k):
            bm, bn, bk = (cfg.kwargs[name] for name in ("BLOCK_M", "BLOCK_N", "BLOCK_K"))
            args = dict(x_desc=TensorDescriptor(_ptr(t), [m, k], [k, 1], [bm, bk]),
                        w_desc=TensorDescriptor(_ptr(t), [n, k], [k, 1], [bn, bk]),
                        y_desc=TensorDescriptor(_ptr(t), [m, n], [n, 1], [bm, bn]),
                        bias_ptr=_ptr(t), M=m, N=n, K=k, **ELU, HAS_BIAS=True,
                        INPUT_PRECISION=precision, UPCAST_OPERANDS=False,
                        ACC_DTYPE=tl.float32, **cfg.kwargs)
            yield dict(kernel="gemm_tma", fn=gemm_tma.gemm_bias_elu_tma_kernel, args=args,
                       dtype=dtype, variant=variant,
                       config=dict(cfg.kwargs, num_warps=cfg.num_warps,
                                   num_stages=cfg.num_stages),
                       num_warps=cfg.num_warps, num_stages=cfg.num_stages,
                       expect=dict(tensor_cores=tc, tma=True), archs=(90,))


CONV_TMA_VARIANTS = {  # (N, C, H, W, OC, K, padding): ResNet-50's stage-1 3x3, ELU-CIFAR's 3x3
    "rn50_3x3": (64, 64, 56, 56, 64, 3, 1),
    "cifar_3x3": (128, 192, 16, 16, 240, 3, 1),
}


def conv2d_tma_jobs():
    """The TMA implicit-GEMM conv's configs on sm_90 only, with the 4-D and 2-D descriptors
    as the launcher passes them; tensor cores and TMA expected."""
    from triton.tools.tensor_descriptor import TensorDescriptor
    for (variant, (n, c, h, w, oc, k, pad)), (dtype, t, precision, tc) in itertools.product(
            CONV_TMA_VARIANTS.items(), GEMM_DTYPES[:3]):
        for cfg in conv2d_tma.conv_tma_candidates(conv2d.operand_class(t, precision), oc, c):
            th, tw, bn, bk = (cfg.kwargs[name] for name in ("TILE_H", "TILE_W", "BLOCK_N",
                                                             "BLOCK_K"))
            columns = k * k * c
            args = dict(x_desc=TensorDescriptor(_ptr(t), [n, h, w, c], [h * w * c, w * c, c, 1],
                                                [1, th, tw, bk]),
                        w_desc=TensorDescriptor(_ptr(t), [oc, columns], [columns, 1], [bn, bk]),
                        y_desc=TensorDescriptor(_ptr(t), [n, h, w, oc],
                                                [h * w * oc, w * oc, oc, 1], [1, th, tw, bn]),
                        bias_ptr=_ptr(t), n_batch=n, out_h=h, out_w=w, out_channels=oc,
                        in_channels=c, kernel_w=k, n_taps=k * k, pad_h=pad, pad_w=pad,
                        dil_h=1, dil_w=1, **ELU, HAS_BIAS=True, INPUT_PRECISION=precision,
                        UPCAST_OPERANDS=False, ACC_DTYPE=tl.float32, **cfg.kwargs)
            yield dict(kernel="conv2d_tma", fn=conv2d_tma.conv2d_bias_elu_tma_kernel,
                       args=args, dtype=dtype, variant=variant,
                       config=dict(cfg.kwargs, num_warps=cfg.num_warps,
                                   num_stages=cfg.num_stages),
                       num_warps=cfg.num_warps, num_stages=cfg.num_stages,
                       expect=dict(tensor_cores=tc, tma=True), archs=(90,))


JOB_SOURCES["gemm_tma"] = gemm_tma_jobs
JOB_SOURCES["conv2d_tma"] = conv2d_tma_jobs
PROBE_SOURCES = {"conv2d_bias_elu_nchw_probe": nchw_probe_jobs}
_ALL_SOURCES = dict(JOB_SOURCES, **PROBE_SOURCES)


def all_jobs(archs, kernels, scratch, sources=JOB_SOURCES):
    """Picklable job descriptions (kernel functions are looked up again in the worker)."""
    jobs = []
    for name, source in sources.items():
        if kernels and name not in kernels:
            continue
        for index, job in enumerate(source()):
            for arch in archs:
                if arch not in job.get("archs", archs):  # a kernel for some archs only
                    continue
                jobs.append(dict(kernel=name, index=index, arch=arch, dtype=job["dtype"],
                                 variant=job["variant"], config=job["config"],
                                 expect=job["expect"], scratch=scratch,
                                 id=f"{name}-{index}-{arch}"))
    return jobs


def build_source(job):
    """(ASTSource, compile options) for a job, specialising arguments like the JIT does."""
    spec = list(_ALL_SOURCES[job["kernel"]]())[job["index"]]
    fn, args = spec["fn"], spec["args"]
    signature, constexprs, attrs = {}, {}, {}
    for i, param in enumerate(fn.params):
        value = args[param.name]
        if param.is_constexpr:
            signature[param.name] = "constexpr"
            constexprs[(i,)] = value
        elif isinstance(value, float):  # the JIT's type for a float: its annotation, or fp32
            signature[param.name] = param.annotation_type or "fp32"
        else:
            ty, attr = native_specialize_impl(BaseBackend, value, False, True, True)
            if ty == "constexpr":
                signature[param.name] = "constexpr"
                constexprs[(i,)] = attr
            else:
                signature[param.name] = ty
                if attr == "D":
                    attrs[(i,)] = [["tt.divisibility", 16]]
    src = triton.compiler.ASTSource(fn=fn, signature=signature, constexprs=constexprs, attrs=attrs)
    return src, {"num_warps": spec["num_warps"], "num_stages": spec["num_stages"]}
