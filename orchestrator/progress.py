"""Live progress bars in the terminal (rich), one set per stage: trials done / total with ETA, and the
epochs of every running trial (the supernet's training, a candidate's). SA iterations are the search
stage's trials, so its bar counts them. Quiet when stdout is not a terminal (logs, CI, pipes): the
one-line-per-trial output of :class:`orchestrator.pipeline.ProgressPrinter` is then all there is.
"""

from __future__ import annotations

import sys
from typing import Any

from ray import tune
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from search_algos.batch import CHILDREN_KEY

__all__ = ["LiveProgress", "live_progress"]


class LiveProgress(tune.Callback):
    """Rich progress bars fed by Tune's callbacks (in the driver).

    Args:
        stage: the stage name (bar label).
        total: evaluations the stage will run, when known (else the bar has no end and no ETA).
        console: a ``rich.console.Console``; default: stdout.
    """

    def __init__(self, stage: str, total: int | None, *, console: Any = None) -> None:
        self.stage = stage
        self._progress = Progress(
            TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
            TextColumn("ETA"), TimeRemainingColumn(), console=console, transient=False, redirect_stdout=True,
            redirect_stderr=False,
        )
        self._trials = self._progress.add_task(f"{escape(stage)}: trials", total=total)
        self._epochs: dict[str, Any] = {}  # trial_id -> task of its epochs
        self._ended: set[str] = set()  # a late intermediate result must not bring a finished trial's bar back
        self._progress.start()

    def __getstate__(self) -> dict[str, Any]:
        # Tune pickles the run's callbacks (tuner.pkl); a live display does not travel: a copy is quiet.
        return {"stage": self.stage, "_progress": None, "_trials": None, "_epochs": {}, "_ended": set()}

    def on_trial_result(self, iteration: int, trials: list, trial: Any, result: dict, **info: Any) -> None:
        if self._progress is None or trial.trial_id in self._ended:
            return
        epoch, epochs = result.get("epoch"), result.get("epochs")
        if not (isinstance(epoch, (int, float)) and isinstance(epochs, (int, float)) and epochs > 1):
            return
        if trial.trial_id not in self._epochs:
            self._epochs[trial.trial_id] = self._progress.add_task(
                f"  {escape(self.stage)} {trial.trial_id} epochs", total=int(epochs))
        self._progress.update(self._epochs[trial.trial_id], completed=int(epoch))

    def _finished(self, trial: Any) -> None:
        if self._progress is None:
            return
        self._ended.add(trial.trial_id)
        task = self._epochs.pop(trial.trial_id, None)
        if task is not None:
            self._progress.remove_task(task)
        children = (getattr(trial, "config", None) or {}).get(CHILDREN_KEY)  # a batched trial: its evaluations
        self._progress.advance(self._trials, len(children) if isinstance(children, list) and children else 1)

    def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._finished(trial)

    def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._finished(trial)

    def close(self) -> None:
        """Stop the live display (idempotent); the final state of the bars stays on screen."""
        if self._progress is not None:
            self._progress.stop()


def live_progress(stage: str, total: int | None) -> LiveProgress | None:
    """A :class:`LiveProgress` when stdout is a terminal, else None (quiet)."""
    if not sys.stdout.isatty():
        return None
    return LiveProgress(stage, total)
