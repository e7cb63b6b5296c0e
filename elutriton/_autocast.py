"""torch.autocast for the fused conv and linear ops, as torch applies it to F.conv2d/F.linear.

Inside ``torch.autocast(device_type, dtype)``, torch runs convolutions and matmuls in the
autocast dtype: it casts every floating tensor argument on that device type that is not
float64 to it, and leaves the rest alone (torch's "lower_precision_fp" op list). The fused ops
are custom ops, which autocast does not see, so the public functions cast their tensor
arguments here, before validation and planning; the result then has the autocast dtype, like
``elu(F.conv2d(...))`` under autocast. Without this, an fp32 model under fp16 autocast would
run the fused layers in fp32 (no tensor cores for fp32 matmuls unless TF32 is on) and hand
fp32 activations on to the next layer.
"""
import torch

_Tensor = torch.Tensor
_is_enabled = torch.is_autocast_enabled
_get_dtype = torch.get_autocast_dtype
# One C call answers "is autocast on for any device type" (~0.1 us, against ~0.5 us for
# reading x.device and asking about its type): the common case, autocast off, stops there.
_any_enabled = getattr(torch._C, "_is_any_autocast_enabled", lambda: True)


def autocast_dtype(x):
    """The dtype autocast would cast a conv/linear on ``x``'s device type to, or None where
    autocast is off there (or ``x`` is not a tensor: validation names it)."""
    if not _any_enabled():
        return None
    device_type = device_type_of(x)
    if device_type is None or not _is_enabled(device_type):
        return None
    return _get_dtype(device_type)


def device_type_of(x):
    """``x.device.type`` (None for a non-tensor), ~0.3 us cheaper for CUDA and CPU tensors:
    ``is_cuda`` and ``is_cpu`` are read without building a device object and its string."""
    if x.__class__ is _Tensor or isinstance(x, _Tensor):
        return "cuda" if x.is_cuda else "cpu" if x.is_cpu else x.device.type
    return getattr(getattr(x, "device", None), "type", None)


def autocast_cast(dtype, x, *others):
    """``(x, *others)`` cast as autocast casts a conv/linear's arguments to ``dtype`` (from
    ``autocast_dtype(x)``; None: no cast) on ``x``'s device type: None and non-tensor
    arguments pass through (validation names them).

    The public functions key their plans by the arguments as given plus this dtype, and where
    the plan runs torch's composite (``ops/composite_path.py``) they pass the arguments uncast:
    torch's convolution and linear cast them under autocast themselves, in C++, ~3x cheaper
    than these Python casts (measured on CPU)."""
    if dtype is None:
        return (x,) + others
    device_type = x.device.type
    return tuple(_cast(t, device_type, dtype) for t in (x,) + others)


def casts(tensor, device_type, dtype) -> bool:
    """Whether autocast to ``dtype`` on ``device_type`` casts ``tensor`` (a floating tensor on
    that device type, neither float64 nor already ``dtype``)."""
    return (isinstance(tensor, torch.Tensor) and tensor.device.type == device_type
            and tensor.is_floating_point() and tensor.dtype not in (torch.float64, dtype))


def _cast(tensor, device_type, dtype):
    if casts(tensor, device_type, dtype):
        return tensor.to(dtype=dtype)  # the keyword form parses ~1 us faster than .to(dtype)
    return tensor
