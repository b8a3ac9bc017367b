"""Face-detection data: the dataset values, the fixed 6 : 1 : 3 split, meta-features, clustered subsets.

Paper: ``hyperfd-online-automl-face-detection-supplement.txt`` §B.2 (12 datasets, fixed 6:1:3 split,
Table 1), §B.4 / Table 4 (label statistics as dataset features) and §B.4 / Table 5 (dataset augmentation
by clustering). The datasets come from the domain generator (:mod:`trainables.detection.generator`) or
from WIDER-Face files (:mod:`trainables.detection.formats`); both return this module's values.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from search_algos.spaces.base import stable_key
from trainables.checks import DatasetError, finite, is_plain_int

__all__ = [
    "CLUSTERINGS",
    "DetectionDataset",
    "DetectionSplit",
    "cluster_subsets",
    "detection_meta_features",
    "image_features",
    "split_sizes",
    "subset",
]

_SPLIT_FRACTIONS = (0.6, 0.1, 0.3)  # train : val : test = 6 : 1 : 3 (§B.2)


# --------------------------------------------------------------------------------------------------
# Public values
# --------------------------------------------------------------------------------------------------


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


def split_sizes(n: int) -> tuple[int, int, int]:
    """Train, val and test counts of ``n`` images in the ratio 6 : 1 : 3 (at least one val and test)."""
    if n < 3:
        raise DatasetError(f"a detection dataset needs at least 3 images for train/val/test, got {n}")
    n_val = max(1, round(n * _SPLIT_FRACTIONS[1]))
    n_test = max(1, round(n * _SPLIT_FRACTIONS[2]))
    return n - n_val - n_test, n_val, n_test


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


def _resize(image: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """``image`` (h, w) or (h, w, 3) resized to ``shape``, bilinear, float32; the generator and the WIDER reader share it."""
    from skimage.transform import resize

    down = shape[0] < image.shape[0]
    return resize(image, shape, order=1, anti_aliasing=down, preserve_range=True).astype(np.float32)


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
