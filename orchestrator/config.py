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
from typing import Annotated, Any, Literal, Union

import yaml
from pydantic import (
    BaseModel,
    Discriminator,
    Field,
    Tag,
    ValidationError,
    create_model,
    field_validator,
    model_validator,
)

from orchestrator.errors import UserError
from orchestrator.methods import DEFAULT, METHODS
from orchestrator.sections import Section as _Section

__all__ = [
    "DataConfig",
    "DetectionDataConfig",
    "ExperimentConfig",
    "ResourcesConfig",
    "TrainingConfig",
    "apply_overrides",
    "load_config",
    "parse_config",
]

_NAME_RE = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$"


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
    """A 3D face-alignment set: generated ``faces3d``, or ``aflw2000`` files for the test split."""

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
    """A face-detection domain: LFW faces on photographs with one domain's shift, split 6:1:3."""

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
    """Micro-expression clips: generated from LFW faces, or CASME-II/SAMM-style folders."""

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


# -- the sections the methods bring (orchestrator.methods.METHODS) ------------------------------------------


def _searcher_sections() -> dict[str, type[BaseModel]]:
    """``searcher.name`` -> its section, in registration order (the order errors list them)."""
    return {method.name: method.section for method in METHODS.in_order()}


def _space_sections() -> dict[str, type[BaseModel]]:
    """``space.name`` -> its section, in the order the methods that search it were registered."""
    return METHODS.by_space("space")


def _default_searcher() -> BaseModel:
    return METHODS.get(DEFAULT).section()


def _default_space() -> BaseModel:
    return METHODS.get(DEFAULT).space()


def _space_kind(value: Any) -> str:
    default = METHODS.get(DEFAULT).space_name
    name = value.get("name", default) if isinstance(value, dict) else getattr(value, "name", default)
    return str(name)


def _searcher_union() -> Any:
    return Annotated[Union[tuple(_searcher_sections().values())], Field(discriminator="name")]


def _space_union() -> Any:
    tagged = tuple(Annotated[section, Tag(name)] for name, section in _space_sections().items())
    return Annotated[Union[tagged], Discriminator(_space_kind)]


SearcherSection = _searcher_union()
SpaceSection = _space_union()


class TrainingConfig(_Section):
    """How each candidate is trained (the paper's protocol by default), and on what device.

    ``use_gpu``, ``precision`` and ``channels_last`` apply to every trainable (candidates, supernets, one-shot
    evaluation and stand-alone retraining, detectors): :mod:`trainables.device`.
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

    name: Literal["none", "asha", "hyperband", "median", "pbt"] = "none"
    grace_period: int = Field(1, ge=1)  # epochs a trial trains before ASHA or the median rule may stop it
    reduction_factor: float = Field(3.0, ge=2)
    brackets: int = Field(1, ge=1)
    max_t: int | None = Field(None, ge=1)  # default: the stage's epochs (or the searcher's max_epochs)
    min_samples: int = Field(3, ge=1)  # median: other trials' running means needed before it stops one

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
    space: SpaceSection = _default_space()
    searcher: SearcherSection = _default_searcher()
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
        """``hpo`` needs a ``tunable`` searcher; ``scheduler`` a tunable or ``stoppable`` one (its trials
        train for several epochs, report each, and it knows what a stopped trial means)."""
        section = type(self.searcher)
        tunable = getattr(section, "tunable", False)
        stoppable = tunable or getattr(section, "stoppable", False)
        asked = [key for key, on, allowed in (("scheduler", self.scheduler.name != "none", stoppable),
                                              ("hpo", bool(self.hpo), tunable)) if on and not allowed]
        if asked:
            kind = "stoppable" if asked == ["scheduler"] else "tunable"
            names = ", ".join(m.name for m in METHODS.in_order()
                              if getattr(m.section, "tunable", False) or (kind == "stoppable" and getattr(m.section, "stoppable", False)))
            raise ValueError(
                f"{' and '.join(asked)} {'apply' if len(asked) > 1 else 'applies'} only to searchers whose trials "
                f"train for several epochs and report each ({names}); searcher {self.searcher.name!r} is not one: "
                f"remove {' and '.join(asked)}"
            )
        if self.scheduler.name == "hyperband" and not tunable:
            raise ValueError(
                f"hyperband does not apply to searcher {self.searcher.name!r}: its synchronous brackets pause and "
                "stop trials bracket by bracket, and this searcher's stages hold trials that must train in full (the "
                "references a verdict is measured against) or wait for a verdict before the next; use asha or median"
            )
        return self

    @model_validator(mode="after")
    def _compatible(self) -> ExperimentConfig:
        """Searcher, space and data go together: the rule of a method that claims the config's data kind or
        space for itself (``Method.exclusive``) comes first, else the searcher's own (``Method.check``)."""
        method = METHODS.get(self.searcher.name)
        for other in METHODS.in_order():
            claimed = other is method or other.data == self.data_kind or other.space_name == self.space.name
            if other.exclusive and other.check is not None and claimed:
                other.check(self)
                return self
        if method.check is not None:
            method.check(self)
        return self

    @property
    def data_kind(self) -> str:
        """``classification``, ``alignment``, ``detection`` or ``microexpr``: which data section this is."""
        return _data_kind(self.data)

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
        model = _searcher_sections().get(section.get("name", DEFAULT))
    elif loc[0] == "data":
        model = _DATA_MODELS[_data_kind(section)]
    elif loc[0] == "space":
        model = _space_sections().get(_space_kind(section), METHODS.get(DEFAULT).space)
    if model is None:
        return ""
    return "; valid keys: " + ", ".join(model.model_fields)


def _format_error(err: dict[str, Any], raw: dict[str, Any]) -> str:
    loc = [str(p) for p in err["loc"]]
    # Discriminated unions put the tag into the path (searcher.random.epochs): drop it.
    if len(loc) > 1 and err.get("type") != "union_tag_invalid" and loc[1] in _union_tags().get(loc[0], ()):
        loc.pop(1)
    path = ".".join(loc) or "searcher"  # the only whole-config rule: searcher/space/data compatibility
    kind, msg, value = err["type"], err["msg"], err.get("input")
    if kind == "extra_forbidden":
        return f"{path}: unknown key{_valid_keys(loc, raw)}"
    if kind == "union_tag_invalid":
        tag = (err.get("ctx") or {}).get("tag", value)
        if loc and loc[0] == "space":
            return f"{path}.name: unknown space {tag!r}; valid spaces: {', '.join(_space_sections())}"
        return f"{path}.name: unknown searcher {tag!r}; valid searchers: {', '.join(_searcher_sections())}"
    if kind == "union_tag_not_found":
        return f"{path}.name: required; valid searchers: {', '.join(_searcher_sections())}"
    if kind == "missing":
        return f"{path}: required key is missing"
    if kind == "value_error":
        text = msg.removeprefix("Value error, ")
        if not loc and re.match(r"^(training|resources)\.[a-z_]+", text):
            return text  # a rule across sections names its own keys
        return f"{path}: {text}"
    shown = repr(value) if not isinstance(value, dict) else "a mapping"
    return f"{path}: {msg[0].lower() + msg[1:]}, got {shown}"


def _union_tags() -> dict[str, tuple[str, ...]]:
    """The tags of each discriminated section (pydantic puts them into error paths: searcher.random.epochs)."""
    return {"searcher": tuple(_searcher_sections()), "data": tuple(_DATA_MODELS), "space": tuple(_space_sections())}


_BUILT_FOR = tuple(METHODS.names())  # the methods ExperimentConfig's searcher and space sections know
_LATER_MODELS: dict[tuple[str, ...], type[ExperimentConfig]] = {}


def _experiment_model() -> type[ExperimentConfig]:
    """:class:`ExperimentConfig`, or, when methods were registered (or removed) after this module was
    imported, a subclass whose searcher and space sections are the registry's now (one per set of methods)."""
    names = tuple(METHODS.names())
    if names == _BUILT_FOR:
        return ExperimentConfig
    if names not in _LATER_MODELS:
        _LATER_MODELS[names] = create_model(
            "ExperimentConfig", __base__=ExperimentConfig, __module__=__name__,
            space=(_space_union(), _default_space()), searcher=(_searcher_union(), _default_searcher()),
        )  # fmt: skip
    return _LATER_MODELS[names]


def parse_config(raw: Any, *, source: str = "config") -> ExperimentConfig:
    """Validate a raw mapping; all problems at once as a :class:`UserError`."""
    if not isinstance(raw, dict):
        raise UserError(f"{source}: expected a YAML mapping of sections (seed, data, space, searcher, ...)")
    try:
        return _experiment_model().model_validate(raw)
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
