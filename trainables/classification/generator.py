"""Cluttered digits: a seeded classification task built on scikit-learn's digits where architecture matters.

Why it exists (issue 13): on the 8x8 digits every reasonable network of the global space reaches about
98.5 % validation accuracy, so a relative improvement (RI, Efficient Global NAS §4.1) there is decided
by single test images. Here each digit is scaled up (1.5-2.5x, so 12-20 px), put at a random place on a
24x24 canvas among fragments of other digits, with a little sensor noise. Recognising it needs a
receptive field that covers the digit and translation-invariant features, which is what depth, kernel
size and the operation choice of the global space trade against parameters: the 30 random networks of
``configs/macro_micro.yaml``'s baselines (seeds 0-2) reached 56.5-90.8 % validation accuracy after 16
epochs, Spearman 0.28 with their parameter counts (``macro_micro_ri``'s ``task_separation`` in
``benchmarks/README.md``).

The task is one fixed dataset (the generator's own seed is a constant): ``split_seed`` of
:func:`~trainables.classification.data.load_dataset` varies the split, as for every other dataset. Every
image comes from exactly one source digit and the clutter is drawn per image, so splitting images never
puts one source digit in two splits.
"""

from __future__ import annotations

import numpy as np

__all__ = ["CANVAS", "GENERATOR_VERSION", "cluttered_digits"]

CANVAS = 24
# Bump when the drawing below changes: it enters the dataset's fingerprint, hence its dataset_id, so
# benchmark rows of the old images are not served for the new ones.
GENERATOR_VERSION = 1
_SEED = 20261203  # the generator's own random stream (one fixed dataset)
_SCALE = (1.5, 2.5)  # digit side 12-20 px on the canvas
_CLUTTER = (1, 3)  # fragments of other digits per image (inclusive)
_FRAGMENT = 3  # a fragment is a 3x3 crop of the source digit, scaled like a digit
_NOISE = 0.05  # std of the additive Gaussian noise, on the [0, 1] scale


def cluttered_digits() -> tuple[np.ndarray, np.ndarray]:
    """All 1,797 digits drawn on the cluttered canvas.

    Returns:
        ``(x, y)``: x (1797, 24, 24) float32 on [0, 1]; y (1797,) int64, the source digit's label.
    """
    from sklearn.datasets import load_digits

    bunch = load_digits()
    digits = np.asarray(bunch.images, dtype=np.float64) / 16.0  # (1797, 8, 8) on [0, 1]
    labels = np.asarray(bunch.target, dtype=np.int64)
    rng = np.random.default_rng(_SEED)
    canvas = np.zeros((len(digits), CANVAS, CANVAS), dtype=np.float64)
    for i, image in enumerate(canvas):
        for _ in range(int(rng.integers(_CLUTTER[0], _CLUTTER[1] + 1))):
            other = _scaled(digits[int(rng.integers(len(digits)))], rng)
            side = round(_FRAGMENT * other.shape[0] / 8)
            top, left = rng.integers(0, other.shape[0] - side + 1, size=2)
            _paste(image, other[top:top + side, left:left + side], rng)
        _paste(image, _scaled(digits[i], rng), rng)
        image += rng.normal(0.0, _NOISE, size=image.shape)
    return np.clip(canvas, 0.0, 1.0).astype(np.float32), labels


def _scaled(digit: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """``digit`` resized by a random factor in :data:`_SCALE` (bilinear, no anti-aliasing: it grows)."""
    from skimage.transform import resize

    side = round(8 * float(rng.uniform(*_SCALE)))
    return resize(digit, (side, side), order=1, anti_aliasing=False)


def _paste(image: np.ndarray, patch: np.ndarray, rng: np.random.Generator) -> None:
    """Put ``patch`` at a random place of ``image``, keeping the brighter pixel where strokes cross."""
    top, left = rng.integers(0, CANVAS - patch.shape[0] + 1, size=2)
    region = image[top:top + patch.shape[0], left:left + patch.shape[1]]
    np.maximum(region, patch, out=region)
