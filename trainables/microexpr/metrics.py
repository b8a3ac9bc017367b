"""Micro-expression recognition metrics (MEGC-2019): unweighted average recall and unweighted F1.

Both are computed on *pooled* predictions: under leave-one-subject-out, the predictions of every fold
are collected first, then one confusion matrix gives the per-class figures, which are averaged with
equal weight per class (paper ``rnas-mer-micro-expression-nas.txt`` §4.2; MEGC-2019):

- ``UAR = (1/C) sum_c TP_c / N_c`` (recall per class; ``N_c`` the true samples of class c),
- ``UF1 = (1/C) sum_c 2 TP_c / (2 TP_c + FP_c + FN_c)``.

Classes without any true sample are left out of both averages (their recall is undefined; MEGC's
composite set has all three classes in every dataset).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

__all__ = ["confusion_matrix", "per_class_f1", "per_class_recall", "uar", "uf1"]


def confusion_matrix(truth: Sequence[int], predicted: Sequence[int], num_classes: int) -> np.ndarray:
    """``(C, C)`` counts, rows = true class, columns = predicted class."""
    truth, predicted = np.asarray(truth, dtype=np.int64), np.asarray(predicted, dtype=np.int64)
    if truth.shape != predicted.shape:
        raise ValueError(f"truth and predicted must have the same length, got {truth.shape} and {predicted.shape}")
    if truth.size and (truth.min() < 0 or predicted.min() < 0 or max(truth.max(), predicted.max()) >= num_classes):
        raise ValueError(f"labels must lie in [0, {num_classes})")
    matrix = np.zeros((num_classes, num_classes), dtype=np.int64)
    np.add.at(matrix, (truth, predicted), 1)
    return matrix


def per_class_recall(matrix: np.ndarray) -> np.ndarray:
    """``TP_c / N_c``; NaN for a class without true samples."""
    support = matrix.sum(axis=1).astype(np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(support > 0, np.diag(matrix) / support, np.nan)


def per_class_f1(matrix: np.ndarray) -> np.ndarray:
    """``2 TP / (2 TP + FP + FN)``; NaN for a class without true samples."""
    tp = np.diag(matrix).astype(np.float64)
    fp = matrix.sum(axis=0) - tp
    fn = matrix.sum(axis=1) - tp
    support = matrix.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        f1 = np.where(2 * tp + fp + fn > 0, 2 * tp / (2 * tp + fp + fn), 0.0)
    return np.where(support > 0, f1, np.nan)


def _mean(values: np.ndarray) -> float:
    kept = values[~np.isnan(values)]
    return float(kept.mean()) if kept.size else float("nan")


def uar(truth: Sequence[int], predicted: Sequence[int], num_classes: int) -> float:
    """Unweighted average recall over the classes present in ``truth``."""
    return _mean(per_class_recall(confusion_matrix(truth, predicted, num_classes)))


def uf1(truth: Sequence[int], predicted: Sequence[int], num_classes: int) -> float:
    """Unweighted (macro) F1 over the classes present in ``truth``."""
    return _mean(per_class_f1(confusion_matrix(truth, predicted, num_classes)))
