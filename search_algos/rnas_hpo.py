"""Optuna over RNAS-MER's architecture optimiser (learning rate, weight decay), with a trial budget.

Paper: ``rnas-mer-micro-expression-nas.txt`` (in ``shared/papers``), §3 and Algorithm 1: alpha, eta and
beta are optimised by gradient descent in the bilevel search; the paper gives no rate for that step,
so its learning rate and weight decay are what this searcher tunes.

Ray Tune's :class:`~ray.tune.search.optuna.OptunaSearch` suggests forever; facenas stages run a
searcher until it says ``FINISHED`` (``num_samples=-1``), so this subclass stops after ``num_samples``
suggestions and reports its best for ``best.json``. The count lives in the searcher's ``__dict__``,
which OptunaSearch's own ``save``/``restore`` carry, so a resumed stage does not start over.
"""

from __future__ import annotations

import math
from typing import Any

from ray import tune
from ray.tune.search import Searcher
from ray.tune.search.optuna import OptunaSearch

__all__ = ["ArchLrSearch"]


class ArchLrSearch(OptunaSearch):
    """TPE over ``arch_lr`` and ``arch_weight_decay`` (log-uniform), ``num_samples`` trials, seeded.

    Args:
        num_samples: trials to suggest before ``FINISHED``.
        arch_lr: ``(low, high)`` of the architecture learning rate.
        arch_weight_decay: ``(low, high)`` of its weight decay.
        metric, mode: what the trials report and which way is better.
        seed: Optuna sampler seed.
    """

    def __init__(self, *, num_samples: int, arch_lr: tuple[float, float], arch_weight_decay: tuple[float, float],
                 metric: str, mode: str, seed: int) -> None:
        if num_samples < 1:
            raise ValueError(f"num_samples must be >= 1, got {num_samples}")
        space = {"arch_lr": tune.loguniform(*arch_lr), "arch_weight_decay": tune.loguniform(*arch_weight_decay)}
        super().__init__(space=space, metric=metric, mode=mode, seed=seed)
        self.num_samples = num_samples
        self.issued = 0
        self.finished: dict[str, dict[str, Any]] = {}
        self.live: dict[str, dict[str, Any]] = {}

    def suggest(self, trial_id: str) -> dict[str, Any] | str | None:
        if self.issued >= self.num_samples:
            return Searcher.FINISHED
        config = super().suggest(trial_id)
        if isinstance(config, dict):
            self.issued += 1
            self.live[trial_id] = dict(config)
        return config

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
        if trial_id not in self.live:
            # not ours, or reported twice: ignored, as by every facenas searcher (Ray's OptunaSearch raises a
            # bare KeyError for the first, and a repeat would overwrite the trial's record and value here)
            return
        value = None if error else _finite((result or {}).get(self.metric))
        # Optuna is told finite values only; anything else is a failed trial. Ray's OptunaSearch passes the
        # value on as it is: Optuna refuses NaN (a warning, the trial left unfinished) but takes +-inf as a
        # COMPLETE value, so TPE would take a trial reporting +inf (under max) for the best and sample near it.
        super().on_trial_complete(trial_id, result=result if value is not None else None, error=value is None)
        config = self.live.pop(trial_id, {})
        self.finished[trial_id] = {**config, "value": value}

    def summary(self) -> dict[str, Any]:
        scored = [t for t in self.finished.values() if t["value"] is not None]
        sign = 1.0 if self.mode == "max" else -1.0
        best = max(scored, key=lambda t: sign * t["value"]) if scored else None
        return {"hpo": "optuna", "trials": len(self.finished), "best_hpo": best}


def _finite(value: Any) -> float | None:
    """``value`` as a float when it is a finite number (bools are not), else ``None``."""
    if isinstance(value, bool):
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None
