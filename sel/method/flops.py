"""Two FLOPs figures, each named for what it is.

`proxy`: the original's 2 * n_params * (1 - sparsity) * images; it is not arithmetic anyone
executed. `executed`: the matmul/conv FLOPs of a forward+backward (training) or a forward
(evaluation), measured once with torch's FlopCounterMode and multiplied by the images
processed. Zeroing gradients after backward saves none of the executed arithmetic.
"""

import copy

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode


def proxy_flops(n_params: int, sparsity: float, images: int) -> float:
    return 2 * n_params * (1 - sparsity) * images


def flops_per_image(model: nn.Module, batch: int = 2) -> tuple[float, float]:
    """(training forward+backward, evaluation forward) FLOPs per 32x32 image, counted on a
    shape-only copy of `model` (the meta device: nothing is computed, nothing is changed)."""
    shadow = copy.deepcopy(model).to("meta")
    x = torch.empty(batch, 3, 32, 32, device="meta")
    with FlopCounterMode(display=False) as train:
        shadow.train()
        shadow(x).sum().backward()
    with FlopCounterMode(display=False) as evaluation, torch.no_grad():
        shadow.eval()
        shadow(x)
    return train.get_total_flops() / batch, evaluation.get_total_flops() / batch
