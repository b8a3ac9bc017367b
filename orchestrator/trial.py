"""One trial sequence for every Tune function trainable: lookup, checkpointed fit, durable record, report.

Every method's evaluation runs the same steps, in this order:

1. **Lookup.** A :class:`StoreKey` names the evaluation in the benchmark store
   (:mod:`orchestrator.store`). A stored row trained with the same protocol is served: one report with
   ``cached=True``, nothing trains.
2. **Fit.** Otherwise the method's ``fit`` callable trains, from the checkpoint of an earlier try of the
   same evaluation if one exists. It hands every epoch to the sequence's epoch hook, which saves the
   training state (so a retried trial continues where it stopped) and reports the epoch, so a scheduler
   sees every one. A try that continues from a saved state whose ``metrics`` name an ``epoch`` first
   reports that epoch again with ``replayed=True`` (the report may never have reached the driver).
3. **Finite check.** A diverged training (``FloatingPointError``), a non-finite metric, or one of the
   method's declared "normal" exceptions is a *failed evaluation*: one report with ``status="failed"``,
   the metric as NaN and the error text; nothing is stored.
4. **Record.** The result is written to the store, durably, *before* the final report: a scheduler may
   stop the trial at that report (ASHA stops every trial that reaches ``max_t``), and what the store does
   not hold then would be trained again by the next run.
5. **Report.** The final metrics, ``cached=False``, ``status="ok"``.

Every report is ``{**metrics, **base, "cached": ..., "status": ..., "error": ...}``: the method's
``base`` keys (arch, arch_key, epochs, stage, ...) win over the metrics of the same name.

The sequence knows neither Ray nor torch: the report function is injected (Tune's ``report`` by
default) and checkpoints go through :func:`orchestrator.evaluate.save_state`, imported when used.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal, Protocol, Union

if TYPE_CHECKING:
    from orchestrator.store import BenchmarkStore, StoreClient

__all__ = [
    "EpochHook",
    "Outcome",
    "StoreKey",
    "TrialSequence",
    "is_finite_number",
    "lookup",
    "plain_metrics",
    "record",
    "require_finite",
    "run_children",
]

Outcome = Literal["cached", "ok", "failed"]
Report = Callable[[dict[str, Any]], None]
_ANY_TRAINING = object()  # lookup(): no training protocol to compare (one-shot evaluations)
# The store a trial talks to: the client of the store actor (in trials) or the store itself (tests, tools).
Store = Union["StoreClient", "BenchmarkStore"]


class EpochHook(Protocol):
    """What a ``fit`` callable calls after every epoch (see :meth:`TrialSequence.run`)."""

    def __call__(self, metrics: Mapping[str, Any], state: Mapping[str, Any] | None = None, *,
                 last: bool = False) -> None: ...


def plain_metrics(metrics: Mapping[str, Any]) -> dict[str, Any]:
    """Numbers (as floats) and dicts of numbers only: what Tune reports and the store keeps."""
    out: dict[str, Any] = {}
    for key, value in metrics.items():
        if isinstance(value, bool):
            continue
        if isinstance(value, (int, float)):
            out[key] = float(value)
        elif isinstance(value, dict) and all(isinstance(v, (int, float)) for v in value.values()):
            out[key] = {k: float(v) for k, v in value.items()}
    return out


@dataclass(frozen=True)
class StoreKey:
    """The key of one evaluation in the benchmark store (its ``_EVALUATION_KEY`` columns).

    Attributes:
        space: The space, or a finer scope a method names (``<space>/<scope>``: the supernet of a one-shot
            score, the fold of a cross-validation); the store compares it as text.
        arch_key: The architecture's stable key (``arch.key()``).
        dataset_id: The dataset's identity.
        fidelity: Epochs trained (0 for a one-shot score on trained supernet weights).
        seed: The evaluation's seed.
        protocol: :func:`orchestrator.store.protocol_of` of the training settings; ``None`` for an
            evaluation without a training protocol (a one-shot score), which a lookup matches under
            any protocol, as the store does.
    """

    space: str
    arch_key: str
    dataset_id: str
    fidelity: int
    seed: int
    protocol: str | None = None

    @classmethod
    def trained(cls, *, space: str, arch_key: str, dataset_id: str, fidelity: int, seed: int,
                training: Mapping[str, Any]) -> StoreKey:
        """The key of an evaluation trained with ``training`` (the protocol the store derives from it)."""
        from orchestrator.store import protocol_of

        return cls(space, arch_key, dataset_id, int(fidelity), int(seed), protocol_of({"training": dict(training)}))

    def lookup_args(self) -> tuple[str, str, str, int, int, str | None]:
        """The positional arguments of ``StoreClient.lookup`` / ``BenchmarkStore.lookup``."""
        return (self.space, self.arch_key, self.dataset_id, self.fidelity, self.seed, self.protocol)

    def row(self, *, config: Mapping[str, Any], metrics: Mapping[str, Any], cost_s: float, run: str,
            created_at: float) -> dict[str, Any]:
        """The store row of this evaluation (``put``'s shape; the store derives ``protocol`` from ``config``).

        Raises:
            ValueError: ``config``'s training gives another protocol than the key's: the row could never
                be found again by this key.
        """
        from orchestrator.store import protocol_of

        if self.protocol is not None and protocol_of(dict(config)) != self.protocol:
            raise ValueError(
                f"the row's config has protocol {protocol_of(dict(config))!r} but its key {self.protocol!r}; "
                "build the key with StoreKey.trained from the same training settings"
            )
        return {
            "space": self.space, "arch_key": self.arch_key, "config": json.dumps(config, sort_keys=True),
            "dataset_id": self.dataset_id, "fidelity": self.fidelity, "seed": self.seed,
            "metrics": json.dumps(metrics), "cost_s": cost_s, "run": run, "created_at": created_at,
        }


def lookup(store: Store, key: StoreKey, *, training: Mapping[str, Any] | object = _ANY_TRAINING) -> dict[str, Any] | None:
    """The stored evaluation of ``key``, or None.

    Args:
        store: A ``StoreClient`` or ``BenchmarkStore``.
        key: The evaluation; its protocol selects the row.
        training: When given, the stored config's ``training`` must equal it too (a guard beside the
            protocol hash, which only sees the settings as JSON).
    """
    hit = store.lookup(*key.lookup_args())
    if hit is None or training is _ANY_TRAINING:
        return hit
    stored = json.loads(hit["config"]) if isinstance(hit.get("config"), str) else hit.get("config") or {}
    return hit if stored.get("training") == training else None


def record(store: Store, *, key: StoreKey, config: Mapping[str, Any], metrics: Mapping[str, Any], started: float,
           run: str) -> None:
    """Write one finished evaluation to the benchmark store (durable before this returns).

    Args:
        started: ``time.perf_counter()`` when the evaluation began (the row's ``cost_s``).
    """
    store.put(key.row(config=config, metrics=metrics, cost_s=time.perf_counter() - started, run=run,
                      created_at=time.time()))


def require_finite(*keys: str, error: str) -> Callable[[Mapping[str, Any]], str | None]:
    """A finite check for :class:`TrialSequence`: ``error`` when one of ``keys`` (no keys: any value) is not
    a finite number, else None. A key that is missing counts as not finite."""

    def check(metrics: Mapping[str, Any]) -> str | None:
        values = [metrics.get(k, math.nan) for k in keys] if keys else list(metrics.values())
        return None if all(math.isfinite(v) for v in values) else error

    return check


def _replayed_report(state: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """The metrics of the epoch a resumed fit continues after, when the state holds them and it is not the
    last epoch (a fit resumed after its last epoch is finished, not replayed); else None."""
    metrics = state.get("metrics") if isinstance(state, Mapping) else None
    if not isinstance(metrics, Mapping) or "epoch" not in metrics or "epochs" not in metrics:
        return None
    return dict(metrics) if int(metrics["epoch"]) < int(metrics["epochs"]) else None


def _tune_report(metrics: dict[str, Any]) -> None:
    from ray import tune

    tune.report(metrics)


def run_children(config: Mapping[str, Any], evaluate: Callable[[dict[str, Any], Report], Any], *, metric: str,
                 mode: str, report: Report | None = None) -> None:
    """A trial of one config or, from a :class:`search_algos.batch.BatchSearcher`, of several in turn.

    Args:
        config: the trial config: one config, or ``{"children": [config, ...]}``.
        evaluate: ``evaluate(config, report)`` runs one config's trial sequence (``TrialSequence.run``) with
            ``report`` as its report function.
        metric, mode: the stage's: which child's report the trial's own figure is.
        report: Tune's ``report`` when None.

    A plain config is one ``evaluate`` with ``report``. A batch collects each child's last report and
    reports once: ``{**the best child's report, "children": [every child's last report, in order]}`` (the
    best finite ``metric`` under ``mode``, the earliest on ties; the first child's when none is finite), so
    Tune, the progress lines and the stage's frame (``orchestrator.results``) see a valid trial result. A
    child that raises (not a failed evaluation: those are reports) fails the trial, and a retried trial is
    served from the store what its first try recorded.
    """
    from search_algos.batch import CHILDREN_KEY

    report = report or _tune_report
    if CHILDREN_KEY not in config:
        evaluate(dict(config), report)
        return
    results: list[dict[str, Any]] = []
    for child in config[CHILDREN_KEY]:
        reports: list[dict[str, Any]] = []
        evaluate(dict(child), reports.append)
        results.append(reports[-1] if reports else {metric: math.nan, "status": "failed", "error": "no report"})
    finite = [r for r in results if r.get("status") != "failed" and is_finite_number(r.get(metric))]
    top = (min if mode == "min" else max)(finite, key=lambda r: float(r[metric])) if finite else results[0]
    report({**top, CHILDREN_KEY: results})


def is_finite_number(value: Any) -> bool:
    """Whether ``value`` is a finite int or float (not a bool, not NaN or +-inf): a usable metric."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


@dataclass(frozen=True)
class TrialSequence:
    """The steps of one evaluation trial (module docstring), set up once per trial.

    Attributes:
        base: Keys every report carries (arch, arch_key, epochs, stage, ...).
        metric: The stage's metric: NaN in a failed report.
        store: The benchmark store client; with ``key=None`` nothing is looked up or recorded.
        key: The evaluation's store key.
        config: The store row's ``config`` (``{"arch", "epochs", "training", ...}``); a stored hit must
            have the same ``training``.
        run_name: The row's ``run``.
        checkpoint: Where the epoch hook saves the training state and where ``fit`` resumes from.
        shown: What a report shows of a result (an epoch's metrics, the final result, a hit's metrics).
        stored: What the store keeps of the final result.
        check: ``check(stored metrics)`` -> an error text when the result is not a valid evaluation
            (:func:`require_finite`), else None.
        accept: A hit is served only when ``accept(its metrics)`` holds (e.g. it holds predictions).
        settle: ``settle(stored metrics, cached)`` runs after the record and before the final report (keep
            the weights, write a fold's predictions, drop the checkpoint).
        failed_fields: Keys a failed report sets after ``base`` (e.g. an empty arch when none was found).
        failures: The method's "normal" exceptions, reported as failed evaluations like a divergence.
        report: The report function; Tune's ``report`` when None.
    """

    base: Mapping[str, Any]
    metric: str
    store: Store | None = None
    key: StoreKey | None = None
    config: Mapping[str, Any] = field(default_factory=dict)
    run_name: str = ""
    checkpoint: str | None = None
    shown: Callable[[Mapping[str, Any]], dict[str, Any]] = dict
    stored: Callable[[Mapping[str, Any]], dict[str, Any]] = plain_metrics
    check: Callable[[Mapping[str, Any]], str | None] | None = None
    accept: Callable[[Mapping[str, Any]], bool] | None = None
    settle: Callable[[Mapping[str, Any], bool], None] | None = None
    failed_fields: Mapping[str, Any] = field(default_factory=dict)
    failures: tuple[type[BaseException], ...] = ()
    report: Report | None = None

    def run(self, fit: Callable[[EpochHook, dict[str, Any] | None], Mapping[str, Any]]) -> Outcome:
        """Serve the stored result, or fit, record and report; returns what happened.

        Args:
            fit: ``fit(epoch, resume_state) -> result``. ``resume_state`` is the state an earlier try
                saved at ``checkpoint`` (None if none). ``fit`` calls ``epoch(metrics, state, last=...)``
                after each epoch: ``state`` (optional) is saved to ``checkpoint`` first; an epoch with
                ``last=False`` is reported as it is; the one with ``last=True`` is the result (checked,
                recorded, reported as final), so the scheduler sees it once. A ``fit`` that hands no last
                epoch (resumed after it, or trained elsewhere) returns the result, which is then finished.
        """
        report = self.report or _tune_report
        if self.key is not None:
            training = self.config["training"] if "training" in self.config else _ANY_TRAINING
            hit = lookup(self.store, self.key, training=training)
            if hit is not None and (self.accept is None or self.accept(hit["metrics"])):
                if self.settle is not None:
                    self.settle(hit["metrics"], True)
                report(self._ok(hit["metrics"], cached=True))
                return "cached"
        started = time.perf_counter()
        outcome: Outcome | None = None

        def epoch(metrics: Mapping[str, Any], state: Mapping[str, Any] | None = None, *, last: bool = False) -> None:
            nonlocal outcome
            if state is not None and self.checkpoint:
                from orchestrator.evaluate import save_state

                save_state(dict(state), self.checkpoint)
            if last:
                outcome = self._finish(metrics, started, report)
            else:
                report(self._ok(metrics, cached=False))

        resume = self._resume_state()
        replay = _replayed_report(resume)
        if replay is not None:
            # The saved epoch's report, again, marked: a scheduler that missed it (the driver died before it
            # got there) ranks the trial at that epoch as the uninterrupted run did; one that saw it ignores it
            # (orchestrator.schedulers). Nothing trains twice.
            report({**self._ok(replay, cached=False), "replayed": True})
        try:
            result = fit(epoch, resume)
        except (FloatingPointError, *self.failures) as exc:  # divergence: a normal event, a failed evaluation
            report(self._failed({self.metric: math.nan}, str(exc)))
            return "failed"
        return outcome if outcome is not None else self._finish(result, started, report)

    def _resume_state(self) -> dict[str, Any] | None:
        if not self.checkpoint:
            return None
        from orchestrator.evaluate import load_state

        return load_state(self.checkpoint)

    def _finish(self, result: Mapping[str, Any], started: float, report: Report) -> Outcome:
        metrics = self.stored(result)
        error = self.check(metrics) if self.check is not None else None
        if error is not None:
            report(self._failed({**self.shown(result), self.metric: math.nan}, error))
            return "failed"
        if self.key is not None:
            record(self.store, key=self.key, config=self.config, metrics=metrics, started=started, run=self.run_name)
        if self.settle is not None:
            self.settle(metrics, False)
        report(self._ok(result, cached=False))
        return "ok"

    def _ok(self, metrics: Mapping[str, Any], *, cached: bool) -> dict[str, Any]:
        return {**self.shown(metrics), **self.base, "cached": cached, "status": "ok", "error": ""}

    def _failed(self, metrics: Mapping[str, Any], error: str) -> dict[str, Any]:
        return {**metrics, **self.base, **self.failed_fields, "cached": False, "status": "failed", "error": error}
