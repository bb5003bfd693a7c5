"""SEL's signal put to work (docs/savings.md, "The E-driven class draw"): each epoch trains on a
fixed share of the training images, and each class's part of that share follows its running
embarrassment E_c (the last epoch's mean), so the classes the model is confident on get fewer
images, down to a floor. The compute saved is the forward and backward of the images never drawn.

Every class c gets the share  floor / C + (1 - floor) * E_c / sum(E)  of the epoch's `n` images
(C classes; floor = 1 is a uniform random subset). The draw has a fixed shape and reads nothing
back to the host: each image gets a random rank within its class, and the `n` images of smallest
rank / quota are taken, so each class gets its quota (one more or less by rounding) and a class
with fewer images than its quota passes what it lacks to the others in proportion to theirs.
"""

import torch

from sel.method.embarrassment import class_counts


def drawn_count(n_images: int, keep: float) -> int:
    """Images an epoch draws from `n_images` (at least one)."""
    return max(1, round(keep * n_images))


def class_shares(e: torch.Tensor, floor: float) -> torch.Tensor:
    """Each class's share of an epoch, from its embarrassment `e`; sums to one, each at least
    floor / C. No class embarrassed at all (E = 0 everywhere) draws uniformly."""
    e = e.clamp(min=0)
    total = e.sum()
    proportional = torch.where(total > 0, e / total.clamp(min=torch.finfo(e.dtype).tiny),
                               torch.full_like(e, 1 / len(e)))
    return floor / len(e) + (1 - floor) * proportional


def draw_by_class(indices: torch.Tensor, labels: torch.Tensor, shares: torch.Tensor, n: int,
                  generator: torch.Generator) -> torch.Tensor:
    """`n` of `indices` (whose classes are `labels`), each class's part following `shares`."""
    n_classes = len(shares)
    noise = torch.rand(len(indices), device=indices.device, generator=generator)
    order = (labels.to(noise.dtype) + noise).argsort()  # by class, randomly within it
    counts = class_counts(labels, n_classes)
    first = torch.cumsum(counts, 0) - counts  # where each class starts in `order`
    rank = torch.empty_like(order)
    rank[order] = torch.arange(len(order), device=indices.device)
    rank = rank - first[labels].long()
    quota = shares[labels] * n
    return indices[((rank + 0.5) / quota).topk(n, largest=False, sorted=False).indices]
