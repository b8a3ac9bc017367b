"""Experiment configuration: YAML -> typed, validated models (pydantic).

Every key is documented in README.md ("Configuration reference"). Unknown keys, wrong types and
out-of-range values are all reported at once, one line each with its key path and what is allowed
(:func:`load_config` raises :class:`~orchestrator.errors.UserError`); nothing is started before the
config is valid.
"""

from __future__ import annotations

import copy
import re
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal, Union

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    Tag,
    ValidationError,
    field_validator,
    model_validator,
)

from orchestrator.errors import UserError
from search_algos.spaces import GlobalSpace

__all__ = [
    "DataConfig",
    "DetectionDataConfig",
    "ExperimentConfig",
    "HyperFDSearcherConfig",
    "GlobalSpaceConfig",
    "MacroMicroSearcherConfig",
    "RandomSearcherConfig",
    "ResourcesConfig",
    "TrainingConfig",
    "apply_overrides",
    "load_config",
    "parse_config",
]

_NAME_RE = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$"


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class DataConfig(_Section):
    """Which dataset and how to split it (decisions use ``val``; ``test`` is reported only)."""

    dataset: str = "digits"
    path: str | None = None
    split_seed: int = Field(0, ge=0)
    val_fraction: float = Field(0.2, gt=0, lt=1)
    test_fraction: float = Field(0.2, gt=0, lt=1)
    max_samples: int | None = Field(None, ge=30)

    @field_validator("dataset")
    @classmethod
    def _known(cls, name: str) -> str:
        from trainables.classification.data import dataset_names

        if name not in dataset_names():
            raise ValueError(f"unknown dataset {name!r}; valid datasets: {', '.join(dataset_names())}")
        return name

    @model_validator(mode="after")
    def _check(self) -> DataConfig:
        if self.val_fraction + self.test_fraction >= 1:
            raise ValueError(
                "val_fraction + test_fraction < 1 must hold, but got "
                f"{self.val_fraction} + {self.test_fraction}"
            )
        return self

    def loader_kwargs(self) -> dict[str, Any]:
        """Keyword arguments of ``trainables.classification.data.load_dataset``."""
        kwargs = self.model_dump()
        kwargs["name"] = kwargs.pop("dataset")
        return kwargs


ALIGNMENT_DATASETS = ("faces3d", "aflw2000")


class AlignmentDataConfig(_Section):
    """A 3D face-alignment set (MONAS): generated ``faces3d``, or ``aflw2000`` files for the test split."""

    dataset: Literal["faces3d", "aflw2000"] = "faces3d"
    path: str | None = None
    image_size: int = Field(32, ge=16, le=256)
    n_train: int = Field(600, ge=8)
    n_val: int = Field(150, ge=4)
    n_test: int = Field(300, ge=4)
    seed: int = Field(0, ge=0)

    def loader_kwargs(self) -> dict[str, Any]:
        """Keyword arguments of ``trainables.alignment.data.load_alignment_dataset``."""
        kwargs = self.model_dump()
        kwargs["name"] = kwargs.pop("dataset")
        return kwargs


class DetectionDataConfig(_Section):
    """A face-detection domain (HyperFD): LFW faces on photographs with one domain's shift, split 6:1:3."""

    dataset: Literal["detection"] = "detection"
    domain: str = "plain"
    seed: int = Field(0, ge=0)
    image_size: int = Field(64, ge=32, le=256)
    n_images: int = Field(200, ge=10)

    @field_validator("domain")
    @classmethod
    def _known_domain(cls, name: str) -> str:
        from trainables.detection.generator import domain_names

        if name not in domain_names():
            raise ValueError(f"unknown detection domain {name!r}; valid domains: {', '.join(domain_names())}")
        return name

    def loader_kwargs(self) -> dict[str, Any]:
        """Keyword arguments of ``trainables.detection.generator.load_detection_domain``."""
        kwargs = self.model_dump()
        kwargs.pop("dataset")
        return kwargs


class MicroExprDataConfig(_Section):
    """Micro-expression clips (RNAS-MER): generated from LFW faces, or CASME-II/SAMM-style folders."""

    dataset: Literal["microexpr", "mer_folder"] = "microexpr"
    path: str | None = None  # mer_folder: the folder of subject/episode/frame folders
    coding_sheet: str | None = None  # mer_folder: the CSV (default: <path>/coding.csv)
    subjects: int = Field(12, ge=2, le=100)  # microexpr: distinct LFW faces
    episodes: int = Field(6, ge=1, le=1000)  # microexpr: clips per subject
    frames: int = Field(8, ge=2, le=64)  # every clip is interpolated to this many frames
    image_size: int = Field(32, ge=16, le=128)
    seed: int = Field(0, ge=0)
    max_motion: float = Field(2.0, gt=0, le=2.0)  # pixels at the apex
    noise: float = Field(0.02, ge=0, lt=1)
    magnify: float = Field(0.0, ge=0, le=50)  # Eulerian magnification of every clip (paper §4.1); 0: off

    @model_validator(mode="after")
    def _check(self) -> MicroExprDataConfig:
        if self.dataset == "mer_folder" and not self.path:
            raise ValueError("dataset 'mer_folder' needs path: the folder holding <subject>/<episode>/<frames>")
        return self

    def loader_kwargs(self) -> dict[str, Any]:
        """Keyword arguments of ``trainables.microexpr.data.load_microexpr``."""
        kwargs = self.model_dump()
        kwargs["name"] = kwargs.pop("dataset")
        kwargs["magnify_factor"] = kwargs.pop("magnify")
        return kwargs


def _data_kind(value: Any) -> str:
    dataset = value.get("dataset") if isinstance(value, dict) else getattr(value, "dataset", None)
    if dataset == "detection":
        return "detection"
    if dataset in ("microexpr", "mer_folder"):
        return "microexpr"
    return "alignment" if dataset in ALIGNMENT_DATASETS else "classification"


_DATA_MODELS: dict[str, type[_Section]] = {
    "classification": DataConfig,
    "alignment": AlignmentDataConfig,
    "detection": DetectionDataConfig,
    "microexpr": MicroExprDataConfig,
}
DataSection = Annotated[
    Union[
        Annotated[DataConfig, Tag("classification")],
        Annotated[AlignmentDataConfig, Tag("alignment")],
        Annotated[DetectionDataConfig, Tag("detection")],
        Annotated[MicroExprDataConfig, Tag("microexpr")],
    ],
    Discriminator(_data_kind),
]


class GlobalSpaceConfig(_Section):
    """Bounds of the ``global`` space (Efficient Global NAS §3.1)."""

    name: Literal["global"] = "global"
    d_min: int = Field(5, ge=1)
    d_max: int = Field(100, ge=1)
    w_min: int = Field(16, ge=1)
    w_max: int = Field(128, ge=1)
    w_step: int = Field(2, ge=1)
    ops: tuple[Literal["sep", "conv"], ...] = ("sep", "conv")
    kernels: tuple[Literal[3, 5], ...] = (3, 5)

    @model_validator(mode="after")
    def _check(self) -> GlobalSpaceConfig:
        self.build()  # cross-field rules live in the space itself; its ValueError names them
        return self

    def build(self) -> GlobalSpace:
        return GlobalSpace(**self.model_dump(exclude={"name"}))


class MultipathSpaceConfig(_Section):
    """The MONAS multi-path space: ``layers`` node columns x ``scales`` resolutions (paper: 10 x 4)."""

    name: Literal["multipath"] = "multipath"
    layers: int = Field(4, ge=2, le=32)
    scales: int = Field(3, ge=1, le=6)

    def build(self):
        from search_algos.spaces.multipath import MultipathSpace

        return MultipathSpace(layers=self.layers, scales=self.scales)


class RnasSpaceConfig(_Section):
    """The RNAS-MER space: OPEN path over ``levels`` resolutions x ``cells`` cells, one cell of ``nodes`` nodes."""

    name: Literal["rnas"] = "rnas"
    cells: int = Field(6, ge=1, le=12)  # paper: 6
    nodes: int = Field(4, ge=1, le=6)  # DESIGN.md: N = 4
    levels: int = Field(4, ge=1, le=5)  # paper: down-sampling {2, 4, 8, 16}
    ops: Literal["hybrid", "darts"] = "hybrid"  # Table 1, or DARTS's 8 (ablations 1-2)
    attention: bool = True  # spatio-temporal attention at the cell output (off: ablation 3)

    def build(self):
        from search_algos.spaces.rnas import RnasSpace

        return RnasSpace(cells=self.cells, nodes=self.nodes, levels=self.levels, ops=self.ops, attention=self.attention)


def _space_kind(value: Any) -> str:
    name = value.get("name", "global") if isinstance(value, dict) else getattr(value, "name", "global")
    return name if name in ("global", "multipath", "rnas") else str(name)


SpaceSection = Annotated[
    Union[
        Annotated[GlobalSpaceConfig, Tag("global")],
        Annotated[MultipathSpaceConfig, Tag("multipath")],
        Annotated[RnasSpaceConfig, Tag("rnas")],
    ],
    Discriminator(_space_kind),
]


class RandomSearcherConfig(_Section):
    """Random search: ``num_samples`` architectures, each trained ``epochs`` epochs."""

    name: Literal["random"] = "random"
    num_samples: int = Field(12, ge=1)
    epochs: int = Field(3, ge=1)
    tunable: ClassVar[bool] = True  # its trials train for `epochs` and report each: `scheduler` and `hpo` apply


class MacroMicroSearcherConfig(_Section):
    """Efficient Global NAS (Algorithm 1): a §4.1 preset plus overrides, speculation, baseline, retrain.

    Every setting left out comes from ``preset``; see ``search_algos.macro_micro.MacroMicroSettings``.
    """

    name: Literal["macro_micro"] = "macro_micro"
    preset: Literal["tiny", "mobile"] = "tiny"
    d_min: int | None = Field(None, ge=1)
    d_max: int | None = Field(None, ge=1)
    w_min: int | None = Field(None, ge=1)
    w_max: int | None = Field(None, ge=1)
    w_res: int | None = Field(None, ge=1)
    e_min_macro: int | None = Field(None, ge=1)
    e_min_micro: int | None = Field(None, ge=1)
    grow_gain: float | None = Field(None, ge=0)
    drop_tolerance: float | None = Field(None, ge=0)
    max_drops: int | None = Field(None, ge=1)
    prune_epochs_step: int | None = Field(None, ge=0)
    max_prune_failures: int | None = Field(None, ge=1)
    param_slack: float | None = Field(None, ge=0)
    width_step: int | None = Field(None, ge=1)
    speculate: int = Field(1, ge=1)
    final_epochs: int = Field(10, ge=1)
    # The searched network is retrained with this many training seeds (seed, seed+1, ...); RI uses
    # their mean accuracy, as the paper reports means over runs.
    final_seeds: int = Field(1, ge=1, le=20)
    baseline_samples: int | None = Field(None, ge=1)

    @model_validator(mode="after")
    def _check(self) -> MacroMicroSearcherConfig:
        self.settings()  # cross-field rules (d_min <= d_max, ...) live in the settings themselves
        return self

    def settings(self):
        from search_algos.macro_micro import MacroMicroSettings

        overrides = self.model_dump(
            exclude={"name", "preset", "speculate", "final_epochs", "final_seeds", "baseline_samples"},
            exclude_none=True,
        )
        try:
            return MacroMicroSettings.preset(self.preset, **overrides)
        except ValueError as exc:
            raise ValueError(str(exc).removeprefix("invalid MacroMicroSettings: ")) from None


class SamosSearcherConfig(_Section):
    """MONAS: MNUS supernet training, SAMOS search (Algorithm 2), random baseline, stand-alone retraining."""

    name: Literal["samos"] = "samos"
    # supernet (Algorithm 1)
    supernet_epochs: int = Field(6, ge=1)
    k_children: int = Field(4, ge=1)
    sampling: Literal["mnus", "uniform"] = "mnus"
    channels: int = Field(8, ge=2)
    batch_size: int = Field(16, ge=2)
    lr: float = Field(1e-3, gt=0)
    bn_recalibration_batches: int = Field(4, ge=0)
    # SAMOS (Algorithm 2)
    iterations: int = Field(200, ge=1)
    cooling: float = Field(0.85, gt=0, lt=1)
    t0: float | None = Field(None, gt=0)
    calibration: int = Field(8, ge=1)
    chains: int = Field(1, ge=1)
    # baseline, retraining, ablation (Table IV)
    random_samples: int | None = Field(None, ge=1)
    retrain_epochs: int = Field(10, ge=1)
    ablation: bool = False
    ablation_children: int = Field(12, ge=3)


class RnasSearcherConfig(_Section):
    """RNAS-MER: bilevel differentiable search (Algorithm 1), LOSO retraining, baseline, ablations (Table 3)."""

    name: Literal["rnas_mer"] = "rnas_mer"
    # supernet (ablation switches of Table 3 beside space.ops / space.attention)
    channels: int = Field(4, ge=1)  # level-0 width of the supernet; level j has channels * 2**j
    partial_channels: int = Field(4, ge=1)  # PC-DARTS k: 1/k of the channels through the mixed op; 1 = off
    edge_normalization: bool = True  # eta (off: ablations 1 and 4)
    beta_normalisation: Literal["outgoing", "incoming"] = "outgoing"  # Eq. 7 as written, or DESIGN.md's
    shared_kernels: bool = True  # hybrid ops of an edge share nu_1, nu_3, nu_5 during the search (CPU budget)
    # search (Algorithm 1): weights on Train A, alpha/eta/beta on Train B
    epochs: int = Field(6, ge=1)
    batch_size: int = Field(8, ge=2)
    lr: float = Field(0.025, gt=0)
    arch_lr: float = Field(3e-3, gt=0)
    arch_weight_decay: float = Field(1e-3, ge=0)
    tune_over: Literal["seeds", "optuna"] = "seeds"
    seeds: tuple[int, ...] = (0,)
    optuna_trials: int = Field(4, ge=1)
    arch_lr_range: tuple[float, float] = (1e-4, 1e-2)
    arch_weight_decay_range: tuple[float, float] = (1e-5, 1e-2)
    # training stage: leave-one-subject-out
    retrain_channels: int = Field(4, ge=1)
    loso_epochs: int = Field(15, ge=1)
    loso_batch_size: int = Field(8, ge=2)
    loso_lr: float = Field(2e-3, gt=0)
    baseline: bool = True  # a hand-designed 3D CNN of about the same size under the same LOSO
    ablations: tuple[Literal["darts_ops", "no_partial", "no_attention", "no_edge_norm"], ...] = ()

    @model_validator(mode="after")
    def _check(self) -> RnasSearcherConfig:
        if self.channels % self.partial_channels:
            raise ValueError(
                f"channels must be a multiple of partial_channels, got {self.channels} and {self.partial_channels}"
            )
        if not self.seeds or len(set(self.seeds)) != len(self.seeds) or min(self.seeds) < 0:
            raise ValueError(f"seeds must list distinct non-negative seeds, got {list(self.seeds)}")
        for key in ("arch_lr_range", "arch_weight_decay_range"):
            low, high = getattr(self, key)
            if not 0 < low < high:
                raise ValueError(f"{key}: 0 < low < high must hold, got low={low}, high={high}")
        if len(set(self.ablations)) != len(self.ablations):
            raise ValueError(f"ablations must not repeat, got {list(self.ablations)}")
        return self


class HyperFDSearcherConfig(_Section):
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
    # mode: search -- a search on the one dataset of `data`, its first `warm_start` configs the ranker's
    # top suggestions learnt from every stored run (0: plain random search over the pool)
    mode: Literal["protocol", "search"] = "protocol"
    num_samples: int = Field(8, ge=1)
    warm_start: int = Field(4, ge=0)

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


SearcherConfig = Annotated[
    Union[RandomSearcherConfig, MacroMicroSearcherConfig, SamosSearcherConfig, RnasSearcherConfig,
          HyperFDSearcherConfig],
    Field(discriminator="name"),
]


class TrainingConfig(_Section):
    """How each candidate is trained (the paper's protocol by default), and on what device.

    ``use_gpu``, ``precision`` and ``channels_last`` apply to every trainable (candidates, the MONAS supernet,
    one-shot evaluation and retraining, the HyperFD detector): :mod:`trainables.device`.
    """

    batch_size: int = Field(64, ge=1)
    lr: float = Field(0.025, gt=0)
    momentum: float = Field(0.9, ge=0, lt=1)
    weight_decay: float = Field(3e-4, ge=0)
    cutout: int = Field(0, ge=0)
    train_workers: int = Field(1, ge=1)
    cpus_per_worker: float = Field(1.0, gt=0)
    use_gpu: bool = False
    # auto: bf16 autocast with use_gpu (tensor cores, half the activation memory), fp32 on CPUs
    precision: Literal["auto", "fp32", "bf16"] = "auto"
    channels_last: bool = False  # NHWC convolutions; pays with bf16 on recent GPUs

    @property
    def resolved_precision(self) -> str:
        """``fp32`` or ``bf16``: ``precision``, with ``auto`` read as bf16 on GPUs and fp32 on CPUs."""
        from trainables.device import resolve_precision

        return resolve_precision(self.precision, gpu=self.use_gpu)

    def protocol(self) -> dict[str, Any]:
        """The training keys as the trials get them and as the benchmark store keys their rows.

        ``precision`` is resolved (:attr:`resolved_precision`) and, like ``channels_last``, left out at its
        plain value (fp32, off): a run that uses neither keeps the protocol, and so the stored rows it is
        served from, that it had before these keys existed. A trial reads a missing key as that value.
        """
        out = self.model_dump()
        del out["precision"]
        if self.resolved_precision != "fp32":
            out["precision"] = self.resolved_precision
        if not out["channels_last"]:
            del out["channels_last"]
        return out


class SchedulerConfig(_Section):
    """A Ray Tune trial scheduler for the stages it applies to (``orchestrator.schedulers``)."""

    name: Literal["none", "asha", "hyperband", "pbt"] = "none"
    grace_period: int = Field(1, ge=1)  # epochs a trial trains before ASHA may stop it
    reduction_factor: float = Field(3.0, ge=2)
    brackets: int = Field(1, ge=1)
    max_t: int | None = Field(None, ge=1)  # default: the stage's epochs

    @model_validator(mode="after")
    def _check(self) -> SchedulerConfig:
        if self.name == "pbt":
            raise ValueError(
                "pbt does not apply to facenas stages: PBT continues a trial from another trial's Tune "
                "checkpoint with mutated hyper-parameters, but candidates resume only their own training; "
                "use asha or hyperband (and `hpo` for hyper-parameters)"
            )
        return self


class ResourcesConfig(_Section):
    """What each trial reserves and how many run at once.

    ``gpus_per_trial`` goes with ``training.use_gpu``: either one given alone implies the other
    (``use_gpu: true`` reserves 1 GPU a trial; ``gpus_per_trial > 0`` trains on it), see
    :meth:`ExperimentConfig._gpu_pairing`. Ray Train workers (``training.train_workers > 1``) reserve one
    GPU each instead.
    """

    cpus_per_trial: float = Field(1.0, gt=0)
    gpus_per_trial: float = Field(0.0, ge=0)
    max_concurrent_trials: int | None = Field(None, ge=1)
    max_failures: int = Field(2, ge=0)
    num_cpus: int | None = Field(None, ge=1)


class ExperimentConfig(_Section):
    """A whole experiment. ``seed`` fixes the search: the same seed gives the same search."""

    name: str = Field("experiment", pattern=_NAME_RE)
    seed: int = Field(0, ge=0)
    storage: str = "runs"
    data: DataSection = DataConfig()
    space: SpaceSection = GlobalSpaceConfig()
    searcher: SearcherConfig = RandomSearcherConfig()
    training: TrainingConfig = TrainingConfig()
    resources: ResourcesConfig = ResourcesConfig()
    scheduler: SchedulerConfig = SchedulerConfig()
    hpo: dict[str, Any] = Field(default_factory=dict)  # training key -> [kind, ...]; see search_algos.hpo

    @model_validator(mode="before")
    @classmethod
    def _gpu_pairing(cls, raw: Any) -> Any:
        """``training.use_gpu: true`` alone reserves 1 GPU a trial; ``resources.gpus_per_trial > 0`` alone trains on it.

        Ray hides the GPUs from a trial that reserved none, and a reserved GPU nothing trains on is wasted,
        so the two keys go together; one given alone fills the other (the resolved config.yaml shows it),
        and :meth:`_gpus_agree` refuses the two given in contradiction.
        """
        if not isinstance(raw, dict):
            return raw
        training, resources = raw.get("training", {}), raw.get("resources", {})
        if not isinstance(training, dict) or not isinstance(resources, dict):
            return raw  # the sections' own validation reports it
        gpus = resources.get("gpus_per_trial")
        if training.get("use_gpu") is True and "gpus_per_trial" not in resources:
            return {**raw, "resources": {**resources, "gpus_per_trial": 1}}
        if "use_gpu" not in training and _is_number(gpus) and gpus > 0:
            return {**raw, "training": {**training, "use_gpu": True}}
        return raw

    @model_validator(mode="after")
    def _gpus_agree(self) -> ExperimentConfig:
        use_gpu, gpus = self.training.use_gpu, self.resources.gpus_per_trial
        if use_gpu and gpus == 0:
            raise ValueError(
                "training.use_gpu: true trains every trial on a GPU, but resources.gpus_per_trial: 0 reserves "
                "none (Ray hides GPUs from such trials); set resources.gpus_per_trial (e.g. 1, or 0.5 to share "
                "a GPU) or leave it out"
            )
        if not use_gpu and gpus > 0:
            raise ValueError(
                f"resources.gpus_per_trial: {gpus:g} reserves GPUs, but training.use_gpu: false trains on CPUs; "
                "set training.use_gpu: true or resources.gpus_per_trial: 0"
            )
        return self

    @property
    def gpus_needed(self) -> float:
        """The most GPUs one trial needs at once (its own, or one per Ray Train worker); 0 on CPUs."""
        if not self.training.use_gpu:
            return 0.0
        return float(max(self.resources.gpus_per_trial, self.training.train_workers if self.training.train_workers > 1 else 0))

    @field_validator("hpo")
    @classmethod
    def _hpo(cls, space: dict[str, Any]) -> dict[str, Any]:
        from search_algos.hpo import hpo_problems

        problems = hpo_problems(space)
        if problems:
            raise ValueError("; ".join(p.removeprefix("hpo.") for p in problems))
        return space

    @model_validator(mode="after")
    def _tuning(self) -> ExperimentConfig:
        asked = [key for key, on in (("scheduler", self.scheduler.name != "none"), ("hpo", bool(self.hpo))) if on]
        if asked and not getattr(type(self.searcher), "tunable", False):
            raise ValueError(
                f"{' and '.join(asked)} {'apply' if len(asked) > 1 else 'applies'} only to searchers whose trials "
                f"train for several epochs and report each (random); searcher {self.searcher.name!r} is not one: "
                f"remove {' and '.join(asked)}"
            )
        return self

    @model_validator(mode="after")
    def _compatible(self) -> ExperimentConfig:
        alignment = isinstance(self.data, AlignmentDataConfig)
        micro = isinstance(self.data, MicroExprDataConfig)
        if isinstance(self.searcher, RnasSearcherConfig) or micro or self.space.name == "rnas":
            if not (isinstance(self.searcher, RnasSearcherConfig) and micro and self.space.name == "rnas"):
                raise ValueError(
                    "searcher 'rnas_mer' (RNAS-MER), space.name: rnas and a micro-expression dataset "
                    f"(microexpr, mer_folder) go together, got searcher {self.searcher.name!r}, "
                    f"space {self.space.name!r}, dataset {self.data.dataset!r}"
                )
            return self
        if isinstance(self.searcher, SamosSearcherConfig):
            if self.space.name != "multipath" or not alignment:
                raise ValueError(
                    "searcher 'samos' (MONAS) needs space.name: multipath and an alignment dataset "
                    f"({', '.join(ALIGNMENT_DATASETS)}), got space {self.space.name!r}, dataset {self.data.dataset!r}"
                )
        elif isinstance(self.searcher, HyperFDSearcherConfig):
            if not isinstance(self.data, DetectionDataConfig):
                raise ValueError(
                    "searcher 'hyperfd' needs a detection dataset (data.dataset: detection, its domain is the "
                    f"offline source), got dataset {self.data.dataset!r}"
                )
            if self.searcher.mode == "protocol" and self.data.domain in self.searcher.domains:
                raise ValueError(
                    f"data.domain {self.data.domain!r} is the offline source; remove it from searcher.domains "
                    "(the online domains)"
                )
        elif isinstance(self.data, DetectionDataConfig):
            raise ValueError(
                f"dataset 'detection' needs a face-detection searcher (HyperFD); searcher {self.searcher.name!r} "
                "trains classifiers: pick another dataset"
            )
        elif self.space.name != "global" or alignment:
            raise ValueError(
                f"searcher {self.searcher.name!r} needs space.name: global and a classification dataset, "
                f"got space {self.space.name!r}, dataset {self.data.dataset!r}"
            )
        return self

    @property
    def is_alignment(self) -> bool:
        return isinstance(self.data, AlignmentDataConfig)

    @property
    def metric(self) -> str:
        if isinstance(self.data, MicroExprDataConfig):
            return "val_uar"
        if isinstance(self.data, DetectionDataConfig):
            return "val_ap50"
        return "val_nme" if self.is_alignment else "val_acc"

    @property
    def mode(self) -> str:
        return "min" if self.is_alignment else "max"


# -- loading -----------------------------------------------------------------------------------


def apply_overrides(raw: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Apply ``key.path=value`` overrides (values parsed as YAML) to a copy of ``raw``."""
    out = copy.deepcopy(raw)
    problems = []
    for item in overrides:
        if "=" not in item or not item.split("=", 1)[0].strip():
            problems.append(f"--set {item!r}: expected key.path=value, e.g. --set searcher.num_samples=20")
            continue
        path, text = item.split("=", 1)
        keys = path.strip().split(".")
        node = out
        for key in keys[:-1]:
            child = node.get(key)
            if child is None:
                child = node[key] = {}
            if not isinstance(child, dict):
                problems.append(f"--set {item!r}: {key!r} is not a section")
                break
            node = child
        else:
            node[keys[-1]] = yaml.safe_load(text) if text.strip() else None
    if problems:
        raise UserError(*problems)
    return out


def _section_model(loc: list[str]) -> type[BaseModel] | None:
    """The model that holds the key at ``loc`` (to list its valid keys)."""
    model: type[BaseModel] = ExperimentConfig
    for part in loc[:-1]:
        if part == "searcher" and model is ExperimentConfig:
            return None  # resolved by the caller from the tag
        field = model.model_fields.get(part)
        annotation = getattr(field, "annotation", None)
        if not (isinstance(annotation, type) and issubclass(annotation, BaseModel)):
            return None
        model = annotation
    return model


def _valid_keys(loc: list[str], raw: dict[str, Any]) -> str:
    model = _section_model(loc)
    section = raw.get(loc[0]) if isinstance(raw.get(loc[0]), dict) else {}
    if loc[0] == "searcher":
        model = _SEARCHER_MODELS.get(section.get("name", "random"))
    elif loc[0] == "data":
        model = _DATA_MODELS[_data_kind(section)]
    elif loc[0] == "space":
        model = {"multipath": MultipathSpaceConfig, "rnas": RnasSpaceConfig}.get(_space_kind(section), GlobalSpaceConfig)
    if model is None:
        return ""
    return "; valid keys: " + ", ".join(model.model_fields)


def _format_error(err: dict[str, Any], raw: dict[str, Any]) -> str:
    loc = [str(p) for p in err["loc"]]
    # Discriminated unions put the tag into the path (searcher.random.epochs): drop it.
    if len(loc) > 1 and err.get("type") != "union_tag_invalid" and loc[1] in _UNION_TAGS.get(loc[0], ()):
        loc.pop(1)
    path = ".".join(loc) or "searcher"  # the only whole-config rule: searcher/space/data compatibility
    kind, msg, value = err["type"], err["msg"], err.get("input")
    if kind == "extra_forbidden":
        return f"{path}: unknown key{_valid_keys(loc, raw)}"
    if kind == "union_tag_invalid":
        tag = (err.get("ctx") or {}).get("tag", value)
        if loc and loc[0] == "space":
            return f"{path}.name: unknown space {tag!r}; valid spaces: global, multipath, rnas"
        return f"{path}.name: unknown searcher {tag!r}; valid searchers: {', '.join(_SEARCHER_TAGS)}"
    if kind == "union_tag_not_found":
        return f"{path}.name: required; valid searchers: {', '.join(_SEARCHER_TAGS)}"
    if kind == "missing":
        return f"{path}: required key is missing"
    if kind == "value_error":
        text = msg.removeprefix("Value error, ")
        if not loc and re.match(r"^(training|resources)\.[a-z_]+", text):
            return text  # a rule across sections names its own keys
        return f"{path}: {text}"
    shown = repr(value) if not isinstance(value, dict) else "a mapping"
    return f"{path}: {msg[0].lower() + msg[1:]}, got {shown}"


_SEARCHER_MODELS: dict[str, type[BaseModel]] = {
    "random": RandomSearcherConfig,
    "macro_micro": MacroMicroSearcherConfig,
    "samos": SamosSearcherConfig,
    "rnas_mer": RnasSearcherConfig,
    "hyperfd": HyperFDSearcherConfig,
}
_SEARCHER_TAGS = tuple(_SEARCHER_MODELS)
_UNION_TAGS = {
    "searcher": _SEARCHER_TAGS,
    "data": tuple(_DATA_MODELS),
    "space": ("global", "multipath", "rnas"),
}


def parse_config(raw: Any, *, source: str = "config") -> ExperimentConfig:
    """Validate a raw mapping; all problems at once as a :class:`UserError`."""
    if not isinstance(raw, dict):
        raise UserError(f"{source}: expected a YAML mapping of sections (seed, data, space, searcher, ...)")
    try:
        return ExperimentConfig.model_validate(raw)
    except ValidationError as exc:
        raise UserError(*[f"{source}: {_format_error(e, raw)}" for e in exc.errors()]) from None


def load_config(path: str | Path, overrides: list[str] | None = None) -> tuple[ExperimentConfig, dict[str, Any]]:
    """Read, override and validate a YAML config. Returns the typed config and the resolved raw dict.

    Raises:
        UserError: the file is missing, not YAML, empty (nothing but comments, or null) or not a mapping at
            the top level; an override is malformed; or the config is invalid (every problem, one line each).
    """
    p = Path(path)
    if not p.is_file():
        raise UserError(f"config file {p} does not exist; pass the path of a YAML file, e.g. configs/quickstart.yaml")
    text = p.read_text()
    try:
        raw = yaml.safe_load(text) if text.strip() else None  # a tab is a YAML error, blank is empty
    except yaml.YAMLError as exc:
        where = getattr(exc, "problem_mark", None)
        line = f" at line {where.line + 1}" if where is not None else ""
        raise UserError(f"config file {p} is not valid YAML{line}; fix the syntax") from None
    # Checked before the overrides (they need a mapping to go into): an empty file would otherwise run
    # the default experiment.
    if raw is None:
        raise UserError(f"config file {p} is empty; start from configs/quickstart.yaml")
    if not isinstance(raw, dict):
        shown = "a list" if isinstance(raw, list) else _shorten(repr(raw))
        raise UserError(
            f"config file {p}: expected a YAML mapping of sections (seed, data, space, searcher, ...) at the top "
            f"level, got {shown}; start from configs/quickstart.yaml"
        )
    raw = apply_overrides(raw, overrides or [])
    config = parse_config(raw, source=p.name)
    return config, config.model_dump(mode="json")


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _shorten(text: str, limit: int = 60) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."


def is_valid_name(name: str) -> bool:
    return re.match(_NAME_RE, name) is not None
