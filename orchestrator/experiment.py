"""One experiment from config to ``best.json``: which stages a searcher needs, and running them.

Read top to bottom: :func:`prepare` checks everything that can be checked before anything starts
(config, dataset files, run directory); :func:`execute` starts Ray and the benchmark store, runs the
stages in order (continuing interrupted ones), then writes ``results.parquet`` and ``best.json``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import yaml

from orchestrator.config import (
    DetectionDataConfig, ExperimentConfig, HyperFDSearcherConfig, MacroMicroSearcherConfig, MicroExprDataConfig,
    RandomSearcherConfig, RnasSearcherConfig, SamosSearcherConfig,
)
from orchestrator.errors import UserError
from orchestrator.evaluate import EvalJob
from orchestrator.pipeline import Stage, StageOutcome, run_stage
from orchestrator.results import RESULT_COLUMNS, pick_best, write_json_atomic, write_parquet_atomic
from search_algos.durable import write_text_durable
from search_algos.fixed import FixedArchSearcher
from search_algos.macro_micro import MacroMicroSearcher
from search_algos.random_search import RandomArchSearcher
from trainables.checks import DatasetError
from trainables.classification.data import ImageDataset, load_dataset, meta_features

__all__ = ["RunPaths", "execute", "prepare", "run_paths", "STORE_DIR"]

STORE_DIR = "benchmark"  # <storage>/benchmark: the shared store, beside the runs
CONFIG_FILE = "config.yaml"


@dataclass(frozen=True)
class RunPaths:
    root: Path

    @property
    def config(self) -> Path:
        return self.root / CONFIG_FILE

    @property
    def results(self) -> Path:
        return self.root / "results.parquet"

    @property
    def best(self) -> Path:
        return self.root / "best.json"

    @property
    def report(self) -> Path:
        return self.root / "report.html"

    @property
    def storage(self) -> Path:
        return self.root.parent

    @property
    def store(self) -> Path:
        return self.storage / STORE_DIR


def run_paths(storage: str | Path, name: str) -> RunPaths:
    return RunPaths(Path(storage).expanduser().resolve() / name)


def open_run(run_dir: str | Path) -> tuple[RunPaths, ExperimentConfig, dict[str, Any]]:
    """Load an existing run directory (for resume/status/report); bad input -> :class:`UserError`."""
    from orchestrator.config import parse_config

    root = Path(run_dir).expanduser().resolve()
    paths = RunPaths(root)
    if not root.is_dir():
        raise UserError(f"{run_dir} is not a directory; pass a run directory such as runs/quickstart")
    if not paths.config.is_file():
        raise UserError(f"{run_dir} is not a facenas run (no {CONFIG_FILE}); pass a folder made by `facenas run`")
    try:
        raw = yaml.safe_load(paths.config.read_text())
    except yaml.YAMLError:
        raise UserError(f"{paths.config} is corrupt (not YAML); restore it or start a new run") from None
    return paths, parse_config(raw, source=str(paths.config)), raw


def load_data(config: ExperimentConfig) -> Any:
    """The configured dataset (classification or alignment); bad files -> :class:`UserError`."""
    try:
        if config.is_alignment:
            from trainables.alignment.data import load_alignment_dataset

            return load_alignment_dataset(**config.data.loader_kwargs())
        if isinstance(config.data, MicroExprDataConfig):
            from trainables.microexpr.data import load_microexpr

            return load_microexpr(**config.data.loader_kwargs())
        if isinstance(config.data, DetectionDataConfig):
            from trainables.detection.generator import load_detection_domain

            return load_detection_domain(**config.data.loader_kwargs())
        return load_dataset(**config.data.loader_kwargs())
    except DatasetError as exc:
        raise UserError(f"data: {exc}") from None


def _meta_features(config: ExperimentConfig, data: Any) -> dict[str, float]:
    if config.is_alignment:
        from trainables.alignment.data import alignment_meta_features

        return alignment_meta_features(data)
    if isinstance(config.data, DetectionDataConfig):
        from trainables.detection.data import detection_meta_features

        return detection_meta_features(data)
    if isinstance(config.data, MicroExprDataConfig):
        from trainables.microexpr.data import microexpr_meta_features

        return microexpr_meta_features(data)
    return meta_features(data)


def prepare(config: ExperimentConfig, raw: dict[str, Any], *, storage: str | None, name: str | None) -> RunPaths:
    """Checks that need no Ray, then creates RUN_DIR with the resolved config. Nothing on failure."""
    explicit = name is not None
    name = name or config.name
    if name == STORE_DIR:
        raise UserError(f"run name {name!r} is reserved for the benchmark store; pass another --name")
    paths = run_paths(storage or config.storage, name)
    if _in_use(paths.root):
        if explicit:
            raise UserError(
                f"run directory {paths.root} already exists; continue it with `facenas resume {paths.root}` "
                "or pass another --name"
            )
        # Like runs/exp, runs/exp2, ...: a repeated command never touches an earlier run.
        n = 2
        while _in_use(run_paths(storage or config.storage, f"{name}-{n}").root):
            n += 1
        paths = run_paths(storage or config.storage, f"{name}-{n}")
        name = paths.root.name
    load_data(config)  # missing or corrupt dataset files are reported before anything is created
    paths.root.mkdir(parents=True, exist_ok=True)
    resolved = dict(raw, name=name, storage=str(paths.storage))
    write_text_durable(paths.config, yaml.safe_dump(resolved, sort_keys=False))
    return paths


def _in_use(root: Path) -> bool:
    return root.exists() and any(root.iterdir())


@dataclass
class _Pipeline:
    """The stages of a searcher, the stage whose evaluations decide ``best``, and its extra figures."""

    stages: list[Stage]
    deciding: str
    extras: Any = None  # Callable[[dict[str, StageOutcome]], dict] | None
    select: Any = None  # Callable[[dict[str, StageOutcome]], row | None]; default: best of `deciding`


def _random_pipeline(config: ExperimentConfig, data: ImageDataset, job_for: Any) -> _Pipeline:
    s = config.searcher
    space = config.space.build()
    stage = Stage(
        name="search",
        make_searcher=lambda _earlier: RandomArchSearcher(
            space, num_samples=s.num_samples, epochs=s.epochs,
            metric=config.metric, mode=config.mode, seed=config.seed,
        ),
        job=job_for("search"),
        total=lambda _earlier: s.num_samples,
        tunable=True,
    )
    return _Pipeline([stage], "search")


def _macro_micro_pipeline(config: ExperimentConfig, data: ImageDataset, job_for: Any) -> _Pipeline:
    """search (Algorithm 1) -> retrain the result for ``final_epochs`` -> random baseline (§4.1, RI)."""
    s = config.searcher
    settings = s.settings()
    space = config.space.build()

    def searched(earlier: dict[str, StageOutcome]) -> str:
        arch = earlier["search"].summary.get("final_arch")
        if not arch:
            raise UserError("the macro-micro search ended without an architecture; see the search stage's trials")
        return arch

    def baseline_size(earlier: dict[str, StageOutcome]) -> int:
        # Equal evaluation budget by default: as many random networks as the search evaluated.
        return s.baseline_samples or int(earlier["search"].summary["evaluations"]["total"])

    search = Stage(
        name="search",
        make_searcher=lambda _earlier: MacroMicroSearcher(
            settings=settings, in_channels=data.in_channels, num_classes=data.num_classes,
            metric=config.metric, mode=config.mode, seed=config.seed, speculate=s.speculate,
        ),
        job=job_for("search"),
    )
    # Several training seeds (the run's first) when asked: RI then compares their mean accuracy.
    seeds = [config.seed + i for i in range(s.final_seeds)] if s.final_seeds > 1 else None
    retrain = Stage(
        name="retrain",
        make_searcher=lambda earlier: FixedArchSearcher(
            [searched(earlier)], epochs=s.final_epochs, metric=config.metric, mode=config.mode, seeds=seeds,
        ),
        job=job_for("retrain"),
        total=lambda _earlier: s.final_seeds,
    )
    baseline = Stage(
        name="baseline",
        make_searcher=lambda earlier: RandomArchSearcher(
            space, num_samples=baseline_size(earlier), epochs=s.final_epochs,
            metric=config.metric, mode=config.mode, seed=config.seed,
        ),
        job=job_for("baseline"),
        total=baseline_size,
    )

    def extras(outcomes: dict[str, StageOutcome]) -> dict[str, Any]:
        return relative_improvement(outcomes["retrain"].frame, outcomes["baseline"].frame)

    def select(outcomes: dict[str, StageOutcome]) -> Any:
        # best.json describes the retraining with the run's own seed (its weights are the ones kept
        # for export); the other seeds enter through RI's mean. Falls back to the best row.
        frame = outcomes["retrain"].frame
        ok = frame[frame["status"] == "ok"]
        own = ok[[_row_seed(m, config.seed) == config.seed for m in ok["metrics"]]]
        return own.iloc[0].to_dict() if not own.empty else pick_best(frame, mode=config.mode)

    return _Pipeline([search, retrain, baseline], "retrain", extras, select)


def _row_seed(metrics: Any, default: int) -> int:
    payload = json.loads(metrics) if isinstance(metrics, str) and metrics else {}
    return int(payload.get("seed", default))


def relative_improvement(searched: pd.DataFrame, random: pd.DataFrame) -> dict[str, Any]:
    """RI = 100 (Acc_m - mean Acc_r) / mean Acc_r (§4.1, after Yang et al.), on test and on val.

    ``Acc_m`` is the mean over the searched network's retrainings (one per training seed).
    """
    ok_s = searched[searched["status"] == "ok"]
    ok_r = random[random["status"] == "ok"]
    if ok_s.empty or ok_r.empty:
        return {"ri": None, "ri_val": None, "random_evaluations": int(len(ok_r))}
    acc_m, acc_r = float(ok_s["test_acc"].mean()), float(ok_r["test_acc"].mean())
    val_m, val_r = float(ok_s["value"].mean()), float(ok_r["value"].mean())
    return {
        "ri": 100.0 * (acc_m - acc_r) / acc_r,
        "ri_val": 100.0 * (val_m - val_r) / val_r,
        "searched_mean_test_acc": acc_m,
        "searched_test_accs": [float(a) for a in ok_s["test_acc"]],
        "random_mean_test_acc": acc_r,
        "random_mean_val_acc": val_r,
        "random_best_val_acc": float(ok_r["value"].max()),
        "random_evaluations": int(len(ok_r)),
    }


def _monas_pipeline(config: ExperimentConfig, data: Any, job_for: Any) -> _Pipeline:
    from orchestrator.methods.monas import monas_stages

    store = job_for("search").store
    stages, select, extras = monas_stages(config, data, store, job_for("search").storage_path)
    return _Pipeline(stages, "retrain", extras, select)


def _rnas_pipeline(config: ExperimentConfig, data: Any, job_for: Any) -> _Pipeline:
    from orchestrator.methods.rnas_mer import rnas_stages

    stages, select, extras = rnas_stages(config, data, job_for("search").store, job_for("search").storage_path)
    return _Pipeline(stages, "loso", extras, select)


def _hyperfd_pipeline(config: ExperimentConfig, data: Any, job_for: Any) -> _Pipeline:
    from orchestrator.methods.hyperfd.online import hyperfd_stages

    stages, select, extras = hyperfd_stages(config, job_for("search").store, Path(job_for("search").storage_path))
    return _Pipeline(stages, stages[-1].name, extras, select)


_PIPELINES = {
    RandomSearcherConfig: _random_pipeline,
    MacroMicroSearcherConfig: _macro_micro_pipeline,
    SamosSearcherConfig: _monas_pipeline,
    RnasSearcherConfig: _rnas_pipeline,
    HyperFDSearcherConfig: _hyperfd_pipeline,
}


def execute(config: ExperimentConfig, paths: RunPaths) -> dict[str, Any]:
    """Run (or continue) every stage, then write results.parquet and best.json. Ray must be up."""
    from orchestrator.store import StoreClient

    data = load_data(config)
    store = StoreClient.start(str(paths.store))
    store.put_dataset(data.dataset_id, data.name, _meta_features(config, data))

    def job_for(stage: str) -> EvalJob:
        return EvalJob(
            space=config.space.name,
            data=config.data.loader_kwargs(),
            training=config.training.protocol(),
            seed=config.seed,
            store=store,
            run=paths.root.name,
            stage=stage,
            metric=config.metric,
            storage_path=str(paths.root),
        )

    pipeline = _PIPELINES[type(config.searcher)](config, data, job_for)
    outcomes: dict[str, StageOutcome] = {}
    for stage in pipeline.stages:
        outcomes[stage.name] = run_stage(
            stage,
            run_dir=paths.root,
            earlier=outcomes,
            metric=config.metric,
            mode=config.mode,
            resources=config.resources.model_dump(),
            training=config.training.protocol(),
            scheduler=config.scheduler.model_dump(),
            hpo=config.hpo,
        )
    frame = pd.concat([o.frame for o in outcomes.values()], ignore_index=True)[list(RESULT_COLUMNS)]
    write_parquet_atomic(frame, paths.results)
    best = _best_payload(config, data, outcomes, pipeline)
    if pipeline.extras is not None:
        best.update(pipeline.extras(outcomes))
    write_json_atomic(best, paths.best)
    return best


def _test_metrics(row: dict[str, Any]) -> dict[str, Any]:
    """The test figures of an evaluation (``test_*`` and, for alignment, NME by yaw bin)."""
    metrics = json.loads(row["metrics"]) if isinstance(row.get("metrics"), str) and row["metrics"] else {}
    keep = ("nme_by_yaw", "nme_mean", "dense_nme")
    return {k: v for k, v in sorted(metrics.items()) if k.startswith("test_") or k in keep}


def _best_payload(config: ExperimentConfig, data: Any, outcomes: dict[str, StageOutcome], pipeline: _Pipeline) -> dict[str, Any]:
    deciding = pipeline.deciding
    outcome = outcomes[deciding]
    best = pipeline.select(outcomes) if pipeline.select else pick_best(outcome.frame, mode=config.mode)
    if best is None:
        raise UserError(
            f"every evaluation of stage {deciding!r} failed; see {deciding}/ for the errors, "
            "fix the cause and run again"
        )
    search = outcomes.get("search", outcome)
    ok = search.frame[search.frame["status"] == "ok"]
    test = _test_metrics(best)
    figures = {k: test[k] for k in ("nme_by_yaw", "nme_mean") if k in test}  # DESIGN.md: MONAS's own figures
    return {
        **figures,
        "stage": deciding,
        "arch": json.loads(best["arch"]),
        "arch_key": best["arch_key"],
        "metric": config.metric,
        "value": best["value"],
        "params": int(best["params"]),
        "epochs": int(best["epochs"]),
        "test": _test_metrics(best),
        "space": config.space.name,
        "searcher": config.searcher.name,
        "dataset": data.name,
        "dataset_id": data.dataset_id,
        "seed": config.seed,
        "evaluations": int(len(ok)),
        "failed": int(len(search.frame) - len(ok)),
        "search": search.summary,
    }
