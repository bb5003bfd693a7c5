"""Stage calibrate@SEED: data/cifar10.npz -> data/seed<SEED>/gamma.json, SEL's threshold on
|grad| from that seed's scorer (`sort.scorer`, sel/scoring/scorer.py), the one sort scores with.

Usage: python -m pipeline.calibrate SEED
"""

import sys

from sel.scoring.calibration import calibrate_gamma
from sel.core.cli import seed_arg, stage
from sel.data.dataset import Cifar
from sel.core.files import seed_data, write_json
from sel.config.params import load_params
from sel.scoring.scorer import scoring_trainer


@stage
def main(argv=sys.argv[1:]):
    seed = seed_arg(argv, "python -m pipeline.calibrate SEED")
    params = load_params()
    data = Cifar.load("data/cifar10.npz")
    trainer = scoring_trainer(params, data, seed)
    c = params.calibrate
    result = calibrate_gamma(trainer, c.batch_size, c.percentile, c.mode)
    write_json(seed_data(seed) / "gamma.json", {**result, "seed": seed})
    print(f"seed {seed}: gamma = {result['gamma']:.3e} (p{c.percentile:g} of |grad|, {c.mode} mode, "
          f"{result['batch_size']} images)")


if __name__ == "__main__":
    main()
