"""HyperFD's search: the ranker's warm-up, the online protocol (Algorithm 1) and the warm-started search.

Paper: ``papers/hyperfd-online-automl-face-detection-supplement.txt`` (Algorithm 1, Table 7).

:func:`hyperfd_stages` (``mode: protocol``): the benchmark stages of the plan's missing rows
(:mod:`orchestrator.methods.hyperfd.benchmark`); then per space the ranker warms up on the offline rows
(Algorithm 1, warm-up), and for each of ``orders`` random orders of the online domains one Tune stage
driven by :class:`search_algos.hyperfd.TransferRankerSearcher` (top-B, evaluate, update); best.json gets
Table 7 (:mod:`orchestrator.methods.hyperfd.table`). :func:`search_stages` (``mode: search``): a search
on one new dataset, its first picks the ranker's top configs learnt from every stored row
(:func:`warm_start_configs`).
"""

from __future__ import annotations

import functools
import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from orchestrator.methods.hyperfd.benchmark import DetectorJob, benchmark_stage, evaluate_detector, job_searcher
from orchestrator.methods.hyperfd.plan import (
    METRIC, SPACES, Plan, device_settings, load_recipe, pool_seed, register_datasets, same_protocol, sample_pool,
    training_protocol,
)
from orchestrator.methods.hyperfd.table import table7, table7_markdown
from orchestrator.methods.streams import HYPERFD_ORDER_SALT, HYPERFD_SEARCH_PICK_SALT
from orchestrator.paths import RunPaths
from orchestrator.pipeline import Stage, StageOutcome
from orchestrator.results import completed_rows, pick_best, write_json_atomic
from search_algos.durable import write_text_durable
from search_algos.fixed import FixedArchSearcher
from search_algos.hyperfd import PerformanceRanker, RankerSettings, TaskResults, TransferRankerSearcher, config_encoding
from search_algos.spaces import decode_arch

if TYPE_CHECKING:
    from orchestrator.config import ExperimentConfig
    from orchestrator.methods.base import StagePlan
    from orchestrator.store import StoreClient
    from orchestrator.trial import Store

__all__ = [
    "domain_orders",
    "hyperfd_stages",
    "offline_label",
    "ranker_settings",
    "search_stages",
    "warm_ranker",
    "warm_start_configs",
]


# ----------------------------------------------------------------------------------------------------------
# The ranker's warm-up and the online stages


def pool_encodings(space: str, pool: Sequence[str]) -> dict[str, Any]:
    out = {}
    for text in pool:
        arch = decode_arch(space, text)
        out[arch.key()] = config_encoding(arch)
    return out


def _stored_results(plan: Plan, space: str, store: Store) -> dict[str, dict[str, dict[str, float]]]:
    """dataset_id -> arch_key -> {"val", "test"} of the rows made with this plan's protocol."""
    out: dict[str, dict[str, dict[str, float]]] = {}
    for row in store.rows(space=space):
        if not same_protocol(row, plan, space):
            continue
        m = row["metrics"]
        out.setdefault(row["dataset_id"], {})[row["arch_key"]] = {
            "val": float(m.get("val_ap50", math.nan)), "test": float(m.get("test_ap50", math.nan))}  # fmt: skip
    return out


def offline_label(result: dict[str, float]) -> float:
    """The ranking label of an offline row: the mean of its validation and test AP@50.

    Offline datasets are ours (the source domain and its sub-datasets, never scored in Table 7), so both
    splits may teach the ranker; a sub-dataset of 40 images has a 4-image validation split, whose AP alone
    is mostly noise. Online datasets are only ever judged by validation AP.
    """
    values = [v for v in (result.get("val", math.nan), result.get("test", math.nan)) if math.isfinite(v)]
    return float(np.mean(values)) if values else math.nan


def warm_ranker(
    space: str, pool: Sequence[str], offline: dict[str, dict[str, float]], features: dict[str, dict[str, float]],
    settings: RankerSettings, seed: int,
) -> PerformanceRanker:
    """Algorithm 1's warm-up: theta <- argmin L_total on S_offline.

    Args:
        offline: dataset_id -> arch_key -> ranking label (:func:`offline_label`) of the source domain and its
            sub-datasets (the offline set; never an online dataset).
        features: dataset_id -> meta-features.
    """
    encodings = pool_encodings(space, pool)
    names = sorted(next(iter(features.values())))
    kind = "graph" if space == "detector_nas" else "vector"
    dim = next(iter(encodings.values()))[0].shape[1] if kind == "graph" else len(next(iter(encodings.values())))
    ranker = PerformanceRanker(names, config_kind=kind, config_dim=dim, settings=settings, seed=seed)
    ranker.add_configs(encodings)
    tasks = [TaskResults(d, features[d], {k: v for k, v in r.items() if k in encodings and math.isfinite(v)})
             for d, r in sorted(offline.items())]  # fmt: skip
    ranker.fit_offline(tasks)
    return ranker


def ranker_settings(s: Any) -> RankerSettings:
    """The searcher config's ranker keys (Table 6 defaults) as :class:`RankerSettings`."""
    return RankerSettings(
        hidden=s.hidden, lr=s.lr, iters_per_task=s.iters_per_task, trans_iters=s.trans_iters,
        lambda_sim=s.lambda_sim, margin=s.margin, lambda_reg=s.lambda_reg, explore_ratio=s.explore_ratio,
        warmup_steps=s.warmup_steps, warmup_lr=s.warmup_lr, prior_weight=s.prior_weight,
    )  # fmt: skip


def domain_orders(domains: Sequence[str], orders: int, seed: int) -> list[list[str]]:
    """``orders`` random orders of the online domains (Algorithm 1 sees them in random order)."""
    return [list(np.random.default_rng([seed, HYPERFD_ORDER_SALT, k]).permutation(list(domains))) for k in range(orders)]


def hyperfd_stages(config: ExperimentConfig, store: StoreClient, run_dir: Path) -> StagePlan:
    """The pipeline of ``searcher: hyperfd``: benchmark stages, then one online stage per space and order.

    Returns:
        ``(stages, select, extras)`` as :class:`orchestrator.experiment._Pipeline` takes them.
    """
    s = config.searcher
    if s.mode == "search":
        return search_stages(config, store, run_dir)
    plan = Plan.from_config(config)
    features = register_datasets(plan, store)
    run = run_dir.name
    stages = [benchmark_stage(plan, space, store, run=run, name=f"benchmark-{space}") for space in s.spaces]
    orders = domain_orders(s.domains, s.orders, config.seed)

    @functools.lru_cache(maxsize=None)
    def warm_state(space: str) -> str:
        cache = RunPaths.of(run_dir).run_file(f"ranker-warmup-{space}.json")
        if cache.is_file():
            return cache.read_text()
        results = _stored_results(plan, space, store)
        offline = {d: {k: offline_label(r) for k, r in results.get(d, {}).items()}
                   for d in [plan.ids["source"], *plan.offline]}  # fmt: skip
        ranker = warm_ranker(space, plan.pools[space], offline, features, ranker_settings(s), config.seed)
        text = json.dumps(ranker.get_state())
        write_json_atomic(json.loads(text), cache)
        return text

    def online_stage(space: str, k: int, order: list[str]) -> Stage:
        name = f"online-{space}-o{k}"
        job = DetectorJob(space, plan.recipes(), plan.training[space], plan.seed, store, run, name, plan.device)
        datasets = [{"dataset_id": plan.ids[d], "name": d, "features": features[plan.ids[d]]} for d in order]
        return Stage(
            name=name,
            make_searcher=lambda _earlier: TransferRankerSearcher(
                ranker_state=json.loads(warm_state(space)), pool=plan.pools[space],
                decode=functools.partial(decode_arch, space), datasets=datasets, budget=s.budget,
                epochs=plan.epochs, metric=METRIC, mode="max", seed=config.seed + k,
            ),
            job=job,
            total=lambda _earlier: s.budget * len(order),
            trainable=evaluate_detector,
            metric=METRIC,
            mode="max",
        )

    stages += [online_stage(space, k, order) for space in s.spaces for k, order in enumerate(orders)]

    def select(outcomes: dict[str, StageOutcome]) -> dict[str, Any] | None:
        # best.json's arch: the best evaluation of the first space's first order (APs of different domains
        # are not comparable; the method's own figures are normalized_rank and table7).
        return pick_best(outcomes[f"online-{s.spaces[0]}-o0"].frame, mode="max")

    def extras(outcomes: dict[str, StageOutcome]) -> dict[str, Any]:
        frames, ranks = [], {}
        for space in s.spaces:
            results = _stored_results(plan, space, store)
            summaries = [outcomes[f"online-{space}-o{k}"].summary for k in range(len(orders))]
            frame = table7(
                space=space, pool=[decode_arch(space, a).key() for a in plan.pools[space]],
                results={d: results.get(plan.ids[d], {}) for d in s.domains},
                reference=results.get(plan.ids["source"], {}), summaries=summaries, ids=plan.ids,
                domains=list(s.domains), budget=s.budget, seed=config.seed,
            )  # fmt: skip
            frames.append(frame)
            ranks[space] = {m: float(g["normalized_rank"].mean()) for m, g in frame.groupby("method")}
        long = pd.concat(frames, ignore_index=True)
        write_text_durable(RunPaths.of(run_dir).run_file("table7.csv"), long.to_csv(index=False))
        text = table7_markdown(long, list(s.domains))
        write_text_durable(RunPaths.of(run_dir).run_file("table7.md"), text)
        print(text, flush=True)
        ap = {space: {m: float(g["ap"].mean()) for m, g in long[long.space == space].groupby("method")}
              for space in s.spaces}  # fmt: skip
        return {"space": s.spaces[0], "normalized_rank": ranks, "mean_ap": ap, "orders": len(orders),
                "table7": str(RunPaths.of(run_dir).run_file("table7.md"))}  # fmt: skip

    return stages, select, extras


# ----------------------------------------------------------------------------------------------------------
# Cross-searcher warm start


def warm_start_configs(
    store: Store, space: str, features: dict[str, float], pool: Sequence[str], *, top: int,
    settings: RankerSettings | None = None, seed: int = 0, exclude: str | None = None,
) -> list[str]:
    """The ranker's top configs of ``pool`` for a dataset, learnt from every stored row of ``space``.

    Every dataset of the store with meta-features and >= 2 finite ``val_ap50`` results of ``space`` is a
    warm-up task (all runs write to the same store, so every run teaches every later one).

    Args:
        store: a :class:`orchestrator.store.StoreClient` (or :class:`BenchmarkStore`).
        features: the new dataset's meta-features.
        pool: candidate JSON encodings.
        top: how many to return.
        exclude: a dataset_id not to learn from (the dataset itself).

    Returns:
        Up to ``top`` JSON encodings, best first; the first ``top`` of ``pool`` when the store cannot
        train a ranker yet (fewer than 2 usable datasets).
    """
    results: dict[str, dict[str, float]] = {}
    for row in store.rows(space=space):
        value = row["metrics"].get("val_ap50")
        if row["dataset_id"] != exclude and isinstance(value, (int, float)) and math.isfinite(value):
            results.setdefault(row["dataset_id"], {})[row["arch_key"]] = float(value)
    feats = {}
    for d in list(results):
        stored = store.dataset(d)
        if stored is None or set(stored["features"]) != set(features):
            results.pop(d)
        else:
            feats[d] = stored["features"]
    pool = list(pool)
    usable = [d for d, r in results.items() if len(r) >= 2]
    if len(usable) < 2:
        return pool[:top]
    all_keys = {row["arch_key"]: row for row in store.rows(space=space)}
    configs = list(pool) + [
        json.dumps(json.loads(r["config"])["arch"]) for r in all_keys.values() if r["dataset_id"] in usable
    ]
    ranker = warm_ranker(space, list(dict.fromkeys(configs)), {d: results[d] for d in usable},
                         {**feats, "_new": features}, settings or RankerSettings(), seed)  # fmt: skip
    keys = [decode_arch(space, a).key() for a in pool]
    order = np.argsort(-ranker.score(features, keys), kind="stable")  # exploitation only: a warm start
    return [pool[int(i)] for i in order[:top]]


def search_stages(config: ExperimentConfig, store: StoreClient, run_dir: Path) -> StagePlan:
    """``mode: search``: a search on one new dataset (``data``), warm-started by the ranker (deliverable 8).

    Per space, ``num_samples`` configs of the pool are evaluated on the dataset: first the ranker's top
    ``warm_start`` for it (:func:`warm_start_configs`: learnt from every stored row of the space, whichever
    run wrote it), then seeded random picks of the rest of the pool (``warm_start: 0`` is plain random
    search). Only the dataset's meta-features go to the store; every evaluation lands in the store and
    teaches later runs. The picks are written to ``RUN_DIR/warm-start-<space>.json`` when the stage first
    starts, so a resumed run evaluates the same list.

    Returns:
        ``(stages, select, extras)``; best.json holds the best validation AP per space (``best_by_space``)
        and which of the picks came from the ranker (``warm_start``).
    """
    from trainables.detection.data import detection_meta_features

    s, data = config.searcher, config.data
    recipe = {"kind": "domain", "kwargs": {"domain": data.domain, "seed": data.seed,
                                           "image_size": data.image_size, "n_images": data.n_images}}  # fmt: skip
    dataset = load_recipe(recipe)
    stored = store.dataset(dataset.dataset_id)
    features = stored["features"] if stored is not None else detection_meta_features(dataset)
    if stored is None:
        store.put_dataset(dataset.dataset_id, data.domain, features)
    run = run_dir.name

    def picks(space: str) -> dict[str, list[str]]:
        path = RunPaths.of(run_dir).run_file(f"warm-start-{space}.json")
        if path.is_file():
            return json.loads(path.read_text())
        pool = sample_pool(space, s.pool_size, seed=pool_seed(space, config.seed))
        warm = []
        if s.warm_start:
            warm = warm_start_configs(store, space, features, pool, top=s.warm_start, settings=ranker_settings(s),
                                      seed=config.seed, exclude=dataset.dataset_id)  # fmt: skip
        rng = np.random.default_rng([config.seed, HYPERFD_SEARCH_PICK_SALT, SPACES.index(space)])
        rest = [pool[int(j)] for j in rng.permutation(len(pool)) if pool[int(j)] not in warm]
        chosen = {"warm": warm, "random": rest[: max(0, s.num_samples - len(warm))]}
        write_json_atomic(chosen, path)
        return chosen

    def stage(space: str) -> Stage:
        name = f"search-{space}"
        protocol = training_protocol(space, s, precision=config.training.resolved_precision)
        job = DetectorJob(space, {dataset.dataset_id: recipe}, protocol, config.seed, store, run, name,
                          device_settings(config.training))  # fmt: skip

        def searcher(_earlier: dict[str, Any]) -> FixedArchSearcher:
            chosen = picks(space)
            jobs = [{"arch": a, "dataset_id": dataset.dataset_id} for a in chosen["warm"] + chosen["random"]]
            return job_searcher(jobs, epochs=s.epochs)

        # a trial scheduler may stop a pick early: its row is never the best and never stored
        return Stage(name=name, make_searcher=searcher, job=job, total=lambda _e: s.num_samples,
                     trainable=evaluate_detector, metric=METRIC, mode="max", stoppable=True,
                     max_epochs=s.epochs)  # fmt: skip

    stages = [stage(space) for space in s.spaces]

    def select(outcomes: dict[str, StageOutcome]) -> dict[str, Any] | None:
        return pick_best(outcomes[f"search-{s.spaces[0]}"].frame, mode="max", completed=True)

    def extras(outcomes: dict[str, StageOutcome]) -> dict[str, Any]:
        best, warm = {}, {}
        for space in s.spaces:
            chosen = picks(space)
            warm[space] = [decode_arch(space, a).key() for a in chosen["warm"]]
            frame = outcomes[f"search-{space}"].frame
            top = pick_best(frame, mode="max", completed=True)
            stopped = len(frame) - len(completed_rows(frame))
            if top is not None:
                best[space] = {"arch_key": top["arch_key"], "val_ap50": top["value"],
                               "from_warm_start": top["arch_key"] in warm[space],
                               **({"stopped_early": stopped} if stopped else {})}  # fmt: skip
        return {"space": s.spaces[0], "dataset": data.domain, "dataset_id": dataset.dataset_id, "best_by_space": best,
                "warm_start": warm}  # fmt: skip

    return stages, select, extras
