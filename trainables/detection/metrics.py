"""Detection metrics: IoU, greedy NMS, AP@50 with all-point interpolation (PASCAL VOC 2010+).

Paper: ``hyperfd-online-automl-face-detection-supplement.txt`` §B.1: NMS on overlapping predictions with
a 0.4 IoU threshold, Average Precision at IoU 0.5 (AP@50), the evaluation scheme of MMDetection's VOC
metric ("area" mode: every recall point counts). Boxes are pixel ``x0, y0, x1, y1`` with exclusive far
edges, so a box's area is ``(x1 - x0) * (y1 - y0)`` (no +1 as in the 2007 devkit).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

__all__ = ["ap50", "average_precision", "box_iou", "nms", "precision_recall"]


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Pairwise IoU. ``a``: (N, 4), ``b``: (M, 4) -> (N, M) float64; boxes of zero area give IoU 0."""
    a = np.asarray(a, dtype=np.float64).reshape(-1, 4)
    b = np.asarray(b, dtype=np.float64).reshape(-1, 4)
    ix = np.clip(np.minimum(a[:, None, 2], b[None, :, 2]) - np.maximum(a[:, None, 0], b[None, :, 0]), 0, None)
    iy = np.clip(np.minimum(a[:, None, 3], b[None, :, 3]) - np.maximum(a[:, None, 1], b[None, :, 1]), 0, None)
    inter = ix * iy
    area_a = np.clip(a[:, 2] - a[:, 0], 0, None) * np.clip(a[:, 3] - a[:, 1], 0, None)
    area_b = np.clip(b[:, 2] - b[:, 0], 0, None) * np.clip(b[:, 3] - b[:, 1], 0, None)
    union = area_a[:, None] + area_b[None, :] - inter
    return np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)


def nms(boxes: np.ndarray, scores: np.ndarray, iou_threshold: float = 0.4) -> np.ndarray:
    """Greedy non-maximum suppression: indices kept, by decreasing score.

    A box is dropped when its IoU with an already kept, higher-scoring box exceeds ``iou_threshold``.
    Ties in score keep the earlier box first.
    """
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    order = np.argsort(-np.asarray(scores, dtype=np.float64), kind="stable")
    keep: list[int] = []
    while order.size:
        best = int(order[0])
        keep.append(best)
        if order.size == 1:
            break
        overlap = box_iou(boxes[best : best + 1], boxes[order[1:]])[0]
        order = order[1:][overlap <= iou_threshold]
    return np.asarray(keep, dtype=np.int64)


def precision_recall(
    boxes: Sequence[np.ndarray],
    scores: Sequence[np.ndarray],
    ground_truth: Sequence[np.ndarray],
    *,
    iou_threshold: float = 0.5,
) -> tuple[np.ndarray, np.ndarray]:
    """Precision and recall after each detection, all images pooled by decreasing score.

    VOC matching: a detection is a true positive when its best-overlapping ground-truth box in the same
    image has IoU >= ``iou_threshold`` and was not matched by a higher-scoring detection; otherwise it is
    a false positive (a duplicate included).

    Args:
        boxes: per image, (K_i, 4) detections.
        scores: per image, (K_i,) confidences.
        ground_truth: per image, (M_i, 4) face boxes.

    Returns:
        ``(precision, recall)``, each (K,) float64 with K = all detections; recall is NaN-free only when
        there is at least one ground-truth box.
    """
    if not len(boxes) == len(scores) == len(ground_truth):
        raise ValueError(
            f"boxes, scores and ground_truth need one entry per image, got {len(boxes)}, {len(scores)}, "
            f"{len(ground_truth)}"
        )
    n_gt = int(sum(len(g) for g in ground_truth))
    image_of, score_of, row_of = [], [], []
    for i, (b, s) in enumerate(zip(boxes, scores)):
        k = len(np.asarray(s).reshape(-1))
        if np.asarray(b).reshape(-1, 4).shape[0] != k:
            raise ValueError(f"image {i}: {np.asarray(b).reshape(-1, 4).shape[0]} boxes but {k} scores")
        image_of += [i] * k
        row_of += list(range(k))
        score_of += np.asarray(s, dtype=np.float64).reshape(-1).tolist()
    order = np.argsort(-np.asarray(score_of, dtype=np.float64), kind="stable")
    matched = [np.zeros(len(g), dtype=bool) for g in ground_truth]
    ious = [box_iou(np.asarray(b).reshape(-1, 4), np.asarray(g).reshape(-1, 4)) for b, g in zip(boxes, ground_truth)]
    tp = np.zeros(len(order), dtype=np.float64)
    for rank, det in enumerate(order):
        image, row = image_of[det], row_of[det]
        if len(ground_truth[image]) == 0:
            continue
        overlaps = ious[image][row]
        best = int(np.argmax(overlaps))
        if overlaps[best] >= iou_threshold and not matched[image][best]:
            matched[image][best] = True
            tp[rank] = 1.0
    cum_tp = np.cumsum(tp)
    precision = cum_tp / np.arange(1, len(order) + 1)
    recall = cum_tp / n_gt if n_gt else np.full(len(order), math.nan)
    return precision, recall


def average_precision(precision: np.ndarray, recall: np.ndarray) -> float:
    """All-point interpolated AP: area under the precision envelope (max precision at recall >= r)."""
    mrec = np.concatenate([[0.0], np.asarray(recall, dtype=np.float64), [1.0]])
    mpre = np.concatenate([[0.0], np.asarray(precision, dtype=np.float64), [0.0]])
    mpre = np.maximum.accumulate(mpre[::-1])[::-1]
    steps = np.flatnonzero(mrec[1:] != mrec[:-1])
    return float(np.sum((mrec[steps + 1] - mrec[steps]) * mpre[steps + 1]))


def ap50(
    boxes: Sequence[np.ndarray],
    scores: Sequence[np.ndarray],
    ground_truth: Sequence[np.ndarray],
    *,
    nms_iou: float | None = 0.4,
    iou_threshold: float = 0.5,
) -> float:
    """AP@50 of a detector's raw outputs: per-image NMS at ``nms_iou`` (None: none), then VOC AP.

    Returns:
        AP in [0, 1]; NaN when the images hold no ground-truth box (AP is undefined then).
    """
    if sum(len(g) for g in ground_truth) == 0:
        return math.nan
    kept_boxes, kept_scores = [], []
    for b, s in zip(boxes, scores):
        b = np.asarray(b, dtype=np.float64).reshape(-1, 4)
        s = np.asarray(s, dtype=np.float64).reshape(-1)
        keep = nms(b, s, nms_iou) if nms_iou is not None and len(s) else np.arange(len(s))
        kept_boxes.append(b[keep])
        kept_scores.append(s[keep])
    precision, recall = precision_recall(kept_boxes, kept_scores, ground_truth, iou_threshold=iou_threshold)
    return average_precision(precision, recall)
