"""The Tune function that evaluates one candidate: benchmark lookup, training, durable record.

The trainable itself (``trainables.candidate``) knows nothing of Tune's checkpoints or of the store;
this wrapper connects them: a stored (space, arch_key, dataset_id, fidelity, seed) is served from the
benchmark store with ``cached=True`` and trains nothing; otherwise the candidate trains with a
checkpoint every epoch (so a retried trial continues where it stopped) and its result is written to
the store before the trial ends.
"""

from __future__ import annotations

import json
import math
import os
import time
from dataclasses import dataclass
from typing import Any

import torch
from ray import tune

from search_algos.spaces import decode_arch
from trainables.candidate import TrainSettings, fit_candidate, fit_candidate_distributed
from trainables.datasets import ImageDataset, load_dataset

__all__ = ["EvalJob", "evaluate_candidate"]

_DATA_CACHE: dict[str, ImageDataset] = {}


@dataclass(frozen=True)
class EvalJob:
    """What every trial of a stage shares (narrow: no whole config object)."""

    space: str
    data: dict[str, Any]
    training: dict[str, Any]
    seed: int
    store: Any  # orchestrator.store.StoreClient (kept untyped: imported lazily in the driver)
    run: str
    stage: str
    metric: str
    storage_path: str


def _dataset(kwargs: dict[str, Any]) -> ImageDataset:
    key = json.dumps(kwargs, sort_keys=True)
    if key not in _DATA_CACHE:
        _DATA_CACHE[key] = load_dataset(**kwargs)
    return _DATA_CACHE[key]


def _settings(job: EvalJob, epochs: int) -> TrainSettings:
    t = job.training
    return TrainSettings(
        epochs=epochs,
        batch_size=t["batch_size"],
        lr=t["lr"],
        momentum=t["momentum"],
        weight_decay=t["weight_decay"],
        cutout=t["cutout"],
        seed=job.seed,
        num_workers=t["train_workers"],
        use_gpu=t["use_gpu"],
        cpus_per_worker=t["cpus_per_worker"],
    )


def _clean(metrics: dict[str, Any]) -> dict[str, float]:
    out = {}
    for k, v in metrics.items():
        if isinstance(v, (int, float)) and not isinstance(v, bool):
            out[k] = float(v)
    return out


def evaluate_candidate(config: dict[str, Any], job: EvalJob) -> None:
    """Tune function trainable. ``config`` = ``{"arch": <JSON>, "epochs": int, ...}``."""
    arch = decode_arch(job.space, config["arch"])
    epochs = int(config["epochs"])
    data = _dataset(job.data)
    trial_id = tune.get_context().get_trial_id()
    base = {
        "arch": arch.to_json(),
        "arch_key": arch.key(),
        "epochs": epochs,
        "dataset_id": data.dataset_id,
        "stage": job.stage,
    }
    key = (job.space, arch.key(), data.dataset_id, epochs, job.seed)
    hit = job.store.lookup(*key)
    if hit is not None:
        tune.report({**hit["metrics"], **base, "cached": True, "status": "ok", "error": ""})
        return

    settings = _settings(job, epochs)
    started = time.perf_counter()
    try:
        if settings.num_workers > 1:
            final = fit_candidate_distributed(
                arch,
                job.data,
                settings,
                storage_path=os.path.join(job.storage_path, "_train"),
                name=f"{job.stage}-{trial_id}",
            )
        else:
            final = _fit_in_process(arch, data, settings, base, _checkpoint_path(job, key))
    except FloatingPointError as exc:  # divergence: a normal event, reported as a failed evaluation
        tune.report({job.metric: math.nan, **base, "cached": False, "status": "failed", "error": str(exc)})
        return
    metrics = _clean(final)
    job.store.put(
        {
            "space": job.space,
            "arch_key": arch.key(),
            "config": json.dumps({"arch": arch.to_dict(), "epochs": epochs, "training": job.training}, sort_keys=True),
            "dataset_id": data.dataset_id,
            "fidelity": epochs,
            "seed": job.seed,
            "metrics": json.dumps(metrics),
            "cost_s": time.perf_counter() - started,
            "run": job.run,
            "created_at": time.time(),
        }
    )
    checkpoint = _checkpoint_path(job, key)
    if os.path.exists(checkpoint):  # the store holds the result now; the checkpoint has served
        os.remove(checkpoint)
    if settings.num_workers > 1:  # in-process training already reported every epoch
        tune.report({**metrics, **base, "cached": False, "status": "ok", "error": ""})


def _checkpoint_path(job: EvalJob, key: tuple) -> str:
    # Keyed by the evaluation, not the trial: a trial re-created after a driver crash (new trial id)
    # or retried on another node (shared storage) continues the same evaluation from its last epoch.
    # Tune's own trial checkpoints are not used: after a driver SIGKILL its experiment state can point
    # at a checkpoint that `num_to_keep` already deleted.
    space, arch_key, dataset_id, fidelity, seed = key
    name = f"{space}-{arch_key}-{dataset_id}-e{fidelity}-s{seed}.pt"
    return os.path.join(job.storage_path, job.stage, "_checkpoints", name)


def _fit_in_process(
    arch, data: ImageDataset, settings: TrainSettings, base: dict[str, Any], checkpoint: str
) -> dict[str, Any]:
    resume = None
    if os.path.isfile(checkpoint):
        try:
            resume = torch.load(checkpoint, weights_only=True)
        except Exception:  # a torn or foreign file: start the evaluation again rather than fail
            resume = None

    def on_epoch(metrics: dict[str, Any], state: dict[str, Any]) -> None:
        os.makedirs(os.path.dirname(checkpoint), exist_ok=True)
        tmp = f"{checkpoint}.{os.getpid()}.tmp"
        torch.save(state, tmp)
        os.replace(tmp, checkpoint)
        tune.report({**metrics, **base, "cached": False, "status": "ok", "error": ""})

    return fit_candidate(arch, data, settings, on_epoch=on_epoch, resume_state=resume)
