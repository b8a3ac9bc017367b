"""Random search over any space: the baseline every facenas search is compared with.

Suggestion ``i`` is drawn from a generator seeded by ``(seed, i)``, so the sequence of architectures
is a pure function of the seed: a resumed search proposes exactly what an uninterrupted one would.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from ray.tune.search import Searcher

from search_algos.base import ArchSearcher, best_of, score_from_json, score_to_json
from search_algos.spaces.base import SearchSpace

__all__ = ["RandomArchSearcher"]


class RandomArchSearcher(ArchSearcher):
    """Uniform random architectures, ``num_samples`` of them, each trained for ``epochs``.

    Trials receive ``{"arch": <encoding JSON>, "epochs": int}``. Failed trials (an error, no result, a
    NaN or infinite metric) are counted but never the best.

    Args:
        space: the search space to sample from.
        num_samples: how many architectures to propose (the evaluation budget); ``None`` proposes until
            Tune stops asking, so ``TuneConfig(num_samples=N)`` sets the budget (never ``-1`` then).
        epochs: training epochs for every candidate (passed on in the config; the trainable decides).
        metric, mode, seed: see :class:`ArchSearcher`.

    Raises:
        ValueError: for ``num_samples`` or ``epochs`` below 1.

    Example:
        >>> searcher = RandomArchSearcher(GlobalSpace(d_min=3, d_max=6), num_samples=12, epochs=3,
        ...                               metric="val_acc", mode="max", seed=0)
        >>> tuner = tune.Tuner(trainable, tune_config=tune.TuneConfig(search_alg=searcher,
        ...                                                          num_samples=-1))
    """

    def __init__(
        self,
        space: SearchSpace,
        *,
        num_samples: int | None = None,
        epochs: int = 1,
        metric: str,
        mode: str,
        seed: int = 0,
    ) -> None:
        if num_samples is not None and num_samples < 1:
            raise ValueError(f"num_samples must be >= 1 (or None: as many as Tune asks for), got {num_samples}")
        if epochs < 1:
            raise ValueError(f"epochs must be >= 1, got {epochs}")
        super().__init__(metric=metric, mode=mode, seed=seed)
        self.space = space
        self.num_samples = num_samples
        self.epochs = epochs
        self._issued = 0
        self._live: dict[str, int] = {}
        self._done: dict[int, float] = {}  # suggestion index -> score (-inf: failed)

    def propose(self, index: int) -> dict[str, Any]:
        """The ``index``-th suggestion (deterministic in ``seed`` and ``index``)."""
        rng = np.random.default_rng([self.seed, index])
        arch = self.space.sample(rng)
        return {"arch": arch.to_json(), "epochs": self.epochs}

    def suggest(self, trial_id: str) -> dict[str, Any] | str | None:
        if self.num_samples is not None and self._issued >= self.num_samples:
            return Searcher.FINISHED
        index = self._issued
        self._issued += 1
        self._live[trial_id] = index
        return self.propose(index)

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
        index = self._live.pop(trial_id, None)
        if index is not None:
            self._done[index] = self.score(result, error=error)

    def get_state(self) -> dict[str, Any]:
        return {
            "issued": self._issued,
            "live": self._live,
            "done": {str(k): score_to_json(v) for k, v in self._done.items()},
        }

    def set_state(self, state: dict[str, Any]) -> None:
        self._issued = int(state["issued"])
        self._live = {k: int(v) for k, v in state["live"].items()}
        self._done = {int(k): score_from_json(v) for k, v in state["done"].items()}

    def best_result(self) -> dict[str, Any] | None:
        """The best finished evaluation: ``{"index", "arch", "epochs", "metric", "value"}`` (``value`` in the
        metric's own units); ``None`` before the first finite result. Ties keep the earliest."""
        return best_of(self._done, self.propose, self.metric, self.mode)

    def summary(self) -> dict[str, Any]:
        return {"evaluations": len(self._done), "proposed": self._issued}

