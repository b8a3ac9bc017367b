"""The experiment pipeline: stages, each a Ray Tune experiment under ``RUN_DIR/<stage>/``.

A stage that finished leaves a marker and its evaluations; ``facenas resume`` skips it. A stage that
was interrupted is continued with ``Tuner.restore`` (trials and the searcher's saved state); one that
never started is started. After the last stage the run's ``results.parquet`` and ``best.json`` are
written (DESIGN.md §3, Contracts).
"""

from __future__ import annotations

import json
import os
import pickle
import shutil
import signal
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
from ray import tune

from orchestrator.compat import old_module_paths
from orchestrator.errors import UserError
from orchestrator.evaluate import evaluate_candidate, prune_weights, weights_path
from orchestrator.paths import RunPaths
from orchestrator.progress import live_progress
from orchestrator.ray_metrics import RayMetrics
from orchestrator.results import (
    RESULT_COLUMNS, STOPPED_EARLY, pick_best, rows_from_result_grid, write_json_atomic, write_parquet_atomic,
)
from orchestrator.trial import is_finite_number
from search_algos.base import ArchSearcher
from search_algos.batch import CHILDREN_KEY, BatchSearcher

__all__ = ["ProgressPrinter", "Stage", "StageOutcome", "run_stage"]



@dataclass
class StageOutcome:
    """What a finished stage hands to the next ones and to ``best.json``."""

    name: str
    frame: pd.DataFrame
    summary: dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0


@dataclass
class Stage:
    """One Tune experiment of the pipeline.

    Attributes:
        name: folder name under RUN_DIR and the ``stage`` column of results.parquet.
        make_searcher: builds a fresh searcher from the outcomes of earlier stages (a resumed stage
            gets its saved state restored into the same kind of searcher); ``None`` for a stage of
            one trial with a fixed config (e.g. training a supernet).
        job: what every trial of the stage shares (handed to ``trainable`` as ``job=``).
        total: number of evaluations, when known in advance (progress display).
        trainable: the Tune function ``f(config, job)``; candidate training by default.
        config: the trial config of a stage without a searcher.
        resources: overrides of the trial's resources (``{"cpu": ..., "gpu": ...}``).
        metric, mode: the stage's own reported value, when not the experiment's (a supernet's loss).
        tunable: trials train a candidate for several epochs and report each, and the searcher accepts
            trials stopped early: the config's ``scheduler`` and ``hpo`` apply (``orchestrator.schedulers``,
            ``search_algos.hpo``).
        stoppable: the same for the ``scheduler`` alone (``hpo`` does not apply): a search whose
            candidates must share one training protocol.
        max_epochs: the longest training of a trial of the stage (the scheduler's default ``max_t``), for a
            stage whose searcher does not say it (``max_epochs`` or ``epochs``) or that has none.
        children_per_trial: the most of the searcher's configs one trial evaluates, in turn
            (:class:`search_algos.batch.BatchSearcher`; the trainable runs them with
            :func:`orchestrator.trial.run_children`); for evaluations shorter than Tune's cost per trial.
            1 (default): one config per trial. Not with a trial scheduler or ``hpo`` (a batch reports once).
    """

    name: str
    make_searcher: Callable[[dict[str, StageOutcome]], ArchSearcher] | None
    job: Any
    total: Callable[[dict[str, StageOutcome]], int | None] = lambda _: None
    trainable: Callable[..., None] = evaluate_candidate
    config: Callable[[dict[str, StageOutcome]], dict[str, Any]] | None = None
    resources: dict[str, float] | None = None
    metric: str | None = None
    mode: str | None = None
    tunable: bool = False
    stoppable: bool = False
    max_epochs: int | None = None
    children_per_trial: int = 1

    def __post_init__(self) -> None:
        if self.children_per_trial < 1 or (self.children_per_trial > 1 and self.schedulable):
            raise ValueError(
                f"stage {self.name!r}: children_per_trial must be >= 1, and 1 on a stage a trial scheduler or hpo "
                f"drives (a batch reports once), but got {self.children_per_trial}"
            )

    @property
    def schedulable(self) -> bool:
        """Whether the config's ``scheduler`` applies to this stage."""
        return self.tunable or self.stoppable


class ProgressPrinter(tune.Callback):
    """One line per finished trial: count, what the trial evaluated, metric, best so far.

    What the trial evaluated is its own ``describe`` report key when it reports one (a trial that trains
    something other than its ``arch``, e.g. a LOSO fold of a baseline, says so itself), else the summary of
    its ``arch``, else its ``arch_key``.
    """

    def __init__(self, stage: str, metric: str, mode: str, total: int | None) -> None:
        self.stage, self.metric, self.mode, self.total = stage, metric, mode, total
        self.done = 0
        self.best: float | None = None

    def _line(self, text: str) -> None:
        print(f"[{self.stage}] {text}", flush=True)

    def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        r = trial.last_result or {}
        children = r.get(CHILDREN_KEY)
        if isinstance(children, list) and children:  # a batched trial (search_algos.batch): a line per child
            configs = trial.config.get(CHILDREN_KEY) or []
            for i, child in enumerate(children):
                self._evaluation(child, configs[i] if i < len(configs) else {})
            return
        self._evaluation(r, trial.config)

    def _evaluation(self, r: dict[str, Any], config: dict[str, Any]) -> None:
        self.done += 1
        value = r.get(self.metric)
        count = f"{self.done}/{self.total}" if self.total else f"{self.done}"
        arch_json = r.get("arch") or config.get("arch")
        arch = _described(r) or (_summary_of(arch_json) if arch_json else str(r.get("arch_key", "")))
        if r.get("status") == "failed" or not is_finite_number(value):  # NaN or +-inf is a failed evaluation
            reason = r.get("error") or (f"{self.metric} is not finite" if value is not None else "no result")
            self._line(f"trial {count} {arch}  FAILED: {reason}")
            return
        better = self.best is None or (value > self.best if self.mode == "max" else value < self.best)
        if better:
            self.best = value
        cached = " (cached)" if r.get("cached") else ""
        if r.get("epoch") and r.get("epochs") and r["epoch"] < r["epochs"]:  # a scheduler (ASHA) stopped it
            cached += f" (stopped early at epoch {int(r['epoch'])})"
        self._line(
            f"trial {count} {arch}  {self.metric}={value:.2f}{cached}  best={self.best:.2f}"
            f"  params={int(r.get('params', 0)):,}  epochs={r.get('epochs')}"
        )

    def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self.done += 1
        count = f"{self.done}/{self.total}" if self.total else f"{self.done}"
        arch = _described(trial.last_result or {}) or _summary_of(trial.config.get("arch"))
        self._line(f"trial {count} {arch}  FAILED: {_error_line(trial)}")


def _described(result: dict[str, Any]) -> str:
    """The trial's own description of what it evaluated (its ``describe`` report key), or ``""``."""
    text = result.get("describe")
    return text if isinstance(text, str) else ""


def _error_line(trial: Any) -> str:
    """The last line of the trial's error (Tune's text file: the exception type and message)."""
    try:
        text = trial.get_error() or ""
    except Exception:  # a progress line must never break the run
        text = ""
    lines = [ln.strip() for ln in str(text).splitlines() if ln.strip()]
    return lines[-1] if lines else "the trial raised (see its error.txt)"


def _summary_of(arch_json: Any) -> str:
    try:
        payload = json.loads(arch_json) if isinstance(arch_json, str) else arch_json
        from search_algos.spaces import decode_arch

        return decode_arch(payload.get("space", "global"), payload).summary()
    except Exception:  # a progress line must never break the run
        return "?"


def trial_dirname(trial: Any) -> str:
    """``trial_0007_<id>``: short folder names that sort in creation order."""
    counter = str(trial.experiment_tag).split("_", 1)[0]
    index = int(counter) if counter.isdigit() else 0
    return f"trial_{index:04d}_{trial.trial_id}"


def _latest_searcher_state(exp_dir: Path) -> Path | None:
    files = sorted(exp_dir.glob("searcher-state-*.pkl"))
    return files[-1] if files else None


def _cluster_cpus() -> int:
    import ray

    return max(1, int(ray.cluster_resources().get("CPU", 1)))


def _tune_resources(resources: dict[str, Any], training: dict[str, Any]) -> dict[str, float]:
    # With Ray Train workers, the trial itself only coordinates: it reserves a sliver of a CPU and
    # the workers reserve their own (DESIGN.md §6).
    if training["train_workers"] > 1:
        return {"cpu": 0.25, "gpu": 0}
    return {"cpu": resources["cpus_per_trial"], "gpu": resources["gpus_per_trial"]}


def run_stage(
    stage: Stage,
    *,
    run_dir: Path,
    earlier: dict[str, StageOutcome],
    metric: str,
    mode: str,
    resources: dict[str, Any],
    training: dict[str, Any],
    scheduler: dict[str, Any] | None = None,
    hpo: dict[str, Any] | None = None,
) -> StageOutcome:
    """Run, continue or skip ``stage``; returns its outcome (evaluations and searcher summary).

    ``scheduler`` (the config section) and ``hpo`` (training key -> distribution) apply to tunable stages.
    """
    metric, mode = stage.metric or metric, stage.mode or mode
    exp_dir, paths = run_dir / stage.name, RunPaths.of(run_dir)
    marker = paths.stage_marker(stage.name)
    if marker.is_file():
        info = json.loads(marker.read_text())
        frame = pd.read_parquet(paths.stage_evaluations(stage.name))
        print(f"[{stage.name}] already finished ({len(frame)} evaluations); skipped", flush=True)
        return StageOutcome(stage.name, frame, info["summary"], info.get("seconds", 0.0))

    started = time.perf_counter()
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")  # with verbose=0: our progress lines only
    # Tune lets a custom searcher have ONE pending trial; with reuse_actors the running trial's actor
    # then usually takes the next trial too, so short trials (one-shot evaluations, speculative
    # greedy steps, annealing chains) ran one at a time. Allow as many pending trials as the cluster
    # has CPUs (a user's own TUNE_MAX_PENDING_TRIALS_PG wins).
    os.environ.setdefault("TUNE_MAX_PENDING_TRIALS_PG", str(_cluster_cpus()))
    trainable = tune.with_resources(
        tune.with_parameters(stage.trainable, job=stage.job),
        stage.resources or _tune_resources(resources, training),
    )
    total = stage.total(earlier)
    live = None  # rich bars on a terminal (orchestrator.progress); Tuner.restore keeps the first callbacks
    if tune.Tuner.can_restore(str(exp_dir)):
        print(f"[{stage.name}] resuming the interrupted stage from {exp_dir}", flush=True)
        tuner = _restore(exp_dir, trainable)
    else:
        paths.scheduler_journal(stage.name).unlink(missing_ok=True)  # an earlier attempt's, before Tune saved
        searcher = _searcher(stage, earlier, hpo) if stage.make_searcher else None
        live = live_progress(stage.name, total)
        tuner = tune.Tuner(
            trainable,
            param_space=stage.config(earlier) if stage.config else None,
            tune_config=tune.TuneConfig(
                search_alg=searcher,
                scheduler=_scheduler(stage, scheduler, searcher, metric, mode, run_dir),
                num_samples=-1 if searcher is not None else 1,
                max_concurrent_trials=resources.get("max_concurrent_trials"),
                reuse_actors=True,
                trial_dirname_creator=trial_dirname,
            ),
            run_config=tune.RunConfig(
                name=stage.name,
                storage_path=str(run_dir),
                failure_config=tune.FailureConfig(max_failures=resources["max_failures"]),
                callbacks=[
                    ProgressPrinter(stage.name, metric, mode, total),
                    RayMetrics(stage=stage.name, run=run_dir.name, metric=metric, mode=mode,
                               store=getattr(stage.job, "store", None)),
                ] + ([live] if live else []),
                verbose=0,
            ),
        )
    with _stop_signal_flag() as interrupted:
        try:
            grid = tuner.fit()
        finally:
            if live is not None:
                live.close()
    if interrupted.is_set():
        # Ctrl-C: Tune stopped the trials, saved its state and returned as if done. The stage is not
        # finished: no marker, so `facenas resume` continues it (Tuner.restore).
        raise KeyboardInterrupt
    frame = pd.DataFrame(rows_from_result_grid(grid, stage=stage.name, metric=metric), columns=list(RESULT_COLUMNS))

    summary: dict[str, Any] = {}
    if stage.schedulable and scheduler and scheduler["name"] != "none":
        frame = _mark_stopped_early(frame, scheduler["name"])
        # stopped trials leave partial checkpoints; the stage is finished, so none will continue
        shutil.rmtree(paths.checkpoints_dir(stage.name), ignore_errors=True)
    if stage.make_searcher is not None:
        searcher = _searcher(stage, earlier, hpo)
        state = _latest_searcher_state(exp_dir)
        if state is not None:
            searcher.restore(str(state))
        summary = searcher.summary()
    seconds = time.perf_counter() - started
    _keep_best_weights(exp_dir, frame, mode)
    write_parquet_atomic(frame, paths.stage_evaluations(stage.name))
    write_json_atomic({"stage": stage.name, "summary": summary, "seconds": seconds}, marker)
    return StageOutcome(stage.name, frame, summary, seconds)


def _restore(exp_dir: Path, trainable: Any) -> tune.Tuner:
    """``Tuner.restore`` of an interrupted stage, also of one saved before the redesign (old module paths,
    :mod:`orchestrator.compat`).

    Raises:
        UserError: when the saved stage cannot be read back (it names the stage and the fix).
    """
    try:
        with old_module_paths():
            return tune.Tuner.restore(str(exp_dir), trainable=trainable, resume_errored=False, restart_errored=False)
    except (ImportError, AttributeError, pickle.UnpicklingError, EOFError, TypeError) as exc:
        raise UserError(
            f"the interrupted stage {exp_dir} cannot be resumed by this version of facenas "
            f"({type(exc).__name__}: {exc}); delete that folder and run `facenas resume` again to start the "
            f"stage afresh (finished stages are kept)"
        ) from exc


_STOP_SIGNALS = tuple(getattr(signal, name) for name in ("SIGINT", "SIGUSR1") if hasattr(signal, name))


@contextmanager
def _stop_signal_flag() -> Iterator[threading.Event]:
    """A flag that is set when SIGINT (Ctrl-C) or SIGUSR1 arrives while the block (``Tuner.fit``) runs.

    Our handler sets the flag, then calls the handler it wraps. It wraps the handler in place on entry,
    but that is not enough: Tune (2.60) installs its own handler for both signals when ``fit`` starts,
    and on the signal it ends the run gracefully and puts the SIGINT handler from before back *without
    calling it*, so ``fit`` returns normally and the handler from before never hears of that first
    Ctrl-C. So inside the block every handler registered for these signals (Tune's) is registered
    wrapped in ours too. On leaving, the handlers from before the block are back in place (Tune would
    leave its own installed after a run that finished).

    Outside the main thread no handler can be installed (Tune installs none either): the flag stays
    clear and a SIGINT raises ``KeyboardInterrupt`` by itself.
    """
    flag = threading.Event()
    if threading.current_thread() is not threading.main_thread():
        yield flag
        return
    register = signal.signal
    before = {signum: signal.getsignal(signum) for signum in _STOP_SIGNALS}
    ours: list[Callable[[int, Any], Any]] = []

    def flagging(handler: Any) -> Any:
        if not callable(handler) or handler in ours:  # SIG_DFL / SIG_IGN have nothing to call
            return handler

        def on_signal(signum: int, frame: Any) -> Any:
            flag.set()
            return handler(signum, frame)

        ours.append(on_signal)
        return on_signal

    def register_flagging(signum: int, handler: Any) -> Any:
        return register(signum, flagging(handler) if signum in _STOP_SIGNALS else handler)

    for signum, handler in before.items():
        if callable(handler):
            register(signum, flagging(handler))
    signal.signal = register_flagging
    try:
        yield flag
    finally:
        signal.signal = register
        for signum, handler in before.items():
            if handler is not None:  # None: installed outside Python, cannot be put back from here
                register(signum, handler)


def _searcher(stage: Stage, earlier: dict[str, StageOutcome], hpo: dict[str, Any] | None) -> ArchSearcher:
    """The stage's searcher; on a tunable stage with an ``hpo`` space, wrapped to draw hyper-parameters too;
    batched when the stage evaluates several configs per trial."""
    searcher = stage.make_searcher(earlier)
    if stage.tunable and hpo:
        from search_algos.hpo import HpoSearcher

        return HpoSearcher(searcher, hpo, seed=searcher.seed)
    if stage.children_per_trial > 1:
        return BatchSearcher(searcher, stage.children_per_trial)
    return searcher


def _scheduler(stage: Stage, settings: dict[str, Any] | None, searcher: Any, metric: str, mode: str,
               run_dir: Path) -> Any:
    if not (stage.schedulable and settings):
        return None
    from orchestrator.schedulers import StageScheduler, build_scheduler

    inner = getattr(searcher, "inner", searcher)
    # the longest training a trial of the stage can have: ASHA stops every trial that reaches max_t
    longest = stage.max_epochs or getattr(inner, "max_epochs", None) or getattr(inner, "epochs", None)
    built = build_scheduler(settings, metric=metric, mode=mode, max_epochs=longest)
    # HyperBand pauses and stops whole brackets itself (allowed only where no trial is a reference: config check)
    if built is None or settings["name"] == "hyperband":
        return built
    return StageScheduler(built, journal=str(RunPaths.of(run_dir).scheduler_journal(stage.name)))


def _mark_stopped_early(frame: pd.DataFrame, scheduler: str) -> pd.DataFrame:
    """Rows of trials the scheduler stopped: ``epochs`` = epochs trained, ``error`` says so (status stays ok)."""
    frame = frame.copy()
    for i, row in frame.iterrows():
        metrics = json.loads(row["metrics"]) if isinstance(row["metrics"], str) and row["metrics"] else {}
        trained, planned = metrics.get("epoch"), metrics.get("epochs")
        if row["status"] == "ok" and trained and planned and trained < planned:
            frame.at[i, "epochs"] = int(trained)
            frame.at[i, "error"] = f"{STOPPED_EARLY}{scheduler} after {int(trained)} of {int(planned)} epochs"
    return frame


_KEEP_ALL_WEIGHTS = 4  # a stage this small (retraining the winners) keeps every trained network


def _keep_best_weights(exp_dir: Path, frame: pd.DataFrame, mode: str) -> None:
    """Final weights kept by the trials (``<stage>/weights``): the stage's best only, for ``facenas export``."""
    if len(frame) <= _KEEP_ALL_WEIGHTS:
        return
    best = pick_best(frame, mode=mode)
    keep = {os.path.basename(weights_path("", "", best["arch_key"], int(best["epochs"])))} if best else set()
    prune_weights(str(exp_dir), keep)


def stage_state(run_dir: Path, name: str) -> str:
    """``done``, ``interrupted`` or ``not started`` (for ``facenas status``)."""
    exp_dir = run_dir / name
    if RunPaths.of(run_dir).stage_marker(name).is_file():
        return "done"
    if exp_dir.is_dir() and any(exp_dir.iterdir()):
        return "interrupted"
    return "not started"

