"""The WIDER-Face annotation format, and WIDER-Face-style folders a user brings as a detection dataset.

Paper: ``hyperfd-online-automl-face-detection-supplement.txt`` §B.2 (WIDER-Face among the 12 datasets,
the fixed 6 : 1 : 3 split) and §B.1 (tiny faces are ignored). The dataset values are
:mod:`trainables.detection.data`'s.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from search_algos.spaces.base import stable_key
from trainables.checks import DatasetError
from trainables.detection.data import DetectionDataset, DetectionSplit, _resize, split_sizes

__all__ = ["WiderRecord", "load_wider_annotations", "load_wider_face"]

_WIDER_FIX = "expected the official format: a file name line, a count line, then count lines of 'x y w h blur expression illumination invalid occlusion pose'"


@dataclass(frozen=True, eq=False)
class WiderRecord:
    """One image of a WIDER-Face annotation file.

    Attributes:
        file: image path relative to the images folder, as written in the file.
        boxes: (M, 4) float32 pixel ``x0, y0, x1, y1`` (from ``x y w h``).
        attributes: (M, 6) int64 ``blur, expression, illumination, invalid, occlusion, pose``.
    """

    file: str
    boxes: np.ndarray
    attributes: np.ndarray

    @property
    def valid_boxes(self) -> np.ndarray:
        """Boxes not flagged ``invalid`` and with a positive area."""
        keep = (self.attributes[:, 3] == 0) & (self.boxes[:, 2] > self.boxes[:, 0]) & (self.boxes[:, 3] > self.boxes[:, 1])
        return self.boxes[keep]


def load_wider_annotations(path: str | Path) -> list[WiderRecord]:
    """Parse a WIDER-Face ``wider_face_*_bbx_gt.txt`` file.

    Format, per image: the image path; the number of faces ``n``; then ``n`` lines of ten integers
    ``x y w h blur expression illumination invalid occlusion pose``. An image with ``n = 0`` is followed by
    one line of zeros (which carries no face).

    Raises:
        DatasetError: unreadable file or malformed content; the one-line message names the line.
    """
    file = Path(path)
    try:
        lines = file.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as err:
        raise DatasetError(f"cannot read WIDER-Face annotations {file}: {type(err).__name__}; check the path") from None
    records: list[WiderRecord] = []
    i = 0
    n_lines = len(lines)

    def fail(line: int, problem: str) -> DatasetError:
        return DatasetError(f"{file}:{line}: {problem}; {_WIDER_FIX}")

    while i < n_lines:
        name = lines[i].strip()
        if not name:
            i += 1
            continue
        if _is_number_row(name):
            raise fail(i + 1, f"expected an image file name, got {name[:40]!r}")
        if i + 1 >= n_lines:
            raise fail(i + 1, f"image {name!r} has no face-count line")
        count_text = lines[i + 1].strip()
        if not count_text.isdigit():
            raise fail(i + 2, f"face count must be a non-negative integer, got {count_text[:40]!r}")
        count = int(count_text)
        rows = max(count, 1)  # n = 0 is followed by one placeholder row
        if i + 2 + rows > n_lines:
            raise fail(n_lines, f"image {name!r} announces {count} face(s) but the file ends early")
        values = []
        for j in range(i + 2, i + 2 + rows):
            fields = lines[j].split()
            if len(fields) != 10 or not _is_number_row(lines[j]):
                raise fail(j + 1, f"a face line needs 10 integers, got {lines[j].strip()[:60]!r}")
            values.append([int(float(f)) for f in fields])
        array = np.asarray(values, dtype=np.int64)[:count].reshape(count, 10)
        xywh = array[:, :4].astype(np.float32)
        if (xywh[:, 2:] < 0).any():
            raise fail(i + 3, f"image {name!r} has a negative box width or height")
        boxes = np.column_stack([xywh[:, 0], xywh[:, 1], xywh[:, 0] + xywh[:, 2], xywh[:, 1] + xywh[:, 3]])
        records.append(WiderRecord(file=name, boxes=boxes.reshape(count, 4), attributes=array[:, 4:].reshape(count, 6)))
        i += 2 + rows
    if not records:
        raise DatasetError(f"{file}: no image entries; {_WIDER_FIX}")
    return records


def load_wider_face(
    annotations: str | Path,
    images: str | Path,
    *,
    image_size: int = 64,
    max_images: int | None = None,
    seed: int = 0,
    min_face: float = 2.0,
) -> DetectionDataset:
    """A WIDER-Face-format dataset a user brings: annotation txt + images folder -> a :class:`DetectionDataset`.

    Each image is padded to a square (bottom and right, black) and resized to ``image_size``; its valid
    boxes (not flagged ``invalid``) are scaled alike, and faces thinner than ``min_face`` pixels after
    scaling are dropped (§B.1 ignores tiny faces too). The split is a seeded 6 : 1 : 3 permutation. The
    dataset_id hashes the annotation file and every image file, so equal files give equal ids.

    Raises:
        DatasetError: malformed annotations, or an image that is missing or unreadable (one line).
    """
    from skimage.io import imread

    records = load_wider_annotations(annotations)
    if max_images is not None:
        records = records[:max_images]
    if len(records) < 3:
        raise DatasetError(f"{annotations}: {len(records)} image(s); a train/val/test split needs at least 3")
    digest = hashlib.sha256(Path(annotations).read_bytes())
    root = Path(images)
    made_images, made_boxes = [], []
    for record in records:
        file = root / record.file
        try:
            content = file.read_bytes()
            raw = np.asarray(imread(file))
        except Exception as err:  # noqa: BLE001 - any reader failure is the user's file problem
            raise DatasetError(
                f"cannot read image {file} listed in {annotations} ({type(err).__name__}); check the images folder"
            ) from None
        digest.update(hashlib.sha256(content).digest())
        pixels = raw.astype(np.float32) / (255.0 if raw.dtype == np.uint8 else max(float(raw.max()), 1.0))
        if pixels.ndim == 2:
            pixels = np.repeat(pixels[:, :, None], 3, axis=2)
        pixels = pixels[:, :, :3]
        side = max(pixels.shape[:2])
        square = np.zeros((side, side, 3), dtype=np.float32)
        square[: pixels.shape[0], : pixels.shape[1]] = pixels
        made_images.append(_resize(square, (image_size, image_size)).transpose(2, 0, 1))
        boxes = record.valid_boxes * (image_size / side)
        keep = ((boxes[:, 2] - boxes[:, 0]) >= min_face) & ((boxes[:, 3] - boxes[:, 1]) >= min_face)
        made_boxes.append(np.clip(boxes[keep], 0, image_size).astype(np.float32).reshape(-1, 4))
    stack = np.clip(np.stack(made_images), 0, 1).astype(np.float32)  # (N, 3, S, S)
    order = np.random.default_rng(seed).permutation(len(records))
    n_train, n_val, _ = split_sizes(len(records))
    cuts = {"train": order[:n_train], "val": order[n_train : n_train + n_val], "test": order[n_train + n_val :]}
    parts = {
        k: DetectionSplit(images=stack[np.sort(v)], boxes=tuple(made_boxes[i] for i in np.sort(v))) for k, v in cuts.items()
    }
    key = stable_key({"kind": "wider_face", "files": digest.hexdigest(), "image_size": image_size, "seed": seed,
                      "max_images": max_images, "min_face": min_face})  # fmt: skip
    return DetectionDataset(name="wider_face", domain="wider_face", image_size=image_size, dataset_id=f"det-{key}", **parts)


def _is_number_row(text: str) -> bool:
    fields = text.split()
    try:
        [float(f) for f in fields]
    except ValueError:
        return False
    return bool(fields)
