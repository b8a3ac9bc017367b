"""Evaluate a given list of architectures (retraining the winners of a search, hand-made baselines)."""

from __future__ import annotations

from typing import Any

from ray.tune.search import Searcher

from search_algos.base import ArchSearcher, best_of, score_from_json, score_to_json

__all__ = ["FixedArchSearcher"]


class FixedArchSearcher(ArchSearcher):
    """Suggests ``archs`` in order, each trained for ``epochs``; then FINISHED.

    With ``seeds``, every architecture is trained once per training seed (architecture-major order) and
    each suggestion carries its ``"seed"``: the paper reports final accuracies as means over runs, and
    one training of a small network on a small dataset is a noisy estimate of its accuracy.

    Failed evaluations (an error, no result, a NaN or infinite metric) are never the best.

    Args:
        archs: architecture encodings (JSON text), evaluated in this order.
        epochs: training epochs of every evaluation.
        seeds: training seeds; ``None`` leaves the seed to the trainable (the run's seed).
        metric, mode, seed: see :class:`ArchSearcher`.
    """

    def __init__(
        self,
        archs: list[str],
        *,
        epochs: int = 1,
        metric: str,
        mode: str,
        seed: int = 0,
        seeds: list[int] | None = None,
    ) -> None:
        if not archs:
            raise ValueError("archs must list at least one architecture")
        if epochs < 1:
            raise ValueError(f"epochs must be >= 1, got {epochs}")
        if seeds is not None and (not seeds or len(set(seeds)) != len(seeds)):
            raise ValueError(f"seeds must be distinct and at least one, got {seeds!r}")
        super().__init__(metric=metric, mode=mode, seed=seed)
        self.seeds = list(seeds) if seeds is not None else None
        self.archs = [a for a in archs for _ in (self.seeds or [None])]
        self.epochs = epochs
        self._issued = 0
        self._live: dict[str, int] = {}
        self._scores: dict[int, float] = {}

    def suggest(self, trial_id: str) -> dict[str, Any] | str | None:
        if self._issued >= len(self.archs):
            return Searcher.FINISHED
        index = self._issued
        self._issued += 1
        self._live[trial_id] = index
        return self._config(index)

    def _config(self, index: int) -> dict[str, Any]:
        suggestion: dict[str, Any] = {"arch": self.archs[index], "epochs": self.epochs}
        if self.seeds is not None:
            suggestion["seed"] = self.seeds[index % len(self.seeds)]
        return suggestion

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
        index = self._live.pop(trial_id, None)
        if index is not None:
            self._scores[index] = self.score(result, error=error)

    def get_state(self) -> dict[str, Any]:
        scores = {str(k): score_to_json(v) for k, v in self._scores.items()}
        return {"issued": self._issued, "live": self._live, "scores": scores}

    def set_state(self, state: dict[str, Any]) -> None:
        self._issued = int(state["issued"])
        self._live = {k: int(v) for k, v in state["live"].items()}
        self._scores = {int(k): score_from_json(v) for k, v in state["scores"].items()}

    def best_result(self) -> dict[str, Any] | None:
        """The best finished evaluation: ``{"index", "arch", "epochs", ["seed",] "metric", "value"}``
        (``value`` in the metric's own units); ``None`` before the first finite result."""
        return best_of(self._scores, self._config, self.metric, self.mode)

    def summary(self) -> dict[str, Any]:
        return {"evaluations": len(self._scores), "archs": len(self.archs) // len(self.seeds or [None])}
