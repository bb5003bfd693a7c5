"""The training loop, written once for the CPU and for GPUs.

The uint8 data lives on the training device; crop, flip and normalisation run there on whole
batches; training sets are index tensors; nothing inside a step reads a value back to the host:
loss, accuracy, E/C and sparsity accumulate on the device and are read once per epoch. The
per-batch learning rate of SEL is a tensor that the fused optimizer reads on the device. So the step
can be captured as a CUDA graph and replayed (`sel/train/graphs.py`, `train.cuda_graphs`).
"""

import copy
from typing import NamedTuple

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from sel.data.augment import AUGMENT, Images
from sel.method.curriculum import epoch_order
from sel.data.dataset import Cifar
from sel.train.device import autocast, exact_fp32, memory_format
from sel.method.class_draw import class_shares, draw_by_class, drawn_count
from sel.method.embarrassment import class_counts, class_embarrassment
from sel.method.infobatch import prune_well_learned
from sel.train.graphs import StepGraphs
from sel.method.prune import Mask, global_magnitude_mask
from sel.method.selective import candidate_size, epoch_steps, history_percentile, kept_count, select_by_loss
from sel.method.sparsity import FlatGrads

DENSE, SEL, MASKED = "dense", "sel", "masked"


class Rule(NamedTuple):
    """What a step does, and so what one captured graph replays: the update, whether it measures
    E/C, the loss scaling of its lr, the target sparsity (target-mode gamma), whether its lr
    decays linearly (the line's position is on the device: `lr_line`), the share of candidates it
    trains on (selective backward), whether its loss is weighted per image (InfoBatch) and the
    length of the loss history its selection ranks against (None: its own batch)."""

    update: str
    measure_ec: bool
    lr_loss_scale: float
    target_sparsity: float | None
    decays: bool
    keep: float | None
    weighted: bool = False
    history: int | None = None


TARGET_SAMPLE = 1 << 16  # gradient entries whose quantile sets gamma in target mode
TTA_FORWARDS = (1, 2, 6)  # forwards of an evaluated image at each tta_level (`Trainer.tta_logits`)
LOOKAHEAD_EVERY, LOOKAHEAD_DECAY = 5, 0.95 ** 5  # airbench's: the average's weight is DECAY (t / T)^3


def sums_layout(n_classes: int) -> dict[str, slice]:
    """Where each of `train_epoch`'s sums sits in its one device tensor (the one place that
    knows): loss * images, correct, zeroed fraction, changed fraction and gamma summed over
    steps, E_c and C_c summed over steps, and the first non-finite step (-1: none)."""
    sizes = {"loss": 1, "correct": 1, "sparsity": 1, "changed": 1, "gamma": 1,
             "E": n_classes, "C": n_classes, "bad_step": 1}
    layout, at = {}, 0
    for name, size in sizes.items():
        layout[name] = slice(at, at + size)
        at += size
    return layout


def unpack_sums(values: list[float], n_classes: int) -> dict:
    """`train_epoch`'s sums, read back, by name."""
    out = {name: values[sl] if sl.stop - sl.start > 1 else values[sl.start]
           for name, sl in sums_layout(n_classes).items()}
    out["bad_step"] = int(out["bad_step"])
    return out


def unpack_evaluation(values: list[float]) -> dict:
    """`evaluate`'s figures, read back, by name."""
    return {"test_full": values[0], "test_100": values[1], "per_class": values[2:-1], "test_no_tta": values[-1]}


class Trainer:
    """A model with its optimizer, gradient buffer and device-resident data."""

    def __init__(self, model: nn.Module, data: Cifar, held_out: np.ndarray, *, device: torch.device,
                 precision: str, lr: float, batch_size: int, eval_batch_size: int, seed: int,
                 temperature: float = 1.5, use_compile: bool = False, cuda_graphs: bool = False,
                 optimizer: str = "adam", momentum: float = 0.85, weight_decay: float = 0.0,
                 bias_lr_scale: float = 1.0, label_smoothing: float = 0.0, augment: str = "crop4",
                 warmup: float = 0.0, warmup_from: float = 0.0, lr_end: float = 0.0, flip: str = "random",
                 lookahead: bool = False, tta_level: int = 0):
        if precision == "fp32":
            exact_fp32(device)
        self.device, self.precision = device, precision
        self.layout = memory_format(model, device)
        self.model = model.to(device, memory_format=self.layout)
        # torch.compile serves full-size batches; a last, smaller batch runs eagerly rather than
        # triggering a recompile for each new size.
        self.compiled = torch.compile(self.model) if use_compile else None
        self.n_classes = len(data.classes)
        self.train_set = Images(data.x_train, data.y_train, device, self.layout, **AUGMENT[augment])
        self.test_set = Images(data.x_test, data.y_test, device, self.layout)
        self.val_set = Images(data.x_val, data.y_val, device, self.layout) if len(data.y_val) else None
        self.on_step = None  # called with a step's images before it runs (mid-epoch validation)
        self.held_out = torch.as_tensor(held_out, device=device)
        self.base_lr, self.batch_size, self.eval_batch_size = lr, batch_size, eval_batch_size
        self.temperature, self.seed = temperature, seed
        self.recipe = {"optimizer": optimizer, "momentum": momentum, "weight_decay": weight_decay,
                       "bias_lr_scale": bias_lr_scale}
        self.label_smoothing, self.warmup, self.tta_level = label_smoothing, warmup, tta_level
        self.warmup_from, self.lr_end = warmup_from, lr_end
        self.epochs_trained = self.steps_taken = 0
        self.frozen: list[int] = []  # indices into grads.params of parameters held at their value
        self.generator = torch.Generator(device).manual_seed(seed)
        # alternating flips: each image's flip in even epochs, the run's first draw
        self.flip_base = None if flip == "random" else \
            torch.rand(len(self.train_set), device=device, generator=self.generator) < 0.5
        self.initial_state = copy.deepcopy(self.model.state_dict())
        # lookahead: the float state (weights, BatchNorm statistics) and its running average
        self.averaged = [v for v in self.model.state_dict().values() if v.is_floating_point()]
        self.average = [v.clone() for v in self.averaged] if lookahead else None
        self.grads = FlatGrads(list(self.model.parameters()))
        # the weights before each step, to count the entries the optimizer actually changed
        self.before = torch.empty_like(self.grads.flat)
        self.before_views = self.grads.views_like(self.before)
        self._target_sample = None
        # what a step reads, at fixed addresses: its sums (`sums_layout`), gamma, its index
        layout = sums_layout(self.n_classes)
        self.sums = torch.zeros(layout["bad_step"].stop, device=device)
        self.sum_parts = {name: self.sums[sl] for name, sl in layout.items()}
        self.gamma = torch.zeros((), device=device)
        self.step_index = torch.zeros((), device=device)
        # a linear lr: the fraction of its line done at the epoch's first step, and per step
        self.lr_start = torch.zeros((), device=device)
        self.lr_slope = torch.zeros((), device=device)
        self.loss_history, self.history_at = None, torch.zeros((), dtype=torch.long, device=device)
        self.mask: Mask | None = None
        self.select_noise = {}  # selective backward: candidates per step -> its Exp(1) draws
        # the epoch draws: each class's running E (the last epoch's mean; the E-driven class
        # draw), each image's last training loss and this epoch's loss weight (InfoBatch), and
        # the images of a weighted step, at a fixed address
        self.class_e = torch.ones(self.n_classes, device=device)
        self.scores = torch.ones(len(self.train_set), device=device)
        self.image_weight = torch.ones(len(self.train_set), device=device)
        self.batch_ids = torch.zeros(batch_size, dtype=torch.long, device=device)
        self.graphs = StepGraphs(self._step, device) if cuda_graphs else None
        self.optimizer = self.new_optimizer()

    def new_optimizer(self) -> torch.optim.Optimizer:
        """Fused Adam: keeps its step count on the device and takes a tensor learning rate
        (`capturable` lets a CUDA graph hold its step). Or fused SGD with Nesterov momentum
        (airbench's; it has no step count, so no `capturable`; fused runs on the CPU and CUDA),
        its BatchNorm biases in a second group at lr * bias_lr_scale and weight decay /
        bias_lr_scale (airbench's bias_scaler: the decay per step stays lr * weight_decay)."""
        if self.graphs is not None:
            self.graphs.reset()
        r = self.recipe
        if r["optimizer"] == "adam":
            lr = torch.tensor(self.base_lr, device=self.device)
            return torch.optim.Adam(self.grads.params, lr=lr, fused=True, capturable=self.graphs is not None)
        scale, wd = r["bias_lr_scale"], r["weight_decay"]
        biases = {id(m.bias) for m in self.model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)
                  and m.bias is not None} if scale != 1 else set()
        trained = [p for p in self.grads.params if p.requires_grad]  # not airbench's fixed whitening
        groups = [{"params": [p for p in trained if id(p) not in biases], "lr_scale": 1.0, "weight_decay": wd},
                  {"params": [p for p in trained if id(p) in biases], "lr_scale": scale,
                   "weight_decay": wd / scale}]
        for group in groups:
            group["lr"] = torch.tensor(self.base_lr * group["lr_scale"], device=self.device)
        return torch.optim.SGD([g for g in groups if g["params"]], momentum=r["momentum"], nesterov=True,
                               fused=True)

    def set_lr(self, lr: torch.Tensor | float) -> None:
        """Every group's lr, on the device: `lr` times the group's scale (BatchNorm biases)."""
        lr = torch.as_tensor(lr)
        for group in self.optimizer.param_groups:
            scale = group.get("lr_scale", 1.0)
            group["lr"].copy_(lr if scale == 1 else lr * scale)

    def state_dict(self) -> dict:
        """Everything a resumed run needs to go on exactly as an uninterrupted one."""
        return {"model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
                "mask": None if self.mask is None else self.mask.flat,
                "generator": self.generator.get_state(), "torch_rng": torch.get_rng_state(),
                "class_e": self.class_e.clone(), "scores": self.scores.clone(),
                "loss_history": None if self.loss_history is None else self.loss_history.clone(),
                "history_at": self.history_at.clone(), "epochs_trained": self.epochs_trained,
                "steps_taken": self.steps_taken,
                "average": None if self.average is None else [v.clone() for v in self.average]}

    def load_state_dict(self, state: dict) -> None:
        """All or nothing: a state that does not fit this trainer (another width's model, say)
        raises and leaves the trainer as it was, not with some tensors loaded and others not."""
        before = copy.deepcopy(self.state_dict())
        try:
            self._load(state)
        except Exception:
            self._load(before)
            raise

    def _load(self, state: dict) -> None:
        self.model.load_state_dict(state["model"])
        self.mask = None if state["mask"] is None else Mask(self.grads, state["mask"])
        self.optimizer.load_state_dict(state["optimizer"])
        if self.graphs is not None:  # the loaded state holds new tensors, and maybe capturable=False
            for group in self.optimizer.param_groups:
                if "capturable" in group:
                    group["capturable"] = True
            self.graphs.reset()
        self.class_e.copy_(state["class_e"])
        history = state.get("loss_history")
        self.loss_history = None if history is None else history.to(self.device)
        self.history_at.copy_(state.get("history_at", 0))
        self.scores.copy_(state["scores"])
        self.generator.set_state(state["generator"].cpu())
        torch.set_rng_state(state["torch_rng"].cpu())
        self.epochs_trained, self.steps_taken = state.get("epochs_trained", 0), state.get("steps_taken", 0)
        if self.average is not None:
            torch._foreach_copy_(self.average, state["average"])

    def freeze(self, param: nn.Parameter) -> None:
        """Hold `param` at its value from the next step on (a new graph: the step changed); the
        lookahead average still moves it, as airbench's does its frozen whitening bias."""
        i = next(i for i, p in enumerate(self.grads.params) if p is param)
        if i not in self.frozen:
            self.frozen.append(i)
            if self.graphs is not None:
                self.graphs.reset()

    def prune_and_rewind(self, fraction: float) -> None:
        """Lottery: mask the smallest `fraction` of all weights, rewind to the initial state
        (buffers too) and start a fresh optimizer; weights are masked after each step from then on."""
        self.mask = global_magnitude_mask(self.grads, fraction)
        self.model.load_state_dict(self.initial_state)
        self.optimizer = self.new_optimizer()
        if self.average is not None:
            torch._foreach_copy_(self.average, self.averaged)

    @torch.no_grad()
    def move_to_average(self, decay: float) -> None:
        """Lookahead: the average moves (1 - decay) of the way to the weights, and the weights to
        it (decay 1: the weights become the average); a lottery's pruned weights stay zero."""
        torch._foreach_lerp_(self.average, self.averaged, 1 - decay)
        torch._foreach_copy_(self.averaged, self.average)
        if self.mask is not None:
            self.mask.apply_to_weights()

    def _forward(self, x: torch.Tensor, full_batch: bool) -> torch.Tensor:
        return self.compiled(x) if self.compiled is not None and full_batch else self.model(x)

    def target_gamma(self, sparsity: float) -> torch.Tensor:
        """gamma that zeroes `sparsity` of this step's gradient entries: the quantile of |g| over
        a fixed random sample of the entries (all of them in small models), on the device, so
        the step reads nothing back (the sample's error is about 0.1 pp per step at 2^16)."""
        if self._target_sample is None:
            g = torch.Generator().manual_seed(self.seed)
            sample = torch.randperm(self.grads.numel, generator=g)[:TARGET_SAMPLE]
            self._target_sample = sample.to(self.device)
        m = len(self._target_sample)
        k = min(max(round(sparsity * (m + 1)), 1), m)
        return self.grads.flat[self._target_sample].abs().kthvalue(k).values

    def draw_by_embarrassment(self, indices: torch.Tensor, keep: float, floor: float) -> torch.Tensor:
        """The E-driven class draw's images for this epoch (`sel.method.class_draw`), of a fixed
        count, drawn on the device from the running E."""
        return draw_by_class(indices, self.train_set.y[indices], class_shares(self.class_e, floor),
                             drawn_count(len(indices), keep), self.generator)

    def prune_by_loss(self, indices: torch.Tensor, ratio: float) -> torch.Tensor:
        """InfoBatch's images for this epoch (`sel.method.infobatch`); sets their loss weights,
        which a weighted step reads."""
        kept, weights = prune_well_learned(indices, self.scores, ratio, self.generator)
        self.image_weight[kept] = weights
        return kept

    def train_epoch(self, indices: torch.Tensor, update: str = DENSE, gamma: float | None = None,
                    measure_ec: bool = True, lr_loss_scale: float = 0.0,
                    target_sparsity: float | None = None, lr_line: tuple[float, float] | None = None,
                    keep: float | None = None, weighted: bool = False,
                    steps: list[tuple[int, bool]] | None = None, history: int | None = None,
                    progress: tuple[float, float] | None = None, ends_run: bool = False) -> torch.Tensor:
        """One epoch over `indices` in a fresh order. `update`: dense, sel (zero |g| <= gamma, or,
        with `target_sparsity`, at the gamma that zeroes that fraction) or masked (lottery).
        The learning rate is `step_lr`'s, or the base one when neither knob moves it; `lr_line`:
        (the fraction of a linear decay done at the epoch's first step, the fraction per step).
        `keep`: selective backward, each selecting step trains on that share of its candidates
        (`sel.method.selective`); `steps`: (images, selects) of each step (`epoch_steps`; default:
        every step selects when `keep` is set), `history`: rank losses among that many past ones.
        `weighted`: each image's loss is weighted by `image_weight` and its score set to it
        (InfoBatch). `progress`: (the fraction of the run done at the epoch's first step, per
        step), which sets the lookahead average's weight; `ends_run`: the weights end as the
        average (both read only with `lookahead`). With `measure_ec` the epoch's mean E per class
        becomes the running E the class draw reads. Returns the sums over its steps, on the device
        (`sums_layout`; `unpack_sums` names them once read back)."""
        self.model.train()
        self.sums.zero_()
        self.sum_parts["bad_step"].fill_(-1)
        self.step_index.zero_()
        if gamma is not None:
            self.gamma.fill_(gamma)
        if lr_line is not None:
            self.lr_start.fill_(lr_line[0])
            self.lr_slope.fill_(lr_line[1])
        if not lr_loss_scale and lr_line is None:
            self.set_lr(self.base_lr)
        if history and (self.loss_history is None or len(self.loss_history) != history):
            self.loss_history = torch.full((history,), float("nan"), device=self.device)
        steps = steps or epoch_steps(len(indices), self.batch_size, keep)
        batches = epoch_order(indices, self.generator).split([size for size, _ in steps])
        flips = None if self.flip_base is None else self.flip_base ^ bool(self.epochs_trained % 2)
        for k, (batch, (_, selecting)) in enumerate(zip(batches, steps)):
            if self.on_step is not None:
                self.on_step(len(batch))
            step_keep = keep if selecting else None
            rule = Rule(update, measure_ec, lr_loss_scale, target_sparsity, lr_line is not None, step_keep,
                        weighted, history if selecting else None)
            per_step = candidate_size(self.batch_size, step_keep)
            x = self.train_set.augmented(batch, self.generator, None if flips is None else flips[batch])
            y = self.train_set.y[batch]
            if step_keep is not None:  # drawn here, read by the step at a fixed address
                if per_step not in self.select_noise:
                    self.select_noise[per_step] = torch.empty(per_step, device=self.device)
                self.select_noise[per_step].exponential_(generator=self.generator)
            if weighted:
                self.batch_ids[:len(batch)].copy_(batch)
            if self.graphs is not None and len(batch) == per_step:
                self.graphs.run(x, y, rule)
            else:  # the last, smaller batch of an epoch runs eagerly
                self._step(x, y, rule)
            if self.average is not None and progress is not None:
                self.steps_taken += 1
                if self.steps_taken % LOOKAHEAD_EVERY == 0:
                    self.move_to_average(LOOKAHEAD_DECAY * min(progress[0] + (k + 1) * progress[1], 1.0) ** 3)
        if self.average is not None and ends_run:
            self.move_to_average(1.0)
        self.epochs_trained += 1
        if measure_ec:
            self.class_e.copy_(self.sum_parts["E"] / len(batches))
        return self.sums.clone()

    def _step(self, x: torch.Tensor, y: torch.Tensor, rule: Rule) -> None:
        """One training step, adding to `self.sums`; reads nothing back to the host, and reads
        no Python value that changes between steps of the same `rule` (a graph replays it)."""
        update, measure_ec, lr_loss_scale, target_sparsity, decays, keep, weighted, history = Rule(*rule)
        t = self.sum_parts
        if keep is not None:
            x, y = self._select(x, y, keep, measure_ec, history)
        with autocast(self.device, self.precision):
            logits = self._forward(x, len(y) == self.batch_size)
        if weighted:
            ids = self.batch_ids[:len(y)]
            losses = F.cross_entropy(logits.float(), y, reduction="none", label_smoothing=self.label_smoothing)
            self.scores.index_copy_(0, ids, losses.detach())
            loss = (losses * self.image_weight[ids]).mean()
            mean_loss = losses.detach().mean()  # what the epoch's train loss records: unweighted
        else:
            loss = F.cross_entropy(logits.float(), y, label_smoothing=self.label_smoothing)
            mean_loss = loss.detach()
        # remember the first step whose loss is NaN or infinite, without reading it back
        t["bad_step"].copy_(torch.where((t["bad_step"] < 0) & ~torch.isfinite(loss.detach()),
                                        self.step_index, t["bad_step"]))
        if keep is None:
            self._record(logits.detach(), y, mean_loss, measure_ec)
        if lr_loss_scale or decays:
            self.set_lr(self.step_lr(loss.detach(), lr_loss_scale, decays))
        loss.backward()
        if update == SEL:
            threshold = self.target_gamma(target_sparsity) if target_sparsity is not None else self.gamma
            t["sparsity"].add_(self.grads.mask_small(threshold))
            t["gamma"].add_(threshold)
        elif update == MASKED:
            self.mask.apply_to_grads()
            t["sparsity"].add_(self.mask.sparsity)
        params = self.grads.params
        with torch.no_grad():
            torch._foreach_copy_(self.before_views, params)
        self.optimizer.step()
        if update == MASKED:
            self.mask.apply_to_weights()
        with torch.no_grad():
            for i in self.frozen:  # back to its value before the step: momentum and decay moved it
                params[i].copy_(self.before_views[i])
            torch._foreach_sub_(self.before_views, params)
            t["changed"].add_(self.before.count_nonzero() / self.grads.numel)
        self.grads.zero()
        self.step_index.add_(1)

    def step_lr(self, loss: torch.Tensor, lr_loss_scale: float, decays: bool) -> torch.Tensor:
        """lr * line(done) * (1 + lr_loss_scale * loss) on the device, `done` the fraction of the
        linear decay behind this step (`lr_line`: for a run of T steps, t / T at step t, 0-based;
        no decay unless `decays`). The line falls from 1 to `lr_end` as the run ends; with `lr_end`
        0 the last step runs at lr / T, so every step moves the weights (Li et al. 2020). With a
        `warmup` fraction w it first rises from `warmup_from` to 1 over done < w, then falls."""
        lr = self.base_lr * (1 + lr_loss_scale * loss)
        if not decays:
            return lr
        left = 1 - self.lr_start - self.step_index * self.lr_slope  # in this order: exact near the end
        end, start = self.lr_end, self.warmup_from
        if not self.warmup:
            return lr * (end + (1 - end) * left)
        return lr * torch.minimum(start + (1 - start) * (1 - left) / self.warmup,
                                  end + (1 - end) * left / (1 - self.warmup))

    def _record(self, logits: torch.Tensor, y: torch.Tensor, loss: torch.Tensor, measure_ec: bool) -> None:
        """Add a batch's loss (its mean `loss` times its images), correct predictions and E/C."""
        t = self.sum_parts
        t["loss"].add_(loss * len(y))
        t["correct"].add_((logits.argmax(1) == y).sum())
        if measure_ec:
            e, c = class_embarrassment(logits, y, self.n_classes, self.temperature)
            t["E"].add_(e)
            t["C"].add_(c)

    @torch.no_grad()
    def _select(self, x: torch.Tensor, y: torch.Tensor, keep: float, measure_ec: bool, history: int | None):
        """Selective backward: forward every candidate without an autograd graph, in train mode as
        Composer does (BatchNorm normalises by the candidates' statistics and updates its running
        ones), record their loss, accuracy and E/C (so an epoch's figures cover all its images),
        and return the share drawn by loss to train on, of a fixed size."""
        with autocast(self.device, self.precision):
            logits = self._forward(x, len(y) == candidate_size(self.batch_size, keep)).float()
        losses = F.cross_entropy(logits, y, reduction="none")
        self._record(logits, y, losses.mean(), measure_ec)
        noise = self.select_noise[candidate_size(self.batch_size, keep)][:len(y)]
        percentile = None
        if history:  # rank against the run's last `history` candidate losses, then add these
            percentile = history_percentile(losses, self.loss_history)
            slots = (self.history_at + torch.arange(len(y), device=self.device)) % history
            self.loss_history[slots] = losses
            self.history_at.copy_((self.history_at + len(y)) % history)
        chosen = select_by_loss(losses, kept_count(len(y), self.batch_size, keep), keep, noise, percentile)
        return x[chosen], y[chosen]

    def _correct(self, images: Images) -> tuple[torch.Tensor, torch.Tensor]:
        """Whether the model in eval mode predicts each image of `images` right (1.0 or 0.0), in
        batches of `eval_batch_size`, on the device: with test-time augmentation (`tta_logits`),
        and (the same tensor without it) on the image alone."""
        self.model.eval()
        correct, plain = [], []
        for batch in torch.arange(len(images), device=self.device).split(self.eval_batch_size):
            alone, logits = self.tta_logits(images.plain(batch), len(batch) == self.eval_batch_size)
            plain.append(alone.argmax(1) == images.y[batch])
            correct.append(logits.argmax(1) == images.y[batch] if self.tta_level else plain[-1])
        return torch.cat(correct).float(), torch.cat(plain).float()

    def tta_logits(self, x: torch.Tensor, full: bool) -> tuple[torch.Tensor, torch.Tensor]:
        """The logits of `x` alone, and at `tta_level` as airbench's: 1 the mean of the image's and
        its mirror's, 2 that mean weighted half against the image shifted one pixel up-left and
        one down-right (reflection padded), each with its mirror."""
        def with_mirror(v, logits=None):
            if logits is None:
                logits = self._forward(v, full).float()
            return (logits + self._forward(v.flip(3), full).float()) / 2

        with autocast(self.device, self.precision):
            alone = logits = self._forward(x, full).float()
            if self.tta_level >= 1:
                logits = with_mirror(x, alone)
            if self.tta_level == 2:
                padded = F.pad(x, (1, 1, 1, 1), mode="reflect")
                up_left, down_right = (with_mirror(padded[:, :, a:a + 32, a:a + 32]) for a in (0, 2))
                logits = logits / 2 + (up_left + down_right) / 4
        return alone, logits

    @torch.inference_mode()
    def validation_accuracy(self) -> torch.Tensor:
        """Accuracy on the validation split as a one-element device tensor (no read back), then
        back to train mode, as it may run mid-epoch; it draws nothing from the generator, so the
        training is the same with or without it."""
        accuracy = self._correct(self.val_set)[0].mean().view(1)
        self.model.train()
        return accuracy

    @torch.inference_mode()
    def evaluate(self) -> torch.Tensor:
        """Accuracy on the test set, on the held-out subset and per class on the held-out subset,
        from one pass over the test set (the held-out images are part of it), then on the test
        set without test-time augmentation (the first figure again when there is none)."""
        test = self.test_set
        correct, plain = self._correct(test)
        held, held_y = correct[self.held_out], test.y[self.held_out]
        per_class = torch.zeros(self.n_classes, device=self.device).index_add_(0, held_y, held)
        per_class /= class_counts(held_y, self.n_classes).clamp(min=1)
        return torch.cat([correct.mean().view(1), held.mean().view(1), per_class, plain.mean().view(1)])
