"""Unit tests of the global space (Efficient Global NAS §3.1): encoding, validation, sampling, size."""

from __future__ import annotations

import hashlib
import json
import math

import numpy as np
import pytest

from search_algos.spaces import (
    SPACES,
    GlobalArch,
    GlobalSpace,
    InvalidArchitecture,
    UnknownNameError,
    build_space,
    count_params,
    decode_arch,
    layer_plan,
)
from search_algos.spaces.global_space import EqualParamsSpace


def test_space_size_matches_paper_eq1():
    # Paper: D 5..100 (96), W 16..128 step 2 (57), O = K = 2, D_f = 25 -> ~6.16e18.
    size = GlobalSpace().size(final_depth=25)
    assert size == pytest.approx(4.0**25 * 96 * 57)
    assert f"{size:.2e}" == "6.16e+18"


def test_exact_size_counts_every_depth():
    space = GlobalSpace(d_min=1, d_max=2, w_min=8, w_max=12, w_step=2, ops=("sep",), kernels=(3, 5))
    # widths {8, 10, 12}; depth 1: 2 choices, depth 2: 4 choices -> 3 * (2 + 4)
    assert space.size() == 18


def test_json_round_trip_and_stable_key():
    arch = GlobalArch(depth=3, width=16, ops=("sep", "conv", "sep"), kernels=(3, 5, 5))
    again = GlobalArch.from_dict(json.loads(arch.to_json()))
    assert again == arch and again.key() == arch.key()
    # The key is a pure function of the canonical encoding (no process-dependent hashing).
    text = '{"depth":3,"kernels":[3,5,5],"ops":["sep","conv","sep"],"space":"global","width":16}'
    assert arch.to_json() == text
    assert arch.key() == hashlib.sha256(text.encode()).hexdigest()[:16]
    assert GlobalArch.uniform(3, 16).key() != arch.key()
    assert decode_arch("global", arch.to_json()) == arch


@pytest.mark.parametrize(
    ("kwargs", "fragment"),
    [
        (dict(depth=0, width=16, ops=(), kernels=()), "depth must be an integer >= 1"),
        (dict(depth=2, width=16, ops=("sep",), kernels=(3, 3)), "one entry per layer"),
        (dict(depth=1, width=16, ops=("pool",), kernels=(3,)), "unknown op"),
        (dict(depth=1, width=16, ops=("sep",), kernels=(7,)), "unknown kernel"),
        (dict(depth=1, width=0, ops=("sep",), kernels=(3,)), "width must be"),
    ],
)
def test_invalid_encodings_are_refused(kwargs, fragment):
    with pytest.raises(InvalidArchitecture, match=fragment):
        GlobalArch(**kwargs)


def test_unknown_field_in_json_is_refused():
    payload = GlobalArch.uniform(2, 8).to_dict() | {"skip": True}
    with pytest.raises(InvalidArchitecture, match="unknown field"):
        GlobalArch.from_dict(payload)


def test_space_bounds_are_validated_with_values():
    with pytest.raises(ValueError, match="d_min=9, d_max=3"):
        GlobalSpace(d_min=9, d_max=3)
    space = GlobalSpace(d_min=3, d_max=5, w_min=8, w_max=16, w_step=4)
    with pytest.raises(InvalidArchitecture, match="width must be in 8..16 step 4"):
        space.validate(GlobalArch.uniform(3, 10))
    assert not space.contains(GlobalArch.uniform(6, 8))


def test_sampling_is_seeded_and_inside_the_space():
    space = GlobalSpace(d_min=3, d_max=9, w_min=8, w_max=32, w_step=4)
    a = [space.sample(np.random.default_rng(7)) for _ in range(3)]
    assert a[0] == a[1] == a[2]
    rng = np.random.default_rng(0)
    archs = [space.sample(rng) for _ in range(200)]
    assert all(space.contains(x) for x in archs)
    assert {x.depth for x in archs} == set(range(3, 10))
    assert {o for x in archs for o in x.ops} == {"sep", "conv"}


def test_layer_plan_doubles_channels_at_reductions():
    plan = layer_plan(GlobalArch.uniform(6, 16), in_channels=3)
    assert [p[2] for p in plan] == [1, 1, 2, 1, 2, 1]
    assert [p[1] for p in plan] == [16, 16, 32, 32, 64, 64]
    assert plan[0][0] == 3


def test_count_params_by_hand():
    # depth 3 -> reductions at layers 1 and 2; in=1, W=4, classes=10
    arch = GlobalArch(depth=3, width=4, ops=("conv", "sep", "sep"), kernels=(3, 3, 5))
    l0 = 1 * 4 * 9 + 2 * 4  # conv 1->4 k3 + BN
    l1 = 4 * 9 + 4 * 8 + 2 * 8  # sep 4->8 k3: depthwise + pointwise + BN
    l2 = 8 * 25 + 8 * 16 + 2 * 16  # sep 8->16 k5
    head = 16 * 10 + 10
    assert count_params(arch, in_channels=1, num_classes=10) == l0 + l1 + l2 + head


def test_registry_is_loud():
    with pytest.raises(UnknownNameError, match="valid spaces: .*global"):
        build_space("nope")
    with pytest.raises(ValueError, match="registered twice"):
        SPACES.register("global", GlobalSpace)


def test_with_layer_and_grown():
    arch = GlobalArch.uniform(3, 8)
    assert arch.with_layer(1, op="conv", kernel=5).ops == ("sep", "conv", "sep")
    assert arch.grown().depth == 4 and math.isclose(arch.grown().kernels[-1], 3)
    with pytest.raises(InvalidArchitecture):
        arch.with_layer(3, op="conv")


def test_equal_params_space_draws_only_networks_of_the_target_size():
    bounds = GlobalSpace(d_min=2, d_max=8, w_min=8, w_max=24, w_step=4)
    target = count_params(GlobalArch(depth=6, width=16, ops=("conv",) * 6, kernels=(3,) * 6), in_channels=1,
                          num_classes=10)  # fmt: skip
    space = EqualParamsSpace(bounds, params=target, band=0.2, in_channels=1, num_classes=10)
    drawn = [space.sample(np.random.default_rng([7, i])) for i in range(40)]
    sizes = [count_params(a, in_channels=1, num_classes=10) for a in drawn]
    assert all(0.8 * target <= n <= 1.2 * target for n in sizes)
    assert len({a.key() for a in drawn}) > 20  # still a random sample, not one network
    assert [a.key() for a in drawn[:5]] == [space.sample(np.random.default_rng([7, i])).key() for i in range(5)]
    assert space.name == "global" and space.describe()["params"] == target
    small = GlobalArch(depth=2, width=8, ops=("sep", "sep"), kernels=(3, 3))
    with pytest.raises(InvalidArchitecture, match="parameters must be in"):
        space.validate(small)


def test_equal_params_space_says_when_the_band_is_out_of_reach():
    bounds = GlobalSpace(d_min=2, d_max=3, w_min=8, w_max=8, w_step=4)
    space = EqualParamsSpace(bounds, params=10_000_000, band=0.2, in_channels=1, num_classes=10, max_draws=50)
    with pytest.raises(ValueError, match="widen the band"):
        space.sample(np.random.default_rng(0))
    with pytest.raises(ValueError, match="0 < band < 1"):
        EqualParamsSpace(bounds, params=100, band=1.5, in_channels=1, num_classes=10)
