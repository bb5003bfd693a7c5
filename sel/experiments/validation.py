"""Accuracy on the validation split during training (`data.val_per_class`, `train.val_every`): the
curve time-to-accuracy is read on (sel/report/summary.py), so that neither the targets nor the
crossings come from the test set.

A run evaluates its initial model (step 0), then every `every` optimizer steps of its recorded
epochs and at each of their ends. Each evaluation leaves its accuracy on the device; the epoch's one
read back (ExperimentRun.step) brings them to the host with the rest. The training clock is paused
around a mid-epoch evaluation, so training time leaves it out.
"""

import torch

from sel.train.device import Stopwatch
from sel.train.training import Trainer

COLUMNS = ("step", "epoch", "compute/flops_executed_T", "compute/train_time_s", "acc/val")


class Validation:
    """The validation evaluations of a run: `rows` (validation.csv, COLUMNS) so far, and those of
    the epoch under way, pending their read back."""

    def __init__(self, trainer: Trainer, clock: Stopwatch, every: int | None):
        self.trainer, self.clock, self.every = trainer, clock, every
        self.rows: list[dict] = []
        self._reset()

    def _reset(self) -> None:
        self.steps = self.rows[-1]["step"] if self.rows else 0  # optimizer steps of the recorded epochs
        self.consumed, self.due = 0, False  # the epoch's images so far; an evaluation owed
        self.pending: list[tuple[int, int, torch.Tensor]] = []  # (steps, images consumed, accuracy)

    def _evaluate(self) -> None:
        self.pending.append((self.steps, self.consumed, self.trainer.validation_accuracy()))

    def begin_epoch(self) -> None:
        """Before a recorded epoch: the initial model's accuracy if nothing was evaluated yet, and
        the trainer told to call `before_step`."""
        self._reset()
        if not self.rows:
            self._evaluate()
        self.trainer.on_step = self.before_step

    def before_step(self, images: int) -> None:
        """Evaluate the weights the last step left, when it completed `every` steps of the run;
        then count this step. (An evaluation owed at the epoch's last step is its end's.)"""
        if self.due:
            self.clock.stop()
            self._evaluate()
            self.clock.resume()
        self.steps += 1
        self.consumed += images
        self.due = self.every is not None and self.steps % self.every == 0

    def end_epoch(self) -> torch.Tensor:
        """The epoch-end evaluation, after the training clock stopped; every accuracy of the
        epoch as one device tensor, in order."""
        self.trainer.on_step = None
        self._evaluate()
        return torch.cat([accuracy for *_, accuracy in self.pending])

    def record(self, accuracies: list[float], epochs_before: int, start: dict, end: dict) -> float:
        """Add the epoch's rows from its accuracies read back; returns the epoch-end one. An
        evaluation's executed FLOPs and training seconds are interpolated linearly between the
        run's totals at the epoch's start and end (`start`, `end`: {column: total}) by the
        fraction of the epoch's images consumed before it: exact at the epoch's ends, and within
        an epoch as even as its steps are (every step but the last has as many images)."""
        for (steps, consumed, _), accuracy in zip(self.pending, accuracies):
            fraction = consumed / max(self.consumed, 1)
            self.rows.append({"step": steps, "epoch": epochs_before + fraction,
                              **{c: start[c] + fraction * (end[c] - start[c]) for c in start},
                              "acc/val": accuracy})
        return accuracies[-1]
