"""HyperFD Table 7, config checks, pools and the cross-searcher warm start (no Ray)."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import yaml
from ray.tune.search import Searcher

from orchestrator.config import load_config, parse_config
from orchestrator.errors import UserError
from orchestrator.methods.hyperfd.online import domain_orders, warm_start_configs
from orchestrator.methods.hyperfd.plan import sample_pool
from orchestrator.methods.hyperfd.table import normalized_rank, table7, table7_markdown
from orchestrator.store import BenchmarkStore
from search_algos.hyperfd import RankerSettings
from search_algos.spaces.detector import DetectorHpoSpace, HpoConfig


def test_normalized_rank_by_hand():
    test = {"a": 0.9, "b": 0.8, "c": 0.8, "d": 0.1, "e": 0.5}
    assert normalized_rank(test, "a") == 0.0
    assert normalized_rank(test, "b") == pytest.approx(100 * 1 / 4)  # only a is strictly better
    assert normalized_rank(test, "c") == pytest.approx(25.0)  # ties share the better rank
    assert normalized_rank(test, "d") == 100.0
    assert normalized_rank({"a": math.nan, "b": 0.2}, "a") == 100.0


def test_table7_picks_by_validation_and_ranks_by_test():
    pool = ["a", "b", "c", "d", "e"]
    # val prefers c on "x", but on test c is 3rd of 5: rank 2/4 = 50 %.
    x = {"a": (0.1, 0.9), "b": (0.2, 0.8), "c": (0.9, 0.7), "d": (0.3, 0.2), "e": (0.4, 0.1)}
    results = {"x": {k: {"val": v, "test": t} for k, (v, t) in x.items()}}
    reference = {k: {"val": float(i), "test": 0.0} for i, k in enumerate(pool)}  # e is best on the reference
    summaries = [{"tasks": [{"dataset_id": "id-x", "suggested": ["d", "c"]}]}] * 2
    frame = table7(space="detector_hpo", pool=pool, results=results, reference=reference, summaries=summaries,
                   ids={"x": "id-x"}, domains=["x"], budget=2, seed=0)  # fmt: skip
    hyper = frame[frame.method == "HyperFD"]
    assert list(hyper.arch_key) == ["c", "c"] and list(hyper.normalized_rank) == [50.0, 50.0]
    assert list(hyper.ap) == pytest.approx([70.0, 70.0])
    ref = frame[frame.method == "Best on reference"]
    assert list(ref.arch_key) == ["e", "e"] and list(ref.normalized_rank) == [100.0, 100.0]
    rnd = frame[frame.method == "Random search"]
    assert len(rnd) == 2 and all(0 <= r <= 100 for r in rnd.normalized_rank)
    text = table7_markdown(frame, ["x"])
    assert "| HyperFD | 50.00±0.00 | 50.00±0.00 |" in text and "normalized rank" in text


def test_random_search_expected_rank_matches_order_statistics():
    """Random B-of-P picks: E[rank] = (P - B) / (B + 1) / (P - 1) (order statistics), here via many orders."""
    pool = [f"k{i}" for i in range(24)]
    rng = np.random.default_rng(0)
    vals = rng.permutation(24).astype(float)
    results = {"x": {k: {"val": v, "test": v} for k, v in zip(pool, vals)}}
    summaries = [{"tasks": []}] * 400
    frame = table7(space="s", pool=pool, results=results, reference=results["x"], summaries=summaries,
                   ids={"x": "id-x"}, domains=["x"], budget=4, seed=1)  # fmt: skip
    mean = frame[frame.method == "Random search"].normalized_rank.mean()
    assert mean == pytest.approx(100 * (24 - 4) / 5 / 23, abs=2.0)


def test_pools_are_distinct_seeded_and_orders_are_permutations():
    a, b = sample_pool("detector_hpo", 24, seed=0), sample_pool("detector_hpo", 24, seed=0)
    assert a == b and len(set(a)) == 24
    nas = sample_pool("detector_nas", 24, seed=1)
    assert len(set(nas)) == 24
    orders = domain_orders(["p", "q", "r", "s"], 5, seed=0)
    assert all(sorted(o) == ["p", "q", "r", "s"] for o in orders) and len({tuple(o) for o in orders}) > 1


def test_shipped_config_meets_the_issue_and_bad_keys_are_reported(tmp_path):
    config, _raw = load_config("configs/hyperfd.yaml")
    s = config.searcher
    assert s.name == "hyperfd" and len(s.domains) >= 8 and s.pool_size >= 24
    assert set(s.spaces) == {"detector_hpo", "detector_nas"} and config.metric == "val_ap50"
    assert (s.lr, s.lambda_sim, s.margin, s.lambda_reg, s.iters_per_task, s.trans_iters) == (1e-4, 0.03, 0.5, 1e4, 50, 20)
    quick, _raw = load_config("configs/hyperfd_quick.yaml")
    assert quick.searcher.name == "hyperfd" and len(quick.searcher.domains) >= 8
    raw = yaml.safe_load(open("configs/hyperfd.yaml"))
    raw["searcher"].update(domains=["plain", "nowhere", "wider"], budget=30, clustering_methods=["kmeans", "x"])
    with pytest.raises(UserError) as err:
        parse_config(raw)
    text = "\n".join(err.value.problems)
    assert "nowhere" in text and "budget <= pool_size" in text and "'x'" in text
    raw = yaml.safe_load(open("configs/hyperfd.yaml"))
    raw["searcher"]["domains"] = ["plain", "wider"]
    with pytest.raises(UserError, match="offline source"):
        parse_config(raw)
    raw = yaml.safe_load(open("configs/hyperfd.yaml"))
    raw["data"] = {"dataset": "digits"}
    with pytest.raises(UserError, match="needs a detection dataset"):
        parse_config(raw)


def _runs_where_adam_wins(store: BenchmarkStore, pool: list[str], feature_names: list[str]) -> None:
    """Six earlier runs' datasets (random meta-features) on which every adam config beats every sgd one."""
    rng = np.random.default_rng(0)
    for d in range(6):
        store.put_dataset(f"det-{d}", f"d{d}", {n: float(rng.normal()) for n in feature_names})
        for text in pool:
            c = HpoConfig.from_json(text)
            ap = (0.6 if c.optimizer == "adam" else 0.2) + 0.1 * rng.random()
            store.put({"space": "detector_hpo", "arch_key": c.key(), "config": {"arch": c.to_dict()},
                       "dataset_id": f"det-{d}", "fidelity": 4, "seed": 0, "metrics": {"val_ap50": ap},
                       "cost_s": 1.0, "run": f"run{d}"})  # fmt: skip


def test_warm_start_learns_from_every_stored_run(tmp_path):
    """Datasets whose best configs are the adam ones teach the ranker to put adam first on a new one."""
    store = BenchmarkStore(str(tmp_path / "benchmark"))
    pool = [c.to_json() for c in list(DetectorHpoSpace().enumerate())[::9]]  # 24 configs, both optimizers
    _runs_where_adam_wins(store, pool, ["f0", "f1"])
    top = warm_start_configs(store, "detector_hpo", {"f0": 0.1, "f1": -0.2}, pool, top=4,
                             settings=RankerSettings(warmup_steps=150))  # fmt: skip
    assert len(top) == 4 and all(HpoConfig.from_json(t).optimizer == "adam" for t in top)
    empty = BenchmarkStore(str(tmp_path / "empty"))
    assert warm_start_configs(empty, "detector_hpo", {"f0": 0.0, "f1": 0.0}, pool, top=3) == pool[:3]


def _jobs(searcher: Searcher) -> list[dict]:
    """Every trial config ``searcher`` hands out, in order (no trial completes meanwhile)."""
    out: list[dict] = []
    while (config := searcher.suggest(f"t{len(out)}")) != Searcher.FINISHED:
        out.append(config)
    return out


def test_search_mode_evaluates_the_rankers_picks_first_then_random_ones(tmp_path):
    """``mode: search`` on a new dataset: the first ``warm_start`` jobs are the ranker's (adam, as every
    stored run says), the rest distinct random picks of the pool; the list survives a restart."""
    from orchestrator.methods.hyperfd.online import hyperfd_stages
    from orchestrator.methods.hyperfd.plan import load_recipe, pool_seed
    from trainables.detection.data import detection_meta_features

    raw = yaml.safe_load(open("configs/hyperfd.yaml"))
    raw["data"].update({"domain": "mask", "image_size": 32, "n_images": 20})
    raw["searcher"].update({"mode": "search", "spaces": ["detector_hpo"], "num_samples": 6, "warm_start": 3,
                            "warmup_steps": 150})  # fmt: skip
    config = parse_config(raw)
    target = load_recipe({"kind": "domain", "kwargs": {"domain": "mask", "seed": 0, "image_size": 32, "n_images": 20}})
    names = sorted(detection_meta_features(target))
    store = BenchmarkStore(str(tmp_path / "benchmark"))
    pool = sample_pool("detector_hpo", config.searcher.pool_size, seed=pool_seed("detector_hpo", config.seed))
    _runs_where_adam_wins(store, pool, names)
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    stages, _select, _extras = hyperfd_stages(config, store, run_dir)
    assert [s.name for s in stages] == ["search-detector_hpo"]
    jobs = _jobs(stages[0].make_searcher({}))
    archs = [HpoConfig.from_json(j["arch"]) for j in jobs]
    assert len(jobs) == 6 and len({a.key() for a in archs}) == 6
    assert all(j["dataset_id"] == target.dataset_id for j in jobs)
    assert all(a.optimizer == "adam" for a in archs[:3])
    assert {j["arch"] for j in jobs} <= set(pool)
    stored = store.dataset(target.dataset_id)
    assert stored is not None and set(stored["features"]) == set(names)  # meta-features only
    # A restarted run reads the same list, even though the store has learnt more since.
    store.put({"space": "detector_hpo", "arch_key": archs[-1].key(), "config": {"arch": archs[-1].to_dict()},
               "dataset_id": "det-0", "fidelity": 4, "seed": 0, "metrics": {"val_ap50": 0.99},
               "cost_s": 1.0, "run": "later"})  # fmt: skip
    again, _s, _e = hyperfd_stages(config, store, run_dir)
    assert _jobs(again[0].make_searcher({})) == jobs


def test_search_mode_limits_are_reported_together():
    raw = yaml.safe_load(open("configs/hyperfd.yaml"))
    raw["searcher"].update({"mode": "search", "pool_size": 4, "num_samples": 5, "warm_start": 6})
    with pytest.raises(UserError) as info:
        parse_config(raw)
    assert "num_samples <= pool_size" in str(info.value) and "warm_start <= num_samples" in str(info.value)
