"""Read CIFAR-10 from any accepted source into the canonical arrays.

Sources: the official `cifar-10-python.tar.gz` (URL or path, md5-verified), any archive of the
same python-pickle layout, or class-folder images (`train/<class>/*`, `test/<class>/*`, under at
most one top folder) as a directory or a .tar/.tar.gz. Archives are read in one streaming pass,
never extracted, to the end of the file (a cut or altered one fails in one line); members that
would escape an extraction folder are refused all the same, and the pickles are read by an
unpickler that admits only what a CIFAR batch holds. A directory is held to an archive's rules:
links, FIFOs and devices in it are refused, not skipped or followed.
"""

import bz2
import gzip
import hashlib
import http.client
import io
import lzma
import os
import pickle
import stat
import sys
import tarfile
import time
from concurrent.futures import ProcessPoolExecutor
import urllib.error
import urllib.request
import warnings
import zlib
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import numpy as np
from PIL import Image, UnidentifiedImageError

from sel.data.dataset import Cifar, check_arrays
from sel.core.cli import shorten
from sel.core.errors import SelError
from sel.config.names import check_names

OFFICIAL_NAME = "cifar-10-python.tar.gz"
OFFICIAL_MD5 = "c58f30108f718f92721af3b95e74349a"
BATCH_FILES = tuple(f"data_batch_{i}" for i in range(1, 6)) + ("test_batch", "batches.meta")
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg"}
DECODE_CHUNK = 2048  # images per decoding task; a source of fewer decodes in this process
SPLITS = ("train", "test")


def is_url(source: str) -> bool:
    return source.split("://", 1)[0] in {"http", "https", "ftp", "file"} and "://" in source


def expected_md5(source: str, md5: str | None) -> str | None:
    """data.md5 resolved: `auto` means the official md5 for the official file name, else none."""
    if md5 == "auto":
        return OFFICIAL_MD5 if PurePosixPath(source).name == OFFICIAL_NAME else None
    return md5.lower() if md5 else None


def digests(path: Path) -> dict:
    """md5 (what the official archive publishes) and sha256 of a file, in one read."""
    md5, sha = hashlib.md5(), hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            md5.update(chunk)
            sha.update(chunk)
    return {"md5": md5.hexdigest(), "sha256": sha.hexdigest()}


def verify(path: Path, expected: str | None) -> dict:
    """Digests of `path`, raising when an expected md5 does not match."""
    found = digests(path)
    if expected and found["md5"] != expected:
        raise SelError(f"md5 of {path} is {found['md5']}, expected {expected}: the file is corrupt "
                       f"or not the one named (set data.md5=null to skip the check)")
    return found


def _progress(done: int, total: int, started: float) -> None:
    rate = done / max(time.monotonic() - started, 1e-9) / 2**20
    pct = f"{100 * done / total:5.1f}% of {total / 2**20:.0f} MiB" if total else f"{done / 2**20:.0f} MiB"
    print(f"  downloaded {pct} ({rate:.1f} MiB/s)", file=sys.stderr, flush=True)


def fetch(url: str, cache_dir: Path, md5: str | None) -> Path:
    """The file at `url`, downloaded into `cache_dir` unless a verified copy is already there."""
    dest = cache_dir / PurePosixPath(url.split("?", 1)[0]).name
    if dest.is_file() and md5:
        try:
            verify(dest, md5)
            print(f"using the verified copy {dest}", file=sys.stderr)
            return dest
        except SelError:
            print(f"{dest} does not match its md5; downloading it again", file=sys.stderr)
    cache_dir.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    print(f"downloading {url}", file=sys.stderr, flush=True)
    try:
        with urllib.request.urlopen(url, timeout=60) as r, open(part, "wb") as f:
            total, done, started, shown = int(r.headers.get("Content-Length") or 0), 0, time.monotonic(), 0.0
            while chunk := r.read(1 << 20):
                f.write(chunk)
                done += len(chunk)
                if time.monotonic() - shown > 2 or done == total:
                    _progress(done, total, started)
                    shown = time.monotonic()
        verify(part, md5)
    except (urllib.error.URLError, OSError, TimeoutError, ValueError, http.client.HTTPException) as e:
        part.unlink(missing_ok=True)
        raise SelError(f"cannot reach {url} ({getattr(e, 'reason', e)}); to run offline, copy "
                       f"{OFFICIAL_NAME} (or a class-folder copy) here and run with "
                       f"-S data.source=path/to/it") from None
    except SelError:
        part.unlink(missing_ok=True)
        raise
    os.replace(part, dest)
    return dest


class _BatchUnpickler(pickle.Unpickler):
    """Admits only the numpy pieces a CIFAR batch is made of; anything else is refused
    before it can be called, so a crafted pickle cannot run code."""

    ALLOWED = {(m, n) for m in ("numpy.core.multiarray", "numpy._core.multiarray")
               for n in ("_reconstruct", "scalar")} | {
        ("numpy", "ndarray"), ("numpy", "dtype"), ("_codecs", "encode"),
        ("numpy.core.numeric", "_frombuffer"), ("numpy._core.numeric", "_frombuffer")}

    def __init__(self, file, what):
        super().__init__(file, encoding="latin1")
        self.what = what

    def find_class(self, module, name):
        if (module, name) in self.ALLOWED:
            return super().find_class(module, name)
        raise SelError(f"refusing to unpickle {self.what}: it asks for {module}.{name}, "
                       f"which a CIFAR batch never holds (the file may be malicious)")


def _unpickle(payload: bytes, what: str) -> dict:
    try:
        entry = _BatchUnpickler(io.BytesIO(payload), what).load()
    except SelError:
        raise
    except Exception as e:  # any malformed pickle: EOF, bad opcode, bad numpy state
        raise SelError(f"cannot read {what}: not a valid CIFAR pickle ({type(e).__name__}: {e})") from None
    if not isinstance(entry, dict):
        raise SelError(f"cannot read {what}: expected a dict, found {type(entry).__name__}")
    return entry


def _batch_arrays(entry: dict, what: str) -> tuple[np.ndarray, np.ndarray]:
    data, labels = entry.get("data"), entry.get("labels", entry.get("fine_labels"))
    try:  # a crafted batch may hold anything as labels: a number, strings, nested lists
        labels = np.asarray(labels, dtype=np.int64)
    except (TypeError, ValueError, OverflowError):
        labels = None
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2 \
            or data.shape[1] != 3 * 32 * 32 or labels is None or labels.shape != (len(data),):
        raise SelError(f"cannot read {what}: expected 'data' uint8 (N, 3072) and N 'labels'")
    return data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1), labels


def _from_batches(files: dict, source: str) -> Cifar:
    missing = [f for f in BATCH_FILES if f not in files]
    if missing:
        raise SelError(f"{source}: python-layout archive lacks {', '.join(missing)}")
    meta = _unpickle(files["batches.meta"], "batches.meta")
    classes = meta.get("label_names")
    if not isinstance(classes, list) or not all(isinstance(c, str) for c in classes):
        raise SelError(f"{source}: batches.meta has no list of label_names")
    if len(classes) < 2:
        raise SelError(f"{source}: batches.meta label_names holds {len(classes)} name(s) "
                       f"({', '.join(map(shorten, classes)) or 'none'}); at least two classes are needed to classify")
    check_names(f"{source}: batches.meta label_names", classes)  # MLflow keys, the page: before the batches
    train = [_batch_arrays(_unpickle(files[f], f), f) for f in BATCH_FILES[:5]]
    x_test, y_test = _batch_arrays(_unpickle(files["test_batch"], "test_batch"), "test_batch")
    x_train = np.ascontiguousarray(np.concatenate([x for x, _ in train]))
    y_train = np.concatenate([y for _, y in train])
    return Cifar(x_train, y_train, np.ascontiguousarray(x_test), y_test, classes)


def _decode(payload: bytes, name: str) -> np.ndarray:
    """The size and mode are checked from the header, so that a wrong-sized image (a huge one
    included) is refused before it is decoded."""
    try:
        with Image.open(io.BytesIO(payload)) as img:
            if img.mode != "RGB" or img.size != (32, 32):
                raise SelError(f"image {name} is {img.size[0]}x{img.size[1]} {img.mode}, "
                               f"expected 32x32 RGB")
            img.load()
            return np.asarray(img, dtype=np.uint8)
    except (UnidentifiedImageError, Image.DecompressionBombError, Image.DecompressionBombWarning,
            OSError, SyntaxError, ValueError) as e:
        raise SelError(f"image {name} does not decode ({e})") from None


def _decode_chunk(chunk: list[tuple[bytes, str]]) -> np.ndarray:
    """PIL only warns of a header claiming a huge image (a decompression bomb); here that is an
    error, raised at Image.open, so the stage fails with one line rather than a warning too."""
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        return np.stack([_decode(payload, name) for payload, name in chunk])


def _decode_all(images: list[tuple[bytes, str]]) -> np.ndarray:
    """(N, 32, 32, 3) uint8 from N (payload, member name), decoded on every core this process
    may use (60,000 JPEGs: 28.6 s in one process on a 2-core Xeon)."""
    chunks = [images[i:i + DECODE_CHUNK] for i in range(0, len(images), DECODE_CHUNK)]
    workers = min(len(chunks), len(os.sched_getaffinity(0)))
    if workers <= 1:
        return np.concatenate([_decode_chunk(c) for c in chunks])
    with ProcessPoolExecutor(workers) as pool:
        return np.concatenate(list(pool.map(_decode_chunk, chunks)))


def _interleave(per_class: list[list[np.ndarray]]) -> tuple[np.ndarray, np.ndarray]:
    """Image 0 of every class, then image 1, ...: the first k images are class-balanced."""
    order = [(i, c) for i in range(max(map(len, per_class))) for c in range(len(per_class))
             if i < len(per_class[c])]
    x = np.stack([per_class[c][i] for i, c in order])
    return x, np.array([c for _, c in order], dtype=np.int64)


def _check_classes(images: dict, classes: list[str], source: str) -> None:
    """Every class needs images in both splits: an empty or missing class folder would
    otherwise drop its class silently (9 classes) or leave it out of one split."""
    if len(classes) < 2:
        raise SelError(f"{source}: {len(classes)} class folder(s) ({', '.join(classes) or 'none'}); "
                       f"at least two classes are needed to classify")
    for split in SPLITS:
        if not any(images.get(split, {}).values()):
            raise SelError(f"{source}: the {split} split is empty (no {split}/<class>/ images)")
    empty = [f"{split}/{cls}" for split in SPLITS for cls in classes if images[split].get(cls) == []]
    if empty:
        raise SelError(f"{source}: no images in class folder(s) {', '.join(empty)}; every class "
                       f"needs images in both train and test")
    for split in SPLITS:
        for cls in classes:
            if cls not in images[split]:
                other = "test" if split == "train" else "train"
                raise SelError(f"{source}: missing class folder {split}/{cls} ({other}/{cls} exists)")


def _from_folders(images: dict, source: str) -> Cifar:
    classes = sorted({cls for split in images.values() for cls in split})
    check_names(f"{source}: class folder", classes)  # before the images are decoded
    _check_classes(images, classes, source)
    members = [(split, cls) for split in SPLITS for cls in classes]
    decoded = iter(_decode_all([item for split, cls in members for _, item in images[split][cls]]))
    for split, cls in members:
        images[split][cls] = [(fname, next(decoded)) for fname, _ in images[split][cls]]
    arrays = {}
    for split in SPLITS:
        for cls in classes:
            names = [fname for fname, _ in images[split][cls]]
            if len(set(names)) != len(names):
                raise SelError(f"{source}: {split}/{cls} holds the same file name more than once")
        per_class = [[img for _, img in sorted(images[split][cls], key=lambda item: item[0])]
                     for cls in classes]
        arrays[split] = _interleave(per_class)
    return Cifar(*arrays["train"], *arrays["test"], classes)


def _class_folder(parts: tuple) -> tuple | None:
    """(top, split, class) when `parts` name a class folder, `split/class` under at most one top;
    hidden folders (.ipynb_checkpoints) are junk, not classes."""
    for top in ((), parts[:1]):
        rest = parts[len(top):]
        if len(rest) == 2 and rest[0] in SPLITS and not rest[1].startswith("."):
            return top, *rest
    return None


class _Layout:
    """Sorts the members of a source into pickle batches and class-folder images, in one pass."""

    def __init__(self, source: str):
        self.source, self.batches, self.images, self.tops, self.folders = source, {}, {}, set(), set()

    def add(self, name: str, read) -> None:
        parts = PurePosixPath(name).parts
        if parts[-1] in BATCH_FILES and len(parts) <= 2:
            self.batches[parts[-1]] = read()
            self.tops.add(parts[:-1])
        elif not parts[-1].startswith("."):  # hidden files (AppleDouble `._*`, .DS_Store) are junk
            found = self.add_folder(parts[:-1])  # any other file marks its class folder
            if found and PurePosixPath(name).suffix.lower() in IMAGE_SUFFIXES:
                top, split, cls = found
                self.images.setdefault(split, {}).setdefault(cls, []).append(
                    (parts[-1], (read(), name)))  # decoded all at once, in parallel, by build
                self.tops.add(top)

    def add_folder(self, parts: tuple) -> tuple | None:
        """Class folders are noted apart from their images, so that an empty one is refused
        rather than silently dropped."""
        found = _class_folder(parts)
        if found:
            self.folders.add(found)
        return found

    def build(self) -> tuple[Cifar, str]:
        if len(self.tops) > 1:
            shown = ", ".join(sorted("/".join(t) or "." for t in self.tops))
            raise SelError(f"{self.source}: expected the data under at most one top folder, found {shown}")
        if self.batches:
            return _from_batches(self.batches, self.source), "python-archive"
        if self.images:
            for top, split, cls in self.folders:
                if top in self.tops:  # not those beside the data, such as __MACOSX/train/cat
                    self.images.setdefault(split, {}).setdefault(cls, [])
            return _from_folders(self.images, self.source), "class-folders"
        raise SelError(f"{self.source} is neither a python-layout CIFAR archive "
                       f"({', '.join(BATCH_FILES)}) nor class folders (train/<class>/*, test/<class>/*)")


def _check_member(member: tarfile.TarInfo, source: str) -> None:
    """Refuse what extraction would refuse: absolute names, `..`, links leaving the archive,
    device files; links that stay inside are refused too, since they are not read."""
    if member.name.startswith("/"):  # data_filter would only strip the leading slash
        raise SelError(f"{source}: unsafe archive member refused: {member.name!r} is an absolute path")
    if ".." in PurePosixPath(member.name).parts:  # data_filter allows a `..` that stays inside
        raise SelError(f"{source}: unsafe archive member refused: {member.name!r} contains '..'")
    try:
        tarfile.data_filter(member, "/nonexistent-extraction-root")
    except tarfile.FilterError as e:
        raise SelError(f"{source}: unsafe archive member refused: {e}") from None
    if member.issym() or member.islnk():
        raise SelError(f"{source}: archive member {member.name!r} is a link; links are not read")


class _StrictTarInfo(tarfile.TarInfo):
    """tarfile silently ends an archive at a missing, cut or garbled header; only the
    end-of-archive marker (a zero block) may end it here, so a cut download is an error."""

    @classmethod
    def fromtarfile(cls, tarfile_):
        try:
            return super().fromtarfile(tarfile_)
        except tarfile.EOFHeaderError:
            raise
        except tarfile.HeaderError as e:
            raise tarfile.ReadError(f"no end-of-archive marker at {tarfile_.offset} ({e})") from None


# what a compressed archive starts with, and the module that reads it (checking its CRC at the end)
_DECOMPRESSORS = {b"\x1f\x8b": gzip.open, b"BZh": bz2.open, b"\xfd7zXZ\x00": lzma.open}


class _Damaged(Exception):
    """The compressed layer of an archive does not decompress: cut short, garbled, or its
    checksum (gzip's CRC) does not match."""


class _Decompressed:
    """The tar bytes of an archive file, through the decompressor its first bytes name (none for
    a plain .tar). tarfile's own stream reader never checks gzip's CRC; these modules do, at the
    end (see `drain`). Their errors come out as _Damaged, which tarfile passes on unchanged, so
    that a file that does not decompress is told apart from one that holds no tar."""

    def __init__(self, f):
        magic = f.read(6)
        f.seek(0)
        opener = next((op for prefix, op in _DECOMPRESSORS.items() if magic.startswith(prefix)), None)
        self._stream = opener(f) if opener else f

    def read(self, size: int = -1) -> bytes:
        try:
            return self._stream.read(size)
        except (EOFError, OSError, zlib.error, lzma.LZMAError) as e:
            raise _Damaged(f"{type(e).__name__}: {e}") from None

    def drain(self) -> None:
        """Read on past the end-of-archive marker to the end of the file, where a cut or
        altered stream shows."""
        while self.read(1 << 20):
            pass


def _open_tar(stream: _Decompressed, path: Path) -> tarfile.TarFile:
    """tarfile over `stream`, in one pass; a first block that is no tar header means the file
    is no tar archive at all (a later one cut or garbled: truncated or corrupt)."""
    try:
        return tarfile.open(fileobj=stream, mode="r|", tarinfo=_StrictTarInfo)
    except tarfile.ReadError:
        raise SelError(f"{path} is not a tar archive (expected .tar/.tar.gz or a folder)") from None


def _read_archive(path: Path, layout: _Layout) -> None:
    try:
        with open(path, "rb") as f:
            stream = _Decompressed(f)
            with _open_tar(stream, path) as tar:
                for member in tar:
                    _check_member(member, layout.source)
                    if member.isfile():
                        layout.add(member.name, tar.extractfile(member).read)
                    elif member.isdir():
                        layout.add_folder(PurePosixPath(member.name).parts)
            stream.drain()
    except _Damaged as e:
        raise SelError(f"{path} is corrupt or truncated ({e})") from None
    except (tarfile.TarError, OSError) as e:
        raise SelError(f"{path} is corrupt or truncated ({type(e).__name__}: {e})") from None


# what a folder source may hold besides regular files and folders, none of which is read
_SPECIAL = {stat.S_IFIFO: "a FIFO", stat.S_IFCHR: "a character device", stat.S_IFBLK: "a block device",
            stat.S_IFSOCK: "a socket"}


def _check_entry(path: Path, root: Path, mode: int) -> None:
    """Refuse what an archive's member check refuses: links (those leaving the folder named as
    such) and anything but regular files and folders. Told from `lstat`, before any open: a
    FIFO opened would wait for a writer forever."""
    rel = path.relative_to(root).as_posix()
    if stat.S_ISLNK(mode):
        if not path.resolve().is_relative_to(root.resolve()):
            raise SelError(f"{root}: {rel} links outside the source folder")
        raise SelError(f"{root}: {rel!r} is a link; links are not read")
    if not (stat.S_ISREG(mode) or stat.S_ISDIR(mode)):
        kind = _SPECIAL.get(stat.S_IFMT(mode), "a special file")
        raise SelError(f"{root}: {rel!r} is {kind}; only regular files are read")


def _read_folder(root: Path, layout: _Layout) -> str:
    """Feed the files under `root` to `layout`; returns a sha256 over their names and contents."""
    tree = hashlib.sha256()
    for path in sorted(root.rglob("*")):
        mode = path.lstat().st_mode
        _check_entry(path, root, mode)
        if stat.S_ISREG(mode):
            rel = path.relative_to(root).as_posix()
            payload = path.read_bytes()
            tree.update(rel.encode() + b"\0" + hashlib.sha256(payload).digest())
            layout.add(rel, lambda payload=payload: payload)
        else:
            layout.add_folder(path.relative_to(root).parts)
    return tree.hexdigest()


def _check_source(path: Path) -> None:
    """A source is a regular file or a folder, told before any open: a FIFO would wait for a
    writer and /dev/zero never end."""
    try:
        mode = path.stat().st_mode
    except FileNotFoundError:
        raise SelError(f"data.source: no such file or folder: {shorten(str(path))}") from None
    except OSError as e:  # a name too long, a file where a folder is expected
        raise SelError(f"data.source: {shorten(str(path))}: {e.strerror or e}") from None
    if not (stat.S_ISREG(mode) or stat.S_ISDIR(mode)):
        kind = _SPECIAL.get(stat.S_IFMT(mode), "a special file")
        raise SelError(f"data.source: {shorten(str(path))} is {kind}; only an archive file or a folder is read")


@dataclass
class Provenance:
    """Where the data came from, as recorded in the manifest and on every MLflow run."""

    source: str
    kind: str
    variant: str
    md5: str | None
    sha256: str
    md5_verified: bool


def read_source(source: str, md5: str | None, cache_dir: Path, root: Path) -> tuple[Cifar, Provenance]:
    """Read `source` (URL, archive or folder; relative paths from `root`) into arrays."""
    expected = expected_md5(source, md5)
    if is_url(source):
        path = fetch(source, cache_dir, expected)
    else:
        path = Path(source).expanduser()
        path = path if path.is_absolute() else root / path
        _check_source(path)
    layout = _Layout(str(source))
    if path.is_dir():
        sums = {"md5": None, "sha256": _read_folder(path, layout)}
    else:
        sums = verify(path, expected)
        _read_archive(path, layout)
    data, kind = layout.build()
    check_arrays(data)
    official = expected == OFFICIAL_MD5 and kind == "python-archive"
    variant = "official" if official else f"{kind}:{path.name}"
    verified = bool(expected) and sums["md5"] is not None  # a folder has no md5 to verify
    return data, Provenance(str(source), kind, variant, sums["md5"], sums["sha256"], verified)
