"""The real format of 3D face-alignment data: AFLW2000-3D / 300W-LP folders.

MONAS (``../shared/papers/monas-multipath-oneshot-nas-3d-face-alignment.txt``, §IV) tests on AFLW2000-3D.
A folder of ``*.jpg`` (or ``*.png``) images, searched recursively, each with a same-stem ``.mat`` holding
``pt3d_68`` (3x68: x, y, z in image pixels; AFLW2000-3D) or ``pt2d`` (2x68, z = 0; 300W-LP) and
``Pose_Para`` (1x7: pitch, yaw, roll in radians, tx, ty, tz, scale). :func:`load_alignment_folder` crops
a square 1.6x the landmark box around each face, resizes it to ``image_size`` and maps the landmarks
along. The ``aflw2000`` dataset (:mod:`trainables.alignment.data`) takes its train and val splits from
the generator (real 300W-LP is too large to ship) and its test split from the folder.
Every problem with the input raises :class:`~trainables.checks.DatasetError` with a one-line message.
"""

from __future__ import annotations

import hashlib
import math
from pathlib import Path

import numpy as np

from trainables.alignment.data import _FOLDER_EXPECTS, NUM_LANDMARKS, AlignmentSplit, _check_generator_arguments
from trainables.checks import DatasetError, one_line

__all__ = ["load_alignment_folder"]

_CROP_ENLARGE = 1.6  # loader: square crop side = 1.6 * the longer side of the landmark box

_IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")
_MAT_FIX = "re-export it with pt3d_68 (3x68) or pt2d (2x68) and Pose_Para (1x7, radians) as in AFLW2000-3D"


def load_alignment_folder(path: str, *, image_size: int = 64) -> AlignmentSplit:
    """Read an AFLW2000-3D / 300W-LP style folder into one split (landmarks only, no UV ground truth).

    Every ``*.jpg`` / ``*.jpeg`` / ``*.png`` under ``path`` (recursively, sorted by relative path) needs a
    same-stem ``.mat`` beside it; ``.mat`` files without an image (300W-LP's ``landmarks/`` folder) are
    ignored. A square 1.6x the longer side of the landmark box, centred on the box, is cut out (zero
    padding outside the photograph), resized to ``image_size`` (bilinear) and the landmarks are mapped
    along: ``x' = (x + 0.5 - left) * k - 0.5`` (pixel centres at integers, as the files are taken), the
    same for y, and ``z' = z * k`` with ``k = image_size / side``. Yaw is ``Pose_Para[1]`` in degrees,
    clipped to [-90, 90].

    Args:
        path: the folder.
        image_size: side of the output images, in [16, 512].

    Returns:
        An :class:`AlignmentSplit` with ``has_uv=False`` and all-zero ``uv_maps`` (a read-only view).

    Raises:
        DatasetError: missing folder, no image with annotation, an image without .mat, an unreadable file,
            a .mat without pt3d_68/pt2d or Pose_Para, or wrong shapes; one line naming the file and the fix.
    """
    _check_generator_arguments(image_size=image_size, seed=0)
    folder = _alignment_folder(path)
    images, landmarks, yaws = [], [], []
    for image_file in _image_files(folder):
        points, yaw = _read_annotation(image_file.with_suffix(".mat"))
        photo = _read_image(image_file)
        crop, mapped = _crop_face(photo, points, image_size, image_file)
        images.append(crop)
        landmarks.append(mapped)
        yaws.append(yaw)
    n = len(images)
    zero = np.zeros((1, 3, image_size, image_size), dtype=np.float32)
    zeros = np.broadcast_to(zero, (n, 3, image_size, image_size))  # no UV ground truth: a view, no memory
    return AlignmentSplit(
        images=np.stack(images).astype(np.float32),
        uv_maps=zeros,
        landmarks=np.stack(landmarks).astype(np.float32),
        yaw=np.asarray(yaws, dtype=np.float32),
        has_uv=False,
    )


def _alignment_folder(path: str | None) -> Path:
    if path is None or str(path).strip() == "":
        raise DatasetError(
            f"alignment data need a path, but none was given; set data.path to {_FOLDER_EXPECTS}"
        )
    folder = Path(path).expanduser()
    if not folder.exists():
        raise DatasetError(f"alignment folder {folder} does not exist; set data.path to {_FOLDER_EXPECTS}")
    if not folder.is_dir():
        raise DatasetError(
            f"alignment path {folder} is a file, not a folder; set data.path to {_FOLDER_EXPECTS}"
        )
    return folder


def _image_files(folder: Path) -> list[Path]:
    try:
        files = sorted(
            (p for p in folder.rglob("*") if p.suffix.lower() in _IMAGE_SUFFIXES and p.is_file()),
            key=lambda p: p.relative_to(folder).as_posix(),
        )
    except OSError as err:
        raise DatasetError(
            f"cannot list alignment folder {folder} ({one_line(err)}); check its permissions"
        ) from None
    if not files:
        mats = sum(1 for _ in folder.rglob("*.mat"))
        raise DatasetError(
            f"alignment folder {folder} holds no *.jpg/*.png images ({mats} .mat files); set data.path to "
            f"{_FOLDER_EXPECTS}"
        )
    for image_file in files:
        if not image_file.with_suffix(".mat").is_file():
            raise DatasetError(
                f"image {image_file} has no annotation {image_file.with_suffix('.mat').name} beside it; "
                "put its .mat (pt3d_68 or pt2d, and Pose_Para) next to it or remove the image"
            )
    return files


def _read_annotation(mat_file: Path) -> tuple[np.ndarray, float]:
    """(68, 3) float64 landmarks (z = 0 for pt2d) and the yaw in degrees of one .mat file."""
    from scipy.io import loadmat

    try:
        content = loadmat(str(mat_file))
    except Exception as err:  # noqa: BLE001 - scipy raises many types for corrupt files
        raise DatasetError(
            f"annotation file {mat_file} is not a readable .mat file ({one_line(err)}); {_MAT_FIX}"
        ) from None
    keys = sorted(k for k in content if not k.startswith("__"))
    if "pt3d_68" in content:
        points, name, rows = np.asarray(content["pt3d_68"]), "pt3d_68", 3
    elif "pt2d" in content:
        points, name, rows = np.asarray(content["pt2d"]), "pt2d", 2
    else:
        raise DatasetError(
            f"annotation file {mat_file} lacks pt3d_68 (3x68) and pt2d (2x68) "
            f"(keys: {', '.join(keys) or 'none'}); {_MAT_FIX}"
        )
    if "Pose_Para" not in content:
        raise DatasetError(
            f"annotation file {mat_file} lacks Pose_Para (1x7: pitch, yaw, roll in radians, tx, ty, tz, "
            f"scale) (keys: {', '.join(keys)}); {_MAT_FIX}"
        )
    pose = np.asarray(content["Pose_Para"])
    if points.shape != (rows, NUM_LANDMARKS) or points.dtype.kind not in "iuf":
        raise DatasetError(
            f"annotation file {mat_file}: {name} must be a numeric ({rows}, 68) array, but got shape "
            f"{points.shape} dtype {points.dtype}; {_MAT_FIX}"
        )
    if pose.size != 7 or pose.dtype.kind not in "iuf":
        raise DatasetError(
            f"annotation file {mat_file}: Pose_Para must hold 7 numbers (1x7), but got shape {pose.shape} "
            f"dtype {pose.dtype}; {_MAT_FIX}"
        )
    points = points.astype(np.float64).T  # (68, rows)
    yaw = float(pose.reshape(-1)[1])
    if not (np.isfinite(points).all() and math.isfinite(yaw)):
        raise DatasetError(
            f"annotation file {mat_file} holds NaN or infinite values in {name} or Pose_Para; {_MAT_FIX}"
        )
    if rows == 2:
        points = np.concatenate([points, np.zeros((NUM_LANDMARKS, 1))], axis=1)
    return points, float(np.clip(math.degrees(yaw), -90.0, 90.0))


def _read_image(image_file: Path) -> np.ndarray:
    """(H, W, 3) float64 RGB on [0, 1]."""
    from skimage.io import imread

    try:
        image = np.asarray(imread(str(image_file)))
    except Exception as err:  # noqa: BLE001 - imageio / PIL raise many types for corrupt files
        raise DatasetError(
            f"image {image_file} cannot be read ({one_line(err)}); replace it with a valid JPEG or PNG"
        ) from None
    if image.ndim == 2:
        image = np.repeat(image[:, :, None], 3, axis=2)
    if image.ndim != 3 or image.shape[2] not in (1, 3, 4) or min(image.shape[:2]) < 2:
        raise DatasetError(
            f"image {image_file} has shape {image.shape}, not (H, W), (H, W, 3) or (H, W, 4); replace it "
            "with an RGB or grayscale JPEG or PNG"
        )
    if image.shape[2] == 1:
        image = np.repeat(image, 3, axis=2)
    scale = float(np.iinfo(image.dtype).max) if image.dtype.kind in "ui" else 1.0
    return image[:, :, :3].astype(np.float64) / scale


def _crop_face(
    photo: np.ndarray, points: np.ndarray, size: int, image_file: Path
) -> tuple[np.ndarray, np.ndarray]:
    """Square crop around the landmark box -> ((3, S, S) image, (68, 3) landmarks in the crop)."""
    from skimage.transform import AffineTransform, warp

    low, high = points[:, :2].min(axis=0), points[:, :2].max(axis=0)
    side = float((high - low).max()) * _CROP_ENLARGE
    if not side > 0:
        raise DatasetError(
            f"annotation of image {image_file} has all 68 landmarks at one point; fix its .mat file"
        )
    k = size / side
    left, top = (low + high) / 2.0 + 0.5 - side / 2.0  # crop corner in pixel-edge coordinates
    # warp maps output (col, row) centres to input centres: in = (out + 0.5) / k + corner - 0.5.
    inverse = AffineTransform(scale=1.0 / k, translation=(0.5 / k + left - 0.5, 0.5 / k + top - 0.5))
    crop = warp(photo, inverse, output_shape=(size, size), order=1, mode="constant", cval=0.0)
    mapped = np.empty_like(points)
    mapped[:, 0] = (points[:, 0] + 0.5 - left) * k - 0.5
    mapped[:, 1] = (points[:, 1] + 0.5 - top) * k - 0.5
    mapped[:, 2] = points[:, 2] * k
    return crop.transpose(2, 0, 1), mapped


def _folder_fingerprint(path: str) -> str:
    """sha256 over (relative name, size, content hash) of every image and its .mat."""
    folder = _alignment_folder(path)
    digest = hashlib.sha256()
    for image_file in _image_files(folder):
        for file in (image_file, image_file.with_suffix(".mat")):
            content = file.read_bytes()
            digest.update(f"{file.relative_to(folder).as_posix()}:{len(content)}:".encode())
            digest.update(hashlib.sha256(content).digest())
    return digest.hexdigest()
