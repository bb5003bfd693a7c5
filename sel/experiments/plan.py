"""Experiments as phases of the one training loop, and the runner that records them.

Every experiment is one of three recipes (`sel.config.params.Experiment`), and `plan` turns it into
phases, each carrying its own update rule, gamma, learning-rate rule and prune:

dense       epochs on every training image (baseline; with `mask`, SEL's mask on that schedule;
            with a `budget`, fewer images, `budget_phases`; with a method's knob, each epoch's
            images drawn by it: `class_draw`, `infobatch_prune`)
lottery     dense pre-training (not recorded, as the original), global magnitude prune, rewind,
            masked retraining
curriculum  an optional dense warm-up on the easiest images of each class (E = C = 0), then the
            SEL stages (sel95, warmup_sel; with a knob turned, the controls)
"""

import sys
import time
import dataclasses
from dataclasses import dataclass

import numpy as np
import torch

from sel.method.class_draw import drawn_count
from sel.method.curriculum import Pools, stage_gamma
from sel.method.infobatch import pruned_epochs
from sel.experiments.proxy_subset import kept_count_of, proxy_net_flops
from sel.data.dataset import Cifar, held_out_indices
from sel.train.device import Stopwatch, resolve_compile, resolve_cuda_graphs, resolve_device, resolve_precision
from sel.core.errors import SelError
from sel.method.flops import flops_per_image, proxy_flops
from sel.method.selective import EVERY_STEP, Window, epoch_steps, kept_count
from sel.train.model import build_model, fresh_model, n_params
from sel.config.params import Experiment, ModelParams, Params
from sel.train.training import DENSE, MASKED, SEL, TTA_FORWARDS, Trainer, unpack_evaluation, unpack_sums
from sel.experiments.validation import Validation


@dataclass
class Phase:
    """Epochs that share one training set, one update rule and one learning-rate rule."""

    name: str
    epochs: int
    indices: np.ndarray
    stage: int  # 0 for dense epochs (baseline, lottery, warm-up), 1..n for the SEL stages
    update: str = DENSE
    gamma: float | None = None  # sel: the fixed threshold (calibrated mode)
    target_sparsity: float | None = None  # sel: gamma follows the gradients (target mode)
    lr_loss_scale: float = 0.0  # lr * (1 + lr_loss_scale * batch loss)
    lr_decay_steps: int | None = None  # linear lr: the run's optimizer steps, over which it decays to zero
    lr_decay_epochs: int | None = None  # ... or its epochs, each re-indexed to its steps (InfoBatch's)
    prune_fraction: float | None = None  # masked: prune and rewind before its first epoch
    recorded: bool = True  # lottery pre-training is in neither the history, the FLOPs nor the time
    measure_ec: bool = True  # warm-up rows have E = C = 0, as the original
    keep: float | None = None  # selective backward: share of each step's candidates trained on
    window: Window = EVERY_STEP  # ... when it selects (Composer's start, end and interrupt)
    history: int | None = None  # ... rank among that many past losses (None: within the batch)
    draw: float | None = None  # E-driven class draw: share of `indices` each epoch trains on
    draw_floor: float = 0.0  # ... each class's share at least draw_floor / C
    prune_ratio: float | None = None  # InfoBatch: chance a below-mean-loss image is left out

    def images(self) -> int:
        """Images an epoch draws (InfoBatch's vary with the losses: at most all of them)."""
        return drawn_count(len(self.indices), self.draw) if self.draw is not None else len(self.indices)


def needs_pools(spec: Experiment) -> bool:
    """The difficulty order from `sort`: only curriculum runs in difficulty order read it."""
    return spec.recipe == "curriculum" and spec.order == "difficulty"


def gamma_mode(spec: Experiment, params: Params) -> str:
    return spec.gamma_mode or params.sel.gamma_mode


def needs_gamma(spec: Experiment, params: Params) -> bool:
    """The calibrated gamma: read by masked runs in calibrated mode."""
    return spec.masked and gamma_mode(spec, params) == "calibrated"


def make_trainer(params: Params, data: Cifar, spec: Experiment, seed: int, model: ModelParams | None = None) -> Trainer:
    """The freshly built model (seeded: the same initial weights in every experiment of a seed;
    `model`: another shape than params.model's, a proxy's) and its data on the device named by
    `train.device`. Runs that read `sel` measure E/C at the method's temperature, the others at
    `train.ec_temperature` (they read nothing of `sel`)."""
    device = resolve_device(params.train.device)
    precision = resolve_precision(params.train.precision, device)
    compiled = resolve_compile(params.train.compile, device)
    model = fresh_model(seed, model or params.model, len(data.classes), data.x_train)
    held_out = held_out_indices(data.y_test, params.data.held_out_per_class, len(data.classes))
    temperature = params.sel.temperature if spec.reads_sel else params.train.ec_temperature
    t = params.train
    return Trainer(model, data, held_out, device=device, precision=precision, lr=t.lr * spec.lr_scale,
                   batch_size=t.batch_size, eval_batch_size=t.eval_batch_size,
                   seed=seed, use_compile=compiled, temperature=temperature,
                   cuda_graphs=resolve_cuda_graphs(t.cuda_graphs, device, compiled),
                   optimizer=t.optimizer, momentum=t.momentum, weight_decay=t.weight_decay,
                   bias_lr_scale=t.bias_lr_scale, label_smoothing=t.label_smoothing, augment=t.augment,
                   warmup=t.warmup_fraction, warmup_from=t.warmup_from, lr_end=t.lr_end, flip=t.flip,
                   lookahead=t.lookahead, tta_level=t.tta + t.tta_translate)


def check_plan(name: str, spec: Experiment, phases: list[Phase], pools: Pools | None, batch_size: int) -> None:
    """What the data and params must allow, checked before any training; a phase of one batch
    (one optimizer step per epoch) is allowed but said."""
    if spec.recipe == "curriculum" and spec.warmup_epochs:
        k = spec.warmup_per_class
        if k > pools.counts.min():
            raise SelError(f"params: experiments.{name}.warmup_per_class = {k} is larger than "
                           f"the data ({pools.counts.min()} training images in the smallest class)")
    for phase in phases:
        if phase.epochs and len(phase.indices) == 0:
            raise SelError(f"{name}: {phase.name} has no training images (too few images per class "
                           f"for its window; raise data.train_per_class or widen sel.stages)")
        if phase.epochs and 0 < len(phase.indices) <= batch_size:
            print(f"warning: {name}: {phase.name} has {len(phase.indices)} training images, no more than "
                  f"train.batch_size = {batch_size}: one optimizer step per epoch", file=sys.stderr)
    if spec.recipe == "dense" and executed_images(phases) > spec.epochs * len(phases[0].indices):
        raise SelError(f"params: experiments.{name}.budget = {spec.budget!r}: {executed_images(phases)} "
                       f"training images, more than its {spec.epochs} epochs x {len(phases[0].indices)}")
    if not any(phase.epochs and phase.recorded for phase in phases):
        if spec.budget is not None:  # its images are known only with the data's
            raise SelError(f"params: experiments.{name}.budget = {spec.budget!r}: it allows no image of its "
                           f"{spec.epochs} epochs x {len(phases[0].indices)} training images, so no epoch to "
                           f"record; raise the budget")
        raise SelError(f"{name}: no epoch to record; give it epochs "
                       f"(experiments.{name}.*, or sel.epochs_per_stage)")


def executed_images(phases: list[Phase]) -> int:
    """Training images the recorded phases run: `compute/flops_executed_T` per image's FLOPs."""
    return sum(phase.epochs * phase.images() for phase in phases if phase.recorded)


def run_steps(phases: list[Phase], batch_size: int) -> list[list[tuple[int, bool]]]:
    """The steps of every epoch of the run, in order (`epoch_steps`: images, selects), as planned
    (InfoBatch's epochs: at most all images); progress through the run counts every epoch."""
    schedule = [phase for phase in phases for _ in range(phase.epochs)]
    return [epoch_steps(phase.images(), batch_size, phase.keep, phase.window, e, len(schedule))
            for e, phase in enumerate(schedule)]


def steps_flops(steps: list[tuple[int, bool]], batch_size: int, keep: float | None, train: float,
                evaluation: float) -> float:
    """Executed FLOPs of an epoch's steps: forward+backward of each trained image and, for a
    selecting step, the forward of every candidate (at the evaluation forward's FLOPs: the same
    convolutions, no graph kept)."""
    return sum(evaluation * size + train * kept_count(size, batch_size, keep) if selecting else train * size
               for size, selecting in steps)


def prep_flops(spec: Experiment, params: Params, n_train: int, train: float, evaluation: float,
               n_classes: int) -> float:
    """Executed FLOPs of the passes a run needs before it trains, which its own figures count
    (DESIGN.md, "Savings and budgets"): sort's (the scorer's dense epochs, then a forward of
    every training image) where it reads the pools, calibrate's (the scorer's dense epochs again,
    then one forward/backward) where it reads gamma, the proxy's (`sel.experiments.proxy_subset`) where it
    trains on a proxy-selected subset."""
    flops = 0.0 if spec.proxy_keep is None else proxy_net_flops(spec, params.model, n_classes, n_train)
    if needs_pools(spec):
        flops += n_train * (params.sort.scorer_epochs * train + evaluation)
    if needs_gamma(spec, params):
        flops += n_train * params.sort.scorer_epochs * train + params.calibrate.batch_size * train
    return flops


def budget_images(spec: Experiment, params: Params, counts: np.ndarray, measured_T: float | None = None) -> int:
    """The images a dense run's budget allows: a fraction of its epochs x images, or the executed
    training FLOPs of the experiment it names in training images' worth: from that one's
    `measured_T` (a run of a method whose images follow its losses) or from its plan alone (its
    windows' sizes depend on the class counts, not on the pools' order nor on gamma), every pass
    counted (a selective run's candidate forwards, a curriculum's sort and calibration), each at
    its FLOPs over a training image's (the model's, counted on the meta device)."""
    n_train = int(counts.sum())
    if not isinstance(spec.budget, str):
        return round(spec.budget * spec.epochs * n_train)
    with torch.device("meta"):  # shapes only: no weights drawn, no random state used
        shape = build_model(dataclasses.replace(params.model, pretrained=False), len(counts))
    train, evaluation = flops_per_image(shape)
    if measured_T is not None:
        return round(measured_T * 1e12 / train)
    other = params.experiments[spec.budget]
    batch_size = params.train.batch_size
    phases = [p for p in plan(other, params, n_train, Pools(np.arange(n_train), counts), gamma=0.0) if p.recorded]
    flops = sum(steps_flops(steps, batch_size, phase.keep, train, evaluation)
                for phase, steps in zip([p for p in phases for _ in range(p.epochs)], run_steps(phases, batch_size)))
    return round((flops + prep_flops(other, params, n_train, train, evaluation, len(counts))) / train)


def budget_phases(images: int, pool: np.ndarray, seed: int, **rule) -> list[Phase]:
    """Budgeted training (Li et al. 2020): the same data, fewer steps. Whole epochs on every image
    of the `pool` while the budget lasts, then one epoch on a seeded random subset of it."""
    full, part = divmod(images, len(pool))
    subset = np.sort(np.random.default_rng(seed).choice(pool, part, replace=False))
    return [Phase("dense", full, pool, 0, **rule)] + \
        ([Phase("dense_part", 1, subset, 0, **rule)] if part else [])


def with_linear_lr(phases: list[Phase], batch_size: int) -> list[Phase]:
    """Every phase told the run's optimizer steps, over which the learning rate decays to zero;
    a run whose images follow its losses (InfoBatch) its epochs instead, each epoch's part of the
    line spread over the steps it turns out to have, as InfoBatch's own code re-indexes its
    schedule to each epoch's pruned length."""
    if any(phase.prune_ratio is not None for phase in phases):
        for phase in phases:
            phase.lr_decay_epochs = sum(p.epochs for p in phases)
        return phases
    steps = sum(len(epoch) for epoch in run_steps(phases, batch_size))
    for phase in phases:
        phase.lr_decay_steps = steps
    return phases


def plan(spec: Experiment, params: Params, n_train: int, pools: Pools | None = None,
         gamma: float | None = None, counts: np.ndarray | None = None, seed: int = 0,
         measured_T: float | None = None, subset: np.ndarray | None = None) -> list[Phase]:
    """The phases of an experiment: the one reader of `experiments.*` and `sel.*` for training.
    `pools`: the curriculum's per-class order (difficulty or random); `gamma`: the calibrated one;
    `counts` (images per class), `seed` (its last epoch's subset) and `measured_T` (the executed
    TFLOPs of the run it names, where no plan holds them): a dense run's budget; `subset`: the
    images a proxy kept (`proxy_keep`)."""
    sel, everything = params.sel, np.arange(n_train)
    lr_loss_scale = sel.lr_loss_scale if spec.scaled_lr else 0.0
    selection = {"keep": spec.selective_keep, "history": spec.selective_history,
                 "window": Window(spec.selective_start, spec.selective_end, spec.selective_interrupt)}

    def update(stage_index: int) -> dict:
        if not spec.masked:
            return {"update": DENSE}
        if gamma_mode(spec, params) == "target":
            return {"update": SEL, "target_sparsity": sel.target_sparsity}
        return {"update": SEL, "gamma": stage_gamma(gamma, stage_index, len(sel.stages), sel.gamma_decay)}

    if spec.recipe == "dense":
        pool = everything
        if spec.proxy_keep is not None:  # its size alone where the proxy has not run (a twin's budget)
            pool = np.arange(kept_count_of(n_train, spec.proxy_keep)) if subset is None else subset
        images = spec.epochs * len(pool) if spec.budget is None else budget_images(spec, params, counts, measured_T)
        phases = budget_phases(images, pool, seed, lr_loss_scale=lr_loss_scale, **selection,
                               draw=spec.class_draw, draw_floor=spec.class_draw_floor, **update(0))
        if spec.infobatch_prune is not None:  # a budget is refused with it (params)
            (whole,) = phases
            pruned = pruned_epochs(whole.epochs)
            phases = [Phase("infobatch", pruned, everything, 0, prune_ratio=spec.infobatch_prune, **update(0)),
                      Phase("anneal", whole.epochs - pruned, everything, 0, **update(0))]
        return with_linear_lr(phases, params.train.batch_size) if spec.lr_schedule == "linear" else phases
    if spec.recipe == "lottery":
        return [Phase("pretrain", spec.pretrain_epochs, everything, 0, recorded=False, measure_ec=False),
                Phase("retrain", spec.epochs, everything, 0, MASKED, prune_fraction=spec.prune_fraction)]
    warmup = [Phase("warmup", spec.warmup_epochs, pools.easiest(spec.warmup_per_class), 0,
                    measure_ec=False, **selection)] if spec.warmup_epochs else []
    phases = warmup + [Phase(stage.name, sel.epochs_per_stage,
                             pools.window(stage.start, stage.end, sel.samples_per_class), s + 1,
                             lr_loss_scale=lr_loss_scale, **selection, **update(s))
                       for s, stage in enumerate(sel.stages)]
    return with_linear_lr(phases, params.train.batch_size) if spec.lr_schedule == "linear" else phases


def _clock(seconds: float) -> str:
    seconds = int(seconds)
    return f"{seconds // 3600}h{seconds // 60 % 60:02d}m" if seconds >= 3600 else f"{seconds // 60}m{seconds % 60:02d}s"


class ExperimentRun:
    """Drives a Trainer through an experiment's phases one epoch at a time and keeps its record:
    one history row per recorded epoch, cumulative FLOPs and time. `done` counts finished epochs
    (recorded or not), so a run restored from a checkpoint goes on where it stopped. With a
    validation split, its accuracy is taken as `Validation` says (`val_every`: train.val_every)."""

    def __init__(self, name: str, trainer: Trainer, phases: list[Phase], classes: list[str], out=sys.stderr,
                 val_every: int | None = None, freeze_whiten_after: int | None = None):
        """`freeze_whiten_after`: airbench's whitening bias is held from that epoch on
        (model.whiten_bias_epochs)."""
        self.name, self.trainer, self.phases, self.classes, self.out = name, trainer, phases, classes, out
        self.schedule = [(phase, k) for phase in phases for k in range(phase.epochs)]
        self.planned = run_steps(phases, trainer.batch_size)
        self.n_params = n_params(trainer.model)
        self.train_flops, self.eval_flops = flops_per_image(trainer.model)
        self.test_flops = self.eval_flops * TTA_FORWARDS[trainer.tta_level]  # an evaluated image's forwards
        self.freeze_whiten_after = freeze_whiten_after
        self.rows: list[dict] = []
        self.done = 0
        self.totals = {"flops_proxy": 0.0, "flops_executed": 0.0, "flops_eval": 0.0, "time_s": 0.0,
                       "train_time_s": 0.0, "pretrain_time_s": 0.0, "pretrain_flops_executed": 0.0,
                       "wall_s": 0.0, "prep_flops_executed": 0.0, "prep_time_s": 0.0}
        self._indices = {}
        self.training_clock = Stopwatch(trainer.device)  # training alone, evaluation apart
        self.validation = Validation(trainer, self.training_clock, val_every) if trainer.val_set is not None else None

    def add_prep(self, flops: float, seconds: float) -> None:
        """Count the passes the run needed before it trains (sort, calibrate, a proxy:
        `prep_flops`, at this run's `train_flops` and `eval_flops`) in its totals from the start."""
        for key in ("flops_executed", "prep_flops_executed"):
            self.totals[key] += flops
        for key in ("time_s", "train_time_s", "prep_time_s"):
            self.totals[key] += seconds

    def remaining(self) -> int:
        return len(self.schedule) - self.done

    def run(self, on_epoch=None) -> None:
        """Train every remaining epoch; `on_epoch(run, row)` after each (row None if unrecorded)."""
        while self.remaining():
            row = self.step()
            if on_epoch:
                on_epoch(self, row)

    def step(self) -> dict | None:
        """Train and (if recorded) evaluate the next epoch; returns its history row."""
        phase, k = self.schedule[self.done]
        trainer = self.trainer
        started = time.perf_counter()
        if phase.update == MASKED and trainer.mask is None:
            trainer.prune_and_rewind(phase.prune_fraction)
            started = time.perf_counter()  # the original starts its clock after the rewind
        if self.freeze_whiten_after is not None and self.done >= self.freeze_whiten_after:
            trainer.freeze(trainer.model.whiten.bias)
        validation = self.validation if phase.recorded else None
        if validation:
            validation.begin_epoch()
        self.training_clock.start()
        indices = self._device_indices(phase)
        if phase.draw is not None:
            indices = trainer.draw_by_embarrassment(indices, phase.draw, phase.draw_floor)
        elif phase.prune_ratio is not None:
            indices = trainer.prune_by_loss(indices, phase.prune_ratio)
        steps = epoch_steps(len(indices), trainer.batch_size, phase.keep, phase.window, self.done,
                            len(self.schedule))
        line = self.lr_line(phase, len(steps))
        sums = trainer.train_epoch(indices, phase.update, phase.gamma, phase.measure_ec, phase.lr_loss_scale,
                                   phase.target_sparsity, line, phase.keep,
                                   weighted=phase.prune_ratio is not None, steps=steps, history=phase.history,
                                   progress=line or self._progress(), ends_run=self.remaining() == 1)
        self.training_clock.stop()
        values = torch.cat([sums, trainer.evaluate()]) if phase.recorded else sums
        if validation:
            values = torch.cat([values, validation.end_epoch()])
        values = values.tolist()  # the epoch's one read back to the host
        seconds = time.perf_counter() - started
        train = unpack_sums(values[:len(sums)], len(self.classes))
        if train["bad_step"] >= 0:
            raise SelError(f"{self.name}: the loss became NaN or infinite at epoch {self.done + 1} "
                           f"({phase.name} {k + 1}/{phase.epochs}), step {train['bad_step'] + 1}; "
                           f"lower train.lr or check the data")
        self.done += 1
        self.totals["wall_s"] += seconds
        if not phase.recorded:
            self.totals["pretrain_time_s"] += seconds
            self.totals["pretrain_flops_executed"] += steps_flops(steps, trainer.batch_size, phase.keep,
                                                                  self.train_flops, self.eval_flops)
            self._report(phase, k, None, seconds)
            return None
        start = self._spent()
        self.totals["train_time_s"] += self.training_clock.seconds()
        if validation:
            self.totals["flops_eval"] += self.test_flops * len(trainer.val_set) * len(validation.pending)
        tested = len(sums) + 3 + len(self.classes)  # evaluate's figures; the validation accuracies follow
        row = self._row(phase, train, unpack_evaluation(values[len(sums):tested]), steps, seconds)
        if validation:
            row["acc/val"] = validation.record(values[tested:], len(self.rows), start, self._spent())
        self.rows.append(row)
        self._report(phase, k, row, seconds)
        return row

    def _spent(self) -> dict:
        """The run's executed training FLOPs (T) and training seconds so far, as validation.csv names them."""
        return {"compute/flops_executed_T": self.totals["flops_executed"] / 1e12,
                "compute/train_time_s": self.totals["train_time_s"]}

    def _device_indices(self, phase: Phase) -> torch.Tensor:
        if id(phase) not in self._indices:
            self._indices[id(phase)] = torch.as_tensor(phase.indices, device=self.trainer.device)
        return self._indices[id(phase)]

    def lr_line(self, phase: Phase, steps: int) -> tuple[float, float] | None:
        """(the fraction of the linear decay done before this epoch, the fraction per step): the
        run's planned steps so far over all of them, or (InfoBatch) its epochs so far over all of
        them, this epoch's share spread over its `steps`; None at a constant rate."""
        if phase.lr_decay_steps:
            return self._steps_done_over(phase.lr_decay_steps)
        if phase.lr_decay_epochs:
            return self.done / phase.lr_decay_epochs, 1 / (phase.lr_decay_epochs * steps)
        return None

    def _progress(self) -> tuple[float, float]:
        """(the fraction of the run's planned steps before this epoch, the fraction per step)."""
        return self._steps_done_over(sum(map(len, self.planned)))

    def _steps_done_over(self, total: int) -> tuple[float, float]:
        """(the run's planned steps before this epoch over `total`, 1 / `total`)."""
        return sum(map(len, self.planned[:self.done])) / total, 1 / total

    def _row(self, phase: Phase, train: dict, ev: dict, steps: list[tuple[int, bool]], seconds: float) -> dict:
        batch_size = self.trainer.batch_size
        images = sum(size for size, _ in steps)
        trained = sum(kept_count(size, batch_size, phase.keep) if selecting else size for size, selecting in steps)
        sparsity = train["sparsity"] / len(steps)
        t = self.totals
        t["flops_proxy"] += proxy_flops(self.n_params, sparsity, trained)
        t["flops_executed"] += steps_flops(steps, batch_size, phase.keep, self.train_flops, self.eval_flops)
        t["flops_eval"] += self.test_flops * len(self.trainer.test_set)
        t["time_s"] += seconds
        row = {"epoch": len(self.rows) + 1, "schedule/stage": phase.stage,
               "acc/train_acc": train["correct"] / images, "loss/train_loss": train["loss"] / images,
               "acc/test_full": ev["test_full"], "acc/test_100": ev["test_100"],
               "compute/flops_proxy_T": t["flops_proxy"] / 1e12,
               "compute/flops_executed_T": t["flops_executed"] / 1e12,
               "compute/flops_eval_T": t["flops_eval"] / 1e12, "compute/time_s": t["time_s"],
               "compute/train_time_s": t["train_time_s"],
               "sparsity/sparsity": sparsity, "sparsity/params_changed": train["changed"] / len(steps),
               "sparsity/gamma": train["gamma"] / len(steps)}
        if self.trainer.tta_level:
            row["acc/test_no_tta"] = ev["test_no_tta"]
        row.update({f"class_acc/{name}": a for name, a in zip(self.classes, ev["per_class"])})
        row.update({f"E/{name}": v / len(steps) for name, v in zip(self.classes, train["E"])})
        row.update({f"C/{name}": v / len(steps) for name, v in zip(self.classes, train["C"])})
        return row

    def _report(self, phase: Phase, k: int, row: dict | None, seconds: float) -> None:
        """One progress line: epoch, accuracy, elapsed and the time left, estimated per image."""
        if self.out is None:
            return
        done_images = sum(p.images() for p, _ in self.schedule[:self.done])
        left_images = sum(p.images() for p, _ in self.schedule[self.done:])
        eta = self.totals["wall_s"] / max(done_images, 1) * left_images
        if row is None:
            what = "(pre-training, not recorded)"
        else:
            what = (f"test {row['acc/test_full']:.1%} held-out {row['acc/test_100']:.1%} "
                    f"train {row['acc/train_acc']:.1%}")
            if phase.update != DENSE:
                what += f" sparsity {row['sparsity/sparsity']:.1%}"
        print(f"[{self.name}] epoch {self.done}/{len(self.schedule)} {phase.name} {k + 1}/{phase.epochs}: "
              f"{what} | {seconds:.1f}s, elapsed {_clock(self.totals['wall_s'])}, left ~{_clock(eta)}",
              file=self.out, flush=True)

    def state_dict(self) -> dict:
        """The run's progress and the trainer's state, for a checkpoint."""
        return {"done": self.done, "rows": self.rows, "totals": self.totals, "trainer": self.trainer.state_dict(),
                "validation": self.validation.rows if self.validation else []}

    def load_state_dict(self, state: dict) -> None:
        """The trainer's first: a state it refuses leaves the run as it was."""
        validated = state["validation"] if self.validation else []
        self.trainer.load_state_dict(state["trainer"])
        if self.validation:
            self.validation.rows = validated
        self.done, self.rows, self.totals = state["done"], state["rows"], state["totals"]

    def phase_of(self, row: dict) -> Phase:
        """The phase a history row's epoch ran in."""
        return [phase for phase, _ in self.schedule if phase.recorded][row["epoch"] - 1]

    def summary(self) -> dict:
        """The run's final figures (the last recorded epoch) and totals."""
        last = self.rows[-1] if self.rows else {}
        # sparsity and changed weights over the masked epochs (a warm-up's dense epochs would
        # dilute them), over every epoch when none is masked
        updates = [self.phase_of(row).update for row in self.rows]
        masked = [r for r, u in zip(self.rows, updates) if u != DENSE] or self.rows
        return {
            "experiment": self.name,
            "epochs": len(self.rows),
            "acc/test_full": last.get("acc/test_full"),
            "acc/test_100": last.get("acc/test_100"),
            **({"acc/test_no_tta": last["acc/test_no_tta"]} if "acc/test_no_tta" in last else {}),
            "acc/train_acc": last.get("acc/train_acc"),
            "compute/flops_proxy_T": self.totals["flops_proxy"] / 1e12,
            "compute/flops_executed_T": self.totals["flops_executed"] / 1e12,
            "compute/flops_eval_T": self.totals["flops_eval"] / 1e12,
            "compute/time_s": self.totals["time_s"],
            "compute/train_time_s": self.totals["train_time_s"],
            "sparsity/sparsity": float(np.mean([r["sparsity/sparsity"] for r in masked])) if masked else 0.0,
            "sparsity/params_changed": (float(np.mean([r["sparsity/params_changed"] for r in masked]))
                                        if masked else 0.0),
            "masked_epochs": sum(u != DENSE for u in updates),
            "pretrain_time_s": self.totals["pretrain_time_s"],
            "pretrain_flops_executed_T": self.totals["pretrain_flops_executed"] / 1e12,
            # the sort and calibration passes the run read, in its executed FLOPs and times above
            "compute/prep_flops_executed_T": self.totals.get("prep_flops_executed", 0.0) / 1e12,
            "compute/prep_time_s": self.totals.get("prep_time_s", 0.0),
            "n_params": self.n_params,
            "train_gflop_per_image": self.train_flops / 1e9,
        }
