"""The network `model.arch` names: ResNet-18 adapted to 32x32 images, as the original builds it,
with a width knob for tests, or the airbench net (sel.train.airbench)."""

import random

import numpy as np
import torch
from torch import nn

from sel.config.params import ModelParams
from sel.core.errors import SelError
from sel.train.airbench import Airbench, init_whitening


class BasicBlock(nn.Module):
    """torchvision's ResNet basic block: two 3x3 convolutions and a shortcut."""

    def __init__(self, inplanes: int, planes: int, stride: int = 1, downsample: nn.Module | None = None):
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, kernel_size=3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(planes, planes, kernel_size=3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        identity = x if self.downsample is None else self.downsample(x)
        return self.relu(out + identity)


class ResNet18(nn.Module):
    """torchvision's `resnet18` with every stage's channels scaled by width / 64, built here
    because importing torchvision costs every stage 4 s on a 2-core CPU. Its modules are made
    in torchvision's order, with its names and its initialisation, so the same seed gives the
    same weights (tests/test_method.py compares) and the ImageNet state dict loads into it."""

    def __init__(self, width: int):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 64, kernel_size=7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        inplanes = width
        for i, planes in enumerate(c * width // 64 for c in (64, 128, 256, 512)):
            stride = 1 if i == 0 else 2
            downsample = None
            if stride != 1 or inplanes != planes:  # made before the block, as torchvision does
                downsample = nn.Sequential(nn.Conv2d(inplanes, planes, kernel_size=1, stride=stride, bias=False),
                                           nn.BatchNorm2d(planes))
            first = BasicBlock(inplanes, planes, stride, downsample)
            setattr(self, f"layer{i + 1}", nn.Sequential(first, BasicBlock(planes, planes)))
            inplanes = planes
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.fc = nn.Linear(512, 1000)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.constant_(m.weight, 1)
                nn.init.constant_(m.bias, 0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(torch.flatten(self.avgpool(x), 1))


def resnet18(width: int = 64, pretrained: bool = False, n_classes: int = 10) -> nn.Module:
    """The original's model: resnet18 (ImageNet weights if `pretrained`), conv1 swapped for a
    3x3 stride-1 conv, maxpool removed, fc to `n_classes`. Draws from torch's global RNG."""
    model = ResNet18(width)
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
    from torchvision.models import ResNet18_Weights  # only here: torchvision is slow to import

    weights = ResNet18_Weights.IMAGENET1K_V1
    try:
        return weights.get_state_dict(progress=True, check_hash=True)
    except Exception as e:  # URLError, hash mismatch, unreadable cache file
        name = weights.url.rsplit("/", 1)[-1]
        raise SelError(f"cannot load the ImageNet weights ({type(e).__name__}: {e}); put {name} in "
                       f"$TORCH_HOME/hub/checkpoints or run with -S model.pretrained=false") from None


def n_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def build_model(model: ModelParams, n_classes: int = 10, images=None) -> nn.Module:
    """The net `model.arch` names. Airbench's whitening conv is set from `images` (uint8 training
    images); without them (a shape on the meta device) it keeps its random init."""
    if model.arch == "resnet18":
        return resnet18(model.width, model.pretrained, n_classes)
    net = Airbench(model.widths, n_classes)
    if images is not None:
        init_whitening(net, images)
    return net


def fresh_model(seed: int, model: ModelParams, n_classes: int, images=None) -> nn.Module:
    """Seed torch, numpy and random, then build: every stage starts from the same weights."""
    seed_everything(seed)
    return build_model(model, n_classes, images)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
