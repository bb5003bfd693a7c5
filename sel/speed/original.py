"""The original benchmark's way of training, re-created: for timing (`python -m sel.speed.bench`), and
as the reference our step is held to, step for step (tests/test_fidelity.py).

What it does per step, as its code does: a DataLoader over PIL images with torchvision's
transforms and two worker processes, fp32 contiguous tensors, stock Adam, `loss.item()` and an
accuracy `.item()` every step; for SEL also a per-class `.item()` for E, the learning rate set
from `loss.item()`, and a Python loop over parameters with `mask.sum().item()` each. Evaluation:
batches of 64 through a DataLoader, plus the held-out pass with a per-image `.item()`.
"""

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn
from torch.utils.data import DataLoader, Dataset
from torchvision import transforms

from sel.data.augment import MEAN, STD

TRAIN_TRANSFORM = transforms.Compose([
    transforms.RandomCrop(32, padding=4), transforms.RandomHorizontalFlip(),
    transforms.ToTensor(), transforms.Normalize(MEAN, STD)])
TEST_TRANSFORM = transforms.Compose([transforms.ToTensor(), transforms.Normalize(MEAN, STD)])


class PilImages(Dataset):
    """uint8 arrays served as torchvision's CIFAR10 serves them: PIL image, then transforms."""

    def __init__(self, x: np.ndarray, y: np.ndarray, transform):
        self.x, self.y, self.transform = x, y, transform

    def __len__(self):
        return len(self.y)

    def __getitem__(self, i):
        return self.transform(Image.fromarray(self.x[i])), int(self.y[i])


def loader(x, y, train: bool, batch_size: int = 64) -> DataLoader:
    return DataLoader(PilImages(x, y, TRAIN_TRANSFORM if train else TEST_TRANSFORM),
                      batch_size=batch_size, shuffle=train, num_workers=2)


def embarrassment(logits, labels, n_classes=10, temperature=1.5):
    losses = nn.CrossEntropyLoss(reduction="none")(logits / temperature, labels)
    e, c = np.zeros(n_classes), np.zeros(n_classes)
    for k in range(n_classes):
        mask = labels == k
        if mask.sum() > 0:
            e[k] = losses[mask].mean().item()
            c[k] = max(0.0, 1.0 - e[k])
    return e, c


def sparse_update(model, gamma):
    total = kept = 0
    for p in model.parameters():
        if p.grad is not None:
            mask = (p.grad.abs() > gamma).float()
            p.grad.mul_(mask)
            total += mask.numel()
            kept += mask.sum().item()
    return 1.0 - kept / max(total, 1)


def train_step(model, optimizer, imgs, labels, device, gamma=None, base_lr=1e-3, temperature=1.5):
    """One step of the original's dense epoch, or of its SEL epoch when gamma is given. Returns
    what its epochs sum (loss * images, correct) and, for SEL, the batch's E, C and sparsity:
    the fidelity tests compare our step with it (tests/test_fidelity.py)."""
    imgs, labels = imgs.to(device), labels.to(device)
    optimizer.zero_grad()
    outputs = model(imgs)
    loss = F.cross_entropy(outputs, labels)
    e = c = sparsity = None
    if gamma is not None:
        e, c = embarrassment(outputs.detach(), labels, temperature=temperature)
        for group in optimizer.param_groups:
            group["lr"] = base_lr * (1.0 + 2.0 * loss.item())
    loss.backward()
    if gamma is not None:
        sparsity = sparse_update(model, gamma)
    optimizer.step()
    return {"loss": loss.item() * labels.size(0), "correct": (outputs.argmax(1) == labels).sum().item(),
            "E": e, "C": c, "sparsity": sparsity}


@torch.no_grad()
def evaluate(model, test_loader, held_out_loader, device, n_classes=10):
    """Its eval_full and eval_per_class: two passes, the second with a per-image read."""
    model.eval()
    correct = 0
    for imgs, labels in test_loader:
        correct += (model(imgs.to(device)).argmax(1) == labels.to(device)).sum().item()
    hits = [0] * n_classes
    for imgs, labels in held_out_loader:
        labels = labels.to(device)
        preds = model(imgs.to(device)).argmax(1)
        for i in range(len(labels)):
            hits[labels[i].item()] += (preds[i] == labels[i]).item()
    return correct, hits
