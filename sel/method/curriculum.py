"""The curriculum: per-class difficulty pools, stage windows and the per-stage gamma.

A pool is each class's training indices sorted from easy to hard. Stage s takes, for class c
with n_c images, the window [int(start * n_c), min(int(end * n_c), that + cap)); warm-up takes
the first k of each pool. Windows are index tensors on the device, reshuffled every epoch.
"""

import numpy as np
import torch


class Pools:
    """Per-class training indices sorted by ascending difficulty (as written by `sort`)."""

    def __init__(self, order: np.ndarray, counts: np.ndarray):
        self.counts = np.asarray(counts)
        bounds = np.concatenate([[0], np.cumsum(counts)])
        self.per_class = [order[bounds[c]:bounds[c + 1]] for c in range(len(counts))]

    @classmethod
    def load(cls, path) -> "Pools":
        with np.load(path, allow_pickle=False) as z:
            return cls(z["order"], z["counts"])

    @classmethod
    def shuffled(cls, labels: np.ndarray, n_classes: int, seed: int) -> "Pools":
        """Each class's training images in a seeded random order: the curriculum's windows,
        sizes and epochs without its difficulty order (the random-order controls)."""
        rng = np.random.default_rng(seed)
        per_class = [rng.permutation(np.flatnonzero(labels == c)) for c in range(n_classes)]
        return cls(np.concatenate(per_class), np.array([len(p) for p in per_class]))

    def window(self, start: float, end: float, cap: int) -> np.ndarray:
        """Stage window of every class, concatenated."""
        parts = []
        for pool in self.per_class:
            lo = int(start * len(pool))
            parts.append(pool[lo:min(int(end * len(pool)), lo + cap)])
        return np.concatenate(parts)

    def easiest(self, k: int) -> np.ndarray:
        """The first k images of each class's pool (the warm-up set)."""
        return np.concatenate([pool[:k] for pool in self.per_class])


def stage_gamma(gamma: float, stage_index: int, n_stages: int, decay: float) -> float:
    """gamma of stage s (0-based): gamma * (1 - decay * s / n_stages)."""
    return gamma * (1 - decay * stage_index / n_stages)


def epoch_order(indices: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """`indices` in a fresh random order, drawn on their device."""
    return indices[torch.randperm(len(indices), device=indices.device, generator=generator)]
