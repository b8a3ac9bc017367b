"""HyperFD (``searcher: hyperfd``; online AutoML for face detection), by concern.

Paper: ``papers/hyperfd-online-automl-face-detection-supplement.txt``.

- :mod:`~orchestrator.methods.hyperfd.plan`: datasets, candidate pools and the training protocol of a config;
- :mod:`~orchestrator.methods.hyperfd.benchmark`: the detector trial and the cross-dataset benchmark build
  (``facenas benchmark build CONFIG``, the command this method adds);
- :mod:`~orchestrator.methods.hyperfd.online`: the ranker's warm-up, the online protocol (Algorithm 1) and the
  warm-started search on one dataset (``mode: search``);
- :mod:`~orchestrator.methods.hyperfd.table`: Table 7.

This module holds the searcher section, the method's rule and its registry entry; the modules above are
imported when a run or a build needs them (they import Ray and pandas).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Literal

from pydantic import Field, model_validator

from orchestrator.methods.base import Command, Method
from orchestrator.sections import Section

if TYPE_CHECKING:
    from orchestrator.config import ExperimentConfig
    from orchestrator.methods.base import StagePlan
    from orchestrator.store import StoreClient

__all__ = ["METHOD", "HyperFDSearcherConfig"]


class HyperFDSearcherConfig(Section):
    """HyperFD (online AutoML for face detection): offline benchmark, ranker warm-up, online protocol, Table 7.

    ``data`` (a detection domain) is the source: its clustered sub-datasets are the offline set and it is
    the reference of "best on reference". Ranker keys default to the supplement's Table 6.
    """

    name: Literal["hyperfd"] = "hyperfd"
    domains: tuple[str, ...] = ("plain", "mask", "fisheye", "fisheye_crowd", "lowlight", "blur", "grayscale",
                                "crowd", "large", "anime")  # fmt: skip
    spaces: tuple[Literal["detector_hpo", "detector_nas"], ...] = ("detector_hpo", "detector_nas")
    pool_size: int = Field(24, ge=2)
    budget: int = Field(4, ge=1)
    orders: int = Field(5, ge=1)
    # benchmark: datasets and the detector's training protocol
    source_images: int = Field(400, ge=20)
    offline_datasets: int = Field(16, ge=2)
    offline_configs: int = Field(12, ge=2)
    clustering_methods: tuple[str, ...] = ("kmeans", "pca_kmeans", "agglomerative", "birch", "dbscan")
    clustering_ks: tuple[int, ...] = (2, 3, 5, 7)
    min_images: int = Field(40, ge=3)
    epochs: int = Field(6, ge=1)
    batch_size: int = Field(16, ge=2)
    width_mult: float = Field(0.25, gt=0, le=4)
    eval_every: int = Field(2, ge=1)
    # ranker (Table 6)
    hidden: int = Field(64, ge=1)
    lr: float = Field(1e-4, gt=0)
    iters_per_task: int = Field(50, ge=1)
    trans_iters: int = Field(20, ge=0)
    lambda_sim: float = Field(0.03, ge=0)
    margin: float = Field(0.5, ge=0)
    lambda_reg: float = Field(1e4, ge=0)
    explore_ratio: float = Field(0.5, ge=0, lt=1)
    warmup_steps: int = Field(400, ge=0)
    warmup_lr: float = Field(1e-3, gt=0)
    # not in the paper: weight of the dataset-free prior (each config's mean quantile over the stored
    # datasets) in the suggestions; 0 = the paper's ranker alone (search_algos.hyperfd.RankerSettings)
    prior_weight: float = Field(0.0, ge=0, le=1)
    # mode: search -- a search on the one dataset of `data`, its first `warm_start` configs the ranker's
    # top suggestions learnt from every stored run (0: plain random search over the pool)
    mode: Literal["protocol", "search"] = "protocol"
    num_samples: int = Field(8, ge=1)
    warm_start: int = Field(4, ge=0)
    # detector trials report every validated epoch: `scheduler` (asha, median) applies to mode: search and
    # to `facenas benchmark build`; a stopped row is never stored nor the best (mode: protocol refuses it)
    stoppable: ClassVar[bool] = True

    @model_validator(mode="after")
    def _check(self) -> HyperFDSearcherConfig:
        from trainables.detection.data import CLUSTERINGS
        from trainables.detection.generator import domain_names

        problems = []
        unknown = [d for d in self.domains if d not in domain_names()]
        if unknown:
            problems.append(f"domains {unknown} are unknown; valid domains: {', '.join(domain_names())}")
        if len(set(self.domains)) != len(self.domains) or not self.domains:
            problems.append(f"domains must be distinct and non-empty, got {list(self.domains)}")
        if len(set(self.spaces)) != len(self.spaces) or not self.spaces:
            problems.append(f"spaces must be distinct and non-empty, got {list(self.spaces)}")
        bad = [m for m in self.clustering_methods if m not in CLUSTERINGS]
        if bad:
            problems.append(f"clustering_methods {bad} are unknown; valid: {', '.join(CLUSTERINGS)}")
        if self.budget > self.pool_size:
            problems.append(f"budget <= pool_size must hold, but got budget={self.budget}, pool_size={self.pool_size}")
        if self.mode == "search" and self.num_samples > self.pool_size:
            problems.append(f"num_samples <= pool_size must hold, got num_samples={self.num_samples}, "
                            f"pool_size={self.pool_size}")
        if self.mode == "search" and self.warm_start > self.num_samples:
            problems.append(f"warm_start <= num_samples must hold, got warm_start={self.warm_start}, "
                            f"num_samples={self.num_samples}")
        if "detector_hpo" in self.spaces and self.pool_size > 216:
            problems.append(f"pool_size <= 216 (the HPO grid of Table 2) must hold, got {self.pool_size}")
        if problems:
            raise ValueError("; ".join(problems))
        return self


def _check(config: ExperimentConfig) -> None:
    if config.data_kind != "detection":
        raise ValueError(
            "searcher 'hyperfd' needs a detection dataset (data.dataset: detection, its domain is the "
            f"offline source), got dataset {config.data.dataset!r}"
        )
    if config.searcher.mode == "protocol" and config.data.domain in config.searcher.domains:
        raise ValueError(
            f"data.domain {config.data.domain!r} is the offline source; remove it from searcher.domains "
            "(the online domains)"
        )


def _run_check(config: ExperimentConfig) -> None:
    if config.searcher.mode == "protocol" and config.scheduler.name != "none":
        raise ValueError(
            f"scheduler {config.scheduler.name!r} does not apply to hyperfd's mode: protocol (Table 7 ranks whole "
            "trainings of every pool config); it applies to mode: search and to `facenas benchmark build`: remove "
            "scheduler or set searcher.mode: search"
        )


def _stages(config: ExperimentConfig, data: Any, store: StoreClient, run_dir: str) -> StagePlan:
    from orchestrator.methods.hyperfd.online import hyperfd_stages

    return hyperfd_stages(config, store, Path(run_dir))


def _build(config: ExperimentConfig, storage: Path) -> list[str]:
    from orchestrator.methods.hyperfd.benchmark import build_benchmark

    done = build_benchmark(config, storage)
    return ["benchmark: " + ", ".join(f"{space}: {n} rows evaluated" for space, n in done.items()),
            f"store:     {storage / 'benchmark'}"]


METHOD = Method(
    name="hyperfd",
    title="HyperFD",
    section=HyperFDSearcherConfig,
    data="detection",
    space=None,  # its spaces (detector_hpo, detector_nas) are searcher.spaces
    stages=_stages,
    check=_check,
    run_check=_run_check,
    commands=(
        Command(
            group="benchmark",
            action="build",
            help="fill the store offline for a config (resumes: stored rows are skipped)",
            config_help="experiment YAML with searcher.name: hyperfd, e.g. configs/hyperfd.yaml",
            needs="it defines datasets and pools",
            run=_build,
            interrupted="benchmark build interrupted; the rows stored so far are kept: run the same command "
                        "again to continue",
        ),
    ),
)
