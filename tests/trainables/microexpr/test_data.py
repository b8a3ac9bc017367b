"""Micro-expression clips: the LFW generator, temporal interpolation, LOSO folds, the CASME-II-style loader."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from PIL import Image

from trainables.checks import DatasetError
from trainables.microexpr.data import (
    CLASS_NAMES, load_microexpr, loso_folds, magnify, make_microexpr, microexpr_meta_features, subject_split,
    temporal_interpolate,
)


@pytest.fixture(scope="module")
def small():
    return make_microexpr(subjects=12, episodes=4, frames=8, image_size=32, seed=3)


def test_generator_shapes_subjects_and_determinism(small):
    assert small.clips.shape == (48, 1, 8, 32, 32) and small.clips.dtype == np.float32
    assert len(set(small.subject_names)) == 12  # distinct LFW faces
    assert set(np.unique(small.labels)) == {0, 1, 2} and small.class_names == CLASS_NAMES
    for s in range(12):  # every subject shows every class
        assert set(small.labels[small.subjects == s]) == {0, 1, 2}
    again = make_microexpr(subjects=12, episodes=4, frames=8, image_size=32, seed=3)
    assert np.array_equal(again.clips, small.clips) and again.dataset_id == small.dataset_id
    other = make_microexpr(subjects=12, episodes=4, frames=8, image_size=32, seed=4)
    assert other.dataset_id != small.dataset_id
    np.testing.assert_allclose(small.clips.mean(axis=(1, 2, 3, 4)), 0, atol=1e-4)  # per-clip standardised


def test_motion_is_subtle_and_class_specific():
    ds = make_microexpr(subjects=2, episodes=3, frames=8, image_size=32, seed=0, noise=0.0)
    assert set(microexpr_meta_features(ds)) >= {"n_clips", "motion_energy", "class_fraction_surprise"}
    # Frame-to-frame change is small relative to the face's own contrast (a micro, not macro, expression).
    step = np.abs(np.diff(ds.clips[:, 0], axis=1)).mean()
    assert 0 < step < 0.5


def test_magnification_amplifies_the_change_from_onset_per_clip(small):
    assert magnify(small, 0) is small  # off: the same set, the same id
    big = magnify(small, 8.0)
    assert big.clips.shape == small.clips.shape and big.clips.dtype == np.float32
    assert big.dataset_id != small.dataset_id and magnify(small, 8.0).dataset_id == big.dataset_id
    np.testing.assert_allclose(big.clips.std(axis=(1, 2, 3, 4)), 1, atol=1e-3)  # standardised again
    # Before re-standardising, clip i is I + 8 (I - I_0): its change from onset grows 9x relative to the onset frame.
    change = lambda c: np.abs(c[:, 0, -1] - c[:, 0, 0]).mean() / c[:, 0, 0].std()
    assert change(big.clips) > 3 * change(small.clips)
    # Per clip: magnifying one clip alone gives the same result as magnifying it within the set.
    one = dataclasses.replace(small, clips=small.clips[:1], labels=small.labels[:1], subjects=small.subjects[:1])
    np.testing.assert_allclose(magnify(one, 8.0).clips[0], big.clips[0], rtol=1e-5, atol=1e-5)
    with pytest.raises(DatasetError, match="magnify must be a number in"):
        magnify(small, -1.0)
    assert load_microexpr(subjects=12, episodes=4, frames=8, image_size=32, seed=3, magnify_factor=8.0).dataset_id == big.dataset_id


def test_generator_rejects_bad_arguments():
    with pytest.raises(DatasetError, match="max_motion"):
        make_microexpr(max_motion=5.0)
    with pytest.raises(DatasetError, match="subjects"):
        make_microexpr(subjects=1)


def test_temporal_interpolation_is_linear_and_keeps_the_ends():
    frames = np.stack([np.full((2, 2), v, dtype=np.float64) for v in (0.0, 3.0, 6.0)])  # (3, 2, 2)
    out = temporal_interpolate(frames, 5)
    assert out[:, 0, 0].tolist() == pytest.approx([0.0, 1.5, 3.0, 4.5, 6.0])
    assert temporal_interpolate(frames, 2)[:, 0, 0].tolist() == [0.0, 6.0]


def test_loso_folds_never_share_a_subject(small):
    folds = loso_folds(small.subjects)
    assert len(folds) == 12
    seen = []
    for subject, train, test in folds:
        assert set(small.subjects[test]) == {subject}
        assert subject not in set(small.subjects[train])
        assert len(train) + len(test) == len(small)
        seen.extend(test.tolist())
    assert sorted(seen) == list(range(len(small)))  # every clip is tested exactly once
    a, b = subject_split(small.subjects, seed=0)
    assert not set(small.subjects[a]) & set(small.subjects[b]) and len(a) + len(b) == len(small)


def _write_folder(root, rows, frames_per_episode=6, header="Subject,Filename,OnsetFrame,ApexFrame,OffsetFrame,Estimated Emotion"):
    rng = np.random.default_rng(0)
    for subject, episode, *_ in rows:
        folder = root / f"sub{subject}" / episode
        folder.mkdir(parents=True, exist_ok=True)
        for n in range(10, 10 + frames_per_episode):
            Image.fromarray(rng.integers(0, 255, size=(40, 30), dtype=np.uint8)).save(folder / f"img{n}.jpg")
    lines = [header] + [",".join(str(v) for v in row) for row in rows]
    (root / "coding.csv").write_text("\n".join(lines) + "\n")


ROWS = [("01", "EP01_1", 10, 12, 15, "happiness"), ("01", "EP02", 11, 13, 14, "disgust"),
        ("01", "EP03", 10, 10, 12, "others"), ("02", "EP01", 10, 11, 13, "surprise"),
        ("02", "EP05", 12, 13, 15, "repression")]


def test_casme_style_folder_and_coding_sheet(tmp_path):
    _write_folder(tmp_path, ROWS)
    ds = load_microexpr("mer_folder", path=str(tmp_path), frames=8, image_size=16)
    assert ds.clips.shape == (4, 1, 8, 16, 16)  # 'others' left out
    assert ds.labels.tolist() == [1, 0, 2, 0]  # happiness, disgust, surprise, repression
    assert ds.subjects.tolist() == [0, 0, 1, 1] and ds.subject_names == ("sub01", "sub02")
    again = load_microexpr("mer_folder", path=str(tmp_path), frames=8, image_size=16)
    assert again.dataset_id == ds.dataset_id


@pytest.mark.parametrize("change, message", [
    (lambda root: (root / "coding.csv").unlink(), "coding sheet .* does not exist"),
    (lambda root: (root / "coding.csv").write_text("Subject,Filename\n01,EP02\n"), "lacks the column"),
    (lambda root: (root / "coding.csv").write_text(
        "Subject,Filename,OnsetFrame,ApexFrame,OffsetFrame,Estimated Emotion\n01,EP02,11,13,14,joy\n"), "unknown emotion 'joy'"),
    (lambda root: (root / "coding.csv").write_text(
        "Subject,Filename,OnsetFrame,ApexFrame,OffsetFrame,Estimated Emotion\n01,EP02,40,41,45,disgust\n"), "no frames numbered 40..45"),
    (lambda root: (root / "coding.csv").write_text(
        "Subject,Filename,OnsetFrame,ApexFrame,OffsetFrame,Estimated Emotion\n01,EP02,x,13,14,disgust\n"), "onset must be a frame number"),
    (lambda root: (root / "coding.csv").write_text(
        "Subject,Filename,OnsetFrame,ApexFrame,OffsetFrame,Estimated Emotion\n01,EP09,11,13,14,disgust\n"), "no folder"),
    (lambda root: (root / "coding.csv").write_text(
        "Subject,Filename,OnsetFrame,ApexFrame,OffsetFrame,Estimated Emotion\n01,EP02,11,13,14,disgust\n"), "at least two subjects"),
    (lambda root: (root / "sub01" / "EP02" / "img12.jpg").write_bytes(b"not an image"), "cannot be read as an image"),
])
def test_malformed_folders_give_one_line_errors(tmp_path, change, message):
    _write_folder(tmp_path, ROWS)
    change(tmp_path)
    with pytest.raises(DatasetError, match=message) as info:
        load_microexpr("mer_folder", path=str(tmp_path), frames=8, image_size=16)
    assert "\n" not in str(info.value)


def test_missing_folder(tmp_path):
    with pytest.raises(DatasetError, match="does not exist"):
        load_microexpr("mer_folder", path=str(tmp_path / "nope"))


@pytest.mark.slow
def test_classes_are_learnable_but_not_trivial_under_loso():
    """A tiny 3D CNN (about 10k parameters) beats chance (UAR 1/3) under LOSO, yet is far from perfect."""
    import torch

    from trainables.microexpr.metrics import uar
    from trainables.microexpr.model import BaselineC3D
    from trainables.microexpr.train import FoldSettings, fit_fold

    torch.set_num_threads(1)
    ds = make_microexpr(subjects=6, episodes=8, frames=6, image_size=16, seed=0)
    truth, predicted = [], []
    for _subject, train, test in loso_folds(ds.subjects):
        result = fit_fold(lambda: BaselineC3D(4, num_classes=3, stem_stride=1), ds, train, test,
                          FoldSettings(epochs=12, batch_size=8))
        truth += result["truth"]
        predicted += result["predicted"]
    score = uar(truth, predicted, 3)
    assert 0.40 < score < 0.95, score
