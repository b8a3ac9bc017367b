"""HyperFD's cross-dataset benchmark: one detector evaluation per (config, dataset) row of the plan.

Paper: ``papers/hyperfd-online-automl-face-detection-supplement.txt`` (§B.4-B.5).

The benchmark (:func:`benchmark_stage`, also ``facenas benchmark build CONFIG``: :func:`build_benchmark`):
every pool config on the source and online datasets, ``offline_configs`` pool configs on each offline
dataset; one Tune trial per missing row (:func:`evaluate_detector`: a lookup in the store, else
:func:`trainables.detection.train.fit_detector`, then a durable store write). Rows already stored are
skipped, so a build resumes where it stopped. The online and search stages evaluate their picks with the
same trial.
"""

from __future__ import annotations

import functools
import json
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from orchestrator.trial import EpochHook, StoreKey, TrialSequence, require_finite
from orchestrator.methods.hyperfd.plan import METRIC, Plan, load_recipe, register_datasets, same_protocol
from orchestrator.pipeline import Stage
from search_algos.fixed import FixedArchSearcher
from search_algos.spaces import decode_arch
from search_algos.spaces.detector import DetectorArch, HpoConfig

if TYPE_CHECKING:
    from orchestrator.config import ExperimentConfig
    from orchestrator.trial import Store

__all__ = ["DetectorJob", "benchmark_stage", "build_benchmark", "evaluate_detector", "job_searcher", "missing_jobs"]


# ----------------------------------------------------------------------------------------------------------
# The trial: one detector evaluation


@dataclass(frozen=True)
class DetectorJob:
    """What every detector trial of a stage shares (narrow)."""

    space: str
    recipes: dict[str, dict[str, Any]]
    training: dict[str, Any]
    seed: int
    store: Store
    run: str
    stage: str
    device: dict[str, Any] = field(default_factory=dict)  # device_settings: use_gpu, channels_last


def evaluate_detector(config: dict[str, Any], job: DetectorJob) -> None:
    """Tune function trainable. ``config`` = ``{"arch": <JSON>, "epochs": int, "dataset_id": str, ...}``.

    A stored evaluation with the same protocol is served from the store (``cached=True``); otherwise the
    detector trains (:func:`trainables.detection.train.fit_detector`) and the result is stored before the
    trial reports. A diverging run (NaN loss) is a failed evaluation, reported and not stored. Every
    validated epoch before the last is reported too (``epoch``, ``val_ap50`` of that epoch): a trial
    scheduler may stop the trial there, and a stopped trial never reaches the store (only whole trainings
    are benchmark rows).
    """
    import torch

    from trainables.detection.train import fit_detector

    torch.set_num_threads(1)
    arch = decode_arch(job.space, config["arch"])
    epochs, dataset_id = int(config["epochs"]), str(config["dataset_id"])
    key = StoreKey.trained(space=job.space, arch_key=arch.key(), dataset_id=dataset_id, fidelity=epochs,
                           seed=job.seed, training=job.training)
    base = {"arch": arch.to_json(), "arch_key": arch.key(), "epochs": epochs, "dataset_id": dataset_id,
            "stage": job.stage}  # fmt: skip

    def fit(epoch: EpochHook, _resume: Any) -> dict[str, Any]:
        def validated(metrics: dict[str, float]) -> None:
            # every validated epoch but the last is reported as it is (a trial scheduler ranks it; the
            # result, with the best epoch's test AP, is the final report); no state: a retry starts afresh
            if math.isfinite(metrics["val_ap50"]) and metrics["epoch"] < epochs:
                epoch({"epoch": float(metrics["epoch"]), "train_loss": metrics["train_loss"], METRIC: metrics["val_ap50"]})

        data = load_recipe(job.recipes[dataset_id])
        if job.space == "detector_hpo":
            hpo, backbone = arch, DetectorArch.from_dict(job.training["partner"])
        else:
            hpo, backbone = HpoConfig.from_dict(job.training["partner"]), arch
        t = job.training
        done = fit_detector(data, hpo, backbone, epochs=epochs, seed=job.seed, batch_size=t["batch_size"],
                           width_mult=t["width_mult"], eval_every=t["eval_every"], threads=1,
                           use_gpu=job.device.get("use_gpu", False), precision=t.get("precision", "fp32"),
                           channels_last=job.device.get("channels_last", False), on_epoch=validated)  # fmt: skip
        return {"val_ap50": done.val_ap50, "test_ap50": done.test_ap50, "params": float(done.params),
                "best_epoch": float(done.best_epoch), "train_loss": done.train_loss}  # fmt: skip

    TrialSequence(
        base=base, metric=METRIC, store=job.store, key=key,
        config={"arch": arch.to_dict(), "epochs": epochs, "training": job.training}, run_name=job.run,
        stored=dict, check=require_finite(error="non-finite detector metrics"),
    ).run(fit)


# ----------------------------------------------------------------------------------------------------------
# The benchmark build


def job_searcher(jobs: Sequence[dict[str, Any]], *, epochs: int) -> FixedArchSearcher:
    """Hands out ``jobs`` (``{"arch", "dataset_id", ...}``: the benchmark's missing rows, a search's picks)
    in order, each trained for ``epochs``; their list is in the searcher's state."""
    return FixedArchSearcher([j["arch"] for j in jobs], epochs=epochs, metric=METRIC, mode="max",
                             extras=[{"dataset_id": j["dataset_id"]} for j in jobs])  # fmt: skip


def missing_jobs(plan: Plan, space: str, store: Store) -> list[dict[str, Any]]:
    """The benchmark rows of ``space`` not yet stored with this plan's protocol."""
    have = {(row["arch_key"], row["dataset_id"]) for row in store.rows(space=space) if same_protocol(row, plan, space)}
    out = []
    for job in plan.jobs(space):
        arch = decode_arch(space, job["arch"])
        if (arch.key(), job["dataset_id"]) not in have:
            out.append(job)
    return out


def benchmark_stage(plan: Plan, space: str, store: Store, *, run: str, name: str, stoppable: bool = False) -> Stage:
    """A stage evaluating the benchmark rows of ``space`` still missing when it starts.

    ``stoppable``: a trial scheduler applies (``facenas benchmark build`` with a ``scheduler``); a row it
    stops is not stored and stays missing, so a later build without a scheduler completes it. Table 7's
    own benchmark stages (``mode: protocol``) are not: its ranks need every pool config's whole training.
    """
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
        stoppable=stoppable,
        max_epochs=plan.epochs,
    )


def build_benchmark(config: ExperimentConfig, storage: Path) -> dict[str, int]:
    """``facenas benchmark build CONFIG``: fill the store with the plan's missing rows (Ray must be up).

    Returns:
        space -> rows this call stored (0 when the table was complete). With a ``scheduler``, rows it
        stopped early are not stored (see :func:`benchmark_stage`); its rungs rank the build's trials
        together, whichever dataset each row is on.
    """
    from orchestrator.pipeline import run_stage
    from orchestrator.results import completed_rows
    from orchestrator.store import StoreClient

    store = StoreClient.start(str(storage / "benchmark"))
    plan = Plan.from_config(config)
    register_datasets(plan, store)
    build_dir = storage / "benchmark" / "builds" / f"{config.name}-{time.strftime('%Y%m%d-%H%M%S')}"
    done = {}
    for space in config.searcher.spaces:
        stage = benchmark_stage(plan, space, store, run=f"benchmark:{config.name}", name=f"build-{space}",
                                stoppable=True)
        n = stage.total({})
        print(f"[build-{space}] {n} of {len(plan.jobs(space))} rows missing", flush=True)
        if n:
            outcome = run_stage(stage, run_dir=build_dir, earlier={}, metric=METRIC, mode="max",
                                resources=config.resources.model_dump(), training={"train_workers": 1},
                                scheduler=config.scheduler.model_dump())  # fmt: skip
            stopped = len(outcome.frame) - len(completed_rows(outcome.frame))
            if stopped:
                print(f"[build-{space}] {stopped} rows stopped early by {config.scheduler.name}: not stored; a "
                      "build without a scheduler completes them", flush=True)
            n -= stopped
        done[space] = n
    return done
