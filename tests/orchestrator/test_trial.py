"""The one trial sequence (orchestrator.trial): lookup -> checkpointed fit -> finite check -> record -> report.

No Ray: the store is a real BenchmarkStore on a temporary folder (its puts logged) and the report
function appends to the same log, so the order of store writes and reports is visible.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from typing import Any

import pytest

from orchestrator.store import BenchmarkStore, protocol_of
from orchestrator.trial import StoreKey, TrialSequence, lookup, require_finite

TRAINING = {"lr": 0.025, "batch_size": 16}
CONFIG = {"arch": {"d": 3}, "epochs": 2, "training": TRAINING}
BASE = {"arch": '{"d": 3}', "arch_key": "k1", "epochs": 2, "stage": "search"}


class _LoggedStore(BenchmarkStore):
    def __init__(self, root: str, log: list) -> None:
        super().__init__(root)
        self.log = log

    def put(self, row: Any) -> bool:
        self.log.append(("put", dict(row)))
        return super().put(row)


def _key(training: dict[str, Any] = TRAINING) -> StoreKey:
    return StoreKey.trained(space="global", arch_key="k1", dataset_id="digits", fidelity=2, seed=0, training=training)


def _sequence(store: Any, log: list, **changes: Any) -> TrialSequence:
    options = dict(base=BASE, metric="val_acc", store=store, key=_key(), config=CONFIG, run_name="r",
                   report=lambda metrics: log.append(("report", metrics)))
    return TrialSequence(**{**options, **changes})


def _two_epochs(calls: list):
    def fit(epoch, resume):
        calls.append(resume)
        epoch({"epoch": 1, "val_acc": 50.0}, {"epoch": 1})
        final = {"epoch": 2, "val_acc": 80.0}
        epoch(final, {"epoch": 2}, last=True)
        return final

    return fit


def _reports(log: list) -> list[dict[str, Any]]:
    return [entry for kind, entry in log if kind == "report"]


def test_the_key_is_the_stores_key_and_its_protocol_is_the_stores(tmp_path):
    key = _key()
    assert key.protocol == protocol_of(CONFIG) and len(key.protocol) == 16
    assert key.lookup_args() == ("global", "k1", "digits", 2, 0, key.protocol)
    store = BenchmarkStore(str(tmp_path))
    store.put(key.row(config=CONFIG, metrics={"val_acc": 1.0}, cost_s=0.5, run="r", created_at=1.0))
    assert store.lookup(*key.lookup_args())["protocol"] == key.protocol
    with pytest.raises(ValueError, match="protocol"):  # a row its own key could never find
        key.row(config={**CONFIG, "training": {"lr": 0.1}}, metrics={}, cost_s=0.0, run="r", created_at=1.0)
    with pytest.raises(Exception):  # frozen: a key is a value
        key.seed = 1  # type: ignore[misc]


def test_a_miss_fits_once_and_records_before_the_final_report(tmp_path):
    log: list = []
    calls: list = []
    store = _LoggedStore(str(tmp_path), log)
    assert _sequence(store, log).run(_two_epochs(calls)) == "ok"
    assert calls == [None]
    assert [kind for kind, _ in log] == ["report", "put", "report"]
    first, final = _reports(log)
    assert first == {"epoch": 1, "val_acc": 50.0, **BASE, "cached": False, "status": "ok", "error": ""}
    assert final == {"epoch": 2, "val_acc": 80.0, **BASE, "cached": False, "status": "ok", "error": ""}
    row = log[1][1]
    assert (row["space"], row["arch_key"], row["dataset_id"], row["fidelity"], row["seed"]) == ("global", "k1", "digits", 2, 0)
    assert row["run"] == "r" and row["cost_s"] >= 0


def test_a_hit_is_served_without_fitting_and_a_hit_of_another_protocol_is_not(tmp_path):
    log: list = []
    store = _LoggedStore(str(tmp_path), log)
    _sequence(store, log).run(_two_epochs([]))
    log.clear()

    def no_fit(epoch, resume):
        raise AssertionError("a stored evaluation must not train")

    assert _sequence(store, log).run(no_fit) == "cached"
    assert log == [("report", {"epoch": 2.0, "val_acc": 80.0, **BASE, "cached": True, "status": "ok", "error": ""})]
    log.clear()
    other = {"lr": 0.1, "batch_size": 16}
    outcome = _sequence(store, log, key=_key(other), config={**CONFIG, "training": other}).run(_two_epochs([]))
    assert outcome == "ok" and [kind for kind, _ in log] == ["report", "put", "report"]


def test_a_divergence_is_one_failed_report_and_no_row(tmp_path):
    log: list = []
    store = _LoggedStore(str(tmp_path), log)

    def diverge(epoch, resume):
        epoch({"epoch": 1, "val_acc": 50.0})
        raise FloatingPointError("loss is nan at epoch 2")

    assert _sequence(store, log).run(diverge) == "failed"
    failed = _reports(log)[-1]
    assert math.isnan(failed.pop("val_acc"))
    assert failed == {**BASE, "cached": False, "status": "failed", "error": "loss is nan at epoch 2"}
    assert store.count() == 0 and [kind for kind, _ in log] == ["report", "report"]


def test_declared_failures_fail_and_other_exceptions_propagate(tmp_path):
    log: list = []
    store = _LoggedStore(str(tmp_path), log)

    def broken(epoch, resume):
        raise KeyError("no such fold")

    with pytest.raises(KeyError):
        _sequence(store, log).run(broken)
    assert log == []
    assert _sequence(store, log, failures=(KeyError,), failed_fields={"arch": ""}).run(broken) == "failed"
    [failed] = _reports(log)
    assert failed["status"] == "failed" and failed["arch"] == "" and "no such fold" in failed["error"]
    assert store.count() == 0


def test_a_non_finite_metric_is_a_failed_evaluation_and_no_row(tmp_path):
    log: list = []
    store = _LoggedStore(str(tmp_path), log)
    check = require_finite("val_acc", error="val_acc is not finite")
    outcome = _sequence(store, log, check=check).run(lambda epoch, resume: {"val_acc": math.inf, "params": 3.0})
    assert outcome == "failed" and store.count() == 0
    [failed] = _reports(log)
    assert math.isnan(failed["val_acc"]) and failed["params"] == 3.0
    assert failed["status"] == "failed" and failed["error"] == "val_acc is not finite"
    assert require_finite(error="x")({"a": 1.0, "b": math.nan}) == "x"
    assert require_finite("a", error="x")({"a": 1.0, "b": math.nan}) is None
    assert require_finite("c", error="x")({"a": 1.0}) == "x"  # missing counts as not finite


def _dying_fit(tries: list, *, state_metrics: bool) -> Callable:
    """A 3-epoch fit whose first try dies after epoch 2 (not a failed evaluation: Tune retries the trial);
    with ``state_metrics`` its saved states hold the epoch's metrics, as the candidates' do."""

    def fit(epoch, resume):
        tries.append(resume)
        start = 1 if resume is None else int(resume["epoch"]) + 1
        result: dict[str, Any] = {}
        for e in range(start, 4):
            result = {"epoch": e, "val_acc": 10.0 * e, **({"epochs": 3} if state_metrics else {})}
            epoch(result, {"epoch": e, **({"metrics": result} if state_metrics else {})}, last=e == 3)
            if e == 2 and len(tries) == 1:
                raise RuntimeError("node died")
        return result

    return fit


@pytest.mark.parametrize("state_metrics", [False, True])
def test_a_retry_after_a_crash_continues_from_the_checkpoint(tmp_path, state_metrics):
    log: list = []
    store = _LoggedStore(str(tmp_path / "store"), log)
    tries: list = []
    fit = _dying_fit(tries, state_metrics=state_metrics)
    sequence = _sequence(store, log, checkpoint=str(tmp_path / "stage" / "_checkpoints" / "k1.pt"))
    with pytest.raises(RuntimeError):
        sequence.run(fit)
    assert store.count() == 0
    assert sequence.run(fit) == "ok"
    assert [None if t is None else t["epoch"] for t in tries] == [None, 2]
    reports = [(r["epoch"], r.get("replayed", False)) for r in _reports(log)]
    if state_metrics:  # the retry first reports the saved epoch again, marked: nothing trains twice
        assert reports == [(1, False), (2, False), (2, True), (3, False)]
        assert _reports(log)[2]["val_acc"] == 20.0 and _reports(log)[2]["status"] == "ok"
    else:  # nothing to replay: epoch 3 only, after the retry
        assert reports == [(1, False), (2, False), (3, False)]
    assert store.lookup(*_key().lookup_args())["metrics"]["val_acc"] == 30.0


def test_a_fit_resumed_after_its_last_epoch_is_finished_once_and_settled_before_the_report(tmp_path):
    log: list = []
    store = _LoggedStore(str(tmp_path), log)

    def settle(metrics, cached):
        log.append(("settle", cached))

    outcome = _sequence(store, log, settle=settle).run(lambda epoch, resume: {"epoch": 2, "val_acc": 70.0})
    assert outcome == "ok" and [kind for kind, _ in log] == ["put", "settle", "report"]
    log.clear()
    assert _sequence(store, log, settle=settle).run(_two_epochs([])) == "cached"
    assert log[0] == ("settle", True) and [kind for kind, _ in log] == ["settle", "report"]


def test_no_key_reports_without_the_store_and_shown_and_stored_shape_the_reports(tmp_path):
    log: list = []
    outcome = TrialSequence(base=BASE, metric="val_acc", report=lambda m: log.append(("report", m)),
                            shown=lambda m: {"shown": float(m["val_acc"])}).run(_two_epochs([]))
    assert outcome == "ok"
    assert [r["shown"] for r in _reports(log)] == [50.0, 80.0]
    log.clear()
    store = _LoggedStore(str(tmp_path), log)
    _sequence(store, log, stored=lambda m: {"kept": m["val_acc"]}, accept=lambda m: "kept" in m).run(_two_epochs([]))
    assert store.lookup(*_key().lookup_args())["metrics"] == {"kept": 80.0}
    log.clear()
    # a stored row the method cannot use (accept fails) is trained again
    outcome = _sequence(store, log, accept=lambda m: "predicted" in m).run(_two_epochs([]))
    assert outcome == "ok" and [kind for kind, _ in log] == ["report", "put", "report"]


class _FakeStore:
    def __init__(self, row):
        self.row = row

    def lookup(self, *key):
        return self.row


def test_a_stored_result_of_another_training_protocol_is_not_served():
    row = {"config": json.dumps({"arch": {}, "epochs": 3, "training": {"lr": 0.025}}), "metrics": {"val_acc": 90.0}}
    key = StoreKey("global", "k", "d", 3, 0)
    assert lookup(_FakeStore(row), key, training={"lr": 0.025}) is row
    assert lookup(_FakeStore(row), key, training={"lr": 0.1}) is None
    assert lookup(_FakeStore(None), key, training={"lr": 0.025}) is None


def test_a_state_saved_at_the_last_epoch_or_without_metrics_is_not_replayed():
    from orchestrator.trial import _replayed_report

    assert _replayed_report({"epoch": 3, "metrics": {"epoch": 3, "epochs": 3}}) is None  # finished, not replayed
    assert _replayed_report({"epoch": 2}) is None and _replayed_report(None) is None
    assert _replayed_report({"metrics": {"epoch": 2, "epochs": 3, "val_acc": 1.0}}) == {"epoch": 2, "epochs": 3, "val_acc": 1.0}


def test_run_children_runs_a_plain_config_once_and_a_batch_child_by_child_with_one_report() -> None:
    from orchestrator.trial import run_children

    def evaluate(config: dict[str, Any], report: Callable[[dict[str, Any]], None]) -> None:
        value = config["v"]
        if value is None:
            return  # reported nothing
        report({"val_nme": math.nan, "status": "failed", "error": "diverged"} if value == "nan" else
               {"val_nme": value, "arch": config["arch"], "status": "ok"})

    reports: list[dict[str, Any]] = []
    run_children({"arch": "p", "v": 2.0}, evaluate, metric="val_nme", mode="min", report=reports.append)
    assert reports == [{"val_nme": 2.0, "arch": "p", "status": "ok"}]

    reports.clear()
    batch = {"children": [{"arch": "a", "v": 5.0}, {"arch": "b", "v": "nan"}, {"arch": "c", "v": 3.0},
                          {"arch": "d", "v": 3.0}, {"arch": "e", "v": None}]}  # fmt: skip
    run_children(batch, evaluate, metric="val_nme", mode="min", report=reports.append)
    assert len(reports) == 1
    (one,) = reports
    assert [c.get("arch") for c in one["children"]] == ["a", None, "c", "d", None]
    assert one["arch"] == "c" and one["val_nme"] == 3.0  # the best child (the earliest of a tie) on top
    assert one["children"][4]["status"] == "failed" and math.isnan(one["children"][4]["val_nme"])

    reports.clear()
    run_children({"children": [{"arch": "x", "v": "nan"}]}, evaluate, metric="val_nme", mode="max",
                 report=reports.append)  # fmt: skip
    assert reports[0]["status"] == "failed" and math.isnan(reports[0]["val_nme"])  # none finite: the first child's
