"""benchmarks/monas_bench.py: registration in run.py's registry, result shape, the timing arithmetic.

Fast tests train nothing or one tiny supernet; the two that start Ray are marked slow.
"""

from __future__ import annotations

import json
import os
import sys
import threading
from pathlib import Path
from typing import Any

import pytest

from tests.benchmark_modules import load_benchmark_module

ROOT = Path(__file__).resolve().parents[1]
NAMES = {"oneshot_eval_throughput", "mnus_step_overhead", "train_scaling_2w"}
TINY_DATA = {"name": "faces3d", "image_size": 32, "n_train": 32, "n_val": 6, "n_test": 3, "seed": 0}


@pytest.fixture
def bench() -> Any:
    return load_benchmark_module("run", "facenas_benchmarks_run_under_test")


@pytest.fixture
def monas() -> Any:
    return load_benchmark_module("monas_bench", "facenas_benchmarks_monas_under_test")


def _hooks(monas: Any, bench: Any | None = None) -> Any:
    if bench is None:
        return monas.Hooks(two_node_cluster=None, progress=lambda *_: None, ray_env=lambda: None, local_ray=None,
                           spread=_spread())
    return monas.Hooks(two_node_cluster=bench._two_node_cluster, progress=bench._progress, ray_env=bench._ray_env,
                       local_ray=bench._local_ray, spread=bench.spread)


def _spread() -> Any:
    return load_benchmark_module("run", "facenas_benchmarks_run_for_spread").spread


# -- registration --------------------------------------------------------------------------------------


def test_run_py_registers_the_three_monas_benchmarks(bench):
    assert NAMES <= set(bench.BENCHMARKS)
    for name in NAMES:
        fn = bench.BENCHMARKS[name]
        assert callable(fn) and fn.__name__ == name  # run.py's duplicate message names the function


def test_a_second_install_raises_and_adds_nothing(bench, monas):
    before = dict(bench.BENCHMARKS)
    with pytest.raises(ValueError, match="'oneshot_eval_throughput' is already registered"):
        monas.install(bench.register, two_node_cluster=bench._two_node_cluster, progress=bench._progress,
                      ray_env=bench._ray_env, local_ray=bench._local_ray, spread=bench.spread)  # fmt: skip
    assert bench.BENCHMARKS == before


def test_install_into_an_empty_registry_adds_exactly_the_three(monas):
    registry: dict[str, Any] = {}

    def register(name: str):
        def add(fn):
            registry[name] = fn
            return fn

        return add

    monas.install(register, two_node_cluster=None, progress=lambda *_: None, ray_env=lambda: None, local_ray=None,
                  spread=_spread())
    assert set(registry) == NAMES == set(monas.NAMES)


def test_cli_lists_the_monas_names_for_an_unknown_one(tmp_path):
    import subprocess

    proc = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "run.py"), "--only", "nope", "--out", str(tmp_path / "o.json")],
        capture_output=True, text=True, cwd=tmp_path, timeout=60,
    )  # fmt: skip
    assert proc.returncode == 2
    assert all(name in proc.stderr for name in NAMES)


# -- helpers -------------------------------------------------------------------------------------------


def test_trial_timings_from_results_and_store_rows(monas, tmp_path):
    # One actor (pid 7): trials end at 10, 12, 15 after 3, 1.5 and 2 s; another (pid 8) ends at 14 after 4 s.
    trials = [("a", 7, 10.0, 3.0), ("b", 7, 12.0, 1.5), ("c", 7, 15.0, 2.0), ("d", 8, 14.0, 4.0)]
    for i, (key, pid, _end, seconds) in enumerate(trials):
        folder = tmp_path / f"trial_{i:04d}_x"
        folder.mkdir()
        rows = [{"arch_key": key, "time_total_s": seconds / 2, "pid": pid},
                {"arch_key": key, "time_total_s": seconds, "pid": pid}]  # fmt: skip
        (folder / "result.json").write_text("".join(json.dumps(r) + "\n" for r in rows))
    stored = [{"arch_key": key, "created_at": end} for key, _pid, end, _s in trials]
    t = monas._trial_timings(tmp_path, stored)
    assert t["span_s"] == pytest.approx(15.0 - 7.0)  # first start: 10 - 3
    assert t["first_trial_s"] == pytest.approx(3.0)
    assert t["steady_interval_s"] == pytest.approx(2.5)  # pid 7: 12-10, 15-12
    assert t["steady_trial_s"] == pytest.approx(1.75)
    assert t["steady_gap_s"] == pytest.approx(0.75)  # starts 10.5 and 13: gaps 0.5 and 1.0
    assert t["processes"] == 2


def test_trial_timings_of_batched_trials_are_per_child(monas, tmp_path):
    # One actor: a batch of 4 ends at 10 after 4 s, then one of 2 ends at 13 after 2 s (its last child at 13).
    for i, (keys, seconds) in enumerate([(["a", "b", "c", "d"], 4.0), (["e", "f"], 2.0)]):
        folder = tmp_path / f"trial_{i:04d}_x"
        folder.mkdir()
        last = {"arch_key": keys[0], "time_total_s": seconds, "pid": 7, "children": [{"arch_key": k} for k in keys]}
        (folder / "result.json").write_text(json.dumps(last) + "\n")
    ends = {"a": 8.0, "b": 9.0, "c": 9.5, "d": 10.0, "e": 12.0, "f": 13.0}
    t = monas._trial_timings(tmp_path, [{"arch_key": k, "created_at": v} for k, v in ends.items()])
    assert t["span_s"] == pytest.approx(13.0 - 6.0) and t["trials"] == 2 and t["first_trial_children"] == 4
    assert t["steady_interval_s"] == pytest.approx(1.5)  # (13 - 10) / 2 children
    assert t["steady_trial_s"] == pytest.approx(1.0) and t["steady_gap_s"] == pytest.approx(1.0)


def test_trial_timings_without_trials_raises(monas, tmp_path):
    with pytest.raises(RuntimeError, match="no finished trial"):
        monas._trial_timings(tmp_path, [])


def test_bare_loop_thread_runs_at_the_given_niceness_and_leaves_the_caller_alone(monas):
    def niceness() -> int:
        return os.getpriority(os.PRIO_PROCESS, threading.get_native_id())

    caller = niceness()
    assert monas._at_niceness(max(caller, 15), niceness) == max(caller, 15)
    assert niceness() == caller
    with pytest.raises(KeyError, match="boom"):
        monas._at_niceness(15, lambda: {}["boom"])


def test_children_are_distinct_and_the_same_every_time(monas):
    space = monas._space()
    first = monas._distinct_children(space, 24, seed=0)
    assert len({a.key() for a in first}) == 24
    assert [a.key() for a in first] == [a.key() for a in monas._distinct_children(space, 24, seed=0)]


def test_epoch_figures_are_read_from_the_checkpoints(monas, tmp_path):
    import torch

    for epoch, rate in ((1, 10.0), (2, 30.0)):
        folder = tmp_path / f"checkpoint_{epoch}"
        folder.mkdir()
        torch.save({"epoch": epoch, "metrics": {"epoch": epoch, "samples_per_s": rate, "allreduce_s": 0.5}},
                   folder / "state.pt")  # fmt: skip
    (tmp_path / "checkpoint_3").mkdir()
    torch.save({"epoch": 3, "metrics": {"epoch": 3}}, tmp_path / "checkpoint_3" / "state.pt")  # no rate: left out
    read = monas._epoch_metrics(tmp_path)
    assert {e: m["samples_per_s"] for e, m in read.items()} == {1: 10.0, 2: 30.0}
    assert read[2]["allreduce_s"] == 0.5


def test_the_scaling_factors_multiply_to_the_measured_ratio(monas):
    in_process = {monas._BATCH // 2: 60.0, monas._BATCH: 80.0}
    factors = monas._scaling_factors(in_process, one_worker=70.0, two_workers=91.0, allreduce_share=0.1)
    assert factors["half_batch"] == 0.75 and factors["allreduce"] == 0.9
    assert factors["contention"] == pytest.approx(91.0 / 2 / 0.9 / 60.0)
    assert factors["one_worker_in_ray"] == pytest.approx(80.0 / 70.0)
    assert factors["product"] == pytest.approx(91.0 / 70.0)  # the identity: the factors explain the ratio


# -- a tiny run: the contract's shape -------------------------------------------------------------------


def test_mnus_step_overhead_tiny_run_has_the_contract_shape(bench, monas, monkeypatch):
    monkeypatch.setattr(monas, "_DATA", TINY_DATA)
    monkeypatch.setitem(monas._SIZES, "mnus_step_overhead", ({"repeats": 1, "n_train": 32},) * 2)
    calls: list[str] = []
    hooks = monas.Hooks(two_node_cluster=None, progress=lambda *_: None, ray_env=lambda: calls.append("env"),
                        local_ray=None, spread=_spread())
    result = bench._check_result("mnus_step_overhead", monas.mnus_step_overhead(True, hooks=hooks))
    assert calls  # Ray's environment is set before the benchmark's imports can import Ray
    assert result["unit"] == "ratio" and result["goal"] == 0.7
    assert result["value"] > 0 and result["holds"] == (result["value"] >= 0.7)
    detail = result["detail"]
    assert detail["ratio_one_child"] > 0 and len(detail["rounds"]) == 1
    assert len(detail["children_params"]) == 4 and detail["gpu"].startswith("not measured")
    json.dumps(result, allow_nan=False)


# -- with Ray (slow) -----------------------------------------------------------------------------------


@pytest.mark.slow
def test_oneshot_eval_throughput_tiny_run(bench, monas, monkeypatch):
    monkeypatch.setattr(monas, "_DATA", TINY_DATA)
    monkeypatch.setitem(monas._SIZES, "oneshot_eval_throughput", ({"children": 5, "rounds": 2},) * 2)
    raw = monas.oneshot_eval_throughput(True, hooks=_hooks(monas, bench))
    result = bench._check_result("oneshot_eval_throughput", raw)
    detail = result["detail"]
    assert result["value"] > 0 and detail["trials_done"] == 5 and detail["cached"] == 0
    assert detail["scores_agree"] is True and detail["trial_processes"] == 1
    assert detail["orchestrator_span_s"] <= detail["stage_s"]
    assert detail["ratio"]["rounds"] == 2 and result["value"] == pytest.approx(detail["ratio"]["median"])
    # batched 4 + 1 as the random stage batches, and one child per trial in turn: 4 stages, 5 bare passes
    assert detail["children_per_trial"] == 4 and detail["one_child_per_trial"]["ratio"]["rounds"] == 2
    assert detail["ratio_steady_state_rounds"]["rounds"] == 2
    assert len(detail["bare_s_passes"]) == 5


@pytest.mark.slow
def test_train_scaling_2w_tiny_run_places_two_workers_on_two_nodes(bench, monas, monkeypatch):
    monkeypatch.setattr(monas, "_DATA", TINY_DATA)
    monkeypatch.setitem(monas._SIZES, "train_scaling_2w", ({"n_train": 64, "epochs": 2, "order": (1, 2)},) * 2)
    result = bench._check_result("train_scaling_2w", monas.train_scaling_2w(True, hooks=_hooks(monas, bench)))
    detail = result["detail"]
    assert result["value"] > 0 and detail["one_worker_per_node"] is True
    two = next(r for r in detail["runs"] if r["workers"] == 2)
    assert two["worker_nodes"] == ["head", "worker"] and two["weights_identical"] is True
    assert set(two["samples_per_s_by_epoch"]) == {"1", "2"}
    one = next(r for r in detail["runs"] if r["workers"] == 1)
    assert one["allreduce_share"] == 0.0 and 0.0 < two["allreduce_share"] < 1.0  # the collective ran, and took time
    assert detail["ceiling"]["product"] == pytest.approx(detail["ratio_of_medians"])
    assert detail["ratio"]["rounds"] == 1 and result["value"] == pytest.approx(detail["ratio"]["median"])
