"""The scorer of sort and calibrate: a freshly built model of a seed, in exact fp32.

Which model (`sort.scorer`):

independent  the original's arrangement. It seeded once and built the scorer first, then every
             experiment as a later draw of the same stream, so its "easy" images were easy for a
             model no experiment started from. Here: seed, draw the experiments' initial weights
             (and drop them), then draw the scorer, the next model of that seeded stream. The
             experiments keep their initial weights (seed, first draw), so switching between the
             two arrangements re-runs neither the baseline nor the lottery.
shared       the paired arrangement: the scorer is the experiments' initial weights, so the first
             stage trains on the images the starting model itself scores easiest, which changes
             its loss and with it the loss-scaled learning rate (docs/results.md, "The scorer:
             independent or shared").

Sort and calibrate build the same scorer (as the original used one model for both). fp32
whatever `train.precision` says, because gamma is compared with gradients down to 1e-6.
`sort.scorer_epochs > 0` trains it densely first, in both stages, so that both still use one
model: calibrate trains it again the way sort does (same seed, same epochs: the same weights on
CPU; on CUDA up to its kernels' nondeterminism) rather than read weights sort would have to
save, which keeps the two stages independent; the repeated epochs are counted in the runs'
FLOPs (sel/experiments/plan.py, prep_flops).
"""

import sys
import time

import numpy as np
import torch
from torch import nn

from sel.data.dataset import Cifar
from sel.method.selective import epoch_steps
from sel.train.device import resolve_device
from sel.train.model import build_model, fresh_model
from sel.config.params import Params
from sel.train.training import DENSE, Trainer


def scorer_model(params: Params, seed: int, n_classes: int, images) -> nn.Module:
    """The scorer's weights under `sort.scorer` (see the module's docstring); `images`, the
    training images, set airbench's whitening."""
    model = fresh_model(seed, params.model, n_classes, images)  # the experiments' initial weights
    if params.sort.scorer == "independent":
        model = build_model(params.model, n_classes, images)
    return model


def scoring_trainer(params: Params, data: Cifar, seed: int) -> Trainer:
    """Reads `model`, `sort.scorer` and `train.device`, and `train.lr` and `train.batch_size`
    for the scorer's own training (`sort.scorer_epochs`)."""
    device = resolve_device(params.train.device)
    model = scorer_model(params, seed, len(data.classes), data.x_train)
    return Trainer(model, data, np.arange(0), device=device, precision="fp32", lr=params.train.lr,
                   batch_size=params.train.batch_size, eval_batch_size=256, seed=seed)


def train_scorer(trainer: Trainer, epochs: int, stage: str, out=sys.stderr, role: str = "scorer",
                 linear: bool = False) -> None:
    """Dense epochs over every training image (the trainer's optimizer, training augmentation),
    a line each; with `linear`, the lr on a linear line over these epochs' steps, and the
    trainer's lookahead average, if it has one, over them (a proxy's)."""
    everything = torch.arange(len(trainer.train_set), device=trainer.device)
    steps = len(epoch_steps(len(everything), trainer.batch_size, None))
    started = time.perf_counter()
    for epoch in range(epochs):
        line = (epoch / epochs, 1 / (steps * epochs)) if linear else None
        sums = trainer.train_epoch(everything, DENSE, measure_ec=False, lr_line=line, progress=line,
                                   ends_run=linear and epoch == epochs - 1)
        print(f"[{stage}] {role} epoch {epoch + 1}/{epochs}: train loss {sums[0].item() / len(everything):.3f}, "
              f"{time.perf_counter() - started:.1f}s elapsed", file=out, flush=True)
