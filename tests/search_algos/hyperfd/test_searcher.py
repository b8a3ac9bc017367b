"""TransferRankerSearcher: Algorithm 1's online loop driven with synthetic results; exact save/restore."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import numpy as np
import pytest
from ray.tune.search import Searcher

from search_algos.hyperfd import PerformanceRanker, RankerSettings, TaskResults, TransferRankerSearcher, config_encoding
from search_algos.spaces.base import stable_key
from search_algos.spaces.detector import DetectorArch, DetectorNasSpace, HpoConfig
from tests.search_algos.hyperfd.test_ranker import FEATURES, synthetic_world

SETTINGS = RankerSettings(warmup_steps=60, iters_per_task=4, trans_iters=2)


@dataclass(frozen=True)
class _Vec:
    """A stand-in config: its name and a 6-vector (the searcher only needs key/to_json/to_vector)."""

    name: str
    vec: tuple[float, ...]

    def key(self) -> str:
        return self.name

    def to_json(self) -> str:
        return json.dumps({"name": self.name, "vec": list(self.vec)})

    def to_vector(self) -> np.ndarray:
        return np.asarray(self.vec, dtype=np.float32)


def _decode(text: str) -> _Vec:
    payload = json.loads(text)
    return _Vec(payload["name"], tuple(payload["vec"]))


def _setup() -> tuple[dict[str, Any], list[str], list[dict[str, Any]], dict[str, dict[str, float]]]:
    configs, offline, online = synthetic_world(n_offline=8, n_online=4)
    ranker = PerformanceRanker(FEATURES, config_kind="vector", config_dim=6, settings=SETTINGS, seed=3)
    ranker.add_configs(configs)
    ranker.fit_offline(offline)
    pool = [_Vec(k, tuple(float(x) for x in v)).to_json() for k, v in configs.items()]
    datasets = [{"dataset_id": t.dataset_id, "name": t.dataset_id, "features": t.features} for t in online]
    truth = {t.dataset_id: t.results for t in online}
    return ranker.get_state(), pool, datasets, truth


def _searcher(state, pool, datasets, budget=4) -> TransferRankerSearcher:
    return TransferRankerSearcher(
        ranker_state=state, pool=pool, decode=_decode, datasets=datasets, budget=budget, epochs=3,
        metric="val_ap50", mode="max", seed=0,
    )


def _complete(searcher: TransferRankerSearcher, trial_id: str, config: dict, truth) -> None:
    name = json.loads(config["arch"])["name"]
    ap = truth[config["dataset_id"]][name]
    searcher.on_trial_complete(trial_id, {"val_ap50": ap, "test_ap50": ap - 0.01})


def test_suggests_top_b_per_dataset_and_waits_for_the_update():
    state, pool, datasets, truth = _setup()
    searcher = _searcher(state, pool, datasets)
    expected = PerformanceRanker.from_state(state)
    expected.add_configs({_decode(p).key(): _decode(p).to_vector() for p in pool})
    top = expected.suggest(datasets[0]["features"], [_decode(p).key() for p in pool], 4)

    first = [searcher.suggest(f"t{i}") for i in range(4)]
    assert [json.loads(c["arch"])["name"] for c in first] == top
    assert {c["dataset_id"] for c in first} == {datasets[0]["dataset_id"]} and all(c["epochs"] == 3 for c in first)
    assert searcher.suggest("t4") is None  # the next dataset waits until d_1 has taught the ranker
    params_before = searcher.ranker.parameters_vector()
    for i, c in enumerate(first[:3]):
        _complete(searcher, f"t{i}", c, truth)
    assert searcher.suggest("t4") is None
    searcher.on_trial_complete("t3", None, error=True)  # a failed evaluation is not learnt from
    assert not np.array_equal(params_before, searcher.ranker.parameters_vector())
    nxt = searcher.suggest("t4")
    assert nxt["dataset_id"] == datasets[1]["dataset_id"] and nxt["task"] == 1

    summary = searcher.summary()["tasks"][0]
    best = max((json.loads(c["arch"])["name"] for c in first[:3]), key=lambda k: truth[datasets[0]["dataset_id"]][k])
    assert summary["best"] == best and len(summary["results"]) == 4


def _drive(searcher, truth, start: int, stop_after: int | None = None) -> list[dict]:
    """Run the searcher like Tune with 2 slots: suggest while possible, complete the oldest live trial."""
    issued, live, n = [], [], start
    while True:
        while len(live) < 2:
            config = searcher.suggest(f"t{n}")
            if config is None or config == Searcher.FINISHED:
                break
            live.append((f"t{n}", config))
            issued.append(config)
            n += 1
        if stop_after is not None and len(issued) >= stop_after:
            return issued
        if not live:
            return issued
        trial_id, config = live.pop(0)
        _complete(searcher, trial_id, config, truth)


def test_save_mid_run_restore_gives_the_same_run(tmp_path):
    state, pool, datasets, truth = _setup()
    original = _searcher(state, pool, datasets)
    _drive(original, truth, 0, stop_after=7)  # mid task 1, two trials live
    path = tmp_path / "searcher.json"
    original.save(str(path))

    restored = _searcher(state, pool, datasets)
    restored.restore(str(path))
    assert np.array_equal(restored.ranker.parameters_vector(), original.ranker.parameters_vector())
    assert json.dumps(restored.get_state(), sort_keys=True) == json.dumps(original.get_state(), sort_keys=True)

    # The two live trials finish in both; everything after must be identical.
    for s in (original, restored):
        for trial_id in sorted(s._live):
            task, key = s._live[trial_id]
            s.on_trial_complete(trial_id, {"val_ap50": truth[datasets[task]["dataset_id"]][key], "test_ap50": 0.0})
    rest_a = _drive(original, truth, 100)
    rest_b = _drive(restored, truth, 100)
    assert rest_a == rest_b and len(rest_a) > 0
    assert np.array_equal(restored.ranker.parameters_vector(), original.ranker.parameters_vector())
    assert original.suggest("end") == Searcher.FINISHED == restored.suggest("end")


def test_restore_refuses_another_searchers_state(tmp_path):
    state, pool, datasets, _truth = _setup()
    path = tmp_path / "other.json"
    path.write_text(json.dumps({"class": "RandomArchSearcher", "state": {}}))
    with pytest.raises(ValueError, match="belongs to 'RandomArchSearcher'"):
        _searcher(state, pool, datasets).restore(str(path))


def test_bad_arguments_are_reported_together():
    state, pool, datasets, _truth = _setup()
    with pytest.raises(ValueError, match="budget >= 1.*datasets must name"):
        TransferRankerSearcher(ranker_state=state, pool=pool, decode=_decode, datasets=[], budget=0, epochs=1,
                               metric="val_ap50")


def test_config_encoding_of_detector_spaces():
    vec = config_encoding(HpoConfig.default())
    assert vec.shape == (HpoConfig.VECTOR_DIM,) and vec.sum() == 6  # one-hot per hyper-parameter
    arch = DetectorNasSpace().sample(np.random.default_rng(0))
    nodes, adj = config_encoding(arch)
    graph = arch.to_graph()
    assert nodes.shape == graph.nodes.shape and np.array_equal(adj, adj.T)
    assert adj.sum() == 2 * len(graph.edges)
    assert stable_key(DetectorArch.mobilenet_v2().to_dict()) == DetectorArch.mobilenet_v2().key()


class _VecSpace:
    """A stand-in space: only ``from_json`` is used by the searcher."""

    @staticmethod
    def from_json(text: str) -> _Vec:
        return _decode(text)


def test_warm_start_equals_a_ranker_warmed_up_by_hand_and_takes_plain_arguments():
    configs, offline, online = synthetic_world(n_offline=8, n_online=4)
    pool = [_Vec(k, tuple(float(x) for x in v)).to_json() for k, v in configs.items()]
    datasets = [{"dataset_id": t.dataset_id, "features": t.features} for t in online]
    # a failed offline evaluation (NaN) is left out of the warm-up, as the pipeline's warm-up does
    broken = [TaskResults(t.dataset_id, t.features, {**t.results, "c00": float("nan")}) for t in offline]
    searcher = TransferRankerSearcher.warm_start(space=_VecSpace(), pool=pool, offline=broken, datasets=datasets,
                                                 settings=SETTINGS, budget=4, metric="val_ap50", seed=3)
    by_hand = PerformanceRanker(FEATURES, config_kind="vector", config_dim=6, settings=SETTINGS, seed=3)
    by_hand.add_configs(configs)
    by_hand.fit_offline([TaskResults(t.dataset_id, t.features, {k: v for k, v in t.results.items() if k != "c00"})
                         for t in offline])  # fmt: skip
    assert np.array_equal(searcher.ranker.parameters_vector(), by_hand.parameters_vector())
    same = TransferRankerSearcher(ranker=by_hand, pool=pool, space=_VecSpace(), datasets=datasets, budget=4,
                                  metric="val_ap50", seed=3)  # fmt: skip
    assert [searcher.suggest(f"t{i}") for i in range(4)] == [same.suggest(f"t{i}") for i in range(4)]
    assert np.array_equal(by_hand.parameters_vector(), same.ranker.parameters_vector())  # a copy is trained

    with pytest.raises(ValueError, match="outside the pool.*expected"):
        TransferRankerSearcher.warm_start(
            space=_VecSpace(), pool=pool, metric="val_ap50", datasets=[{"dataset_id": "x", "features": {"a": 1.0}}],
            offline=[TaskResults("o", {"a": 1.0, "b": 0.0, "c": 0.0}, {"nope": 0.5})],
        )


def test_exactly_one_ranker_and_one_decoder_are_asked_for():
    state, pool, datasets, _truth = _setup()
    with pytest.raises(ValueError, match="exactly one of ranker_state .* got neither.*exactly one of decode and space"):
        TransferRankerSearcher(pool=pool, datasets=datasets, metric="val_ap50")
    ranker = PerformanceRanker.from_state(state)
    with pytest.raises(ValueError, match="got both.*got both"):
        TransferRankerSearcher(ranker_state=state, ranker=ranker, pool=pool, decode=_decode, space=_VecSpace(),
                               datasets=datasets, metric="val_ap50")  # fmt: skip


def test_failed_and_invalid_results_keep_the_state_strict_json(tmp_path):
    state, pool, datasets, truth = _setup()
    searcher = _searcher(state, pool, datasets)
    configs = [searcher.suggest(f"t{i}") for i in range(4)]
    values = [float("nan"), float("inf"), -float("inf")]
    for i, value in enumerate(values):
        searcher.on_trial_complete(f"t{i}", {"val_ap50": value, "test_ap50": value})
    _complete(searcher, "t3", configs[3], truth)
    path = tmp_path / "state.json"
    searcher.save(str(path))

    def refuse(token):
        raise ValueError(f"not strict JSON: {token}")

    json.loads(path.read_text(), parse_constant=refuse)  # NaN was written for the failed results
    restored = _searcher(state, pool, datasets)
    restored.restore(str(path))
    assert restored.summary() == searcher.summary()
    task = restored.summary()["tasks"][0]
    assert task["best"] == json.loads(configs[3]["arch"])["name"]
    assert sum(r["val"] is None for r in task["results"].values()) == 3
    assert restored.suggest("t4") == searcher.suggest("t4")
