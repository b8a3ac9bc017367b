"""The real images every data generator starts from (DESIGN.md §4: shipped by scikit-image, no network).

- :func:`lfw_images` / :func:`lfw_faces`: scikit-image's ``lfw_subset``, 200 grey 25x25 crops, the first
  100 faces and the last 100 non-faces. The classification set ``lfw_faces`` uses all 200; the 3D-face,
  detection and micro-expression generators texture, paste or animate the 100 faces.
- :func:`sample_photograph`: one of scikit-image's sample photographs, the backgrounds faces are
  composited onto.

The arrays are loaded once per process and read-only: every caller shares them.
"""

from __future__ import annotations

import functools

import numpy as np

__all__ = ["LFW_FACES", "lfw_faces", "lfw_images", "sample_photograph"]

LFW_FACES = 100  # lfw_subset's first 100 images are faces, the last 100 are not


@functools.lru_cache(maxsize=4)
def lfw_images(dtype: type = np.float64) -> np.ndarray:
    """All of scikit-image's ``lfw_subset``.

    Args:
        dtype: the dtype of the returned array (the data are float64 as shipped).

    Returns:
        (200, 25, 25) read-only, on [0, 1]: 100 faces, then 100 non-faces.
    """
    from skimage.data import lfw_subset

    images = np.asarray(lfw_subset()).astype(dtype)  # a copy of our own: safe to make read-only
    images.setflags(write=False)
    return images


def lfw_faces(dtype: type = np.float64) -> np.ndarray:
    """The 100 faces of ``lfw_subset`` (:func:`lfw_images`' first 100).

    Args:
        dtype: the dtype of the returned array.

    Returns:
        (100, 25, 25) read-only view on [0, 1].
    """
    return lfw_images(dtype)[:LFW_FACES]


def sample_photograph(name: str) -> np.ndarray:
    """One of scikit-image's sample photographs (``skimage.data.<name>``), shipped with the package.

    Returns:
        (h, w, 3) float32 on [0, 1]; a grey photograph is repeated over the three channels and an
        alpha channel is dropped. The generators composite faces onto these (DESIGN.md §4).
    """
    from skimage import data

    image = np.asarray(getattr(data, name)())
    image = image.astype(np.float32) / (255.0 if image.dtype == np.uint8 else 1.0)
    if image.ndim == 2:
        image = np.repeat(image[:, :, None], 3, axis=2)
    return image[:, :, :3]
