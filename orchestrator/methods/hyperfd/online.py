"""HyperFD end to end: the offline benchmark, the online protocol (Algorithm 1) and Table 7.

Paper: ``papers/hyperfd-online-automl-face-detection-supplement.txt`` (Algorithm 1, §B.4-B.5, Table 7).

Read top to bottom:

1. :class:`Plan` turns the config into datasets and candidate pools: the source domain (``data.domain``,
   the paper's WIDER-Face; also the reference domain of "best on reference"), its clustered sub-datasets
   (the offline set, §B.4) and the online domains (``searcher.domains``); per space (``detector_hpo``:
   Table 2, ``detector_nas``: Table 3) a pool of ``pool_size`` sampled configs (§B.5: "200 distinct
   configurations"; ours smaller).
2. The benchmark (:func:`benchmark_stage`, also ``facenas benchmark build CONFIG``): every pool config on
   the source and online datasets, ``offline_configs`` pool configs on each offline dataset; one Tune trial
   per missing row (:func:`evaluate_detector`: store lookup, else :func:`trainables.detector_train.fit_detector`,
   then a durable store write). Rows already stored are skipped, so a build resumes where it stopped.
3. The online protocol: per space, the ranker warms up on the offline rows (Algorithm 1, warm-up), then for
   each of ``orders`` random orders of the online domains one Tune stage driven by
   :class:`search_algos.hyperfd.TransferRankerSearcher` (top-B, evaluate, update).
4. :func:`table7`: per domain, AP and normalized rank of HyperFD, random search (B random picks) and the
   best config of the reference domain, mean ± std over orders; printed, written as CSV and Markdown.

Privacy (§3 of the paper, DESIGN.md §3): images stay in the trials and in this driver; the store gets
meta-features (:func:`trainables.detection_data.detection_meta_features`) and results, the ranker
meta-feature vectors and results.
"""

from __future__ import annotations

import functools
import json
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from ray import tune

from orchestrator.evaluate import cached_dataset, lookup_same_protocol, record
from orchestrator.pipeline import Stage, StageOutcome
from orchestrator.results import pick_best, write_json_atomic
from search_algos.durable import write_text_durable
from search_algos.fixed import FixedArchSearcher
from search_algos.hyperfd import PerformanceRanker, RankerSettings, TaskResults, TransferRankerSearcher, config_encoding
from search_algos.spaces import decode_arch
from search_algos.spaces.detector import DetectorArch, DetectorHpoSpace, DetectorNasSpace, HpoConfig

__all__ = [
    "DetectorJob",
    "Plan",
    "benchmark_stage",
    "build_benchmark",
    "evaluate_detector",
    "hyperfd_stages",
    "normalized_rank",
    "table7",
    "warm_start_configs",
]

METRIC = "val_ap50"
SPACES = ("detector_hpo", "detector_nas")


# ----------------------------------------------------------------------------------------------------------
# Datasets and pools


def _load_offline(source: dict[str, Any], clustering: dict[str, Any], dataset_id: str) -> Any:
    for ds in _offline_cached(json.dumps(source, sort_keys=True), json.dumps(clustering, sort_keys=True)):
        if ds.dataset_id == dataset_id:
            return ds
    raise ValueError(f"offline dataset {dataset_id} is not among the sub-datasets of {source}")


@functools.lru_cache(maxsize=4)
def _offline_cached(source_json: str, clustering_json: str) -> tuple[Any, ...]:
    from trainables.detection_data import offline_datasets

    source = json.loads(source_json)
    clustering = json.loads(clustering_json)
    return tuple(offline_datasets(source.pop("domain"), **source, **clustering))


def load_recipe(recipe: dict[str, Any]) -> Any:
    """The dataset a recipe names: ``{"kind": "domain", "kwargs": ...}`` or ``{"kind": "offline", ...}``."""
    if recipe["kind"] == "domain":
        from trainables.detection_data import load_detection_domain

        return cached_dataset(recipe["kwargs"], load_detection_domain)
    return _load_offline(recipe["source"], recipe["clustering"], recipe["dataset_id"])


@dataclass
class Plan:
    """Datasets, pools and the training protocol of one HyperFD config (narrow: no config object kept).

    Attributes:
        source: recipe of the source / reference domain.
        offline: dataset_id -> recipe of each offline sub-dataset (clustered from the source).
        online: domain name -> recipe, in the config's order.
        pools: space -> pool of config JSON encodings.
        offline_configs: space -> dataset_id -> the pool configs evaluated on that offline dataset.
        training: space -> the protocol every evaluation of the space uses (stored with each row).
        epochs, seed: fidelity and seed of every evaluation (the store key).
        device: ``use_gpu`` and ``channels_last`` of every detector trial (``training`` section); the
            precision is in ``training`` (it changes the numbers, so it is part of the protocol).
    """

    source: dict[str, Any]
    offline: dict[str, dict[str, Any]]
    online: dict[str, dict[str, Any]]
    pools: dict[str, list[str]]
    offline_configs: dict[str, dict[str, list[str]]]
    training: dict[str, dict[str, Any]]
    epochs: int
    seed: int
    names: dict[str, str] = field(default_factory=dict)  # dataset_id -> readable name
    ids: dict[str, str] = field(default_factory=dict)  # online domain / "source" -> dataset_id
    device: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_config(cls, config: Any) -> Plan:
        s, data = config.searcher, config.data
        base = {"seed": data.seed, "image_size": data.image_size}
        source = {"kind": "domain", "kwargs": {"domain": data.domain, **base, "n_images": s.source_images}}
        clustering = {"methods": list(s.clustering_methods), "ks": list(s.clustering_ks), "min_images": s.min_images}
        source_ds = load_recipe(source)
        subsets = list(_offline_cached(
            json.dumps({"domain": data.domain, **base, "n_images": s.source_images}, sort_keys=True),
            json.dumps(clustering, sort_keys=True),
        ))[: s.offline_datasets]  # fmt: skip
        offline = {
            ds.dataset_id: {"kind": "offline", "dataset_id": ds.dataset_id, "clustering": clustering,
                            "source": {"domain": data.domain, **base, "n_images": s.source_images}}
            for ds in subsets
        }  # fmt: skip
        online = {d: {"kind": "domain", "kwargs": {"domain": d, **base, "n_images": data.n_images}} for d in s.domains}
        names = {source_ds.dataset_id: source_ds.name, **{ds.dataset_id: ds.name for ds in subsets}}
        ids = {"source": source_ds.dataset_id}
        for d, recipe in online.items():
            ds = load_recipe(recipe)
            names[ds.dataset_id] = d
            ids[d] = ds.dataset_id
        pools, chosen, training = {}, {}, {}
        for space in s.spaces:
            i = SPACES.index(space)
            pools[space] = sample_pool(space, s.pool_size, seed=pool_seed(space, config.seed))
            rng = np.random.default_rng([config.seed, 17, i])
            n = min(s.offline_configs, len(pools[space]))
            chosen[space] = {
                dataset_id: [pools[space][int(j)] for j in sorted(rng.choice(len(pools[space]), n, replace=False))]
                for dataset_id in offline
            }
            training[space] = training_protocol(space, s, precision=config.training.resolved_precision)
        return cls(source, offline, online, pools, chosen, training, s.epochs, config.seed, names, ids,
                   device_settings(config.training))  # fmt: skip

    def recipes(self) -> dict[str, dict[str, Any]]:
        """dataset_id -> recipe of every dataset the plan evaluates on."""
        out = {self.ids["source"]: self.source, **self.offline}
        for d, recipe in self.online.items():
            out[self.ids[d]] = recipe
        return out

    def jobs(self, space: str) -> list[dict[str, Any]]:
        """Every evaluation the benchmark needs for ``space``: ``{"arch", "epochs", "dataset_id"}``."""
        out = []
        for dataset_id in [self.ids["source"], *(self.ids[d] for d in self.online)]:
            out += [{"arch": a, "epochs": self.epochs, "dataset_id": dataset_id} for a in self.pools[space]]
        for dataset_id, archs in self.offline_configs[space].items():
            out += [{"arch": a, "epochs": self.epochs, "dataset_id": dataset_id} for a in archs]
        return out


def training_protocol(space: str, s: Any, *, precision: str = "fp32") -> dict[str, Any]:
    """How every evaluation of ``space`` trains (stored with each row): batch, width, validation cadence,
    the fixed partner (the MobileNetV2 backbone for HPO configs, the default HPO config for NAS) and, when
    not fp32, the resolved ``precision`` (an fp32 protocol is the one stored before precision existed)."""
    partner = DetectorArch.mobilenet_v2() if space == "detector_hpo" else HpoConfig.default()
    protocol = {"batch_size": s.batch_size, "width_mult": s.width_mult, "eval_every": s.eval_every,
                "partner": partner.to_dict()}  # fmt: skip
    if precision != "fp32":
        protocol["precision"] = precision
    return protocol


def device_settings(training: Any) -> dict[str, Any]:
    """``use_gpu`` and ``channels_last`` of the ``training`` section, for :class:`DetectorJob`."""
    return {"use_gpu": training.use_gpu, "channels_last": training.channels_last}


def pool_seed(space: str, seed: int) -> int:
    """The seed of a space's pool (by name, not position: a run of one space sees the same pool)."""
    return seed + 1000 * SPACES.index(space)


def sample_pool(space: str, size: int, *, seed: int) -> list[str]:
    """``size`` distinct configs of ``space``, seeded (§B.5 samples the pool at random)."""
    rng = np.random.default_rng([seed, 23])
    if space == "detector_hpo":
        grid = list(DetectorHpoSpace().enumerate())
        if size > len(grid):
            raise ValueError(f"pool_size <= {len(grid)} must hold for detector_hpo, got {size}")
        return [grid[int(i)].to_json() for i in sorted(rng.choice(len(grid), size, replace=False))]
    nas = DetectorNasSpace()
    found: dict[str, str] = {}
    while len(found) < size:
        arch = nas.sample(rng)
        found.setdefault(arch.key(), arch.to_json())
    return list(found.values())


def register_datasets(plan: Plan, store: Any) -> dict[str, dict[str, float]]:
    """Meta-features of every dataset of the plan into the store (never images); returns them."""
    from trainables.detection_data import detection_meta_features

    features = {}
    for dataset_id, recipe in plan.recipes().items():
        stored = store.dataset(dataset_id)
        if stored is None:
            feats = detection_meta_features(load_recipe(recipe))
            store.put_dataset(dataset_id, plan.names.get(dataset_id, dataset_id), feats)
        else:
            feats = stored["features"]
        features[dataset_id] = {k: float(v) for k, v in feats.items()}
    return features


# ----------------------------------------------------------------------------------------------------------
# The trial: one detector evaluation


@dataclass(frozen=True)
class DetectorJob:
    """What every detector trial of a stage shares (narrow)."""

    space: str
    recipes: dict[str, dict[str, Any]]
    training: dict[str, Any]
    seed: int
    store: Any  # orchestrator.store.StoreClient
    run: str
    stage: str
    device: dict[str, Any] = field(default_factory=dict)  # device_settings: use_gpu, channels_last


def evaluate_detector(config: dict[str, Any], job: DetectorJob) -> None:
    """Tune function trainable. ``config`` = ``{"arch": <JSON>, "epochs": int, "dataset_id": str, ...}``.

    A stored evaluation with the same protocol is served from the store (``cached=True``); otherwise the
    detector trains (:func:`trainables.detector_train.fit_detector`) and the result is stored before the
    trial reports. A diverging run (NaN loss) is a failed evaluation, reported and not stored.
    """
    import torch

    from trainables.detector_train import fit_detector

    torch.set_num_threads(1)
    arch = decode_arch(job.space, config["arch"])
    epochs, dataset_id = int(config["epochs"]), str(config["dataset_id"])
    key = (job.space, arch.key(), dataset_id, epochs, job.seed)
    base = {"arch": arch.to_json(), "arch_key": arch.key(), "epochs": epochs, "dataset_id": dataset_id,
            "stage": job.stage}  # fmt: skip
    hit = lookup_same_protocol(job.store, key, job.training)
    if hit is not None:
        tune.report({**hit["metrics"], **base, "cached": True, "status": "ok", "error": ""})
        return
    data = load_recipe(job.recipes[dataset_id])
    if job.space == "detector_hpo":
        hpo, backbone = arch, DetectorArch.from_dict(job.training["partner"])
    else:
        hpo, backbone = HpoConfig.from_dict(job.training["partner"]), arch
    started = time.perf_counter()
    t = job.training
    try:
        fit = fit_detector(data, hpo, backbone, epochs=epochs, seed=job.seed, batch_size=t["batch_size"],
                           width_mult=t["width_mult"], eval_every=t["eval_every"], threads=1,
                           use_gpu=job.device.get("use_gpu", False), precision=t.get("precision", "fp32"),
                           channels_last=job.device.get("channels_last", False))  # fmt: skip
    except FloatingPointError as exc:
        tune.report({METRIC: math.nan, **base, "cached": False, "status": "failed", "error": str(exc)})
        return
    metrics = {"val_ap50": fit.val_ap50, "test_ap50": fit.test_ap50, "params": float(fit.params),
               "best_epoch": float(fit.best_epoch), "train_loss": fit.train_loss}  # fmt: skip
    if not all(math.isfinite(v) for v in metrics.values()):
        tune.report({**metrics, METRIC: math.nan, **base, "cached": False, "status": "failed",
                     "error": "non-finite detector metrics"})  # fmt: skip
        return
    record(job.store, key=key, config={"arch": arch.to_dict(), "epochs": epochs, "training": job.training},
           metrics=metrics, started=started, run=job.run)  # fmt: skip
    tune.report({**metrics, **base, "cached": False, "status": "ok", "error": ""})


# ----------------------------------------------------------------------------------------------------------
# The benchmark build


def job_searcher(jobs: Sequence[dict[str, Any]], *, epochs: int) -> FixedArchSearcher:
    """Hands out ``jobs`` (``{"arch", "dataset_id", ...}``: the benchmark's missing rows, a search's picks)
    in order, each trained for ``epochs``; their list is in the searcher's state."""
    return FixedArchSearcher([j["arch"] for j in jobs], epochs=epochs, metric=METRIC, mode="max",
                             extras=[{"dataset_id": j["dataset_id"]} for j in jobs])  # fmt: skip


def _same_protocol(row: dict[str, Any], plan: Plan, space: str) -> bool:
    """A stored row made with this plan's fidelity, seed and training protocol (else it is not served)."""
    config = json.loads(row["config"]) if isinstance(row["config"], str) else row["config"]
    return row["fidelity"] == plan.epochs and row["seed"] == plan.seed and config.get("training") == plan.training[space]


def missing_jobs(plan: Plan, space: str, store: Any) -> list[dict[str, Any]]:
    """The benchmark rows of ``space`` not yet stored with this plan's protocol."""
    have = {(row["arch_key"], row["dataset_id"]) for row in store.rows(space=space) if _same_protocol(row, plan, space)}
    out = []
    for job in plan.jobs(space):
        arch = decode_arch(space, job["arch"])
        if (arch.key(), job["dataset_id"]) not in have:
            out.append(job)
    return out


def benchmark_stage(plan: Plan, space: str, store: Any, *, run: str, name: str) -> Stage:
    """A stage evaluating the benchmark rows of ``space`` still missing when it starts."""
    job = DetectorJob(space, plan.recipes(), plan.training[space], plan.seed, store, run, name, plan.device)
    jobs = functools.lru_cache(maxsize=1)(lambda: tuple(json.dumps(j, sort_keys=True) for j in missing_jobs(plan, space, store)))
    return Stage(
        name=name,
        make_searcher=lambda _earlier: job_searcher([json.loads(j) for j in jobs()], epochs=plan.epochs),
        job=job,
        total=lambda _earlier: len(jobs()),
        trainable=evaluate_detector,
        metric=METRIC,
        mode="max",
    )


def build_benchmark(config: Any, storage: Path) -> dict[str, int]:
    """``facenas benchmark build CONFIG``: fill the store with the plan's missing rows (Ray must be up).

    Returns:
        space -> rows evaluated by this call (0 when the table was complete).
    """
    from orchestrator.pipeline import run_stage
    from orchestrator.store import StoreClient

    store = StoreClient.start(str(storage / "benchmark"))
    plan = Plan.from_config(config)
    register_datasets(plan, store)
    build_dir = storage / "benchmark" / "builds" / f"{config.name}-{time.strftime('%Y%m%d-%H%M%S')}"
    done = {}
    for space in config.searcher.spaces:
        stage = benchmark_stage(plan, space, store, run=f"benchmark:{config.name}", name=f"build-{space}")
        n = stage.total({})
        print(f"[build-{space}] {n} of {len(plan.jobs(space))} rows missing", flush=True)
        if n:
            run_stage(stage, run_dir=build_dir, earlier={}, metric=METRIC, mode="max",
                      resources=config.resources.model_dump(), training={"train_workers": 1})  # fmt: skip
        done[space] = n
    return done


# ----------------------------------------------------------------------------------------------------------
# The ranker's warm-up and the online stages


def pool_encodings(space: str, pool: Sequence[str]) -> dict[str, Any]:
    out = {}
    for text in pool:
        arch = decode_arch(space, text)
        out[arch.key()] = config_encoding(arch)
    return out


def _stored_results(plan: Plan, space: str, store: Any) -> dict[str, dict[str, dict[str, float]]]:
    """dataset_id -> arch_key -> {"val", "test"} of the rows made with this plan's protocol."""
    out: dict[str, dict[str, dict[str, float]]] = {}
    for row in store.rows(space=space):
        if not _same_protocol(row, plan, space):
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
        warmup_steps=s.warmup_steps, warmup_lr=s.warmup_lr,
    )  # fmt: skip


def domain_orders(domains: Sequence[str], orders: int, seed: int) -> list[list[str]]:
    """``orders`` random orders of the online domains (Algorithm 1 sees them in random order)."""
    return [list(np.random.default_rng([seed, 31, k]).permutation(list(domains))) for k in range(orders)]


def hyperfd_stages(config: Any, store: Any, run_dir: Path) -> tuple[list[Stage], Any, Any]:
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
        cache = run_dir / f"ranker-warmup-{space}.json"
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
        write_text_durable(run_dir / "table7.csv", long.to_csv(index=False))
        text = table7_markdown(long, list(s.domains))
        write_text_durable(run_dir / "table7.md", text)
        print(text, flush=True)
        ap = {space: {m: float(g["ap"].mean()) for m, g in long[long.space == space].groupby("method")}
              for space in s.spaces}  # fmt: skip
        return {"space": s.spaces[0], "normalized_rank": ranks, "mean_ap": ap, "orders": len(orders),
                "table7": str(run_dir / "table7.md")}  # fmt: skip

    return stages, select, extras


# ----------------------------------------------------------------------------------------------------------
# Table 7


def normalized_rank(test: dict[str, float], chosen: str) -> float:
    """100 * (pool configs with a strictly higher test AP than ``chosen``) / (pool size - 1): 0 = the best."""
    value = test[chosen]
    if not math.isfinite(value):
        return 100.0
    return 100.0 * sum(1 for v in test.values() if math.isfinite(v) and v > value) / max(len(test) - 1, 1)


def _pick(results: dict[str, dict[str, float]], keys: Sequence[str]) -> str | None:
    """c* = argmax of validation AP among ``keys`` (first on ties), as Algorithm 1 picks it."""
    ok = [k for k in keys if k in results and math.isfinite(results[k]["val"])]
    return max(ok, key=lambda k: (results[k]["val"], -list(keys).index(k))) if ok else None


def table7(
    *, space: str, pool: Sequence[str], results: dict[str, dict[str, dict[str, float]]],
    reference: dict[str, dict[str, float]], summaries: Sequence[dict[str, Any]], ids: dict[str, str],
    domains: Sequence[str], budget: int, seed: int,
) -> pd.DataFrame:
    """Per (method, domain, order): test AP (%) and normalized rank (%) of the config each method picks.

    Args:
        pool: the candidate keys (normalized rank is among these).
        results: domain -> arch_key -> {"val", "test"} for the pool on that online domain.
        reference: the same on the reference (source) domain.
        summaries: per order, :meth:`TransferRankerSearcher.summary`.

    Returns:
        Long frame with columns ``space, method, domain, order, arch_key, ap, normalized_rank``.
    """
    rows = []
    ref_key = _pick(reference, list(pool))
    by_id = {ids[d]: d for d in domains}
    for k, summary in enumerate(summaries):
        picks = {by_id[t["dataset_id"]]: t["suggested"] for t in summary.get("tasks", [])}
        for i, d in enumerate(domains):
            res = {key: results[d][key] for key in pool if key in results[d]}
            test = {key: r["test"] for key, r in res.items()}
            rng = np.random.default_rng([seed, 97, k, i])
            methods = {
                "HyperFD": picks.get(d, []),
                "Random search": [pool[int(j)] for j in rng.choice(len(pool), min(budget, len(pool)), replace=False)],
                "Best on reference": [ref_key] if ref_key else [],
            }
            for method, keys in methods.items():
                chosen = _pick(res, keys)
                rows.append({
                    "space": space, "method": method, "domain": d, "order": k, "arch_key": chosen or "",
                    "ap": 100.0 * test[chosen] if chosen else math.nan,
                    "normalized_rank": normalized_rank(test, chosen) if chosen else 100.0,
                })  # fmt: skip
    return pd.DataFrame(rows, columns=["space", "method", "domain", "order", "arch_key", "ap", "normalized_rank"])


def table7_markdown(long: pd.DataFrame, domains: Sequence[str]) -> str:
    """Table 7 (a)-(d): per space, AP and normalized rank, ``mean±std`` over orders, plus the average.

    The average column is the mean over domains of each order's value, ``±`` its std over orders.
    """
    out = []
    methods = ["Random search", "Best on reference", "HyperFD"]
    for space in long["space"].unique():
        for column, title in (("ap", "AP@50 (%) of the searched config, higher is better"),
                              ("normalized_rank", "normalized rank (%) of the searched config, lower is better")):
            sub = long[long.space == space]
            out.append(f"\n{space}: {title}\n")
            out.append("| method | " + " | ".join(domains) + " | average |")
            out.append("|---" * (len(domains) + 2) + "|")
            for method in methods:
                m = sub[sub.method == method]
                if m.empty:
                    continue
                cells = []
                for d in domains:
                    v = m[m.domain == d][column]
                    cells.append(f"{v.mean():.2f}±{v.std(ddof=0):.2f}")
                per_order = m.groupby("order")[column].mean()
                cells.append(f"{per_order.mean():.2f}±{per_order.std(ddof=0):.2f}")
                out.append(f"| {method} | " + " | ".join(cells) + " |")
    return "\n".join(out) + "\n"


# ----------------------------------------------------------------------------------------------------------
# Cross-searcher warm start


def warm_start_configs(
    store: Any, space: str, features: dict[str, float], pool: Sequence[str], *, top: int,
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


def search_stages(config: Any, store: Any, run_dir: Path) -> tuple[list[Stage], Any, Any]:
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
    from trainables.detection_data import detection_meta_features

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
        path = run_dir / f"warm-start-{space}.json"
        if path.is_file():
            return json.loads(path.read_text())
        pool = sample_pool(space, s.pool_size, seed=pool_seed(space, config.seed))
        warm = []
        if s.warm_start:
            warm = warm_start_configs(store, space, features, pool, top=s.warm_start, settings=ranker_settings(s),
                                      seed=config.seed, exclude=dataset.dataset_id)  # fmt: skip
        rng = np.random.default_rng([config.seed, 41, SPACES.index(space)])
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

        return Stage(name=name, make_searcher=searcher, job=job, total=lambda _e: s.num_samples,
                     trainable=evaluate_detector, metric=METRIC, mode="max")  # fmt: skip

    stages = [stage(space) for space in s.spaces]

    def select(outcomes: dict[str, StageOutcome]) -> dict[str, Any] | None:
        return pick_best(outcomes[f"search-{s.spaces[0]}"].frame, mode="max")

    def extras(outcomes: dict[str, StageOutcome]) -> dict[str, Any]:
        best, warm = {}, {}
        for space in s.spaces:
            chosen = picks(space)
            warm[space] = [decode_arch(space, a).key() for a in chosen["warm"]]
            top = pick_best(outcomes[f"search-{space}"].frame, mode="max")
            if top is not None:
                best[space] = {"arch_key": top["arch_key"], "val_ap50": top["value"],
                               "from_warm_start": top["arch_key"] in warm[space]}  # fmt: skip
        return {"space": s.spaces[0], "dataset": data.domain, "dataset_id": dataset.dataset_id, "best_by_space": best,
                "warm_start": warm}  # fmt: skip

    return stages, select, extras
