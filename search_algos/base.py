"""The extension point for searchers: a Ray Tune ``Searcher`` that proposes architectures.

Every facenas searcher suggests trial configs of the form ``{"arch": <encoding JSON>, "epochs": int}``
(plus searcher-specific keys), owns its random generator (seeded), keeps its whole state as plain
JSON (so a resumed run continues exactly, and nothing is unpickled from the run directory), and
reports its own figures for ``best.json`` through :meth:`ArchSearcher.summary`.

When Tune calls each method (ray 2.60):
- ``suggest(trial_id)``: whenever a trial slot is free; return a config, ``None`` (not ready: waiting
  for results) or ``Searcher.FINISHED``.
- ``on_trial_result``: every intermediate report; ``on_trial_complete``: once per trial, with
  ``error=True`` (and possibly ``result=None``) when it failed.
- ``save``/``restore``: with each experiment checkpoint and on ``Tuner.restore``.
"""

from __future__ import annotations

import json
import math
from abc import abstractmethod
from collections.abc import Callable, Mapping
from typing import Any

from ray.tune.search import Searcher

from search_algos.durable import write_text_durable

__all__ = ["REFERENCE_KEY", "ArchSearcher", "best_of", "score_from_json", "score_of", "score_to_json"]

# A trial config key a searcher sets on the evaluations its later verdicts are measured against: a trial
# scheduler must train them in full (orchestrator.schedulers.StageScheduler; macro-micro's references).
REFERENCE_KEY = "reference"


def score_of(result: dict[str, Any] | None, metric: str, mode: str, *, error: bool = False) -> float:
    """The result's metric as a score to maximise; failures, NaN and ±inf count as ``-inf``."""
    if error or not result or metric not in result:
        return -math.inf
    try:
        value = float(result[metric])
    except (TypeError, ValueError):
        return -math.inf
    if not math.isfinite(value):
        return -math.inf
    return value if mode == "max" else -value


# JSON has no infinities: a failed evaluation's score (-inf) is stored as null, so saved states are strict
# JSON (state files written before this read back too: Python's json reads their -Infinity).
def score_to_json(score: float) -> float | None:
    """A score as strict JSON: finite scores unchanged, a failure (``-inf``, NaN) ``None``."""
    return score if math.isfinite(score) else None


def score_from_json(value: float | None) -> float:
    """Inverse of :func:`score_to_json`: ``None`` is a failure (``-inf``)."""
    return -math.inf if value is None else float(value)


def best_of(scores: Mapping[int, float], config_of: Callable[[int], dict[str, Any]], metric: str,
            mode: str) -> dict[str, Any] | None:
    """The best finite score of ``scores`` as a plain dict, or ``None`` when none is finite.

    Args:
        scores: suggestion index -> score to maximise (:func:`score_of`; ``-inf`` for a failure).
        config_of: suggestion index -> the config suggested (``{"arch", "epochs", ...}``).
        metric, mode: the searcher's; ``value`` is in the metric's own units (``-score`` under ``min``).

    Returns:
        ``{"index", **config, "metric", "value"}``; ties keep the earliest index.
    """
    finite = [i for i, s in scores.items() if math.isfinite(s)]
    if not finite:
        return None
    index = max(finite, key=lambda i: (scores[i], -i))
    value = scores[index] if mode == "max" else -scores[index]
    return {"index": index, **config_of(index), "metric": metric, "value": value}


class ArchSearcher(Searcher):
    """Base of facenas searchers: metric/mode given at construction, JSON state, seeded.

    Args:
        metric: name of the reported value to optimise (e.g. ``val_acc``).
        mode: ``"max"`` or ``"min"``.
        seed: seed of the searcher's own generator; the same seed gives the same search.
    """

    def __init__(self, *, metric: str, mode: str, seed: int) -> None:
        if mode not in ("max", "min"):
            raise ValueError(f"mode must be 'max' or 'min', got {mode!r}")
        super().__init__(metric=metric, mode=mode)
        self.seed = int(seed)

    # -- state -----------------------------------------------------------------------------------
    @abstractmethod
    def get_state(self) -> dict[str, Any]:
        """Everything needed to continue exactly: plain JSON values only."""

    @abstractmethod
    def set_state(self, state: dict[str, Any]) -> None:
        """Inverse of :meth:`get_state`."""

    def save(self, checkpoint_path: str) -> None:
        state = {"class": type(self).__name__, "state": self.get_state()}
        # Tune passes a temporary name and renames it into place itself; writing durably anyway keeps a
        # direct caller's file whole and has the content on disk before Tune's rename.
        write_text_durable(checkpoint_path, json.dumps(state))

    def restore(self, checkpoint_path: str) -> None:
        with open(checkpoint_path) as fh:
            saved = json.load(fh)
        if saved.get("class") != type(self).__name__:
            raise ValueError(
                f"searcher state in {checkpoint_path} belongs to {saved.get('class')!r}, "
                f"not {type(self).__name__!r}; resume with the run's own config"
            )
        self.set_state(saved["state"])

    # -- reporting -------------------------------------------------------------------------------
    def summary(self) -> dict[str, Any]:
        """Searcher-specific figures for ``best.json`` (e.g. evaluations used, phases)."""
        return {}

    def score(self, result: dict[str, Any] | None, *, error: bool = False) -> float:
        return score_of(result, self.metric, self.mode, error=error)
