"""Traffic model: the bytes each pipeline must move per shape and the roofline times that
follow from stated device figures. Everything here is PREDICTED, never measured.

Pipelines (forward):
- fused (elutriton): read x, weight, bias once; write y once.
- eager: cuDNN/cuBLAS with the bias in its epilogue writes z, then F.elu reads z and writes y
  (bias+ELU alone: x + b writes t, F.elu reads t and writes y).
- compile: Inductor runs the conv/GEMM as an extern kernel without bias, then one fused
  pointwise kernel reads z (+bias) and writes y: the same bytes as eager for conv/linear,
  the minimal bytes for bias+ELU alone.
- conv_only: the conv/GEMM alone, the floor of any unfused pipeline.
Backward adds: fused reads grad_y and y, writes grad_z (one pass; bias grad in it), eager
reads grad_y and z, writes grad_z, then reads grad_z again for the bias gradient.
"""
import dataclasses

from perf.shapes import ConvShape, ElementwiseShape, LinearShape


@dataclasses.dataclass(frozen=True)
class Device:
    name: str
    bandwidth: float      # bytes/s, HBM
    tensor_flops: float   # fp16/bf16 dense tensor-core FLOP/s
    tf32_flops: float
    fp32_flops: float     # non-tensor-core


# Vendor datasheet figures (dense, no sparsity).
DEVICES = {
    "H100-SXM": Device("H100-SXM", 3.35e12, 989.4e12, 494.7e12, 66.9e12),
    "A100-SXM-80GB": Device("A100-SXM-80GB", 2.039e12, 312e12, 156e12, 19.5e12),
}
ELEMENT_BYTES = {"fp16": 2, "bf16": 2, "fp32": 4}
PIPELINES = ("fused", "eager", "compile", "conv_only")


def _sizes(shape, dtype):
    """(x, weight+bias, y) bytes and GEMM flops of one forward."""
    s = ELEMENT_BYTES[dtype]
    if isinstance(shape, ConvShape):
        oh, ow = shape.out_hw
        x = shape.n * shape.c * shape.h * shape.w * s
        w = (shape.oc * shape.c // shape.groups * shape.k * shape.k + shape.oc) * s
        y = shape.n * shape.oc * oh * ow * s
        flops = 2 * shape.n * oh * ow * shape.oc * (shape.c // shape.groups) * shape.k ** 2
        return x, w, y, flops
    if isinstance(shape, LinearShape):
        return (shape.m * shape.k * s, (shape.n * shape.k + shape.n) * s, shape.m * shape.n * s,
                2 * shape.m * shape.n * shape.k)
    n = shape.rows * shape.channels
    return n * s, shape.channels * s, n * s, 0


def pipeline_bytes(shape, dtype, pipeline, backward=False):
    """Bytes the pipeline moves (forward, or forward + the activation part of backward)."""
    x, w, y, _ = _sizes(shape, dtype)
    gemm = not isinstance(shape, ElementwiseShape)
    if pipeline == "fused":
        total = x + w + y
    elif pipeline == "conv_only":
        total = x + w + y if gemm else 0
    elif pipeline == "eager":
        total = x + w + 3 * y if gemm else 4 * y + w
    elif pipeline == "compile":
        total = x + w + 3 * y if gemm else x + w + y
    else:
        raise ValueError(pipeline)
    if backward and pipeline != "conv_only":
        # fused and compile: read grad_y and y (or z), write grad_z, bias grad in the same pass;
        # eager: the same plus a separate read of grad_z for the bias gradient.
        total += 4 * y if pipeline == "eager" else 3 * y
    return total


def minimal_bytes(shape, dtype):
    """Each input read once, the output written once (the GB/s denominator)."""
    x, w, y, _ = _sizes(shape, dtype)
    return x + w + y


def flops(shape):
    return _sizes(shape, "fp16")[3]


def roofline_seconds(shape, dtype, pipeline, device: Device, tf32=True):
    """max(bytes/bandwidth, flops/peak) for the GEMM kernel, plus bytes/bandwidth for any
    separate pointwise kernel (PREDICTED)."""
    x, w, y, f = _sizes(shape, dtype)
    peak = (device.tensor_flops if dtype in ("fp16", "bf16")
            else device.tf32_flops if tf32 else device.fp32_flops)
    total = pipeline_bytes(shape, dtype, pipeline)
    if f == 0:
        return total / device.bandwidth
    gemm_bytes = x + w + y
    gemm_time = max(gemm_bytes / device.bandwidth, f / peak)
    return gemm_time + (total - gemm_bytes) / device.bandwidth


def model_rows(shapes, dtypes, device: Device):
    """One row per (shape, dtype, pipeline) with predicted bytes and times."""
    rows = []
    for shape in shapes:
        for dtype in dtypes:
            for pipeline in PIPELINES:
                if pipeline == "conv_only" and isinstance(shape, ElementwiseShape):
                    continue
                seconds = roofline_seconds(shape, dtype, pipeline, device)
                rows.append(dict(
                    shape=shape.name, dtype=dtype, pipeline=pipeline,
                    predicted_bytes_fwd=pipeline_bytes(shape, dtype, pipeline),
                    predicted_bytes_fwd_bwd=pipeline_bytes(shape, dtype, pipeline, True),
                    predicted_us=seconds * 1e6,
                    predicted_speedup_vs_eager=roofline_seconds(shape, dtype, "eager", device)
                    / seconds,
                    device_figures=device.name))
    return rows
