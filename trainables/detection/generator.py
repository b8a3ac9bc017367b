"""Face-detection domains built from real images, and HyperFD's offline set clustered from one of them.

Paper: ``hyperfd-online-automl-face-detection-supplement.txt`` §B.2 (12 datasets, fixed 6:1:3 split,
Table 1) and §B.4 (the offline set). DESIGN.md §4: no network at run time.

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
from dataclasses import dataclass
from typing import Any

import numpy as np

from search_algos.spaces.base import stable_key
from trainables.checks import DatasetError, integer_problem
from trainables.detection.data import DetectionDataset, DetectionSplit, _resize, cluster_subsets, split_sizes
from trainables.faces import lfw_faces, sample_photograph

__all__ = ["DOMAINS", "DomainSpec", "domain_names", "load_detection_domain", "offline_datasets"]

# Bump when generation changes: dataset_ids (and the benchmark rows keyed by them) then change too.
_GENERATOR_VERSION = 1
# Random streams of a (domain, seed) dataset, all from its entropy words (_entropy): image i draws from the
# i-th child that SeedSequence(entropy) spawns; the split draws from the entropy plus this salt.
_SPLIT_ORDER_SALT = 1  # the permutation of the images that is cut into train, val and test
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
# Domains
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


def _entropy(domain: str, seed: int) -> list[int]:
    """The seed words of a (domain, seed) dataset: the seed, the generator's version, and a word of the domain
    name's SHA-256 (so two domains of one seed draw independent images)."""
    return [seed, _GENERATOR_VERSION, int.from_bytes(hashlib.sha256(domain.encode()).digest()[:4], "little")]


@functools.lru_cache(maxsize=16)  # 200 images of 64x64 take 10 MB
def _generate(domain: str, seed: int, image_size: int, n_images: int) -> DetectionDataset:
    spec = DOMAINS[domain]
    # One child stream per image: image i does not depend on n_images, so datasets nest.
    entropy = _entropy(domain, seed)
    streams = np.random.SeedSequence(entropy).spawn(n_images)
    made = [_make_image(np.random.default_rng(s), spec, image_size) for s in streams]
    images = np.stack([m[0] for m in made])  # (N, 3, S, S)
    images.setflags(write=False)
    boxes = tuple(m[1] for m in made)
    for b in boxes:
        b.setflags(write=False)
    order = np.random.default_rng(np.random.SeedSequence([*entropy, _SPLIT_ORDER_SALT])).permutation(n_images)
    n_train, n_val, _ = split_sizes(n_images)
    cuts = {"train": order[:n_train], "val": order[n_train : n_train + n_val], "test": order[n_train + n_val :]}
    parts = {k: DetectionSplit(images=images[np.sort(v)], boxes=tuple(boxes[i] for i in np.sort(v))) for k, v in cuts.items()}
    for part in parts.values():
        part.images.setflags(write=False)
    key = stable_key(
        {"kind": "detection", "domain": domain, "seed": seed, "image_size": image_size, "n_images": n_images, "version": _GENERATOR_VERSION}
    )
    return DetectionDataset(name=domain, domain=domain, image_size=image_size, dataset_id=f"det-{key}", **parts)
