"""Named protocols: sets of params overrides, applied with `dvc exp run -S` like any other.

    python -m sel.config.protocols cpu-small [--print] [more dvc exp run arguments]
    python -m sel.config.protocols airbench-full --write

runs `dvc exp run -S model.width=16 ... [more arguments]`; arguments after the protocol's come
later on the command line, so `-S data.source=...` or `-n NAME` can be added or overridden.
`--write` writes the overrides into params.yaml instead (its comments kept), for `dvc repro`: a
run longer than a session goes on from where the last one stopped with the same params.
"""

import copy
import os
import shlex
import sys
from pathlib import Path

from sel.config.params import (BUDGET_STAGE, DEFAULT_EXPERIMENTS, DENSE_STAGE, MEASURED_STAGE, TWIN, Params,
                               parse_params)
from sel.core.cli import shorten
from sel.core.errors import SelError
from sel.core.files import staged_outputs

SECOND_VIEWS = ("class_draw_50_constant", "infobatch_r50_constant")  # left out of cpu-seeds to fit a session

CPU_SMALL = {
    "model.width": 16,
    "model.pretrained": False,
    "data.train_per_class": 1000,
    "data.test_per_class": 300,
    "data.held_out_per_class": 100,
    "experiments.warmup_sel.warmup_per_class": 200,
    "sel.samples_per_class": 400,
    # At width 16 the original's eval-mode calibration gives gamma ~3.7e-6 and SEL zeroes under
    # 1% of the gradients; train mode gives ~95%, the regime of the original's published run.
    "calibrate.mode": "train",
}

# cpu-small's regime (width 16, train-mode calibration: SEL zeroes ~95% of the gradients) with
# every epoch count at a fifth of the original's (30 -> 6, 15 -> 3, 10 per stage -> 2, warm-up
# 5 -> 1: the same ratios between experiments), 400 training and 100 test images per class, a
# validation split of the last 50 training images of each class (never trained on: the 400 are
# the same images as without it) read every 32 steps (about twice an epoch) for time to
# accuracy, and five seeds: every experiment, control, method and twin with statistics, and of
# the constant-rate views, selective backward's (the method whose pairing moved most).
CPU_SEEDS = {
    **CPU_SMALL,
    "seeds": [42, 43, 44, 45, 46],
    "data.train_per_class": 400,
    "data.test_per_class": 100,
    "data.val_per_class": 50,
    "train.val_every": 32,
    # every run of the original's 30 epochs (the baseline, the lottery's retraining, the controls,
    # the methods and their budget-matched runs) at 6
    **{f"experiments.{name}.epochs": 6 for name, spec in DEFAULT_EXPERIMENTS.items() if spec.get("epochs") == 30},
    "experiments.lottery.pretrain_epochs": 3,
    "experiments.warmup_sel.warmup_epochs": 1,
    "experiments.warmup_sel.warmup_per_class": 80,
    "sel.epochs_per_stage": 2,
    "sel.samples_per_class": 160,
    "train_stages.dense": [name for name in DENSE_STAGE if name not in SECOND_VIEWS],
    "train_stages.budget": [name for name in BUDGET_STAGE if name.removeprefix(TWIN) not in SECOND_VIEWS],
    "train_stages.measured": [name for name in MEASURED_STAGE if name not in SECOND_VIEWS],
}

def airbench_recipe(batch_size: int = 1024) -> dict:
    """airbench94's recipe (KellerJordan/cifar10-airbench, legacy/airbench94.py) as overrides, for
    a protocol to build on. airbench gives lr and weight decay per 1024 examples of a summed loss,
    its lr divided by 1024 * (1 + 1 / (1 - momentum)) so that momentum does not change the step;
    our loss is the batch's mean, so torch's lr is that times the batch, and the weight decay is
    airbench's decay per step (0.0153 per 1024 examples, decoupled from the lr) over that lr."""
    momentum = 0.85
    lr = round(11.5 * batch_size / (1024 * (1 + 1 / (1 - momentum))), 12)
    return {
        "model.arch": "airbench",
        "model.pretrained": False,
        "model.widths": [64, 256, 256],     # airbench94's block1..3
        "model.whiten_bias_epochs": 3,      # its whiten_bias_epochs
        "train.optimizer": "sgd_nesterov",
        "train.lr": lr,                     # 1.5 at batch 1024
        "train.momentum": momentum,
        "train.weight_decay": 0.0153 * batch_size / 1024 / 11.5,
        "train.bias_lr_scale": 64.0,        # its bias_scaler (lr, not weight decay)
        "train.label_smoothing": 0.2,
        "train.batch_size": batch_size,
        "train.augment": "translate2",      # flip + translate 2 with reflection
        "train.warmup_fraction": 0.23,      # with lr_schedule linear (its end points: AIRBENCH_EXTRAS)
        "train.tta": True,                  # mirror (its tta_level 1; level 2: AIRBENCH_EXTRAS)
    }


AIRBENCH_EPOCHS = 8
LADDER = (0.3, 0.45, 0.6, 0.8)  # the dense frontier: shares of the baseline's training images


def _linear(epochs: int = AIRBENCH_EPOCHS, **knobs) -> dict:
    return {"recipe": "dense", "epochs": epochs, "lr_schedule": "linear", **knobs}


# Near convergence (issue 28): the airbench-style net (airbench93's widths 64/128/128, the
# recipe of `airbench_recipe`) on all of the offline JPEG copy, 4,800 training images per class
# (the last 200 of each class are the validation split, read every 16 steps), 8 epochs: sized
# so that a dense run trains in under 10 minutes on a 2-core CPU (docs/results.md). Beside the
# baseline, the dense frontier (the same schedule cut at each share of its images, the lr
# reaching zero at the budget), the methods at their published settings, SEL and its random
# control (3 epochs per stage: 46% of the baseline's training images, the original's 10 per stage
# trained 42%), and the proxy-selected subset.
AIRBENCH_FULL = {
    **airbench_recipe(),
    "model.widths": [64, 128, 128],
    "seeds": [42, 43, 44],
    "data.source": "../shared/datasets/cifar10-jpeg.tar.gz",
    "data.val_per_class": 200,
    "train.val_every": 16,
    "calibrate.mode": "train",
    "sel.epochs_per_stage": 3,
    "experiments": {
        "baseline": _linear(),
        **{f"dense_{round(share * 100)}": _linear(budget=share) for share in LADDER},
        "infobatch_r30": _linear(infobatch_prune=0.3),
        "infobatch_r50": _linear(infobatch_prune=0.5),
        "selective_50": _linear(selective_keep=0.5),
        "class_draw_50": _linear(class_draw=0.5),
        "proxy_50": _linear(proxy_keep=0.5),
        # SEL's loss-scaled lr multiplies the recipe's line, from a third of its lr: at the recipe's
        # constant lr SEL's (1 + 2 loss) x 1.5 sent the net to chance in an epoch here, on the line
        # from the full lr its loss became NaN at the warm-up's peak (seed 42, docs/results.md)
        "sel95": {"lr_schedule": "linear", "lr_scale": 1 / 3},
        "warmup_sel": {"warmup_epochs": 1, "warmup_per_class": 1000, "lr_schedule": "linear", "lr_scale": 1 / 3},
        "random_subsets": {"recipe": "curriculum", "order": "random", "mask": False, "loss_scaled_lr": False,
                           "lr_schedule": "linear"},
    },
    "train_stages.dense": ["baseline", *(f"dense_{round(share * 100)}" for share in LADDER), "infobatch_r30",
                           "infobatch_r50", "selective_50", "class_draw_50", "proxy_50"],
    "train_stages.sel": ["sel95", "warmup_sel", "random_subsets"],
    "train_stages.budget": [],
    "train_stages.measured": [],
    "report.targets": [0.90, 0.92, 0.93],
    "attribution": {"sel95_vs_baseline": ["sel95", "baseline"], "fewer_images": ["random_subsets", "baseline"],
                    "sel95_vs_random_subsets": ["sel95", "random_subsets"]},
}

# What airbench-full's recipe leaves out of airbench's (lib_airbench93.py, utils.py): the lr's end
# points, alternating flips, the lookahead average and the shifted test-time views.
AIRBENCH_EXTRAS = {"train.warmup_from": 0.2, "train.lr_end": 0.07, "train.flip": "alternate",
                   "train.lookahead": True, "train.tta_translate": True}

# airbench93 as published: its whole recipe and its 11 epochs on all 50,000 training images of the
# offline JPEG copy (no validation split), the baseline at one seed: what it reaches here tells the
# copy's cost apart from what airbench-full's shorter recipe gives up (docs/pipeline.md). One
# difference stays: airbench drops each epoch's last, partial batch, the pipeline trains it.
AIRBENCH93 = {
    **airbench_recipe(),
    **AIRBENCH_EXTRAS,
    "model.widths": [64, 128, 128],
    "seeds": [42],
    "data.source": "../shared/datasets/cifar10-jpeg.tar.gz",
    "experiments": {"baseline": _linear(11)},
    "train_stages.dense": ["baseline"],
    "train_stages.sel": [],
    "train_stages.budget": [],
    "train_stages.measured": [],
    "attribution": {},
}

PROTOCOLS = {"full": {}, "cpu-small": CPU_SMALL, "cpu-seeds": CPU_SEEDS, "airbench-full": AIRBENCH_FULL,
             "airbench93": AIRBENCH93}


def apply_overrides(raw: dict, overrides: dict) -> dict:
    """A params.yaml mapping with dotted-key overrides applied, as `dvc exp run -S` would (a
    mapping without `experiments` starts from the default ones)."""
    raw = copy.deepcopy(raw)
    raw.setdefault("experiments", copy.deepcopy(DEFAULT_EXPERIMENTS))
    for key, value in overrides.items():
        *path, last = key.split(".")
        node = raw
        for i, part in enumerate(path):
            if node.get(part) is None:  # absent or empty (`sel:`): the section's defaults
                node[part] = {}
            node = node[part]
            if not isinstance(node, dict):  # a scalar or a list: no key to set inside it
                raise SelError(f"override {shorten(key)}: {'.'.join(path[:i + 1])} is "
                               f"{type(node).__name__}, not a mapping of keys")
        node[last] = value
    return raw


def with_overrides(raw: dict, overrides: dict) -> Params:
    """Params from a params.yaml mapping with dotted-key overrides applied."""
    return parse_params(apply_overrides(raw, overrides))


def set_args(overrides: dict) -> list[str]:
    """The overrides as `dvc exp run` arguments."""
    args = []
    for key, value in overrides.items():
        if value is None:
            shown = "null"
        elif isinstance(value, bool):
            shown = str(value).lower()
        elif isinstance(value, list):
            shown = "[" + ",".join(map(str, value)) + "]"
        else:
            shown = str(value)
        args += ["-S", f"{key}={shown}"]
    return args


def write_params(overrides: dict, path: Path) -> None:
    """params.yaml with the overrides written in, its comments and layout kept (ruamel.yaml, the
    round-trip parser DVC itself edits params.yaml with); checked before the file is replaced."""
    from ruamel.yaml import YAML
    from ruamel.yaml.comments import CommentedMap, CommentedSeq
    from ruamel.yaml.error import YAMLError

    def flow(value):  # short lists and each experiment's knobs on one line, as params.yaml writes them
        if isinstance(value, dict):
            node = CommentedMap((k, flow(v)) for k, v in value.items())
            if not any(isinstance(v, (dict, list)) for v in value.values()):
                node.fa.set_flow_style()
            return node
        if isinstance(value, list):
            node = CommentedSeq(value)
            node.fa.set_flow_style()
            return node
        return value

    yaml = YAML()
    yaml.width = 110
    yaml.indent(mapping=2, sequence=4, offset=2)
    try:
        doc = yaml.load(path.read_text())
    except (OSError, YAMLError) as e:
        raise SelError(f"{path}: cannot read it as YAML ({shorten(' '.join(str(e).split()))})") from None
    parse_params(apply_overrides(yaml_plain(doc), overrides))  # refused before anything is written
    for key, value in overrides.items():
        *parents, last = key.split(".")
        node = doc
        for part in parents:
            node = node.setdefault(part, CommentedMap())
        node[last] = flow(value)
    with staged_outputs(path) as (tmp,):
        with open(tmp, "w") as f:
            yaml.dump(doc, f)


def yaml_plain(node):
    """ruamel's round-trip nodes as plain dicts and lists, for parse_params."""
    if isinstance(node, dict):
        return {k: yaml_plain(v) for k, v in node.items()}
    if isinstance(node, list):
        return [yaml_plain(v) for v in node]
    return node


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] not in PROTOCOLS:
        sys.exit(f"usage: python -m sel.config.protocols {{{','.join(PROTOCOLS)}}} [--print | --write] "
                 "[dvc exp run args]")
    name, rest = argv[0], argv[1:]
    if "--write" in rest:  # into params.yaml, for `dvc repro` (a run in pieces continues with it)
        try:
            write_params(PROTOCOLS[name], Path("params.yaml"))
        except SelError as e:
            sys.exit(f"error: {e}")
        print(f"params.yaml: the {name} protocol's overrides written in; `dvc repro` runs it")
        return
    command = ["dvc", "exp", "run", *set_args(PROTOCOLS[name]), *[a for a in rest if a != "--print"]]
    print(shlex.join(command), flush=True)
    if "--print" not in rest:
        os.execvp(command[0], command)


if __name__ == "__main__":
    main()
