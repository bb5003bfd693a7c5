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

When it selects is Composer's schedule (`Window`): only between `start` and `end` of training
(fractions of the run's epochs, 0.5 and 0.9 by default) and, with `interrupt` k, not on every
k-th step of an epoch, which trains a plain batch. With `history` (the paper's admission), the
percentile is a loss's rank among the last `history` candidate losses of the run rather than
within its own batch.
"""

import math
from typing import NamedTuple

import torch


class Window(NamedTuple):
    """Composer's selective-backprop schedule: select from `start` to `end` of training
    (fractions of the run), except on every `interrupt`-th step of an epoch (None: never)."""

    start: float = 0.5
    end: float = 0.9
    interrupt: int | None = 2

    def selects(self, progress: float, step: int) -> bool:
        """Whether step `step` (0-based, of its epoch), at `progress` through the run, selects."""
        interrupted = self.interrupt is not None and (step + 1) % self.interrupt == 0
        return self.start <= progress < self.end and not interrupted


EVERY_STEP = Window(0.0, 1.0, None)  # the ablation: select on every step from initialisation


def epoch_steps(n: int, batch_size: int, keep: float | None, window: Window = EVERY_STEP,
                epoch: int = 0, epochs: int = 1) -> list[tuple[int, bool]]:
    """Each step of an epoch over `n` images, the run's epoch `epoch` of `epochs`: (images it
    forwards, whether it selects). A selecting step forwards `candidate_size` candidates, a plain
    one `batch_size` images; progress through the run counts the epoch's images taken so far."""
    steps, taken = [], 0
    while taken < n:
        selecting = keep is not None and window.selects((epoch + taken / n) / epochs, len(steps))
        size = min(candidate_size(batch_size, keep if selecting else None), n - taken)
        steps.append((size, selecting))
        taken += size
    return steps


def candidate_size(batch_size: int, keep: float | None) -> int:
    """Images forwarded per step: candidates enough that a full step keeps `batch_size` of them
    (`batch_size` itself when not selecting, keep None)."""
    return batch_size if keep is None else math.ceil(batch_size / keep - 1e-9)


def kept_count(candidates: int, batch_size: int, keep: float) -> int:
    """Images trained out of `candidates`: `batch_size` for a full step, about `keep` of a last,
    smaller one (at least one)."""
    return min(batch_size, max(1, round(candidates * keep)))


def trained_images(n: int, batch_size: int, keep: float | None, window: Window = EVERY_STEP,
                   epoch: int = 0, epochs: int = 1) -> int:
    """Images forwarded and backpropagated in an epoch over `n` images (`epoch_steps`)."""
    return sum(kept_count(size, batch_size, keep) if selecting else size
               for size, selecting in epoch_steps(n, batch_size, keep, window, epoch, epochs))


def epoch_flops(n: int, batch_size: int, keep: float | None, train_flops: float, eval_flops: float,
                window: Window = EVERY_STEP, epoch: int = 0, epochs: int = 1) -> float:
    """Executed FLOPs of an epoch over `n` images: forward+backward of each trained image and a
    forward of every candidate of a selecting step (counted at the evaluation forward's FLOPs:
    the matmuls and convolutions are the same, no autograd graph is kept)."""
    steps = epoch_steps(n, batch_size, keep, window, epoch, epochs)
    candidates = sum(size for size, selecting in steps if selecting)
    return eval_flops * candidates + train_flops * trained_images(n, batch_size, keep, window, epoch, epochs)


def batch_percentile(losses: torch.Tensor) -> torch.Tensor:
    """Each loss's percentile in (0, 1) within its own batch (Composer)."""
    rank = losses.argsort().argsort()  # 0 = the lowest loss
    return (rank.float() + 0.5) / len(losses)


def history_percentile(losses: torch.Tensor, history: torch.Tensor) -> torch.Tensor:
    """Each loss's percentile in (0, 1) among the losses of `history` that are set (NaN: not yet),
    the paper's CDF over recent losses; 0.5 for all while the history is empty."""
    below = (history.unsqueeze(0) < losses.unsqueeze(1)).sum(1)
    return (below.float() + 0.5) / (history.isfinite().sum().float() + 1)


def select_by_loss(losses: torch.Tensor, kept: int, keep: float, noise: torch.Tensor,
                   percentile: torch.Tensor | None = None) -> torch.Tensor:
    """Indices of `kept` of the candidates, drawn without replacement with weight
    percentile(loss)^(1/keep - 1) (the percentile within the batch unless given); `noise`:
    Exp(1) draws, one per candidate."""
    percentile = batch_percentile(losses) if percentile is None else percentile
    keys = (1 / keep - 1) * percentile.log() - noise.log()
    return keys.topk(kept, sorted=False).indices
