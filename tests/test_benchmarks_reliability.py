"""benchmarks/reliability_bench.py: registered in run.py's registry, result shape, quick runs of both.

The quick runs start a local Ray each (marked integration and slow); their figures are checked for
shape and consistency, not for the goal (timings on a shared 2-core machine are noisy).
"""

from __future__ import annotations

import math
from typing import Any

import pytest

from tests.benchmark_modules import load_benchmark_module

NAMES = {"searcher_overhead", "store_throughput", "store_lookups"}


@pytest.fixture(scope="module")
def bench() -> Any:
    return load_benchmark_module("run", "facenas_benchmarks_run_under_test_rel")


@pytest.fixture(scope="module")
def reliability() -> Any:
    return load_benchmark_module("reliability_bench", "facenas_benchmarks_reliability_under_test")


def _hooks(reliability: Any, bench: Any) -> Any:
    return reliability.Hooks(progress=bench._progress, ray_env=bench._ray_env, local_ray=bench._local_ray,
                             spread=bench.spread)


def test_run_py_registers_all_three(bench):
    assert NAMES <= set(bench.BENCHMARKS)
    for name in NAMES:
        assert bench.BENCHMARKS[name].__name__ == name


def test_a_second_install_raises(bench, reliability):
    before = dict(bench.BENCHMARKS)
    with pytest.raises(ValueError, match="already registered"):
        reliability.install(bench.register, progress=bench._progress, ray_env=bench._ray_env,
                            local_ray=bench._local_ray, spread=bench.spread)
    assert bench.BENCHMARKS == before


def test_trivial_trial_score_is_deterministic(reliability, monkeypatch):
    from ray import tune

    seen = []
    monkeypatch.setattr(tune, "report", lambda metrics: seen.append(metrics))
    reliability.trivial_trial({"arch": '{"a": 1}'}, metric="val_acc")
    reliability.trivial_trial({"arch": '{"a": 1}'}, metric="val_acc")
    reliability.trivial_trial({"x": 0.5}, metric="val_nme")
    assert seen[0] == seen[1] and 0 <= seen[0]["val_acc"] < 100 and "val_nme" in seen[2]


@pytest.mark.integration
@pytest.mark.slow
def test_searcher_overhead_quick(bench, reliability):
    result = reliability.searcher_overhead(
        True, hooks=_hooks(reliability, bench), sizes={"trials": 6, "rounds": 3}, searchers=("random", "samos")
    )
    assert set(result) == set(bench.RESULT_KEYS)
    per = result["detail"]["searchers"]
    assert set(per) == {"random", "samos"}
    for kind, figures in per.items():
        rows = figures["rounds"]
        assert len(rows) == 3 and [r["first"] for r in rows] == ["facenas", "tune_random", "facenas"]
        for row in rows:
            assert row["trials"] >= 2
            assert math.isclose(row["ratio"], row["facenas_s_per_trial"] / row["tune_random_s_per_trial"])
            assert 0 < row["searcher_share"] < 1 and set(row["searcher_calls_s_per_trial"]) >= {"suggest", "save"}
            assert 0 < row["concurrency"] <= 2.05 and 0 < row["concurrency_tune_random"] <= 2.05  # 2 CPUs, 1 each
        spread = figures["ratio"]
        assert spread["rounds"] == 3 and spread["min"] <= spread["median"] == figures["median_ratio"] <= spread["max"]
        assert sorted(spread["values"]) == sorted(r["ratio"] for r in rows)
    assert result["value"] == max(f["median_ratio"] for f in per.values())
    assert result["detail"]["spread_worst"] == per[result["detail"]["worst"]]["ratio"]
    assert result["holds"] == (result["value"] <= 1.05)
    assert per["random"]["rounds"][0]["trials"] == 6


@pytest.mark.integration
@pytest.mark.slow
def test_store_throughput_quick(bench, reliability):
    sizes = {"prefill": 50, "batches": 2, "batch": 5, "singles": 2}
    result = reliability.store_throughput(True, hooks=_hooks(reliability, bench), sizes=sizes)
    checked = bench._check_result("store_throughput", result)
    detail = checked["detail"]
    assert detail["clients"] == 8
    assert checked["value"] == pytest.approx(detail["batched_rows_per_s"]) and checked["value"] > 0
    assert detail["single_row_puts_per_s"] > 0
    assert checked["holds"] == (checked["value"] >= checked["goal"])


@pytest.mark.integration
@pytest.mark.slow
def test_store_lookups_quick(bench, reliability):
    sizes = {"prefill": 100, "keys": 40, "batch": 10, "singles": 5, "rounds": 3}
    checked = bench._check_result("store_lookups", reliability.store_lookups(True, hooks=_hooks(reliability, bench),
                                                                             sizes=sizes))
    detail = checked["detail"]
    many, single = detail["lookup_many_keys_per_s"], detail["single_lookup_keys_per_s"]
    assert many["rounds"] == single["rounds"] == 3 and checked["value"] == pytest.approx(many["median"])
    assert many["min"] <= many["median"] <= many["max"] and single["median"] > 0
    # Every lookup was answered and found (the clients raise otherwise): 8 clients x (40 + 5) keys x 3 rounds.
    assert detail["store_stats"] == {"rows": 100, "lookups": 8 * 45 * 3, "hits": 8 * 45 * 3, "puts": 100}
    assert checked["holds"] == (checked["value"] >= 5000)
