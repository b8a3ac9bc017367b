"""HyperFD's plan: the datasets and candidate pools of one config, and the protocol of every evaluation.

Paper: ``papers/hyperfd-online-automl-face-detection-supplement.txt`` (§B.4-B.5).

:class:`Plan` turns the config into datasets and candidate pools: the source domain (``data.domain``,
the paper's WIDER-Face; also the reference domain of "best on reference"), its clustered sub-datasets
(the offline set, §B.4) and the online domains (``searcher.domains``); per space (``detector_hpo``:
Table 2, ``detector_nas``: Table 3) a pool of ``pool_size`` sampled configs (§B.5: "200 distinct
configurations"; ours smaller).

Privacy (§3 of the paper, DESIGN.md §3): images stay in the trials and in this driver; the store gets
meta-features (:func:`trainables.detection.data.detection_meta_features`, :func:`register_datasets`) and
results, the ranker meta-feature vectors and results.
"""

from __future__ import annotations

import functools
import json
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from orchestrator.evaluate import cached_dataset
from orchestrator.methods.streams import HYPERFD_POOL_SALT, HYPERFD_RANDOM_PICK_SALT, hyperfd_pool_seed
from search_algos.spaces.detector import DetectorArch, DetectorHpoSpace, DetectorNasSpace, HpoConfig

if TYPE_CHECKING:
    from orchestrator.config import ExperimentConfig, TrainingConfig
    from orchestrator.trial import Store

__all__ = [
    "METRIC",
    "SPACES",
    "Plan",
    "device_settings",
    "load_recipe",
    "pool_seed",
    "register_datasets",
    "same_protocol",
    "sample_pool",
    "training_protocol",
]

METRIC = "val_ap50"
SPACES = ("detector_hpo", "detector_nas")


def _load_offline(source: dict[str, Any], clustering: dict[str, Any], dataset_id: str) -> Any:
    for ds in _offline_cached(json.dumps(source, sort_keys=True), json.dumps(clustering, sort_keys=True)):
        if ds.dataset_id == dataset_id:
            return ds
    raise ValueError(f"offline dataset {dataset_id} is not among the sub-datasets of {source}")


@functools.lru_cache(maxsize=4)
def _offline_cached(source_json: str, clustering_json: str) -> tuple[Any, ...]:
    from trainables.detection.generator import offline_datasets

    source = json.loads(source_json)
    clustering = json.loads(clustering_json)
    return tuple(offline_datasets(source.pop("domain"), **source, **clustering))


def load_recipe(recipe: dict[str, Any]) -> Any:
    """The dataset a recipe names: ``{"kind": "domain", "kwargs": ...}`` or ``{"kind": "offline", ...}``."""
    if recipe["kind"] == "domain":
        from trainables.detection.generator import load_detection_domain

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
    def from_config(cls, config: ExperimentConfig) -> Plan:
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
            rng = np.random.default_rng([config.seed, HYPERFD_RANDOM_PICK_SALT, i])
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


def device_settings(training: TrainingConfig) -> dict[str, Any]:
    """``use_gpu`` and ``channels_last`` of the ``training`` section, for :class:`DetectorJob`."""
    return {"use_gpu": training.use_gpu, "channels_last": training.channels_last}


def pool_seed(space: str, seed: int) -> int:
    """The seed of a space's pool (by name, not position: a run of one space sees the same pool)."""
    return hyperfd_pool_seed(seed, SPACES.index(space))


def sample_pool(space: str, size: int, *, seed: int) -> list[str]:
    """``size`` distinct configs of ``space``, seeded (§B.5 samples the pool at random)."""
    rng = np.random.default_rng([seed, HYPERFD_POOL_SALT])
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


def register_datasets(plan: Plan, store: Store) -> dict[str, dict[str, float]]:
    """Meta-features of every dataset of the plan into the store (never images); returns them."""
    from trainables.detection.data import detection_meta_features

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


def same_protocol(row: dict[str, Any], plan: Plan, space: str) -> bool:
    """A stored row made with this plan's fidelity, seed and training protocol (else it is not served)."""
    config = json.loads(row["config"]) if isinstance(row["config"], str) else row["config"]
    return row["fidelity"] == plan.epochs and row["seed"] == plan.seed and config.get("training") == plan.training[space]
