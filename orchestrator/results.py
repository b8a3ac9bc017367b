"""Run outputs with a contract: ``results.parquet`` (one row per evaluation) and ``best.json``.

Both are written durably by :mod:`search_algos.durable` (temp file, fsync, rename, fsync the folder): a
reader never sees half a file, and a killed driver leaves either the old file or the new one.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pandas as pd

from search_algos.batch import CHILDREN_KEY, child_id
from search_algos.durable import write_durable, write_json_durable

__all__ = [
    "RESULT_COLUMNS",
    "STOPPED_EARLY",
    "completed_rows",
    "pick_best",
    "stopped_after",
    "rows_from_result_grid",
    "write_json_atomic",
    "write_parquet_atomic",
]

RESULT_COLUMNS = (
    "stage",
    "trial_id",
    "arch_key",
    "arch",
    "metric",
    "value",
    "params",
    "epochs",
    "cached",
    "status",
    "error",
    "test_acc",
    "dataset_id",
    "metrics",
)

# Tune's bookkeeping keys: not part of an evaluation's own metrics.
_TUNE_KEYS = {
    "timestamp", "checkpoint_dir_name", "done", "training_iteration", "trial_id", "date", "time_this_iter_s",
    "time_total_s", "pid", "hostname", "node_ip", "config", "time_since_restore", "iterations_since_restore",
    "experiment_tag", "should_checkpoint",
}  # fmt: skip


def _own_metrics(m: dict[str, Any]) -> str:
    """The evaluation's numeric metrics (and nested dicts of them, e.g. NME by yaw bin) as JSON."""
    out: dict[str, Any] = {}
    for key, value in m.items():
        if key in _TUNE_KEYS or isinstance(value, bool):
            continue
        if isinstance(value, (int, float)):
            out[key] = float(value) if math.isfinite(float(value)) else None
        elif isinstance(value, dict) and all(isinstance(v, (int, float)) for v in value.values()):
            out[key] = {k: (float(v) if math.isfinite(float(v)) else None) for k, v in value.items()}
    return json.dumps(out, sort_keys=True)


def write_json_atomic(payload: Any, path: Path) -> None:
    """Write a run's JSON file (``best.json``, ``stage.json``, ...): indented, sorted keys, strict JSON.

    Creates the folder if needed; the write itself is :func:`search_algos.durable.write_json_durable`.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    write_json_durable(path, payload)


def write_parquet_atomic(frame: pd.DataFrame, path: Path) -> None:
    """Write a run's Parquet table (``results.parquet``, a stage's evaluations) without the index.

    Creates the folder if needed; the write itself is :func:`search_algos.durable.write_durable`.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    write_durable(path, lambda fh: frame.to_parquet(fh, index=False))


def _float(value: Any) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return math.nan


def _count(value: Any) -> int:
    number = _float(value)
    return int(number) if math.isfinite(number) else 0


def _trial_order(path: str) -> tuple[int, str]:
    # Trial folders are named trial_<index>_<id> (pipeline.trial_dirname): sort by creation index.
    parts = Path(path).name.split("_")
    if len(parts) >= 3 and parts[0] == "trial" and parts[1].isdigit():
        return int(parts[1]), path
    return 1 << 30, path


def _trial_config(result: Any) -> dict[str, Any]:
    """The config of one trial of a result grid.

    Tune's ``Result.config`` is read from the trial's last report. A trial whose worker died before Tune
    fetched even its auto-filled first result (a SIGKILL, the kernel's OOM killer) has none: its config is
    then the ``params.json`` Tune wrote in the trial's folder when it started the trial.
    """
    config = getattr(result, "config", None)
    if config:
        return dict(config)
    params = Path(str(result.path)) / "params.json"
    try:
        loaded = json.loads(params.read_text())
    except (OSError, ValueError):  # no folder (a trial that never started) or a torn file: no config
        return {}
    return loaded if isinstance(loaded, dict) else {}


def rows_from_result_grid(grid: Any, *, stage: str, metric: str) -> list[dict[str, Any]]:
    """One row per trial of a finished Tune experiment, in trial creation order.

    A batched trial (``search_algos.batch``: a ``children`` list in its config and its report) gives one row
    per child, in the batch's order, with the trial id ``"<trial_id>/<i>"``; a trial that crashed fails
    every child of its batch.
    """
    rows: list[tuple[tuple[int, str], int, dict[str, Any]]] = []
    for result in grid:
        m = dict(result.metrics or {})
        config = _trial_config(result)
        trial_id = str(m.get("trial_id") or Path(result.path).name)
        crash = ""
        if result.error is not None:
            lines = [ln for ln in str(result.error).strip().splitlines() if ln.strip()]
            crash = lines[-1] if lines else type(result.error).__name__
        order = _trial_order(result.path)
        if CHILDREN_KEY not in config:
            rows.append((order, 0, _row(m, config, stage=stage, trial_id=trial_id, metric=metric, crash=crash)))
            continue
        reports = m.get(CHILDREN_KEY) or []
        for i, child in enumerate(config[CHILDREN_KEY]):
            own = dict(reports[i]) if i < len(reports) and not crash else {}
            error = crash or ("" if own else "the trial reported no result for this child")
            rows.append((order, i, _row(own, dict(child), stage=stage, trial_id=child_id(trial_id, i), metric=metric,
                                        crash=error)))
    return [row for _, _, row in sorted(rows, key=lambda entry: entry[:2])]


def _row(m: dict[str, Any], config: dict[str, Any], *, stage: str, trial_id: str, metric: str,
         crash: str) -> dict[str, Any]:
    """The frame's row of one evaluation: its last report ``m``, its config, and the trial's crash (or "")."""
    error = crash
    status = m.get("status", "ok")
    if crash:
        status = "failed"
    elif status == "failed" or not math.isfinite(_float(m.get(metric))):
        status = "failed"
        error = m.get("error") or f"{metric} is not finite"
    return {
        "stage": stage,
        "trial_id": trial_id,
        "arch_key": m.get("arch_key") or "",
        "arch": m.get("arch") or config.get("arch") or "",
        "metric": metric,
        "value": _float(m.get(metric)),
        "params": _count(m.get("params")),
        "epochs": int(m.get("epochs") or config.get("epochs") or 0),
        "cached": bool(m.get("cached", False)),
        "status": status,
        "error": str(error),
        "test_acc": _float(m.get("test_acc")),
        "dataset_id": m.get("dataset_id") or "",
        "metrics": _own_metrics(m),
    }


STOPPED_EARLY = "stopped early by "  # how the ``error`` of a row a trial scheduler stopped begins (its status stays ok)


def completed_rows(frame: pd.DataFrame) -> pd.DataFrame:
    """The rows of ``frame`` whose training ran in full: without those a trial scheduler stopped early."""
    if "error" not in frame.columns:
        return frame
    stopped = frame["error"].map(lambda e: isinstance(e, str) and e.startswith(STOPPED_EARLY))
    return frame[~stopped]


def stopped_after(row: dict[str, Any]) -> int | None:
    """The epochs a row's trial trained before a trial scheduler stopped it; ``None`` when it was not stopped."""
    error = row.get("error")
    if isinstance(error, str) and error.startswith(STOPPED_EARLY):
        return int(row["epochs"])
    return None


def pick_best(frame: pd.DataFrame, *, mode: str, completed: bool = False) -> dict[str, Any] | None:
    """The best successful evaluation; ties broken by fewer params, then arch_key (deterministic).

    With ``completed``, a row a trial scheduler stopped early (:func:`completed_rows`) is never the best.
    """
    if completed:
        frame = completed_rows(frame)
    ok = frame[(frame["status"] == "ok") & frame["value"].map(lambda v: math.isfinite(v))]
    if ok.empty:
        return None
    sign = -1.0 if mode == "max" else 1.0
    ranked = sorted(ok.to_dict("records"), key=lambda r: (sign * r["value"], r["params"], r["arch_key"]))
    return ranked[0]
