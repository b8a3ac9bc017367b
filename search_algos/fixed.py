"""Evaluate a given list of architectures (retraining the winners of a search, hand-made baselines, the rows
of a benchmark still missing)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from ray.tune.search import Searcher

from search_algos.base import ArchSearcher, best_of, score_from_json, score_to_json

__all__ = ["FixedArchSearcher"]


class FixedArchSearcher(ArchSearcher):
    """Suggests ``archs`` in order, each trained for ``epochs``; then FINISHED.

    With ``seeds``, every architecture is trained once per training seed (architecture-major order) and
    each suggestion carries its ``"seed"``: the paper reports final accuracies as means over runs, and
    one training of a small network on a small dataset is a noisy estimate of its accuracy.

    With ``extras``, each architecture's suggestion carries its own further keys (e.g. the ``dataset_id`` a
    benchmark row is evaluated on: the same architecture may stand several times, once per dataset). Such a
    list may be empty (nothing left to evaluate: the search finishes at once).

    Failed evaluations (an error, no result, a NaN or infinite metric) are never the best. The state holds
    the list itself, so a restored searcher continues with the list it started with, even where the
    caller's list has changed meanwhile (a benchmark's missing rows shrink as they are stored).

    Args:
        archs: architecture encodings (JSON text), evaluated in this order.
        epochs: training epochs of every evaluation.
        seeds: training seeds; ``None`` leaves the seed to the trainable (the run's seed).
        extras: per architecture, further keys of its trial config (plain JSON values; not ``arch``,
            ``epochs`` nor ``seed``), one mapping per entry of ``archs``.
        metric, mode, seed: see :class:`ArchSearcher`.

    Raises:
        ValueError: when ``archs`` is empty without ``extras``, ``epochs < 1``, ``seeds`` repeat or are
            empty, or ``extras`` does not match ``archs`` or sets the searcher's own keys.
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
        extras: Sequence[Mapping[str, Any]] | None = None,
    ) -> None:
        if not archs and extras is None:
            raise ValueError("archs must list at least one architecture")
        if epochs < 1:
            raise ValueError(f"epochs must be >= 1, got {epochs}")
        if seeds is not None and (not seeds or len(set(seeds)) != len(seeds)):
            raise ValueError(f"seeds must be distinct and at least one, got {seeds!r}")
        if extras is not None:
            _check_extras(extras, len(archs))
        super().__init__(metric=metric, mode=mode, seed=seed)
        self.seeds = list(seeds) if seeds is not None else None
        self.archs = [a for a in archs for _ in (self.seeds or [None])]
        # parallel to self.archs (repeated per seed like it), None without extras
        self.extras = None if extras is None else [dict(e) for e in extras for _ in (self.seeds or [None])]
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
        if self.extras is not None:
            suggestion.update(self.extras[index])
        if self.seeds is not None:
            suggestion["seed"] = self.seeds[index % len(self.seeds)]
        return suggestion

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
        index = self._live.pop(trial_id, None)
        if index is not None:
            self._scores[index] = self.score(result, error=error)

    def get_state(self) -> dict[str, Any]:
        scores = {str(k): score_to_json(v) for k, v in self._scores.items()}
        extras = None if self.extras is None else [dict(e) for e in self.extras]
        return {"issued": self._issued, "live": self._live, "scores": scores, "archs": list(self.archs),
                "extras": extras}  # fmt: skip

    def set_state(self, state: dict[str, Any]) -> None:
        if "archs" in state:  # state files written before the list was saved keep the constructor's
            self.archs = list(state["archs"])
            self.extras = None if state["extras"] is None else [dict(e) for e in state["extras"]]
        self._issued = int(state["issued"])
        self._live = {k: int(v) for k, v in state["live"].items()}
        self._scores = {int(k): score_from_json(v) for k, v in state["scores"].items()}

    def best_result(self) -> dict[str, Any] | None:
        """The best finished evaluation: ``{"index", "arch", "epochs", ["seed",] "metric", "value"}``
        (``value`` in the metric's own units); ``None`` before the first finite result."""
        return best_of(self._scores, self._config, self.metric, self.mode)

    def summary(self) -> dict[str, Any]:
        return {"evaluations": len(self._scores), "archs": len(self.archs) // len(self.seeds or [None])}


_OWN_KEYS = ("arch", "epochs", "seed")


def _check_extras(extras: Sequence[Mapping[str, Any]], n_archs: int) -> None:
    problems = []
    if len(extras) != n_archs:
        problems.append(f"one mapping per architecture (len(extras) == len(archs)) must hold, but got "
                        f"{len(extras)} extras for {n_archs} archs")  # fmt: skip
    clashes = sorted({k for e in extras for k in e if k in _OWN_KEYS})
    if clashes:
        problems.append(f"extras may not set the searcher's own keys {list(_OWN_KEYS)}, but they set {clashes}")
    if problems:
        raise ValueError("invalid FixedArchSearcher extras: " + "; ".join(problems))
