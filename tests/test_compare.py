"""``facenas compare``: the table's figures come from each run's files; the plot is a PNG; bad runs exit 2."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from orchestrator.cli import main
from orchestrator.compare import _best_so_far
from tests.synthetic_runs import global_run, multipath_run


def test_compare_table_and_plot(tmp_path: Path, capsys) -> None:
    runs = [global_run(tmp_path / "runs" / "mm", searcher="macro_micro"),
            global_run(tmp_path / "runs" / "rnd", searcher="random", seed=1),
            multipath_run(tmp_path / "runs" / "monas")]
    out = tmp_path / "cmp.png"
    assert main(["compare", *map(str, runs), "--out", str(out)]) == 0
    text = capsys.readouterr().out
    lines = text.splitlines()
    assert lines[0].split() == ["run", "searcher", "space", "dataset", "best", "params", "test", "search", "cost",
                                "evaluations"]
    for run, line in zip(runs, lines[2:5]):
        best = json.loads((run / "best.json").read_text())
        frame = pd.read_parquet(run / "results.parquet")
        frame = frame[frame["metric"] == best["metric"]]
        seconds = sum(json.loads(p.read_text())["seconds"] for p in run.glob("*/stage.json"))
        assert line.startswith(run.name)
        assert f"{best['metric']}={best['value']:.2f}" in line and f"{best['params']:,}" in line
        assert f"{seconds:.0f} s" in line and f"{len(frame)} (0 cached)" in line
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and f"plot: {out}" in text


def test_best_so_far_by_hand() -> None:
    nan = float("nan")
    assert _best_so_far([3.0, nan, 5.0, 4.0], "max")[1:] == [3.0, 5.0, 5.0]
    assert _best_so_far([3.0, 2.0, nan, 4.0], "min") == [3.0, 2.0, 2.0, 2.0]


def test_compare_reports_every_bad_run_at_once(tmp_path: Path, capsys) -> None:
    good = global_run(tmp_path / "runs" / "rnd", searcher="random")
    unfinished = global_run(tmp_path / "runs" / "half", searcher="random")
    (unfinished / "best.json").unlink()
    out = tmp_path / "cmp.png"
    assert main(["compare", str(good), str(unfinished), str(tmp_path / "nothing"), "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 2 and "has not finished" in err[0] and "is not a directory" in err[1]
    assert not out.exists()
