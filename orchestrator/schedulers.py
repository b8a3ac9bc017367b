"""The config's ``scheduler`` section as a Ray Tune trial scheduler (:func:`build_scheduler`).

It applies to the stages whose trials train a candidate for several epochs and report every epoch
(``Stage.tunable`` or ``Stage.stoppable``, as each method's stages say): ``asha``
(``AsyncHyperBandScheduler``: a trial below the top ``1/reduction_factor`` of its rung at
``grace_period * reduction_factor**k`` epochs is stopped), ``hyperband`` (synchronous HyperBand; only for
searchers that suggest trials without waiting for verdicts) or ``median`` (Tune's ``MedianStoppingRule``:
after ``grace_period`` epochs a trial whose best accuracy so far is below the median of the other trials'
running means at that epoch, over at least ``min_samples`` of them, is stopped). A stopped trial keeps
the metric of its last reported epoch; its row in results.parquet says so (``epochs`` = the epochs it
trained, ``error`` = ``stopped early by <name> ...``). It is never written to the benchmark store (only
whole trainings are).

What a stop means is each searcher's or method's to say, and their docstrings do (one keeps the stopped
trial's last value, another rejects the candidate, a third reports no test figures for it; the tools:
``orchestrator.results.completed_rows`` / ``stopped_after``). A trial whose config carries ``reference: True``
(``search_algos.base.REFERENCE_KEY``: an evaluation later verdicts are measured against) is never
stopped (:class:`StageScheduler`): the scheduler still sees its results.

On a resume (``facenas resume``, ``Tuner.restore``) Tune restores the searcher's state but not the
scheduler's. :class:`StageScheduler` journals what the scheduler saw and replays it on the resume, so
ASHA's rungs and the median rule's running means are those of the interrupted run. HyperBand (not
wrapped) starts afresh after a resume: its brackets hold only the trials that report after it.

The ``hpo`` section, Optuna-drawn training hyper-parameters on ``tunable`` stages, is
:class:`search_algos.hpo.HpoSearcher`.
"""

from __future__ import annotations

import json
import os
from typing import Any

from ray.tune.schedulers import MedianStoppingRule, TrialScheduler

from search_algos.base import REFERENCE_KEY

__all__ = ["StageScheduler", "build_scheduler"]

_EPOCH = "epoch"  # the schedulers' time: every epoch's report carries it (orchestrator.trial)


def build_scheduler(settings: dict[str, Any], *, metric: str, mode: str, max_epochs: int | None) -> Any:
    """The Tune scheduler of a ``scheduler`` section, or None for ``name: none``.

    Args:
        settings: the section (``name, grace_period, reduction_factor, brackets, max_t``).
        metric, mode: what the stage optimises.
        max_epochs: the stage's longest training (the default ``max_t``).

    Time is a report's ``epoch`` (epochs trained so far), not Tune's ``training_iteration``: a retried or
    resumed trial continues from its own checkpoint (``orchestrator.trial``) while Tune counts its reports
    from 1 again. A report without ``epoch`` (a failed trial's) is not ranked.
    """
    from ray.tune.schedulers import AsyncHyperBandScheduler, HyperBandScheduler

    name = settings["name"]
    if name == "none":
        return None
    max_t = settings.get("max_t") or max_epochs or 100
    if name == "asha":
        return AsyncHyperBandScheduler(
            time_attr=_EPOCH, metric=metric, mode=mode, max_t=max_t,
            grace_period=min(settings["grace_period"], max_t), reduction_factor=settings["reduction_factor"],
            brackets=settings["brackets"],
        )
    if name == "hyperband":
        return HyperBandScheduler(
            time_attr=_EPOCH, metric=metric, mode=mode, max_t=max_t,
            reduction_factor=settings["reduction_factor"],
        )
    if name == "median":
        return _MedianStop(
            time_attr=_EPOCH, metric=metric, mode=mode, grace_period=settings["grace_period"],
            min_samples_required=settings.get("min_samples", 3), hard_stop=True,
        )
    raise ValueError(f"unknown scheduler {name!r}")


class _MedianStop(MedianStoppingRule):
    """Tune's median stopping rule, stopping only: with too few other trials to compare it lets a trial
    go on instead of pausing it to yield its slot to a pending one. A paused candidate would start its
    function again and continue from its own checkpoint (``orchestrator.trial``), not from Tune's."""

    def _on_insufficient_samples(self, tune_controller: Any, trial: Any, time: float) -> str:
        return TrialScheduler.CONTINUE


class _StandIn:
    """What the wrapped scheduler is handed for a trial: one object per trial id, across a resume too
    (the median rule keys its results by trial object, ASHA by ``trial_id``)."""

    def __init__(self, trial_id: str) -> None:
        self.trial_id = trial_id
        self.status = "RUNNING"

    def __repr__(self) -> str:
        return self.trial_id


class StageScheduler(TrialScheduler):
    """ASHA or the median rule for facenas stages: references train in full, and a resume goes on as if
    uninterrupted.

    - A trial whose config has ``reference: True`` is never stopped: every call goes to ``inner``, so the
      references' results fill its rungs (ASHA) or running means (median) like any trial's, but its
      ``STOP`` for a reference becomes ``CONTINUE`` (for the median rule the reference also leaves the
      rule's stopped set, which would otherwise treat it as stopped at its next result).
    - Tune saves the searcher's state but not the scheduler's, and restores the scheduler as it was built
      (``tuner.pkl``). So every event the scheduler is handed (a trial added, a result, a completion, an
      error, a removal) is appended to ``journal`` (one JSON line; numbers of the result only),
      and the first call after a restore replays the journal into ``inner``: the rungs and running means
      are those the interrupted run had built. A trial Tune restores as running is not added twice; one
      the journal saw finish but Tune's older saved state runs again is added again (ASHA then records
      nothing new at the rungs it already reached). A torn last line (a kill mid-write) is skipped. A
      result the driver never got (killed while it was on its way) comes again: a trial that continues
      from its saved state reports that epoch first, marked ``replayed`` (``orchestrator.trial``), and
      such a report is handed on only when the journal lacks that epoch of that trial.

    Args:
        inner: the scheduler of :func:`build_scheduler` (ASHA or median; HyperBand stops and pauses whole
            brackets itself and is not wrapped).
        journal: the stage's journal file (``RunPaths.scheduler_journal``); ``None``: no journal.
    """

    def __init__(self, inner: TrialScheduler, *, journal: str | None = None) -> None:
        super().__init__()
        self.inner, self.journal = inner, journal
        self._trials: dict[str, _StandIn] = {}
        self._live: set[str] = set()  # added and neither completed nor removed
        self._seen: set[tuple[str, Any]] = set()  # (trial id, epoch) of every result handed on
        self._replayed = False

    @property
    def metric(self) -> str | None:
        return self.inner.metric

    @property
    def supports_buffered_results(self) -> bool:
        return self.inner.supports_buffered_results

    def set_search_properties(self, metric: str | None, mode: str | None, **spec: Any) -> bool:
        return self.inner.set_search_properties(metric, mode, **spec)

    # -- the events, journaled ---------------------------------------------------------------------
    def on_trial_add(self, tune_controller: Any, trial: Any) -> None:
        self._replay()
        # A trial restored after a resume that the journal holds as running was added before it; one the
        # journal holds as finished (Tune's saved state is older than the journal) runs again: add it again.
        if trial.trial_id not in self._live:
            self._event("add", trial.trial_id)

    def on_trial_error(self, tune_controller: Any, trial: Any) -> None:
        self._replay()
        self._event("error", trial.trial_id)

    def on_trial_result(self, tune_controller: Any, trial: Any, result: dict[str, Any]) -> str:
        self._replay()
        if result.get("replayed") and (trial.trial_id, result.get(_EPOCH)) in self._seen:
            return TrialScheduler.CONTINUE  # a retried trial's saved epoch, again (orchestrator.trial): seen
        reference = bool((trial.config or {}).get(REFERENCE_KEY))
        return self._event("result", trial.trial_id, result, tune_controller, reference=reference)

    def on_trial_complete(self, tune_controller: Any, trial: Any, result: dict[str, Any]) -> None:
        self._replay()
        self._event("complete", trial.trial_id, result, tune_controller)

    def on_trial_remove(self, tune_controller: Any, trial: Any) -> None:
        self._replay()
        self._event("remove", trial.trial_id)

    def choose_trial_to_run(self, tune_controller: Any) -> Any:
        return self.inner.choose_trial_to_run(tune_controller)

    def debug_string(self) -> str:
        return self.inner.debug_string()

    def save(self, checkpoint_path: str) -> None:
        self.inner.save(checkpoint_path)

    def restore(self, checkpoint_path: str) -> None:
        self.inner.restore(checkpoint_path)

    # -- journal -----------------------------------------------------------------------------------
    def _event(self, kind: str, trial_id: str, result: dict[str, Any] | None = None, controller: Any = None,
               *, reference: bool = False, write: bool = True) -> Any:
        """Hand one event to ``inner`` (with the trial's stand-in); append it to the journal first."""
        numbers = None if result is None else {
            k: v for k, v in result.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
        if write:
            self._append(json.dumps({"event": kind, "trial": trial_id, "result": numbers,
                                     **({"reference": True} if reference else {})}) + "\n")
        stand_in = self._trials.setdefault(trial_id, _StandIn(trial_id))
        if kind == "add":
            self._live.add(trial_id)
            stand_in.status = "RUNNING"
            return self.inner.on_trial_add(controller, stand_in)
        if kind == "result":
            self._seen.add((trial_id, numbers.get(_EPOCH)))
            decision = self.inner.on_trial_result(controller, stand_in, numbers)
            if decision == TrialScheduler.STOP and reference:
                stopped = getattr(self.inner, "_stopped_trials", None)  # MedianStoppingRule's (ray 2.60)
                if stopped is not None:
                    stopped.discard(stand_in)
                return TrialScheduler.CONTINUE
            return decision
        if kind == "complete":
            self._live.discard(trial_id)
            stand_in.status = "TERMINATED"
            return self.inner.on_trial_complete(controller, stand_in, numbers)
        if kind == "error":
            stand_in.status = "ERROR"
            return self.inner.on_trial_error(controller, stand_in)
        self._live.discard(trial_id)
        return self.inner.on_trial_remove(controller, stand_in)

    def _append(self, text: str) -> None:
        if self.journal is None:
            return
        try:
            with open(self.journal, "a") as out:
                out.write(text)
        except OSError:  # the run folder moved since the stage started: a later resume starts afresh
            self.journal = None

    def _replay(self) -> None:
        """Once per process: feed the journal of an interrupted run to ``inner``, its decisions unused."""
        if self._replayed:
            return
        self._replayed = True
        if self.journal is None or not os.path.isfile(self.journal):
            return
        with open(self.journal) as journal:
            text = journal.read()
        for line in text.splitlines():
            try:
                event = json.loads(line)
            except ValueError:
                continue  # the torn last line of a killed run
            self._event(event["event"], event["trial"], event["result"],
                        reference=bool(event.get("reference")), write=False)
        if text and not text.endswith("\n"):
            self._append("\n")  # the next event starts a line of its own, after the torn one
