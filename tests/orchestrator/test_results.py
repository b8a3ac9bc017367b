"""``orchestrator.results``: the best evaluation of a results table."""

from __future__ import annotations

import pandas as pd

from orchestrator.results import completed_rows, pick_best, stopped_after


def results_frame(rows: list[dict]) -> pd.DataFrame:
    """A results table of ok rows of 10 parameters, each row's own values on top."""
    base = {"status": "ok", "params": 10, "arch_key": "k", "test_acc": 0.0}
    return pd.DataFrame([{**base, **r} for r in rows])


def test_pick_best_skips_failures_and_breaks_ties_deterministically():
    frame = results_frame([
        {"value": 95.0, "params": 500, "arch_key": "b"},
        {"value": 95.0, "params": 100, "arch_key": "c"},
        {"value": 99.0, "status": "failed"},
        {"value": float("nan")},
        {"value": 95.0, "params": 100, "arch_key": "a"},
    ])
    assert pick_best(frame, mode="max")["arch_key"] == "a"
    assert pick_best(results_frame([{"value": 1.0, "status": "failed"}]), mode="max") is None


def test_a_row_a_scheduler_stopped_is_never_the_completed_best():
    frame = results_frame([
        {"value": 0.9, "arch_key": "stopped", "epochs": 2, "error": "stopped early by asha after 2 of 6 epochs"},
        {"value": 0.5, "arch_key": "full", "epochs": 6, "error": ""},
    ])
    assert pick_best(frame, mode="max")["arch_key"] == "stopped"  # plain: the best row whatever its training
    assert pick_best(frame, mode="max", completed=True)["arch_key"] == "full"
    assert list(completed_rows(frame)["arch_key"]) == ["full"]
    assert [stopped_after(r) for r in frame.to_dict("records")] == [2, None]
