"""Detection domains, WIDER-Face annotations, meta-features and clustering augmentation (HyperFD §B.2, §B.4)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from trainables.checks import DatasetError
from trainables.detection import generator as dd
from trainables.detection.data import (
    CLUSTERINGS,
    DetectionDataset,
    DetectionSplit,
    cluster_subsets,
    detection_meta_features,
    image_features,
    split_sizes,
)
from trainables.detection.formats import load_wider_annotations, load_wider_face
from trainables.detection.generator import DOMAINS, domain_names, load_detection_domain

_N = 20  # images per domain in these tests


def test_split_is_6_1_3():
    assert split_sizes(200) == (120, 20, 60)
    assert split_sizes(30) == (18, 3, 9)
    assert split_sizes(10) == (6, 1, 3)
    with pytest.raises(DatasetError, match="at least 3 images"):
        split_sizes(2)
    ds = load_detection_domain("plain", n_images=30)
    assert (len(ds.train), len(ds.val), len(ds.test)) == (18, 3, 9)


def test_generation_is_deterministic_cached_and_seeded():
    a = load_detection_domain("blur", seed=3, n_images=_N)
    assert load_detection_domain("blur", seed=3, n_images=_N) is a  # in-process cache
    fresh = dd._generate.__wrapped__("blur", 3, 64, _N)  # regenerate, bypassing the cache
    assert fresh.dataset_id == a.dataset_id
    for split in ("train", "val", "test"):
        np.testing.assert_array_equal(fresh.splits()[split].images, a.splits()[split].images)
        for x, y in zip(fresh.splits()[split].boxes, a.splits()[split].boxes):
            np.testing.assert_array_equal(x, y)
    other = load_detection_domain("blur", seed=4, n_images=_N)
    assert other.dataset_id != a.dataset_id
    assert not np.array_equal(other.train.images, a.train.images)
    assert load_detection_domain("mask", seed=3, n_images=_N).dataset_id != a.dataset_id
    assert a.dataset_id.startswith("det-") and len(a.dataset_id) == 20


@pytest.mark.parametrize("domain", sorted(DOMAINS))
def test_every_domain_gives_valid_images_and_boxes(domain):
    ds = load_detection_domain(domain, n_images=_N)
    assert len(ds) == _N and ds.domain == domain and ds.image_size == 64
    for split in ds.splits().values():
        assert split.images.shape[1:] == (3, 64, 64) and split.images.dtype == np.float32
        assert 0.0 <= split.images.min() and split.images.max() <= 1.0
        for b in split.boxes:
            assert b.shape[1] == 4
            assert np.all(b[:, 2] > b[:, 0]) and np.all(b[:, 3] > b[:, 1])
            assert np.all(b >= 0) and np.all(b <= 64)
    assert ds.train.n_boxes >= len(ds.train)  # every domain puts at least one face in almost every image


def test_at_least_eight_domains_modelled_on_the_papers_datasets():
    assert len(domain_names()) >= 8
    covered = " ".join(spec.modelled_on for spec in DOMAINS.values())
    for paper_dataset in ("MAFA", "FaceMask", "FDDB-360", "WIDER-360", "UFDD", "WIDER-Face", "UMDAA-02", "Anime"):
        assert paper_dataset in covered


def _stats(domain: str) -> dict[str, float]:
    return detection_meta_features(load_detection_domain(domain, n_images=_N))


def test_domain_shifts_leave_their_signature():
    plain = _stats("plain")
    assert _stats("crowd")["boxes_per_image"] > 2 * plain["boxes_per_image"]
    assert _stats("crowd")["box_size_q50"] < plain["box_size_q50"]
    assert _stats("large")["box_size_q50"] > 0.5 and _stats("large")["boxes_per_image"] == 1.0
    assert _stats("lowlight")["pixel_mean"] < 0.6 * plain["pixel_mean"]
    assert _stats("blur")["sharpness"] < 0.5 * plain["sharpness"]
    grey = load_detection_domain("grayscale", n_images=_N).train.images
    np.testing.assert_array_equal(grey[:, 0], grey[:, 1])
    np.testing.assert_array_equal(grey[:, 1], grey[:, 2])
    anime = load_detection_domain("anime", n_images=_N).train.images
    # Posterised to at most 5 levels, some of them darkened on edge lines: few distinct values.
    assert max(len(np.unique(img[0])) for img in anime) <= 10


def test_fisheye_moves_boxes_with_the_pixels():
    canvas = np.zeros((64, 64, 3), dtype=np.float32)
    box = np.array([40, 8, 56, 26], dtype=np.float32)
    canvas[8:26, 40:56] = 1.0
    out, (mapped,) = dd._fisheye(canvas, [box], np.random.default_rng(0))
    ys, xs = np.nonzero(out[:, :, 0] > 0.5)
    bright = np.array([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1], dtype=np.float32)
    assert not np.allclose(mapped, box, atol=2)  # the distortion moved it
    np.testing.assert_allclose(mapped, bright, atol=1.5)


def test_mask_occludes_only_inside_the_face_box():
    rng = np.random.default_rng(1)
    canvas = np.full((64, 64, 3), 0.5, dtype=np.float32)
    box = np.array([10, 10, 30, 34], dtype=np.float32)
    before = canvas.copy()
    dd._occlude(canvas, box, rng)
    changed = np.any(canvas != before, axis=2)
    assert changed.any()
    ys, xs = np.nonzero(changed)
    assert xs.min() >= 10 and xs.max() < 30 and ys.min() >= 10 and ys.max() < 34


def test_unknown_domain_and_bad_sizes_are_one_line_errors():
    with pytest.raises(DatasetError, match="unknown detection domain 'nope'; valid domains: anime") as err:
        load_detection_domain("nope", image_size=8, seed=-1)
    assert "image_size must be an integer >= 32" in str(err.value) and "seed must be an integer >= 0" in str(err.value)
    assert "\n" not in str(err.value)


# -- meta-features -----------------------------------------------------------------------------------


def _hand_dataset() -> DetectionDataset:
    images = np.zeros((2, 3, 40, 40), dtype=np.float32)
    images[1] = 0.5
    boxes = (np.array([[0, 0, 10, 20], [20, 20, 30, 30]], dtype=np.float32), np.array([[0, 0, 20, 20]], dtype=np.float32))
    train = DetectionSplit(images=images, boxes=boxes)
    small = DetectionSplit(images=images[:1], boxes=boxes[:1])
    return DetectionDataset(name="hand", domain="hand", image_size=40, train=train, val=small, test=small, dataset_id="det-hand")


def test_meta_features_by_hand():
    m = detection_meta_features(_hand_dataset())
    assert all(isinstance(v, float) and math.isfinite(v) for v in m.values())
    assert m["n_train"] == 2 and m["n_val"] == 1 and m["image_size"] == 40
    assert m["pixel_mean"] == pytest.approx(0.25)  # one black, one mid-grey image
    assert m["boxes_per_image"] == 1.5 and m["boxes_per_image_std"] == 0.5
    # Relative areas 200/1600, 100/1600, 400/1600 -> mean 700/4800; sides sqrt of those.
    assert m["box_area_mean"] == pytest.approx(700 / 4800)
    assert m["box_size_q50"] == pytest.approx(math.sqrt(200 / 1600))
    assert m["box_aspect_mean"] == pytest.approx((0.5 + 1 + 1) / 3)
    assert m["grey_fraction"] == 1.0 and m["empty_fraction"] == 0.0


def test_meta_features_hold_no_arrays():
    m = detection_meta_features(load_detection_domain("crowd", n_images=_N))
    assert len(m) >= 20 and all(type(v) is float for v in m.values())


# -- WIDER-Face annotations --------------------------------------------------------------------------

_WIDER = """0--Parade/0_Parade_marchingband_1_849.jpg
1
449 330 122 149 0 0 0 0 0 0
0--Parade/0_Parade_Parade_0_904.jpg
0
0 0 0 0 0 0 0 0 0 0
12--Group/12_Group_Group_12_Group_Group_12_10.jpg
2
10 20 30 40 2 0 1 0 1 0
5 6 0 8 0 0 0 1 0 0
"""


def test_wider_annotations_parse(tmp_path):
    path = tmp_path / "wider_face_val_bbx_gt.txt"
    path.write_text(_WIDER)
    records = load_wider_annotations(path)
    assert [r.file for r in records] == [
        "0--Parade/0_Parade_marchingband_1_849.jpg",
        "0--Parade/0_Parade_Parade_0_904.jpg",
        "12--Group/12_Group_Group_12_Group_Group_12_10.jpg",
    ]
    assert records[0].boxes.tolist() == [[449, 330, 571, 479]]
    assert records[1].boxes.shape == (0, 4) and records[1].attributes.shape == (0, 6)
    assert records[2].boxes.tolist() == [[10, 20, 40, 60], [5, 6, 5, 14]]
    assert records[2].attributes.tolist() == [[2, 0, 1, 0, 1, 0], [0, 0, 0, 1, 0, 0]]
    # The second face is flagged invalid (and has zero width): only the first is usable.
    assert records[2].valid_boxes.tolist() == [[10, 20, 40, 60]]


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("a.jpg\ntwo\n", ":2: face count must be a non-negative integer"),
        ("a.jpg\n2\n1 2 3 4 0 0 0 0 0 0\n", "announces 2 face(s) but the file ends early"),
        ("a.jpg\n1\n1 2 3 4 0 0 0 0 0\n", ":3: a face line needs 10 integers"),
        ("a.jpg\n1\n1 2 3 4 0 0 0 0 0 x\n", ":3: a face line needs 10 integers"),
        ("a.jpg\n", ":1: image 'a.jpg' has no face-count line"),
        ("1 2 3\n", ":1: expected an image file name"),
        ("a.jpg\n1\n1 2 -3 4 0 0 0 0 0 0\n", "negative box width"),
        ("\n\n", "no image entries"),
    ],
)
def test_wider_malformed_files_are_one_line_errors(tmp_path, text, fragment):
    path = tmp_path / "bad.txt"
    path.write_text(text)
    with pytest.raises(DatasetError) as err:
        load_wider_annotations(path)
    message = str(err.value)
    assert fragment in message and "\n" not in message and str(path) in message


def test_wider_missing_file(tmp_path):
    with pytest.raises(DatasetError, match="cannot read WIDER-Face annotations"):
        load_wider_annotations(tmp_path / "absent.txt")


# -- clustering augmentation -------------------------------------------------------------------------


def test_cluster_subsets_respect_bounds_splits_and_are_deterministic():
    ds = load_detection_domain("wider", n_images=100)
    subs = cluster_subsets(ds, ks=(2, 3), min_images=15, max_images=70)
    assert len(subs) >= 5
    again = cluster_subsets(ds, ks=(2, 3), min_images=15, max_images=70)
    assert [s.dataset_id for s in subs] == [s.dataset_id for s in again]
    assert len({s.dataset_id for s in subs}) == len(subs)  # identical image sets are kept once
    for s in subs:
        assert 15 <= len(s) <= 70 and s.parent == ds.dataset_id and s.dataset_id != ds.dataset_id
        assert len(s.train) and len(s.val) and len(s.test)
        shares = np.array([len(s.train), len(s.val), len(s.test)]) / len(s)
        assert np.all(np.abs(shares - [0.6, 0.1, 0.3]) <= 0.5 * np.array([0.6, 0.1, 0.3]) + 1e-12)
        # Every image comes from the same split of the parent.
        for name, part in s.splits().items():
            parent = ds.splits()[name].images.reshape(len(ds.splits()[name]), -1)
            for img in part.images.reshape(len(part), -1):
                assert (parent == img).all(axis=1).any()
        assert detection_meta_features(s)["n_train"] == len(s.train)
    names = {s.name.split("/")[1].split("-k")[0] for s in subs}
    assert len(names) >= 3  # several clustering configurations contribute


def test_clustering_separates_two_domains():
    # Independent check of features + clustering: dark (lowlight) and normal images form two clusters.
    a, b = load_detection_domain("plain", n_images=40), load_detection_domain("lowlight", n_images=40)
    splits = {
        name: DetectionSplit(
            images=np.concatenate([a.splits()[name].images, b.splits()[name].images]),
            boxes=a.splits()[name].boxes + b.splits()[name].boxes,
        )
        for name in ("train", "val", "test")
    }
    mixed = DetectionDataset(name="mixed", domain="mixed", image_size=64, dataset_id="det-mixed", **splits)
    subs = cluster_subsets(mixed, methods=("kmeans",), ks=(2,), min_images=20, max_images=60)
    assert len(subs) == 2
    for s in subs:
        dark = image_features(s.train.images, s.train.boxes)[:, 3] < 0.25
        assert dark.mean() in (0.0, 1.0) or min(dark.mean(), 1 - dark.mean()) < 0.1


def test_cluster_subsets_bad_arguments():
    ds = load_detection_domain("plain", n_images=_N)
    with pytest.raises(DatasetError, match="unknown clustering"):
        cluster_subsets(ds, methods=("spectral",))
    with pytest.raises(DatasetError, match="min_images <= max_images"):
        cluster_subsets(ds, min_images=50, max_images=10)
    assert set(CLUSTERINGS) >= {"kmeans", "pca_kmeans", "agglomerative", "birch", "dbscan"}


# -- config ------------------------------------------------------------------------------------------


def test_detection_data_config_names_a_domain():
    from pydantic import TypeAdapter

    from orchestrator.config import DataSection, DetectionDataConfig, parse_config
    from orchestrator.errors import UserError

    section = TypeAdapter(DataSection).validate_python({"dataset": "detection", "domain": "blur", "seed": 3})
    assert isinstance(section, DetectionDataConfig)
    assert section.loader_kwargs() == {"domain": "blur", "seed": 3, "image_size": 64, "n_images": 200}
    assert load_detection_domain(**(section.loader_kwargs() | {"n_images": _N})).domain == "blur"
    with pytest.raises(UserError, match="unknown detection domain 'nope'; valid domains: anime"):
        parse_config({"data": {"dataset": "detection", "domain": "nope"}})
    with pytest.raises(UserError, match="unknown key; valid keys: dataset, domain, seed, image_size, n_images"):
        parse_config({"data": {"dataset": "detection", "domian": "blur"}})
    with pytest.raises(UserError, match="dataset 'detection' needs a face-detection searcher"):
        parse_config({"data": {"dataset": "detection", "domain": "blur"}})


def test_wider_face_folder_to_dataset(tmp_path):
    from skimage.io import imsave

    images = tmp_path / "images"
    (images / "0--Parade").mkdir(parents=True)
    lines = []
    for i in range(10):
        name = f"0--Parade/img_{i}.png"
        pixels = np.full((40, 80, 3), 30 * (i % 8), dtype=np.uint8)  # 80 wide, 40 high: padded to 80 x 80
        imsave(images / name, pixels, check_contrast=False)
        lines += [name, "2", "8 4 16 20 0 0 0 0 0 0", "40 0 2 2 0 0 0 0 0 0"]  # the second face is tiny
    (tmp_path / "gt.txt").write_text("\n".join(lines) + "\n")
    ds = load_wider_face(tmp_path / "gt.txt", images, image_size=40, seed=1)
    assert (len(ds.train), len(ds.val), len(ds.test)) == (6, 1, 3)
    assert ds.train.images.shape == (6, 3, 40, 40)
    # Scale 40 / 80 = 0.5: [8, 4, 24, 24] -> [4, 2, 12, 12]; the 2x2 face becomes 1x1 < min_face: dropped.
    for b in ds.train.boxes + ds.test.boxes:
        assert b.tolist() == [[4.0, 2.0, 12.0, 12.0]]
    # The padding (bottom half) is black.
    assert ds.train.images[:, :, 22:, :].max() == 0.0
    assert load_wider_face(tmp_path / "gt.txt", images, image_size=40, seed=1).dataset_id == ds.dataset_id
    (images / "0--Parade/img_3.png").unlink()
    with pytest.raises(DatasetError, match="cannot read image .*img_3.png listed in"):
        load_wider_face(tmp_path / "gt.txt", images, image_size=40)
