"""The proxy-selected subset, after airbench96_faster (KellerJordan/cifar10-airbench): a small
proxy net, trained briefly, ranks the training images by its loss, and the run trains only on
the hardest share of them (`experiments.*.proxy_keep`).

airbench96_faster trains its proxy alongside the main run and keeps the hardest half of every
batch; here the proxy trains first, for `proxy_epochs` dense epochs on every image (the run's
recipe: optimizer, lr line with its warm-up, augmentation), then scores every training image
once (augmented, eval mode, as `sort` does) and the run keeps the `proxy_keep` share with the
highest loss, over all classes. The proxy is the run's model with every width times
`proxy_scale`, built from its own seeded draw. Its passes are part of the run: their FLOPs and
seconds count in its totals from the start (`plan.prep_flops`), so a saving is net of them.
A resumed run repeats the proxy (seeded: the same subset on a CPU) without counting it again.
"""

import dataclasses
import sys
import time

import numpy as np
import torch

from sel.config.params import Experiment, ModelParams
from sel.method.flops import flops_per_image
from sel.scoring.scorer import train_scorer
from sel.scoring.sorting import score
from sel.train.model import build_model
from sel.train.training import Trainer

PROXY_SEED_OFFSET = 10_007  # the proxy's weights: a draw no experiment of any nearby seed starts from


def proxy_model_params(model: ModelParams, scale: float) -> ModelParams:
    """The run's architecture with every width times `scale` (rounded, at least one channel)."""
    def narrow(width: int) -> int:
        return max(1, round(width * scale))

    return dataclasses.replace(model, width=narrow(model.width), widths=tuple(map(narrow, model.widths)),
                               pretrained=False)


def proxy_net_flops(spec: Experiment, model: ModelParams, n_classes: int, n_train: int) -> float:
    """Executed FLOPs of the proxy's passes: its dense epochs on every image and one scoring
    forward of each, at the proxy's own FLOPs per image (its shape, counted on the meta device)."""
    with torch.device("meta"):  # shapes only: no weights drawn, no random state used
        shape = build_model(proxy_model_params(model, spec.proxy_scale), n_classes)
    train, evaluation = flops_per_image(shape)
    return n_train * (spec.proxy_epochs * train + evaluation)


def kept_count_of(n_train: int, keep: float) -> int:
    """Images a proxy keeps of `n_train`: the `keep` share, rounded, at least one."""
    return max(1, round(keep * n_train))


def hardest(losses: np.ndarray, keep: float) -> np.ndarray:
    """The indices of the `keep` share of images with the highest loss, in index order (ties: the
    lower index first)."""
    return np.sort(np.argsort(-losses, kind="stable")[:kept_count_of(len(losses), keep)])


def proxy_subset(trainer: Trainer, spec: Experiment, name: str, out=sys.stderr) -> tuple[np.ndarray, float]:
    """(the training images the run keeps, the proxy's seconds): train the proxy `trainer` for
    `spec.proxy_epochs` dense epochs on every image, its lr on a linear line over its own steps,
    then score every image and keep the hardest `spec.proxy_keep` share."""
    started = time.perf_counter()
    train_scorer(trainer, spec.proxy_epochs, name, out, role="proxy", linear=True)
    losses = score(trainer, batch_size=trainer.eval_batch_size, stage=name)
    subset = hardest(losses, spec.proxy_keep)
    seconds = time.perf_counter() - started
    print(f"[{name}] proxy kept the hardest {len(subset)}/{len(losses)} images, {seconds:.1f}s", file=out, flush=True)
    return subset, seconds
