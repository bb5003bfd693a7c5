"""Tiny CIFAR-10 look-alikes in the real on-disk formats, built by the tests themselves."""

import io
import pickle
import tarfile
from pathlib import Path

import numpy as np
from PIL import Image

CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


def make_arrays(train_per_class: int = 6, test_per_class: int = 4, seed: int = 0, classes=CLASSES):
    """Random uint8 images whose mean colour depends on the class (so a model can learn a
    little), labels in a shuffled but fixed order, as (x_train, y_train, x_test, y_test, classes)."""
    rng = np.random.default_rng(seed)

    def split(per_class):
        y = np.repeat(np.arange(len(classes)), per_class)
        rng.shuffle(y)
        base = (y[:, None, None, None] * 23 % 256).astype(np.int64)
        x = np.clip(base + rng.integers(-40, 40, (len(y), 32, 32, 3)), 0, 255).astype(np.uint8)
        return x, y.astype(np.int64)

    return (*split(train_per_class), *split(test_per_class), list(classes))


def _batch(x, y, label):
    return {"batch_label": label, "labels": [int(v) for v in y],
            "data": x.transpose(0, 3, 1, 2).reshape(len(x), -1).copy(),
            "filenames": [f"img_{i}.png" for i in range(len(y))]}


def python_layout_files(arrays) -> dict[str, bytes]:
    """The seven pickles of the official layout (five training batches, test, meta)."""
    x_train, y_train, x_test, y_test, classes = arrays
    files = {}
    for i, (xs, ys) in enumerate(zip(np.array_split(x_train, 5), np.array_split(y_train, 5)), 1):
        files[f"data_batch_{i}"] = pickle.dumps(_batch(xs, ys, f"training batch {i} of 5"), protocol=2)
    files["test_batch"] = pickle.dumps(_batch(x_test, y_test, "testing batch 1 of 1"), protocol=2)
    files["batches.meta"] = pickle.dumps({"label_names": list(classes), "num_vis": 3072}, protocol=2)
    return files


def write_tar(path: Path, files: dict[str, bytes], mode: str = "w:gz") -> Path:
    """A tar (gzip by default) holding `files` (name -> bytes)."""
    with tarfile.open(path, mode) as tar:
        for name, payload in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(payload)
            tar.addfile(info, io.BytesIO(payload))
    return path


def write_python_archive(path: Path, arrays, top: str = "cifar-10-batches-py") -> Path:
    files = python_layout_files(arrays)
    return write_tar(path, {f"{top}/{name}": payload for name, payload in files.items()})


def encode(img: np.ndarray, fmt: str = "png") -> bytes:
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, format="PNG" if fmt == "png" else "JPEG", quality=95)
    return buf.getvalue()


def class_folder_files(arrays, fmt: str = "png", top: str = "") -> dict[str, bytes]:
    """train/<class>/NNNN.<fmt> and test/<class>/NNNN.<fmt>, numbered in dataset order."""
    x_train, y_train, x_test, y_test, classes = arrays
    files = {}
    for split, x, y in (("train", x_train, y_train), ("test", x_test, y_test)):
        for c, name in enumerate(classes):
            for k, i in enumerate(np.flatnonzero(y == c)):
                files[f"{top}{split}/{name}/{k:04d}.{fmt}"] = encode(x[i], fmt)
    return files


def write_class_folders(root: Path, arrays, fmt: str = "png") -> Path:
    for name, payload in class_folder_files(arrays, fmt).items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(payload)
    return root


def write_class_folder_tar(path: Path, arrays, fmt: str = "png", top: str = "cifar10/") -> Path:
    return write_tar(path, class_folder_files(arrays, fmt, top))
