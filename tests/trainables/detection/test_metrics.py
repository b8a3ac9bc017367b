"""AP@50 and NMS (HyperFD §B.1) against precision-recall curves computed by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest

from trainables.detection.metrics import ap50, average_precision, box_iou, nms, precision_recall


def _arr(*rows):
    return np.array(rows, dtype=np.float64).reshape(-1, 4)


def test_box_iou_by_hand():
    a = _arr([0, 0, 10, 10], [0, 0, 0, 5])
    b = _arr([5, 0, 15, 10], [0, 0, 10, 10], [20, 20, 30, 30])
    iou = box_iou(a, b)
    assert iou.shape == (2, 3)
    assert iou[0].tolist() == pytest.approx([50 / 150, 1.0, 0.0])
    assert iou[1].tolist() == [0.0, 0.0, 0.0]  # zero-area box


def test_nms_drops_above_threshold_only():
    boxes = _arr([0, 0, 10, 10], [0, 0, 10, 6], [0, 0, 10, 4], [30, 30, 40, 40])
    scores = np.array([0.9, 0.8, 0.7, 0.1])
    # IoU with the top box: 0.6 (> 0.4, dropped), 0.4 (not above 0.4, kept), 0 (kept).
    assert nms(boxes, scores, 0.4).tolist() == [0, 2, 3]
    assert nms(boxes, scores, 0.7).tolist() == [0, 1, 2, 3]


# Two images. A: faces g1 = [0,0,10,10], g2 = [20,20,30,30]. B: face g3 = [0,0,10,10].
_GT = [_arr([0, 0, 10, 10], [20, 20, 30, 30]), _arr([0, 0, 10, 10])]
_BOXES = [
    _arr([0, 0, 10, 10], [1, 0, 11, 10], [20, 20, 30, 30]),  # d1 TP, d2 duplicate of g1 (IoU 0.818), d3 TP
    _arr([50, 50, 60, 60], [0, 0, 10, 20]),  # d4 FP, d5 IoU exactly 0.5 with g3: TP
]
_SCORES = [np.array([0.9, 0.8, 0.3]), np.array([0.7, 0.6])]


def test_precision_recall_curve_by_hand():
    precision, recall = precision_recall(_BOXES, _SCORES, _GT)
    # Ranked: d1 TP, d2 FP, d4 FP, d5 TP, d3 TP; 3 faces.
    assert precision.tolist() == pytest.approx([1, 1 / 2, 1 / 3, 2 / 4, 3 / 5])
    assert recall.tolist() == pytest.approx([1 / 3, 1 / 3, 1 / 3, 2 / 3, 1])


def test_ap_without_nms_by_hand():
    # Envelope: recall (0, 1/3] -> 1, (1/3, 2/3] -> max(1/2, 3/5) = 0.6, (2/3, 1] -> 0.6.
    assert ap50(_BOXES, _SCORES, _GT, nms_iou=None) == pytest.approx((1 + 0.6 + 0.6) / 3)


def test_ap_with_nms_04_by_hand():
    # NMS 0.4 removes d2 (IoU 0.818 with d1). Ranked: d1 TP, d4 FP, d5 TP, d3 TP:
    # precision 1, 1/2, 2/3, 3/4 at recall 1/3, 1/3, 2/3, 1 -> AP = (1 + 0.75 + 0.75) / 3.
    assert ap50(_BOXES, _SCORES, _GT) == pytest.approx(2.5 / 3)


def test_voc_matching_uses_the_best_overlap_only():
    gt = [_arr([0, 0, 10, 10], [2, 0, 12, 10])]
    boxes = [_arr([0, 0, 10, 10], [0.5, 0, 10.5, 10])]
    # d2's best overlap is g1 (0.905), already taken -> FP, although IoU(d2, g2) = 0.739 >= 0.5.
    precision, recall = precision_recall(boxes, [np.array([0.9, 0.8])], gt)
    assert precision.tolist() == [1.0, 0.5] and recall.tolist() == [0.5, 0.5]
    assert ap50(boxes, [np.array([0.9, 0.8])], gt, nms_iou=None) == pytest.approx(0.5)


def test_edge_cases():
    gt = [_arr([0, 0, 10, 10])]
    assert ap50([_arr([0, 0, 10, 10])], [np.array([0.5])], gt) == 1.0
    assert ap50([_arr()], [np.array([])], gt) == 0.0
    assert math.isnan(ap50([_arr([0, 0, 10, 10])], [np.array([0.5])], [_arr()]))
    # A false positive ranked below every true positive does not lower AP.
    assert ap50([_arr([0, 0, 10, 10], [40, 40, 50, 50])], [np.array([0.9, 0.1])], gt) == 1.0
    # ... but ranked above, it halves the precision at full recall.
    assert ap50([_arr([0, 0, 10, 10], [40, 40, 50, 50])], [np.array([0.1, 0.9])], gt) == pytest.approx(0.5)
    assert average_precision(np.array([1.0, 1.0]), np.array([0.5, 1.0])) == 1.0
    with pytest.raises(ValueError, match="one entry per image"):
        precision_recall([_arr()], [], gt)
