"""The training loop, written once for the CPU and for GPUs.

The uint8 data lives on the training device; crop, flip and normalisation run there on whole
batches; training sets are index tensors; nothing inside a step reads a value back to the host:
loss, accuracy, E/C and sparsity accumulate on the device and are read once per epoch. The
per-batch learning rate of SEL is a tensor that the fused Adam reads on the device.
"""

import copy

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .augment import Images
from .curriculum import epoch_order
from .dataset import Cifar
from .device import autocast, exact_fp32, memory_format
from .embarrassment import class_counts, class_embarrassment
from .prune import Mask, global_magnitude_mask
from .sparsity import FlatGrads

DENSE, SEL, MASKED = "dense", "sel", "masked"


def unpack_sums(values: list[float], n_classes: int) -> dict:
    """`train_epoch`'s sums, read back, by name (the one place that knows their layout)."""
    n = n_classes
    return {"loss": values[0], "correct": values[1], "sparsity": values[2], "E": values[3:3 + n],
            "C": values[3 + n:3 + 2 * n], "bad_step": int(values[3 + 2 * n])}


def unpack_evaluation(values: list[float]) -> dict:
    """`evaluate`'s figures, read back, by name."""
    return {"test_full": values[0], "test_100": values[1], "per_class": values[2:]}


class Trainer:
    """A model with its optimizer, gradient buffer and device-resident data."""

    def __init__(self, model: nn.Module, data: Cifar, held_out: np.ndarray, *, device: torch.device,
                 precision: str, lr: float, batch_size: int, eval_batch_size: int, seed: int,
                 temperature: float = 1.5, lr_loss_scale: float = 2.0, use_compile: bool = False):
        if precision == "fp32":
            exact_fp32(device)
        self.device, self.precision = device, precision
        self.layout = memory_format(model, device)
        self.model = model.to(device, memory_format=self.layout)
        # torch.compile serves full-size batches; a last, smaller batch runs eagerly rather than
        # triggering a recompile for each new size.
        self.compiled = torch.compile(self.model) if use_compile else None
        self.n_classes = len(data.classes)
        self.train_set = Images(data.x_train, data.y_train, device, self.layout)
        self.test_set = Images(data.x_test, data.y_test, device, self.layout)
        self.held_out = torch.as_tensor(held_out, device=device)
        self.base_lr, self.batch_size, self.eval_batch_size = lr, batch_size, eval_batch_size
        self.temperature, self.lr_loss_scale = temperature, lr_loss_scale
        self.generator = torch.Generator(device).manual_seed(seed)
        self.initial_state = copy.deepcopy(self.model.state_dict())
        self.grads = FlatGrads(list(self.model.parameters()))
        self.mask: Mask | None = None
        self.optimizer = self.new_optimizer()

    def new_optimizer(self) -> torch.optim.Adam:
        """Fused Adam: keeps its step count on the device and takes a tensor learning rate."""
        lr = torch.tensor(self.base_lr, device=self.device)
        return torch.optim.Adam(self.grads.params, lr=lr, fused=True)

    def set_lr(self, lr: torch.Tensor | float) -> None:
        self.optimizer.param_groups[0]["lr"].copy_(torch.as_tensor(lr))

    def state_dict(self) -> dict:
        """Everything a resumed run needs to go on exactly as an uninterrupted one."""
        return {"model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
                "mask": None if self.mask is None else self.mask.flat,
                "generator": self.generator.get_state(), "torch_rng": torch.get_rng_state()}

    def load_state_dict(self, state: dict) -> None:
        self.model.load_state_dict(state["model"])
        if state["mask"] is not None:
            self.mask = Mask(self.grads, state["mask"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.generator.set_state(state["generator"].cpu())
        torch.set_rng_state(state["torch_rng"].cpu())

    def prune_and_rewind(self, fraction: float) -> None:
        """Lottery: mask the smallest `fraction` of all weights, rewind to the initial state
        (buffers too) and start a fresh Adam; weights are masked after each step from then on."""
        self.mask = global_magnitude_mask(self.grads, fraction)
        self.model.load_state_dict(self.initial_state)
        self.optimizer = self.new_optimizer()

    def _forward(self, x: torch.Tensor, full_batch: bool) -> torch.Tensor:
        return self.compiled(x) if self.compiled is not None and full_batch else self.model(x)

    def train_epoch(self, indices: torch.Tensor, update: str = DENSE, gamma: float | None = None,
                    measure_ec: bool = True) -> torch.Tensor:
        """One epoch over `indices` in a fresh order. Returns the sums over its steps, on the
        device: [loss * images, correct, sparsity, E_c..., C_c..., first non-finite step or -1]
        (`unpack_sums` names them once read back)."""
        self.model.train()
        n = self.n_classes
        totals = torch.zeros(4 + 2 * n, device=self.device)
        loss_sum, correct, sparsity = totals[0], totals[1], totals[2]
        e_sum, c_sum, bad_step = totals[3:3 + n], totals[3 + n:3 + 2 * n], totals[-1]
        bad_step.fill_(-1)
        if update != SEL:
            self.set_lr(self.base_lr)
        for step, batch in enumerate(epoch_order(indices, self.generator).split(self.batch_size)):
            x = self.train_set.augmented(batch, self.generator)
            y = self.train_set.y[batch]
            with autocast(self.device, self.precision):
                logits = self._forward(x, len(batch) == self.batch_size)
            loss = F.cross_entropy(logits.float(), y)
            # remember the first step whose loss is NaN or infinite, without reading it back
            bad_step.copy_(torch.where((bad_step < 0) & ~torch.isfinite(loss.detach()), step, bad_step))
            loss_sum.add_(loss.detach() * len(batch))
            correct.add_((logits.detach().argmax(1) == y).sum())
            if measure_ec:
                e, c = class_embarrassment(logits.detach(), y, n, self.temperature)
                e_sum.add_(e)
                c_sum.add_(c)
            if update == SEL:
                self.set_lr(self.base_lr * (1 + self.lr_loss_scale * loss.detach()))
            loss.backward()
            if update == SEL:
                sparsity.add_(self.grads.mask_small(gamma))
            elif update == MASKED:
                self.mask.apply_to_grads()
                sparsity.add_(self.mask.sparsity)
            self.optimizer.step()
            if update == MASKED:
                self.mask.apply_to_weights()
            self.grads.zero()
        return totals

    @torch.inference_mode()
    def evaluate(self) -> torch.Tensor:
        """Accuracy on the test set, on the held-out subset and per class on the held-out subset,
        from one pass over the test set (the held-out images are part of it)."""
        self.model.eval()
        test = self.test_set
        correct = []
        for batch in torch.arange(len(test), device=self.device).split(self.eval_batch_size):
            with autocast(self.device, self.precision):
                logits = self._forward(test.plain(batch), len(batch) == self.eval_batch_size)
            correct.append(logits.argmax(1) == test.y[batch])
        correct = torch.cat(correct).float()
        held, held_y = correct[self.held_out], test.y[self.held_out]
        per_class = torch.zeros(self.n_classes, device=self.device).index_add_(0, held_y, held)
        per_class /= class_counts(held_y, self.n_classes).clamp(min=1)
        return torch.cat([correct.mean().view(1), held.mean().view(1), per_class])
