"""One experiment from config to ``best.json``: which stages a searcher needs, and running them.

Read top to bottom: :func:`prepare` checks everything that can be checked before anything starts
(config, dataset files, run directory); :func:`execute` starts Ray and the benchmark store, runs the
stages in order (continuing interrupted ones), then writes ``results.parquet`` and ``best.json``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd
import yaml

from orchestrator.config import DetectionDataConfig, ExperimentConfig, MicroExprDataConfig
from orchestrator.errors import UserError
from orchestrator.methods import METHODS
from orchestrator.paths import CONFIG_FILE, STORE_DIR, RunPaths
from orchestrator.pipeline import Stage, StageOutcome, run_stage
from orchestrator.results import RESULT_COLUMNS, pick_best, write_json_atomic, write_parquet_atomic
from search_algos.durable import write_text_durable
from trainables.checks import DatasetError
from trainables.classification.data import load_dataset, meta_features

if TYPE_CHECKING:
    from orchestrator.methods.base import Extras, Select
    from orchestrator.store import StoreClient

__all__ = ["RunPaths", "execute", "prepare", "run_paths", "STORE_DIR"]  # RunPaths: orchestrator.paths


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
    run_check = METHODS.get(config.searcher.name).run_check
    if run_check is not None:
        try:
            run_check(config)
        except ValueError as exc:
            raise UserError(f"config: {exc}") from None
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
    """The stages of a method, the stage whose evaluations decide ``best``, and its extra figures
    (``orchestrator.methods.base.Method``: ``stages``, ``deciding``)."""

    stages: list[Stage]
    deciding: str
    extras: Extras | None = None  # the method's own best.json figures
    select: Select | None = None  # best.json's row; default: the best evaluation of `deciding`


def _pipeline(config: ExperimentConfig, data: Any, store: StoreClient, run_dir: Path) -> _Pipeline:
    """The stages of the config's method (``orchestrator.methods.METHODS``, by ``searcher.name``)."""
    method = METHODS.get(config.searcher.name)
    stages, select, extras = method.stages(config, data, store, str(run_dir))
    return _Pipeline(stages, method.deciding or stages[-1].name, extras, select)


def execute(config: ExperimentConfig, paths: RunPaths) -> dict[str, Any]:
    """Run (or continue) every stage, then write results.parquet and best.json. Ray must be up."""
    from orchestrator.store import StoreClient

    data = load_data(config)
    store = StoreClient.start(str(paths.store))
    store.put_dataset(data.dataset_id, data.name, _meta_features(config, data))

    pipeline = _pipeline(config, data, store, paths.root)
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
    figures = {k: test[k] for k in ("nme_by_yaw", "nme_mean") if k in test}  # DESIGN.md: alignment's own figures
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
