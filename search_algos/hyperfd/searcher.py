"""HyperFD's online search as a Ray Tune searcher: top-B configs per new dataset, then learn from them.

Paper: ``papers/hyperfd-online-automl-face-detection-supplement.txt``, Algorithm 1 (inference and training
of the online loop); the ranker is :class:`search_algos.hyperfd.ranker.PerformanceRanker`.

The searcher walks a sequence of datasets ``d_1 .. d_N`` (known only by their meta-features: privacy). For
``d_t`` it suggests the ranker's top-B configs of the candidate pool as B trials; once all B finished it
feeds their validation APs to the ranker (``observe``: transformation module, N_iters batches, SI) and moves
on to ``d_{t+1}``. The trials themselves (trainables) write every result to the benchmark store, so the
results update the ranker and the store alike. Its whole state (ranker parameters included) is plain JSON:
a restored searcher suggests exactly what the uninterrupted one would.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from ray.tune.search import Searcher

from search_algos.base import ArchSearcher
from search_algos.hyperfd.data import TaskResults, config_encoding
from search_algos.hyperfd.ranker import PerformanceRanker, RankerSettings
from search_algos.spaces.base import SearchSpace

__all__ = ["OnlineDataset", "TransferRankerSearcher"]

OnlineDataset = dict[str, Any]  # {"dataset_id": str, "name": str, "features": {name: float}}


class TransferRankerSearcher(ArchSearcher):
    """Suggests the ranker's top-B configs for each dataset of an online sequence (Algorithm 1).

    Trial configs: ``{"arch": <JSON>, "epochs": int, "dataset_id": str, "task": int}``; a trial evaluates
    ``arch`` on the dataset ``dataset_id`` and reports ``metric`` (validation AP; ``test_ap50`` too, if
    known). A failed trial (an error, no result, NaN or infinite metric) is never a dataset's best and
    teaches the ranker nothing.

    Without a warmed-up ranker at hand, :meth:`warm_start` runs the offline warm-up first.

    Args:
        ranker_state: a warmed-up :meth:`PerformanceRanker.get_state` (offline warm-up done); or give
            ``ranker`` (exactly one of the two).
        ranker: a warmed-up :class:`PerformanceRanker`; the searcher trains a copy, not this object.
        pool: the candidate configs as JSON encodings (the paper's 200 sampled configs; ours smaller).
        decode: parses one JSON encoding into its typed config (``to_graph``/``to_vector``, ``key()``); or
            give ``space`` (exactly one of the two).
        space: the space of the pool (its ``from_json`` decodes).
        datasets: the online sequence, in order; meta-features only.
        budget: B, configs evaluated per dataset (DESIGN.md §1: 4).
        epochs: training epochs (fidelity) of every evaluation.
        metric, mode, seed: see :class:`ArchSearcher` (``mode`` must be ``max``: APs).

    Raises:
        ValueError: listing every broken rule with its value.

    Example:
        >>> searcher = TransferRankerSearcher(ranker_state=warm.get_state(), pool=pool_json,
        ...     space=DetectorHpoSpace(), datasets=[{"dataset_id": "det-..", "name": "blur", "features": f}],
        ...     budget=4, epochs=6, metric="val_ap50", mode="max", seed=0)
        >>> tune.Tuner(trainable, tune_config=tune.TuneConfig(search_alg=searcher, num_samples=-1)).fit()
    """

    def __init__(
        self,
        *,
        ranker_state: Mapping[str, Any] | None = None,
        ranker: PerformanceRanker | None = None,
        pool: Sequence[str],
        decode: Callable[[str], Any] | None = None,
        space: SearchSpace | None = None,
        datasets: Sequence[OnlineDataset],
        budget: int = 4,
        epochs: int = 1,
        metric: str,
        mode: str = "max",
        seed: int = 0,
    ) -> None:
        problems = []
        if (ranker_state is None) == (ranker is None):
            problems.append(
                "give exactly one of ranker_state (a warmed-up PerformanceRanker.get_state()) and ranker, got "
                f"{'both' if ranker is not None else 'neither'}; without one, build it with "
                "TransferRankerSearcher.warm_start"
            )
        if (decode is None) == (space is None):
            given = "both" if space is not None else "neither"
            problems.append(f"give exactly one of decode and space (the pool's space), got {given}")
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
        decode = decode if decode is not None else space.from_json
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
        self.ranker = PerformanceRanker.from_state(ranker_state if ranker is None else ranker.get_state())
        self.ranker.add_configs(encodings)
        self._task = 0  # index of the dataset being searched
        self._suggested: list[list[str]] = []  # per task: the B keys, in suggestion order
        self._issued = 0  # suggestions of the current task handed to Tune
        self._live: dict[str, list] = {}  # trial_id -> [task, key]
        self._results: list[dict[str, dict[str, float]]] = []  # per task: key -> {"val", "test"} (NaN: failed)

    @classmethod
    def warm_start(
        cls,
        *,
        space: SearchSpace,
        pool: Sequence[str],
        offline: Sequence[TaskResults],
        datasets: Sequence[OnlineDataset],
        settings: RankerSettings | None = None,
        budget: int = 4,
        epochs: int = 1,
        metric: str,
        mode: str = "max",
        seed: int = 0,
    ) -> TransferRankerSearcher:
        """The searcher after Algorithm 1's warm-up, theta <- argmin L_total on S_offline.

        The ranker's config encoder follows the space: a GIN for encodings with ``to_graph()``, an MLP on
        ``to_vector()`` otherwise; its dataset encoder reads the offline datasets' meta-feature names.

        Args:
            space: the space of the pool (``from_json``; encodings with ``to_graph`` or ``to_vector``).
            pool: the candidate configs as JSON encodings.
            offline: the offline datasets' meta-features and results (``config key -> validation AP``, keys
                as ``space.from_json(c).key()``); NaN or infinite results are failed evaluations, left out.
            datasets: the online sequence, with the same meta-feature names.
            settings: the ranker's hyper-parameters (Table 6 defaults).
            budget, epochs, metric, mode, seed: as for the constructor (``seed`` also seeds the ranker).

        Raises:
            ValueError: when offline results name configs outside the pool, meta-feature names differ, or
                the warm-up has too little data (>= 2 datasets with >= 2 finite results each).
        """
        archs = [space.from_json(text) for text in pool]
        encodings = {arch.key(): config_encoding(arch) for arch in archs}
        names = sorted(offline[0].features) if offline else []
        problems = []
        for task in offline:
            unknown = sorted(set(task.results) - set(encodings))
            if unknown:
                problems.append(f"offline dataset {task.dataset_id!r} has results of configs outside the pool: "
                                f"{unknown[:3]}; key them by space.from_json(config).key() of pool configs")
            if sorted(task.features) != names:
                problems.append(f"offline dataset {task.dataset_id!r} has meta-features {sorted(task.features)}, "
                                f"expected {names} (those of {offline[0].dataset_id!r})")
        for d in datasets:
            if sorted(d["features"]) != names:
                problems.append(f"online dataset {d['dataset_id']!r} has meta-features {sorted(d['features'])}, "
                                f"expected {names} (the offline datasets')")
        if problems:
            raise ValueError("invalid TransferRankerSearcher.warm_start: " + "; ".join(problems))
        first = next(iter(encodings.values()))
        kind = "graph" if isinstance(first, tuple) else "vector"
        dim = first[0].shape[1] if kind == "graph" else len(first)
        ranker = PerformanceRanker(names, config_kind=kind, config_dim=dim, settings=settings, seed=seed)
        ranker.add_configs(encodings)
        ranker.fit_offline([
            TaskResults(t.dataset_id, dict(t.features), {k: float(v) for k, v in t.results.items() if math.isfinite(v)})
            for t in offline
        ])  # fmt: skip
        return cls(ranker=ranker, pool=pool, space=space, datasets=datasets, budget=budget, epochs=epochs,
                   metric=metric, mode=mode, seed=seed)  # fmt: skip

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
        # in suggestion order, not completion order: the B trials run side by side and finish in any order,
        # and the ranker's update (float sums over the results) must not depend on which finished first
        results = self._results[task]
        observed = {k: results[k]["val"] for k in self._suggested[task] if math.isfinite(results[k]["val"])}
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
            "results": [{k: {n: _plain(x) for n, x in v.items()} for k, v in r.items()} for r in self._results],
        }

    def set_state(self, state: dict[str, Any]) -> None:
        self.ranker = PerformanceRanker.from_state(state["ranker"])
        self.ranker.add_configs(self._encodings)
        self._task = int(state["task"])
        self._suggested = [list(s) for s in state["suggested"]]
        self._issued = int(state["issued"])
        self._live = {k: [int(v[0]), str(v[1])] for k, v in state["live"].items()}
        self._results = [
            {k: {"val": _nan_if_none(v["val"]), "test": _nan_if_none(v["test"])} for k, v in r.items()}
            for r in state["results"]
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


# JSON has no NaN: a failed result is stored as null (state files with NaN from before read back too).
def _plain(value: float) -> float | None:
    return float(value) if math.isfinite(value) else None


def _nan_if_none(value: float | None) -> float:
    return math.nan if value is None else float(value)
