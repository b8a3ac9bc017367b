"""Live progress (rich): trials done / total, per-trial epochs, quiet off a terminal, picklable for Tune."""

from __future__ import annotations

import io
import pickle
from types import SimpleNamespace

import pytest
from rich.console import Console

from orchestrator.progress import LiveProgress, live_progress


def _tasks(live: LiveProgress) -> dict[str, tuple[float, float | None]]:
    return {t.description.strip(): (t.completed, t.total) for t in live._progress.tasks}


def test_bars_follow_trials_and_epochs() -> None:
    out = io.StringIO()
    live = LiveProgress("supernet", 2, console=Console(file=out, force_terminal=True, width=120))
    a, b = SimpleNamespace(trial_id="aaaa"), SimpleNamespace(trial_id="bbbb")
    live.on_trial_result(0, [], a, {"epoch": 1, "epochs": 3})
    live.on_trial_result(0, [], a, {"epoch": 2, "epochs": 3})
    live.on_trial_result(0, [], b, {"val_nme": 3.0})  # no epochs (a one-shot evaluation): no epoch bar
    assert _tasks(live) == {"supernet: trials": (0, 2), "supernet aaaa epochs": (2, 3)}
    live.on_trial_complete(0, [], a)
    live.on_trial_result(0, [], a, {"epoch": 3, "epochs": 3})  # late: must not bring the bar back
    live.on_trial_error(0, [], b)
    assert _tasks(live) == {"supernet: trials": (2, 2)}
    live.close()
    assert "2/2" in out.getvalue()


def test_quiet_when_stdout_is_not_a_terminal(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("sys.stdout", io.StringIO())
    assert live_progress("search", 10) is None


def test_a_pickled_copy_is_quiet() -> None:
    live = LiveProgress("search", 3, console=Console(file=io.StringIO(), force_terminal=True))
    copy = pickle.loads(pickle.dumps(live))
    live.close()
    copy.on_trial_result(0, [], SimpleNamespace(trial_id="x"), {"epoch": 1, "epochs": 2})
    copy.on_trial_complete(0, [], SimpleNamespace(trial_id="x"))
    copy.close()
    assert copy._progress is None
