"""The scorer of sort and calibrate: the freshly built model of a seed, in exact fp32.

Sort and calibrate use the same initial weights as that seed's experiments (a paired
comparison); fp32 whatever `train.precision` says, because gamma is compared with gradients
down to 1e-6. `sort.scorer_epochs > 0` trains it densely first.
"""

import sys
import time

import numpy as np
import torch

from sel.data.dataset import Cifar
from sel.train.device import resolve_device
from sel.train.model import fresh_model
from sel.config.params import Params
from sel.train.training import DENSE, Trainer


def scoring_trainer(params: Params, data: Cifar, seed: int) -> Trainer:
    """Reads `model` and `train.device`, and `train.lr` and `train.batch_size` for the scorer's
    own training (`sort.scorer_epochs`)."""
    device = resolve_device(params.train.device)
    model = fresh_model(seed, params.model.width, params.model.pretrained, len(data.classes))
    return Trainer(model, data, np.arange(0), device=device, precision="fp32", lr=params.train.lr,
                   batch_size=params.train.batch_size, eval_batch_size=256, seed=seed)


def train_scorer(trainer: Trainer, epochs: int, out=sys.stderr) -> None:
    """Dense epochs over every training image (Adam, training augmentation), a line each."""
    everything = torch.arange(len(trainer.train_set), device=trainer.device)
    for epoch in range(epochs):
        started = time.perf_counter()
        loss = trainer.train_epoch(everything, DENSE, measure_ec=False)[0].item() / len(everything)
        print(f"[sort] scorer epoch {epoch + 1}/{epochs}: train loss {loss:.3f}, "
              f"{time.perf_counter() - started:.1f}s", file=out, flush=True)
