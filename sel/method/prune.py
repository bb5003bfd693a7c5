"""The Lottery Ticket step: a global magnitude prune over all parameters, and its mask.

threshold = the prune fraction's percentile of |w| over every parameter (BatchNorm and biases
included, numpy's linear interpolation, as the original); an entry survives when |w| > threshold.
"""

import numpy as np
import torch

from sel.method.sparsity import FlatGrads


class Mask:
    """A flat keep-mask laid out like FlatGrads, applied to gradients and weights each step."""

    def __init__(self, grads: FlatGrads, keep_flat: torch.Tensor):
        self.grads = grads
        self.flat = keep_flat
        self.views = grads.views_like(self.flat)
        self.sparsity = 1 - float(keep_flat.sum()) / keep_flat.numel()

    def apply_to_grads(self) -> None:
        self.grads.flat.mul_(self.flat)

    @torch.no_grad()
    def apply_to_weights(self) -> None:
        torch._foreach_mul_(self.grads.params, self.views)


def magnitude_threshold(params, fraction: float) -> float:
    """The `fraction` percentile of |w| over all parameters, as numpy computes it."""
    flat = torch.cat([p.detach().abs().flatten() for p in params]).float().cpu().numpy()
    return float(np.percentile(flat, fraction * 100))


def global_magnitude_mask(grads: FlatGrads, fraction: float) -> Mask:
    """Keep the weights with |w| above the global `fraction` percentile."""
    threshold = magnitude_threshold(grads.params, fraction)
    keep = torch.empty_like(grads.flat)
    for view, p in zip(grads.views_like(keep), grads.params):
        view.copy_(p.detach().abs() > threshold)
    return Mask(grads, keep)
