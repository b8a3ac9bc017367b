"""The readers of the classification datasets: package data, and the real file formats a user brings.

A reader turns a folder (None for package data) into a :class:`_Source`: raw images on their own scale
with their labels and a content fingerprint, before any split (:mod:`trainables.classification.data`
registers the readers, splits and normalises).

- scikit-learn's digits and scikit-image's ``lfw_subset`` (:mod:`trainables.faces`): package data; the
  cluttered digits (:mod:`trainables.classification.generator`) are drawn from the former.
- CIFAR-10 "python version" batches: pickles, read with a restricted unpickler that can only rebuild
  numpy arrays (a file that asks for anything else, ``os.system`` or so, is refused before it runs).
- MNIST, Fashion-MNIST or KMNIST IDX files, each optionally gzipped.

Every problem with a file raises :class:`~trainables.checks.DatasetError` with a one-line message that
names the file and the fix.
"""

from __future__ import annotations

import codecs
import gzip
import hashlib
import importlib
import io
import math
import pickle
import zlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn

import numpy as np

from trainables.checks import DatasetError, one_line
from trainables.faces import lfw_images

__all__: list[str] = []  # the readers are data.py's, through DATASETS


@dataclass(frozen=True, eq=False)
class _Source:
    """What a reader returns: raw images on their own scale, before any split.

    ``x`` is uint8 (0..255) or floating point on [0, 1]. ``x_test``/``y_test`` hold an official test
    split when the format has one.
    """

    x: np.ndarray  # (N, C, H, W)
    y: np.ndarray  # (N,) int64
    fingerprint: str  # sha256 hex over the content the arrays came from
    x_test: np.ndarray | None = None  # (M, C, H, W)
    y_test: np.ndarray | None = None  # (M,) int64

    @property
    def n_total(self) -> int:
        return len(self.y) + (0 if self.y_test is None else len(self.y_test))


# --------------------------------------------------------------------------------------------------
# Readers: package data
# --------------------------------------------------------------------------------------------------


def _array_fingerprint(*arrays: np.ndarray) -> str:
    digest = hashlib.sha256()
    for array in arrays:
        digest.update(f"{array.dtype.str}{array.shape}".encode())
        digest.update(np.ascontiguousarray(array).tobytes())
    return digest.hexdigest()


def _read_digits(folder: Path | None) -> _Source:
    from sklearn.datasets import load_digits

    bunch = load_digits()
    images = np.asarray(bunch.images)  # (1797, 8, 8) float64, values 0..16
    labels = np.asarray(bunch.target, dtype=np.int64)  # (1797,)
    x = (images[:, None] / 16.0).astype(np.float32)  # (N, 1, 8, 8) on [0, 1]
    return _Source(x=x, y=labels, fingerprint=_array_fingerprint(images, labels))


def _read_cluttered_digits(folder: Path | None) -> _Source:
    from trainables.classification.generator import GENERATOR_VERSION, cluttered_digits

    images, labels = cluttered_digits()  # (1797, 24, 24) float32 on [0, 1]
    version = np.asarray([GENERATOR_VERSION], dtype=np.int64)
    return _Source(x=images[:, None], y=labels, fingerprint=_array_fingerprint(images, labels, version))


def _read_lfw(folder: Path | None) -> _Source:
    images = lfw_images()  # (200, 25, 25) float64 on [0, 1]: 100 faces, then 100 non-faces
    labels = np.where(np.arange(len(images)) < 100, 1, 0).astype(np.int64)  # 1 = "face"
    x = images[:, None].astype(np.float32)  # (N, 1, 25, 25)
    return _Source(x=x, y=labels, fingerprint=_array_fingerprint(images, labels))


# --------------------------------------------------------------------------------------------------
# Readers: files
# --------------------------------------------------------------------------------------------------


def _locate(
    folder: Path, names: Mapping[str, tuple[str, ...]], spec_name: str, expects: str
) -> dict[str, Path]:
    """The first existing candidate file for every role; one DatasetError lists all missing roles."""
    found: dict[str, Path] = {}
    missing: list[str] = []
    for role, candidates in names.items():
        hit = next((folder / c for c in candidates if (folder / c).is_file()), None)
        if hit is None:
            missing.append(candidates[0])
        else:
            found[role] = hit
    if missing:
        present = sorted(p.name for p in folder.iterdir())
        shown = ", ".join(present[:8]) + (", ..." if len(present) > 8 else "")
        patterns = (f"*/{missing[0]}", f"*/*/{missing[0]}")  # e.g. cifar-10-batches-py/, MNIST/raw/
        nested = next((p.parent for pattern in patterns for p in folder.glob(pattern)), None)
        hint = f"did you mean data.path={nested}? " if nested is not None else ""
        raise DatasetError(
            f"dataset folder {folder} lacks {', '.join(missing)} for {spec_name!r} (found: {shown}); "
            f"{hint}set data.path to {expects}"
        )
    return found


def _required(folder: Path | None, spec_name: str) -> Path:
    if folder is None:  # _resolve_folder prevents this for registered specs
        raise DatasetError(f"dataset {spec_name!r} needs a folder; set data.path")
    return folder


def _read_bytes(file: Path) -> bytes:
    try:
        return file.read_bytes()
    except OSError as err:
        raise DatasetError(
            f"cannot read dataset file {file} ({one_line(err)}); check its permissions"
        ) from None


class _FileHasher:
    """sha256 over (role, size, sha256 of content) of each file, in the order they are added."""

    def __init__(self) -> None:
        self._digest = hashlib.sha256()

    def add(self, role: str, content: bytes) -> None:
        self._digest.update(f"{role}:{len(content)}:{hashlib.sha256(content).hexdigest()};".encode())

    def hexdigest(self) -> str:
        return self._digest.hexdigest()


# CIFAR-10 ---------------------------------------------------------------------------------------

_CIFAR_TRAIN = tuple(f"data_batch_{i}" for i in range(1, 6))
_CIFAR_FILES = (*_CIFAR_TRAIN, "test_batch")
_CIFAR_EXPECTS = "the folder holding data_batch_1..5 and test_batch (CIFAR-10 'python version')"
_CIFAR_FIX = (
    "re-download CIFAR-10 'python version' or point data.path at the folder holding "
    "data_batch_1..5 and test_batch"
)
_CIFAR_CLASSES = (
    "airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck",
)  # fmt: skip


class _RefusedGlobal(pickle.UnpicklingError):
    """A pickle asked for a global that is not on the allow-list."""


def _latin1_encode(text: str, encoding: str) -> bytes:
    """What Python 3 protocol-2 pickles call to rebuild bytes; any other codec is refused."""
    if encoding not in ("latin1", "latin-1"):
        raise _RefusedGlobal(f"_codecs.encode with codec {encoding!r}")
    return codecs.encode(text, "latin1")


def _numpy_global(module: str, name: str) -> Any:
    """numpy internals under their numpy >= 2 home (numpy._core), falling back to numpy.core."""
    try:
        return getattr(importlib.import_module(f"numpy._core.{module}"), name)
    except ImportError:  # numpy < 2
        return getattr(importlib.import_module(f"numpy.core.{module}"), name)


# Only what pickled numpy arrays (protocols 0-5, numpy 1.x and 2.x, Python 2 and 3) refer to.
_ALLOWED_GLOBALS: dict[tuple[str, str], Callable[[], Any]] = {
    ("numpy", "ndarray"): lambda: np.ndarray,
    ("numpy", "dtype"): lambda: np.dtype,
    ("_codecs", "encode"): lambda: _latin1_encode,
    **{
        (f"numpy.{pkg}.{module}", name): (lambda module=module, name=name: _numpy_global(module, name))
        for pkg in ("core", "_core")
        for module, name in (
            ("multiarray", "_reconstruct"),
            ("multiarray", "scalar"),
            ("numeric", "_frombuffer"),
        )
    },
}


class _ArrayUnpickler(pickle.Unpickler):
    """Unpickles dicts, lists and numpy arrays; refuses every other global before it is called."""

    def find_class(self, module: str, name: str) -> Any:
        factory = _ALLOWED_GLOBALS.get((module, name))
        if factory is None:
            raise _RefusedGlobal(f"{module}.{name}")
        return factory()


def _parse_cifar_batch(content: bytes, file: Path) -> tuple[np.ndarray, np.ndarray]:
    """One CIFAR-10 python batch -> (N, 3, 32, 32) uint8 images and (N,) int64 labels."""
    try:
        batch = _ArrayUnpickler(io.BytesIO(content), encoding="bytes").load()
    except _RefusedGlobal as err:
        raise DatasetError(
            f"dataset file {file} is refused: it asks to load {err}, which a CIFAR-10 batch never "
            f"contains (only numpy arrays are allowed); {_CIFAR_FIX}"
        ) from None
    except Exception as err:  # noqa: BLE001 - any unpickling failure means a corrupt file
        _raise_cifar_corrupt(file, f"unreadable pickle, {one_line(err)}")
    if not isinstance(batch, dict):
        _raise_cifar_corrupt(file, f"holds a {type(batch).__name__}, not a dict")
    data = batch.get(b"data", batch.get("data"))
    labels = batch.get(b"labels", batch.get("labels"))
    if data is None or labels is None:
        keys = ", ".join(sorted(repr(k) for k in batch))
        _raise_cifar_corrupt(file, f"no b'data' and b'labels' entries, keys are {keys}")
    if not (isinstance(data, np.ndarray) and data.dtype == np.uint8 and data.ndim == 2) or (
        data.shape[1] != 3072
    ):
        shape = getattr(data, "shape", None)
        dtype = getattr(data, "dtype", type(data).__name__)
        _raise_cifar_corrupt(
            file, f"data must be an (N, 3072) uint8 array, got shape {shape} dtype {dtype}"
        )
    y = np.asarray(labels)
    if y.ndim != 1 or len(y) != len(data) or (len(y) and y.dtype.kind not in "iu"):
        _raise_cifar_corrupt(
            file,
            f"labels must be {len(data)} integers (one per image), got shape {y.shape} dtype {y.dtype}",
        )
    if len(data) == 0:
        _raise_cifar_corrupt(file, "it holds no images")
    if y.min() < 0 or y.max() >= len(_CIFAR_CLASSES):
        _raise_cifar_corrupt(file, f"labels must lie in [0, 10), got {y.min()}..{y.max()}")
    return data.reshape(-1, 3, 32, 32), y.astype(np.int64)  # rows are 1024 R, 1024 G, 1024 B


def _raise_cifar_corrupt(file: Path, detail: str) -> NoReturn:
    raise DatasetError(
        f"dataset file {file} is corrupt (not a CIFAR-10 python batch: {detail}); {_CIFAR_FIX}"
    )


def _read_cifar10(folder: Path | None) -> _Source:
    folder = _required(folder, "cifar10")
    files = _locate(folder, {name: (name,) for name in _CIFAR_FILES}, "cifar10", _CIFAR_EXPECTS)
    hasher = _FileHasher()
    batches: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    for name in _CIFAR_FILES:
        content = _read_bytes(files[name])
        hasher.add(name, content)
        batches[name] = _parse_cifar_batch(content, files[name])
    x_test, y_test = batches["test_batch"]
    return _Source(
        x=np.concatenate([batches[n][0] for n in _CIFAR_TRAIN]),  # (50000, 3, 32, 32) uint8 in full
        y=np.concatenate([batches[n][1] for n in _CIFAR_TRAIN]),
        fingerprint=hasher.hexdigest(),
        x_test=x_test,
        y_test=y_test,
    )


# MNIST family (IDX) -----------------------------------------------------------------------------

_IDX_IMAGES_MAGIC = 2051  # 0x00000803: unsigned bytes, 3 dimensions (N, H, W)
_IDX_LABELS_MAGIC = 2049  # 0x00000801: unsigned bytes, 1 dimension (N,)
_MNIST_STEMS = {
    "train-images": "train-images-idx3-ubyte",
    "train-labels": "train-labels-idx1-ubyte",
    "test-images": "t10k-images-idx3-ubyte",
    "test-labels": "t10k-labels-idx1-ubyte",
}
_MNIST_EXPECTS = (
    "the folder holding train-images-idx3-ubyte, train-labels-idx1-ubyte, t10k-images-idx3-ubyte and "
    "t10k-labels-idx1-ubyte (MNIST, Fashion-MNIST or KMNIST; each may end in .gz)"
)
_MNIST_FIX = f"re-download the file or set data.path to {_MNIST_EXPECTS}"


def _mnist_candidates(stem: str) -> tuple[str, ...]:
    """Plain before gzipped; also the 'train-images.idx3-ubyte' spelling some mirrors use."""
    dotted = stem.replace("-idx", ".idx")
    return (stem, f"{stem}.gz", dotted, f"{dotted}.gz")


def _parse_idx(content: bytes, file: Path, *, magic: int) -> np.ndarray:
    """An IDX uint8 file -> array of the shape its header declares; checks magic and byte count."""
    kind = "images" if magic == _IDX_IMAGES_MAGIC else "labels"
    ndim = magic & 0xFF
    header = 4 + 4 * ndim
    if len(content) < header:
        raise DatasetError(
            f"dataset file {file} is truncated: {len(content)} bytes, shorter than the {header}-byte IDX "
            f"{kind} header; {_MNIST_FIX}"
        )
    got = int.from_bytes(content[:4], "big")
    if got != magic:
        raise DatasetError(
            f"dataset file {file} is not an IDX {kind} file: magic number {got} (0x{got:08x}), expected "
            f"{magic} (0x{magic:08x}); {_MNIST_FIX}"
        )
    dims = tuple(int(d) for d in np.frombuffer(content, dtype=">u4", count=ndim, offset=4))
    expected = header + math.prod(dims)
    if len(content) != expected:
        problem = "is truncated" if len(content) < expected else "has trailing bytes"
        raise DatasetError(
            f"dataset file {file} {problem}: {len(content)} bytes, but its header {dims} promises "
            f"{expected}; {_MNIST_FIX}"
        )
    if magic == _IDX_IMAGES_MAGIC and (dims[0] == 0 or dims[1] == 0 or dims[2] == 0):
        raise DatasetError(f"dataset file {file} holds no pixels (header dims {dims}); {_MNIST_FIX}")
    return np.frombuffer(content, dtype=np.uint8, offset=header).reshape(dims)


def _read_idx_file(file: Path) -> bytes:
    content = _read_bytes(file)
    if file.suffix != ".gz":
        return content
    try:
        return gzip.decompress(content)
    except (OSError, EOFError, zlib.error) as err:
        raise DatasetError(
            f"dataset file {file} is not a valid gzip file ({one_line(err)}); {_MNIST_FIX}"
        ) from None


def _read_mnist(folder: Path | None) -> _Source:
    folder = _required(folder, "mnist")
    candidates = {role: _mnist_candidates(stem) for role, stem in _MNIST_STEMS.items()}
    files = _locate(folder, candidates, "mnist", _MNIST_EXPECTS)
    hasher = _FileHasher()  # over decompressed content: gzipping (or not) keeps the id
    pairs: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    for part in ("train", "test"):
        images_file, labels_file = files[f"{part}-images"], files[f"{part}-labels"]
        images_raw, labels_raw = _read_idx_file(images_file), _read_idx_file(labels_file)
        hasher.add(f"{part}-images", images_raw)
        hasher.add(f"{part}-labels", labels_raw)
        images = _parse_idx(images_raw, images_file, magic=_IDX_IMAGES_MAGIC)  # (N, H, W)
        labels = _parse_idx(labels_raw, labels_file, magic=_IDX_LABELS_MAGIC)  # (N,)
        if len(images) != len(labels):
            raise DatasetError(
                f"dataset files {images_file} and {labels_file} disagree: {len(images)} images but "
                f"{len(labels)} labels; {_MNIST_FIX}"
            )
        if labels.max() >= 10:
            raise DatasetError(
                f"dataset file {labels_file} has label {int(labels.max())}, but MNIST-family labels lie in "
                f"[0, 10); {_MNIST_FIX}"
            )
        pairs[part] = (images[:, None], labels.astype(np.int64))  # (N, 1, H, W), (N,)
    (x, y), (x_test, y_test) = pairs["train"], pairs["test"]
    if x.shape[2:] != x_test.shape[2:]:
        raise DatasetError(
            f"dataset files {files['train-images']} and {files['test-images']} disagree: images are "
            f"{x.shape[2]}x{x.shape[3]} and {x_test.shape[2]}x{x_test.shape[3]}; {_MNIST_FIX}"
        )
    return _Source(x=x, y=y, fingerprint=hasher.hexdigest(), x_test=x_test, y_test=y_test)

