"""Unit tests for trainables.alignment's data (fast, no Ray): the seeded 3D face generator and the .mat loader."""

from __future__ import annotations

import dataclasses
import math
import time
from pathlib import Path

import numpy as np
import pytest
import scipy.io
import skimage.io

from trainables.alignment import generator as faces3d
from trainables.alignment.data import (
    ALIGNMENT_DATASETS,
    NUM_LANDMARKS,
    AlignmentDataset,
    AlignmentSplit,
    alignment_dataset_names,
    alignment_meta_features,
    load_alignment_dataset,
)
from trainables.alignment.formats import load_alignment_folder
from trainables.alignment.generator import make_faces3d
from trainables.alignment.metrics import landmarks_from_uv, yaw_bin
from trainables.checks import DatasetError

SIZE = 64
SIZES = {"n_train": 24, "n_val": 9, "n_test": 12}


@pytest.fixture(scope="module")
def ds() -> AlignmentDataset:
    return make_faces3d(**SIZES, image_size=SIZE, seed=0)


def _splits(ds: AlignmentDataset) -> dict[str, AlignmentSplit]:
    return {"train": ds.train, "val": ds.val, "test": ds.test}


def _assert_one_line(err: pytest.ExceptionInfo[DatasetError], *fragments: str) -> None:
    message = str(err.value)
    assert "\n" not in message and "Traceback" not in message, message
    for fragment in fragments:
        assert fragment in message, f"{fragment!r} not in {message!r}"


# --------------------------------------------------------------------------------------------------
# The generator
# --------------------------------------------------------------------------------------------------


def test_shapes_dtypes_and_ranges(ds: AlignmentDataset) -> None:
    assert ds.name == "faces3d" and ds.image_size == SIZE and len(ds.dataset_id) == 16
    for part, split in _splits(ds).items():
        n = SIZES[f"n_{part}"]
        assert len(split) == n and split.has_uv
        assert split.images.shape == (n, 3, SIZE, SIZE) and split.images.dtype == np.float32
        assert split.uv_maps.shape == (n, 3, SIZE, SIZE) and split.uv_maps.dtype == np.float32
        assert split.landmarks.shape == (n, NUM_LANDMARKS, 3) and split.landmarks.dtype == np.float32
        assert split.yaw.shape == (n,) and split.yaw.dtype == np.float32
        assert 0.0 <= split.images.min() and split.images.max() <= 1.0
        assert split.images.std() > 0.05  # not blank
        assert np.isfinite(split.uv_maps).all() and np.isfinite(split.landmarks).all()
    assert ds.uv_weights.shape == (SIZE, SIZE) and ds.uv_weights.dtype == np.float32
    assert ds.landmark_uv.shape == (NUM_LANDMARKS, 2) and ds.landmark_uv.dtype == np.int64


def test_same_seed_same_data_other_seed_differs(ds: AlignmentDataset) -> None:
    again = make_faces3d(**SIZES, image_size=SIZE, seed=0)
    assert again.dataset_id == ds.dataset_id
    for part, split in _splits(ds).items():
        other = _splits(again)[part]
        for name in ("images", "uv_maps", "landmarks", "yaw"):
            np.testing.assert_array_equal(
                getattr(split, name), getattr(other, name), err_msg=f"{part}.{name}"
            )
    np.testing.assert_array_equal(again.uv_weights, ds.uv_weights)
    np.testing.assert_array_equal(again.landmark_uv, ds.landmark_uv)

    other_seed = make_faces3d(**SIZES, image_size=SIZE, seed=1)
    assert other_seed.dataset_id != ds.dataset_id
    assert not np.array_equal(other_seed.train.images, ds.train.images)
    assert not np.array_equal(other_seed.train.landmarks, ds.train.landmarks)
    bigger = make_faces3d(**{**SIZES, "n_val": 10}, image_size=SIZE, seed=0)
    assert bigger.dataset_id != ds.dataset_id
    np.testing.assert_array_equal(bigger.train.images, ds.train.images)  # splits are independent


def test_splits_differ_from_each_other(ds: AlignmentDataset) -> None:
    assert not np.allclose(ds.train.images[:9], ds.val.images)
    assert not np.allclose(ds.train.landmarks[:12], ds.test.landmarks)
    for seed in (0, 5):  # the splits texture their faces with disjoint LFW faces
        pools = [set(faces3d._split_faces(part, seed).tolist()) for part in ("train", "val", "test")]
        assert [len(p) for p in pools] == [60, 15, 25] and len(set.union(*pools)) == 100


def test_landmarks_are_the_uv_maps_at_landmark_uv(ds: AlignmentDataset) -> None:
    for split in _splits(ds).values():
        np.testing.assert_array_equal(landmarks_from_uv(split.uv_maps, ds.landmark_uv), split.landmarks)


def test_landmarks_inside_the_image_and_face_shaped(ds: AlignmentDataset) -> None:
    for split in _splits(ds).values():
        xy = split.landmarks[:, :, :2]
        inside = ((xy >= 0) & (xy <= SIZE - 1)).all(axis=2)
        assert inside.mean() >= 0.99
        box = xy.max(axis=1) - xy.min(axis=1)  # (N, 2)
        assert (box.max(axis=1) > 0.4 * SIZE).all() and (box.max(axis=1) < 0.8 * SIZE).all()
        # iBUG-68 layout survives every pose: brows above the eyes, eyes above the mouth, chin lowest.
        y = split.landmarks[:, :, 1]
        assert (y[:, 17:27].mean(axis=1) < y[:, 36:48].mean(axis=1)).mean() > 0.9
        assert (y[:, 36:48].mean(axis=1) < y[:, 48:68].mean(axis=1)).all()
        assert (y[:, 8] > y[:, 57]).mean() > 0.9


def test_uv_maps_are_zero_off_the_face(ds: AlignmentDataset) -> None:
    off = ds.uv_weights == 0
    on = ~off
    assert off.any() and on.mean() > 0.4
    for split in _splits(ds).values():
        assert (split.uv_maps[:, :, off] == 0).all()
        assert (split.uv_maps[:, 2, on] != 0).mean() > 0.99  # z of face texels (head axis at z = 0)


def test_yaw_covers_all_three_bins_in_every_split(ds: AlignmentDataset) -> None:
    for part, split in _splits(ds).items():
        assert split.yaw.min() >= -90.0 and split.yaw.max() <= 90.0
        counts = np.bincount(yaw_bin(split.yaw), minlength=3)
        n = len(split)
        assert (np.abs(counts - n / 3) <= 1).all(), (part, counts)
        assert (split.yaw < 0).any() and (split.yaw > 0).any()


def test_uv_weights_follow_16_4_3_0(ds: AlignmentDataset) -> None:
    values, counts = np.unique(ds.uv_weights, return_counts=True)
    assert set(values.tolist()) == {0.0, 3.0, 4.0, 16.0}
    assert dict(zip(values.tolist(), counts.tolist()))[16.0] == NUM_LANDMARKS
    rows, cols = ds.landmark_uv[:, 0], ds.landmark_uv[:, 1]
    assert (ds.uv_weights[rows, cols] == 16).all()
    assert len({(int(r), int(c)) for r, c in ds.landmark_uv}) == NUM_LANDMARKS  # distinct texels
    # Symmetric layout: the left eye's texels mirror the right eye's about the vertical centre line.
    assert (ds.landmark_uv[36:42, 0] == ds.landmark_uv[[45, 44, 43, 42, 47, 46], 0]).all()
    assert (ds.landmark_uv[36:42, 1] + ds.landmark_uv[[45, 44, 43, 42, 47, 46], 1] == SIZE - 1).all()


@pytest.mark.parametrize("size", [16, 32, 128])
def test_layout_at_other_sizes(size: int) -> None:
    _, landmark_uv, weights = faces3d._uv_layout(size)
    assert (weights == 16).sum() == NUM_LANDMARKS
    assert landmark_uv.min() >= 0 and landmark_uv.max() < size


def _controlled(n: int, yaw: float) -> faces3d._Params:
    """n samples from the generator's prior with a fixed yaw, no pitch / roll / blur / noise."""
    n_photos = len(faces3d._backgrounds(SIZE))
    params = faces3d._sample_params(np.random.default_rng(7), n, np.arange(100), n_photos)
    zero = np.zeros(n)
    return dataclasses.replace(
        params, yaw=np.full(n, yaw), pitch=zero, roll=zero, shift=np.zeros((n, 2)), blur=zero, noise=zero
    )


def test_face_is_drawn_over_the_background() -> None:
    params = _controlled(6, 0.0)
    images, _, _, coverage = faces3d._render_chunk(params, SIZE, np.random.default_rng(0))
    background = faces3d._background_chunk(params, SIZE).astype(np.float32)
    assert 0.15 < coverage.mean() < 0.7
    diff = np.abs(images - background).mean(axis=1)  # (B, S, S)
    assert diff[coverage].mean() > 0.05
    assert (diff[coverage] > 0.02).mean() > 0.7  # most face pixels changed


def test_frontal_and_profile_renders_differ_sensibly() -> None:
    n = 6
    rendered = {
        yaw: faces3d._render_chunk(_controlled(n, yaw), SIZE, np.random.default_rng(0))
        for yaw in (-70, 0, 70)
    }
    cols = np.arange(SIZE)[None, None, :]
    for yaw, (images, _, landmarks, coverage) in rendered.items():
        centroid = (coverage * cols).sum(axis=(1, 2)) / coverage.sum(axis=(1, 2))  # (n,)
        nose_tip = landmarks[:, 30, 0]
        offset = nose_tip - centroid
        if yaw > 0:  # the face turns to +x: the nose lies right of the visible face's centre
            assert (offset > 2).all(), offset
        elif yaw < 0:
            assert (offset < -2).all(), offset
        else:
            assert (np.abs(offset) < 3).all(), offset
    area = {yaw: r[3].mean() for yaw, r in rendered.items()}
    assert area[0] > 1.2 * max(area[-70], area[70])
    # The same faces at opposite yaw are (nearly) mirror images in their landmark geometry.
    left, right = rendered[-70][2], rendered[70][2]
    mirrored = left[:, faces3d._MIRROR]
    box = np.sqrt(np.prod(np.ptp(right[:, :, :2], axis=1), axis=1))
    centre_l, centre_r = left[:, :, 0].mean(axis=1), right[:, :, 0].mean(axis=1)
    error = np.abs((centre_l[:, None] - mirrored[:, :, 0]) - (right[:, :, 0] - centre_r[:, None]))
    assert (error.mean(axis=1) / box < 0.05).all()


def test_generation_speed_is_reported() -> None:
    faces3d._generate_split("train", 8, SIZE, 0)  # warm the caches (textures, photographs, bases)
    n = 128
    start_cpu, start = time.process_time(), time.perf_counter()
    faces3d._generate_split("train", n, SIZE, 123)
    cpu, wall = time.process_time() - start_cpu, time.perf_counter() - start
    print(f"faces3d generation at {SIZE}x{SIZE}: {n / cpu:.0f} images/s CPU time, {n / wall:.0f} wall")


def test_bad_generator_arguments_are_all_reported() -> None:
    with pytest.raises(DatasetError) as err:
        make_faces3d(n_train=2, image_size=8, seed=-1)
    _assert_one_line(err, "n_train=2", "image_size=8", "seed=-1")
    with pytest.raises(DatasetError) as err:
        make_faces3d(n_val=True)
    _assert_one_line(err, "n_val=True")


def test_meta_features_are_statistics(ds: AlignmentDataset) -> None:
    features = alignment_meta_features(ds)
    assert all(isinstance(v, float) and math.isfinite(v) for v in features.values())
    assert features["n_train"] == 24 and features["image_size"] == SIZE and features["test_has_uv"] == 1.0
    assert sum(features[f"train_yaw_bin{k}"] for k in range(3)) == pytest.approx(1.0)
    assert 0.3 < features["box_size_rel"] < 0.8


# --------------------------------------------------------------------------------------------------
# Registry
# --------------------------------------------------------------------------------------------------


def test_registry_and_loading_by_name(ds: AlignmentDataset) -> None:
    assert alignment_dataset_names() == ["aflw2000", "faces3d"] == ALIGNMENT_DATASETS.names()
    loaded = load_alignment_dataset("faces3d", image_size=SIZE, seed=0, **SIZES)
    assert loaded.dataset_id == ds.dataset_id
    np.testing.assert_array_equal(loaded.test.images, ds.test.images)
    with pytest.raises(DatasetError) as err:
        load_alignment_dataset("aflw")
    _assert_one_line(err, "aflw2000", "faces3d")
    with pytest.raises(DatasetError) as err:
        load_alignment_dataset("faces3d", path="/tmp")
    _assert_one_line(err, "takes no path")
    with pytest.raises(DatasetError) as err:
        load_alignment_dataset("aflw2000")
    _assert_one_line(err, "needs a path")


# --------------------------------------------------------------------------------------------------
# The AFLW2000-3D / 300W-LP loader
# --------------------------------------------------------------------------------------------------

HEIGHT, WIDTH = 90, 120


def _gradient_photo() -> np.ndarray:
    """(H, W, 3) uint8: red = column / W, green = row / H, so a pixel's colour tells where it came from."""
    rows, cols = np.mgrid[0:HEIGHT, 0:WIDTH]
    image = np.stack([cols / WIDTH, rows / HEIGHT, np.full(rows.shape, 0.5)], axis=2)
    return (image * 255).round().astype(np.uint8)


def _points(shift: float) -> np.ndarray:
    """(68, 3) landmarks from the generator's template, placed inside the photo."""
    template = faces3d._TEMPLATE  # (68, 2) in [-1, 1]
    x = 60.0 + shift + 22.0 * template[:, 0]
    y = 42.0 + 25.0 * template[:, 1]
    return np.stack([x, y, 5.0 + 3.0 * template[:, 0]], axis=1)


def _write_pair(folder: Path, stem: str, points: np.ndarray, yaw_rad: float, *, two_d: bool = False) -> None:
    skimage.io.imsave(folder / f"{stem}.jpg", _gradient_photo())
    pose = np.array([[0.1, yaw_rad, -0.05, 60.0, 40.0, 0.0, 0.0013]])
    content = {"pt2d": points[:, :2].T} if two_d else {"pt3d_68": points.T}
    scipy.io.savemat(folder / f"{stem}.mat", {**content, "Pose_Para": pose})


@pytest.fixture
def aflw_folder(tmp_path: Path) -> Path:
    folder = tmp_path / "AFLW2000"
    folder.mkdir()
    _write_pair(folder, "image00002", _points(0.0), 0.3)
    _write_pair(folder, "image00004", _points(-8.0), -1.7)  # beyond -90 degrees: clipped
    _write_pair(folder, "image00013", _points(10.0), 0.9, two_d=True)  # 300W-LP style pt2d
    return folder


def test_loader_reads_pairs_and_maps_landmarks(aflw_folder: Path) -> None:
    split = load_alignment_folder(str(aflw_folder), image_size=SIZE)
    assert len(split) == 3 and not split.has_uv
    assert split.images.shape == (3, 3, SIZE, SIZE) and split.images.dtype == np.float32
    assert (split.uv_maps == 0).all() and split.uv_maps.shape == (3, 3, SIZE, SIZE)
    np.testing.assert_allclose(split.yaw, [math.degrees(0.3), -90.0, math.degrees(0.9)], rtol=1e-6)

    for i, shift in enumerate((0.0, -8.0, 10.0)):
        original = _points(shift)
        mapped = split.landmarks[i]
        box = mapped[:, :2].max(axis=0) - mapped[:, :2].min(axis=0)
        assert box.max() == pytest.approx(SIZE / 1.6, rel=1e-4)  # 1.6x enlarged square crop
        centre = (mapped[:, :2].max(axis=0) + mapped[:, :2].min(axis=0)) / 2
        np.testing.assert_allclose(centre, [(SIZE - 1) / 2] * 2, atol=1e-4)
        k = SIZE / (1.6 * (original[:, :2].max(axis=0) - original[:, :2].min(axis=0)).max())
        expected_z = 0.0 if i == 2 else original[:, 2] * k
        np.testing.assert_allclose(mapped[:, 2], expected_z, rtol=1e-5, atol=1e-5)
        # The crop's colour at each mapped landmark tells the original pixel it came from.
        cols, rows = np.rint(mapped[:, 0]).astype(int), np.rint(mapped[:, 1]).astype(int)
        red, green = split.images[i, 0, rows, cols], split.images[i, 1, rows, cols]
        np.testing.assert_allclose(red * WIDTH, original[:, 0], atol=2.5)
        np.testing.assert_allclose(green * HEIGHT, original[:, 1], atol=2.5)


def test_aflw2000_dataset_tests_on_the_folder(aflw_folder: Path) -> None:
    ds = load_alignment_dataset("aflw2000", path=str(aflw_folder), image_size=32, n_train=6, n_val=3)
    assert ds.name == "aflw2000" and ds.image_size == 32
    assert ds.train.has_uv and ds.val.has_uv and not ds.test.has_uv
    assert (len(ds.train), len(ds.val), len(ds.test)) == (6, 3, 3)
    features = alignment_meta_features(ds)
    assert features["test_has_uv"] == 0.0
    again = load_alignment_dataset("aflw2000", path=str(aflw_folder), image_size=32, n_train=6, n_val=3)
    assert again.dataset_id == ds.dataset_id
    _write_pair(aflw_folder, "image00020", _points(3.0), 0.0)
    changed = load_alignment_dataset("aflw2000", path=str(aflw_folder), image_size=32, n_train=6, n_val=3)
    assert changed.dataset_id != ds.dataset_id and len(changed.test) == 4


def _expect_error(path: Path | str, *fragments: str) -> None:
    with pytest.raises(DatasetError) as err:
        load_alignment_folder(str(path), image_size=SIZE)
    _assert_one_line(err, *fragments)


def test_loader_bad_folders(tmp_path: Path) -> None:
    _expect_error(tmp_path / "missing", "does not exist", "missing")
    (tmp_path / "empty").mkdir()
    _expect_error(tmp_path / "empty", "holds no", "empty")
    (tmp_path / "file.txt").write_text("x")
    _expect_error(tmp_path / "file.txt", "is a file")


def test_loader_image_without_mat(aflw_folder: Path) -> None:
    skimage.io.imsave(aflw_folder / "lonely.jpg", _gradient_photo())
    _expect_error(aflw_folder, "lonely.jpg", "lonely.mat")


@pytest.mark.parametrize(
    ("content", "fragments"),
    [
        ({"Pose_Para": np.zeros((1, 7))}, ("lacks pt3d_68", "pt2d")),
        ({"pt3d_68": np.zeros((3, 68))}, ("lacks Pose_Para",)),
        ({"pt3d_68": np.zeros((68, 3)), "Pose_Para": np.zeros((1, 7))}, ("pt3d_68 must be", "(68, 3)")),
        ({"pt2d": np.zeros((2, 21)), "Pose_Para": np.zeros((1, 7))}, ("pt2d must be", "(2, 21)")),
        ({"pt3d_68": np.zeros((3, 68)), "Pose_Para": np.zeros((1, 3))}, ("Pose_Para must hold 7",)),
        ({"pt3d_68": np.full((3, 68), np.nan), "Pose_Para": np.zeros((1, 7))}, ("NaN",)),
        ({"pt3d_68": np.ones((3, 68)), "Pose_Para": np.zeros((1, 7))}, ("one point",)),
    ],
    ids=["no-points", "no-pose", "transposed", "short-pt2d", "short-pose", "nan", "degenerate"],
)
def test_loader_bad_mat(
    aflw_folder: Path, content: dict[str, np.ndarray], fragments: tuple[str, ...]
) -> None:
    skimage.io.imsave(aflw_folder / "bad.jpg", _gradient_photo())
    scipy.io.savemat(aflw_folder / "bad.mat", content)
    _expect_error(aflw_folder, "bad", *fragments)


def test_loader_unreadable_files(aflw_folder: Path) -> None:
    (aflw_folder / "image00002.mat").write_bytes(b"not a mat file at all")
    _expect_error(aflw_folder, "image00002.mat", "not a readable .mat")
    _write_pair(aflw_folder, "image00002", _points(0.0), 0.3)
    (aflw_folder / "image00004.jpg").write_bytes(b"\xff\xd8 truncated jpeg")
    _expect_error(aflw_folder, "image00004.jpg", "cannot be read")
