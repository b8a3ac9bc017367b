"""Unit tests of the MONAS multi-path space: encoding, validity, sampling, neighbours, repair, MNUS.

Property tests are loops over many seeded cases (no hypothesis). Validity is also checked against an
independent reference (a depth-first search over the graph), not only against :func:`is_valid`.
"""

from __future__ import annotations

import itertools
import json
import math
from collections import Counter

import numpy as np
import pytest

from search_algos.spaces import ARCHS, SPACES, InvalidArchitecture, build_space, decode_arch
from search_algos.spaces.multipath import (
    EDGE_HPM,
    EDGE_IDENTITY,
    EDGE_NONE,
    MultipathArch,
    MultipathSpace,
    active_edges,
    active_nodes,
    is_valid,
    mnus_children,
    repair_edges,
    uniform_children,
)

SHAPES = [(2, 1), (2, 2), (3, 2), (4, 3), (10, 4)]


# -- an independent reference for validity -----------------------------------------------------------
def reference_valid(edges: np.ndarray) -> bool:
    """Validity by graph search: nodes reached from the stem, then the two rules, edge by edge."""
    n_trans, d, _ = edges.shape
    reached = {(0, s) for s in range(d)}
    stack = list(reached)
    while stack:
        col, s = stack.pop()
        if col == n_trans:
            continue
        for o in range(d):
            if edges[col, o, s] and (col + 1, o) not in reached:
                reached.add((col + 1, o))
                stack.append((col + 1, o))
    if (n_trans, 0) not in reached:
        return False
    # no edge may leave an unreached node
    return all((col, i) in reached for col, o, i in zip(*np.nonzero(edges)))


def all_arrays(layers: int, scales: int, states=(0, 1, 2)):
    n = (layers - 1) * scales * scales
    for values in itertools.product(states, repeat=n):
        yield np.array(values, dtype=np.int8).reshape(layers - 1, scales, scales)


def rngs(n: int, tag: int = 0):
    return (np.random.default_rng([tag, i]) for i in range(n))


# -- encoding ----------------------------------------------------------------------------------------
def test_round_trip_and_stable_key():
    space = MultipathSpace(layers=4, scales=3)
    for rng in rngs(20):
        arch = space.sample(rng)
        assert space.from_json(arch.to_json()) == arch
        assert MultipathArch.from_dict(json.loads(arch.to_json())) == arch
        assert decode_arch("multipath", arch.to_json()) == arch
        assert MultipathArch.from_array(arch.as_array()) == arch
        assert arch.key() == MultipathArch.from_dict(arch.to_dict()).key()
        assert hash(arch) == hash(MultipathArch(arch.layers, arch.scales, arch.to_dict()["edges"]))
    arr = arch.as_array()
    assert arr.dtype == np.int8 and arr.shape == (3, 3, 3)


def test_key_is_pinned():
    # a fixed value: the benchmark store keys evaluations by it, so it must never change silently
    arch = MultipathArch(2, 2, [[[1, 0], [2, 2]]])
    assert arch.to_json() == '{"edges":[[[1,0],[2,2]]],"layers":2,"scales":2,"space":"multipath"}'
    assert arch.key() == "9c63f32ddea71456"
    assert arch.summary() == "L=2 D=2 [h.|ii] 3 edges (1 hpm, 2 id), 1 active"


def test_registered_and_built_by_name():
    assert "multipath" in SPACES and "multipath" in ARCHS
    space = build_space("multipath", layers=3, scales=2, allow_identity=False)
    assert space.describe() == {"name": "multipath", "layers": 3, "scales": 2, "allow_identity": False}


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"layers": 1, "scales": 2, "edges": []}, r"layers must be an integer >= 2, got 1"),
        ({"layers": 2, "scales": 0, "edges": [[]]}, r"scales must be an integer >= 1, got 0"),
        ({"layers": 3, "scales": 2, "edges": [[[1, 1], [1, 1]]]}, r"shape \[L-1, D, D\] = \[2, 2, 2\].*edges has length 1"),
        ({"layers": 2, "scales": 2, "edges": [[[1, 1], [1]]]}, r"edges\[0\]\[1\] has length 1"),
        ({"layers": 2, "scales": 2, "edges": [[[1, 3], [0, 0]]]}, r"0 \(none\), 1 \(HPM\) or 2 \(identity\), but edges\[0\]\[0\]\[1\] = 3"),
        ({"layers": 2, "scales": 2, "edges": [[[1, 1.0], [0, 0]]]}, r"edges\[0\]\[0\]\[1\] = 1.0"),
        ({"layers": 2, "scales": 2, "edges": [[[True, 1], [0, 0]]]}, r"edges\[0\]\[0\]\[0\] = True"),
        ({"layers": 2, "scales": 2, "edges": [[[0, 0], [1, 1]]]}, r"output node \(column 1, scale 0\) is not reachable"),
        (
            {"layers": 3, "scales": 2, "edges": [[[1, 0], [0, 0]], [[1, 1], [0, 0]]]},
            r"node \(column 1, scale 1\) feeds forward \(edge to \(column 2, scale 0\)\) but has no input",
        ),
    ],
)
def test_validation_messages(kwargs, message):
    with pytest.raises(InvalidArchitecture, match=message):
        MultipathArch(**kwargs)


def test_from_dict_refuses_unknown_and_foreign_encodings():
    with pytest.raises(InvalidArchitecture, match=r"unknown field\(s\) \['extra'\]"):
        MultipathArch.from_dict({"layers": 2, "scales": 1, "edges": [[[1]]], "extra": 1})
    with pytest.raises(InvalidArchitecture, match="expected 'multipath'"):
        MultipathArch.from_dict({"space": "global", "layers": 2, "scales": 1, "edges": [[[1]]]})
    with pytest.raises(InvalidArchitecture, match="incomplete"):
        MultipathArch.from_dict({"layers": 2, "scales": 1})


def test_space_validate_checks_bounds_and_identity():
    arch = MultipathArch(2, 2, [[[2, 0], [0, 0]]])
    with pytest.raises(InvalidArchitecture, match="layers=2, scales=2, but the space has layers=3"):
        MultipathSpace(layers=3, scales=2).validate(arch)
    with pytest.raises(InvalidArchitecture, match="allow_identity=False"):
        MultipathSpace(layers=2, scales=2, allow_identity=False).validate(arch)
    with pytest.raises(ValueError, match="layers must be an integer >= 2, got 1; scales must be an integer >= 1, got 0"):
        MultipathSpace(layers=1, scales=0)


def test_is_valid_agrees_with_the_reference_on_every_small_array():
    for layers, scales in [(2, 1), (3, 1), (4, 1), (2, 2), (3, 2)]:
        for arr in all_arrays(layers, scales):
            ok, reason = is_valid(arr)
            assert ok == reference_valid(arr), arr
            assert (reason == "") == ok
    assert is_valid(np.zeros((2, 2, 3), dtype=np.int8))[0] is False
    assert is_valid(np.full((1, 1, 1), 3))[0] is False


def test_active_nodes_and_edges():
    # L=3, D=2: (1,1) is live but leads nowhere; column-0 scale 1 feeds only (1,1)
    arch = MultipathArch(3, 2, [[[1, 0], [0, 2]], [[1, 0], [0, 0]]])
    assert active_nodes(arch).tolist() == [[True, False], [True, False], [True, False]]
    assert active_edges(arch).tolist() == [[[True, False], [False, False]], [[True, False], [False, False]]]
    for rng in rngs(50):
        arch = MultipathSpace(layers=5, scales=3).sample(rng)
        act = active_edges(arch)
        assert (act <= (arch.as_array() != 0)).all() and act[-1, 0].any()  # the output is fed by an active edge
        # keeping only the active edges keeps a valid network with the same active part
        pruned = np.where(act, arch.as_array(), 0)
        assert is_valid(pruned)[0] and (active_edges(pruned) == act).all()


# -- counting ----------------------------------------------------------------------------------------
def test_count_valid_by_hand_and_by_enumeration():
    # L=2, D=2: one transition, column 0 all live. Valid iff the output (1, 0) has an input:
    # row d_out=0 non-empty (3**2 - 1 = 8 ways), row d_out=1 free (3**2 = 9 ways): 8 * 9 = 72 of 81.
    assert MultipathSpace(layers=2, scales=2).count_valid() == 72
    # L=3, D=2, by the number s of live nodes in column 1 (each live row: 8 ways):
    #   s=1 (2 choices): 8 * (9 - 3) = 48 each (column-2 rows over the one live source: row 0 non-empty
    #        (2 ways) times row 1 free (3 ways) = 6) -> 96;  s=2: 64 * (81 - 9) = 4608;  s=0: 0.  Total 4704.
    assert MultipathSpace(layers=3, scales=2).count_valid() == 4704
    # L=3, D=1: a chain, both edges present: 2 * 2 = 4; without identity 1.
    assert MultipathSpace(layers=3, scales=1).count_valid() == 4
    assert MultipathSpace(layers=3, scales=1, allow_identity=False).count_valid() == 1
    for layers, scales in [(2, 1), (3, 1), (4, 1), (2, 2), (3, 2)]:
        for allow_identity, states in [(True, (0, 1, 2)), (False, (0, 1))]:
            count = sum(reference_valid(a) for a in all_arrays(layers, scales, states))
            assert MultipathSpace(layers=layers, scales=scales, allow_identity=allow_identity).count_valid() == count


def test_size_formula_paper_setting():
    space = MultipathSpace(layers=10, scales=4)  # §IV-B
    assert space.size() == float(3**144)  # (L-1) * D * D = 144 edges, 3 states each
    assert math.isclose(space.size(), 5.0753e68, rel_tol=1e-4)
    assert 0 < space.count_valid() < 3**144
    assert MultipathSpace(layers=10, scales=4, allow_identity=False).size() == 2.0**144


# -- sampling ----------------------------------------------------------------------------------------
@pytest.mark.parametrize(("layers", "scales"), SHAPES)
def test_samples_are_valid_and_deterministic(layers, scales):
    for allow_identity in (True, False):
        space = MultipathSpace(layers=layers, scales=scales, allow_identity=allow_identity)
        for seed, rng in enumerate(rngs(60)):
            arch = space.sample(rng)
            space.validate(arch)
            assert reference_valid(arch.as_array())
            assert arch == space.sample(np.random.default_rng([0, seed]))


def test_sampling_is_uniform_over_the_valid_space():
    space = MultipathSpace(layers=2, scales=2)  # 72 valid children
    rng = np.random.default_rng(7)
    n = 72 * 50
    counts = Counter(space.sample(rng).key() for _ in range(n))
    assert len(counts) == 72
    chi2 = sum((c - n / 72) ** 2 / (n / 72) for c in counts.values())
    assert chi2 < 71 + 5 * math.sqrt(2 * 71)  # chi-square, 71 degrees of freedom, far tail


# -- neighbours and repair ---------------------------------------------------------------------------
@pytest.mark.parametrize(("layers", "scales"), SHAPES)
def test_neighbour_differs_and_is_valid(layers, scales):
    for allow_identity in (True, False):
        space = MultipathSpace(layers=layers, scales=scales, allow_identity=allow_identity)
        if space.count_valid() < 2:
            with pytest.raises(ValueError, match="single valid architecture"):
                space.neighbour(space.sample(np.random.default_rng(0)), np.random.default_rng(0))
            continue
        for rng in rngs(60, tag=layers * 10 + scales):
            arch = space.sample(rng)
            for _ in range(3):
                nb = space.neighbour(arch, rng)
                space.validate(nb)
                assert reference_valid(nb.as_array())
                assert (nb.as_array() != arch.as_array()).any()
                arch = nb


def test_neighbour_is_usually_one_edge_and_keeps_the_change():
    space = MultipathSpace(layers=10, scales=4)
    sizes = Counter()
    for rng in rngs(300, tag=5):
        arch = space.sample(rng)
        state = rng.bit_generator.state
        nb = space.neighbour(arch, rng)
        diff = nb.as_array() != arch.as_array()
        sizes[int(diff.sum())] += 1
        # replay the move's draws: the changed edge keeps its new state (with D >= 2 the repair never
        # needs to re-add a removed edge, so the first move is never redrawn)
        replay = np.random.default_rng()
        replay.bit_generator.state = state
        l, o, i = np.unravel_index(int(replay.integers(9 * 16)), (9, 4, 4))
        choices = [v for v in (0, 1, 2) if v != arch.as_array()[l, o, i]]
        assert nb.as_array()[l, o, i] == choices[int(replay.integers(2))]
    assert sizes[1] > 0.8 * 300  # repair is needed only when a feeding edge was removed
    assert max(sizes) <= 4


def test_repair_makes_any_array_valid_and_keeps_valid_ones():
    for layers, scales in [(2, 1), (3, 1), (3, 2), (4, 3), (6, 4), (10, 4)]:
        for rng in rngs(80, tag=layers * 10 + scales):
            density = rng.uniform(0.05, 0.9)
            arr = np.where(rng.random((layers - 1, scales, scales)) < density, rng.integers(1, 3, (layers - 1, scales, scales)), 0)
            fixed = repair_edges(arr, rng)
            assert reference_valid(fixed), (arr, fixed)
            assert ((fixed != 0) >= (arr != 0)).all() and (fixed[arr != 0] == arr[arr != 0]).all()  # only adds
            assert (repair_edges(fixed, rng) == fixed).all()
    # deterministic given the generator
    arr = np.zeros((5, 3, 3), dtype=np.int8)
    arr[3, 1, 2] = 1
    a, b = repair_edges(arr, np.random.default_rng(3)), repair_edges(arr, np.random.default_rng(3))
    assert (a == b).all() and a[3, 1, 2] == 1


def test_repair_avoids_re_adding_a_removed_edge():
    # D=2, L=3: remove the only input of (1, 0), which feeds the output; another source exists
    arr = np.array([[[0, 0], [0, 0]], [[1, 0], [0, 0]]], dtype=np.int8)
    for rng in rngs(40):
        fixed = repair_edges(arr, rng, avoid=(0, 0, 0))
        assert fixed[0, 0, 0] == 0 and fixed[0, 0, 1] != 0
    # D=1: the removed edge is the only way; it comes back
    chain = np.array([[[0]], [[1]]], dtype=np.int8)
    assert repair_edges(chain, np.random.default_rng(0), avoid=(0, 0, 0))[0, 0, 0] != 0


def test_space_repair_refuses_foreign_states_and_shapes():
    space = MultipathSpace(layers=3, scales=2, allow_identity=False)
    with pytest.raises(InvalidArchitecture, match="identity edges"):
        space.repair(np.full((2, 2, 2), 2), np.random.default_rng(0))
    with pytest.raises(InvalidArchitecture, match=r"shape \(2, 2, 2\)"):
        space.repair(np.zeros((3, 2, 2), dtype=np.int8), np.random.default_rng(0))
    arch = space.repair(np.zeros((2, 2, 2), dtype=np.int8), np.random.default_rng(0))
    assert set(np.unique(arch.as_array())) <= {EDGE_NONE, EDGE_HPM}


# -- MNUS (Algorithm 1, Eq. 7-8) -----------------------------------------------------------------------
def test_mnus_property_over_many_cases():
    cases = 0
    for layers in range(2, 7):
        for scales in range(1, 5):
            for k in (1, 2, 3, 4, 6):
                for seed in range(6):
                    rng = np.random.default_rng([layers, scales, k, seed])
                    children = mnus_children((layers, scales), k, rng)
                    assert len(children) == k
                    arr = np.stack([c.as_array() for c in children])  # (K, L-1, D, D)
                    for child in arr:
                        assert reference_valid(child)
                        assert ((child != 0).any(axis=2)).all()  # Eq. 8: every node of columns >= 1 fed
                    present = (arr != 0).sum(axis=0)  # (L-1, D, D): children holding each edge
                    for l in range(layers - 1):
                        m = present[l].flat[0]
                        assert (present[l] == m).all()  # Eq. 7: same count for every edge of a layer
                        assert m * scales >= k and 1 <= m <= k
                    # types are balanced per edge: HPM count is floor or ceil of m/2
                    hpm = (arr == EDGE_HPM).sum(axis=0)
                    assert (np.abs(2 * hpm - present) <= 1).all()
                    cases += 1
    assert cases == 5 * 4 * 5 * 6


def test_mnus_is_deterministic_and_matches_the_paper_figure():
    a = mnus_children(MultipathSpace(layers=10, scales=4), 4, np.random.default_rng([1, 2]))
    b = mnus_children(MultipathSpace(layers=10, scales=4), 4, np.random.default_rng([1, 2]))
    assert a == b
    # Fig. 2 (K=4, D=4): with m_l = 1 each child has exactly 4 of the 16 connections of that layer
    seen = set()
    for rng in rngs(40):
        arr = np.stack([c.as_array() for c in mnus_children((10, 4), 4, rng)])
        for l in range(9):
            m = int((arr[:, l] != 0).sum(axis=0).flat[0])
            seen.add(m)
            per_child = (arr[:, l] != 0).sum(axis=(1, 2))
            assert (per_child == m * 4).all()  # K divides m*D*D: every child gets the same number
    assert seen == {1, 2, 3, 4}


def test_mnus_respects_the_space_states_and_k():
    children = mnus_children(MultipathSpace(layers=4, scales=3, allow_identity=False), 3, np.random.default_rng(0))
    assert all(set(np.unique(c.as_array())) <= {EDGE_NONE, EDGE_HPM} for c in children)
    full = mnus_children((3, 2), 1, np.random.default_rng(0))[0].as_array()
    assert (full != 0).all()  # K = 1: every edge in every (the only) child
    with pytest.raises(ValueError, match="k \\(children per step\\) must be an integer >= 1, got 0"):
        mnus_children((3, 2), 0, np.random.default_rng(0))


def test_uniform_children_valid_and_deterministic():
    for rng in rngs(30):
        children = uniform_children((4, 3), 4, rng)
        assert len(children) == 4 and all(reference_valid(c.as_array()) for c in children)
    a = uniform_children((10, 4), 4, np.random.default_rng(9))
    assert a == uniform_children(MultipathSpace(layers=10, scales=4), 4, np.random.default_rng(9))
    # unlike MNUS, edge counts differ between edges of a layer
    arr = np.stack([c.as_array() for c in uniform_children((10, 4), 6, np.random.default_rng(1))])
    assert any(len(np.unique((arr[:, l] != 0).sum(axis=0))) > 1 for l in range(9))
    assert (arr == EDGE_IDENTITY).any() and (arr == EDGE_HPM).any()
