"""Stage calibrate@SEED: data/cifar10.npz -> data/seed<SEED>/gamma.json, SEL's threshold on
|grad| from that seed's scorer (`sort.scorer`, sel/scoring/scorer.py), the one sort scores with.

Usage: python -m pipeline.calibrate SEED (under DVC: no argument, the seed read from DVC_STAGE)
"""

import sys
import time

from sel.scoring.calibration import calibrate_gamma
from sel.core.cli import seed_arg, stage, stage_args
from sel.data.dataset import Cifar
from sel.core.files import seed_data, write_json
from sel.config.params import load_params, stage_items
from sel.scoring.scorer import scoring_trainer, train_scorer

USAGE = "python -m pipeline.calibrate SEED"


@stage
def main(argv=sys.argv[1:]):
    params = load_params()
    seed = seed_arg(stage_args(argv, USAGE, stage_items(params, "calibrate")), USAGE)
    data = Cifar.load("data/cifar10.npz")
    trainer = scoring_trainer(params, data, seed)
    c = params.calibrate
    started = time.perf_counter()  # the passes, which a run reading gamma counts in its time
    train_scorer(trainer, params.sort.scorer_epochs, "calibrate")  # sort's scorer: see sel/scoring/scorer.py
    result = calibrate_gamma(trainer, c.batch_size, c.percentile, c.mode)
    seconds = time.perf_counter() - started
    write_json(seed_data(seed) / "gamma.json", {**result, "seed": seed, "seconds": seconds})
    print(f"seed {seed}: gamma = {result['gamma']:.3e} (p{c.percentile:g} of |grad|, {c.mode} mode, "
          f"{result['batch_size']} images)")


if __name__ == "__main__":
    main()
