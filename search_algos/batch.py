"""Several suggestions of a searcher per Tune trial: :class:`BatchSearcher`, for evaluations shorter than a trial.

A one-shot score of a child on a trained supernet takes 0.19 s on one CPU core (``configs/monas.yaml``) and
milliseconds on a GPU, while Tune spends about 0.07 s per trial on its own (a driver round trip per report,
the searcher's calls, handing the reused actor its next config). :class:`BatchSearcher` asks its inner
searcher for up to ``size`` configs per trial and gives the trial ``{"children": [config, ...]}``; the
trial reports once, ``{"children": [result, ...], ...}`` in the same order, and each result goes back to the
inner searcher as the result of its own suggestion, named ``"<trial_id>/<i>"``. The inner searcher sees
the suggestions and results it would see unbatched, so a searcher whose decisions do not depend on the
order results arrive in (random, a fixed list, SAMOS's chains) decides the same.

What it is not for:

- A sequential searcher (an annealing chain waiting for its last move) has only one config to give before
  a result: the batch is shorter, never waited for, and a batch of several chains' moves runs them one
  after another in one trial instead of side by side in several. Batch only searchers that can fill a
  batch (random search, a fixed list).
- Trial schedulers: a batch reports once, with no epochs to stop at.

A trial of an earlier, unbatched attempt of the stage (a plain ``{"arch": ...}`` config, restored by
``Tuner.restore``) passes its result straight to the inner searcher, and a state saved by the inner
searcher alone restores into the wrapper: a stage interrupted before batching existed continues.
"""

from __future__ import annotations

import json
from typing import Any

from ray.tune.search import Searcher

from search_algos.base import ArchSearcher

__all__ = ["CHILDREN_KEY", "BatchSearcher", "child_id"]

CHILDREN_KEY = "children"  # the trial config's list of inner configs, and the report's list of their results


def child_id(trial_id: str, index: int) -> str:
    """The id the inner searcher knows the ``index``-th config of trial ``trial_id`` by."""
    return f"{trial_id}/{index}"


class BatchSearcher(ArchSearcher):
    """Up to ``size`` configs of ``inner`` per trial (module docstring).

    Args:
        inner: the searcher whose configs are batched (its suggestions, results, state and summary are kept).
        size: the most configs per trial (>= 1; 1 is the inner searcher's own behaviour, in a list of one).

    Raises:
        ValueError: ``size < 1``.
    """

    def __init__(self, inner: ArchSearcher, size: int) -> None:
        if int(size) < 1:
            raise ValueError(f"size >= 1 must hold (configs per trial), but got size={size}")
        super().__init__(metric=inner.metric, mode=inner.mode, seed=inner.seed)
        self.inner = inner
        self.size = int(size)
        self._batches: dict[str, list[str]] = {}  # trial id -> the inner ids of its configs, in order
        self._finished = False

    def suggest(self, trial_id: str) -> dict[str, Any] | str | None:
        if self._finished:
            return Searcher.FINISHED
        configs: list[dict[str, Any]] = []
        while len(configs) < self.size:
            config = self.inner.suggest(child_id(trial_id, len(configs)))
            if config == Searcher.FINISHED:
                self._finished = True
                break
            if config is None:  # the inner searcher waits for results: run what it gave now
                break
            configs.append(config)
        if not configs:
            return Searcher.FINISHED if self._finished else None
        self._batches[trial_id] = [child_id(trial_id, i) for i in range(len(configs))]
        return {CHILDREN_KEY: configs}

    def on_trial_result(self, trial_id: str, result: dict[str, Any]) -> None:
        if trial_id not in self._batches:  # an unbatched trial of an earlier attempt
            self.inner.on_trial_result(trial_id, result)

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
        ids = self._batches.pop(trial_id, None)
        if ids is None:  # an unbatched trial of an earlier attempt (or not ours: the inner searcher decides)
            self.inner.on_trial_complete(trial_id, result, error)
            return
        results = (result or {}).get(CHILDREN_KEY) or []
        for i, inner_id in enumerate(ids):
            own = results[i] if i < len(results) and isinstance(results[i], dict) else None
            # a crashed trial (error) or a report without this config's result fails it
            self.inner.on_trial_complete(inner_id, own, error or own is None)

    # -- state -------------------------------------------------------------------------------------
    def get_state(self) -> dict[str, Any]:
        return {"size": self.size, "batches": {k: list(v) for k, v in self._batches.items()},
                "finished": self._finished, "inner": self.inner.get_state()}  # fmt: skip

    def set_state(self, state: dict[str, Any]) -> None:
        self.inner.set_state(state["inner"])
        self._batches = {k: list(v) for k, v in state["batches"].items()}
        self._finished = bool(state["finished"])

    def restore(self, checkpoint_path: str) -> None:
        with open(checkpoint_path) as fh:
            saved = json.load(fh)
        if saved.get("class") == type(self.inner).__name__:  # saved by an unbatched attempt of the stage
            self.inner.set_state(saved["state"])
            self._batches, self._finished = {}, False
            return
        super().restore(checkpoint_path)

    def summary(self) -> dict[str, Any]:
        return self.inner.summary()
