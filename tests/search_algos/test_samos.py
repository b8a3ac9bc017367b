"""Unit tests (no Ray runtime) of the SAMOS searcher, driven by a synthetic penalty.

The penalty of a child is its Hamming distance (in edge states) to a hidden target child, plus a small
deterministic noise from a hash of its key. A small simulated Tune loop hands suggestions to a number of
trial slots and completes them in a seeded random order.
"""

from __future__ import annotations

import hashlib
import json
import math
import random
import statistics

import numpy as np
import pytest
from ray.tune.search import Searcher

from search_algos.random_search import RandomArchSearcher
from search_algos.samos import DEFAULT_T0, SAMOSSearcher, acceptance_probability, calibrate_t0
from search_algos.spaces import decode_arch
from search_algos.spaces.multipath import MultipathArch, MultipathSpace

SMALL = MultipathSpace(layers=6, scales=3)  # 45 edges: fast
PAPER = MultipathSpace(layers=10, scales=4)  # §IV-B


def make_penalty(space: MultipathSpace, *, noise: float = 0.3, target_seed: int = 999):
    target = space.sample(np.random.default_rng(target_seed))
    t = target.as_array()

    def penalty(arch: MultipathArch) -> float:
        jitter = int(hashlib.sha256(arch.key().encode()).hexdigest()[:8], 16) / 2**32
        return float((arch.as_array() != t).sum()) + noise * jitter

    return penalty, target


def drive(searcher, penalty, *, slots=1, order_seed=None, fail=None, save_every=None, factory=None):
    """Run ``searcher`` to FINISHED; returns (searcher, configs in suggestion order).

    ``fail(config)`` -> None (report the penalty), "error" (errored trial) or "nan" (a NaN metric).
    ``save_every=k``: after every k completions, replace the searcher by ``factory()`` restored from
    its JSON state (trials in flight stay in flight and land in the restored searcher).
    """
    order = random.Random(order_seed)
    live, configs, n, events = {}, [], 0, 0
    while True:
        answer = None
        while len(live) < slots:
            answer = searcher.suggest(f"t{n:05d}")
            if answer is None or answer == Searcher.FINISHED:
                break
            live[f"t{n:05d}"] = answer
            configs.append(answer)
            n += 1
        if not live:
            assert answer == Searcher.FINISHED, "the searcher waits but nothing is in flight"
            return searcher, configs
        tid = order.choice(sorted(live)) if order_seed is not None else min(live)
        config = live.pop(tid)
        how = fail(config) if fail else None
        if how == "error":
            searcher.on_trial_complete(tid, None, error=True)
        elif how == "nan":
            searcher.on_trial_complete(tid, {"val_nme": float("nan")})
        else:
            searcher.on_trial_complete(tid, {"val_nme": penalty(decode_arch("multipath", config["arch"]))})
        events += 1
        if save_every and events % save_every == 0:
            fresh = factory()
            fresh.set_state(json.loads(json.dumps(searcher.get_state())))
            searcher = fresh


def samos(**kwargs) -> SAMOSSearcher:
    kwargs.setdefault("space", SMALL)
    return SAMOSSearcher(**kwargs)


def anneal(searcher):
    return [e for e in searcher.trajectory if e["phase"] == "anneal"]


# -- the search itself ---------------------------------------------------------------------------------
def test_improves_over_the_start_and_beats_random_at_equal_budget():
    penalty, _ = make_penalty(PAPER)
    samos_best, random_best = [], []
    for seed in range(2):
        searcher, configs = drive(SAMOSSearcher(space=PAPER, seed=seed, iterations=200), penalty)
        start = searcher.trajectory[0]["penalty"]
        assert searcher.best_result()["penalty"] < start - 20  # distances start near 96 of 144 edges
        samos_best.append(searcher.best_result()["penalty"])
        baseline = RandomArchSearcher(PAPER, num_samples=200, epochs=1, metric="val_nme", mode="min", seed=seed)
        _, rconfigs = drive(baseline, penalty, slots=4)
        assert len(rconfigs) == len(configs) == 200
        random_best.append(min(penalty(PAPER.from_json(c["arch"])) for c in rconfigs))
    assert max(samos_best) < min(random_best) - 10


def test_returns_the_best_seen_not_the_last():
    penalty, _ = make_penalty(SMALL)
    found = 0
    for seed in range(10):
        searcher, _ = drive(samos(seed=seed, iterations=40, t0=20.0, cooling=1.0), penalty)  # a hot random walk
        traj = searcher.trajectory
        best = min(e["penalty"] for e in traj)
        assert searcher.best_result()["penalty"] == best
        assert penalty(searcher.best_arch()) == best
        assert searcher.best_result()["step"] == min(e["step"] for e in traj if e["penalty"] == best)
        last_accepted = [e for e in traj if e["accepted"]][-1]
        found += last_accepted["penalty"] > best
        assert all(e["best_so_far"] == min(x["penalty"] for x in traj[: i + 1]) for i, e in enumerate(traj))
    assert found >= 5


def test_acceptance_follows_exp_minus_delta_over_t():
    penalty, _ = make_penalty(SMALL)
    probs, accepted = [], []
    for seed in range(80):
        searcher, _ = drive(samos(seed=seed, iterations=24), penalty)
        for e in anneal(searcher):
            if e["delta"] is not None and e["delta"] > 0:
                probs.append(acceptance_probability(e["delta"], e["temperature"]))
                accepted.append(e["accepted"])
            else:
                assert e["accepted"]  # improvements (and ties) are always accepted
    probs, accepted = np.array(probs), np.array(accepted)
    assert len(probs) > 300
    sd = math.sqrt(float((probs * (1 - probs)).sum()))
    assert abs(accepted.sum() - probs.sum()) < 4 * sd
    for lo, hi in [(0.05, 0.35), (0.35, 0.65), (0.65, 0.95)]:  # calibrated per probability band
        band = (probs >= lo) & (probs < hi)
        if band.sum() >= 30:
            sd_band = math.sqrt(float((probs[band] * (1 - probs[band])).sum()))
            assert abs(accepted[band].sum() - probs[band].sum()) < 4 * sd_band


def test_calibrated_t0_accepts_a_median_worsening_half_the_time():
    penalty, target = make_penalty(SMALL, noise=0.0)
    hits = []
    for seed in range(200):
        # start at the optimum: every neighbour is worse by its Hamming distance (mostly 1)
        searcher, _ = drive(samos(seed=seed, iterations=10, calibration=8, init=target.to_json()), penalty)
        cal = [e["delta"] for e in searcher.trajectory if e["phase"] == "calibrate"]
        median = statistics.median([d for d in cal if d > 0])
        t0 = searcher.summary()["t0"][0]
        assert t0 == pytest.approx(median / math.log(2))
        assert acceptance_probability(median, t0) == pytest.approx(0.5)
        first = anneal(searcher)[0]
        assert first["temperature"] == t0
        if first["delta"] == median:
            hits.append(first["accepted"])
    assert len(hits) > 120
    assert 0.4 < sum(hits) / len(hits) < 0.6


def test_calibrate_t0_fallbacks():
    assert calibrate_t0([3.0, -1.0, 1.0, math.inf, 2.0]) == (pytest.approx(2.0 / math.log(2)), "median_worsening")
    assert calibrate_t0([-2.0, 0.0, -4.0, -math.inf]) == (pytest.approx(3.0 / math.log(2)), "median_change")
    assert calibrate_t0([0.0, math.inf]) == (DEFAULT_T0, "default")
    assert acceptance_probability(0.0, 1.0) == 1.0 and acceptance_probability(-1.0, 0.0) == 1.0
    assert acceptance_probability(math.inf, 5.0) == 0.0 and acceptance_probability(1.0, 0.0) == 0.0


def test_temperature_decays_by_the_cooling_rate():
    penalty, _ = make_penalty(SMALL)
    for cooling, t0 in [(0.85, None), (0.5, 2.0)]:
        searcher, _ = drive(samos(seed=3, iterations=30, cooling=cooling, t0=t0), penalty)
        temps = [e["temperature"] for e in anneal(searcher)]
        t_start = searcher.summary()["t0"][0]
        assert temps[0] == t_start and (t0 is None or t_start == t0)
        assert all(b == pytest.approx(a * cooling, rel=1e-12) for a, b in zip(temps, temps[1:]))
        assert len(temps) == 30 - 1 - (8 if t0 is None else 0)


def test_iteration_budget_and_config_format():
    penalty, _ = make_penalty(SMALL)
    searcher, configs = drive(samos(seed=1, iterations=30, chains=2), penalty, slots=3, order_seed=4)
    assert searcher.suggest("late") == Searcher.FINISHED
    for c in range(2):
        assert sorted(x["step"] for x in configs if x["chain"] == c) == list(range(30))
    assert all(set(x) == {"arch", "epochs", "chain", "step"} and x["epochs"] == 0 for x in configs)
    summary = searcher.summary()
    assert summary["evaluations"] == 60 and summary["done"]
    assert [e["phase"] for e in searcher.trajectory[:10]] == ["start"] + ["calibrate"] * 8 + ["anneal"]
    # a budget smaller than the calibration: the start and iterations-1 calibration neighbours only
    short, configs = drive(samos(seed=1, iterations=5, calibration=8), penalty)
    assert len(configs) == 5 and short.summary()["t0"][0] is not None and not anneal(short)
    assert len(drive(samos(seed=1, iterations=1), penalty)[1]) == 1


def test_start_and_calibration_run_in_parallel_then_one_move_at_a_time():
    searcher = samos(seed=0, iterations=20)
    configs = [searcher.suggest(f"t{i}") for i in range(12)]
    assert [c["step"] for c in configs[:9]] == list(range(9)) and configs[9:] == [None] * 3
    for i in range(9):
        searcher.on_trial_complete(f"t{i}", {"val_nme": float(i)})
    assert searcher.suggest("a")["step"] == 9 and searcher.suggest("b") is None


def test_failed_trials_count_as_worst():
    penalty, _ = make_penalty(SMALL)

    def fail(config):  # a third of the children fail, some with NaN
        h = int(config["arch"] and hashlib.sha256(config["arch"].encode()).hexdigest()[:4], 16) % 6
        return {0: "error", 1: "nan"}.get(h)

    searcher, configs = drive(samos(seed=2, iterations=60), penalty, fail=fail, slots=2, order_seed=1)
    traj = searcher.trajectory
    failed = [e for e in traj if e["penalty"] is None]
    assert failed and len(configs) == 60
    assert searcher.best_result()["penalty"] == min(e["penalty"] for e in traj if e["penalty"] is not None)
    current_finite = True
    for e in traj:
        if e["phase"] == "anneal" and e["penalty"] is None and current_finite:
            assert not e["accepted"]
        if e["accepted"]:
            current_finite = e["penalty"] is not None
    # a failed start: the first finite child is accepted
    start_fails = lambda config: "error" if config["step"] == 0 else None  # noqa: E731
    searcher, _ = drive(samos(seed=2, iterations=15, t0=1.0), penalty, fail=start_fails)
    assert searcher.trajectory[0]["penalty"] is None and searcher.trajectory[1]["accepted"]
    # everything fails: the search still finishes; there is no best value
    searcher, _ = drive(samos(seed=2, iterations=12), penalty, fail=lambda c: "error")
    assert searcher.summary()["done"] and searcher.best_result()["penalty"] is None
    assert searcher.summary()["t0_source"] == ["default"]


def test_mode_max_minimises_minus_the_metric():
    penalty, _ = make_penalty(SMALL)
    searcher = samos(seed=0, iterations=30, metric="val_acc", mode="max")
    ids = 0
    while (config := searcher.suggest(f"t{ids}")) != Searcher.FINISHED:
        searcher.on_trial_complete(f"t{ids}", {"val_acc": -penalty(decode_arch("multipath", config["arch"]))})
        ids += 1
    reference, _ = drive(samos(seed=0, iterations=30), penalty)
    assert searcher.best_arch() == reference.best_arch()
    assert searcher.best_result()["value"] == -reference.best_result()["value"]


# -- determinism, chains, resume --------------------------------------------------------------------------
def test_a_search_is_a_pure_function_of_seed_and_results():
    penalty, _ = make_penalty(SMALL)
    a = drive(samos(seed=5, iterations=40), penalty)[0].summary()
    b = drive(samos(seed=5, iterations=40), penalty, slots=3, order_seed=8)[0].summary()
    c = drive(samos(seed=6, iterations=40), penalty)[0].summary()
    assert a == b and a["trajectory"] != c["trajectory"]


def test_chains_do_not_depend_on_completion_order():
    penalty, _ = make_penalty(SMALL)
    sequential = drive(samos(seed=7, iterations=25, chains=3), penalty, slots=1)[0].summary()
    for slots, order_seed in [(2, 0), (3, 1), (5, 2), (9, 3), (4, None)]:
        parallel = drive(samos(seed=7, iterations=25, chains=3), penalty, slots=slots, order_seed=order_seed)[0]
        assert parallel.summary() == sequential
    # chain 0 of a three-chain search is the single-chain search with the same seed
    single = drive(samos(seed=7, iterations=25), penalty)[0]
    assert [e for e in sequential["trajectory"] if e["chain"] == 0] == single.trajectory
    chains = [[e["arch_key"] for e in sequential["trajectory"] if e["chain"] == c] for c in range(3)]
    assert chains[0] != chains[1] != chains[2]
    best = min(range(3), key=lambda c: (min(e["penalty"] for e in sequential["trajectory"] if e["chain"] == c), c))
    assert sequential["best_chain"] == best


@pytest.mark.parametrize("save_every", [1, 2, 3, 7, 11])
def test_save_and_restore_anywhere_continues_identically(save_every):
    penalty, _ = make_penalty(SMALL)
    make = lambda: samos(seed=11, iterations=20, chains=2)  # noqa: E731
    whole, configs = drive(make(), penalty, slots=3, order_seed=5)
    resumed, configs_r = drive(make(), penalty, slots=3, order_seed=5, save_every=save_every, factory=make)
    assert configs_r == configs
    assert resumed.summary() == whole.summary()


def test_save_and_restore_through_files(tmp_path):
    penalty, _ = make_penalty(SMALL)
    first = samos(seed=4, iterations=15, t0=0.5)
    config0, config1 = first.suggest("a"), first.suggest("b")
    assert config1 is None  # t0 given: no calibration, the first move waits for the start's result
    first.save(str(tmp_path / "searcher.json"))
    second = samos(seed=4, iterations=15, t0=0.5)
    second.restore(str(tmp_path / "searcher.json"))
    second.on_trial_complete("a", {"val_nme": penalty(decode_arch("multipath", config0["arch"]))})  # in flight at save
    rest = drive(second, penalty)[1]
    whole = drive(samos(seed=4, iterations=15, t0=0.5), penalty)
    assert [config0, *rest] == whole[1] and second.summary() == whole[0].summary()
    with pytest.raises(ValueError, match=r"differs in \['iterations', 'seed'\]"):
        samos(seed=5, iterations=16, t0=0.5).restore(str(tmp_path / "searcher.json"))


# -- arguments and the random baseline --------------------------------------------------------------------
def test_bad_arguments_are_reported_together():
    with pytest.raises(ValueError, match=r"iterations must be an integer >= 1, got 0; chains must be .*got 0"):
        samos(iterations=0, chains=0)
    with pytest.raises(ValueError, match=r"cooling must be in \(0, 1\], got 1.5; t0 must be a finite number > 0"):
        samos(cooling=1.5, t0=-1.0)
    with pytest.raises(ValueError, match="space must be a MultipathSpace"):
        SAMOSSearcher(space=None)
    with pytest.raises(ValueError, match="init is not a child of"):
        samos(init=PAPER.sample(np.random.default_rng(0)).to_json())
    with pytest.raises(ValueError, match="mode must be 'max' or 'min'"):
        samos(mode="down")


def test_init_starts_every_chain_there():
    penalty, target = make_penalty(SMALL)
    start = SMALL.sample(np.random.default_rng(123))
    searcher, configs = drive(samos(seed=0, iterations=12, chains=2, init=start.to_json()), penalty, slots=2)
    assert [c["arch"] for c in configs if c["step"] == 0] == [start.to_json()] * 2
    assert searcher.summary()["best_penalty"] <= penalty(start)


def test_random_baseline_runs_on_the_multipath_space():
    penalty, _ = make_penalty(SMALL)
    baseline = RandomArchSearcher(SMALL, num_samples=25, epochs=1, metric="val_nme", mode="min", seed=3)
    _, configs = drive(baseline, penalty, slots=3, order_seed=0)
    assert len(configs) == 25
    archs = [SMALL.from_json(c["arch"]) for c in configs]
    assert all(SMALL.contains(a) for a in archs) and len({a.key() for a in archs}) == 25
    assert baseline.summary() == {"evaluations": 25, "proposed": 25}
