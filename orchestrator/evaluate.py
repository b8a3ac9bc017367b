"""The Tune function that evaluates one candidate: benchmark lookup, training, durable record.

The trainable itself (``trainables.classification.train``) knows nothing of Tune's checkpoints or of the store;
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
from collections.abc import Callable
from typing import Any

import torch
from ray import tune

from search_algos.durable import write_durable
from search_algos.spaces import decode_arch
from search_algos.spaces.base import stable_key
from trainables.classification.data import ImageDataset, load_dataset
from trainables.classification.train import TrainSettings, fit_candidate, fit_candidate_distributed

__all__ = [
    "EvalJob",
    "cached_dataset",
    "evaluate_candidate",
    "keep_final_weights",
    "load_state",
    "lookup_same_protocol",
    "plain_metrics",
    "prune_weights",
    "record",
    "save_state",
    "weights_path",
]

_DATA_CACHE: dict[str, Any] = {}


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


# -- shared by every evaluation trainable (candidates here, the methods' own in orchestrator.methods) --


def cached_dataset(kwargs: dict[str, Any], loader: Callable[..., Any] = load_dataset) -> Any:
    """``loader(**kwargs)``, once per process: Tune reuses actors, so later trials skip the loading."""
    key = f"{loader.__module__}.{loader.__name__}:{json.dumps(kwargs, sort_keys=True)}"
    if key not in _DATA_CACHE:
        _DATA_CACHE[key] = loader(**kwargs)
    return _DATA_CACHE[key]


def save_state(state: dict[str, Any], path: str) -> None:
    """Write a training state durably (a killed process or machine leaves the old file or the new one)."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    write_durable(path, lambda fh: torch.save(state, fh))


def load_state(path: str) -> dict[str, Any] | None:
    """A state saved by :func:`save_state` (tensors only: ``weights_only=True``), or None."""
    if not os.path.isfile(path):
        return None
    try:
        return torch.load(path, weights_only=True)
    except Exception:  # a torn or foreign file: start the evaluation again rather than fail
        return None


def plain_metrics(metrics: dict[str, Any]) -> dict[str, Any]:
    """Numbers (as floats) and dicts of numbers only: what Tune reports and the store keeps."""
    out: dict[str, Any] = {}
    for key, value in metrics.items():
        if isinstance(value, bool):
            continue
        if isinstance(value, (int, float)):
            out[key] = float(value)
        elif isinstance(value, dict) and all(isinstance(v, (int, float)) for v in value.values()):
            out[key] = {k: float(v) for k, v in value.items()}
    return out


def lookup_same_protocol(store: Any, key: tuple, training: dict[str, Any]) -> dict[str, Any] | None:
    """A stored evaluation of ``key`` trained with the same protocol (lr, batch, ...), else None.

    The store's key ends with the protocol (``orchestrator.store.protocol_of`` of ``{"training": ...}``),
    so the lookup asks for this one; the settings are compared again as a guard.
    """
    from orchestrator.store import protocol_of

    hit = store.lookup(*key, protocol_of({"training": training}))
    if hit is None:
        return None
    stored = json.loads(hit["config"]) if isinstance(hit.get("config"), str) else hit.get("config") or {}
    return hit if stored.get("training") == training else None


def record(store: Any, *, key: tuple, config: dict[str, Any], metrics: dict[str, Any], started: float, run: str) -> None:
    """Write one finished evaluation to the benchmark store (durable before this returns)."""
    space, arch_key, dataset_id, fidelity, seed = key
    store.put({
        "space": space, "arch_key": arch_key, "config": json.dumps(config, sort_keys=True),
        "dataset_id": dataset_id, "fidelity": fidelity, "seed": seed, "metrics": json.dumps(metrics),
        "cost_s": time.perf_counter() - started, "run": run, "created_at": time.time(),
    })


# -- candidates of the global space -------------------------------------------------------------------


def _settings(job: EvalJob, epochs: int, training: dict[str, Any], seed: int) -> TrainSettings:
    t = training
    return TrainSettings(
        epochs=epochs,
        batch_size=t["batch_size"],
        lr=t["lr"],
        momentum=t["momentum"],
        weight_decay=t["weight_decay"],
        cutout=t["cutout"],
        seed=seed,
        num_workers=t["train_workers"],
        use_gpu=t["use_gpu"],
        cpus_per_worker=t["cpus_per_worker"],
        # absent from a protocol at their plain values (TrainingConfig.protocol): fp32, off
        precision=t.get("precision", "fp32"),
        channels_last=t.get("channels_last", False),
    )


def evaluate_candidate(config: dict[str, Any], job: EvalJob) -> None:
    """Tune function trainable. ``config`` = ``{"arch": <JSON>, "epochs": int, ...}``."""
    arch = decode_arch(job.space, config["arch"])
    epochs = int(config["epochs"])
    # A retraining over several seeds names each evaluation's own; otherwise the run's seed.
    seed = int(config.get("seed", job.seed))
    data = cached_dataset(job.data)
    trial_id = tune.get_context().get_trial_id()
    base = {
        "arch": arch.to_json(),
        "arch_key": arch.key(),
        "epochs": epochs,
        "dataset_id": data.dataset_id,
        "stage": job.stage,
        "seed": seed,
    }
    key = (job.space, arch.key(), data.dataset_id, epochs, seed)
    # Hyper-parameters drawn for this trial (config `hpo`, search_algos.hpo) replace the stage's protocol.
    training = {**job.training, **config.get("hpo", {})}
    hit = lookup_same_protocol(job.store, key, training)
    if hit is not None:
        tune.report({**hit["metrics"], **base, "cached": True, "status": "ok", "error": ""})
        return

    settings = _settings(job, epochs, training, seed)
    started = time.perf_counter()
    checkpoint = _checkpoint_path(job, key, config.get("hpo"))

    def finish(final: dict[str, Any]) -> None:
        config_row = {"arch": arch.to_dict(), "epochs": epochs, "training": training}
        record(job.store, key=key, config=config_row, metrics=plain_metrics(final), started=started, run=job.run)
        # The store holds the result now; the checkpoint has served. Its weights stay for `facenas export`.
        other_seed = seed if seed != job.seed else None
        keep_final_weights(checkpoint, weights_path(job.storage_path, job.stage, arch.key(), epochs, other_seed))

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
            _fit_in_process(arch, data, settings, base, checkpoint, finish)
            return
    except FloatingPointError as exc:  # divergence: a normal event, reported as a failed evaluation
        tune.report({job.metric: math.nan, **base, "cached": False, "status": "failed", "error": str(exc)})
        return
    finish(final)
    tune.report({**plain_metrics(final), **base, "cached": False, "status": "ok", "error": ""})


def weights_path(run_dir: str, stage: str, arch_key: str, epochs: int, seed: int | None = None) -> str:
    """Where an evaluation's final weights are kept: ``RUN_DIR/<stage>/weights/<arch_key>-e<epochs>.pt``.

    An evaluation trained with another seed than the run's (a retraining over several seeds) adds
    ``-s<seed>`` to the name, so the run's own seed keeps the plain name that ``facenas export`` reads.

    Read by ``facenas export``; at the end of a stage only its best evaluation's file is kept
    (:func:`prune_weights`).
    """
    suffix = "" if seed is None else f"-s{seed}"
    return os.path.join(run_dir, stage, "weights", f"{arch_key}-e{epochs}{suffix}.pt")


def keep_final_weights(checkpoint: str, target: str) -> None:
    """Keep the model weights of a finished training (state dict only) and drop its checkpoint."""
    state = load_state(checkpoint)
    if state is not None and "model" in state:
        save_state(state["model"], target)
    if os.path.exists(checkpoint):
        os.remove(checkpoint)


def prune_weights(stage_dir: str, keep: set[str]) -> None:
    """Delete the kept weights of a stage except the files named in ``keep`` (basenames)."""
    folder = os.path.join(stage_dir, "weights")
    if not os.path.isdir(folder):
        return
    for name in os.listdir(folder):
        if name not in keep:
            os.remove(os.path.join(folder, name))


def _checkpoint_path(job: EvalJob, key: tuple, hpo: dict[str, Any] | None = None) -> str:
    # Keyed by the evaluation, not the trial: a trial re-created after a driver crash (new trial id)
    # or retried on another node (shared storage) continues the same evaluation from its last epoch.
    # Tune's own trial checkpoints are not used: after a driver SIGKILL its experiment state can point
    # at a checkpoint that `num_to_keep` already deleted.
    space, arch_key, dataset_id, fidelity, seed = key
    name = f"{space}-{arch_key}-{dataset_id}-e{fidelity}-s{seed}.pt"
    if hpo:  # the same network trained with other hyper-parameters is another evaluation
        name = name.replace(".pt", f"-h{stable_key(hpo)[:8]}.pt")
    return os.path.join(job.storage_path, job.stage, "_checkpoints", name)


def _fit_in_process(
    arch, data: ImageDataset, settings: TrainSettings, base: dict[str, Any], checkpoint: str,
    finish: Callable[[dict[str, Any]], None],
) -> dict[str, Any]:
    """Train with a checkpoint and a report every epoch; ``finish(final)`` runs before the last report.

    The result is durable (store, kept weights) before the final report because a scheduler may stop
    the trial at that report (ASHA stops every trial that reaches ``max_t``).
    """
    reported = False

    def on_epoch(metrics: dict[str, Any], state: dict[str, Any]) -> None:
        nonlocal reported
        save_state(state, checkpoint)
        if metrics["epoch"] == settings.epochs:
            finish(metrics)
        tune.report({**metrics, **base, "cached": False, "status": "ok", "error": ""})
        reported = True

    final = fit_candidate(arch, data, settings, on_epoch=on_epoch, resume_state=load_state(checkpoint))
    if not reported:  # killed after the last epoch's checkpoint, before the store had the result
        finish(final)
        tune.report({**final, **base, "cached": False, "status": "ok", "error": ""})
    return final
