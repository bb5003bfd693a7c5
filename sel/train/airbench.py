"""An airbench-style net (Jordan, "94% on CIFAR-10 in 3.29 seconds on a single GPU"), written
from the facts of KellerJordan/cifar10-airbench (airbench93/airbench94), not copied from it.

A frozen 2x2 patch-whitening conv (no padding: 32 -> 31) with a bias, GELU, three conv groups
(conv 3x3, max-pool 2, BatchNorm, GELU, conv 3x3, BatchNorm, GELU: 31 -> 15 -> 7 -> 3), a
max-pool to 1x1, a linear head without bias, and logits scaled by 1/9. BatchNorm is airbench's:
eps 1e-12, running statistics updated at 0.4 (its "momentum 0.6" in the other convention), the
scale frozen at 1 and only the shift trained. Each conv's first in_channels filters start as the
identity (a Dirac kernel), as airbench initialises them.
"""

import numpy as np
import torch
from torch import nn

from sel.data.augment import Images

WHITEN_KERNEL = 2
WHITEN_WIDTH = 2 * 3 * WHITEN_KERNEL ** 2  # the eigenvectors and their negatives
WHITEN_EPS = 5e-4                          # airbench's: bounds the gain on the weakest directions
WHITEN_IMAGES = 5000                       # airbench's: the first 5000 training images
LOGIT_SCALE = 1 / 9


def _conv(c_in: int, c_out: int, kernel: int = 3, padding: int = 1, bias: bool = False) -> nn.Conv2d:
    """A conv whose first c_in filters pass their input through; the bias starts at zero."""
    conv = nn.Conv2d(c_in, c_out, kernel, padding=padding, bias=bias)
    with torch.no_grad():
        nn.init.dirac_(conv.weight[:c_in])
        if bias:
            conv.bias.zero_()
    return conv


def _batchnorm(c: int) -> nn.BatchNorm2d:
    norm = nn.BatchNorm2d(c, eps=1e-12, momentum=0.4)
    norm.weight.requires_grad_(False)
    return norm


class ConvGroup(nn.Sequential):
    """conv, max-pool 2, BatchNorm, GELU, conv, BatchNorm, GELU: halves the spatial size."""

    def __init__(self, c_in: int, c_out: int):
        super().__init__(_conv(c_in, c_out), nn.MaxPool2d(2), _batchnorm(c_out), nn.GELU(),
                         _conv(c_out, c_out), _batchnorm(c_out), nn.GELU())


class Airbench(nn.Module):
    """`widths`: the three groups' channels (airbench93: 64/128/128; airbench94: 64/256/256).
    The whitening weights are random until `init_whitening` sets them from the training images."""

    def __init__(self, widths: tuple[int, int, int], n_classes: int = 10):
        super().__init__()
        self.whiten = _conv(3, WHITEN_WIDTH, WHITEN_KERNEL, padding=0, bias=True)
        self.whiten.weight.requires_grad_(False)  # fixed by the data; airbench trains only its bias
        ins = (WHITEN_WIDTH, *widths[:2])
        self.groups = nn.Sequential(*(ConvGroup(c_in, c_out) for c_in, c_out in zip(ins, widths)))
        self.pool = nn.MaxPool2d(3)
        self.head = nn.Linear(widths[2], n_classes, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.groups(nn.functional.gelu(self.whiten(x)))
        return self.head(torch.flatten(self.pool(x), 1)) * LOGIT_SCALE


def init_whitening(model: Airbench, images) -> None:
    """Set the whitening conv so that its first half maps the images' 2x2 patches to features
    with identity second moment (eigenvectors of the patch covariance, each scaled by
    1/sqrt(eigenvalue + eps), strongest first) and its second half to their negatives, so the
    GELU after it keeps both signs. The first layer then sees decorrelated inputs of equal scale,
    which is what lets airbench train in a few epochs. `images`: uint8 (N, 32, 32, 3) training
    images, normalised as the pipeline feeds them; the first WHITEN_IMAGES are used, unaugmented.
    Deterministic given the images; runs on the model's device."""
    weight = model.whiten.weight
    x = np.asarray(images[:WHITEN_IMAGES])
    x = Images(x, np.zeros(len(x), dtype=np.int64), weight.device, torch.contiguous_format, padding=0) \
        .plain(torch.arange(len(x), device=weight.device))
    k = WHITEN_KERNEL
    # (N, C, H', W', k, k) -> one row per patch, laid out (C, k, k) as the conv's weight is
    patches = x.unfold(2, k, 1).unfold(3, k, 1).permute(0, 2, 3, 1, 4, 5).reshape(-1, 3 * k * k).double()
    moment = patches.T @ patches / len(patches)  # uncentred, as airbench (the bias absorbs the mean)
    values, vectors = torch.linalg.eigh(moment)
    values, vectors = values.flip(0), vectors.T.flip(0)
    scaled = (vectors / torch.sqrt(values + WHITEN_EPS)[:, None]).reshape(-1, 3, k, k)
    with torch.no_grad():
        weight.copy_(torch.cat((scaled, -scaled)).to(weight.dtype))
