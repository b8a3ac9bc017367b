"""3D face-alignment metrics: NME on 68 landmarks, NME by yaw bin, dense NME on UV position maps.

The protocol is AFLW2000-3D's as used by PRNet and 3DDFA and reported by MONAS
(``../shared/papers/monas-multipath-oneshot-nas-3d-face-alignment.txt``, Table I): the normalised mean
error of a face is the mean 2D (x, y) point-to-point distance between prediction and ground truth, divided
by ``sqrt(w * h)`` of the ground-truth landmarks' bounding box, in percent; faces are grouped by absolute
yaw into ``[0, 30]``, ``(30, 60]`` and ``(60, 90]`` degrees and the "mean NME" is the mean of the three
bin means (so every pose range weighs the same, whatever its share of the test set).

All functions take numpy arrays or torch tensors (converted with ``.detach().cpu().numpy()``; torch is
never imported here) and return numpy values in float64.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

__all__ = [
    "YAW_BIN_NAMES",
    "dense_nme",
    "landmarks_from_uv",
    "nme",
    "nme_by_yaw",
    "yaw_bin",
]

# Keys of nme_by_yaw, in bin order (MONAS Table I headings).
YAW_BIN_NAMES: tuple[str, str, str] = ("[0,30]", "[30,60]", "[60,90]")


def _as_numpy(value: Any) -> np.ndarray:
    """A numpy view of an array or a (possibly CUDA, possibly grad-tracking) torch tensor."""
    if hasattr(value, "detach") and hasattr(value, "cpu"):
        value = value.detach().cpu().numpy()
    return np.asarray(value)


def yaw_bin(yaw_degrees: Any) -> np.ndarray:
    """The AFLW2000-3D pose bin of each yaw angle.

    Args:
        yaw_degrees: (N,) yaw in degrees; the sign is ignored.

    Returns:
        (N,) int64: 0 for ``|yaw|`` in [0, 30], 1 for (30, 60], 2 for (60, 90]. Angles beyond 90 degrees
        (a few AFLW2000-3D annotations) fall into bin 2.

    Raises:
        ValueError: a yaw is NaN or infinite.
    """
    yaw = np.abs(_as_numpy(yaw_degrees).astype(np.float64))
    if not np.isfinite(yaw).all():
        bad = int((~np.isfinite(yaw)).sum())
        raise ValueError(f"yaw must be finite degrees, but got {bad} NaN or infinite values")
    return (yaw > 30.0).astype(np.int64) + (yaw > 60.0).astype(np.int64)


def landmarks_from_uv(uv_maps: Any, landmark_uv: Any) -> np.ndarray:
    """Read landmarks off UV position maps (PRNet: landmarks are fixed texels of the UV map).

    Args:
        uv_maps: (N, 3, H, W) UV position maps (channels x, y, z).
        landmark_uv: (L, 2) integer (row, col) of each landmark's texel.

    Returns:
        (N, L, 3) float64 landmarks (x, y, z).

    Raises:
        ValueError: wrong shapes, or a texel outside the map.
    """
    maps = _as_numpy(uv_maps)
    index = _as_numpy(landmark_uv)
    if maps.ndim != 4 or maps.shape[1] != 3:
        raise ValueError(f"uv_maps must have shape (N, 3, H, W), but got {maps.shape}")
    if index.ndim != 2 or index.shape[1] != 2 or index.dtype.kind not in "iu":
        raise ValueError(
            f"landmark_uv must be an (L, 2) integer array, but got shape {index.shape} dtype {index.dtype}"
        )
    height, width = maps.shape[2:]
    rows, cols = index[:, 0], index[:, 1]
    if len(index) and (rows.min() < 0 or cols.min() < 0 or rows.max() >= height or cols.max() >= width):
        raise ValueError(f"landmark_uv must lie inside the {height}x{width} UV map, but got rows "
                         f"{rows.min()}..{rows.max()} and cols {cols.min()}..{cols.max()}")
    return maps[:, :, rows, cols].transpose(0, 2, 1).astype(np.float64)  # (N, L, 3)


def _box_norm(gt: np.ndarray) -> np.ndarray:
    """(N, L, >=2) landmarks -> (N,) sqrt(w * h) of each face's (x, y) bounding box."""
    extent = gt[:, :, :2].max(axis=1) - gt[:, :, :2].min(axis=1)  # (N, 2) = (w, h)
    norm = np.sqrt(extent[:, 0] * extent[:, 1])
    bad = np.flatnonzero(~(norm > 0))
    if len(bad):
        raise ValueError(
            f"the ground-truth landmark box must have a positive area, but sample {int(bad[0])} has "
            f"w x h = {extent[bad[0], 0]:g} x {extent[bad[0], 1]:g}"
        )
    return norm


def _check_dims(dims: int) -> None:
    if dims not in (2, 3):
        raise ValueError(f"dims must be 2 (x, y; the AFLW2000-3D protocol) or 3 (x, y, z), but got {dims!r}")


def nme(pred: Any, gt: Any, *, dims: int = 2) -> np.ndarray:
    """Normalised mean error of each face, in percent (AFLW2000-3D protocol).

    ``nme_i = mean_l ||pred_il - gt_il|| / sqrt(w_i * h_i) * 100``, with ``w_i, h_i`` the size of the
    (x, y) bounding box of face i's ground-truth landmarks.

    Args:
        pred: (N, L, 2 or 3) predicted landmarks in image pixels.
        gt: (N, L, 2 or 3) ground-truth landmarks.
        dims: 2 compares (x, y) only (the protocol of MONAS Table I); 3 adds z (needs 3 columns).

    Returns:
        (N,) float64 NME in percent.

    Raises:
        ValueError: mismatched shapes, too few columns for ``dims``, or a degenerate ground-truth box.
    """
    _check_dims(dims)
    p, g = _as_numpy(pred).astype(np.float64), _as_numpy(gt).astype(np.float64)
    if p.ndim != 3 or g.ndim != 3 or p.shape[:2] != g.shape[:2] or min(p.shape[2], g.shape[2]) < dims:
        raise ValueError(
            f"pred and gt must be (N, L, 2|3) arrays with equal N, L and >= {dims} columns, but got "
            f"{p.shape} and {g.shape}"
        )
    error = np.linalg.norm(p[:, :, :dims] - g[:, :, :dims], axis=2)  # (N, L)
    return error.mean(axis=1) / _box_norm(g) * 100.0


def nme_by_yaw(per_sample: Any, yaw: Any) -> dict[str, float]:
    """Mean NME per absolute-yaw bin and their mean (MONAS Table I).

    Args:
        per_sample: (N,) NME of each face (e.g. from :func:`nme`).
        yaw: (N,) yaw in degrees.

    Returns:
        ``{"[0,30]", "[30,60]", "[60,90]", "mean"}``: the mean NME of the faces in each bin (NaN for an
        empty bin) and ``mean``, the mean of the non-empty bins' means (NaN when all are empty).

    Raises:
        ValueError: mismatched lengths or non-finite yaw.
    """
    values = _as_numpy(per_sample).astype(np.float64).reshape(-1)
    bins = yaw_bin(_as_numpy(yaw).reshape(-1))
    if len(values) != len(bins):
        raise ValueError(f"per_sample and yaw must have equal lengths, but got {len(values)} and {len(bins)}")
    result: dict[str, float] = {}
    for index, name in enumerate(YAW_BIN_NAMES):
        members = values[bins == index]
        result[name] = float(members.mean()) if len(members) else math.nan
    filled = [v for v in result.values() if not math.isnan(v)]
    result["mean"] = float(np.mean(filled)) if filled else math.nan
    return result


def dense_nme(pred_uv: Any, gt_uv: Any, weights: Any, gt_landmarks: Any, *, dims: int = 2) -> np.ndarray:
    """Normalised mean error over all face texels of UV position maps, in percent.

    The same normalisation as :func:`nme` (``sqrt(w * h)`` of the ground-truth landmark box), averaged
    over every texel whose weight is positive (the face region; PRNet's dense alignment).

    Args:
        pred_uv: (N, 3, H, W) predicted UV position maps (x, y, z in pixels).
        gt_uv: (N, 3, H, W) ground-truth UV position maps.
        weights: (H, W) texel weights; texels with weight > 0 are evaluated, unweighted.
        gt_landmarks: (N, L, 2|3) ground-truth landmarks, only for the normalisation.
        dims: 2 compares (x, y) (default, as :func:`nme`); 3 adds z.

    Returns:
        (N,) float64 dense NME in percent.

    Raises:
        ValueError: mismatched shapes, no texel with positive weight, or a degenerate landmark box.
    """
    _check_dims(dims)
    p, g = _as_numpy(pred_uv).astype(np.float64), _as_numpy(gt_uv).astype(np.float64)
    w, lm = _as_numpy(weights), _as_numpy(gt_landmarks).astype(np.float64)
    if p.shape != g.shape or p.ndim != 4 or p.shape[1] != 3:
        raise ValueError(
            f"pred_uv and gt_uv must both have shape (N, 3, H, W), but got {p.shape} and {g.shape}"
        )
    if w.shape != p.shape[2:]:
        raise ValueError(f"weights must have shape (H, W) = {p.shape[2:]}, but got {w.shape}")
    if lm.ndim != 3 or len(lm) != len(p) or lm.shape[2] < 2:
        raise ValueError(f"gt_landmarks must have shape ({len(p)}, L, 2|3), but got {lm.shape}")
    valid = w > 0
    if not valid.any():
        raise ValueError("weights must be positive on at least one texel (the face region), but all are <= 0")
    error = np.linalg.norm(p[:, :dims, valid] - g[:, :dims, valid], axis=1)  # (N, V)
    return error.mean(axis=1) / _box_norm(lm) * 100.0
