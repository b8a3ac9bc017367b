"""The Tune function that evaluates one candidate: benchmark lookup, training, durable record.

The trainable itself (``trainables.classification.train``) knows nothing of Tune's checkpoints or of the store;
this wrapper connects them through :class:`orchestrator.trial.TrialSequence`: a stored (space, arch_key,
dataset_id, fidelity, seed, protocol) is served from the benchmark store with ``cached=True`` and trains
nothing; otherwise the candidate trains with a checkpoint every epoch (so a retried trial continues where
it stopped) and its result is written to the store before the trial's final report. Also the helpers
the methods' trials share (datasets cached per process, training states, kept weights).
"""

from __future__ import annotations

import copy
import json
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from ray import tune

from orchestrator.paths import RunPaths
from orchestrator.trial import EpochHook, StoreKey, TrialSequence, plain_metrics
from search_algos.durable import write_durable
from search_algos.spaces import decode_arch
from search_algos.spaces.base import stable_key
from trainables.classification.data import load_dataset
from trainables.classification.train import TrainSettings, fit_candidate, fit_candidate_distributed

if TYPE_CHECKING:
    from orchestrator.store import StoreClient

__all__ = [
    "EvalJob",
    "cached_dataset",
    "evaluate_candidate",
    "keep_final_weights",
    "load_state",
    "plain_metrics",
    "prune_weights",
    "save_state",
    "share_dataset",
    "SharedDataset",
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
    store: StoreClient
    run: str
    stage: str
    metric: str
    storage_path: str


# -- shared by every evaluation trainable (candidates here, the methods' own in orchestrator.methods) --


@dataclass(frozen=True)
class SharedDataset:
    """A data set the driver has built, in Ray's object store, for the trials to read instead of building it.

    Generating a data set can take a trial actor a second or more (1.4 s for the largest default
    generated set); reading it back takes milliseconds. A trial deep-copies what it reads, so its arrays
    are its own writable copies (Ray's zero-copy numpy arrays are read-only, and torch warns on those).

    Attributes:
        key: :func:`cached_dataset`'s key of the loader and arguments that built it.
        ref: the ``ray.ObjectRef`` of the data set (the driver's job object keeps it alive).
    """

    key: str
    ref: Any


def _dataset_key(kwargs: dict[str, Any], loader: Callable[..., Any]) -> str:
    return f"{loader.__module__}.{loader.__name__}:{json.dumps(kwargs, sort_keys=True)}"


def share_dataset(kwargs: dict[str, Any], data: Any, loader: Callable[..., Any] = load_dataset) -> SharedDataset:
    """Put ``data`` (built by ``loader(**kwargs)`` on the driver) in the object store. Ray must be up."""
    import ray

    return SharedDataset(_dataset_key(kwargs, loader), ray.put(data))


def cached_dataset(kwargs: dict[str, Any], loader: Callable[..., Any] = load_dataset,
                   shared: SharedDataset | None = None) -> Any:
    """``loader(**kwargs)``, once per process: Tune reuses actors, so later trials skip the loading.

    With ``shared`` (:func:`share_dataset`, built from the same loader and arguments) the first call of a
    process reads the driver's copy from the object store instead of building the data set again.
    """
    key = _dataset_key(kwargs, loader)
    if key not in _DATA_CACHE:
        if shared is not None and shared.key == key:
            import ray

            _DATA_CACHE[key] = copy.deepcopy(ray.get(shared.ref))  # writable arrays of its own
        else:
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
    """Tune function trainable. ``config`` = ``{"arch": <JSON>, "epochs": int, ...}``.

    The sequence of :class:`orchestrator.trial.TrialSequence`; in process the candidate checkpoints and
    reports every epoch, the last one after the store and the kept weights hold the result.
    """
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
    # Hyper-parameters drawn for this trial (config `hpo`, search_algos.hpo) replace the stage's protocol.
    training = {**job.training, **config.get("hpo", {})}
    key = StoreKey.trained(space=job.space, arch_key=arch.key(), dataset_id=data.dataset_id, fidelity=epochs,
                           seed=seed, training=training)
    settings = _settings(job, epochs, training, seed)
    checkpoint = _checkpoint_path(job, key, config.get("hpo"))

    def settle(_metrics: dict[str, Any], cached: bool) -> None:
        if not cached:  # the store holds the result; the checkpoint has served, its weights stay for export
            other_seed = seed if seed != job.seed else None
            keep_final_weights(checkpoint, weights_path(job.storage_path, job.stage, arch.key(), epochs, other_seed))

    def fit(epoch: EpochHook, resume: dict[str, Any] | None) -> dict[str, Any]:
        if settings.num_workers > 1:
            return plain_metrics(fit_candidate_distributed(
                arch, job.data, settings, storage_path=str(RunPaths.of(job.storage_path).train_runs),
                name=f"{job.stage}-{trial_id}",
            ))
        return fit_candidate(arch, data, settings, resume_state=resume,
                             on_epoch=lambda m, state: epoch(m, state, last=m["epoch"] == settings.epochs))

    TrialSequence(
        base=base, metric=job.metric, store=job.store, key=key,
        config={"arch": arch.to_dict(), "epochs": epochs, "training": training}, run_name=job.run,
        checkpoint=checkpoint, settle=settle,
    ).run(fit)


def weights_path(run_dir: str, stage: str, arch_key: str, epochs: int, seed: int | None = None) -> str:
    """Where an evaluation's final weights are kept: ``RUN_DIR/<stage>/weights/<arch_key>-e<epochs>.pt``.

    An evaluation trained with another seed than the run's (a retraining over several seeds) adds
    ``-s<seed>`` to the name, so the run's own seed keeps the plain name that ``facenas export`` reads.

    Read by ``facenas export``; at the end of a stage only its best evaluation's file is kept
    (:func:`prune_weights`).
    """
    return str(RunPaths.of(run_dir).weights(stage, arch_key, epochs, seed))


def keep_final_weights(checkpoint: str, target: str) -> None:
    """Keep the model weights of a finished training (state dict only) and drop its checkpoint."""
    state = load_state(checkpoint)
    if state is not None and "model" in state:
        save_state(state["model"], target)
    if os.path.exists(checkpoint):
        os.remove(checkpoint)


def prune_weights(stage_dir: str, keep: set[str]) -> None:
    """Delete the kept weights of a stage except the files named in ``keep`` (basenames)."""
    stage = Path(stage_dir)
    folder = str(RunPaths.of(stage.parent).weights_dir(stage.name))
    if not os.path.isdir(folder):
        return
    for name in os.listdir(folder):
        if name not in keep:
            os.remove(os.path.join(folder, name))


def _checkpoint_path(job: EvalJob, key: StoreKey, hpo: dict[str, Any] | None = None) -> str:
    # Keyed by the evaluation, not the trial: a trial re-created after a driver crash (new trial id)
    # or retried on another node (shared storage) continues the same evaluation from its last epoch.
    # Tune's own trial checkpoints are not used: after a driver SIGKILL its experiment state can point
    # at a checkpoint that `num_to_keep` already deleted.
    name = f"{key.space}-{key.arch_key}-{key.dataset_id}-e{key.fidelity}-s{key.seed}.pt"
    if hpo:  # the same network trained with other hyper-parameters is another evaluation
        name = name.replace(".pt", f"-h{stable_key(hpo)[:8]}.pt")
    return str(RunPaths.of(job.storage_path).checkpoint(job.stage, name))
