"""Unit tests (no Ray runtime) of the random, fixed and RNAS-MER Optuna searchers and their scores."""

from __future__ import annotations

import json
import math

import pytest
from ray.tune.search import Searcher

from search_algos.base import score_of
from search_algos.fixed import FixedArchSearcher
from search_algos.random_search import RandomArchSearcher
from search_algos.spaces import GlobalArch, GlobalSpace

SPACE = GlobalSpace(d_min=2, d_max=6, w_min=8, w_max=24, w_step=4)


def _drain(searcher, results=None):
    """Suggest until FINISHED, completing each trial at once; returns the configs."""
    configs = []
    for i in range(1000):
        config = searcher.suggest(f"t{i}")
        if config == Searcher.FINISHED:
            return configs
        configs.append(config)
        searcher.on_trial_complete(f"t{i}", (results or {}).get(i, {"val_acc": float(i)}))
    raise AssertionError("searcher never finished")


def test_random_searcher_is_a_pure_function_of_the_seed():
    a = _drain(RandomArchSearcher(SPACE, num_samples=6, epochs=2, metric="val_acc", mode="max", seed=4))
    b = _drain(RandomArchSearcher(SPACE, num_samples=6, epochs=2, metric="val_acc", mode="max", seed=4))
    c = _drain(RandomArchSearcher(SPACE, num_samples=6, epochs=2, metric="val_acc", mode="max", seed=5))
    assert a == b and a != c and len(a) == 6
    assert all(SPACE.contains(GlobalArch.from_dict(json.loads(x["arch"]))) and x["epochs"] == 2 for x in a)


def test_random_searcher_state_round_trip_mid_search(tmp_path):
    full = _drain(RandomArchSearcher(SPACE, num_samples=5, epochs=1, metric="val_acc", mode="max", seed=1))
    first = RandomArchSearcher(SPACE, num_samples=5, epochs=1, metric="val_acc", mode="max", seed=1)
    got = [first.suggest("t0"), first.suggest("t1")]
    first.on_trial_complete("t0", {"val_acc": 1.0})
    first.save(str(tmp_path / "state.json"))
    second = RandomArchSearcher(SPACE, num_samples=5, epochs=1, metric="val_acc", mode="max", seed=1)
    second.restore(str(tmp_path / "state.json"))
    second.on_trial_complete("t1", {"val_acc": 2.0})  # a trial in flight at save time still lands
    got += _drain(second)
    assert got == full
    assert second.summary() == {"evaluations": 5, "proposed": 5}


def test_restore_refuses_another_searchers_state(tmp_path):
    RandomArchSearcher(SPACE, num_samples=1, epochs=1, metric="val_acc", mode="max", seed=0).save(str(tmp_path / "s"))
    fixed = FixedArchSearcher([GlobalArch.uniform(2, 8).to_json()], epochs=1, metric="val_acc", mode="max")
    with pytest.raises(ValueError, match="belongs to 'RandomArchSearcher'"):
        fixed.restore(str(tmp_path / "s"))


def test_fixed_searcher_suggests_in_order_then_finishes():
    archs = [GlobalArch.uniform(d, 8).to_json() for d in (2, 3, 4)]
    searcher = FixedArchSearcher(archs, epochs=5, metric="val_acc", mode="max")
    assert [c["arch"] for c in _drain(searcher)] == archs
    assert searcher.summary() == {"evaluations": 3, "archs": 3}


def test_fixed_searcher_trains_each_arch_once_per_seed():
    archs = [GlobalArch.uniform(d, 8).to_json() for d in (2, 3)]
    searcher = FixedArchSearcher(archs, epochs=5, metric="val_acc", mode="max", seeds=[7, 8, 9])
    suggested = [(c["arch"], c["seed"]) for c in _drain(searcher)]
    assert suggested == [(a, s) for a in archs for s in (7, 8, 9)]
    assert searcher.summary() == {"evaluations": 6, "archs": 2}
    with pytest.raises(ValueError, match="distinct"):
        FixedArchSearcher(archs, epochs=5, metric="val_acc", mode="max", seeds=[1, 1])



def test_fixed_searcher_extras_ride_with_each_suggestion_and_its_list_is_restored(tmp_path):
    # HyperFD's benchmark rows: one architecture on several datasets, the list of missing rows in the state
    a, b = (GlobalArch.uniform(d, 8).to_json() for d in (2, 3))
    jobs = [{"arch": a, "epochs": 2, "dataset_id": "d0"}, {"arch": a, "epochs": 2, "dataset_id": "d1"},
            {"arch": b, "epochs": 2, "dataset_id": "d0"}]  # fmt: skip

    def make(rows):
        return FixedArchSearcher([j["arch"] for j in rows], epochs=2, metric="val_ap50", mode="max",
                                 extras=[{"dataset_id": j["dataset_id"]} for j in rows])  # fmt: skip

    full = make(jobs)
    assert _drain(full) == jobs and full.summary() == {"evaluations": 3, "archs": 3}
    first = make(jobs)
    assert first.suggest("t0") == jobs[0]
    first.on_trial_complete("t0", {"val_ap50": 0.5})
    first.save(str(tmp_path / "state.json"))
    # rebuilt after the first row was stored: the caller's list is shorter, the saved one wins
    second = make(jobs[1:])
    second.restore(str(tmp_path / "state.json"))
    assert _drain(second, {0: {"val_ap50": 0.25}, 1: {"val_ap50": 0.75}}) == jobs[1:]
    assert second.summary() == full.summary()
    assert second.best_result() == {"index": 2, **jobs[2], "metric": "val_ap50", "value": 0.75}
    empty = make([])  # nothing left to evaluate: finished at once
    assert empty.suggest("t0") == Searcher.FINISHED and empty.summary() == {"evaluations": 0, "archs": 0}
    again = make([])
    again.restore(str(tmp_path / "state.json"))
    assert again.summary() == {"evaluations": 1, "archs": 3}
    with pytest.raises(ValueError, match="at least one architecture"):
        FixedArchSearcher([], metric="val_ap50", mode="max")
    seeded = FixedArchSearcher([a], epochs=2, metric="val_ap50", mode="max", seeds=[4, 5], extras=[{"dataset_id": "d0"}])
    assert _drain(seeded) == [{"arch": a, "epochs": 2, "dataset_id": "d0", "seed": s} for s in (4, 5)]


def test_fixed_searcher_bad_extras_are_reported_together():
    a = GlobalArch.uniform(2, 8).to_json()
    with pytest.raises(ValueError) as err:
        FixedArchSearcher([a, a], metric="val_acc", mode="max", extras=[{"epochs": 3, "seed": 1}])
    assert str(err.value) == (
        "invalid FixedArchSearcher extras: one mapping per architecture (len(extras) == len(archs)) must hold, "
        "but got 1 extras for 2 archs; extras may not set the searcher's own keys ['arch', 'epochs', 'seed'], "
        "but they set ['epochs', 'seed']"
    )

def _strict_json(text: str):
    def refuse(token):
        raise ValueError(f"not strict JSON: {token}")

    return json.loads(text, parse_constant=refuse)


@pytest.mark.parametrize("make", [
    lambda: RandomArchSearcher(SPACE, num_samples=6, metric="val_acc", mode="min", seed=2),
    lambda: FixedArchSearcher([GlobalArch.uniform(d, 8).to_json() for d in range(2, 8)], metric="val_acc", mode="min"),
], ids=["random", "fixed"])
def test_failures_never_win_and_the_state_stays_strict_json(make, tmp_path):
    # NaN, +inf, -inf (the best value under min, were it believed), an error, then finite values
    results = {0: {"val_acc": float("nan")}, 1: {"val_acc": float("inf")}, 2: {"val_acc": -math.inf}, 3: None,
               4: {"val_acc": 7.0}, 5: {"val_acc": 5.0}}
    searcher = make()
    configs = _drain(searcher, results)
    assert len(configs) == 6
    best = searcher.best_result()
    assert (best["index"], best["value"], best["metric"]) == (5, 5.0, "val_acc") and best["arch"] == configs[5]["arch"]
    searcher.save(str(tmp_path / "state.json"))
    assert _strict_json((tmp_path / "state.json").read_text())["state"]  # was -Infinity for the failures
    again = make()
    again.restore(str(tmp_path / "state.json"))
    assert again.best_result() == best and again.summary() == searcher.summary()
    fresh = make()
    assert fresh.best_result() is None


def test_random_searcher_without_num_samples_suggests_until_tune_stops_asking():
    searcher = RandomArchSearcher(SPACE, metric="val_acc", mode="max")
    configs = [searcher.suggest(f"t{i}") for i in range(40)]
    reference = RandomArchSearcher(SPACE, num_samples=40, metric="val_acc", mode="max", seed=0)
    assert configs == [reference.propose(i) for i in range(40)] and configs[0]["epochs"] == 1
    with pytest.raises(ValueError, match="num_samples must be >= 1"):
        RandomArchSearcher(SPACE, num_samples=0, metric="val_acc", mode="max")


def test_a_state_file_written_before_strict_json_still_restores(tmp_path):
    # earlier versions wrote a failed evaluation's score as -Infinity
    path = tmp_path / "old.json"
    path.write_text('{"class": "RandomArchSearcher", "state": {"issued": 2, "live": {}, '
                    '"done": {"0": -Infinity, "1": 3.0}}}')
    searcher = RandomArchSearcher(SPACE, num_samples=3, metric="val_acc", mode="max", seed=0)
    searcher.restore(str(path))
    assert searcher.best_result()["index"] == 1 and searcher.summary() == {"evaluations": 2, "proposed": 2}


def test_arch_lr_search_tells_optuna_finite_values_only():
    from search_algos.rnas_hpo import ArchLrSearch

    searcher = ArchLrSearch(num_samples=6, arch_lr=(1e-4, 1e-2), arch_weight_decay=(1e-5, 1e-3), metric="val_uar",
                            mode="max", seed=0)  # fmt: skip
    reports = [{"val_uar": float("inf")}, {"val_uar": float("nan")}, None, {"val_uar": 0.4}, {"val_uar": -math.inf},
               {"val_uar": 0.6}]  # fmt: skip
    for i, result in enumerate(reports):
        assert isinstance(searcher.suggest(f"t{i}"), dict)
        searcher.on_trial_complete(f"t{i}", result, error=result is None)
    study = searcher._ot_study
    # +inf was a COMPLETE trial and Optuna's best (TPE then sampled around it); now every non-finite is a FAIL
    assert sorted(t.value for t in study.trials if t.state.name == "COMPLETE") == [0.4, 0.6]
    assert study.best_value == 0.6 and searcher.summary()["best_hpo"]["value"] == 0.6
    assert [t["value"] for t in searcher.finished.values()] == [None, None, None, 0.4, None, 0.6]
    assert searcher.suggest("t6") == Searcher.FINISHED


@pytest.mark.parametrize(
    ("result", "error", "expected"),
    [
        ({"val_acc": 90.0}, False, 90.0),
        ({"val_acc": float("nan")}, False, -math.inf),
        ({"val_acc": float("inf")}, False, -math.inf),
        ({"val_acc": 90.0}, True, -math.inf),
        (None, False, -math.inf),
        ({"other": 1.0}, False, -math.inf),
    ],
)
def test_score_maps_failures_to_minus_infinity(result, error, expected):
    assert score_of(result, "val_acc", "max", error=error) == expected
    if expected != -math.inf:
        assert score_of(result, "val_acc", "min") == -expected
