"""Face-detection domains built from real images, the WIDER-Face annotation format, meta-features.

Paper: ``hyperfd-online-automl-face-detection-supplement.txt`` §B.2 (12 datasets, fixed 6:1:3 split,
Table 1) and §B.4 / Table 4 (label statistics as dataset features). DESIGN.md §4: no network at run time.

Every image is a crop of a real scikit-image sample photograph (random crop size, so a random rescale)
with faces of scikit-image's ``lfw_subset`` (the first 100 images, 25x25 grey) pasted in: resized to the
box, tinted with a skin tone, blended through a soft elliptical mask. The box (pixel ``x0, y0, x1, y1``,
``x1``/``y1`` exclusive edges) is the pasted patch. Each domain then applies the shift that characterises
one or more of the paper's datasets (:data:`DOMAINS`):

================  ===================================  ================================================
domain            modelled on                          shift
================  ===================================  ================================================
``plain``         FDDB, AFLW, WIKI, Pascal VOC         none: 1-3 medium faces
``mask``          MAFA, FaceMask                       a mask / scarf over the lower face, or a bar
``fisheye``       FDDB-360                             barrel (fisheye) distortion; boxes mapped along
``fisheye_crowd`` WIDER-360                            fisheye + many small faces
``lowlight``      UFDD                                 dark gamma curve + sensor noise
``blur``          UFDD (blur), WIDER-Face (blur tag)   Gaussian blur
``grayscale``     grey-level cameras                   one channel replicated, contrast change
``crowd``         WIDER-Face                           5-12 small faces
``large``         UMDAA-02 (selfies)                   one face filling most of the frame
``anime``         Anime                                posterised colours + dark edge lines
``wider``         WIDER-Face (all conditions)          per image, a random mix of the shifts above
================  ===================================  ================================================

``wider`` is the diverse source the offline set is clustered from (§B.4: the paper's sub-datasets come
from WIDER-Face); the other domains are natural online tasks.

Generation is deterministic per ``(domain, seed, image_size, n_images)`` and cached in-process. The split
is fixed: a seeded permutation, then 60 % train, 10 % val, 30 % test (§B.2).
"""

from __future__ import annotations

import functools
import hashlib
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from search_algos.spaces.base import stable_key
from trainables.checks import DatasetError, finite, integer_problem, is_plain_int
from trainables.faces import lfw_faces, sample_photograph

__all__ = [
    "CLUSTERINGS",
    "DOMAINS",
    "DetectionDataset",
    "DetectionSplit",
    "DomainSpec",
    "WiderRecord",
    "detection_meta_features",
    "cluster_subsets",
    "domain_names",
    "image_features",
    "load_detection_domain",
    "load_wider_annotations",
    "load_wider_face",
    "offline_datasets",
    "split_sizes",
    "subset",
]

# Bump when generation changes: dataset_ids (and the benchmark rows keyed by them) then change too.
_GENERATOR_VERSION = 1
_SPLIT_FRACTIONS = (0.6, 0.1, 0.3)  # train : val : test = 6 : 1 : 3 (§B.2)
_BACKGROUND_PHOTOS = (
    "coffee", "chelsea", "rocket", "brick", "grass", "gravel", "coins", "moon", "page", "clock", "text",
    "hubble_deep_field", "immunohistochemistry", "retina", "colorwheel", "cell",
)  # fmt: skip
# Photos of people (astronaut, camera) are left out: their faces would be unlabelled positives.
_SKIN_TONES = np.array(
    [[1.00, 0.82, 0.70], [0.92, 0.72, 0.56], [0.78, 0.57, 0.42], [0.55, 0.38, 0.27], [1.00, 0.90, 0.82]],
    dtype=np.float32,
)


# --------------------------------------------------------------------------------------------------
# Public values
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class DomainSpec:
    """How one domain's images are made.

    Attributes:
        name: registry name.
        modelled_on: the paper's datasets this domain imitates (§B.2).
        faces: inclusive range of faces per image.
        face_size: range of face height as a fraction of the image side.
        shifts: image-level shifts applied in order (``mask`` acts on faces, the others on the image);
            for ``wider``, empty: each image draws its own (:func:`_wider_shifts`).
    """

    name: str
    modelled_on: str
    faces: tuple[int, int]
    face_size: tuple[float, float]
    shifts: tuple[str, ...]


DOMAINS: dict[str, DomainSpec] = {
    spec.name: spec
    for spec in (
        DomainSpec("plain", "FDDB, AFLW, WIKI, Pascal VOC", (1, 3), (0.22, 0.45), ()),
        DomainSpec("mask", "MAFA, FaceMask", (1, 3), (0.22, 0.45), ("mask",)),
        DomainSpec("fisheye", "FDDB-360", (1, 3), (0.22, 0.45), ("fisheye",)),
        DomainSpec("fisheye_crowd", "WIDER-360", (4, 9), (0.14, 0.24), ("fisheye",)),
        DomainSpec("lowlight", "UFDD", (1, 3), (0.22, 0.45), ("lowlight",)),
        DomainSpec("blur", "UFDD, WIDER-Face blur", (1, 3), (0.22, 0.45), ("blur",)),
        DomainSpec("grayscale", "grey-level cameras", (1, 3), (0.22, 0.45), ("grayscale",)),
        DomainSpec("crowd", "WIDER-Face", (5, 12), (0.13, 0.22), ()),
        DomainSpec("large", "UMDAA-02", (1, 1), (0.55, 0.85), ()),
        DomainSpec("anime", "Anime", (1, 3), (0.22, 0.45), ("anime",)),
        DomainSpec("wider", "WIDER-Face (all conditions)", (1, 10), (0.13, 0.6), ()),
    )
}


def domain_names() -> list[str]:
    return sorted(DOMAINS)


@dataclass(frozen=True, eq=False)
class DetectionSplit:
    """Images and their face boxes.

    Attributes:
        images: (N, 3, S, S) float32 on [0, 1].
        boxes: N arrays of shape (M_i, 4) float32, pixel ``x0, y0, x1, y1`` (M_i may be 0).
    """

    images: np.ndarray
    boxes: tuple[np.ndarray, ...]

    def __post_init__(self) -> None:
        if self.images.ndim != 4 or len(self.boxes) != len(self.images):
            raise ValueError(
                f"images must be (N, C, H, W) with one box array each, got {self.images.shape} "
                f"and {len(self.boxes)} box arrays"
            )

    def __len__(self) -> int:
        return len(self.images)

    @property
    def n_boxes(self) -> int:
        return int(sum(len(b) for b in self.boxes))


@dataclass(frozen=True, eq=False)
class DetectionDataset:
    """One detection task with its fixed train / val / test split.

    Attributes:
        name: readable name (``"blur"``, or ``"wider/kmeans-k3-c1"`` for an augmented sub-dataset).
        domain: the generating domain.
        image_size: side S of the square images.
        train, val, test: the splits (6 : 1 : 3).
        dataset_id: stable id (``det-`` + 16 hex digits) for the benchmark store; equal parameters give
            equal ids on every machine.
        parent: the dataset_id this one was cut from (augmentation), else ``None``.
    """

    name: str
    domain: str
    image_size: int
    train: DetectionSplit
    val: DetectionSplit
    test: DetectionSplit
    dataset_id: str
    parent: str | None = None

    def __len__(self) -> int:
        return len(self.train) + len(self.val) + len(self.test)

    def splits(self) -> dict[str, DetectionSplit]:
        return {"train": self.train, "val": self.val, "test": self.test}


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


def split_sizes(n: int) -> tuple[int, int, int]:
    """Train, val and test counts of ``n`` images in the ratio 6 : 1 : 3 (at least one val and test)."""
    if n < 3:
        raise DatasetError(f"a detection dataset needs at least 3 images for train/val/test, got {n}")
    n_val = max(1, round(n * _SPLIT_FRACTIONS[1]))
    n_test = max(1, round(n * _SPLIT_FRACTIONS[2]))
    return n - n_val - n_test, n_val, n_test


def load_detection_domain(
    domain: str, *, seed: int = 0, image_size: int = 64, n_images: int = 200
) -> DetectionDataset:
    """The dataset of ``domain`` (cached: equal arguments return the same object).

    Args:
        domain: one of :func:`domain_names`.
        seed: generation and split seed.
        image_size: side of the square images in pixels (>= 32).
        n_images: images in total, split 6 : 1 : 3 (>= 10).

    Raises:
        DatasetError: unknown domain or out-of-range sizes (one line, with the valid values).
    """
    problems = []
    if domain not in DOMAINS:
        problems.append(f"unknown detection domain {domain!r}; valid domains: {', '.join(domain_names())}")
    for name, value, low in (("image_size", image_size, 32), ("n_images", n_images, 10), ("seed", seed, 0)):
        problem = integer_problem(name, value, low)
        if problem:
            problems.append(problem)
    if problems:
        raise DatasetError("; ".join(problems))
    return _generate(domain, seed, image_size, n_images)


def subset(ds: DetectionDataset, rows: dict[str, np.ndarray], *, name: str) -> DetectionDataset:
    """A sub-dataset keeping ``rows[split]`` (indices into each split): the split is respected.

    The id depends only on the parent's id and the kept rows: the same images give the same id,
    whichever clustering found them.
    """
    kept = {split: np.asarray(rows.get(split, ()), dtype=np.int64) for split in ("train", "val", "test")}
    parts = {}
    for split, data in ds.splits().items():
        index = kept[split]
        parts[split] = DetectionSplit(images=data.images[index], boxes=tuple(data.boxes[i] for i in index))
    key = stable_key({"parent": ds.dataset_id, **{k: sorted(v.tolist()) for k, v in kept.items()}})
    return DetectionDataset(
        name=name,
        domain=ds.domain,
        image_size=ds.image_size,
        dataset_id=f"det-{key}",
        parent=ds.dataset_id,
        **parts,
    )


# --------------------------------------------------------------------------------------------------
# Generation
# --------------------------------------------------------------------------------------------------


@functools.lru_cache(maxsize=4)
def _photos(image_size: int) -> tuple[np.ndarray, ...]:
    """Real photographs, (h, w, 3) float32 on [0, 1], shorter side 3 * image_size (crops rescale them)."""
    from skimage.transform import rescale

    out = []
    for name in _BACKGROUND_PHOTOS:
        image = sample_photograph(name)
        scale = 3 * image_size / min(image.shape[:2])
        scaled = rescale(image, scale, channel_axis=2, anti_aliasing=scale < 1, order=1)
        out.append(np.ascontiguousarray(scaled, dtype=np.float32))
    return tuple(out)


def _resize(image: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    from skimage.transform import resize

    down = shape[0] < image.shape[0]
    return resize(image, shape, order=1, anti_aliasing=down, preserve_range=True).astype(np.float32)


def _background(rng: np.random.Generator, size: int) -> np.ndarray:
    """(S, S, 3): a random crop (side between S and 3S, i.e. a random rescale) of a random photo."""
    photos = _photos(size)
    photo = photos[int(rng.integers(len(photos)))]
    h, w = photo.shape[:2]
    side = int(rng.integers(size, min(h, w) + 1))
    y, x = int(rng.integers(0, h - side + 1)), int(rng.integers(0, w - side + 1))
    crop = photo[y : y + side, x : x + side]
    if rng.random() < 0.5:
        crop = crop[:, ::-1]
    return _resize(crop, (size, size))


def _iou_one(box: np.ndarray, others: list[np.ndarray]) -> float:
    if not others:
        return 0.0
    o = np.stack(others)
    ix = np.clip(np.minimum(box[2], o[:, 2]) - np.maximum(box[0], o[:, 0]), 0, None)
    iy = np.clip(np.minimum(box[3], o[:, 3]) - np.maximum(box[1], o[:, 1]), 0, None)
    inter = ix * iy
    union = (box[2] - box[0]) * (box[3] - box[1]) + (o[:, 2] - o[:, 0]) * (o[:, 3] - o[:, 1]) - inter
    return float((inter / union).max())


def _place_faces(rng: np.random.Generator, spec: DomainSpec, size: int) -> list[np.ndarray]:
    """Non-overlapping boxes (IoU <= 0.05 with each other), fully inside the image."""
    n = int(rng.integers(spec.faces[0], spec.faces[1] + 1))
    boxes: list[np.ndarray] = []
    for _ in range(n * 30):  # rejection sampling; crowded images may end with fewer faces
        if len(boxes) == n:
            break
        h = max(6, int(round(rng.uniform(*spec.face_size) * size)))
        w = max(5, int(round(h * rng.uniform(0.78, 0.95))))  # faces are taller than wide
        if h > size or w > size:
            continue
        x0, y0 = int(rng.integers(0, size - w + 1)), int(rng.integers(0, size - h + 1))
        box = np.array([x0, y0, x0 + w, y0 + h], dtype=np.float32)
        if _iou_one(box, boxes) <= 0.05:
            boxes.append(box)
    return boxes


def _paste_face(canvas: np.ndarray, box: np.ndarray, rng: np.random.Generator) -> None:
    """Blend a tinted LFW face into ``canvas`` (S, S, 3) over ``box`` through a soft ellipse."""
    faces = lfw_faces(np.float32)  # (100, 25, 25)
    face = faces[int(rng.integers(len(faces)))]
    if rng.random() < 0.5:
        face = face[:, ::-1]
    x0, y0, x1, y1 = (int(v) for v in box)
    h, w = y1 - y0, x1 - x0
    patch = _resize(face, (h, w))  # (h, w)
    tone = _SKIN_TONES[int(rng.integers(len(_SKIN_TONES)))] * rng.uniform(0.85, 1.15)
    rgb = np.clip(patch[:, :, None] * tone[None, None, :] * 1.15, 0, 1)  # (h, w, 3)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    r = ((xx + 0.5 - w / 2) / (w / 2)) ** 2 + ((yy + 0.5 - h / 2) / (h / 2)) ** 2
    alpha = np.clip((1.15 - r) / 0.3, 0, 1)[:, :, None]  # 1 inside, soft rim at the box edge
    canvas[y0:y1, x0:x1] = alpha * rgb + (1 - alpha) * canvas[y0:y1, x0:x1]


def _occlude(canvas: np.ndarray, box: np.ndarray, rng: np.random.Generator) -> None:
    """MAFA / FaceMask: a plain-coloured mask over the lower face, or a bar (glasses, hand) elsewhere."""
    x0, y0, x1, y1 = (int(v) for v in box)
    h, w = y1 - y0, x1 - x0
    colour = rng.uniform(0.0, 1.0, size=3).astype(np.float32)
    if rng.random() < 0.7:  # surgical / cloth mask: lower 45-60 % of the face
        top = y0 + int(round(h * rng.uniform(0.4, 0.55)))
        yy, xx = np.mgrid[top:y1, x0:x1].astype(np.float32)
        inside = ((xx + 0.5 - (x0 + x1) / 2) / (w / 2)) ** 2 + ((yy + 0.5 - top) / (y1 - top)) ** 2 <= 1.3
        region = canvas[top:y1, x0:x1]
        region[inside] = colour
    else:  # a bar across the eyes or the mouth
        centre = y0 + int(round(h * rng.choice([0.35, 0.7])))
        half = max(1, int(round(h * rng.uniform(0.1, 0.18))))
        canvas[max(y0, centre - half) : min(y1, centre + half), x0:x1] = colour


def _fisheye(image: np.ndarray, boxes: list[np.ndarray], rng: np.random.Generator) -> tuple[np.ndarray, list[np.ndarray]]:
    """Barrel distortion: output radius r samples input radius ``r (1 + k r^2) / (1 + k)``.

    The centre is magnified and the rim compressed, as with a 360 / fisheye lens; the corners, which
    sample beyond the photograph, are black as in real fisheye frames (mirroring would duplicate faces
    without labels). Boxes are mapped by
    sending 16 points per side through the inverse (monotonic, tabulated) and taking their hull.
    """
    from scipy.ndimage import map_coordinates

    size = image.shape[0]
    k = float(rng.uniform(0.4, 0.9))
    half = size / 2.0
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float64)
    u, v = (xx + 0.5 - half) / half, (yy + 0.5 - half) / half  # (S, S) on about [-1, 1]
    r = np.hypot(u, v)
    factor = (1 + k * r**2) / (1 + k)  # r_in / r_out
    src_x, src_y = u * factor * half + half - 0.5, v * factor * half + half - 0.5
    out = np.stack(
        [map_coordinates(image[:, :, c], [src_y, src_x], order=1, mode="constant", cval=0.0) for c in range(3)], axis=2
    ).astype(np.float32)
    table_out = np.linspace(0.0, 2.0, 2001)
    table_in = table_out * (1 + k * table_out**2) / (1 + k)  # increasing in r_out
    mapped = []
    t = np.linspace(0.0, 1.0, 16)
    for box in boxes:
        x0, y0, x1, y1 = box
        px = np.concatenate([x0 + (x1 - x0) * t, np.full(16, x1), x1 - (x1 - x0) * t, np.full(16, x0)])
        py = np.concatenate([np.full(16, y0), y0 + (y1 - y0) * t, np.full(16, y1), y1 - (y1 - y0) * t])
        pu, pv = (px - half) / half, (py - half) / half
        rin = np.hypot(pu, pv)
        rout = np.interp(rin, table_in, table_out)
        scale = np.divide(rout, rin, out=np.ones_like(rin), where=rin > 0)
        qx, qy = pu * scale * half + half, pv * scale * half + half
        new = np.array([qx.min(), qy.min(), qx.max(), qy.max()], dtype=np.float32)
        mapped.append(np.clip(new, 0, size))
    return out, mapped


def _lowlight(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    gamma, gain = rng.uniform(1.4, 2.2), rng.uniform(0.25, 0.45)
    noise = rng.normal(0.0, rng.uniform(0.02, 0.05), size=image.shape).astype(np.float32)
    return np.clip(gain * image**gamma + noise, 0, 1).astype(np.float32)


def _blur(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    from scipy.ndimage import gaussian_filter

    sigma = rng.uniform(1.0, 1.8) * image.shape[0] / 64
    return gaussian_filter(image, sigma=(sigma, sigma, 0)).astype(np.float32)


def _grayscale(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    grey = image @ np.array([0.299, 0.587, 0.114], dtype=np.float32)  # (S, S)
    grey = np.clip(grey ** rng.uniform(0.7, 1.4), 0, 1)
    return np.repeat(grey[:, :, None], 3, axis=2).astype(np.float32)


def _anime(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Cartoon look: saturated, posterised colours and dark outlines where the image has edges."""
    from scipy.ndimage import sobel

    grey = image.mean(axis=2)
    mean = grey[:, :, None]
    vivid = np.clip(mean + (image - mean) * rng.uniform(1.6, 2.4), 0, 1)
    levels = int(rng.integers(3, 6))
    poster = np.round(vivid * (levels - 1)) / (levels - 1)
    edges = np.hypot(sobel(grey, axis=0), sobel(grey, axis=1))
    line = edges > np.quantile(edges, rng.uniform(0.8, 0.9))
    poster[line] *= 0.15
    return poster.astype(np.float32)


_IMAGE_SHIFTS = {"lowlight": _lowlight, "blur": _blur, "grayscale": _grayscale, "anime": _anime}


def _wider_shifts(rng: np.random.Generator) -> tuple[DomainSpec, tuple[str, ...]]:
    """WIDER-Face's variety: a random scale regime and each condition with its own probability."""
    regime = rng.choice(["few", "crowd", "large"], p=[0.55, 0.3, 0.15])
    base = {"few": DOMAINS["plain"], "crowd": DOMAINS["crowd"], "large": DOMAINS["large"]}[str(regime)]
    shifts = tuple(
        name
        for name, p in (("mask", 0.2), ("fisheye", 0.15), ("lowlight", 0.2), ("blur", 0.2), ("grayscale", 0.15), ("anime", 0.1))
        if rng.random() < p
    )
    return base, shifts


def _make_image(rng: np.random.Generator, spec: DomainSpec, size: int) -> tuple[np.ndarray, np.ndarray]:
    """One (3, S, S) image and its (M, 4) boxes."""
    layout, shifts = (_wider_shifts(rng) if spec.name == "wider" else (spec, spec.shifts))
    canvas = _background(rng, size)
    boxes = _place_faces(rng, layout, size)
    for box in boxes:
        _paste_face(canvas, box, rng)
        if "mask" in shifts:
            _occlude(canvas, box, rng)
    for shift in shifts:
        if shift == "fisheye":
            canvas, boxes = _fisheye(canvas, boxes, rng)
        elif shift in _IMAGE_SHIFTS:
            canvas = _IMAGE_SHIFTS[shift](canvas, rng)
    array = np.stack(boxes).astype(np.float32) if boxes else np.zeros((0, 4), dtype=np.float32)
    return np.ascontiguousarray(canvas.transpose(2, 0, 1), dtype=np.float32), array


@functools.lru_cache(maxsize=16)  # 200 images of 64x64 take 10 MB
def _generate(domain: str, seed: int, image_size: int, n_images: int) -> DetectionDataset:
    spec = DOMAINS[domain]
    # One child stream per image: image i does not depend on n_images, so datasets nest.
    entropy = [seed, _GENERATOR_VERSION, int.from_bytes(hashlib.sha256(domain.encode()).digest()[:4], "little")]
    streams = np.random.SeedSequence(entropy).spawn(n_images)
    made = [_make_image(np.random.default_rng(s), spec, image_size) for s in streams]
    images = np.stack([m[0] for m in made])  # (N, 3, S, S)
    images.setflags(write=False)
    boxes = tuple(m[1] for m in made)
    for b in boxes:
        b.setflags(write=False)
    order = np.random.default_rng(np.random.SeedSequence([*entropy, 1])).permutation(n_images)
    n_train, n_val, _ = split_sizes(n_images)
    cuts = {"train": order[:n_train], "val": order[n_train : n_train + n_val], "test": order[n_train + n_val :]}
    parts = {k: DetectionSplit(images=images[np.sort(v)], boxes=tuple(boxes[i] for i in np.sort(v))) for k, v in cuts.items()}
    for part in parts.values():
        part.images.setflags(write=False)
    key = stable_key(
        {"kind": "detection", "domain": domain, "seed": seed, "image_size": image_size, "n_images": n_images, "version": _GENERATOR_VERSION}
    )
    return DetectionDataset(name=domain, domain=domain, image_size=image_size, dataset_id=f"det-{key}", **parts)


# --------------------------------------------------------------------------------------------------
# Features
# --------------------------------------------------------------------------------------------------


def image_features(images: np.ndarray, boxes: Sequence[np.ndarray]) -> np.ndarray:
    """Per-image descriptors for clustering (§B.4) and meta-features: (N, 16) float64.

    Columns: mean R, G, B; mean grey; grey std (contrast); colourfulness (Hasler & Süsstrunk 2003);
    mean saturation; dark fraction (grey < 0.15); mean absolute gradient; edge density (gradient above
    0.1); Laplacian variance (sharpness); number of boxes; mean and std of box side / image side; mean box
    aspect (w / h); mean box-centre distance from the image centre / image side.
    """
    x = images.astype(np.float64)  # (N, 3, H, W)
    n, _, h, w = x.shape
    grey = 0.299 * x[:, 0] + 0.587 * x[:, 1] + 0.114 * x[:, 2]  # (N, H, W)
    rg = x[:, 0] - x[:, 1]
    yb = 0.5 * (x[:, 0] + x[:, 1]) - x[:, 2]
    colourful = np.sqrt(rg.std(axis=(1, 2)) ** 2 + yb.std(axis=(1, 2)) ** 2) + 0.3 * np.sqrt(
        rg.mean(axis=(1, 2)) ** 2 + yb.mean(axis=(1, 2)) ** 2
    )
    cmax, cmin = x.max(axis=1), x.min(axis=1)
    saturation = np.divide(cmax - cmin, cmax, out=np.zeros_like(cmax), where=cmax > 1e-6).mean(axis=(1, 2))
    gy, gx = np.abs(np.diff(grey, axis=1))[:, :, :-1], np.abs(np.diff(grey, axis=2))[:, :-1, :]
    grad = gx + gy  # (N, H-1, W-1)
    lap = grey[:, 1:-1, 1:-1] * 4 - grey[:, :-2, 1:-1] - grey[:, 2:, 1:-1] - grey[:, 1:-1, :-2] - grey[:, 1:-1, 2:]
    side = float(max(h, w))
    box_rows = []
    for b in boxes:
        if len(b) == 0:
            box_rows.append([0.0, 0.0, 0.0, 0.0, 0.0])
            continue
        bw, bh = b[:, 2] - b[:, 0], b[:, 3] - b[:, 1]
        sides = np.sqrt(np.clip(bw * bh, 0, None)) / side
        cx, cy = (b[:, 0] + b[:, 2]) / 2 - w / 2, (b[:, 1] + b[:, 3]) / 2 - h / 2
        aspect = np.divide(bw, bh, out=np.ones_like(bw), where=bh > 0)
        box_rows.append([len(b), sides.mean(), sides.std(), aspect.mean(), np.hypot(cx, cy).mean() / side])
    return np.column_stack(
        [
            x.mean(axis=(2, 3)),
            grey.mean(axis=(1, 2)),
            grey.std(axis=(1, 2)),
            colourful,
            saturation,
            (grey < 0.15).mean(axis=(1, 2)),
            grad.mean(axis=(1, 2)),
            (grad > 0.1).mean(axis=(1, 2)),
            lap.reshape(n, -1).var(axis=1),
            np.asarray(box_rows, dtype=np.float64).reshape(n, 5),
        ]
    )


def detection_meta_features(ds: DetectionDataset) -> dict[str, float]:
    """Dataset-level statistics of the train split (HyperFD's "stats" variant); numbers only, never arrays.

    Image statistics: means over images of the :func:`image_features` columns (``pixel_mean``,
    ``pixel_std`` = mean per-image grey std, ``colorfulness``, ``saturation``, ``dark_fraction``,
    ``mean_gradient``, ``edge_density``, ``sharpness``) plus ``pixel_std_global`` and
    ``grey_fraction`` (images with no colour). Box statistics (Table 4's label statistics, scipy.describe
    of relative box areas): ``boxes_per_image`` mean/std, ``empty_fraction``, box side / image side
    quantiles ``box_size_q10/q50/q90``, ``box_area_mean/var/skew/kurtosis``, ``box_aspect_mean/std``,
    ``box_centre_dist``. Sizes: ``n_train``, ``n_val``, ``n_test``, ``log_n_train``, ``image_size``.
    """
    from scipy.stats import describe

    train = ds.train
    feats = image_features(train.images, train.boxes)  # (N, 16)
    all_boxes = [b for b in train.boxes if len(b)]
    boxes = np.concatenate(all_boxes) if all_boxes else np.zeros((0, 4), dtype=np.float32)
    side = float(ds.image_size)
    bw, bh = (boxes[:, 2] - boxes[:, 0]).astype(np.float64), (boxes[:, 3] - boxes[:, 1]).astype(np.float64)
    rel_area = bw * bh / side**2
    counts = np.array([len(b) for b in train.boxes], dtype=np.float64)
    stats: dict[str, Any] = {
        "n_train": len(train),
        "n_val": len(ds.val),
        "n_test": len(ds.test),
        "log_n_train": math.log(max(len(train), 1)),
        "image_size": ds.image_size,
        "pixel_mean": feats[:, 3].mean(),
        "pixel_std": feats[:, 4].mean(),
        "pixel_std_global": train.images.std(dtype=np.float64),
        "colorfulness": feats[:, 5].mean(),
        "saturation": feats[:, 6].mean(),
        "grey_fraction": (feats[:, 6] < 0.02).mean(),
        "dark_fraction": feats[:, 7].mean(),
        "mean_gradient": feats[:, 8].mean(),
        "edge_density": feats[:, 9].mean(),
        "sharpness": feats[:, 10].mean(),
        "boxes_per_image": counts.mean(),
        "boxes_per_image_std": counts.std(),
        "empty_fraction": (counts == 0).mean(),
        "box_centre_dist": feats[counts > 0, 15].mean() if (counts > 0).any() else 0.0,
    }
    if len(boxes) >= 2:
        d = describe(rel_area)
        sides = np.sqrt(rel_area)
        aspect = bw / np.maximum(bh, 1e-6)
        stats |= {
            "box_size_q10": np.quantile(sides, 0.1),
            "box_size_q50": np.quantile(sides, 0.5),
            "box_size_q90": np.quantile(sides, 0.9),
            "box_area_mean": d.mean,
            "box_area_var": d.variance,
            "box_area_skew": d.skewness,
            "box_area_kurtosis": d.kurtosis,
            "box_aspect_mean": aspect.mean(),
            "box_aspect_std": aspect.std(),
        }
    else:
        side_1 = float(np.sqrt(rel_area[0])) if len(boxes) else 0.0
        stats |= {
            "box_size_q10": side_1, "box_size_q50": side_1, "box_size_q90": side_1,
            "box_area_mean": float(rel_area.mean()) if len(boxes) else 0.0, "box_area_var": 0.0,
            "box_area_skew": 0.0, "box_area_kurtosis": 0.0,
            "box_aspect_mean": float((bw / np.maximum(bh, 1e-6)).mean()) if len(boxes) else 0.0,
            "box_aspect_std": 0.0,
        }  # fmt: skip
    return {key: finite(float(value)) for key, value in stats.items()}


# --------------------------------------------------------------------------------------------------
# WIDER-Face annotations
# --------------------------------------------------------------------------------------------------

_WIDER_FIX = "expected the official format: a file name line, a count line, then count lines of 'x y w h blur expression illumination invalid occlusion pose'"


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


# --------------------------------------------------------------------------------------------------
# Dataset augmentation by clustering (§B.4, Table 5)
# --------------------------------------------------------------------------------------------------

CLUSTERINGS: tuple[str, ...] = (
    "kmeans",  # Table 5 #1: k-means++ init
    "kmeans_random",  # #2: random init
    "pca_kmeans",  # #3: PCA then k-means
    "dbscan",  # #5: Euclidean
    "dbscan_cosine",  # #6: cosine
    "agglomerative",  # #7: Ward linkage
    "agglomerative_manhattan",  # #8: average linkage, Manhattan distance
    "birch",  # #9
)
# Table 5 sweeps "number of clusters" in {2, 3, 5, 7} for every algorithm; DBSCAN has no such parameter,
# so each k picks eps as a quantile of the distances to the 5th neighbour (a smaller eps, more clusters).
_DBSCAN_QUANTILE = {2: 0.9, 3: 0.7, 5: 0.5, 7: 0.3}
_PCA_COMPONENTS = 5  # the paper keeps 20 of thousands of deep features; ours are 16 hand-made ones


def _cluster(features: np.ndarray, method: str, k: int, seed: int) -> np.ndarray:
    """Labels (N,) int64 of one Table 5 configuration; -1 marks DBSCAN noise."""
    from sklearn.cluster import DBSCAN, AgglomerativeClustering, Birch, KMeans
    from sklearn.decomposition import PCA
    from sklearn.neighbors import NearestNeighbors

    if method == "kmeans":
        model = KMeans(n_clusters=k, init="k-means++", max_iter=2000, n_init=4, random_state=seed)
        return model.fit_predict(features)
    if method == "kmeans_random":
        model = KMeans(n_clusters=k, init="random", max_iter=2000, n_init=4, random_state=seed)
        return model.fit_predict(features)
    if method == "pca_kmeans":
        n_comp = min(_PCA_COMPONENTS, features.shape[1], features.shape[0])
        reduced = PCA(n_components=n_comp, random_state=seed).fit_transform(features)
        return KMeans(n_clusters=k, max_iter=2000, n_init=4, random_state=seed).fit_predict(reduced)
    if method in ("dbscan", "dbscan_cosine"):
        metric = "cosine" if method == "dbscan_cosine" else "euclidean"
        neighbours = min(5, len(features) - 1)
        dist, _ = NearestNeighbors(n_neighbors=neighbours + 1, metric=metric).fit(features).kneighbors(features)
        eps = float(np.quantile(dist[:, -1], _DBSCAN_QUANTILE.get(k, 0.5)))
        return DBSCAN(eps=max(eps, 1e-9), min_samples=neighbours, metric=metric).fit_predict(features)
    if method == "agglomerative":
        return AgglomerativeClustering(n_clusters=k, linkage="ward").fit_predict(features)
    if method == "agglomerative_manhattan":
        return AgglomerativeClustering(n_clusters=k, metric="manhattan", linkage="average").fit_predict(features)
    if method == "birch":
        return Birch(n_clusters=k).fit_predict(features)
    raise DatasetError(f"unknown clustering {method!r}; valid clusterings: {', '.join(CLUSTERINGS)}")


def cluster_subsets(
    ds: DetectionDataset,
    *,
    methods: Sequence[str] = CLUSTERINGS,
    ks: Sequence[int] = (2, 3, 5, 7),
    min_images: int = 40,
    max_images: int | None = None,
    max_split_deviation: float = 0.5,
    seed: int = 0,
) -> list[DetectionDataset]:
    """Sub-datasets of ``ds`` from clustering its images' features (§B.4).

    All images (train, val and test) are clustered together on standardised :func:`image_features`;
    each cluster keeps the original split of its images. A cluster is kept when its size lies in
    ``[min_images, max_images]`` and every split's share is within ``max_split_deviation`` (relative) of
    6 : 1 : 3; identical image sets found by several configurations are kept once. The order is
    deterministic (methods, then ks, then cluster label).

    Args:
        ds: the source dataset.
        methods: clustering configurations, a subset of :data:`CLUSTERINGS`.
        ks: numbers of clusters (Table 5: 2, 3, 5, 7).
        min_images, max_images: size bounds (``max_images`` defaults to 80 % of ``ds``).
        max_split_deviation: e.g. 0.5 accepts a val share within 0.05..0.15.
        seed: seed of the clusterings' random initialisations.

    Raises:
        DatasetError: unknown methods or inconsistent bounds.
    """
    unknown = [m for m in methods if m not in CLUSTERINGS]
    upper = int(0.8 * len(ds)) if max_images is None else max_images
    problems = []
    if unknown:
        problems.append(f"unknown clustering(s) {unknown}; valid clusterings: {', '.join(CLUSTERINGS)}")
    if not 3 <= min_images <= upper:
        problems.append(f"3 <= min_images <= max_images must hold, but got min_images={min_images}, max_images={upper}")
    if any(not is_plain_int(k) or k < 2 for k in ks):
        problems.append(f"ks must be integers >= 2, got {list(ks)}")
    if problems:
        raise DatasetError("; ".join(problems))

    parts = ds.splits()
    split_of = np.concatenate([np.full(len(p), i) for i, p in enumerate(parts.values())])  # (N,)
    row_of = np.concatenate([np.arange(len(p)) for p in parts.values()])  # (N,)
    raw = np.concatenate([image_features(p.images, p.boxes) for p in parts.values()])  # (N, F)
    std = raw.std(axis=0)
    features = (raw - raw.mean(axis=0)) / np.where(std > 1e-12, std, 1.0)

    seen: set[bytes] = set()
    out = []
    for method in methods:
        for k in ks:
            if k >= len(features):
                continue
            labels = _cluster(features, method, int(k), seed)
            for label in sorted(set(labels.tolist()) - {-1}):
                members = np.flatnonzero(labels == label)
                if not min_images <= len(members) <= upper or members.tobytes() in seen:
                    continue
                counts = np.bincount(split_of[members], minlength=3)
                shares = counts / len(members)
                if (counts == 0).any() or any(
                    abs(s - t) > max_split_deviation * t for s, t in zip(shares, _SPLIT_FRACTIONS)
                ):
                    continue
                seen.add(members.tobytes())
                rows = {name: np.sort(row_of[members[split_of[members] == i]]) for i, name in enumerate(parts)}
                out.append(subset(ds, rows, name=f"{ds.name}/{method}-k{k}-c{label}"))
    return out


def offline_datasets(
    source: str = "wider",
    *,
    seed: int = 0,
    image_size: int = 64,
    n_images: int = 400,
    **clustering: Any,
) -> list[DetectionDataset]:
    """HyperFD's offline set: the sub-datasets of one source domain (§B.4 clusters WIDER-Face).

    ``clustering`` is passed to :func:`cluster_subsets` (``methods``, ``ks``, ``min_images``, ...).
    """
    ds = load_detection_domain(source, seed=seed, image_size=image_size, n_images=n_images)
    return cluster_subsets(ds, seed=seed, **clustering)
