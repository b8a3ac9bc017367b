"""3D face-alignment data: the dataset values, the registered datasets, and their meta-features.

MONAS (``../shared/papers/monas-multipath-oneshot-nas-3d-face-alignment.txt``, §IV) regresses PRNet's UV
position map (every texel of a fixed face parameterisation holds the (x, y, z) of its 3D point in image
pixels) and scores 68 landmarks with the NME per yaw bin (:mod:`trainables.alignment.metrics`). Without a
network (DESIGN.md §4) the training data are generated from real images that ship with scikit-image.

Two registered datasets (:data:`ALIGNMENT_DATASETS`, :func:`load_alignment_dataset`):

- ``faces3d``: generated, deterministic in ``seed`` (:mod:`trainables.alignment.generator`).
- ``aflw2000``: train and val from the generator, test from an AFLW2000-3D / 300W-LP folder
  (:mod:`trainables.alignment.formats`).

Every problem with the input raises :class:`~trainables.checks.DatasetError` with a one-line message.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from search_algos.spaces.base import stable_key
from search_algos.spaces.registry import Registry, UnknownNameError
from trainables.alignment.metrics import yaw_bin
from trainables.checks import DatasetError, finite, is_int

__all__ = [
    "ALIGNMENT_DATASETS",
    "NUM_LANDMARKS",
    "AlignmentDataset",
    "AlignmentDatasetSpec",
    "AlignmentSplit",
    "alignment_dataset_names",
    "alignment_meta_features",
    "load_alignment_dataset",
]

NUM_LANDMARKS = 68
_MIN_SIZE, _MAX_SIZE = 16, 512
_FOLDER_EXPECTS = (
    "a folder of *.jpg images, each with a same-stem .mat holding pt3d_68 (3x68) or pt2d (2x68) and "
    "Pose_Para (1x7) (AFLW2000-3D / 300W-LP)"
)

# --------------------------------------------------------------------------------------------------
# Public values
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class AlignmentSplit:
    """One split of a 3D face-alignment dataset.

    Attributes:
        images: (N, 3, H, W) float32 RGB on [0, 1].
        uv_maps: (N, 3, H, W) float32 UV position maps: channel 0 = x, 1 = y in image pixels (pixel
            centres at integers), 2 = z on the same pixel scale, larger = closer to the camera; 0 where
            the texel lies outside the face (``uv_weights == 0``). All zeros (a read-only broadcast
            view) when ``has_uv`` is False.
        landmarks: (N, 68, 3) float32 ground-truth 3D landmarks (x, y in image pixels, z).
        yaw: (N,) float32 yaw in degrees on [-90, 90].
        has_uv: False for real data that carry landmarks but no UV ground truth.
    """

    images: np.ndarray
    uv_maps: np.ndarray
    landmarks: np.ndarray
    yaw: np.ndarray
    has_uv: bool = True

    def __post_init__(self) -> None:
        n = len(self.images)
        checks = (
            ("images", self.images, (n, 3) + self.images.shape[2:], 4),
            ("uv_maps", self.uv_maps, self.images.shape, 4),
            ("landmarks", self.landmarks, (n, NUM_LANDMARKS, 3), 3),
            ("yaw", self.yaw, (n,), 1),
        )
        for name, array, shape, ndim in checks:
            if array.ndim != ndim or array.shape != shape or array.dtype != np.float32:
                raise ValueError(
                    f"AlignmentSplit.{name} must be a float32 array of shape {shape}, but got shape "
                    f"{array.shape} dtype {array.dtype}"
                )
        if self.images.shape[2] != self.images.shape[3]:
            raise ValueError(f"AlignmentSplit.images must be square, but got {self.images.shape[2:]}")

    def __len__(self) -> int:
        return len(self.images)


@dataclass(frozen=True, eq=False)
class AlignmentDataset:
    """A 3D face-alignment dataset split into train / val / test.

    Attributes:
        name: the registered name (see :data:`ALIGNMENT_DATASETS`).
        dataset_id: stable 16-hex id over the name, the generator version and arguments and, for folder
            data, the folder's content: equal ids mean equal data.
        train: the split models are fitted on.
        val: the split searchers decide on.
        test: held out for the final report.
        image_size: H == W of the images == size of the UV maps.
        uv_weights: (H, W) float32 loss weights per texel: 16 / 4 / 3 / 0 (landmarks / eyes, nose, mouth /
            rest of the face / outside).
        landmark_uv: (68, 2) int64 (row, col) of each landmark's texel.
    """

    name: str
    dataset_id: str
    train: AlignmentSplit
    val: AlignmentSplit
    test: AlignmentSplit
    image_size: int
    uv_weights: np.ndarray
    landmark_uv: np.ndarray

    def __post_init__(self) -> None:
        size = self.image_size
        for split_name, split in (("train", self.train), ("val", self.val), ("test", self.test)):
            if split.images.shape[2:] != (size, size):
                raise ValueError(
                    f"AlignmentDataset.{split_name}.images must be {size}x{size} (image_size), but got "
                    f"{split.images.shape[2]}x{split.images.shape[3]}"
                )
        if self.uv_weights.shape != (size, size) or self.uv_weights.dtype != np.float32:
            raise ValueError(
                f"AlignmentDataset.uv_weights must be a ({size}, {size}) float32 array, but got shape "
                f"{self.uv_weights.shape} dtype {self.uv_weights.dtype}"
            )
        if self.landmark_uv.shape != (NUM_LANDMARKS, 2) or self.landmark_uv.dtype != np.int64:
            raise ValueError(
                f"AlignmentDataset.landmark_uv must be a ({NUM_LANDMARKS}, 2) int64 array, but got shape "
                f"{self.landmark_uv.shape} dtype {self.landmark_uv.dtype}"
            )


# --------------------------------------------------------------------------------------------------
# Arguments (the generator, the folder reader and the aflw2000 dataset share the rules)
# --------------------------------------------------------------------------------------------------


def _check_generator_arguments(**arguments: Any) -> None:
    """Raise one DatasetError that lists every broken rule at once."""
    problems = [
        f"{name} must be an int >= 3 (one sample per yaw bin), but got {name}={arguments[name]!r}"
        for name in ("n_train", "n_val", "n_test")
        if name in arguments and not (is_int(arguments[name]) and arguments[name] >= 3)
    ]
    size = arguments["image_size"]
    if not (is_int(size) and _MIN_SIZE <= size <= _MAX_SIZE):
        problems.append(
            f"image_size must be an int in [{_MIN_SIZE}, {_MAX_SIZE}], but got image_size={size!r}"
        )
    if not (is_int(arguments["seed"]) and arguments["seed"] >= 0):
        problems.append(f"seed must be an int >= 0, but got seed={arguments['seed']!r}")
    if problems:
        raise DatasetError("bad arguments for 3D face-alignment data: " + "; ".join(problems))


# --------------------------------------------------------------------------------------------------
# Registry
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class AlignmentDatasetSpec:
    """How to build one registered 3D face-alignment dataset.

    Attributes:
        name: the registered name.
        needs_path: whether the data come from a user folder.
        expects: what ``path`` must be, in the words of the error messages.
        build: ``build(path, image_size, n_train, n_val, n_test, seed)`` returns the dataset.
    """

    name: str
    needs_path: bool
    expects: str
    build: Callable[[str | None, int, int, int, int, int], AlignmentDataset] = field(repr=False)


ALIGNMENT_DATASETS: Registry[AlignmentDatasetSpec] = Registry("alignment dataset")


def alignment_dataset_names() -> list[str]:
    """The registered 3D face-alignment dataset names, sorted."""
    return ALIGNMENT_DATASETS.names()


def load_alignment_dataset(
    name: str,
    *,
    path: str | None = None,
    image_size: int = 64,
    n_train: int = 600,
    n_val: int = 150,
    n_test: int = 300,
    seed: int = 0,
) -> AlignmentDataset:
    """Load a registered 3D face-alignment dataset.

    ``faces3d`` is generated (:func:`~trainables.alignment.generator.make_faces3d`) and takes no path.
    ``aflw2000`` takes its train and val splits from the generator (``n_train``, ``n_val``, ``seed``) and
    its test split from the folder at ``path`` (:func:`~trainables.alignment.formats.load_alignment_folder`;
    ``n_test`` is not used): models are trained on synthetic faces and tested on real ones, as MONAS
    trains on synthetic 300W-LP and tests on AFLW2000-3D.

    Args:
        name: a registered name (:func:`alignment_dataset_names`).
        path: the folder of a path-based dataset; must be None for ``faces3d``.
        image_size: side of the square images and UV maps.
        n_train, n_val, n_test: generated samples per split.
        seed: seeds the generator.

    Returns:
        The dataset.

    Raises:
        DatasetError: unknown name, bad argument, or a problem with the folder.
    """
    try:
        spec = ALIGNMENT_DATASETS.get(name)
    except UnknownNameError as err:
        raise DatasetError(f"{err}; pick one of them") from None
    if not spec.needs_path and path is not None:
        raise DatasetError(
            f"alignment dataset {name!r} is generated and takes no path, but got path={path!r}; "
            "remove data.path"
        )
    if spec.needs_path and (path is None or str(path).strip() == ""):
        raise DatasetError(
            f"alignment dataset {name!r} needs a path, but none was given; set data.path to {spec.expects}"
        )
    return spec.build(path, image_size, n_train, n_val, n_test, seed)


# The builders import the generator and the folder reader when a dataset is built: both build on this
# module's values, so importing them here at module level would be circular.


def _build_faces3d(
    path: str | None, image_size: int, n_train: int, n_val: int, n_test: int, seed: int
) -> AlignmentDataset:
    from trainables.alignment.generator import make_faces3d

    return make_faces3d(n_train=n_train, n_val=n_val, n_test=n_test, image_size=image_size, seed=seed)


def _build_aflw2000(
    path: str | None, image_size: int, n_train: int, n_val: int, n_test: int, seed: int
) -> AlignmentDataset:
    from trainables.alignment.formats import _folder_fingerprint, load_alignment_folder
    from trainables.alignment.generator import _generate_split, _generator_identity, _uv_layout

    _check_generator_arguments(n_train=n_train, n_val=n_val, image_size=image_size, seed=seed)
    test = load_alignment_folder(str(path), image_size=image_size)
    _, landmark_uv, weights = _uv_layout(image_size)
    identity = {**_generator_identity(image_size, seed), "n_train": n_train, "n_val": n_val}
    return AlignmentDataset(
        name="aflw2000",
        dataset_id=stable_key({**identity, "name": "aflw2000", "folder": _folder_fingerprint(str(path))}),
        train=_generate_split("train", n_train, image_size, seed),
        val=_generate_split("val", n_val, image_size, seed),
        test=test,
        image_size=image_size,
        uv_weights=weights.copy(),
        landmark_uv=landmark_uv.copy(),
    )


ALIGNMENT_DATASETS.register(
    "faces3d",
    AlignmentDatasetSpec(
        name="faces3d",
        needs_path=False,
        expects="nothing (generated from scikit-image data)",
        build=_build_faces3d,
    ),
)
ALIGNMENT_DATASETS.register(
    "aflw2000",
    AlignmentDatasetSpec(name="aflw2000", needs_path=True, expects=_FOLDER_EXPECTS, build=_build_aflw2000),
)


# --------------------------------------------------------------------------------------------------
# Meta-features
# --------------------------------------------------------------------------------------------------


def alignment_meta_features(ds: AlignmentDataset) -> dict[str, float]:
    """Dataset-level statistics for the benchmark store; never images.

    Args:
        ds: a loaded dataset.

    Returns:
        Finite floats: sizes (``n_train``, ``n_val``, ``n_test``, ``log_n_train``, ``image_size``,
        ``test_has_uv``), pose (``train_abs_yaw_mean``, ``train_abs_yaw_std``, ``train_yaw_bin0..2`` and
        ``test_yaw_bin0..2``: the share of each yaw bin), geometry of the train landmarks
        (``box_size_rel``: mean sqrt(w * h) of the landmark box / image side, ``depth_rel``: mean z range /
        sqrt(w * h)) and pixels of up to 2,000 train images (``pixel_mean``, ``pixel_std``,
        ``mean_contrast``: mean per-image std, ``mean_gradient``: mean absolute neighbour difference),
        and the same pixel statistics of the test images (``test_pixel_mean``, ``test_pixel_std``).
    """
    train, test = ds.train, ds.test
    features: dict[str, float] = {
        "n_train": len(train),
        "n_val": len(ds.val),
        "n_test": len(test),
        "log_n_train": math.log(max(len(train), 1)),
        "image_size": ds.image_size,
        "test_has_uv": float(test.has_uv),
    }
    abs_yaw = np.abs(train.yaw.astype(np.float64))
    features["train_abs_yaw_mean"] = abs_yaw.mean() if len(abs_yaw) else 0.0
    features["train_abs_yaw_std"] = abs_yaw.std() if len(abs_yaw) else 0.0
    for part, split in (("train", train), ("test", test)):
        share = np.bincount(yaw_bin(split.yaw), minlength=3) / max(len(split), 1)
        features.update({f"{part}_yaw_bin{k}": share[k] for k in range(3)})
    lm = train.landmarks.astype(np.float64)
    extent = lm[:, :, :2].max(axis=1) - lm[:, :, :2].min(axis=1)  # (N, 2)
    box = np.sqrt(extent[:, 0] * extent[:, 1])
    features["box_size_rel"] = box.mean() / ds.image_size if len(box) else 0.0
    z_range = lm[:, :, 2].max(axis=1) - lm[:, :, 2].min(axis=1)
    features["depth_rel"] = (z_range / np.maximum(box, 1e-6)).mean() if len(box) else 0.0
    for prefix, split in (("", train), ("test_", test)):
        features.update({prefix + k: v for k, v in _pixel_statistics(split.images).items()})
    return {key: finite(float(v)) for key, v in features.items()}


def _pixel_statistics(images: np.ndarray) -> dict[str, float]:
    if len(images) == 0:
        return {"pixel_mean": 0.0, "pixel_std": 0.0, "mean_contrast": 0.0, "mean_gradient": 0.0}
    rows = np.unique(np.linspace(0, len(images) - 1, num=min(len(images), 2000)).astype(np.int64))
    x = images[rows].astype(np.float64)  # (K, 3, S, S)
    gradient = (np.abs(np.diff(x, axis=2)).mean() + np.abs(np.diff(x, axis=3)).mean()) / 2.0
    return {
        "pixel_mean": x.mean(),
        "pixel_std": x.std(),
        "mean_contrast": x.reshape(len(x), -1).std(axis=1).mean(),
        "mean_gradient": gradient,
    }
