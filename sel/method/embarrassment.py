"""Per-class embarrassment E and confidence C of one batch, computed on the device.

E_c is the mean cross-entropy of logits / T over the batch's images of class c, and
C_c = max(0, 1 - E_c). A class with no image in the batch gets E_c = C_c = 0, as the original.
"""

import torch
import torch.nn.functional as F


def class_counts(labels: torch.Tensor, n_classes: int) -> torch.Tensor:
    """Images per class; unlike torch.bincount, never reads the labels' maximum back to the host."""
    return torch.zeros(n_classes, device=labels.device).index_add_(
        0, labels, torch.ones(len(labels), device=labels.device))


def class_embarrassment(logits: torch.Tensor, labels: torch.Tensor, n_classes: int,
                        temperature: float) -> tuple[torch.Tensor, torch.Tensor]:
    """(E, C), each of shape (n_classes,), without reading anything back to the host."""
    losses = F.cross_entropy(logits.float() / temperature, labels, reduction="none")
    total = torch.zeros(n_classes, device=logits.device).index_add_(0, labels, losses)
    count = class_counts(labels, n_classes)
    present = count > 0
    e = total / count.clamp(min=1)
    c = torch.where(present, (1 - e).clamp(min=0), torch.zeros_like(e))
    return e, c
