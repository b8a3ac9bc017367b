"""facenas's own figures as Ray metrics (``ray.util.metrics``), recorded in the driver by a Tune callback.

Ray exports them with its own metrics on each node's metrics endpoint (Prometheus text; the port is the
node's ``MetricsExportPort`` in ``ray.nodes()``), and the dashboard's Metrics page reads them through
Prometheus/Grafana when those are set up. Ray prefixes every name with ``ray_`` and a counter's with a
``_total`` suffix on export, e.g. ``ray_facenas_trials_finished_total{stage="search",run="quickstart"}``.

What is recorded (:data:`METRICS`): per stage, trials finished (whatever their outcome) and failed (the
trial raised, reported ``status: failed`` or a value that is not finite: the rule of ``best.json``), and
the best value so far of the stage's metric; per run, the benchmark store's rows, lookups (hits and
misses) and puts (``StoreClient.stats()``: lookups and puts since the store's actor started). Trial counts
start at zero in each driver process: a resumed run counts what it runs after the resume.

Without ``ray[default]`` (the ``dashboard`` extra) Ray has no metrics agent: the figures are recorded and
go nowhere, and the run is the same. A failing store call never stops the run: the store's figures are
then left as they were.
"""

from __future__ import annotations

import copy
import logging
import math
import time
from dataclasses import dataclass
from functools import cache
from typing import TYPE_CHECKING, Any

from ray import tune

from search_algos.batch import CHILDREN_KEY

if TYPE_CHECKING:
    from orchestrator.store import StoreClient

__all__ = ["METRICS", "RayMetrics", "StageFigures", "store_figures", "trial_value"]

_log = logging.getLogger(__name__)

# name -> (kind, tag keys, description); names as recorded (Ray adds ``ray_`` and, to counters, ``_total``).
METRICS: dict[str, tuple[str, tuple[str, ...], str]] = {
    "facenas_trials_finished": ("counter", ("stage", "run"), "trials of the stage that ended, failed ones included"),
    "facenas_trials_failed": ("counter", ("stage", "run"), "trials of the stage that raised or reported no finite value"),
    "facenas_best_value": ("gauge", ("stage", "run"), "best value so far of the stage's metric (its mode: max or min)"),
    "facenas_store_rows": ("gauge", ("run",), "evaluations in the benchmark store"),
    "facenas_store_lookups": ("gauge", ("run",), "benchmark store lookups since its actor started"),
    "facenas_store_hits": ("gauge", ("run",), "benchmark store lookups that found a stored evaluation"),
    "facenas_store_misses": ("gauge", ("run",), "benchmark store lookups that found none"),
    "facenas_store_puts": ("gauge", ("run",), "evaluations written to the benchmark store since its actor started"),
}

_STORE_EVERY_S = 10.0  # between two reads of the store's figures while trials run (Tune's loop calls on_step often)
_STORE_RETRY_S = 2.0  # a metric read waits this long for a restarting store, not the client's minute


def trial_value(result: dict[str, Any], metric: str) -> float | None:
    """The trial's value of ``metric``, or None when the trial failed (``status: failed``, NaN, +-inf, none)."""
    value = result.get(metric)
    if result.get("status") == "failed" or not isinstance(value, (int, float)) or isinstance(value, bool):
        return None
    return float(value) if math.isfinite(value) else None


@dataclass
class StageFigures:
    """What one stage's trials add up to so far (pure; the callback exports it)."""

    mode: str
    finished: int = 0
    failed: int = 0
    best: float | None = None

    def add(self, value: float | None) -> None:
        """Count one ended trial; ``value`` None is a failed one."""
        self.finished += 1
        if value is None:
            self.failed += 1
        elif self.best is None or (value > self.best if self.mode == "max" else value < self.best):
            self.best = value


def store_figures(stats: dict[str, Any]) -> dict[str, float]:
    """The store's figures by metric name, from ``StoreClient.stats()`` (``rows``, ``lookups``, ``hits``, ``puts``).

    Returns:
        ``{"facenas_store_rows": ..., "facenas_store_lookups": ..., "facenas_store_hits": ...,
        "facenas_store_misses": ..., "facenas_store_puts": ...}``, leaving out a figure whose input is missing.
    """
    known = {key: float(stats[key]) for key in ("rows", "lookups", "hits", "puts")
             if isinstance(stats.get(key), (int, float)) and not isinstance(stats.get(key), bool)}
    if "lookups" in known and "hits" in known:
        known["misses"] = known["lookups"] - known["hits"]
    return {f"facenas_store_{key}": value for key, value in known.items()}


@cache
def _instrument(name: str) -> Any:
    """The process's one Ray metric object for ``name`` (made on first use: it needs Ray, and does not pickle)."""
    from ray.util.metrics import Counter, Gauge

    kind, tag_keys, description = METRICS[name]
    return (Counter if kind == "counter" else Gauge)(name, description=description, tag_keys=tag_keys)


class RayMetrics(tune.Callback):
    """A Tune callback (in the driver) that records one stage's figures as Ray metrics (:data:`METRICS`).

    Args:
        stage: the stage's name (tag ``stage``).
        run: the run's name (tag ``run``).
        metric: the stage's reported metric (e.g. ``val_acc``).
        mode: ``max`` or ``min``: which value is best.
        store: the benchmark store client (``orchestrator.store.StoreClient``), or None to leave the
            store's figures out.
    """

    def __init__(self, *, stage: str, run: str, metric: str, mode: str, store: StoreClient | None = None) -> None:
        self.stage, self.run, self.metric = stage, run, metric
        self.figures = StageFigures(mode)
        self.store = _quick_copy(store) if store is not None else None
        self._store_read_at = float("-inf")

    # Tune pickles its callbacks with the experiment (tuner.pkl): nothing in here holds a Ray handle
    # (StoreClient pickles its address only) and the metric objects live in _instrument's cache.

    def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        result = trial.last_result or {}
        children = result.get(CHILDREN_KEY)
        for r in children if isinstance(children, list) and children else [result]:  # a batch: each evaluation
            self._count(trial_value(r if isinstance(r, dict) else {}, self.metric))
        self._export_store()

    def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._ended(None)

    def on_step(self, iteration: int, trials: list, **info: Any) -> None:
        if time.monotonic() - self._store_read_at >= _STORE_EVERY_S:
            self._export_store()

    def on_experiment_end(self, trials: list, **info: Any) -> None:
        self._export_store()

    def _ended(self, value: float | None) -> None:
        self._count(value)
        self._export_store()

    def _count(self, value: float | None) -> None:
        self.figures.add(value)
        tags = {"stage": self.stage, "run": self.run}
        _safely(lambda: _instrument("facenas_trials_finished").inc(1, tags=tags))
        if value is None:
            _safely(lambda: _instrument("facenas_trials_failed").inc(1, tags=tags))
        elif self.figures.best == value:
            _safely(lambda: _instrument("facenas_best_value").set(value, tags=tags))

    def _export_store(self) -> None:
        self._store_read_at = time.monotonic()
        if self.store is None:
            return
        try:
            figures = store_figures(self.store.stats())
        except Exception as exc:  # the store restarting or gone: keep the last figures, never stop the run
            _log.debug("benchmark store figures not read: %s", exc)
            return
        for name, value in figures.items():
            _safely(lambda name=name, value=value: _instrument(name).set(value, tags={"run": self.run}))


def _quick_copy(store: StoreClient) -> StoreClient:
    """A copy of the store client whose calls give up after a few seconds (a metric must not stall Tune)."""
    probe = copy.copy(store)
    if hasattr(probe, "retry_s"):
        probe.retry_s = min(float(probe.retry_s), _STORE_RETRY_S)
    return probe


def _safely(record: Any) -> None:
    try:
        record()
    except Exception as exc:  # a metric must never break the run
        _log.debug("Ray metric not recorded: %s", exc)
