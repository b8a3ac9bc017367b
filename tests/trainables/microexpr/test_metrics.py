"""UAR / UF1 (MEGC-2019) against confusion matrices computed by hand."""

from __future__ import annotations

import numpy as np
import pytest

from trainables.microexpr.metrics import confusion_matrix, uar, uf1


def test_three_class_example_by_hand():
    # true:      0 0 0 0 1 1 1 2 2 2
    # predicted: 0 0 1 2 1 1 0 2 2 1
    truth = [0, 0, 0, 0, 1, 1, 1, 2, 2, 2]
    pred = [0, 0, 1, 2, 1, 1, 0, 2, 2, 1]
    m = confusion_matrix(truth, pred, 3)
    assert m.tolist() == [[2, 1, 1], [1, 2, 0], [0, 1, 2]]
    # recalls: 2/4, 2/3, 2/3 -> UAR = (0.5 + 2/3 + 2/3) / 3
    assert uar(truth, pred, 3) == pytest.approx((0.5 + 2 / 3 + 2 / 3) / 3)
    # F1 = 2TP / (2TP + FP + FN): class 0: 4/(4+1+2)=4/7; class 1: 4/(4+2+1)=4/7; class 2: 4/(4+1+1)=2/3
    assert uf1(truth, pred, 3) == pytest.approx((4 / 7 + 4 / 7 + 2 / 3) / 3)


def test_pooling_over_folds_differs_from_averaging_folds():
    folds = [([0, 0, 1], [0, 1, 1]), ([2, 2], [2, 0]), ([1, 2, 0], [1, 2, 2])]
    truth = sum((t for t, _ in folds), [])
    pred = sum((p for _, p in folds), [])
    # pooled: [[1,1,1],[0,2,0],[1,0,2]] -> recalls 1/3, 1, 2/3
    assert confusion_matrix(truth, pred, 3).tolist() == [[1, 1, 1], [0, 2, 0], [1, 0, 2]]
    assert uar(truth, pred, 3) == pytest.approx((1 / 3 + 1 + 2 / 3) / 3)
    per_fold = np.nanmean([uar(t, p, 3) for t, p in folds])
    assert per_fold != pytest.approx(uar(truth, pred, 3))


def test_perfect_chance_and_missing_class():
    assert uar([0, 1, 2], [0, 1, 2], 3) == 1.0 and uf1([0, 1, 2], [0, 1, 2], 3) == 1.0
    assert uar([0, 0, 1, 1], [0, 0, 0, 0], 3) == pytest.approx(0.5)  # class 2 absent: averaged over 2 classes
    # F1: class 0: 2*2/(4+2+0) = 2/3; class 1: 0 -> 1/3
    assert uf1([0, 0, 1, 1], [0, 0, 0, 0], 3) == pytest.approx(1 / 3)
    with pytest.raises(ValueError, match="labels"):
        uar([0, 3], [0, 1], 3)
