"""ResNet-18 adapted to 32x32 images, as the original builds it, with a width knob for tests."""

import random

import numpy as np
import torch
from torch import nn
from torchvision.models import ResNet18_Weights
from torchvision.models.resnet import BasicBlock, ResNet

from .errors import SelError


class _ScaledResNet18(ResNet):
    """torchvision's ResNet-18 with every stage's channels scaled by width / 64.

    At width 64 it is torchvision's `resnet18` exactly, built in the same order, so the same
    seed gives the same initial weights and the ImageNet state dict loads into it."""

    def __init__(self, width: int):
        self._width = width
        super().__init__(BasicBlock, [2, 2, 2, 2])

    def _make_layer(self, block, planes, blocks, stride=1, dilate=False):
        if planes == 64:  # the first stage starts from the stem's channels
            self.inplanes = self._width
        return super()._make_layer(block, planes * self._width // 64, blocks, stride, dilate)


def build_model(width: int = 64, pretrained: bool = False, n_classes: int = 10) -> nn.Module:
    """The original's model: resnet18 (ImageNet weights if `pretrained`), conv1 swapped for a
    3x3 stride-1 conv, maxpool removed, fc to `n_classes`. Draws from torch's global RNG."""
    model = _ScaledResNet18(width)
    if pretrained:
        model.load_state_dict(imagenet_state_dict())
    model.conv1 = nn.Conv2d(3, width, kernel_size=3, stride=1, padding=1, bias=False)
    if width != 64:  # the stem's BatchNorm was built for 64 channels; init is the same (1, 0)
        model.bn1 = nn.BatchNorm2d(width)
    model.maxpool = nn.Identity()
    model.fc = nn.Linear(8 * width, n_classes)
    return model


def imagenet_state_dict() -> dict:
    """torchvision's ImageNet ResNet-18 weights, from its cache (TORCH_HOME) or the internet."""
    weights = ResNet18_Weights.IMAGENET1K_V1
    try:
        return weights.get_state_dict(progress=True, check_hash=True)
    except Exception as e:  # URLError, hash mismatch, unreadable cache file
        name = weights.url.rsplit("/", 1)[-1]
        raise SelError(f"cannot load the ImageNet weights ({type(e).__name__}: {e}); put {name} in "
                       f"$TORCH_HOME/hub/checkpoints or run with -S model.pretrained=false") from None


def n_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def fresh_model(seed: int, width: int, pretrained: bool, n_classes: int) -> nn.Module:
    """Seed torch, numpy and random, then build: every stage starts from the same weights."""
    seed_everything(seed)
    return build_model(width, pretrained, n_classes)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
