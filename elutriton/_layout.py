"""Memory-layout helpers: which tensors a flat kernel may walk, and how channels sit in them."""
import torch


def is_dense(tensor: torch.Tensor) -> bool:
    """True when ``tensor`` covers a gap-free block of storage with no element repeated.

    Such a tensor (contiguous, channels_last, or any permutation of a contiguous one) can be
    processed as a flat array of ``numel`` elements starting at its data pointer.
    """
    expected = 1
    for size, stride in sorted(
        ((n, s) for n, s in zip(tensor.shape, tensor.stride()) if n != 1), key=lambda p: p[1]
    ):
        if stride != expected:
            return False
        expected *= size
    return True


def channel_split(tensor: torch.Tensor, dim: int):
    """View a dense ``tensor``'s storage as ``[n_outer, n_channels, n_inner]`` around ``dim``.

    The element at flat storage offset p has channel index ``(p // n_inner) % n_channels``:
    for NCHW conv outputs n_inner = H*W, for channels_last and ``[..., C]`` it is 1.
    """
    n_channels = tensor.shape[dim]
    numel = tensor.numel()
    if n_channels <= 1 or numel == 0:
        return 1, n_channels, numel
    n_inner = tensor.stride(dim)
    return numel // (n_channels * n_inner), n_channels, n_inner

