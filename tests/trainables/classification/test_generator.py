"""The cluttered-digits task (trainables/classification/generator.py): fixed, well-formed, leak-free."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.datasets import load_digits

from trainables.classification.data import load_dataset
from trainables.classification import generator
from trainables.classification.generator import CANVAS, cluttered_digits


@pytest.fixture(scope="module")
def drawn() -> tuple[np.ndarray, np.ndarray]:
    return cluttered_digits()


def test_shapes_range_and_labels(drawn: tuple[np.ndarray, np.ndarray]) -> None:
    x, y = drawn
    assert x.shape == (1797, CANVAS, CANVAS) and x.dtype == np.float32
    assert 0.0 <= x.min() and x.max() <= 1.0
    assert np.array_equal(y, load_digits().target)  # image i is source digit i, with its label


def test_one_fixed_dataset(drawn: tuple[np.ndarray, np.ndarray]) -> None:
    again, _ = cluttered_digits()
    assert np.array_equal(drawn[0], again)
    first = load_dataset("cluttered_digits")
    assert first.dataset_id == load_dataset("cluttered_digits").dataset_id
    other = load_dataset("cluttered_digits", split_seed=1)
    assert other.dataset_id != first.dataset_id
    assert (first.in_channels, first.image_size, first.num_classes) == (1, (CANVAS, CANVAS), 10)


def test_splits_never_share_a_source_digit() -> None:
    data = load_dataset("cluttered_digits")
    parts = [set(split.index.tolist()) for split in (data.train, data.val, data.test)]
    assert not (parts[0] & parts[1]) and not (parts[0] & parts[2]) and not (parts[1] & parts[2])
    assert sum(len(p) for p in parts) == 1797


def test_digit_is_large_and_moves(drawn: tuple[np.ndarray, np.ndarray]) -> None:
    """The digit covers 12-20 px and sits anywhere: its ink is spread and its centre varies."""
    x, _ = drawn
    ink = x > 0.5
    rows = ink.any(axis=2)
    heights = rows.shape[1] - np.argmax(rows[:, ::-1], axis=1) - np.argmax(rows, axis=1)
    assert np.median(heights) >= 12  # scaled up from 8 px (clutter can only make it taller)
    centres = np.array([np.mean(np.nonzero(image)[0]) for image in ink[:200]])
    assert centres.std() > 1.5  # not centred like the source digits


def test_clutter_and_noise_are_there(drawn: tuple[np.ndarray, np.ndarray], monkeypatch: pytest.MonkeyPatch) -> None:
    x, _ = drawn
    background = x[x < 0.3]
    assert 0.01 < background.std() < 0.1  # sensor noise (std 0.05 before clipping)
    # 1-3 fragments of other digits add ink: measured 105 px of ink per image against 80 without them
    monkeypatch.setattr(generator, "_CLUTTER", (0, 0))
    clean, _ = generator.cluttered_digits()
    assert (x > 0.5).sum(axis=(1, 2)).mean() > 1.15 * (clean > 0.5).sum(axis=(1, 2)).mean()
