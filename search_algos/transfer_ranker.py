"""HyperFD's online search as a Ray Tune searcher: top-B configs per new dataset, then learn from them.

Paper: ``papers/hyperfd-online-automl-face-detection-supplement.txt``, Algorithm 1 (inference and training
of the online loop); the ranker is :class:`search_algos.ranker.PerformanceRanker`.

The searcher walks a sequence of datasets ``d_1 .. d_N`` (known only by their meta-features: privacy). For
``d_t`` it suggests the ranker's top-B configs of the candidate pool as B trials; once all B finished it
feeds their validation APs to the ranker (``observe``: transformation module, N_iters batches, SI) and moves
on to ``d_{t+1}``. The trials themselves (trainables) write every result to the benchmark store, so the
results update the ranker and the store alike. Its whole state (ranker parameters included) is plain JSON:
a restored searcher suggests exactly what the uninterrupted one would.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from ray.tune.search import Searcher

from search_algos.base import ArchSearcher
from search_algos.ranker import PerformanceRanker

__all__ = ["OnlineDataset", "TransferRankerSearcher", "config_encoding"]

OnlineDataset = dict[str, Any]  # {"dataset_id": str, "name": str, "features": {name: float}}


def config_encoding(arch: Any) -> Any:
    """The ranker's view of a config: ``to_graph()`` (GIN) where the encoding has one, else ``to_vector()``.

    Returns:
        ``(nodes (N, F), adjacency (N, N))`` for a graph (edges made undirected: GIN sums over neighbours),
        or a vector ``(D,)``.
    """
    if hasattr(arch, "to_graph"):
        graph = arch.to_graph()
        nodes = np.asarray(graph.nodes, dtype=np.float32)
        adj = np.zeros((len(nodes), len(nodes)), dtype=np.float32)
        for src, dst in np.asarray(graph.edges, dtype=np.int64).reshape(-1, 2):
            adj[src, dst] = adj[dst, src] = 1.0
        return nodes, adj
    return np.asarray(arch.to_vector(), dtype=np.float32)


class TransferRankerSearcher(ArchSearcher):
    """Suggests the ranker's top-B configs for each dataset of an online sequence (Algorithm 1).

    Trial configs: ``{"arch": <JSON>, "epochs": int, "dataset_id": str, "task": int}``.

    Args:
        ranker_state: a warmed-up :meth:`PerformanceRanker.get_state` (offline warm-up done).
        pool: the candidate configs as JSON encodings (the paper's 200 sampled configs; ours smaller).
        decode: parses one JSON encoding into its typed config (``to_graph``/``to_vector``, ``key()``).
        datasets: the online sequence, in order; meta-features only.
        budget: B, configs evaluated per dataset (DESIGN.md §1: 4).
        epochs: training epochs (fidelity) of every evaluation.
        metric, mode, seed: see :class:`ArchSearcher` (``mode`` must be ``max``: APs).

    Example:
        >>> searcher = TransferRankerSearcher(ranker_state=warm.get_state(), pool=pool_json,
        ...     decode=space.from_json, datasets=[{"dataset_id": "det-..", "name": "blur", "features": f}],
        ...     budget=4, epochs=6, metric="val_ap50", mode="max", seed=0)
        >>> tune.Tuner(trainable, tune_config=tune.TuneConfig(search_alg=searcher, num_samples=-1)).fit()
    """

    def __init__(
        self,
        *,
        ranker_state: Mapping[str, Any],
        pool: Sequence[str],
        decode: Any,
        datasets: Sequence[OnlineDataset],
        budget: int = 4,
        epochs: int,
        metric: str,
        mode: str = "max",
        seed: int = 0,
    ) -> None:
        problems = []
        if budget < 1:
            problems.append(f"budget >= 1 must hold, but got {budget}")
        if len(pool) < budget:
            problems.append(f"the pool needs >= budget ({budget}) configs, got {len(pool)}")
        if not datasets:
            problems.append("datasets must name at least one online dataset")
        if epochs < 1:
            problems.append(f"epochs >= 1 must hold, but got {epochs}")
        if problems:
            raise ValueError("invalid TransferRankerSearcher: " + "; ".join(problems))
        super().__init__(metric=metric, mode=mode, seed=seed)
        self.budget = int(budget)
        self.epochs = int(epochs)
        self.datasets = [
            {"dataset_id": d["dataset_id"], "name": d.get("name", d["dataset_id"]),
             "features": {k: float(v) for k, v in d["features"].items()}}
            for d in datasets
        ]  # fmt: skip
        self._archs = {}  # key -> JSON
        encodings = {}
        for text in pool:
            arch = decode(text)
            self._archs[arch.key()] = arch.to_json()
            encodings[arch.key()] = config_encoding(arch)
        self._encodings = encodings
        self.ranker = PerformanceRanker.from_state(ranker_state)
        self.ranker.add_configs(encodings)
        self._task = 0  # index of the dataset being searched
        self._suggested: list[list[str]] = []  # per task: the B keys, in suggestion order
        self._issued = 0  # suggestions of the current task handed to Tune
        self._live: dict[str, list] = {}  # trial_id -> [task, key]
        self._results: list[dict[str, dict[str, float]]] = []  # per task: key -> {"val", "test"}

    # -- Tune interface -------------------------------------------------------------------------------------
    def suggest(self, trial_id: str) -> dict[str, Any] | str | None:
        if self._task >= len(self.datasets):
            return Searcher.FINISHED
        if self._task == len(self._suggested):  # Inference: top-B configs of the pool for d_t
            d = self.datasets[self._task]
            self._suggested.append(self.ranker.suggest(d["features"], list(self._archs), self.budget))
            self._results.append({})
            self._issued = 0
        if self._issued >= len(self._suggested[self._task]):
            return None  # the task's B evaluations are running; the next task waits for the update
        key = self._suggested[self._task][self._issued]
        self._issued += 1
        self._live[trial_id] = [self._task, key]
        return {
            "arch": self._archs[key],
            "epochs": self.epochs,
            "dataset_id": self.datasets[self._task]["dataset_id"],
            "task": self._task,
        }

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
        entry = self._live.pop(trial_id, None)
        if entry is None:
            return
        task, key = entry
        score = self.score(result, error=error)
        test = (result or {}).get("test_ap50", math.nan) if not error else math.nan
        self._results[task][key] = {
            "val": score if math.isfinite(score) else math.nan,
            "test": float(test) if isinstance(test, (int, float)) else math.nan,
        }
        if task == self._task and len(self._results[task]) == len(self._suggested[task]):
            self._learn(task)

    def _learn(self, task: int) -> None:
        """Training part of Algorithm 1 for d_t, then move on to d_{t+1}."""
        d = self.datasets[task]
        observed = {k: r["val"] for k, r in self._results[task].items() if math.isfinite(r["val"])}
        if observed:  # a task whose B trials all failed teaches nothing
            self.ranker.observe(d["dataset_id"], d["features"], observed)
        self._task += 1

    # -- state ---------------------------------------------------------------------------------------------
    def get_state(self) -> dict[str, Any]:
        return {
            "ranker": self.ranker.get_state(),
            "task": self._task,
            "suggested": self._suggested,
            "issued": self._issued,
            "live": self._live,
            "results": [{k: dict(v) for k, v in r.items()} for r in self._results],
        }

    def set_state(self, state: dict[str, Any]) -> None:
        self.ranker = PerformanceRanker.from_state(state["ranker"])
        self.ranker.add_configs(self._encodings)
        self._task = int(state["task"])
        self._suggested = [list(s) for s in state["suggested"]]
        self._issued = int(state["issued"])
        self._live = {k: [int(v[0]), str(v[1])] for k, v in state["live"].items()}
        self._results = [
            {k: {"val": float(v["val"]), "test": float(v["test"])} for k, v in r.items()} for r in state["results"]
        ]

    # -- reporting -----------------------------------------------------------------------------------------
    def summary(self) -> dict[str, Any]:
        """Per dataset: the B suggestions, their APs and c*_t = argmax of validation AP (Algorithm 1)."""
        tasks = []
        for t, keys in enumerate(self._suggested):
            results = self._results[t] if t < len(self._results) else {}
            ok = {k: r for k, r in results.items() if math.isfinite(r["val"])}
            best = max(ok, key=lambda k: (ok[k]["val"], -keys.index(k))) if ok else None
            tasks.append({
                "dataset_id": self.datasets[t]["dataset_id"],
                "name": self.datasets[t]["name"],
                "suggested": keys,
                "results": {k: {"val": _plain(r["val"]), "test": _plain(r["test"])} for k, r in results.items()},
                "best": best,
                "best_arch": self._archs[best] if best else None,
            })  # fmt: skip
        return {"tasks": tasks, "evaluations": sum(len(r) for r in self._results), "budget": self.budget}


def _plain(value: float) -> float | None:
    return float(value) if math.isfinite(value) else None
