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


def test_a_batched_trial_gives_a_row_per_child_in_order_and_a_crash_fails_each_child():
    from types import SimpleNamespace

    from orchestrator.results import rows_from_result_grid

    def child(key: str, value: float, **more) -> dict:
        return {"arch": f'"{key}"', "arch_key": key, "val_nme": value, "params": 7.0, "status": "ok", **more}

    batch = SimpleNamespace(
        path="/r/search/trial_0001_b", error=None,
        config={"children": [{"arch": '"a"', "epochs": 0}, {"arch": '"b"', "epochs": 0}, {"arch": '"c"', "epochs": 0}]},
        metrics={**child("a", 4.0), "trial_id": "b", "time_total_s": 1.0,
                 "children": [child("a", 4.0), child("b", float("nan"), status="failed", error="diverged")]},
    )  # the third child has no result
    crashed = SimpleNamespace(path="/r/search/trial_0002_c", error=RuntimeError("actor died\nOOM"),
                              config={"children": [{"arch": '"d"'}, {"arch": '"e"'}]}, metrics={})
    plain = SimpleNamespace(path="/r/search/trial_0000_a", error=None, config={"arch": '"z"', "epochs": 0},
                            metrics={**child("z", 3.0), "trial_id": "a", "time_total_s": 1.0})
    rows = rows_from_result_grid([batch, crashed, plain], stage="random", metric="val_nme")
    # a crashed trial reported no trial_id: its folder's name
    assert [r["trial_id"] for r in rows] == ["a", "b/0", "b/1", "b/2", "trial_0002_c/0", "trial_0002_c/1"]
    assert [r["status"] for r in rows] == ["ok", "ok", "failed", "failed", "failed", "failed"]
    assert [r["arch"] for r in rows] == ['"z"', '"a"', '"b"', '"c"', '"d"', '"e"']
    assert rows[1]["value"] == 4.0 and rows[1]["params"] == 7 and "time_total_s" not in rows[1]["metrics"]
    assert rows[2]["error"] == "diverged"
    assert rows[3]["error"] == "the trial reported no result for this child"
    assert rows[4]["error"] == rows[5]["error"] == "OOM"


def test_a_trial_killed_before_its_first_result_keeps_its_config_from_params_json(tmp_path):
    """A worker SIGKILLed before Tune fetched any result leaves ``Result.config`` empty (no report to read
    it from); its row still names what it evaluated, from the ``params.json`` Tune wrote at trial start.
    A batched trial killed that way still fails each of its children."""
    import json
    from types import SimpleNamespace

    from orchestrator.results import rows_from_result_grid

    plain_dir, batch_dir = tmp_path / "trial_0000_a", tmp_path / "trial_0001_b"
    for folder, config in ((plain_dir, {"arch": '"z"', "epochs": 3}),
                           (batch_dir, {"children": [{"arch": '"d"'}, {"arch": '"e"'}]})):
        folder.mkdir()
        (folder / "params.json").write_text(json.dumps(config))
    killed = [SimpleNamespace(path=str(folder), error=RuntimeError("The actor died unexpectedly"), config=None,
                              metrics={"trial_id": folder.name.split("_")[-1]}) for folder in (plain_dir, batch_dir)]
    missing = SimpleNamespace(path=str(tmp_path / "trial_0002_c"), error=RuntimeError("died"), config=None, metrics={})
    rows = rows_from_result_grid(killed + [missing], stage="search", metric="val_acc")
    assert [(r["trial_id"], r["arch"], r["epochs"]) for r in rows] == [
        ("a", '"z"', 3), ("b/0", '"d"', 0), ("b/1", '"e"', 0), ("trial_0002_c", "", 0)]
    assert {r["status"] for r in rows} == {"failed"}
    assert all("died" in r["error"] for r in rows)
