"""Image-classification datasets: package data and the real file formats a user brings.

Four datasets, registered in :data:`DATASETS` (DESIGN.md §4: no network at run time):

- ``digits``: scikit-learn's 8x8 handwritten digits (1,797 images, 10 classes, 1 channel).
- ``lfw_faces``: scikit-image's ``lfw_subset`` (200 images 25x25; the first 100 are faces, the last 100
  non-faces), labelled 0 = "non-face", 1 = "face".
- ``cifar10``: a folder holding the CIFAR-10 "python version" batches ``data_batch_1..5`` and
  ``test_batch``. Batches are pickles, so they are read with a restricted unpickler that can only rebuild
  numpy arrays: a file that asks for anything else (``os.system``, ...) is refused before it runs.
- ``mnist``: a folder holding the four IDX files of MNIST, Fashion-MNIST or KMNIST
  (``train-images-idx3-ubyte``, ``train-labels-idx1-ubyte``, ``t10k-images-idx3-ubyte``,
  ``t10k-labels-idx1-ubyte``), each optionally gzipped.

The readers of these sources live in :mod:`trainables.classification.formats`. :func:`load_dataset` returns
an :class:`ImageDataset` with stratified, seeded train / val / test splits, normalised with the train
split's per-channel statistics. Searchers decide on ``val``; ``test`` is only for the final report.
Every problem with the input raises :class:`~trainables.checks.DatasetError`, whose one-line message
names the problem and the fix. :func:`meta_features` summarises a dataset without images, for the shared
benchmark store (HyperFD's privacy rule: raw images are never stored).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from search_algos.spaces.base import stable_key
from search_algos.spaces.registry import Registry, UnknownNameError
from trainables.checks import DatasetError, finite, is_int, is_real, one_line
from trainables.classification.formats import (
    _CIFAR_CLASSES,
    _CIFAR_EXPECTS,
    _MNIST_EXPECTS,
    _read_cifar10,
    _read_cluttered_digits,
    _read_digits,
    _read_lfw,
    _read_mnist,
    _Source,
)

__all__ = [
    "DATASETS",
    "DatasetSpec",
    "ImageDataset",
    "Split",
    "dataset_names",
    "load_dataset",
    "meta_features",
]

# Bump when the splitting or preprocessing procedure changes, so that old dataset_ids (and the benchmark
# rows keyed by them) are not mistaken for the new splits.
_SPLIT_VERSION = 1
# meta_features reads at most this many train images: enough for stable statistics, cheap on CIFAR.
_META_SAMPLE = 2000


# --------------------------------------------------------------------------------------------------
# Public values
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class Split:
    """One split of a dataset.

    Attributes:
        x: (N, C, H, W) float32 images, normalised with the train split's per-channel mean and std.
        y: (N,) int64 class labels in ``[0, num_classes)``.
        index: (N,) int64 row of each image in the source, or None for hand-built splits. Sources are
            numbered in file order, the official test files (if any) after all training files, so the
            indices of the three splits of one dataset never overlap.
    """

    x: np.ndarray
    y: np.ndarray
    index: np.ndarray | None = None

    def __post_init__(self) -> None:
        if self.x.ndim != 4 or self.x.dtype != np.float32:
            raise ValueError(
                f"Split.x must be a (N, C, H, W) float32 array, but got shape {self.x.shape} "
                f"dtype {self.x.dtype}"
            )
        if self.y.shape != (len(self.x),) or self.y.dtype != np.int64:
            raise ValueError(
                f"Split.y must be a ({len(self.x)},) int64 array, but got shape {self.y.shape} "
                f"dtype {self.y.dtype}"
            )
        if self.index is not None and self.index.shape != self.y.shape:
            raise ValueError(
                f"Split.index must have shape {self.y.shape} like y, but got {self.index.shape}"
            )

    def __len__(self) -> int:
        return len(self.y)


@dataclass(frozen=True, eq=False)
class ImageDataset:
    """An image-classification dataset split into train / val / test.

    Attributes:
        name: the registered name (see :data:`DATASETS`).
        dataset_id: stable 16-hex id over the name, the content of the source files (or package data),
            the split fractions, ``split_seed`` and ``max_samples``: equal ids mean equal splits.
        train: the split models are fitted on; its statistics normalise all three splits.
        val: the split searchers decide on.
        test: held out for the final report; never used for decisions.
        num_classes: number of classes (labels lie in ``[0, num_classes)``).
        in_channels: C of the images.
        image_size: (H, W) of the images.
        class_names: one name per label.
        channel_mean: per-channel mean of the train split on the [0, 1] pixel scale (before normalising).
        channel_std: per-channel std used to normalise (1.0 for a constant channel).
    """

    name: str
    dataset_id: str
    train: Split
    val: Split
    test: Split
    num_classes: int
    in_channels: int
    image_size: tuple[int, int]
    class_names: tuple[str, ...]
    channel_mean: tuple[float, ...] = ()
    channel_std: tuple[float, ...] = ()

    def __post_init__(self) -> None:
        if len(self.class_names) != self.num_classes:
            raise ValueError(
                f"ImageDataset needs one class name per class, but got {len(self.class_names)} names "
                f"for num_classes={self.num_classes}"
            )
        for split_name, split in (("train", self.train), ("val", self.val), ("test", self.test)):
            if split.x.shape[1:] != (self.in_channels, *self.image_size):
                raise ValueError(
                    f"ImageDataset.{split_name}.x must have (C, H, W) = "
                    f"{(self.in_channels, *self.image_size)}, but got {split.x.shape[1:]}"
                )


# --------------------------------------------------------------------------------------------------
# Registry
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class DatasetSpec:
    """How to read one registered dataset.

    Attributes:
        name: the registered name.
        num_classes: number of classes, known before reading (used to validate ``max_samples``).
        class_names: one name per label.
        needs_path: whether the data come from a user folder (``path``) rather than a package.
        has_official_test: the format ships its own test split; val is then carved from train only
            and ``test_fraction`` is not used.
        expects: what the folder must hold, in the words of the error messages.
        read: ``read(folder)`` returns the source; ``folder`` is None for package data.
    """

    name: str
    num_classes: int
    class_names: tuple[str, ...]
    needs_path: bool
    has_official_test: bool
    expects: str
    read: Callable[[Path | None], _Source] = field(repr=False)


DATASETS: Registry[DatasetSpec] = Registry("dataset")


def dataset_names() -> list[str]:
    """The registered dataset names, sorted."""
    return DATASETS.names()


# --------------------------------------------------------------------------------------------------
# Loading and splitting
# --------------------------------------------------------------------------------------------------


def load_dataset(
    name: str,
    *,
    path: str | None = None,
    split_seed: int = 0,
    val_fraction: float = 0.2,
    test_fraction: float = 0.2,
    max_samples: int | None = None,
) -> ImageDataset:
    """Load a registered dataset and split it into stratified train / val / test.

    Without an official test split (``digits``, ``lfw_faces``) ``test_fraction`` and then
    ``val_fraction`` of all samples are carved out, the rest is train. With one (``cifar10``, ``mnist``)
    the official test files are the test split and ``val_fraction`` of the training files is carved out;
    ``test_fraction`` is then validated but unused (and does not enter ``dataset_id``).

    Args:
        name: a registered dataset name (:func:`dataset_names`).
        path: the folder holding the files of a path-based dataset; must be None for package data.
        split_seed: seeds the split (``numpy.random.default_rng``); equal seeds give equal splits.
        val_fraction: share of the samples (of the training files, where an official test exists)
            that forms the validation split.
        test_fraction: share of the samples that forms the test split (no official test only).
        max_samples: cap on the total number of samples, drawn stratified before splitting (quick runs);
            with an official test split the cap is shared in proportion to the two sources.

    Returns:
        The dataset, its images normalised with the train split's per-channel mean and std.

    Raises:
        DatasetError: unknown name, bad argument, missing/empty folder, or a missing or corrupt file.
    """
    spec = _get_spec(name)
    _check_arguments(spec, split_seed, val_fraction, test_fraction, max_samples)
    folder = _resolve_folder(spec, path)
    source = spec.read(folder)

    cap = max_samples if max_samples is not None and max_samples < source.n_total else None
    indices = _split_indices(source, spec, split_seed, val_fraction, test_fraction, cap)
    raw = {part: _gather(source, idx) for part, idx in indices.items()}  # part -> (x raw, y)

    train_x = _to_unit(raw["train"][0])  # (N, C, H, W) float32 on [0, 1]
    mean, std = _channel_stats(train_x)  # (C,), (C,)
    splits = {
        part: Split(
            x=_normalise(train_x if part == "train" else _to_unit(x), mean, std),
            y=y,
            index=indices[part],
        )
        for part, (x, y) in raw.items()
    }
    dataset_id = stable_key(
        {
            "version": _SPLIT_VERSION,
            "name": spec.name,
            "content": source.fingerprint,
            "val_fraction": float(val_fraction),
            "test_fraction": None if spec.has_official_test else float(test_fraction),
            "split_seed": int(split_seed),
            "max_samples": cap,
        }
    )
    _, channels, height, width = source.x.shape
    return ImageDataset(
        name=spec.name,
        dataset_id=dataset_id,
        train=splits["train"],
        val=splits["val"],
        test=splits["test"],
        num_classes=spec.num_classes,
        in_channels=int(channels),
        image_size=(int(height), int(width)),
        class_names=spec.class_names,
        channel_mean=tuple(float(m) for m in mean),
        channel_std=tuple(float(s) for s in std),
    )


def _get_spec(name: str) -> DatasetSpec:
    try:
        return DATASETS.get(name)
    except UnknownNameError as err:
        raise DatasetError(f"{err}; pick one of them") from None


def _check_arguments(
    spec: DatasetSpec,
    split_seed: int,
    val_fraction: float,
    test_fraction: float,
    max_samples: int | None,
) -> None:
    """Raise one DatasetError that lists every broken rule at once."""
    problems: list[str] = []
    for arg, value in (("val_fraction", val_fraction), ("test_fraction", test_fraction)):
        if not is_real(value) or not 0.0 < value < 1.0:
            problems.append(f"0 < {arg} < 1 must hold, but got {arg}={value!r}")
    if is_real(val_fraction) and is_real(test_fraction) and val_fraction + test_fraction >= 1.0:
        problems.append(
            f"val_fraction + test_fraction < 1 must hold (train needs samples), but got "
            f"val_fraction={val_fraction!r}, test_fraction={test_fraction!r}"
        )
    if not is_int(split_seed) or split_seed < 0:
        problems.append(f"split_seed must be an int >= 0, but got split_seed={split_seed!r}")
    min_samples = 3 * spec.num_classes  # room for every class in train, val and test
    if max_samples is not None and (not is_int(max_samples) or max_samples < min_samples):
        problems.append(
            f"max_samples must be None or an int >= 3 * num_classes = {min_samples} for "
            f"{spec.name!r}, but got max_samples={max_samples!r}"
        )
    if problems:
        raise DatasetError(f"bad arguments for dataset {spec.name!r}: " + "; ".join(problems))


def _resolve_folder(spec: DatasetSpec, path: str | None) -> Path | None:
    if not spec.needs_path:
        if path is not None:
            raise DatasetError(
                f"dataset {spec.name!r} ships with its package and takes no path, but got path={path!r}; "
                "remove data.path"
            )
        return None
    if path is None or str(path).strip() == "":
        raise DatasetError(
            f"dataset {spec.name!r} needs a path, but none was given; set data.path to {spec.expects}"
        )
    folder = Path(path).expanduser()
    if not folder.exists():
        raise DatasetError(
            f"dataset folder {folder} does not exist; set data.path for {spec.name!r} to {spec.expects}"
        )
    if not folder.is_dir():
        raise DatasetError(
            f"dataset path {folder} is a file, not a folder; set data.path for {spec.name!r} to "
            f"{spec.expects}"
        )
    try:
        empty = not any(folder.iterdir())
    except OSError as err:
        raise DatasetError(
            f"cannot list dataset folder {folder} ({one_line(err)}); check its permissions"
        ) from None
    if empty:
        raise DatasetError(
            f"dataset folder {folder} is empty; put the {spec.name!r} files there or set data.path to "
            f"{spec.expects}"
        )
    return folder


def _split_indices(
    source: _Source,
    spec: DatasetSpec,
    split_seed: int,
    val_fraction: float,
    test_fraction: float,
    cap: int | None,
) -> dict[str, np.ndarray]:
    """Stratified, seeded source rows of each split (each split in a seeded random order)."""
    rng = np.random.default_rng(split_seed)
    n_train_src = len(source.y)
    labels = source.y if source.y_test is None else np.concatenate([source.y, source.y_test])
    if spec.has_official_test:
        pool = np.arange(n_train_src)
        test = np.arange(n_train_src, source.n_total)
        if cap is not None:
            n_pool = _round(cap * n_train_src / source.n_total)
            pool, _ = _stratified_take(labels, pool, n_pool, rng)
            test, _ = _stratified_take(labels, test, cap - n_pool, rng)
        val, train = _stratified_take(labels, pool, max(1, _round(val_fraction * len(pool))), rng)
    else:
        pool = np.arange(n_train_src)
        if cap is not None:
            pool, _ = _stratified_take(labels, pool, cap, rng)
        n = len(pool)
        test, rest = _stratified_take(labels, pool, max(1, _round(test_fraction * n)), rng)
        val, train = _stratified_take(labels, rest, max(1, _round(val_fraction * n)), rng)
    parts = {"train": train, "val": val, "test": test}
    empty = [part for part, idx in parts.items() if len(idx) == 0]
    if empty:
        raise DatasetError(
            f"dataset {spec.name!r} leaves the {'/'.join(empty)} split empty "
            f"({source.n_total} samples, max_samples={cap}, val_fraction={val_fraction}); "
            "use more samples or other fractions"
        )
    return {part: rng.permutation(idx).astype(np.int64) for part, idx in parts.items()}


def _round(value: float) -> int:
    """Round half up (Python's round() rounds half to even)."""
    return int(math.floor(value + 0.5))


def _stratified_take(
    labels: np.ndarray, pool: np.ndarray, n_take: int, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Split ``pool`` (rows into ``labels``) into ``n_take`` rows and the rest, keeping class shares.

    Each class gets ``n_take * share`` rows rounded by largest remainder (ties broken by ``rng``), so
    the taken part matches the pool's class proportions as closely as integers allow.

    Returns:
        (taken, rest), both sorted.
    """
    n_take = min(max(n_take, 0), len(pool))
    if len(pool) == 0:
        return pool, pool
    pool_labels = labels[pool]
    classes, counts = np.unique(pool_labels, return_counts=True)
    quota = n_take * counts / counts.sum()  # (K,) ideal rows per class
    take = np.floor(quota).astype(np.int64)
    short = n_take - int(take.sum())
    if short > 0:
        order = np.lexsort((rng.random(len(classes)), -(quota - take)))  # largest remainder first
        take[order[:short]] += 1
    taken, rest = [], []
    for cls, k in zip(classes, take):
        members = rng.permutation(pool[pool_labels == cls])
        taken.append(members[:k])
        rest.append(members[k:])
    return np.sort(np.concatenate(taken)), np.sort(np.concatenate(rest))


def _gather(source: _Source, index: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Raw images and labels of the given source rows (official test rows numbered after train)."""
    n_train_src = len(source.y)
    if source.x_test is None or source.y_test is None or not (index >= n_train_src).any():
        return source.x[index], source.y[index]
    x = np.empty((len(index), *source.x.shape[1:]), dtype=source.x.dtype)  # (N, C, H, W)
    y = np.empty(len(index), dtype=np.int64)
    in_train = index < n_train_src
    x[in_train], y[in_train] = source.x[index[in_train]], source.y[index[in_train]]
    x[~in_train] = source.x_test[index[~in_train] - n_train_src]
    y[~in_train] = source.y_test[index[~in_train] - n_train_src]
    return x, y


def _to_unit(x: np.ndarray) -> np.ndarray:
    """(N, C, H, W) raw images -> float32 on [0, 1] (uint8 sources are divided by 255)."""
    if x.dtype == np.uint8:
        return x.astype(np.float32) / np.float32(255.0)
    return x.astype(np.float32, copy=True)


def _channel_stats(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel mean and std of (N, C, H, W) images, in float64; a constant channel gets std 1."""
    mean = np.array([x[:, c].mean(dtype=np.float64) for c in range(x.shape[1])])  # (C,)
    std = np.array([x[:, c].std(dtype=np.float64) for c in range(x.shape[1])])  # (C,)
    return mean, np.where(std > 1e-8, std, 1.0)


def _normalise(x: np.ndarray, mean: np.ndarray, std: np.ndarray) -> np.ndarray:
    """In place on a float32 (N, C, H, W) array: (x - mean) / std per channel."""
    x -= mean.astype(np.float32)[None, :, None, None]
    x /= std.astype(np.float32)[None, :, None, None]
    return x


# --------------------------------------------------------------------------------------------------
# Meta-features
# --------------------------------------------------------------------------------------------------


def meta_features(ds: ImageDataset) -> dict[str, float]:
    """Dataset-level statistics for the benchmark store and the HyperFD ranker; never images.

    Pixel statistics are on the [0, 1] pixel scale of the train split (before normalising), computed on
    at most 2,000 evenly spaced train images.

    Args:
        ds: a loaded dataset.

    Returns:
        Finite floats: sizes (``n_train``, ``n_val``, ``n_test``, ``log_n_train``, ``n_classes``,
        ``samples_per_class``), geometry (``height``, ``width``, ``channels``, ``pixels``), intensities
        (``pixel_mean``, ``pixel_std``), labels (``class_entropy`` in nats, ``class_entropy_norm`` in
        [0, 1], ``class_balance`` = smallest / largest class count) and image content
        (``mean_contrast``, ``std_contrast``: per-image pixel std; ``mean_gradient``: mean absolute
        difference of neighbouring pixels).
    """
    train = ds.train
    n_train = len(train)
    rows = np.unique(np.linspace(0, n_train - 1, num=min(n_train, _META_SAMPLE)).astype(np.int64))
    mean = np.asarray(ds.channel_mean or (0.0,) * ds.in_channels, dtype=np.float32)
    std = np.asarray(ds.channel_std or (1.0,) * ds.in_channels, dtype=np.float32)
    x = train.x[rows] * std[None, :, None, None] + mean[None, :, None, None]  # (S, C, H, W) on [0, 1]
    per_image_std = x.reshape(len(x), -1).std(axis=1)  # (S,) RMS contrast
    grad_h = np.abs(np.diff(x, axis=2)).mean() if x.shape[2] > 1 else 0.0
    grad_w = np.abs(np.diff(x, axis=3)).mean() if x.shape[3] > 1 else 0.0

    counts = np.bincount(train.y, minlength=ds.num_classes).astype(np.float64)  # (K,)
    share = counts[counts > 0] / counts.sum()
    entropy = float(-(share * np.log(share)).sum())
    features = {
        "n_train": n_train,
        "n_val": len(ds.val),
        "n_test": len(ds.test),
        "log_n_train": math.log(max(n_train, 1)),
        "n_classes": ds.num_classes,
        "samples_per_class": n_train / ds.num_classes,
        "height": ds.image_size[0],
        "width": ds.image_size[1],
        "channels": ds.in_channels,
        "pixels": ds.image_size[0] * ds.image_size[1],
        "pixel_mean": x.mean(dtype=np.float64),
        "pixel_std": x.std(dtype=np.float64),
        "class_entropy": entropy,
        "class_entropy_norm": entropy / math.log(ds.num_classes) if ds.num_classes > 1 else 0.0,
        "class_balance": counts.min() / counts.max() if counts.max() > 0 else 0.0,
        "mean_contrast": per_image_std.mean(dtype=np.float64),
        "std_contrast": per_image_std.std(dtype=np.float64),
        "mean_gradient": (grad_h + grad_w) / 2.0,
    }
    return {key: finite(float(value)) for key, value in features.items()}


# --------------------------------------------------------------------------------------------------
# Registrations
# --------------------------------------------------------------------------------------------------

_DIGIT_NAMES = tuple(str(d) for d in range(10))

DATASETS.register(
    "digits",
    DatasetSpec(
        name="digits",
        num_classes=10,
        class_names=_DIGIT_NAMES,
        needs_path=False,
        has_official_test=False,
        expects="nothing (scikit-learn ships it)",
        read=_read_digits,
    ),
)
DATASETS.register(
    "cluttered_digits",
    DatasetSpec(
        name="cluttered_digits",
        num_classes=10,
        class_names=_DIGIT_NAMES,
        needs_path=False,
        has_official_test=False,
        expects="nothing (drawn from scikit-learn's digits)",
        read=_read_cluttered_digits,
    ),
)
DATASETS.register(
    "lfw_faces",
    DatasetSpec(
        name="lfw_faces",
        num_classes=2,
        class_names=("non-face", "face"),
        needs_path=False,
        has_official_test=False,
        expects="nothing (scikit-image ships it)",
        read=_read_lfw,
    ),
)
DATASETS.register(
    "cifar10",
    DatasetSpec(
        name="cifar10",
        num_classes=10,
        class_names=_CIFAR_CLASSES,
        needs_path=True,
        has_official_test=True,
        expects=_CIFAR_EXPECTS,
        read=_read_cifar10,
    ),
)
DATASETS.register(
    "mnist",
    DatasetSpec(
        name="mnist",
        num_classes=10,
        class_names=_DIGIT_NAMES,
        needs_path=True,
        has_official_test=True,
        expects=_MNIST_EXPECTS,
        read=_read_mnist,
    ),
)
