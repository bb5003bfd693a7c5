"""Stage train_{dense,sel,budget,measured}@EXPERIMENT-SEED: one experiment, one seed ->
models/<experiment>/seed<SEED>.pt, metrics/runs/<experiment>/seed<SEED>/history.csv,
summary.json and validation.csv, and one MLflow run (sel/experiments/stage.py).

Usage: python -m pipeline.train {dense,sel,budget,measured} EXPERIMENT SEED (under DVC: no argument, all
three read from DVC_STAGE)

train_dense runs the experiments that read nothing of `sel`, `sort` or `calibrate`; train_sel
those that do (it depends on them); train_budget the dense runs whose budget is another
experiment's plan (it depends on every experiment's knobs); train_measured, listing methods, the
dense twin dense_at_METHOD of each, sized from the method's run (its summary.json). A checkpoint is saved after every epoch; run again after a
kill, the stage goes on from the last finished epoch, into the same MLflow run.
"""

import sys

from sel.core.cli import seed_arg, stage, stage_args
from sel.core.errors import SelError
from sel.config.params import GROUPS, load_params, stage_items
from sel.experiments.stage import train_experiment

USAGE = f"python -m pipeline.train {{{','.join(GROUPS)}}} EXPERIMENT SEED"


@stage
def main(argv=sys.argv[1:]):
    params = load_params()
    items = {k: v for group in GROUPS for k, v in stage_items(params, f"train_{group}").items()}
    argv = stage_args(argv, USAGE, items)
    if len(argv) != 3 or argv[0] not in GROUPS:
        raise SelError(f"usage: {USAGE}")
    group, name, seed = argv[0], argv[1], seed_arg(argv[2:], USAGE)
    s = train_experiment(params, group, name, seed)
    print(f"{name}@{seed}: test {s['acc/test_full']:.2%}, held-out {s['acc/test_100']:.2%}, "
          f"{s['compute/time_s']:.0f}s, proxy {s['compute/flops_proxy_T']:.3g} TFLOPs, "
          f"executed {s['compute/flops_executed_T']:.3g} TFLOPs")


if __name__ == "__main__":
    main()
