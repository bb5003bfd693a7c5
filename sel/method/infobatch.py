"""InfoBatch (Qin et al., ICLR 2024, "InfoBatch: lossless training speed up by unbiased dynamic
data pruning"; docs/savings.md): each epoch, of the images whose last training loss is below the
mean, drop each at random with probability `ratio`, and scale the loss of the low-loss images
kept by 1 / (1 - ratio), so that the epoch's gradient keeps its expectation; the last part of the
run trains on every image (the paper's anneal, delta = 0.875 of the epochs). The saving is the
forward and backward of the images dropped; the scores are the losses of the training forward
itself, so no extra pass is run.
"""

import math

import torch

ANNEAL = 0.875  # the paper's delta: prune in the first 87.5% of the epochs, then train on all


def pruned_epochs(epochs: int) -> int:
    """Epochs that prune: the paper's first delta of them, leaving at least the last one whole."""
    return min(math.ceil(ANNEAL * epochs), epochs - 1) if epochs else 0


def prune_well_learned(indices: torch.Tensor, scores: torch.Tensor, ratio: float,
                       generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """(the images of `indices` kept this epoch, their loss weights): those scoring below the
    mean are dropped with probability `ratio`, the others kept; a kept low scorer weighs
    1 / (1 - ratio), the rest 1. The kept count depends on the draw, so it is read back once,
    here, at the epoch's start (never inside a step)."""
    s = scores[indices]
    well = s < s.mean()
    drop = well & (torch.rand(len(indices), device=indices.device, generator=generator) < ratio)
    weights = torch.where(well, 1 / (1 - ratio), 1.0)
    keep = ~drop
    return indices[keep], weights[keep]
