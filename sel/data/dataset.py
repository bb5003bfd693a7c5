"""The canonical CIFAR-10 arrays every stage reads (`data/cifar10.npz`), and samples of them."""

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from sel.core.errors import SelError


@dataclass
class Cifar:
    """uint8 images (N, 32, 32, 3) in HWC order, int64 labels, class names in label order."""

    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    classes: list[str]

    def counts(self) -> dict:
        """Images per class and split, by class name."""
        return {split: {name: int((y == i).sum()) for i, name in enumerate(self.classes)}
                for split, y in (("train", self.y_train), ("test", self.y_test))}

    def save(self, path: Path) -> None:
        with open(path, "wb") as f:  # a file object: np.savez would append .npz to a name
            np.savez(f, x_train=self.x_train, y_train=self.y_train, x_test=self.x_test,
                     y_test=self.y_test, classes=np.array(self.classes))

    @classmethod
    def load(cls, path: str | Path) -> "Cifar":
        try:
            with np.load(path, allow_pickle=False) as z:
                return cls(z["x_train"], z["y_train"], z["x_test"], z["y_test"],
                           [str(c) for c in z["classes"]])
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


def subsample(data: Cifar, train_per_class: int | None, test_per_class: int | None) -> Cifar:
    """The first k images of each class per split: a deterministic sample for quick runs."""
    n = len(data.classes)
    tr = first_per_class(data.y_train, train_per_class, n, "data.train_per_class")
    te = first_per_class(data.y_test, test_per_class, n, "data.test_per_class")
    return Cifar(data.x_train[tr], data.y_train[tr], data.x_test[te], data.y_test[te], data.classes)


def held_out_indices(y_test: np.ndarray, per_class: int, n_classes: int) -> np.ndarray:
    """The held-out subset: the first `per_class` test images of each class (as the original)."""
    return first_per_class(y_test, per_class, n_classes, "data.held_out_per_class")
