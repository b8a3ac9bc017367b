"""HyperFD performance ranker: losses against hand computations, SI, transformation module, transfer, state."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from scipy.stats import spearmanr
from torch.nn import functional as nnf

from search_algos.hyperfd import PerformanceRanker, RankerSettings, TaskResults, spearman

torch.set_num_threads(1)

FAST = RankerSettings(warmup_steps=150, iters_per_task=8, trans_iters=3)
FEATURES = ["a", "b", "c"]


def synthetic_configs(n: int = 24, dim: int = 6, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {f"c{i:02d}": rng.integers(0, 2, dim).astype(np.float32) for i in range(n)}


def synthetic_task(name: str, configs: dict[str, np.ndarray], rng: np.random.Generator) -> TaskResults:
    """AP depends on the dataset's features through a preference vector over config dimensions."""
    f = rng.normal(size=3)
    dim = len(next(iter(configs.values())))
    w = np.outer(f[:2], np.ones(dim)).sum(axis=0) * np.linspace(-1, 1, dim) + 0.3 * np.arange(dim) / dim
    results = {k: float(1 / (1 + np.exp(-(w @ c)))) for k, c in configs.items()}
    return TaskResults(name, {"a": f[0], "b": f[1], "c": f[2]}, results)


def synthetic_world(n_offline: int = 12, n_online: int = 6, seed: int = 0):
    configs = synthetic_configs(seed=seed)
    rng = np.random.default_rng(seed + 1)
    offline = [synthetic_task(f"off{i}", configs, rng) for i in range(n_offline)]
    online = [synthetic_task(f"on{i}", configs, rng) for i in range(n_online)]
    return configs, offline, online


def warm_ranker(settings: RankerSettings = FAST, seed: int = 0) -> tuple[PerformanceRanker, dict, list, list]:
    configs, offline, online = synthetic_world(seed=seed)
    ranker = PerformanceRanker(FEATURES, config_kind="vector", config_dim=6, settings=settings, seed=seed)
    ranker.add_configs(configs)
    ranker.fit_offline(offline)
    return ranker, configs, offline, online


def normalized_rank(results: dict[str, float], chosen: list[str]) -> float:
    best = max(results[k] for k in chosen)
    return 100.0 * sum(v > best for v in results.values()) / (len(results) - 1)


def test_spearman_matches_scipy_with_ties():
    a = [0.1, 0.5, 0.5, 0.9, 0.3]
    b = [1.0, 2.0, 3.0, 3.0, 0.0]
    assert spearman(a, b) == pytest.approx(spearmanr(a, b).statistic)
    assert spearman([1, 1, 1], [1, 2, 3]) == 0.0


def test_pairwise_loss_equals_hand_computation():
    ranker = PerformanceRanker(FEATURES, config_kind="vector", config_dim=2, settings=RankerSettings(lambda_sim=0))
    ranker.add_configs({"x": [1, 0], "y": [0, 1], "z": [1, 1]})
    ranker.net.eval()
    e = ranker.net.dataset(torch.zeros(3))
    h = ranker.net.encode_configs(ranker._config_batch(["x", "y", "z"]))
    ap = torch.tensor([0.9, 0.5, 0.5])  # x beats y and z; y, z tie (no pair)
    s = ranker.net.score(e, h).detach()
    expected = (math.log1p(math.exp(s[1] - s[0])) + math.log1p(math.exp(s[2] - s[0]))) / 2
    got = ranker._item_loss(e, h, ap, None, torch.zeros(1, 64))
    assert float(got.detach()) == pytest.approx(expected, rel=1e-5)


def test_triplet_term_is_margin_hinge_on_offline_partners():
    ranker = PerformanceRanker(FEATURES, config_kind="vector", config_dim=2, settings=RankerSettings(lambda_sim=1.0))
    ranker.add_configs({"x": [1, 0], "y": [0, 1]})
    e = torch.zeros(64)
    e_off = torch.stack([torch.full((64,), 0.1), torch.full((64,), 0.05)])  # positive farther than negative
    h = ranker.net.encode_configs(ranker._config_batch(["x", "y"]))
    ap = torch.tensor([0.5, 0.5])  # no pair: only the triplet term remains
    got = ranker._item_loss(e, h, ap, [0, 1], e_off)
    expected = max(0.0, 0.1 * 8 - 0.05 * 8 + 0.5)  # |e - e_pos| = 0.1 sqrt(64)
    assert float(got.detach()) == pytest.approx(expected, rel=1e-5)


def test_partners_are_most_and_least_correlated_offline_datasets():
    configs = {f"c{i}": np.eye(4, dtype=np.float32)[i % 4] for i in range(4)}
    base = {"c0": 0.1, "c1": 0.2, "c2": 0.3, "c3": 0.4}
    tasks = [
        TaskResults("same", {"a": 0, "b": 0, "c": 0}, dict(base)),
        TaskResults("reverse", {"a": 1, "b": 0, "c": 0}, {k: -v for k, v in base.items()}),
        TaskResults("mixed", {"a": 0, "b": 1, "c": 0}, {"c0": 0.2, "c1": 0.1, "c2": 0.4, "c3": 0.3}),
    ]
    ranker = PerformanceRanker(FEATURES, config_kind="vector", config_dim=4, settings=RankerSettings(warmup_steps=1))
    ranker.add_configs(configs)
    ranker.fit_offline(tasks)
    assert ranker._partners_of(base) == [0, 1]
    assert ranker._offline_partners[0] == [2, 1]  # itself excluded


def test_si_importance_and_pull_towards_anchor():
    ranker, configs, _offline, online = warm_ranker()
    si = ranker._si
    assert all(float(t.min()) >= 0 for t in si.importance.values())
    assert sum(float(t.sum()) for t in si.importance.values()) > 0  # the warm-up made parameters important
    assert float(si.penalty()) == pytest.approx(0.0, abs=1e-12)  # at the anchor just after consolidation

    def drift(weight: float) -> float:
        r, configs_, _off, onl = warm_ranker(RankerSettings(warmup_steps=150, iters_per_task=20, trans_iters=0,
                                                            lambda_reg=weight, lr=1e-2))
        before = r.parameters_vector()
        t = onl[0]
        r.observe(t.dataset_id, t.features, {k: t.results[k] for k in list(configs_)[:4]})
        return float(np.linalg.norm(r.parameters_vector() - before))

    assert drift(1e4) < 0.5 * drift(0.0)


def test_transformation_module_moves_past_features_only_as_features():
    ranker, configs, _offline, online = warm_ranker(RankerSettings(warmup_steps=100, iters_per_task=4, trans_iters=5, lr=1e-2))
    t0, t1 = online[0], online[1]
    ranker.observe(t0.dataset_id, t0.features, {k: t0.results[k] for k in list(configs)[:4]})
    z_before = list(ranker.past[0]["z"])
    ranker.observe(t1.dataset_id, t1.features, {k: t1.results[k] for k in list(configs)[4:8]})
    z_after = ranker.past[0]["z"]
    assert len(z_after) == len(FEATURES)  # a past task is its meta-feature vector, nothing more
    assert not np.allclose(z_before, z_after)
    assert set(ranker.past[0]) == {"dataset_id", "z", "results", "partners"}


def test_ranker_transfers_better_than_random_on_synthetic_tasks():
    ranker, configs, _offline, online = warm_ranker(RankerSettings(warmup_steps=300, iters_per_task=8, trans_iters=2))
    rng = np.random.default_rng(5)
    ranked, random = [], []
    for t in online:
        picks = ranker.suggest(t.features, list(configs), 4)
        ranked.append(normalized_rank(t.results, picks))
        random.append(np.mean([normalized_rank(t.results, list(rng.choice(list(configs), 4, replace=False)))
                               for _ in range(50)]))
        ranker.observe(t.dataset_id, t.features, {k: t.results[k] for k in picks})
    assert np.mean(ranked) < 0.5 * np.mean(random)


def test_gin_encoder_is_permutation_invariant_and_has_learnable_eps():
    rng = np.random.default_rng(0)
    n, f = 7, 5
    x = rng.normal(size=(n, f)).astype(np.float32)
    adj = (rng.random((n, n)) < 0.3).astype(np.float32)
    adj = np.maximum(adj, adj.T)
    perm = rng.permutation(n)
    ranker = PerformanceRanker(FEATURES, config_kind="graph", config_dim=f)
    ranker.add_configs({"g": (x, adj), "p": (x[perm], adj[perm][:, perm])})
    s = ranker.score({"a": 0.0, "b": 1.0, "c": 2.0}, ["g", "p"])
    assert s[0] == pytest.approx(s[1], abs=1e-5)
    gin = ranker.net.config
    assert gin.eps.requires_grad and gin.eps.shape == (2,) and len(gin.virtual) == 2
    assert gin.dropout.p == 0.2


def test_state_round_trip_is_exact_and_continues_identically():
    ranker, configs, _offline, online = warm_ranker()
    t = online[0]
    ranker.observe(t.dataset_id, t.features, {k: t.results[k] for k in list(configs)[:4]})
    state = json.loads(json.dumps(ranker.get_state()))
    twin = PerformanceRanker.from_state(state)
    twin.add_configs(configs)
    assert np.array_equal(twin.parameters_vector(), ranker.parameters_vector())
    for r in (ranker, twin):
        nxt = online[1]
        r.observe(nxt.dataset_id, nxt.features, {k: nxt.results[k] for k in list(configs)[5:9]})
    assert np.array_equal(twin.parameters_vector(), ranker.parameters_vector())
    assert twin.suggest(online[2].features, list(configs), 4) == ranker.suggest(online[2].features, list(configs), 4)


def test_bad_settings_are_reported_together():
    with pytest.raises(ValueError, match="hidden >= 1.*explore_ratio"):
        RankerSettings(hidden=0, explore_ratio=1.5)
    ranker = PerformanceRanker(FEATURES, config_kind="vector", config_dim=2)
    with pytest.raises(ValueError, match="offline warm-up needs >= 2 datasets"):
        ranker.fit_offline([])


def test_prior_is_each_configs_mean_quantile_over_the_datasets_seen():
    configs = synthetic_configs(n=4)
    keys = list(configs)
    ranker = PerformanceRanker(FEATURES, config_kind="vector", config_dim=6, settings=FAST)
    ranker.add_configs(configs)
    f = {"a": 0.0, "b": 1.0, "c": 2.0}
    g = {"a": 1.0, "b": 0.0, "c": 1.0}
    # c00 is the best on both datasets; c03 is evaluated on the first only, c02 ties c01 on the second
    ranker.offline = [TaskResults("d1", f, {keys[0]: 0.9, keys[1]: 0.5, keys[2]: 0.1, keys[3]: 0.3}),
                      TaskResults("d2", g, {keys[0]: 0.8, keys[1]: 0.4, keys[2]: 0.4})]  # fmt: skip
    prior = ranker.prior(keys + ["never-seen"])
    assert prior.tolist() == pytest.approx([1.0, (2 / 3 + 0.25) / 2, (0.0 + 0.25) / 2, 1 / 3, 0.5])
    ranker.past.append({"dataset_id": "d3", "z": [0.0] * 3, "results": {keys[3]: 1.0, keys[0]: 0.0}})
    assert ranker.prior([keys[3]])[0] == pytest.approx((1 / 3 + 1.0) / 2)  # online results count too


def test_prior_weight_one_suggests_by_the_prior_and_zero_keeps_the_paper_ranker():
    ranker, configs, offline, online = warm_ranker()
    keys = list(configs)
    paper = ranker.suggest(online[0].features, keys, 4)
    ranker.settings = RankerSettings(warmup_steps=150, iters_per_task=8, trans_iters=3, explore_ratio=0.0,
                                     prior_weight=1.0)  # fmt: skip
    by_prior = ranker.suggest(online[0].features, keys, 4)
    expected = [keys[i] for i in np.argsort(-ranker.prior(keys), kind="stable")[:4]]
    assert by_prior == expected
    ranker.settings = RankerSettings(warmup_steps=150, iters_per_task=8, trans_iters=3, prior_weight=0.0)
    assert ranker.suggest(online[0].features, keys, 4) == paper
    with pytest.raises(ValueError, match="prior_weight"):
        RankerSettings(prior_weight=1.5)
