"""Stage sort@SEED: data/cifar10.npz -> data/seed<SEED>/pools.npz, each class's training images
easy to hard under that seed's scorer (`sort.scorer`, sel/scoring/scorer.py).

Usage: python -m pipeline.sort SEED (under DVC: no argument, the seed read from DVC_STAGE)
"""

import sys
import time

import numpy as np

from sel.core.cli import seed_arg, stage, stage_args
from sel.data.dataset import Cifar
from sel.core.files import seed_data, staged_outputs
from sel.config.params import load_params, stage_items
from sel.scoring.scorer import scoring_trainer, train_scorer
from sel.scoring.sorting import difficulty_order, score

USAGE = "python -m pipeline.sort SEED"


@stage
def main(argv=sys.argv[1:]):
    params = load_params()
    seed = seed_arg(stage_args(argv, USAGE, stage_items(params, "sort")), USAGE)
    data = Cifar.load("data/cifar10.npz")
    trainer = scoring_trainer(params, data, seed)
    started = time.perf_counter()  # the passes, which a run reading the pools counts in its time
    train_scorer(trainer, params.sort.scorer_epochs, "sort")
    losses = score(trainer)
    seconds = time.perf_counter() - started
    order, counts = difficulty_order(losses, data.y_train, len(data.classes))
    out = seed_data(seed) / "pools.npz"
    with staged_outputs(out) as (tmp,):
        with open(tmp, "wb") as f:
            np.savez(f, order=order, counts=counts, losses=losses, seconds=seconds)
    print(f"wrote {out}: {len(order)} images in {len(counts)} classes, "
          f"loss {losses.min():.3f}..{losses.max():.3f}, {seconds:.1f}s")


if __name__ == "__main__":
    main()
