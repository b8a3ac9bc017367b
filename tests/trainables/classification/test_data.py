"""Unit tests for trainables.classification.data (fast, no Ray): package data, file formats, bad input, splits."""

from __future__ import annotations

import gzip
import math
import os
import pickle
from pathlib import Path

import numpy as np
import pytest

from trainables.checks import DatasetError
from trainables.classification.data import (
    DATASETS,
    ImageDataset,
    Split,
    dataset_names,
    load_dataset,
    meta_features,
)

PACKAGE_DATA = {  # name -> (N, C, H, W, num_classes)
    "digits": (1797, 1, 8, 8, 10),
    "lfw_faces": (200, 1, 25, 25, 2),
}


def _splits(ds: ImageDataset) -> dict[str, Split]:
    return {"train": ds.train, "val": ds.val, "test": ds.test}


def _denormalise(ds: ImageDataset, x: np.ndarray) -> np.ndarray:
    """(N, C, H, W) normalised -> the [0, 1] pixel scale, using the dataset's channel statistics."""
    mean = np.asarray(ds.channel_mean, dtype=np.float32)[None, :, None, None]
    std = np.asarray(ds.channel_std, dtype=np.float32)[None, :, None, None]
    return x * std + mean


def _assert_one_line(err: pytest.ExceptionInfo[DatasetError], *fragments: str) -> None:
    message = str(err.value)
    assert "\n" not in message and "Traceback" not in message, message
    for fragment in fragments:
        assert fragment in message, f"{fragment!r} not in {message!r}"


# --------------------------------------------------------------------------------------------------
# Package data: digits and lfw_faces
# --------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module", params=sorted(PACKAGE_DATA))
def package_ds(request: pytest.FixtureRequest) -> ImageDataset:
    return load_dataset(request.param)


def test_registry_names() -> None:
    assert dataset_names() == ["cifar10", "cluttered_digits", "digits", "lfw_faces", "mnist"]
    assert dataset_names() == DATASETS.names()


def test_unknown_name_lists_valid_names() -> None:
    with pytest.raises(DatasetError) as err:
        load_dataset("imagenet")
    _assert_one_line(err, "'imagenet'", "cifar10", "digits", "lfw_faces", "mnist")


def test_package_shapes_dtypes_and_classes(package_ds: ImageDataset) -> None:
    n, c, h, w, k = PACKAGE_DATA[package_ds.name]
    assert (package_ds.in_channels, package_ds.image_size, package_ds.num_classes) == (c, (h, w), k)
    assert len(package_ds.class_names) == k
    assert sum(len(s) for s in _splits(package_ds).values()) == n
    for split in _splits(package_ds).values():
        assert split.x.dtype == np.float32 and split.x.shape[1:] == (c, h, w)
        assert split.y.dtype == np.int64 and split.y.shape == (len(split.x),)
        assert split.y.min() >= 0 and split.y.max() < k
        assert np.isfinite(split.x).all()
    assert len(package_ds.dataset_id) == 16 and int(package_ds.dataset_id, 16) >= 0


def test_package_split_sizes(package_ds: ImageDataset) -> None:
    n = PACKAGE_DATA[package_ds.name][0]
    expected_holdout = math.floor(0.2 * n + 0.5)
    assert len(package_ds.test) == expected_holdout
    assert len(package_ds.val) == expected_holdout
    assert len(package_ds.train) == n - 2 * expected_holdout


def test_package_splits_are_stratified(package_ds: ImageDataset) -> None:
    k = package_ds.num_classes
    y_all = np.concatenate([s.y for s in _splits(package_ds).values()])
    overall = np.bincount(y_all, minlength=k) / len(y_all)
    for split in _splits(package_ds).values():
        counts = np.bincount(split.y, minlength=k)
        # largest-remainder allocation: each class within one sample (plus rounding) of its share
        assert np.all(np.abs(counts - overall * len(split)) <= 1.5), (counts, overall * len(split))


def test_package_splits_are_disjoint_and_cover_the_source(package_ds: ImageDataset) -> None:
    n = PACKAGE_DATA[package_ds.name][0]
    indices = [s.index for s in _splits(package_ds).values()]
    merged = np.concatenate(indices)
    assert len(np.unique(merged)) == len(merged) == n
    assert set(merged.tolist()) == set(range(n))


def test_package_splits_disjoint_by_content() -> None:
    """Independent of the indices: hash raw rows (digits images are on a 0..16 grid)."""
    ds = load_dataset("digits")
    hashes = {}
    for name, split in _splits(ds).items():
        raw = np.rint(_denormalise(ds, split.x) * 16).astype(np.uint8).reshape(len(split), -1)
        hashes[name] = {row.tobytes() for row in raw}
    from sklearn.datasets import load_digits

    images = load_digits().images.astype(np.uint8).reshape(1797, -1)
    unique_rows = {row.tobytes() for row in images}
    duplicated = len(images) - len(unique_rows)  # identical images may legitimately land anywhere
    overlap = (hashes["train"] & hashes["val"]) | (hashes["train"] & hashes["test"]) | (
        hashes["val"] & hashes["test"]
    )
    assert len(overlap) <= duplicated


def test_index_maps_back_to_the_source() -> None:
    from sklearn.datasets import load_digits
    from skimage.data import lfw_subset

    ds = load_dataset("digits", split_seed=3)
    bunch = load_digits()
    for split in _splits(ds).values():
        np.testing.assert_allclose(
            _denormalise(ds, split.x)[:, 0], bunch.images[split.index] / 16.0, atol=1e-5
        )
        np.testing.assert_array_equal(split.y, bunch.target[split.index])
    faces = load_dataset("lfw_faces")
    images = lfw_subset()
    for split in _splits(faces).values():
        # skimage documents the first 100 images as faces, the last 100 as non-faces
        np.testing.assert_array_equal(split.y, (split.index < 100).astype(np.int64))
        np.testing.assert_allclose(_denormalise(faces, split.x)[:, 0], images[split.index], atol=1e-5)
    assert faces.class_names == ("non-face", "face")


def test_normalisation_uses_train_statistics(package_ds: ImageDataset) -> None:
    x = package_ds.train.x
    assert np.allclose(x.mean(axis=(0, 2, 3)), 0.0, atol=1e-4)
    assert np.allclose(x.std(axis=(0, 2, 3)), 1.0, atol=1e-3)
    assert all(0.0 <= m <= 1.0 for m in package_ds.channel_mean)
    assert all(s > 0 for s in package_ds.channel_std)


def test_same_seed_same_split_and_id() -> None:
    a, b = load_dataset("digits", split_seed=7), load_dataset("digits", split_seed=7)
    assert a.dataset_id == b.dataset_id
    for part in ("train", "val", "test"):
        sa, sb = _splits(a)[part], _splits(b)[part]
        np.testing.assert_array_equal(sa.x, sb.x)
        np.testing.assert_array_equal(sa.y, sb.y)
        np.testing.assert_array_equal(sa.index, sb.index)


def test_other_seed_other_split_and_id() -> None:
    a, b = load_dataset("digits", split_seed=0), load_dataset("digits", split_seed=1)
    assert a.dataset_id != b.dataset_id
    assert set(a.test.index.tolist()) != set(b.test.index.tolist())
    assert not np.array_equal(a.train.x, b.train.x)


@pytest.mark.parametrize(
    "change",
    [{"val_fraction": 0.25}, {"test_fraction": 0.1}, {"max_samples": 500}, {"split_seed": 2}],
)
def test_dataset_id_depends_on_split_arguments(change: dict) -> None:
    assert load_dataset("digits", **change).dataset_id != load_dataset("digits").dataset_id


def test_max_samples_caps_stratified() -> None:
    ds = load_dataset("digits", max_samples=100, split_seed=4)
    assert sum(len(s) for s in _splits(ds).values()) == 100
    assert (len(ds.train), len(ds.val), len(ds.test)) == (60, 20, 20)
    y_all = np.concatenate([s.y for s in _splits(ds).values()])
    assert np.all(np.abs(np.bincount(y_all, minlength=10) - 10) <= 1)
    assert set(ds.train.y.tolist()) == set(range(10))


def test_max_samples_above_size_is_no_cap() -> None:
    assert load_dataset("lfw_faces", max_samples=10_000).dataset_id == load_dataset("lfw_faces").dataset_id


@pytest.mark.parametrize(
    ("kwargs", "fragment"),
    [
        ({"val_fraction": 0.0}, "val_fraction=0.0"),
        ({"val_fraction": 1.0}, "val_fraction=1.0"),
        ({"test_fraction": -0.1}, "test_fraction=-0.1"),
        ({"test_fraction": float("nan")}, "test_fraction=nan"),
        ({"val_fraction": True}, "val_fraction=True"),
        ({"val_fraction": 0.5, "test_fraction": 0.5}, "val_fraction + test_fraction < 1"),
        ({"max_samples": 29}, "max_samples=29"),
        ({"max_samples": 50.0}, "max_samples=50.0"),
        ({"split_seed": -1}, "split_seed=-1"),
        ({"split_seed": "0"}, "split_seed='0'"),
    ],
)
def test_bad_arguments_state_rule_and_value(kwargs: dict, fragment: str) -> None:
    with pytest.raises(DatasetError) as err:
        load_dataset("digits", **kwargs)
    _assert_one_line(err, fragment, "'digits'")


def test_bad_arguments_are_all_reported_at_once() -> None:
    with pytest.raises(DatasetError) as err:
        load_dataset("lfw_faces", val_fraction=2.0, split_seed=-3, max_samples=1)
    _assert_one_line(err, "val_fraction=2.0", "split_seed=-3", "max_samples=1", ">= 3 * num_classes = 6")


def test_package_dataset_refuses_a_path(tmp_path: Path) -> None:
    with pytest.raises(DatasetError) as err:
        load_dataset("digits", path=str(tmp_path))
    _assert_one_line(err, "takes no path", "remove data.path")


def test_split_validates_shapes() -> None:
    with pytest.raises(ValueError, match="float32"):
        Split(x=np.zeros((2, 8, 8)), y=np.zeros(2, dtype=np.int64))
    with pytest.raises(ValueError, match="int64"):
        Split(x=np.zeros((2, 1, 8, 8), np.float32), y=np.zeros(3, dtype=np.int64))


# --------------------------------------------------------------------------------------------------
# meta_features
# --------------------------------------------------------------------------------------------------


def test_meta_features_are_finite_floats(package_ds: ImageDataset) -> None:
    features = meta_features(package_ds)
    assert features, "no features"
    for key, value in features.items():
        assert type(value) is float and math.isfinite(value), (key, value)
    _, c, h, w, k = PACKAGE_DATA[package_ds.name]
    assert features["n_train"] == len(package_ds.train)
    assert (features["n_classes"], features["channels"]) == (k, c)
    assert (features["height"], features["width"]) == (h, w)
    assert 0.0 <= features["pixel_mean"] <= 1.0 and features["pixel_std"] > 0
    assert 0.0 < features["class_entropy_norm"] <= 1.0
    assert features["mean_contrast"] > 0


def test_meta_features_match_an_independent_computation() -> None:
    from skimage.data import lfw_subset

    ds = load_dataset("lfw_faces")
    raw = lfw_subset()[ds.train.index]  # (N, 25, 25) on [0, 1]
    features = meta_features(ds)
    assert features["pixel_mean"] == pytest.approx(raw.mean(), abs=1e-5)
    assert features["pixel_std"] == pytest.approx(raw.std(), abs=1e-5)
    assert features["mean_contrast"] == pytest.approx(raw.reshape(len(raw), -1).std(axis=1).mean(), abs=1e-5)
    assert features["class_entropy"] == pytest.approx(math.log(2))


# --------------------------------------------------------------------------------------------------
# CIFAR-10 python batches
# --------------------------------------------------------------------------------------------------

CIFAR_PER_BATCH = 20
CIFAR_TRAIN = [f"data_batch_{i}" for i in range(1, 6)]


def _cifar_batch(seed: int, n: int = CIFAR_PER_BATCH) -> dict:
    rng = np.random.default_rng(seed)
    return {
        b"batch_label": f"batch {seed}".encode(),
        b"labels": [int(v) for v in np.arange(n) % 10],  # every class, as a plain list like the real files
        b"data": rng.integers(0, 256, size=(n, 3072), dtype=np.uint8),
        b"filenames": [f"img_{seed}_{i}.png".encode() for i in range(n)],
    }


def _write_cifar(folder: Path, protocol: int = 2) -> dict[str, dict]:
    folder.mkdir(parents=True, exist_ok=True)
    batches = {name: _cifar_batch(seed) for seed, name in enumerate([*CIFAR_TRAIN, "test_batch"])}
    for name, batch in batches.items():
        (folder / name).write_bytes(pickle.dumps(batch, protocol=protocol))
    return batches


@pytest.mark.parametrize("protocol", [2, 4, 5])
def test_cifar10_loads_tiny_batches(tmp_path: Path, protocol: int) -> None:
    batches = _write_cifar(tmp_path, protocol)
    ds = load_dataset("cifar10", path=str(tmp_path), split_seed=1)
    n_train = 5 * CIFAR_PER_BATCH
    assert (ds.in_channels, ds.image_size, ds.num_classes) == (3, (32, 32), 10)
    assert ds.class_names[0] == "airplane" and len(ds.class_names) == 10
    assert len(ds.test) == CIFAR_PER_BATCH  # the official test batch, whole
    assert (len(ds.train), len(ds.val)) == (n_train - 20, 20)  # val = 0.2 of the training files
    assert np.all(np.bincount(ds.val.y, minlength=10) == 2)  # stratified
    for split in _splits(ds).values():
        assert split.x.dtype == np.float32 and split.x.shape[1:] == (3, 32, 32)
    assert np.allclose(ds.train.x.mean(axis=(0, 2, 3)), 0.0, atol=1e-4)
    # pixels round-trip: rows are 1024 R, 1024 G, 1024 B; official test rows are numbered after train
    train_data = np.concatenate([batches[name][b"data"] for name in CIFAR_TRAIN])
    test_data = batches["test_batch"][b"data"]
    np.testing.assert_array_equal(np.sort(ds.test.index), np.arange(n_train, n_train + CIFAR_PER_BATCH))
    for split, rows in ((ds.train, train_data[ds.train.index]), (ds.test, test_data[ds.test.index - n_train])):
        expected = rows.reshape(-1, 3, 32, 32) / 255.0
        np.testing.assert_allclose(_denormalise(ds, split.x), expected, atol=1e-5)
    assert set(ds.train.index.tolist()).isdisjoint(ds.val.index.tolist())


def test_cifar10_loads_numpy1_pickles(tmp_path: Path) -> None:
    """Files pickled under numpy 1.x name numpy.core.* rather than numpy._core.*."""
    batches = _write_cifar(tmp_path)
    old = pickle.dumps(batches["test_batch"], protocol=2).replace(b"numpy._core.", b"numpy.core.")
    assert b"numpy.core.multiarray" in old
    (tmp_path / "test_batch").write_bytes(old)
    ds = load_dataset("cifar10", path=str(tmp_path))
    np.testing.assert_array_equal(np.sort(ds.test.y), np.sort(batches["test_batch"][b"labels"]))


def test_cifar10_id_follows_content(tmp_path: Path) -> None:
    _write_cifar(tmp_path / "a")
    _write_cifar(tmp_path / "b")
    id_a = load_dataset("cifar10", path=str(tmp_path / "a")).dataset_id
    assert load_dataset("cifar10", path=str(tmp_path / "b")).dataset_id == id_a  # same bytes, same id
    batch = _cifar_batch(0)
    batch[b"data"][0, 0] ^= 1
    (tmp_path / "b" / "data_batch_1").write_bytes(pickle.dumps(batch, protocol=2))
    assert load_dataset("cifar10", path=str(tmp_path / "b")).dataset_id != id_a
    # test_fraction is unused with an official test split, so it does not change the id
    assert load_dataset("cifar10", path=str(tmp_path / "a"), test_fraction=0.3).dataset_id == id_a


def test_cifar10_max_samples_shares_the_cap(tmp_path: Path) -> None:
    _write_cifar(tmp_path)
    ds = load_dataset("cifar10", path=str(tmp_path), max_samples=60)
    assert len(ds.train) + len(ds.val) == 50 and len(ds.test) == 10  # 100 : 20 -> 50 : 10


def test_cifar10_needs_a_path() -> None:
    with pytest.raises(DatasetError) as err:
        load_dataset("cifar10")
    _assert_one_line(err, "'cifar10' needs a path", "data_batch_1..5", "test_batch")


def test_cifar10_missing_folder(tmp_path: Path) -> None:
    with pytest.raises(DatasetError) as err:
        load_dataset("cifar10", path=str(tmp_path / "nope"))
    _assert_one_line(err, str(tmp_path / "nope"), "does not exist")


def test_cifar10_path_is_a_file(tmp_path: Path) -> None:
    (tmp_path / "data_batch_1").write_bytes(b"x")
    with pytest.raises(DatasetError) as err:
        load_dataset("cifar10", path=str(tmp_path / "data_batch_1"))
    _assert_one_line(err, "is a file, not a folder")


def test_cifar10_empty_folder(tmp_path: Path) -> None:
    with pytest.raises(DatasetError) as err:
        load_dataset("cifar10", path=str(tmp_path))
    _assert_one_line(err, str(tmp_path), "is empty")


def test_cifar10_names_every_missing_file(tmp_path: Path) -> None:
    _write_cifar(tmp_path)
    (tmp_path / "data_batch_3").unlink()
    (tmp_path / "test_batch").unlink()
    with pytest.raises(DatasetError) as err:
        load_dataset("cifar10", path=str(tmp_path))
    _assert_one_line(err, "lacks data_batch_3, test_batch", "data_batch_1")


def test_cifar10_points_at_the_nested_folder(tmp_path: Path) -> None:
    _write_cifar(tmp_path / "cifar-10-batches-py")
    with pytest.raises(DatasetError) as err:
        load_dataset("cifar10", path=str(tmp_path))
    _assert_one_line(err, f"did you mean data.path={tmp_path / 'cifar-10-batches-py'}")


def _corrupt(batch: dict) -> bytes:
    return pickle.dumps(batch, protocol=2)


@pytest.mark.parametrize(
    ("content", "fragment"),
    [
        (lambda: _corrupt(_cifar_batch(0))[:200], "unreadable pickle"),  # truncated
        (lambda: b"\x89PNG\r\n\x1a\n not a pickle", "unreadable pickle"),
        (lambda: b"", "unreadable pickle"),
        (lambda: _corrupt([1, 2, 3]), "holds a list, not a dict"),
        (lambda: _corrupt({b"data": np.zeros((2, 3072), np.uint8)}), "no b'data' and b'labels'"),
        (lambda: _corrupt({**_cifar_batch(0), b"data": np.zeros((20, 100), np.uint8)}), "(N, 3072) uint8"),
        (lambda: _corrupt({**_cifar_batch(0), b"data": np.zeros((20, 3072), np.float32)}), "dtype float32"),
        (lambda: _corrupt({**_cifar_batch(0), b"labels": [0] * 19}), "labels must be 20 integers"),
        (lambda: _corrupt({**_cifar_batch(0), b"labels": [10] * 20}), "labels must lie in [0, 10)"),
        (lambda: _corrupt({**_cifar_batch(0), b"labels": ["a"] * 20}), "labels must be 20 integers"),
    ],
)
def test_cifar10_corrupt_batch(tmp_path: Path, content, fragment: str) -> None:
    _write_cifar(tmp_path)
    (tmp_path / "data_batch_2").write_bytes(content())
    with pytest.raises(DatasetError) as err:
        load_dataset("cifar10", path=str(tmp_path))
    _assert_one_line(err, str(tmp_path / "data_batch_2"), fragment, "re-download CIFAR-10")


class _Exploit:
    """Unpickling this with plain pickle would run a shell command that creates a marker file."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_cifar10_refuses_a_pickle_that_runs_code(tmp_path: Path) -> None:
    _write_cifar(tmp_path)
    marker = tmp_path / "pwned"
    (tmp_path / "data_batch_4").write_bytes(pickle.dumps({b"data": _Exploit(marker), b"labels": []}))
    with pytest.raises(DatasetError) as err:
        load_dataset("cifar10", path=str(tmp_path))
    _assert_one_line(err, str(tmp_path / "data_batch_4"), "is refused", "system")
    assert not marker.exists()


@pytest.mark.parametrize(
    "payload",
    [
        ("builtins", "eval"),  # a global the allow-list does not hold
        ("_codecs", "encode"),  # an allowed global with a forbidden codec argument
    ],
)
def test_cifar10_refuses_other_globals(tmp_path: Path, payload: tuple[str, str]) -> None:
    _write_cifar(tmp_path)
    module, name = payload
    # protocol-0 pickle: GLOBAL module name, MARK, two unicode args, TUPLE, REDUCE, STOP
    evil = f"c{module}\n{name}\n(Vopen('x')\nVzlib\ntR.".encode()
    (tmp_path / "test_batch").write_bytes(evil)
    with pytest.raises(DatasetError) as err:
        load_dataset("cifar10", path=str(tmp_path))
    _assert_one_line(err, str(tmp_path / "test_batch"), "is refused")


# --------------------------------------------------------------------------------------------------
# MNIST-family IDX files
# --------------------------------------------------------------------------------------------------

MNIST_FILES = {
    "train-images-idx3-ubyte": ("images", 30),
    "train-labels-idx1-ubyte": ("labels", 30),
    "t10k-images-idx3-ubyte": ("images", 10),
    "t10k-labels-idx1-ubyte": ("labels", 10),
}
MNIST_H, MNIST_W = 7, 5  # not square, to catch a swapped H and W


def _idx(kind: str, n: int, seed: int, h: int = MNIST_H, w: int = MNIST_W) -> bytes:
    rng = np.random.default_rng(seed)
    if kind == "images":
        header = (2051).to_bytes(4, "big") + b"".join(d.to_bytes(4, "big") for d in (n, h, w))
        return header + rng.integers(0, 256, size=n * h * w, dtype=np.uint8).tobytes()
    header = (2049).to_bytes(4, "big") + n.to_bytes(4, "big")
    return header + (np.arange(n) % 10).astype(np.uint8).tobytes()


def _write_mnist(folder: Path, gz: bool = False) -> dict[str, bytes]:
    folder.mkdir(parents=True, exist_ok=True)
    contents = {}
    for seed, (name, (kind, n)) in enumerate(MNIST_FILES.items()):
        contents[name] = _idx(kind, n, seed)
        if gz:
            (folder / f"{name}.gz").write_bytes(gzip.compress(contents[name], mtime=seed))
        else:
            (folder / name).write_bytes(contents[name])
    return contents


def _replace(folder: Path, name: str, content: bytes) -> Path:
    """Write ``content`` where the file ``name`` (plain or .gz) is."""
    plain = folder / name
    if plain.exists():
        plain.write_bytes(content)
        return plain
    zipped = folder / f"{name}.gz"
    zipped.write_bytes(gzip.compress(content))
    return zipped


@pytest.mark.parametrize("gz", [False, True], ids=["plain", "gz"])
def test_mnist_loads_tiny_idx_files(tmp_path: Path, gz: bool) -> None:
    contents = _write_mnist(tmp_path, gz)
    ds = load_dataset("mnist", path=str(tmp_path))
    assert (ds.in_channels, ds.image_size, ds.num_classes) == (1, (MNIST_H, MNIST_W), 10)
    assert (len(ds.train), len(ds.val), len(ds.test)) == (24, 6, 10)
    header = 16
    train_pixels = np.frombuffer(contents["train-images-idx3-ubyte"], np.uint8, offset=header)
    train_pixels = train_pixels.reshape(30, MNIST_H, MNIST_W)
    test_pixels = np.frombuffer(contents["t10k-images-idx3-ubyte"], np.uint8, offset=header)
    test_pixels = test_pixels.reshape(10, MNIST_H, MNIST_W)
    np.testing.assert_allclose(
        _denormalise(ds, ds.train.x)[:, 0], train_pixels[ds.train.index] / 255.0, atol=1e-5
    )
    np.testing.assert_allclose(
        _denormalise(ds, ds.test.x)[:, 0], test_pixels[ds.test.index - 30] / 255.0, atol=1e-5
    )
    np.testing.assert_array_equal(ds.test.y, (ds.test.index - 30) % 10)


def test_mnist_gz_and_plain_give_the_same_id(tmp_path: Path) -> None:
    _write_mnist(tmp_path / "plain")
    _write_mnist(tmp_path / "gz", gz=True)
    assert (
        load_dataset("mnist", path=str(tmp_path / "plain")).dataset_id
        == load_dataset("mnist", path=str(tmp_path / "gz")).dataset_id
    )


def test_mnist_accepts_dotted_names(tmp_path: Path) -> None:
    _write_mnist(tmp_path)
    (tmp_path / "train-images-idx3-ubyte").rename(tmp_path / "train-images.idx3-ubyte")
    assert len(load_dataset("mnist", path=str(tmp_path)).test) == 10


def test_mnist_names_the_missing_file(tmp_path: Path) -> None:
    _write_mnist(tmp_path, gz=True)
    (tmp_path / "t10k-labels-idx1-ubyte.gz").unlink()
    with pytest.raises(DatasetError) as err:
        load_dataset("mnist", path=str(tmp_path))
    _assert_one_line(err, "lacks t10k-labels-idx1-ubyte", "train-images-idx3-ubyte")


def _images_header(n: int, h: int, w: int) -> bytes:
    return b"".join(v.to_bytes(4, "big") for v in (2051, n, h, w))


@pytest.mark.parametrize("gz", [False, True], ids=["plain", "gz"])
@pytest.mark.parametrize(
    ("name", "content", "fragment"),
    [
        ("train-images-idx3-ubyte", _idx("labels", 30, 0), "magic number 2049 (0x00000801), expected 2051"),
        ("t10k-labels-idx1-ubyte", _idx("images", 10, 0), "magic number 2051 (0x00000803), expected 2049"),
        ("train-images-idx3-ubyte", _idx("images", 30, 0)[:-7], "is truncated"),
        ("train-images-idx3-ubyte", _idx("images", 30, 0)[:10], "shorter than the 16-byte IDX images header"),
        ("t10k-labels-idx1-ubyte", _idx("labels", 10, 0) + b"\x00", "has trailing bytes"),
        ("train-labels-idx1-ubyte", _idx("labels", 29, 0), "30 images but 29 labels"),
        ("t10k-labels-idx1-ubyte", _idx("labels", 10, 0)[:-1] + b"\x0c", "has label 12"),
        ("t10k-images-idx3-ubyte", _idx("images", 10, 0, h=5, w=7), "images are 7x5 and 5x7"),
        ("train-images-idx3-ubyte", _images_header(0, 7, 5), "holds no pixels"),
    ],
)
def test_mnist_bad_file(tmp_path: Path, gz: bool, name: str, content: bytes, fragment: str) -> None:
    _write_mnist(tmp_path, gz)
    written = _replace(tmp_path, name, content)
    with pytest.raises(DatasetError) as err:
        load_dataset("mnist", path=str(tmp_path))
    _assert_one_line(err, written.name, fragment)


@pytest.mark.parametrize(
    "content", [b"not gzip at all", gzip.compress(_idx("labels", 30, 0))[:-12]], ids=["garbage", "truncated"]
)
def test_mnist_corrupt_gzip(tmp_path: Path, content: bytes) -> None:
    _write_mnist(tmp_path, gz=True)
    (tmp_path / "train-labels-idx1-ubyte.gz").write_bytes(content)
    with pytest.raises(DatasetError) as err:
        load_dataset("mnist", path=str(tmp_path))
    _assert_one_line(err, str(tmp_path / "train-labels-idx1-ubyte.gz"), "not a valid gzip file")


def test_meta_features_on_file_datasets(tmp_path: Path) -> None:
    _write_mnist(tmp_path / "mnist")
    _write_cifar(tmp_path / "cifar")
    for name, folder in (("mnist", "mnist"), ("cifar10", "cifar")):
        features = meta_features(load_dataset(name, path=str(tmp_path / folder)))
        assert all(type(v) is float and math.isfinite(v) for v in features.values()), features
    assert features["channels"] == 3.0 and features["pixels"] == 1024.0
