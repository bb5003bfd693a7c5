"""The `download` stage and what it reads: every accepted source format against an independent
reader (torchvision for the python layout, the images themselves for class folders), md5 and
URL handling, every bad input failing with one line, and untrusted input refused unread."""

import gzip
import hashlib
import io
import json
import os
import pickle
import shlex
import socket
import stat
import struct
import subprocess
import sys
import tarfile
import zlib
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image
from torchvision.datasets import CIFAR10

from builders import (CLASSES, class_folder_files, encode, make_arrays, python_layout_files,
                      write_class_folder_tar, write_class_folders, write_python_archive, write_tar)
from sel.data.dataset import Cifar, subsample
from sel.core.errors import SelError
from sel.data import sources
from sel.data.sources import OFFICIAL_MD5, OFFICIAL_NAME, read_source

ROOT = Path(__file__).resolve().parents[1]
STAGE = ROOT / "pipeline" / "download.py"


# ---------------------------------------------------------------------------------------------
# helpers


def read(source, tmp_path: Path, md5=None):
    """read_source with the cache and the project root inside the test's own folder."""
    return read_source(str(source), md5, tmp_path / "cache", tmp_path)


def md5_of(path: Path) -> str:
    return hashlib.md5(Path(path).read_bytes()).hexdigest()


def sha256_of(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def fails(source, tmp_path: Path, md5=None) -> str:
    """The message of the SelError reading `source` raises; it must be one line."""
    with pytest.raises(SelError) as err:
        read(source, tmp_path, md5)
    message = str(err.value)
    assert message and "\n" not in message, message
    return message


def run_stage(workdir: Path, source, md5="auto", train_per_class=None, test_per_class=None,
              env=None, val_per_class=0) -> subprocess.CompletedProcess:
    """`python pipeline/download.py` in `workdir`, with the project's params.yaml there and its
    data section set as given."""
    workdir.mkdir(parents=True, exist_ok=True)
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    params["data"].update(source=str(source), md5=md5, train_per_class=train_per_class,
                          test_per_class=test_per_class, held_out_per_class=1, val_per_class=val_per_class)
    (workdir / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("DVC_")}
    full_env.update(env or {})
    return subprocess.run([sys.executable, str(STAGE)], cwd=workdir, env=full_env,
                          capture_output=True, text=True, timeout=120)


def leftovers(workdir: Path) -> list[str]:
    """Files under data/ but the download cache's finished files: outputs, partial or temporary."""
    data = workdir / "data"
    if not data.exists():
        return []
    return sorted(str(p.relative_to(workdir)) for p in data.rglob("*")
                  if not p.is_dir() and not (p.parent == data / "downloads" and not p.name.endswith(".part")))


def assert_stage_failed(out: subprocess.CompletedProcess, workdir: Path, *words: str) -> str:
    """Exit status 2, exactly one stderr line `error: ...` naming the problem, nothing in data/."""
    assert out.returncode == 2, (out.returncode, out.stdout, out.stderr)
    lines = out.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), out.stderr
    assert "Traceback" not in out.stderr
    for word in words:
        assert word in lines[0], (word, lines[0])
    assert "wrote" not in out.stdout
    assert leftovers(workdir) == []
    return lines[0]


def rgb(rng, base=None) -> np.ndarray:
    """A 32x32 RGB image: one colour (random unless given) with a little noise, so that JPEG
    keeps it close enough to be told apart from every other image."""
    base = rng.integers(20, 236, 3) if base is None else np.asarray(base)
    return np.clip(base + rng.integers(-12, 12, (32, 32, 3)), 0, 255).astype(np.uint8)


# ---------------------------------------------------------------------------------------------
# 1. the python layout, against torchvision


def test_python_archive_reads_exactly_what_torchvision_reads(tmp_path):
    classes = CLASSES[::-1]  # label order comes from batches.meta, not from sorting
    arrays = make_arrays(6, 4, seed=3, classes=classes)
    archive = write_python_archive(tmp_path / "tiny-python.tar.gz", arrays, top="tiny-batches-py")

    data, prov = read(archive, tmp_path, md5=md5_of(archive))

    extracted = tmp_path / "extracted"
    with tarfile.open(archive) as tar:
        tar.extractall(extracted, filter="data")
    folder = extracted / "tiny-batches-py"
    train_files = [[f"data_batch_{i}", md5_of(folder / f"data_batch_{i}")] for i in range(1, 6)]
    test_files = [["test_batch", md5_of(folder / "test_batch")]]
    meta_file = {"filename": "batches.meta", "key": "label_names", "md5": md5_of(folder / "batches.meta")}

    class TinyCIFAR10(CIFAR10):
        base_folder = "tiny-batches-py"
        train_list = train_files
        test_list = test_files
        meta = meta_file

    tv_train = TinyCIFAR10(str(extracted), train=True, download=False)
    tv_test = TinyCIFAR10(str(extracted), train=False, download=False)

    assert data.classes == tv_train.classes == tv_test.classes == classes
    assert data.x_train.dtype == tv_train.data.dtype == np.uint8
    assert data.x_test.dtype == tv_test.data.dtype == np.uint8
    assert data.y_train.dtype == data.y_test.dtype == np.int64
    assert data.x_train.shape == (60, 32, 32, 3) and data.x_test.shape == (40, 32, 32, 3)
    np.testing.assert_array_equal(data.x_train, tv_train.data)
    np.testing.assert_array_equal(data.y_train, np.asarray(tv_train.targets, dtype=np.int64))
    np.testing.assert_array_equal(data.x_test, tv_test.data)
    np.testing.assert_array_equal(data.y_test, np.asarray(tv_test.targets, dtype=np.int64))
    # and both are the arrays the archive was built from
    np.testing.assert_array_equal(data.x_train, arrays[0])
    np.testing.assert_array_equal(data.y_test, arrays[3])
    assert (prov.kind, prov.variant) == ("python-archive", "python-archive:tiny-python.tar.gz")
    assert prov.md5_verified and prov.md5 == md5_of(archive) and prov.sha256 == sha256_of(archive)


def test_python_archive_without_top_folder_and_uncompressed(tmp_path):
    arrays = make_arrays(2, 1, seed=5)
    archive = write_tar(tmp_path / "flat.tar", python_layout_files(arrays), mode="w")
    data, prov = read(archive, tmp_path)
    np.testing.assert_array_equal(data.x_train, arrays[0])
    np.testing.assert_array_equal(data.y_train, arrays[1])
    np.testing.assert_array_equal(data.x_test, arrays[2])
    assert data.classes == CLASSES and prov.kind == "python-archive"


# ---------------------------------------------------------------------------------------------
# 2. class folders


FOLDER_COUNTS = {"train": {"truck": 3, "cat": 1, "airplane": 2}, "test": {"truck": 1, "cat": 2, "airplane": 1}}


def folder_source(tmp_path: Path, container: str, fmt: str, top: str):
    """Class folders with unsorted class names, uneven counts, file names whose sorted order is
    not the order they were written in, and a few files that are not images to be ignored.
    Returns (source, expected (x_train, y_train, x_test, y_test), classes)."""
    rng = np.random.default_rng(7)
    classes = sorted(FOLDER_COUNTS["train"])
    files, expected = {}, {}
    for split, counts in FOLDER_COUNTS.items():
        per_class = []
        for name in classes:  # names like "q3.png": written in random order, read sorted
            names = sorted(f"{chr(97 + int(rng.integers(26)))}{k}.{fmt}" for k in range(counts[name]))
            images = {n: rgb(rng) for n in names}
            for n in rng.permutation(names):
                files[f"{top}{split}/{name}/{n}"] = encode(images[n], fmt)
            per_class.append([images[n] for n in sorted(names)])
        order = [(i, c) for i in range(3) for c in range(len(classes)) if i < len(per_class[c])]
        expected[split] = (np.stack([per_class[c][i] for i, c in order]),
                           np.array([c for _, c in order], dtype=np.int64))
    files[f"{top}README.txt"] = b"not an image"
    files[f"{top}train/cat/._{'a0'}.{fmt}"] = b"AppleDouble junk, hidden"
    files = dict(sorted(files.items(), key=lambda kv: rng.random()))  # members in random order
    if container == "dir":
        source = tmp_path / "folders"
        for name, payload in files.items():
            (source / name).parent.mkdir(parents=True, exist_ok=True)
            (source / name).write_bytes(payload)
    else:
        source = write_tar(tmp_path / f"folders.{container}", files, "w:gz" if container == "tar.gz" else "w")
    return source, (*expected["train"], *expected["test"]), classes


@pytest.mark.parametrize("top", ["", "cifar10-images/"], ids=["no-top", "top"])
@pytest.mark.parametrize("container", ["dir", "tar", "tar.gz"])
@pytest.mark.parametrize("fmt", ["png", "jpg"])
def test_class_folders(tmp_path, fmt, container, top):
    source, (x_train, y_train, x_test, y_test), classes = folder_source(tmp_path, container, fmt, top)
    data, prov = read(source, tmp_path)

    assert data.classes == ["airplane", "cat", "truck"]
    # round robin over sorted classes: image 0 of every class, then image 1, ... (uneven counts)
    np.testing.assert_array_equal(data.y_train, [0, 1, 2, 0, 2, 2])
    np.testing.assert_array_equal(data.y_test, [0, 1, 2, 1])
    np.testing.assert_array_equal(data.y_train, y_train)
    np.testing.assert_array_equal(data.y_test, y_test)
    assert data.x_train.shape == x_train.shape and data.x_test.shape == x_test.shape
    assert data.x_train.dtype == np.uint8 and data.y_train.dtype == np.int64
    if fmt == "png":
        np.testing.assert_array_equal(data.x_train, x_train)
        np.testing.assert_array_equal(data.x_test, x_test)
    else:  # lossy: each decoded image is nearest to the one expected at its place
        for got, want in ((data.x_train, x_train), (data.x_test, x_test)):
            dist = np.abs(got[:, None].astype(int) - want[None].astype(int)).mean(axis=(2, 3, 4))
            np.testing.assert_array_equal(dist.argmin(axis=1), np.arange(len(want)))
    assert prov.kind == "class-folders"
    assert prov.variant == f"class-folders:{Path(source).name}"
    assert len(prov.sha256) == 64 and not prov.md5_verified
    if container != "dir":
        assert prov.md5 == md5_of(source) and prov.sha256 == sha256_of(source)


def test_class_folder_directory_digest_follows_contents(tmp_path):
    arrays = make_arrays(2, 1)
    first = write_class_folders(tmp_path / "a", arrays)
    second = write_class_folders(tmp_path / "b", arrays)
    _, p1 = read(first, tmp_path)
    _, p2 = read(second, tmp_path)
    assert p1.sha256 == p2.sha256 and p1.md5 is None
    (second / "train" / "cat" / "0000.png").write_bytes(encode(arrays[0][-1]))
    _, p3 = read(second, tmp_path)
    assert p3.sha256 != p1.sha256


def test_builders_class_folder_tar_matches_its_arrays(tmp_path):
    """The builders' own layout (numbered files in dataset order) reads back to the per-class
    order of the arrays it was made from."""
    arrays = make_arrays(3, 2, seed=11)
    data, _ = read(write_class_folder_tar(tmp_path / "t.tar.gz", arrays), tmp_path)
    for x, y, got_x, got_y in ((arrays[0], arrays[1], data.x_train, data.y_train),
                               (arrays[2], arrays[3], data.x_test, data.y_test)):
        for c in range(len(CLASSES)):
            np.testing.assert_array_equal(got_x[got_y == c], x[y == c])


# ---------------------------------------------------------------------------------------------
# 3. the stage end to end, and subsampling


def test_stage_writes_arrays_and_manifest(tmp_path):
    arrays = make_arrays(6, 4, seed=1)
    (tmp_path / "src").mkdir()
    archive = write_class_folder_tar(tmp_path / "src" / "tiny.tar.gz", arrays)
    work = tmp_path / "work"
    out = run_stage(work, archive)
    assert out.returncode == 0, out.stderr
    assert "wrote data/cifar10.npz: 60 train, 40 test images" in out.stdout
    assert sorted(os.listdir(work / "data")) == ["cifar10.json", "cifar10.npz"]

    full, _ = read(archive, tmp_path)
    saved = Cifar.load(work / "data" / "cifar10.npz")
    for key in ("x_train", "y_train", "x_test", "y_test"):
        np.testing.assert_array_equal(getattr(saved, key), getattr(full, key))
        assert getattr(saved, key).dtype == getattr(full, key).dtype
    assert saved.classes == CLASSES

    manifest = json.loads((work / "data" / "cifar10.json").read_text())
    assert manifest["counts"] == manifest["available"] == {
        "train": {c: 6 for c in CLASSES}, "test": {c: 4 for c in CLASSES}}
    assert manifest["sha256"] == sha256_of(archive) and manifest["md5"] == md5_of(archive)
    assert manifest["kind"] == "class-folders" and manifest["variant"] == "class-folders:tiny.tar.gz"
    assert manifest["source"] == str(archive) and manifest["md5_verified"] is False
    assert manifest["classes"] == CLASSES

    # subsampled: the first k of each class in dataset order, the same on every run
    out = run_stage(work, archive, train_per_class=2, test_per_class=3)
    assert out.returncode == 0, out.stderr
    small = Cifar.load(work / "data" / "cifar10.npz")
    manifest = json.loads((work / "data" / "cifar10.json").read_text())
    assert manifest["counts"] == {"train": {c: 2 for c in CLASSES}, "test": {c: 3 for c in CLASSES}}
    assert manifest["available"] == {"train": {c: 6 for c in CLASSES}, "test": {c: 4 for c in CLASSES}}
    assert (manifest["train_per_class"], manifest["test_per_class"]) == (2, 3)
    for x, y, full_x, full_y, k in ((small.x_train, small.y_train, full.x_train, full.y_train, 2),
                                    (small.x_test, small.y_test, full.x_test, full.y_test, 3)):
        keep = np.sort(np.concatenate([np.flatnonzero(full_y == c)[:k] for c in range(10)]))
        np.testing.assert_array_equal(x, full_x[keep])
        np.testing.assert_array_equal(y, full_y[keep])
    again = run_stage(tmp_path / "work2", archive, train_per_class=2, test_per_class=3)
    assert again.returncode == 0, again.stderr
    repeat = Cifar.load(tmp_path / "work2" / "data" / "cifar10.npz")
    np.testing.assert_array_equal(repeat.x_train, small.x_train)
    np.testing.assert_array_equal(repeat.y_test, small.y_test)
    assert sorted(os.listdir(work / "data")) == ["cifar10.json", "cifar10.npz"]


def test_stage_resolves_relative_source_from_dvc_root(tmp_path):
    root, copy = tmp_path / "root", tmp_path / "temp-copy"
    root.mkdir()
    write_class_folder_tar(root / "tiny.tar.gz", make_arrays(2, 1))
    out = run_stage(copy, "tiny.tar.gz", env={"DVC_ROOT": str(root)})
    assert out.returncode == 0, out.stderr
    assert (copy / "data" / "cifar10.npz").is_file() and not (root / "data").exists()
    # without DVC_ROOT the same relative path is taken from the working directory: not there
    out = run_stage(copy, "tiny.tar.gz")
    assert out.returncode == 2 and "no such file or folder" in out.stderr


def test_subsample_keeps_the_first_k_per_class_in_order():
    y = np.array([2, 0, 1, 0, 2, 1, 1, 0, 2])
    x = np.arange(len(y) * 3072, dtype=np.int64).astype(np.uint8).reshape(-1, 32, 32, 3)
    data = Cifar(x, y, x[:6], y[:6], ["a", "b", "c"])
    small = subsample(data, 2, 1)
    np.testing.assert_array_equal(small.y_train, [2, 0, 1, 0, 2, 1])
    np.testing.assert_array_equal(small.x_train, x[[0, 1, 2, 3, 4, 5]])
    np.testing.assert_array_equal(small.y_test, [2, 0, 1])
    assert subsample(data, None, None).y_train.tolist() == y.tolist()
    with pytest.raises(SelError, match=r"data.train_per_class = 4 is larger than the data"):
        subsample(data, 4, 1)
    with pytest.raises(SelError, match=r"data.test_per_class = 3 is larger than the data"):
        subsample(data, 1, 3)


def test_the_validation_split_is_the_last_k_of_each_class_and_never_trained_on():
    """Cut from the end of each class before train_per_class takes the first of the rest, so
    the training images are those of a run without a split; no validation image is trained on."""
    data = Cifar(*make_arrays(6, 2, seed=3))
    split = subsample(data, 3, None, 2)
    for c in range(len(CLASSES)):
        of_class = np.flatnonzero(data.y_train == c)
        np.testing.assert_array_equal(split.x_val[split.y_val == c], data.x_train[of_class[4:]])
        np.testing.assert_array_equal(split.x_train[split.y_train == c], data.x_train[of_class[:3]])
    np.testing.assert_array_equal(split.x_train, subsample(data, 3, None).x_train)
    trained = {x.tobytes() for x in split.x_train}
    assert len(split.y_val) == 20 and not any(x.tobytes() in trained for x in split.x_val)
    assert len(subsample(data, None, None, 2).y_train) == 40  # all the rest
    assert len(subsample(data, None, None).y_val) == 0


def test_stage_writes_the_validation_split_and_refuses_one_too_large(tmp_path):
    archive = write_class_folder_tar(tmp_path / "tiny.tar.gz", make_arrays(6, 4))
    work = tmp_path / "work"
    out = run_stage(work, archive, train_per_class=4, val_per_class=2)
    assert out.returncode == 0, out.stderr
    assert "40 train, 20 validation, 40 test images" in out.stdout
    saved = Cifar.load(work / "data" / "cifar10.npz")
    assert (len(saved.y_train), len(saved.y_val)) == (40, 20)
    manifest = json.loads((work / "data" / "cifar10.json").read_text())
    assert manifest["counts"]["val"] == {c: 2 for c in CLASSES} and manifest["val_per_class"] == 2
    assert_stage_failed(run_stage(tmp_path / "w2", archive, train_per_class=5, val_per_class=2), tmp_path / "w2",
                        "error: params: data.val_per_class = 2 leaves class 0 fewer than "
                        "data.train_per_class = 5: it has 6 training images, 4 after the validation split")
    assert_stage_failed(run_stage(tmp_path / "w3", archive, val_per_class=6), tmp_path / "w3",
                        "error: params: data.val_per_class = 6 leaves class 0 no training image: it has "
                        "6 training images, 0 after the validation split")


def test_an_npz_without_a_validation_split_loads_with_an_empty_one(tmp_path):
    x, y, xt, yt, classes = make_arrays(2, 1)
    with open(tmp_path / "old.npz", "wb") as f:
        np.savez(f, x_train=x, y_train=y, x_test=xt, y_test=yt, classes=np.array(classes))
    old = Cifar.load(tmp_path / "old.npz")
    assert old.x_val.shape == (0, 32, 32, 3) and len(old.y_val) == 0 and "val" not in old.counts()


# ---------------------------------------------------------------------------------------------
# 4. md5


def test_md5_auto_checks_the_official_name_only(tmp_path):
    arrays = make_arrays(2, 1)
    official = write_python_archive(tmp_path / OFFICIAL_NAME, arrays)
    message = fails(official, tmp_path, md5="auto")
    assert "md5" in message and OFFICIAL_MD5 in message and md5_of(official) in message
    # auto under any other name: no check, and recorded as unverified
    other = write_python_archive(tmp_path / "mine.tar.gz", arrays)
    _, prov = read(other, tmp_path, md5="auto")
    assert not prov.md5_verified and prov.variant == "python-archive:mine.tar.gz"


def test_md5_explicit_and_null(tmp_path):
    official = write_python_archive(tmp_path / OFFICIAL_NAME, make_arrays(2, 1))
    good = md5_of(official)

    data, prov = read(official, tmp_path, md5=good.upper())
    assert prov.md5_verified and prov.md5 == good and len(data.y_train) == 20
    assert prov.variant == "python-archive:" + OFFICIAL_NAME  # only the real md5 is "official"

    message = fails(official, tmp_path, md5="0123456789abcdef0123456789abcdef")
    assert "md5" in message and "0123456789abcdef0123456789abcdef" in message and good in message

    _, prov = read(official, tmp_path, md5=None)
    assert not prov.md5_verified and prov.md5 == good and prov.sha256 == sha256_of(official)


def test_md5_null_in_the_stage_records_sha256(tmp_path):
    official = write_python_archive(tmp_path / OFFICIAL_NAME, make_arrays(2, 1))
    out = run_stage(tmp_path / "work", official, md5=None)
    assert out.returncode == 0, out.stderr
    manifest = json.loads((tmp_path / "work" / "data" / "cifar10.json").read_text())
    assert manifest["sha256"] == sha256_of(official) and manifest["md5_verified"] is False


def test_md5_on_a_folder_is_not_claimed_verified(tmp_path):
    folder = write_class_folders(tmp_path / "f", make_arrays(2, 1))
    _, prov = read(folder, tmp_path, md5="0123456789abcdef0123456789abcdef")
    assert prov.md5 is None and not prov.md5_verified


# ---------------------------------------------------------------------------------------------
# 5. URLs


@pytest.fixture
def no_proxy(monkeypatch):
    for key in list(os.environ):
        if key.lower() in {"http_proxy", "https_proxy", "ftp_proxy", "all_proxy", "no_proxy"}:
            monkeypatch.delenv(key)


def test_url_download_is_verified_cached_and_not_fetched_again(tmp_path, capsys):
    remote = tmp_path / "remote" / "tiny-cifar.tar.gz"
    remote.parent.mkdir()
    write_class_folder_tar(remote, make_arrays(2, 1))
    md5, url, cache = md5_of(remote), remote.as_uri(), tmp_path / "cache"

    first, prov = read_source(url, md5, cache, tmp_path)
    err = capsys.readouterr().err
    assert f"downloading {url}" in err and "downloaded 100.0%" in err
    assert sorted(os.listdir(cache)) == ["tiny-cifar.tar.gz"]
    assert (cache / "tiny-cifar.tar.gz").read_bytes() == remote.read_bytes()
    assert prov.md5_verified and prov.md5 == md5 and prov.source == url

    remote.unlink()  # the second read cannot fetch: it must come from the verified copy
    second, prov = read_source(url, md5, cache, tmp_path)
    err = capsys.readouterr().err
    assert "using the verified copy" in err and "downloading" not in err
    np.testing.assert_array_equal(second.x_train, first.x_train)
    assert prov.md5_verified

    # a cached copy that no longer matches is fetched again, here unreachable: a clear error
    (cache / "tiny-cifar.tar.gz").write_bytes(b"damaged")
    with pytest.raises(SelError, match="cannot reach"):
        read_source(url, md5, cache, tmp_path)
    assert "does not match its md5; downloading it again" in capsys.readouterr().err
    assert not list(cache.glob("*.part"))


def test_url_download_with_wrong_md5_is_not_kept(tmp_path):
    remote = write_class_folder_tar(tmp_path / "tiny.tar.gz", make_arrays(2, 1))
    with pytest.raises(SelError, match="md5"):
        read_source(remote.as_uri(), "0" * 32, tmp_path / "cache", tmp_path)
    assert os.listdir(tmp_path / "cache") == []


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_unreachable_url_says_how_to_run_offline(tmp_path, no_proxy):
    url = f"http://127.0.0.1:{closed_port()}/{OFFICIAL_NAME}"
    message = fails(url, tmp_path, md5="auto")
    assert f"cannot reach {url}" in message and "data.source" in message and OFFICIAL_NAME in message
    assert not list((tmp_path / "cache").glob("*"))


def test_malformed_url_is_one_line_too(tmp_path, no_proxy):
    url = f"http://127.0.0.1:notaport/{OFFICIAL_NAME}"
    assert f"cannot reach {url}" in fails(url, tmp_path, md5="auto")


def test_stage_unreachable_url_fails_cleanly(tmp_path, no_proxy):
    url = f"http://127.0.0.1:{closed_port()}/{OFFICIAL_NAME}"
    work = tmp_path / "work"
    out = run_stage(work, url)
    assert out.returncode == 2 and "Traceback" not in out.stderr
    errors = [line for line in out.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and out.stderr.splitlines()[-1] == errors[0]
    assert "cannot reach" in errors[0] and "data.source" in errors[0]
    assert leftovers(work) == [] and not list((work / "data" / "downloads").glob("*"))


# ---------------------------------------------------------------------------------------------
# 6. bad inputs: one line naming the problem, from read_source and from the stage


def small_arrays():
    return make_arrays(2, 1)


def _png_of(img_or_array) -> bytes:
    buf = io.BytesIO()
    img = img_or_array if isinstance(img_or_array, Image.Image) else Image.fromarray(img_or_array)
    img.save(buf, format="PNG")
    return buf.getvalue()


def _folders_with(tmp_path, change) -> Path:
    files = class_folder_files(small_arrays(), "png", "cifar10/")
    change(files)
    return write_tar(tmp_path / "bad.tar.gz", files)


def _truncated(tmp_path, mode):
    full = write_tar(tmp_path / "full.tar", class_folder_files(small_arrays()), mode)
    cut = tmp_path / ("cut.tar.gz" if mode == "w:gz" else "cut.tar")
    cut.write_bytes(full.read_bytes()[: full.stat().st_size // 2])
    return cut


def _cut_to(tmp_path, size):
    """A .tar.gz cut to its first `size` bytes: within the gzip header or the first block."""
    full = write_tar(tmp_path / "full.tar.gz", class_folder_files(small_arrays()))
    return _write_bytes(tmp_path, f"cut{size}.tar.gz", full.read_bytes()[:size])


def _bad_crc(tmp_path):
    """A .tar.gz whose every byte decompresses, but whose gzip trailer's CRC does not match."""
    payload = bytearray(write_tar(tmp_path / "full.tar.gz", class_folder_files(small_arrays())).read_bytes())
    payload[-8] ^= 0xFF  # the trailer: CRC-32, then the length
    return _write_bytes(tmp_path, "crc.tar.gz", bytes(payload))


def _cut_at_member(tmp_path):
    """An uncompressed tar cut exactly before a member's header: tarfile alone would take
    that for the end of the archive and silently lose the rest."""
    full = write_tar(tmp_path / "full.tar", class_folder_files(make_arrays(2, 2)), "w")
    with tarfile.open(full) as tar:
        offset = tar.getmembers()[-1].offset
    cut = tmp_path / "cut.tar"
    cut.write_bytes(full.read_bytes()[:offset])
    return cut


def _garbled_header(tmp_path):
    full = write_tar(tmp_path / "full.tar", class_folder_files(make_arrays(2, 2)), "w")
    with tarfile.open(full) as tar:
        offset = tar.getmembers()[-5].offset
    payload = bytearray(full.read_bytes())
    payload[offset:offset + 512] = bytes(range(256)) * 2
    bad = tmp_path / "garbled.tar.gz"
    bad.write_bytes(gzip.compress(bytes(payload)))
    return bad


def _python_with(tmp_path, change):
    files = python_layout_files(small_arrays())
    change(files)
    return write_tar(tmp_path / "py.tar.gz", {f"cifar-10-batches-py/{k}": v for k, v in files.items()})


def _replace_image(files, name, payload):
    files[name] = payload


def _drop(files, prefix):
    for name in [n for n in files if n.startswith(prefix)]:
        del files[name]


def _with_label_type(files, labels):
    entry = pickle.loads(files["data_batch_1"])
    entry["labels"] = labels
    files["data_batch_1"] = pickle.dumps(entry, protocol=2)


def _write_bytes(tmp_path, name, payload):
    (tmp_path / name).write_bytes(payload)
    return tmp_path / name


IMG = "cifar10/train/cat/0001.png"
rng0 = np.random.default_rng(0)

# id -> (build(tmp_path) -> (source, md5), words the message must hold)
BAD_INPUTS = {
    "md5-mismatch": (lambda t: (write_class_folder_tar(t / "ok.tar.gz", small_arrays()), "0" * 32),
                     ["md5", "0" * 32]),
    "truncated-tar-gz": (lambda t: (_truncated(t, "w:gz"), None), ["truncated"]),
    "truncated-tar": (lambda t: (_truncated(t, "w"), None), ["truncated"]),
    "tar-cut-at-member": (lambda t: (_cut_at_member(t), None), ["truncated"]),
    **{f"tar-gz-cut-to-{n}": (lambda t, n=n: (_cut_to(t, n), None), [f"cut{n}.tar.gz", "truncated", "EOFError"])
       for n in (10, 30, 100)},
    "tar-gz-crc-mismatch": (lambda t: (_bad_crc(t), None), ["crc.tar.gz", "corrupt", "CRC check failed"]),
    "garbled-header": (lambda t: (_garbled_header(t), None), ["corrupt"]),
    "garbage": (lambda t: (_write_bytes(t, "garbage.tar.gz", rng0.bytes(5000)), None),
                ["not a tar archive"]),
    "gzip-of-garbage": (lambda t: (_write_bytes(t, "gz.tar.gz", gzip.compress(rng0.bytes(5000))), None),
                        ["not a tar archive"]),
    "neither-layout": (lambda t: (write_tar(t / "other.tar.gz", {"docs/readme.txt": b"hi",
                                                                 "pics/a/b/c.png": _png_of(rgb(rng0))}), None),
                       ["neither a python-layout", "class folders"]),
    "missing-class-folder": (lambda t: (_folders_with(t, lambda f: _drop(f, "cifar10/test/cat/")), None),
                             ["missing class folder test/cat"]),
    "image-31x32": (lambda t: (_folders_with(t, lambda f: _replace_image(
        f, IMG, _png_of(np.zeros((32, 31, 3), np.uint8)))), None), [IMG, "31x32", "expected 32x32 RGB"]),
    "image-grayscale": (lambda t: (_folders_with(t, lambda f: _replace_image(
        f, IMG, _png_of(Image.new("L", (32, 32))))), None), [IMG, "32x32 L", "expected 32x32 RGB"]),
    "image-rgba": (lambda t: (_folders_with(t, lambda f: _replace_image(
        f, IMG, _png_of(Image.new("RGBA", (32, 32))))), None), [IMG, "RGBA", "expected 32x32 RGB"]),
    "image-not-decoding": (lambda t: (_folders_with(t, lambda f: _replace_image(
        f, IMG, b"\x89PNG garbage, not an image")), None), [IMG, "does not decode"]),
    "image-decompression-bomb": (lambda t: (_folders_with(t, lambda f: _replace_image(
        f, IMG, _png_header_claiming(30000, 30000))), None), [IMG, "does not decode", "decompression bomb"]),
    # over PIL's warning limit, under its error limit: an error here too, not a warning and a decode
    "image-decompression-bomb-warning": (lambda t: (_folders_with(t, lambda f: _replace_image(
        f, IMG, _png_header_claiming(10000, 10000))), None), [IMG, "does not decode", "decompression bomb"]),
    # refused by its header's size: the data (which would not fill it) is never decoded
    "image-too-large-by-header": (lambda t: (_folders_with(t, lambda f: _replace_image(
        f, IMG, _png_header_claiming(2000, 2000))), None), [IMG, "2000x2000", "expected 32x32 RGB"]),
    "empty-test-split": (lambda t: (_folders_with(t, lambda f: _drop(f, "cifar10/test/")), None),
                         ["test split is empty"]),
    "two-top-folders": (lambda t: (_folders_with(t, lambda f: f.update(
        {"other/train/cat/0000.png": f[IMG]})), None), ["at most one top folder"]),
    "duplicate-member": (lambda t: (write_tar(t / "dup.tar", {
        **class_folder_files(small_arrays()), "./train/cat/0000.png": _png_of(rgb(rng0))}, "w"), None),
        ["train/cat", "more than once"]),
    "missing-batch": (lambda t: (_python_with(t, lambda f: f.pop("data_batch_3")), None),
                      ["lacks data_batch_3"]),
    "batch-not-a-pickle": (lambda t: (_python_with(t, lambda f: f.update(test_batch=b"\x80\x02garbage")), None),
                           ["cannot read test_batch", "not a valid CIFAR pickle"]),
    "batch-labels-not-numbers": (lambda t: (_python_with(t, lambda f: _with_label_type(f, ["x"] * 4)), None),
                                 ["cannot read data_batch_1", "labels"]),
    "batch-labels-not-a-list": (lambda t: (_python_with(t, lambda f: _with_label_type(f, 7)), None),
                                ["cannot read data_batch_1", "labels"]),
    "no-such-source": (lambda t: (t / "nowhere" / "cifar.tar.gz", None), ["no such file or folder", "nowhere"]),
    # class names become MLflow keys (`class_acc/<class>`) and reach the results page
    "label-names-mlflow-refuses": (lambda t: (_python_of_classes(t, CLASSES[:9] + ["<script>alert(1)</script>"]), None),
                                   ["batches.meta label_names: '<script>alert(1)</script>' is not a valid name"]),
    "label-names-repeated": (lambda t: (_python_of_classes(t, ["cat"] * 10), None),
                             ["batches.meta label_names: 'cat' appears more than once"]),
    "class-folder-name": (lambda t: (write_class_folder_tar(t / "c.tar.gz", make_arrays(2, 1, classes=CLASSES[:9] + [
        "sea lion"])), None), ["class folder: 'sea lion' is not a valid name"]),
}


def _python_of_classes(tmp_path, classes):
    return write_python_archive(tmp_path / "py.tar.gz", make_arrays(2, 1, classes=classes))

def _png_header_claiming(width: int, height: int) -> bytes:
    """A PNG whose header claims width x height (and whose data would not fill it)."""
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0")) + chunk(b"IEND", b"")


STAGE_CASES = ["md5-mismatch", "truncated-tar-gz", "tar-cut-at-member", "garbage", "gzip-of-garbage",
               "image-decompression-bomb-warning",
               "missing-class-folder", "image-31x32", "image-not-decoding", "empty-test-split",
               "missing-batch", "no-such-source", "duplicate-member", "batch-labels-not-a-list",
               "label-names-mlflow-refuses"]


@pytest.mark.parametrize("case", list(BAD_INPUTS))
def test_bad_input_is_one_line_naming_the_problem(tmp_path, case):
    build, words = BAD_INPUTS[case]
    source, md5 = build(tmp_path)
    message = fails(source, tmp_path, md5)
    for word in words:
        assert word in message, (word, message)


@pytest.mark.parametrize("case", STAGE_CASES)
def test_stage_bad_input_exits_2_with_one_line_and_no_outputs(tmp_path, case):
    build, words = BAD_INPUTS[case]
    (tmp_path / "src").mkdir()
    source, md5 = build(tmp_path / "src")
    work = tmp_path / "work"
    assert_stage_failed(run_stage(work, source, md5=md5), work, *words)


def _folders_without_cat(tmp_path, container, dirs, files) -> Path:
    """Class folders of every class but cat, plus the folders `dirs` and the files `files`: as a
    folder, as a tar made from it (a directory entry for each folder, as `tar cf` makes), or as
    a bare tar of the files only."""
    files = {**{n: b for n, b in class_folder_files(small_arrays()).items() if "/cat/" not in n}, **files}
    if container == "bare-tar":
        return write_tar(tmp_path / "classes.tar", files, "w")
    root = tmp_path / "cifar10"
    for name, payload in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(payload)
    for name in dirs:
        (root / name).mkdir(parents=True)
    if container == "dir":
        return root
    with tarfile.open(tmp_path / "classes.tar", "w") as tar:
        tar.add(root, arcname="cifar10")
    return tmp_path / "classes.tar"


@pytest.mark.parametrize("container,dirs,files,named", [
    ("tar", ["train/cat", "test/cat"], {}, "train/cat, test/cat"),
    ("dir", ["train/cat", "test/cat"], {}, "train/cat, test/cat"),
    ("tar", ["test/cat"], {"train/cat/0000.png": encode(np.zeros((32, 32, 3), np.uint8))}, "test/cat"),
    ("bare-tar", [], {"train/cat/notes.txt": b"", "test/cat/notes.txt": b""}, "train/cat, test/cat"),
], ids=["empty-in-both", "empty-in-both-folder", "empty-in-test", "only-other-files"])
def test_empty_class_folder_is_refused_not_dropped(tmp_path, container, dirs, files, named):
    """An empty class folder would otherwise silently give 9 classes, or a class one split lacks."""
    message = fails(_folders_without_cat(tmp_path, container, dirs, files), tmp_path)
    assert f"no images in class folder(s) {named};" in message, message


def test_junk_folders_are_not_empty_classes(tmp_path):
    """Hidden folders, and folders beside the data (macOS's __MACOSX/, an emptied old copy),
    are neither classes nor empty ones."""
    root = write_class_folders(tmp_path / "cifar10", small_arrays())
    (root / "train" / ".ipynb_checkpoints").mkdir()
    (root / "__MACOSX" / "train" / "cat").mkdir(parents=True)
    (root / "__MACOSX" / "train" / "cat" / "._0000.png").write_bytes(b"AppleDouble")
    (root / "old" / "test" / "kitten").mkdir(parents=True)
    with tarfile.open(tmp_path / "junk.tar", "w") as tar:
        tar.add(root, arcname="cifar10")
    for source in (root, tmp_path / "junk.tar"):
        assert read(source, tmp_path)[0].classes == CLASSES


def test_stage_sample_size_larger_than_the_data(tmp_path):
    archive = write_class_folder_tar(tmp_path / "tiny.tar.gz", make_arrays(6, 4))
    work = tmp_path / "work"
    assert_stage_failed(run_stage(work, archive, train_per_class=7), work,
                        "data.train_per_class = 7 is larger than the data")
    assert_stage_failed(run_stage(work, archive, train_per_class=6, test_per_class=5), work,
                        "data.test_per_class = 5 is larger than the data")


def test_stage_failure_leaves_earlier_outputs_untouched_and_no_partials(tmp_path):
    """A failing re-run (here: a sample too large) neither removes nor half-writes the outputs
    of the last good run."""
    archive = write_class_folder_tar(tmp_path / "tiny.tar.gz", make_arrays(3, 2))
    work = tmp_path / "work"
    assert run_stage(work, archive).returncode == 0
    before = {p: (work / "data" / p).read_bytes() for p in ("cifar10.npz", "cifar10.json")}
    out = run_stage(work, archive, train_per_class=4)
    assert out.returncode == 2 and out.stderr.startswith("error: ")
    assert sorted(os.listdir(work / "data")) == ["cifar10.json", "cifar10.npz"]
    assert {p: (work / "data" / p).read_bytes() for p in before} == before


# ---------------------------------------------------------------------------------------------
# 7. untrusted input


class Evil:
    """Pickles to a call of `func(*args)`, run by any plain pickle.load."""

    def __init__(self, func, args):
        self.func, self.args = func, args

    def __reduce__(self):
        return self.func, self.args


def evil_call(kind: str, marker: Path):
    import builtins

    if kind == "os.system":
        return Evil(os.system, (f"touch {shlex.quote(str(marker))}",))
    if kind == "builtins.eval":
        return Evil(builtins.eval, (f"open({str(marker)!r}, 'w').close()",))
    if kind == "subprocess.Popen":
        return Evil(subprocess.Popen, (["touch", str(marker)],))
    raise ValueError(kind)


def evil_batch(kind: str, marker: Path, where: str) -> bytes:
    call = evil_call(kind, marker)
    if where == "whole":
        return pickle.dumps(call, protocol=2)
    entry = pickle.loads(python_layout_files(small_arrays())["data_batch_1"])
    entry["labels"] = call
    return pickle.dumps(entry, protocol=2)


@pytest.mark.parametrize("where", ["whole", "inside"])
@pytest.mark.parametrize("kind", ["os.system", "builtins.eval", "subprocess.Popen"])
def test_malicious_pickle_is_refused_without_running(tmp_path, kind, where):
    # the payload is real: plain pickle runs it
    control = tmp_path / "control-marker"
    loaded = pickle.loads(evil_batch(kind, control, where))
    loaded = loaded["labels"] if isinstance(loaded, dict) else loaded
    if isinstance(loaded, subprocess.Popen):
        loaded.wait()
    assert control.exists()

    marker = tmp_path / "marker"
    files = python_layout_files(small_arrays())
    files["data_batch_1"] = evil_batch(kind, marker, where)
    archive = write_tar(tmp_path / "evil.tar.gz", {f"cifar-10-batches-py/{k}": v for k, v in files.items()})
    message = fails(archive, tmp_path)
    assert "refusing to unpickle data_batch_1" in message and "malicious" in message
    assert kind.split(".")[1] in message  # names what it asked for
    assert not marker.exists()


def test_stage_malicious_pickle_exits_2_and_runs_nothing(tmp_path):
    marker = tmp_path / "marker"
    files = python_layout_files(small_arrays())
    files["test_batch"] = evil_batch("os.system", marker, "inside")
    archive = write_tar(tmp_path / "evil.tar.gz", files)
    work = tmp_path / "work"
    assert_stage_failed(run_stage(work, archive), work, "refusing to unpickle test_batch")
    assert not marker.exists()


def tar_with(path: Path, extra: list[tarfile.TarInfo], payloads: dict | None = None) -> Path:
    """A valid class-folder tar plus `extra` members (links, odd names)."""
    with tarfile.open(path, "w") as tar:
        for name, payload in class_folder_files(small_arrays()).items():
            info = tarfile.TarInfo(name)
            info.size = len(payload)
            tar.addfile(info, io.BytesIO(payload))
        for info in extra:
            payload = (payloads or {}).get(info.name, b"")
            info.size = len(payload) if info.isfile() else 0
            tar.addfile(info, io.BytesIO(payload) if info.isfile() else None)
    return path


def member(name, kind=tarfile.REGTYPE, linkname=""):
    info = tarfile.TarInfo(name)
    info.type, info.linkname = kind, linkname
    return info


@pytest.mark.parametrize("name", ["../escape.png", "train/cat/../../../escape.png", "train/../escape.png",
                                  "ABSOLUTE"])
def test_tar_member_escaping_is_refused(tmp_path, name):
    work = tmp_path / "deep" / "work"
    work.mkdir(parents=True)
    if name == "ABSOLUTE":
        name = str(tmp_path / "abs-escape.png")
    png = _png_of(rgb(rng0))
    archive = tar_with(work / "escape.tar", [member(name)], {name: png})
    message = fails(archive, work)
    assert "unsafe archive member refused" in message, message
    assert not list(tmp_path.rglob("*escape.png"))  # nothing written, inside or out
    assert not (tmp_path.parent / "escape.png").exists()


def test_dotdot_member_is_refused_by_name_before_decoding(tmp_path, monkeypatch):
    """`train/../0000.jpg` stays inside an extraction folder, so tarfile's data filter lets it
    through; read as class folders, it and `test/../0000.jpg` would make an 11th class `..`."""
    files = class_folder_files(small_arrays(), "jpg")
    files["train/../0000.jpg"] = files["test/../0000.jpg"] = files["train/cat/0000.jpg"]
    monkeypatch.setattr(sources, "_decode_all", lambda images: pytest.fail("decoded before refusing"))
    message = fails(write_tar(tmp_path / "dotdot.tar.gz", files), tmp_path)
    assert "unsafe archive member refused: 'train/../0000.jpg' contains '..'" in message, message


@pytest.mark.parametrize("name,kind,linkname,words", [
    ("evil", tarfile.SYMTYPE, "../../etc/passwd", ["unsafe archive member refused"]),
    ("train/cat/0009.png", tarfile.SYMTYPE, "../../../../etc/passwd", ["unsafe archive member refused"]),
    ("train/cat/0009.png", tarfile.SYMTYPE, "/etc/passwd", ["unsafe archive member refused"]),
    ("train/cat/0009.png", tarfile.LNKTYPE, "/etc/passwd", ["unsafe archive member refused"]),
    ("train/cat/0009.png", tarfile.SYMTYPE, "0000.png", ["is a link", "not read"]),
])
def test_tar_links_are_refused(tmp_path, name, kind, linkname, words):
    archive = tar_with(tmp_path / "links.tar", [member(name, kind, linkname)])
    message = fails(archive, tmp_path)
    for word in words:
        assert word in message, message


def test_tar_device_member_is_refused(tmp_path):
    archive = tar_with(tmp_path / "dev.tar", [member("train/cat/dev.png", tarfile.CHRTYPE)])
    assert "unsafe archive member refused" in fails(archive, tmp_path)


@pytest.mark.parametrize("what", ["file", "dir"])
def test_folder_symlink_leaving_the_folder_is_refused(tmp_path, what):
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.png").write_bytes(_png_of(rgb(rng0)))
    folder = write_class_folders(tmp_path / "folders", small_arrays())
    link = folder / "train" / "cat" / "0009.png" if what == "file" else folder / "train" / "extra"
    link.symlink_to(outside / "secret.png" if what == "file" else outside)
    message = fails(folder, tmp_path)
    assert "links outside the source folder" in message and link.name in message


def _special(path: Path, kind: str) -> None:
    if kind == "fifo":
        os.mkfifo(path)
    elif kind == "device":
        os.mknod(path, stat.S_IFCHR | 0o600, os.makedev(1, 3))  # /dev/null's numbers
    else:
        path.symlink_to("0000.png")  # a link that stays inside the folder


@pytest.mark.parametrize("kind, words", [("fifo", ["is a FIFO"]), ("device", ["is a character device"]),
                                         ("link", ["is a link; links are not read"])])
def test_folder_refuses_what_an_archive_refuses(tmp_path, kind, words):
    """A FIFO (refused unopened: opened, it would wait for a writer), a device, a link inside the
    folder: each refused in one line, as the same member of an archive is."""
    folder = write_class_folders(tmp_path / "folders", small_arrays())
    try:
        _special(folder / "train" / "cat" / "0009.png", kind)
    except PermissionError:
        pytest.skip(f"cannot make a {kind} here")
    message = fails(folder, tmp_path)
    for word in ["'train/cat/0009.png'", *words]:
        assert word in message, message


def test_images_decoded_in_worker_processes_are_those_decoded_here(tmp_path, monkeypatch):
    arrays = make_arrays(5, 2)
    archive = write_tar(tmp_path / "folders.tar.gz", class_folder_files(arrays, "png", "cifar10/"))
    here, _ = read(archive, tmp_path)
    monkeypatch.setattr(sources, "DECODE_CHUNK", 7)  # 70 images: 10 tasks over the worker processes
    monkeypatch.setattr(sources.os, "sched_getaffinity", lambda pid: {0, 1})
    in_workers, _ = read(archive, tmp_path)
    for field in ("x_train", "y_train", "x_test", "y_test"):
        assert np.array_equal(getattr(here, field), getattr(in_workers, field)), field
    assert here.classes == in_workers.classes and len(here.y_train) == 50


def test_an_image_failing_in_a_worker_process_is_named(tmp_path, monkeypatch):
    files = class_folder_files(make_arrays(5, 2), "png", "cifar10/")
    files["cifar10/train/dog/0003.png"] = b"\x89PNG garbage"
    archive = write_tar(tmp_path / "bad.tar.gz", files)
    monkeypatch.setattr(sources, "DECODE_CHUNK", 7)
    monkeypatch.setattr(sources.os, "sched_getaffinity", lambda pid: {0, 1})
    message = fails(archive, tmp_path)
    assert "train/dog/0003.png" in message and "does not decode" in message, message
