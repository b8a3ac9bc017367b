"""Optuna-sampled training hyper-parameters beside the architecture: :class:`HpoSearcher` (config ``hpo``).

:class:`HpoSearcher` wraps an architecture searcher: the architecture still comes from it, and for every
trial an Optuna sampler (TPE, seeded) draws the training hyper-parameters of the ``hpo`` space, which the
trial uses instead of its usual training values; Optuna is told each trial's final metric. The drawn values
travel in the trial config as ``{"hpo": {...}}``. The pipeline wraps the searcher of every stage whose
trials train a candidate for several epochs (``Stage.tunable``) when the config has an ``hpo`` section; in
plain Ray Tune code, wrap any :class:`~search_algos.base.ArchSearcher` yourself and read
``config["hpo"]`` in the trainable.

``hpo`` syntax (a mapping of training keys, :data:`HPO_KEYS`, to a distribution)::

    hpo:
      lr: [loguniform, 1.0e-3, 0.1]     # float on a log scale, low > 0
      momentum: [uniform, 0.8, 0.95]    # float
      batch_size: [choice, 16, 32]      # one of the listed values
      cutout: [int, 0, 4]               # integer, both ends included
"""

from __future__ import annotations

import math
from typing import Any

import optuna
from ray.tune.search import Searcher

from search_algos.base import ArchSearcher

__all__ = ["HPO_KEYS", "HpoSearcher", "distributions", "hpo_problems"]

# training keys a trial may take from the hpo space, and whether each must be an integer
HPO_KEYS: dict[str, bool] = {"lr": False, "momentum": False, "weight_decay": False, "batch_size": True, "cutout": True}
_KINDS = ("loguniform", "uniform", "int", "choice")


def hpo_problems(space: dict[str, Any]) -> list[str]:
    """Every problem of an ``hpo`` mapping, one message each (empty when valid)."""
    problems = []
    for key, spec in space.items():
        where = f"hpo.{key}"
        if key not in HPO_KEYS:
            problems.append(f"{where}: unknown training key; valid keys: {', '.join(HPO_KEYS)}")
            continue
        if not isinstance(spec, list) or not spec or spec[0] not in _KINDS:
            problems.append(f"{where}: expected [KIND, ...] with KIND one of {', '.join(_KINDS)}, got {spec!r}")
            continue
        kind, args = spec[0], spec[1:]
        numeric = all(isinstance(a, (int, float)) and not isinstance(a, bool) for a in args)
        if kind == "choice":
            if not args or not numeric:
                problems.append(f"{where}: [choice, v1, v2, ...] needs at least one number, got {spec!r}")
            elif HPO_KEYS[key] and not all(isinstance(a, int) for a in args):
                problems.append(f"{where}: {key} takes integers, got {spec!r}")
            continue
        if len(args) != 2 or not numeric or not args[0] < args[1]:
            problems.append(f"{where}: [{kind}, low, high] needs two numbers with low < high, got {spec!r}")
        elif kind == "loguniform" and args[0] <= 0:
            problems.append(f"{where}: loguniform needs low > 0, got low={args[0]}")
        elif HPO_KEYS[key] and kind != "int":
            problems.append(f"{where}: {key} takes integers; use [int, low, high] or [choice, ...]")
        elif kind == "int" and not all(isinstance(a, int) for a in args):
            problems.append(f"{where}: [int, low, high] needs integer bounds, got {spec!r}")
    return problems


def distributions(space: dict[str, list[Any]]) -> dict[str, optuna.distributions.BaseDistribution]:
    """Optuna distributions of a valid ``hpo`` mapping."""
    out: dict[str, optuna.distributions.BaseDistribution] = {}
    for key, (kind, *args) in space.items():
        if kind == "choice":
            out[key] = optuna.distributions.CategoricalDistribution(list(args))
        elif kind == "int":
            out[key] = optuna.distributions.IntDistribution(int(args[0]), int(args[1]))
        else:
            out[key] = optuna.distributions.FloatDistribution(float(args[0]), float(args[1]), log=kind == "loguniform")
    return out


class HpoSearcher(ArchSearcher):
    """An architecture searcher plus Optuna-sampled training hyper-parameters for each trial.

    Args:
        inner: the architecture searcher (its suggestions, results, state and summary are kept).
        space: a valid ``hpo`` mapping (:func:`hpo_problems`).
        seed: seed of the Optuna TPE sampler.

    State (JSON): the inner searcher's, every told Optuna trial (params, value or failure) and the
    params of trials still running; a restored searcher rebuilds the study from them and re-enqueues
    the running ones, so their results are told to the same parameters.
    """

    def __init__(self, inner: ArchSearcher, space: dict[str, list[Any]], *, seed: int) -> None:
        super().__init__(metric=inner.metric, mode=inner.mode, seed=seed)
        self.inner = inner
        self.space = {k: list(v) for k, v in space.items()}
        self._dists = distributions(self.space)
        self._told: list[dict[str, Any]] = []
        self._running: dict[str, tuple[Any, dict[str, Any]]] = {}  # trial_id -> (optuna trial, params)
        self._asked = 0
        self._study = self._new_study()

    def _new_study(self) -> optuna.Study:
        optuna.logging.set_verbosity(optuna.logging.WARNING)
        return optuna.create_study(direction="maximize" if self.mode == "max" else "minimize")

    def suggest(self, trial_id: str) -> dict[str, Any] | str | None:
        config = self.inner.suggest(trial_id)
        if config is None or config == Searcher.FINISHED:
            return config
        # A sampler seeded by (seed, draw index) sees the same history after a restore as before it,
        # so a resumed search draws the same values (one long-lived sampler's RNG would not be saved).
        self._study.sampler = optuna.samplers.TPESampler(seed=(self.seed * 1_000_003 + self._asked) % 2**32)
        self._asked += 1
        trial = self._study.ask(self._dists)
        self._running[trial_id] = (trial, dict(trial.params))
        return {**config, "hpo": dict(trial.params)}

    def on_trial_result(self, trial_id: str, result: dict[str, Any]) -> None:
        self.inner.on_trial_result(trial_id, result)

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
        self.inner.on_trial_complete(trial_id, result, error)
        if trial_id not in self._running:
            return
        trial, params = self._running.pop(trial_id)
        value = None if error or not result else result.get(self.metric)
        if isinstance(value, (int, float)) and math.isfinite(value):
            self._study.tell(trial, float(value))
            self._told.append({"trial_id": trial_id, "params": params, "value": float(value)})
        else:
            self._study.tell(trial, state=optuna.trial.TrialState.FAIL)
            self._told.append({"trial_id": trial_id, "params": params, "value": None})

    def get_state(self) -> dict[str, Any]:
        return {
            "inner": self.inner.get_state(),
            "space": self.space,
            "told": [dict(t) for t in self._told],
            "running": {tid: params for tid, (_t, params) in self._running.items()},
            "asked": self._asked,
        }

    def set_state(self, state: dict[str, Any]) -> None:
        self.inner.set_state(state["inner"])
        self._told = [dict(t) for t in state["told"]]
        self._asked = int(state["asked"])
        self._study = self._new_study()
        for t in self._told:
            failed = t["value"] is None
            self._study.add_trial(optuna.trial.create_trial(
                params=t["params"], distributions=self._dists, value=None if failed else t["value"],
                state=optuna.trial.TrialState.FAIL if failed else optuna.trial.TrialState.COMPLETE,
            ))
        self._running = {}
        for tid, params in state["running"].items():
            self._study.enqueue_trial(params)
            trial = self._study.ask(self._dists)
            self._running[tid] = (trial, dict(trial.params))

    def summary(self) -> dict[str, Any]:
        done = [t for t in self._told if t["value"] is not None]
        pick = max if self.mode == "max" else min
        best = pick(done, key=lambda t: t["value"]) if done else None
        return {**self.inner.summary(), "hpo": {"space": self.space, "trials": [dict(t) for t in self._told],
                                                "best_params": best["params"] if best else None}}
