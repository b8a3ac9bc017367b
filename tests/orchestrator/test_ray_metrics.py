"""orchestrator.ray_metrics without Ray: what a trial counts as, the stage's figures, the store's, and the
callback's records (Ray's metric objects replaced by recorders). The figures on Ray's real metrics
endpoint are checked in tests/test_dashboard.py."""

from __future__ import annotations

import math
import pickle
from types import SimpleNamespace
from typing import Any

import pytest

from orchestrator import ray_metrics
from orchestrator.ray_metrics import METRICS, RayMetrics, StageFigures, store_figures, trial_value
from orchestrator.store import StoreClient


@pytest.mark.parametrize(("result", "expected"), [
    ({"val_acc": 71.5}, 71.5),
    ({"val_acc": 3}, 3.0),
    ({"val_acc": 71.5, "status": "failed"}, None),
    ({"val_acc": math.nan}, None),
    ({"val_acc": math.inf}, None),
    ({"val_acc": -math.inf}, None),
    ({"val_acc": True}, None),
    ({"val_acc": "71"}, None),
    ({}, None),
])
def test_trial_value_is_none_for_what_best_json_leaves_out(result, expected):
    assert trial_value(result, "val_acc") == expected


@pytest.mark.parametrize(("mode", "best"), [("max", 80.0), ("min", 10.0)])
def test_stage_figures_count_every_ended_trial_and_keep_the_best_by_mode(mode, best):
    figures = StageFigures(mode)
    for value in (50.0, None, 80.0, 10.0, None):
        figures.add(value)
    assert (figures.finished, figures.failed, figures.best) == (5, 2, best)


def test_stage_figures_without_a_success_have_no_best():
    figures = StageFigures("max")
    figures.add(None)
    assert (figures.finished, figures.failed, figures.best) == (1, 1, None)


def test_store_figures_from_stats_with_misses_derived():
    assert store_figures({"rows": 7, "lookups": 5, "hits": 2, "puts": 3}) == {
        "facenas_store_rows": 7.0, "facenas_store_lookups": 5.0, "facenas_store_hits": 2.0,
        "facenas_store_misses": 3.0, "facenas_store_puts": 3.0,
    }


def test_store_figures_leave_out_what_is_missing_or_not_a_number():
    assert store_figures({"rows": 4, "hits": "2", "lookups": None}) == {"facenas_store_rows": 4.0}
    assert store_figures({}) == {}


def test_every_figure_is_declared_with_the_documented_names_and_tags():
    for name, (kind, tags, description) in METRICS.items():
        assert name.startswith("facenas_") and kind in ("counter", "gauge") and description
        assert tags == (("stage", "run") if name.startswith(("facenas_trials", "facenas_best")) else ("run",))
    assert set(store_figures({"rows": 1, "lookups": 1, "hits": 1, "puts": 1})) <= set(METRICS)


class _Recorder:
    """Stands in for a Ray Counter/Gauge: keeps what was recorded."""

    def __init__(self, name: str, log: list) -> None:
        self.name, self.log = name, log

    def inc(self, value: float, tags: dict[str, str]) -> None:
        self.log.append(("inc", self.name, value, tags))

    def set(self, value: float, tags: dict[str, str]) -> None:
        self.log.append(("set", self.name, value, tags))


class _Store:
    def __init__(self, stats: Any) -> None:
        self._stats = stats

    def stats(self) -> dict[str, int]:
        if isinstance(self._stats, Exception):
            raise self._stats
        return self._stats


@pytest.fixture
def records(monkeypatch) -> list:
    log: list = []
    monkeypatch.setattr(ray_metrics, "_instrument", lambda name: _Recorder(name, log))
    return log


def _trial(result: dict[str, Any]) -> SimpleNamespace:
    return SimpleNamespace(last_result=result, trial_id="t", config={})


def test_callback_records_finished_failed_and_best_with_stage_and_run_tags(records):
    cb = RayMetrics(stage="search", run="quick", metric="val_acc", mode="max")
    cb.on_trial_complete(0, [], _trial({"val_acc": 60.0}))
    cb.on_trial_complete(0, [], _trial({"val_acc": 50.0}))  # not better: the gauge keeps 60
    cb.on_trial_complete(0, [], _trial({"val_acc": math.nan}))
    cb.on_trial_error(0, [], _trial({}))
    tags = {"stage": "search", "run": "quick"}
    assert [r for r in records if r[1] == "facenas_trials_finished"] == [("inc", "facenas_trials_finished", 1, tags)] * 4
    assert [r for r in records if r[1] == "facenas_trials_failed"] == [("inc", "facenas_trials_failed", 1, tags)] * 2
    assert [r for r in records if r[1] == "facenas_best_value"] == [("set", "facenas_best_value", 60.0, tags)]
    assert not [r for r in records if r[1].startswith("facenas_store")]  # no store given


def test_callback_exports_the_store_figures_tagged_with_the_run(records):
    cb = RayMetrics(stage="search", run="quick", metric="val_acc", mode="min",
                    store=_Store({"rows": 3, "lookups": 4, "hits": 1, "puts": 3}))
    cb.on_experiment_end([])
    assert {r[1]: r[2] for r in records} == {
        "facenas_store_rows": 3.0, "facenas_store_lookups": 4.0, "facenas_store_hits": 1.0,
        "facenas_store_misses": 3.0, "facenas_store_puts": 3.0,
    }
    assert all(r[3] == {"run": "quick"} for r in records)


def test_callback_reads_the_store_at_most_every_few_seconds_between_trials(records, monkeypatch):
    clock = [1000.0]
    monkeypatch.setattr(ray_metrics.time, "monotonic", lambda: clock[0])
    cb = RayMetrics(stage="s", run="r", metric="m", mode="max", store=_Store({"rows": 1}))
    cb.on_step(0, [])
    cb.on_step(1, [])
    clock[0] += ray_metrics._STORE_EVERY_S
    cb.on_step(2, [])
    assert len(records) == 2


def test_a_failing_store_or_metric_never_stops_the_run(monkeypatch):
    cb = RayMetrics(stage="s", run="r", metric="m", mode="max", store=_Store(RuntimeError("actor restarting")))
    cb.on_experiment_end([])  # the store's error is swallowed

    def broken(name: str) -> Any:
        raise RuntimeError("no metrics agent")

    monkeypatch.setattr(ray_metrics, "_instrument", broken)
    cb.on_trial_complete(0, [], _trial({"m": 1.0}))
    assert cb.figures.finished == 1 and cb.figures.best == 1.0


def test_callback_pickles_as_tune_saves_it_and_its_store_calls_give_up_quickly(tmp_path):
    store = StoreClient(str(tmp_path / "benchmark"))
    cb = RayMetrics(stage="search", run="quick", metric="val_acc", mode="max", store=store)
    back = pickle.loads(pickle.dumps(cb))
    assert back.store.name == store.name and back.store.root == store.root
    assert back.store.retry_s == ray_metrics._STORE_RETRY_S < store.retry_s  # the pipeline's client keeps its minute
