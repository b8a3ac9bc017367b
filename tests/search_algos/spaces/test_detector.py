"""Unit tests of HyperFD's detector spaces (Table 2 HPO grid, Table 3 NAS backbone space)."""

from __future__ import annotations

import itertools
import json

import numpy as np
import pytest

from search_algos.spaces import (
    ARCHS,
    SPACES,
    DetectorArch,
    DetectorHpoSpace,
    DetectorNasSpace,
    HpoConfig,
    InvalidArchitecture,
    build_space,
    decode_arch,
)
from search_algos.spaces.detector import NODE_FEATURES, STAGES, negative_iou


def test_hpo_space_has_216_distinct_configs_of_table2():
    space = DetectorHpoSpace()
    configs = list(space.enumerate())
    assert space.size() == 216 == len(configs) == 2 * 3 * 2 * 3 * 3 * 2
    assert len({c.key() for c in configs}) == 216
    assert {c.lr for c in configs} == {3e-4, 1e-3, 3e-3}
    assert {c.optimizer for c in configs} == {"sgd", "adam"}
    assert {c.neg_pos_ratio for c in configs} == {2, 7}


def test_negative_threshold_is_half_positive_plus_005():
    assert negative_iou(0.4) == pytest.approx(0.25)
    assert negative_iou(0.6) == pytest.approx(0.35)
    assert HpoConfig.default().iou_neg == pytest.approx(HpoConfig.default().iou_pos / 2 + 0.05)


def test_hpo_json_round_trip_key_and_summary():
    c = HpoConfig(optimizer="SGD", lr=0.0003, min_crop=0.55, iou_pos=0.5, loc_weight=8, neg_pos_ratio=2)
    assert c.optimizer == "sgd" and isinstance(c.loc_weight, float)
    again = HpoConfig.from_json(c.to_json())
    assert again == c and again.key() == c.key()
    assert decode_arch("detector_hpo", c.to_json()) == c
    # Table 8's notation for the same configuration.
    assert c.summary() == "crop:0.55_iou:0.5_locw:8.0_negp:2.0_lr:3e-04_sgd"
    typed = HpoConfig(optimizer="sgd", lr=3e-4 * (1 + 1e-12), min_crop=0.55, iou_pos=0.5, loc_weight=8.0, neg_pos_ratio=2)
    assert typed.key() == c.key()


@pytest.mark.parametrize(
    ("change", "fragment"),
    [
        ({"lr": 3e-2}, "lr must be one of"),
        ({"optimizer": "rmsprop"}, "optimizer must be one of"),
        ({"iou_pos": 0.45}, "iou_pos must be one of"),
        ({"neg_pos_ratio": 2.5}, "neg_pos_ratio must be an integer"),
        ({"loc_weight": "8"}, "loc_weight must be a number"),
    ],
)
def test_hpo_invalid_values_are_refused(change, fragment):
    payload = HpoConfig.default().to_dict() | change
    with pytest.raises(InvalidArchitecture, match=fragment):
        HpoConfig.from_dict(payload)


def test_hpo_from_dict_refuses_unknown_and_missing_fields():
    payload = HpoConfig.default().to_dict()
    with pytest.raises(InvalidArchitecture, match="unknown field"):
        HpoConfig.from_dict(payload | {"momentum": 0.9})
    payload.pop("lr")
    with pytest.raises(InvalidArchitecture, match="missing \\['lr'\\]"):
        HpoConfig.from_dict(payload)


def test_hpo_vector_is_one_hot_per_hyperparameter():
    configs = list(DetectorHpoSpace().enumerate())
    vectors = np.stack([c.to_vector() for c in configs])
    assert vectors.shape == (216, HpoConfig.VECTOR_DIM) == (216, 15)
    # Block sums: each of the 6 groups has exactly one 1.
    bounds = np.cumsum([0, 2, 3, 2, 3, 3, 2])
    for lo, hi in itertools.pairwise(bounds):
        assert np.all(vectors[:, lo:hi].sum(axis=1) == 1)
    assert len({v.tobytes() for v in vectors}) == 216
    c = HpoConfig(optimizer="adam", lr=3e-3, min_crop=0.3, iou_pos=0.6, loc_weight=4, neg_pos_ratio=7)
    expected = [0, 1, 0, 0, 1, 1, 0, 0, 0, 1, 0, 1, 0, 0, 1]
    assert c.to_vector().tolist() == expected


def test_hpo_subspace_sampling_and_validation():
    space = build_space("detector_hpo", optimizer=["adam"], lr=[1e-3, 3e-3])
    assert space.size() == 1 * 2 * 2 * 3 * 3 * 2
    rng = np.random.default_rng(0)
    drawn = [space.sample(rng) for _ in range(50)]
    assert all(space.contains(c) for c in drawn)
    assert {c.lr for c in drawn} == {1e-3, 3e-3}
    assert not space.contains(HpoConfig(optimizer="sgd", lr=1e-3, min_crop=0.3, iou_pos=0.5, loc_weight=2, neg_pos_ratio=2))
    with pytest.raises(ValueError, match="lr must be a non-empty subset"):
        DetectorHpoSpace(lr=[0.1])
    with pytest.raises(ValueError, match="unknown hyper-parameter"):
        DetectorHpoSpace(momentum=[0.9])
    again = [DetectorHpoSpace().sample(np.random.default_rng(7)) for _ in range(2)]
    assert again[0] == again[1]


def test_nas_space_size_matches_table3_product():
    # Stages 2..7: (depth choices * 2 expands * 3 kernels): 3,3,3,2,3,1 depth choices.
    expected = (3 * 6) * (3 * 6) * (3 * 6) * (2 * 6) * (3 * 6) * (1 * 6)
    assert DetectorNasSpace().size() == expected == 7_558_272
    small = DetectorNasSpace(expands=(6,), kernels=(3, 5), max_depths=(1, 1, 2, 3, 2, 1))
    archs = list(small.enumerate())
    assert len(archs) == small.size() == 2**6
    assert len({a.key() for a in archs}) == len(archs)
    assert all(small.contains(a) for a in archs)


def test_nas_json_round_trip_and_validation():
    arch = DetectorArch(depths=[3, 1, 4, 3, 2, 1], expands=[4, 6, 6, 4, 4, 6], kernels=[7, 3, 5, 3, 3, 5])
    assert DetectorArch.from_json(arch.to_json()) == arch
    assert decode_arch("detector_nas", json.loads(arch.to_json())) == arch
    assert arch.summary() == "3xe4k7 1xe6k3 4xe6k5 3xe4k3 2xe4k3 1xe6k5"
    assert arch.key() != DetectorArch.mobilenet_v2().key()
    with pytest.raises(InvalidArchitecture, match="stage 5 depth must be in \\[3, 4\\]"):
        DetectorArch(depths=[1, 1, 2, 2, 2, 1], expands=[4] * 6, kernels=[3] * 6)
    with pytest.raises(InvalidArchitecture, match="one entry per searched stage"):
        DetectorArch(depths=[1, 1, 2, 3, 2], expands=[4] * 5, kernels=[3] * 5)
    with pytest.raises(InvalidArchitecture, match="kernel must be in"):
        DetectorArch(depths=[1, 1, 2, 3, 2, 1], expands=[4] * 6, kernels=[9] * 6)
    with pytest.raises(InvalidArchitecture, match="unknown field"):
        DetectorArch.from_dict(arch.to_dict() | {"width": 3})
    space = DetectorNasSpace(kernels=(3,))
    with pytest.raises(InvalidArchitecture, match="kernels must be in"):
        space.validate(arch)
    with pytest.raises(ValueError, match="max_depths\\[3\\]"):
        DetectorNasSpace(max_depths=(1, 1, 2, 2, 2, 1))


def test_nas_sampling_is_seeded_and_covers_choices():
    space = DetectorNasSpace()
    a = [space.sample(np.random.default_rng(3)) for _ in range(2)]
    assert a[0] == a[1]
    rng = np.random.default_rng(0)
    drawn = [space.sample(rng) for _ in range(300)]
    assert all(space.contains(x) for x in drawn)
    assert {x.depths[3] for x in drawn} == {3, 4}
    assert {k for x in drawn for k in x.kernels} == {3, 5, 7}


def test_blocks_follow_table3_widths_and_strides():
    arch = DetectorArch(depths=[2, 1, 2, 3, 2, 1], expands=[6] * 6, kernels=[3] * 6)
    blocks = arch.blocks()
    assert len(blocks) == 1 + sum(arch.depths)
    # Stage 1 fixed: 8 -> 8, expand 1, kernel 3, stride 1.
    assert blocks[0] == (1, 8, 8, 1, 1, 3)
    # The first block of stage 2 changes width 8 -> 12 with stride 2; the second keeps 12 with stride 1.
    assert blocks[1] == (2, 8, 12, 2, 6, 3) and blocks[2] == (2, 12, 12, 1, 6, 3)
    assert [b[2] for b in blocks][-1] == STAGES[-1].width == 160
    total_stride = np.prod([b[3] for b in blocks])
    assert total_stride == 16  # stages 2, 3, 4, 6 halve the resolution


def test_graph_view_nodes_and_edges():
    arch = DetectorArch(depths=[1, 1, 2, 3, 2, 1], expands=[4, 6, 4, 6, 4, 6], kernels=[3, 5, 7, 3, 5, 7])
    g = arch.to_graph()
    n_blocks = 1 + sum(arch.depths)
    assert g.nodes.shape == (n_blocks + 2, len(NODE_FEATURES)) and g.nodes.dtype == np.float32
    col = {name: i for i, name in enumerate(NODE_FEATURES)}
    assert g.nodes[0, col["is_stem"]] == 1 and g.nodes[-1, col["is_output"]] == 1
    assert g.nodes[1:-1, col["is_block"]].sum() == n_blocks
    # Every block has exactly one kernel and one expand flag; the 2nd block (stage 2) is k3, e4, stride 2.
    blocks = g.nodes[1:-1]
    assert np.all(blocks[:, col["kernel_3"] : col["kernel_7"] + 1].sum(1) == 1)
    assert np.all(blocks[:, col["expand_1"] : col["expand_6"] + 1].sum(1) == 1)
    assert g.nodes[2, col["kernel_3"]] == 1 and g.nodes[2, col["expand_4"]] == 1 and g.nodes[2, col["stride_2"]] == 1
    edges = {tuple(e) for e in g.edges.tolist()}
    chain = {(i, i + 1) for i in range(g.num_nodes - 1)}
    assert chain <= edges
    # Identity residuals by hand: blocks with stride 1 and equal widths are stage 1 (8->8, node 1),
    # the 2nd block of stage 4 (node 5), the 2nd and 3rd of stage 5 (nodes 7, 8), the 2nd of stage 6 (10).
    skips = {(n - 1, n + 1) for n in (1, 5, 7, 8, 10)}
    # FPN taps: last block of stage 5 (node 8) and of stage 7 (node 11) feed the output node (12).
    taps = {(8, 12), (11, 12)}
    assert edges == chain | skips | taps
    assert g.nodes[[8, 11], col["fpn_tap"]].tolist() == [1, 1] and g.nodes[:, col["fpn_tap"]].sum() == 2
    assert np.all(g.edges[:, 0] < g.edges[:, 1])  # a DAG in execution order


def test_nas_vector_encoding():
    arch = DetectorArch(depths=[3, 1, 2, 4, 4, 1], expands=[4, 6, 6, 4, 4, 6], kernels=[7, 3, 5, 3, 3, 5])
    v = arch.to_vector()
    assert v.shape == (DetectorArch.VECTOR_DIM,) == (36,)
    rows = v.reshape(6, 6)
    assert rows[:, 0].tolist() == [1.0, 0.0, 0.0, 1.0, 1.0, 0.0]
    assert rows[0, 1:].tolist() == [1, 0, 0, 0, 1]  # expand 4, kernel 7
    assert rows[1, 1:].tolist() == [0, 1, 1, 0, 0]  # expand 6, kernel 3


def test_spaces_are_registered():
    assert "detector_hpo" in SPACES and "detector_nas" in SPACES
    assert ARCHS.get("detector_hpo") is HpoConfig and ARCHS.get("detector_nas") is DetectorArch
    assert build_space("detector_nas").describe()["max_depths"] == [3, 3, 4, 4, 4, 1]
