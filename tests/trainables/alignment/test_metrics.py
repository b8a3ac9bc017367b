"""Unit tests for trainables.alignment.metrics: NME, NME by yaw bin, dense NME, UV landmark lookup.

Every expected value is computed by hand in the test, independently of the implementation.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from trainables.alignment.metrics import dense_nme, landmarks_from_uv, nme, nme_by_yaw, yaw_bin


def _toy_gt() -> np.ndarray:
    """Two faces of 3 landmarks; boxes 8 x 2 (sqrt(wh) = 4) and 9 x 4 (sqrt(wh) = 6)."""
    return np.array(
        [
            [[0.0, 0.0, 5.0], [8.0, 2.0, 1.0], [4.0, 1.0, 0.0]],
            [[10.0, 10.0, 0.0], [19.0, 14.0, 0.0], [12.0, 11.0, 3.0]],
        ]
    )


def test_nme_constant_offset_is_d_over_sqrt_wh() -> None:
    gt = _toy_gt()
    pred = gt.copy()
    pred[:, :, 0] += 3.0  # d = 3 pixels in x ...
    pred[:, :, 2] += 100.0  # ... and a z error, which the 2D protocol ignores
    np.testing.assert_allclose(nme(pred, gt), [3.0 / 4.0 * 100.0, 3.0 / 6.0 * 100.0])


def test_nme_mixed_errors_and_3d() -> None:
    gt = _toy_gt()
    pred = gt.copy()
    pred[0, 0, :2] += (3.0, 4.0)  # error 5 on one landmark of face 0
    pred[0, 1, 2] += 12.0  # z error 12 on another: only seen with dims=3
    # face 0: mean over 3 landmarks = 5 / 3, normalised by 4
    np.testing.assert_allclose(nme(pred, gt)[0], 5.0 / 3.0 / 4.0 * 100.0)
    np.testing.assert_allclose(nme(pred, gt, dims=3)[0], (5.0 + 12.0) / 3.0 / 4.0 * 100.0)
    assert nme(pred, gt)[1] == 0.0


def test_nme_accepts_2d_predictions_and_torch_tensors() -> None:
    gt = _toy_gt()
    pred2d = gt[:, :, :2] + np.array([0.0, 2.0])
    expected = [2.0 / 4.0 * 100.0, 2.0 / 6.0 * 100.0]
    np.testing.assert_allclose(nme(pred2d, gt), expected)
    as_tensor = torch.tensor(pred2d, requires_grad=True)
    np.testing.assert_allclose(nme(as_tensor, torch.tensor(gt)), expected)


def test_nme_rejects_bad_input() -> None:
    gt = _toy_gt()
    with pytest.raises(ValueError, match="equal N, L"):
        nme(gt[:, :2], gt)
    flat = gt.copy()
    flat[1, :, 1] = 7.0  # zero-height box
    with pytest.raises(ValueError, match="sample 1"):
        nme(gt, flat)
    with pytest.raises(ValueError, match="dims"):
        nme(gt, gt, dims=4)


def test_yaw_bin_edges() -> None:
    yaw = np.array([0.0, 30.0, -30.0, 30.01, 60.0, -60.5, 90.0, 95.0])
    assert yaw_bin(yaw).tolist() == [0, 0, 0, 1, 1, 2, 2, 2]
    with pytest.raises(ValueError, match="finite"):
        yaw_bin(np.array([1.0, np.nan]))


def test_nme_by_yaw_with_an_empty_bin() -> None:
    per_sample = np.array([1.0, 3.0, 10.0, 2.0])
    yaw = np.array([5.0, -29.0, 75.0, 12.0])  # no face in (30, 60]
    result = nme_by_yaw(per_sample, yaw)
    assert set(result) == {"[0,30]", "[30,60]", "[60,90]", "mean"}
    assert result["[0,30]"] == pytest.approx(2.0)  # (1 + 3 + 2) / 3
    assert math.isnan(result["[30,60]"])
    assert result["[60,90]"] == pytest.approx(10.0)
    assert result["mean"] == pytest.approx(6.0)  # mean of the two non-empty bins, not of the 4 faces

    full = nme_by_yaw(np.array([1.0, 2.0, 6.0]), np.array([10.0, -45.0, 80.0]))
    assert full["mean"] == pytest.approx(3.0)
    empty = nme_by_yaw(np.array([]), np.array([]))
    assert all(math.isnan(v) for v in empty.values())
    with pytest.raises(ValueError, match="equal lengths"):
        nme_by_yaw(np.array([1.0]), np.array([1.0, 2.0]))


def test_landmarks_from_uv_indexing() -> None:
    uv = np.arange(2 * 3 * 4 * 5, dtype=np.float32).reshape(2, 3, 4, 5)
    index = np.array([[0, 0], [3, 4], [1, 2]])
    out = landmarks_from_uv(uv, index)
    assert out.shape == (2, 3, 3)
    for n in range(2):
        for k, (r, c) in enumerate(index):
            assert out[n, k].tolist() == [uv[n, 0, r, c], uv[n, 1, r, c], uv[n, 2, r, c]]
    assert landmarks_from_uv(torch.tensor(uv), torch.tensor(index)).tolist() == out.tolist()
    with pytest.raises(ValueError, match="inside"):
        landmarks_from_uv(uv, np.array([[4, 0]]))
    with pytest.raises(ValueError, match="integer"):
        landmarks_from_uv(uv, index.astype(float))


def test_dense_nme_on_a_tiny_map() -> None:
    gt_uv = np.zeros((1, 3, 2, 2))
    gt_uv[0, 0] = [[0.0, 1.0], [0.0, 1.0]]
    gt_uv[0, 1] = [[0.0, 0.0], [1.0, 1.0]]
    pred = gt_uv.copy()
    pred[0, 0, 0, 0] += 3.0  # texel (0, 0): error 3
    pred[0, 1, 0, 1] += 4.0  # texel (0, 1): error 4
    pred[0, :, 1, 1] += 50.0  # texel (1, 1) has weight 0: ignored
    weights = np.array([[16.0, 3.0], [4.0, 0.0]])
    landmarks = np.array([[[0.0, 0.0, 0.0], [2.0, 8.0, 0.0]]])  # box 2 x 8: sqrt(wh) = 4
    # valid texels (0,0), (0,1), (1,0): unweighted mean error (3 + 4 + 0) / 3, normalised by 4
    np.testing.assert_allclose(dense_nme(pred, gt_uv, weights, landmarks), [7.0 / 3.0 / 4.0 * 100.0])
    pred[0, 2, 1, 0] += 6.0  # a z error counts only with dims=3
    np.testing.assert_allclose(dense_nme(pred, gt_uv, weights, landmarks), [7.0 / 3.0 / 4.0 * 100.0])
    np.testing.assert_allclose(
        dense_nme(pred, gt_uv, weights, landmarks, dims=3), [13.0 / 3.0 / 4.0 * 100.0]
    )
    with pytest.raises(ValueError, match="positive on at least one texel"):
        dense_nme(pred, gt_uv, np.zeros((2, 2)), landmarks)
    with pytest.raises(ValueError, match="weights must have shape"):
        dense_nme(pred, gt_uv, np.ones((3, 3)), landmarks)
