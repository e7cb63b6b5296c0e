"""Argument checks done once, at the public boundary, with messages that name the argument."""
import numbers

import torch

FLOAT_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)


def check_float_tensor(op: str, name: str, tensor) -> None:
    """Raise unless ``tensor`` is a dense (strided, not nested, no negative bit) tensor of a
    floating dtype the kernels support. (The kernels read strided storage: a sparse, MKLDNN or
    nested tensor would reach them as an internal error, a negative view as a silently wrong
    result; or torch's composite would take it on one device and not on another.)"""
    if not isinstance(tensor, torch.Tensor):
        raise TypeError(f"{op}: expected `{name}` to be a torch.Tensor, got {type(tensor).__name__}")
    if tensor.is_nested or tensor.layout != torch.strided:
        what = "a nested tensor" if tensor.is_nested else f"layout {tensor.layout}"
        raise TypeError(f"{op}: expected `{name}` to be a dense (strided) tensor, got {what}")
    if not torch.compiler.is_compiling() and tensor.is_neg():  # (dynamo cannot trace is_neg)
        raise TypeError(f"{op}: `{name}` is a negative view (its storage holds -values; the "
                        f"kernels read storage): pass `{name}.resolve_neg()`")
    if tensor.dtype not in FLOAT_DTYPES:
        raise TypeError(
            f"{op}: expected `{name}` to have a floating dtype (float16, bfloat16, float32 or "
            f"float64), got {tensor.dtype}"
        )


def check_same_device_dtype(op: str, name: str, tensor: torch.Tensor, ref_name: str,
                            ref: torch.Tensor) -> None:
    """Raise unless ``tensor`` matches ``ref`` in dtype and device."""
    if tensor.device != ref.device:
        raise ValueError(
            f"{op}: expected `{name}` on the same device as `{ref_name}` ({ref.device}), "
            f"got {tensor.device}"
        )
    if tensor.dtype != ref.dtype:
        raise TypeError(
            f"{op}: expected `{name}` to have the same dtype as `{ref_name}` ({ref.dtype}), "
            f"got {tensor.dtype}"
        )


def normalize_dim(op: str, dim, ndim: int) -> int:
    """Wrap a possibly negative ``dim`` into ``[0, ndim)`` like torch, or raise IndexError."""
    if isinstance(dim, bool) or not isinstance(dim, numbers.Integral):
        raise TypeError(f"{op}: expected `dim` to be an int, got {dim!r}")
    if ndim == 0:
        raise IndexError(f"{op}: a bias needs `x` with at least one dimension, got a 0-d tensor")
    if not -ndim <= dim < ndim:
        raise IndexError(
            f"{op}: `dim` out of range (expected to be in range of [{-ndim}, {ndim - 1}], "
            f"but got {dim})"
        )
    return dim % ndim


def check_bias(op: str, bias, ref: torch.Tensor, ref_name: str, n_channels: int,
               what: str) -> None:
    """Raise unless ``bias`` is a 1-D tensor of length ``n_channels`` (``what`` names that
    length, e.g. ``"x.shape[dim]"``) with ``ref``'s dtype and device."""
    check_float_tensor(op, "bias", bias)
    check_same_device_dtype(op, "bias", bias, ref_name, ref)
    if bias.dim() != 1 or bias.shape[0] != n_channels:
        raise ValueError(f"{op}: expected `bias` of length {what} = {n_channels}, i.e. shape "
                         f"({n_channels},), got shape {tuple(bias.shape)}")
