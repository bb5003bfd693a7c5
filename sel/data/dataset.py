"""The canonical CIFAR-10 arrays every stage reads (`data/cifar10.npz`), and samples of them."""

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from sel.core.errors import SelError


@dataclass
class Cifar:
    """uint8 images (N, 32, 32, 3) in HWC order, int64 labels, class names in label order; the
    validation split (`data.val_per_class`, never trained on) may be empty."""

    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    classes: list[str]
    x_val: np.ndarray = field(default_factory=lambda: np.zeros((0, 32, 32, 3), np.uint8))
    y_val: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))

    def counts(self) -> dict:
        """Images per class and split, by class name (the validation split's where there is one)."""
        splits = (("train", self.y_train), ("val", self.y_val), ("test", self.y_test))
        return {split: {name: int((y == i).sum()) for i, name in enumerate(self.classes)}
                for split, y in splits if split != "val" or len(y)}

    def save(self, path: Path) -> None:
        with open(path, "wb") as f:  # a file object: np.savez would append .npz to a name
            np.savez(f, x_train=self.x_train, y_train=self.y_train, x_test=self.x_test,
                     y_test=self.y_test, classes=np.array(self.classes), x_val=self.x_val, y_val=self.y_val)

    @classmethod
    def load(cls, path: str | Path) -> "Cifar":
        """An npz written before the validation split existed loads with an empty one."""
        try:
            with np.load(path, allow_pickle=False) as z:
                val = (z["x_val"], z["y_val"]) if "y_val" in z.files else ()
                return cls(z["x_train"], z["y_train"], z["x_test"], z["y_test"],
                           [str(c) for c in z["classes"]], *val)
        except (OSError, KeyError, ValueError) as e:
            raise SelError(f"cannot read {path} ({e}); run `dvc repro download` first") from None


def check_arrays(data: Cifar) -> None:
    """The shapes and values the rest of the pipeline relies on."""
    for split, x, y in (("train", data.x_train, data.y_train), ("test", data.x_test, data.y_test)):
        if len(y) == 0:
            raise SelError(f"the {split} split is empty")
        if x.dtype != np.uint8 or x.shape[1:] != (32, 32, 3) or len(x) != len(y):
            raise SelError(f"the {split} split has images of shape {x.shape[1:]} ({x.dtype}), "
                           f"expected 32x32 RGB uint8, one per label")
        if y.min() < 0 or y.max() >= len(data.classes):
            raise SelError(f"the {split} split has labels outside 0..{len(data.classes) - 1}")


def first_per_class(y: np.ndarray, k: int | None, n_classes: int, what: str) -> np.ndarray:
    """Indices of the first k images of each class, in dataset order (all when k is None)."""
    if k is None:
        return np.arange(len(y))
    keep = np.zeros(len(y), dtype=bool)
    for c in range(n_classes):
        idx = np.flatnonzero(y == c)
        if len(idx) < k:
            raise SelError(f"{what} = {k} is larger than the data: class {c} has {len(idx)} images")
        keep[idx[:k]] = True
    return np.flatnonzero(keep)


def last_per_class(y: np.ndarray, k: int, train_per_class: int | None, n_classes: int) -> np.ndarray:
    """Indices of the last k images of each class, in dataset order: the validation split. Refused
    in one line when it leaves a class no training image, or fewer than `train_per_class`."""
    keep = np.zeros(len(y), dtype=bool)
    for c in range(n_classes):
        idx = np.flatnonzero(y == c)
        if k and len(idx) - k < (train_per_class or 1):
            need = "no training image" if train_per_class is None else \
                f"fewer than data.train_per_class = {train_per_class}"
            raise SelError(f"params: data.val_per_class = {k} leaves class {c} {need}: it has "
                           f"{len(idx)} training images, {len(idx) - k} after the validation split")
        keep[idx[len(idx) - k:]] = True
    return np.flatnonzero(keep)


def subsample(data: Cifar, train_per_class: int | None, test_per_class: int | None,
              val_per_class: int = 0) -> Cifar:
    """The first k images of each class per split: a deterministic sample for quick runs. The
    validation split is cut first, from the end of each class, so the training images of a run
    with one are those of a run without it (as long as the class has enough)."""
    n = len(data.classes)
    va = last_per_class(data.y_train, val_per_class, train_per_class, n)
    rest = np.setdiff1d(np.arange(len(data.y_train)), va)
    tr = rest[first_per_class(data.y_train[rest], train_per_class, n, "data.train_per_class")]
    te = first_per_class(data.y_test, test_per_class, n, "data.test_per_class")
    return Cifar(data.x_train[tr], data.y_train[tr], data.x_test[te], data.y_test[te], data.classes,
                 data.x_train[va], data.y_train[va])


def held_out_indices(y_test: np.ndarray, per_class: int, n_classes: int) -> np.ndarray:
    """The held-out subset: the first `per_class` test images of each class (as the original)."""
    return first_per_class(y_test, per_class, n_classes, "data.held_out_per_class")
