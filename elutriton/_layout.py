"""Memory-layout helpers: which tensors a flat kernel may walk, and how channels sit in them."""
import math

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


def batched_view(x: torch.Tensor) -> torch.Tensor:
    """An unbatched [C, H, W] ``x`` as a [1, C, H, W] view whose batch stride is its outermost
    one (what a batch of one in x's layout has), not ``x.unsqueeze(0)``'s ``C * stride(C)``.

    Why: torch's CPU convolution backward (seen in torch 2.13.0, float64 and float16) returns a
    wrong weight gradient for a grouped convolution of a channels_last input whose batch
    stride is that degenerate one, which is what ``unsqueeze(0)`` (and F.conv2d's own unbatched
    path) makes of a channels_last-strided [C, H, W]; with the outermost batch stride it is
    right (``docs/torch_defects.md``)."""
    strides = x.stride()
    if strides[0] >= strides[1] and strides[0] >= strides[2]:
        return x.unsqueeze(0)  # channels outermost (NCHW-like): unsqueeze's stride is outermost
    order = sorted(range(3), key=lambda d: strides[d], reverse=True)
    inverse = [0] + [1 + order.index(d) for d in range(3)]
    return x.permute(order).unsqueeze(0).permute(inverse)


def as_rows(tensor: torch.Tensor) -> torch.Tensor:
    """``tensor`` [..., K] as [rows, K] (a view where reshape can make one): what
    ``reshape(-1, K)`` gives, also for K = 0, where -1 cannot be inferred."""
    return tensor.reshape(math.prod(tensor.shape[:-1]), tensor.shape[-1])
