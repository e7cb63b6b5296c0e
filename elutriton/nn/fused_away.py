"""``FusedAway``: what ``elutriton.fuse`` leaves where a module it fused into a layer was.

An activation, a folded BatchNorm or an eval-mode dropout that fuse took into a fused layer
is replaced by the identity, so the module tree keeps its names and ``nn.Sequential`` indices
(and ``state_dict`` keys). An ``nn.Identity`` there cost ~0.8 us of ``nn.Module``'s call
machinery on every forward (its hook checks; measured on CPU), which a fused layer's model
paid and the unfused one did not; ``FusedAway`` is an ``nn.Identity`` whose call returns its
input directly (~0.1 us). So hooks registered on it, or global module hooks, do not run for
it, and tracers that intercept module calls (fx) see no call: it computes nothing.
"""
import torch


class FusedAway(torch.nn.Identity):
    """``nn.Identity`` called without ``nn.Module.__call__`` (module docstring)."""

    def __call__(self, input, *args, **kwargs):
        return input
