"""Selective backward (Selective Backprop, Jiang et al. 2019, "Accelerating deep learning by
focusing on the biggest losers"): forward a candidate batch without building the autograd graph,
keep a `keep` share of it, drawn by loss, and run forward and backward on that share alone.

The optimizer still steps on `train.batch_size` images: a step forwards
`candidate_size(batch_size, keep)` candidates and keeps `batch_size` of them, so an epoch's steps
shrink by `keep` while each step's batch is the recipe's own. The draw is the one Composer's
`select_using_loss` makes (mosaicml/composer, the public implementation of the paper on
image classifiers): rank the candidates by loss, give the candidate at percentile p in (0, 1)
the weight p^(1/keep - 1) and draw `kept` of them without replacement in proportion to it (the
higher the loss, the likelier; keep = 1 draws uniformly). We draw with exponential keys
(Efraimidis and Spirakis 2006): the `kept` largest of log(weight) - log(Exp(1) noise), the same
distribution as one-by-one sampling without replacement, but a fixed-shape top-k on the device
that reads nothing back to the host (Composer draws with numpy).
"""

import math

import torch


def candidate_size(batch_size: int, keep: float | None) -> int:
    """Images forwarded per step: candidates enough that a full step keeps `batch_size` of them
    (`batch_size` itself when not selecting, keep None)."""
    return batch_size if keep is None else math.ceil(batch_size / keep - 1e-9)


def kept_count(candidates: int, batch_size: int, keep: float) -> int:
    """Images trained out of `candidates`: `batch_size` for a full step, about `keep` of a last,
    smaller one (at least one)."""
    return min(batch_size, max(1, round(candidates * keep)))


def trained_images(n: int, batch_size: int, keep: float | None) -> int:
    """Images forwarded and backpropagated in an epoch over `n` images."""
    if keep is None:
        return n
    per_step = candidate_size(batch_size, keep)
    full, rest = divmod(n, per_step)
    return full * batch_size + (kept_count(rest, batch_size, keep) if rest else 0)


def epoch_flops(n: int, batch_size: int, keep: float | None, train_flops: float, eval_flops: float) -> float:
    """Executed FLOPs of an epoch over `n` images: forward+backward of each trained image and,
    when selecting, a forward of every candidate (counted at the evaluation forward's FLOPs:
    the matmuls and convolutions are the same, no autograd graph is kept)."""
    candidates = 0 if keep is None else n
    return eval_flops * candidates + train_flops * trained_images(n, batch_size, keep)


def select_by_loss(losses: torch.Tensor, kept: int, keep: float, noise: torch.Tensor) -> torch.Tensor:
    """Indices of `kept` of the candidates, drawn without replacement with weight
    percentile(loss)^(1/keep - 1); `noise`: Exp(1) draws, one per candidate."""
    n = len(losses)
    rank = losses.argsort().argsort()  # 0 = the lowest loss
    percentile = (rank.float() + 0.5) / n
    keys = (1 / keep - 1) * percentile.log() - noise.log()
    return keys.topk(kept, sorted=False).indices
