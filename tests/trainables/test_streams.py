"""The trainables' named random streams draw what they always drew (issue 16: named salts).

Each generator and loop names the salts of its streams beside the code that draws them. A salt that changed
would silently change every dataset or run drawn from it, so the values are pinned, the conditions that keep
the streams independent are checked, and the generators' first items are compared with the numbers they
produced before the salts were named (floats to 1e-5: a changed stream moves them by far more).
"""

from __future__ import annotations

import numpy as np
import pytest

from trainables.alignment import generator as alignment_generator
from trainables.alignment import train as alignment_train
from trainables.detection import generator as detection_generator
from trainables.microexpr import data as microexpr_data
from trainables.microexpr import train as microexpr_train

close = pytest.approx


def test_alignment_salts_are_the_historic_values_and_distinct():
    assert alignment_generator._SPLIT_FACES_SALT == 99
    assert alignment_generator._SPLIT_SALTS == {"train": 0, "val": 1, "test": 2}
    assert alignment_generator._SPLIT_FACES_SALT not in alignment_generator._SPLIT_SALTS.values()


def test_alignment_loop_salts_keep_their_streams_off_the_childrens():
    shuffle, recalibration = alignment_train._SHUFFLE_SALT, alignment_train._RECALIBRATION_SALT
    assert (shuffle, recalibration) == (1, 2)
    # The children of step s draw from (seed, s), which SeedSequence reads as (seed, s, 0): a zero salt
    # would make an epoch's shuffle the children's stream of the step with the epoch's number.
    assert np.random.default_rng((4, 3)).integers(2**62) == np.random.default_rng((4, 3, 0)).integers(2**62)
    draws = {np.random.default_rng((4, 3, word)).integers(2**62) for word in (0, shuffle, recalibration)}
    assert len(draws) == 3


def test_faces3d_draws_what_it_drew():
    assert alignment_generator._split_faces("val", 5).tolist() == [
        73, 75, 25, 99, 72, 51, 40, 82, 90, 36, 9, 47, 86, 7, 95,
    ]  # fmt: skip
    ds = alignment_generator.make_faces3d(n_train=3, n_val=3, n_test=3, image_size=16, seed=5)
    expected = {  # split: (yaw, image 0's pixel (8, 8), landmark 30 of sample 0)
        "train": ([-10.503441, 78.372917, -71.012878], [0.340156, 0.284068, 0.241886], [7.517114, 6.407811, 6.924547]),
        "val": ([66.593788, -64.152184, 14.810701], [0.449222, 0.351708, 0.293273], [11.292732, 5.725757, 2.511566]),
        "test": ([-50.770725, 82.993195, -2.856055], [0.628862, 0.510307, 0.411404], [5.695634, 6.013432, 4.134443]),
    }
    for part, (yaw, pixel, landmark) in expected.items():
        split = getattr(ds, part)
        assert split.yaw.tolist() == close(yaw, abs=1e-5)
        assert split.images[0, :, 8, 8].tolist() == close(pixel, abs=1e-5)
        assert split.landmarks[0, 30].tolist() == close(landmark, abs=1e-5)


def test_detection_split_salt_and_the_images_it_drew():
    assert detection_generator._SPLIT_ORDER_SALT == 1
    ds = detection_generator._generate("mask", 3, 32, 12)
    expected = {  # split: (faces per image, red of pixel (16, 16) per image, boxes of image 0)
        "train": ([3, 1, 1, 3, 2, 2, 3], [0.657699, 0.243389, 0.456138, 0.542426, 0.491774, 0.157996, 0.632214],
                  [[18, 22, 27, 32], [15, 10, 23, 19], [6, 7, 14, 16]]),
        "val": ([1], [0.179849], [[2, 13, 14, 27]]),
        "test": ([1, 2, 3, 2], [0.573197, 0.583070, 0.413784, 0.140854], [[18, 10, 31, 24]]),
    }
    for part, (faces, red, boxes) in expected.items():
        split = getattr(ds, part)
        assert [len(b) for b in split.boxes] == faces
        assert split.images[:, 0, 16, 16].tolist() == close(red, abs=1e-5)
        assert np.allclose(split.boxes[0], boxes, atol=1e-5)


def test_microexpr_salts_are_distinct_and_beyond_the_loops_epochs():
    salts = (microexpr_data._SUBJECT_SPLIT_SALT, microexpr_data._GENERATOR_SALT)
    assert salts == (4099, 2023)
    # The loops draw their batches from [seed, epoch]; their flip seeds keep epochs below the stride.
    assert min(salts) >= microexpr_train._FLIP_SEED_STRIDE


def test_microexpr_draws_what_it_drew():
    ds = microexpr_data.make_microexpr(subjects=4, episodes=3, frames=4, image_size=16, seed=2)
    assert ds.labels.tolist() == [1, 0, 2, 1, 0, 2, 1, 0, 2, 1, 2, 0]
    assert list(ds.subject_names) == ["lfw047", "lfw054", "lfw013", "lfw004"]
    assert ds.clips[:4, 0, 1, 8, 8].tolist() == close([-0.392840, -0.357542, -0.096583, 0.946776], abs=1e-5)
    rows_a, rows_b = microexpr_data.subject_split(np.array([0, 0, 1, 1, 2, 3, 3, 4, 5, 5]), 9)
    assert (rows_a.tolist(), rows_b.tolist()) == ([4, 5, 6, 7], [0, 1, 2, 3, 8, 9])
