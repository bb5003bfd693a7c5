"""Difficulty: every training image scored by the loss of the scorer model, sorted per class.

As the original: the freshly built model in eval mode (BatchNorm running statistics), the
training augmentation applied, batches of 256 in dataset order, fp32. Optionally the scorer
is first trained densely for a few epochs (`sort.scorer_epochs`).
"""

import sys
import time

import numpy as np
import torch
import torch.nn.functional as F

from sel.train.training import Trainer


@torch.no_grad()
def score(trainer: Trainer, batch_size: int = 256, stage: str = "sort") -> np.ndarray:
    """Per-image loss of the trainer's model over the whole training set, augmented."""
    model, images = trainer.model.eval(), trainer.train_set
    losses, started, shown = [], time.monotonic(), time.monotonic()
    for batch in torch.arange(len(images), device=trainer.device).split(batch_size):
        logits = model(images.augmented(batch, trainer.generator))
        losses.append(F.cross_entropy(logits.float(), images.y[batch], reduction="none"))
        if time.monotonic() - shown > 30:  # a progress line now and then on long runs
            done, elapsed = len(losses) * batch_size, time.monotonic() - started
            print(f"[{stage}] scored {done}/{len(images)} images, {elapsed:.0f}s, "
                  f"left ~{elapsed / done * (len(images) - done):.0f}s", file=sys.stderr, flush=True)
            shown = time.monotonic()
    return torch.cat(losses).cpu().numpy()


def difficulty_order(losses: np.ndarray, labels: np.ndarray, n_classes: int) -> tuple[np.ndarray, np.ndarray]:
    """(order, counts): training indices grouped by class, each class easy to hard."""
    per_class = [np.flatnonzero(labels == c) for c in range(n_classes)]
    order = np.concatenate([idx[np.argsort(losses[idx], kind="stable")] for idx in per_class])
    return order, np.array([len(idx) for idx in per_class])
