"""Stage sort: data/cifar10.npz -> data/pools.npz, each class's training images easy to hard."""

import numpy as np

from sel.cli import stage
from sel.dataset import Cifar
from sel.experiments import ExperimentRun, Phase, scoring_trainer
from sel.files import staged_outputs
from sel.params import load_params
from sel.sorting import difficulty_order, score


@stage
def main():
    params = load_params()
    data = Cifar.load("data/cifar10.npz")
    trainer = scoring_trainer(params, data)
    if params.sort.scorer_epochs:
        scorer = Phase("scorer", params.sort.scorer_epochs, np.arange(len(data.y_train)), 0,
                       recorded=False, measure_ec=False)
        ExperimentRun("sort", trainer, [scorer], data.classes).run()
    losses = score(trainer)
    order, counts = difficulty_order(losses, data.y_train, len(data.classes))
    with staged_outputs("data/pools.npz") as (tmp,):
        with open(tmp, "wb") as f:
            np.savez(f, order=order, counts=counts, losses=losses)
    print(f"wrote data/pools.npz: {len(order)} images in {len(counts)} classes, "
          f"loss {losses.min():.3f}..{losses.max():.3f}")


if __name__ == "__main__":
    main()
