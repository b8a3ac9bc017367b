"""What the trainables' epoch loops share: collectives, determinism, checkpoints and the Ray Train plumbing.

Both :mod:`trainables.classification.train` (global-space CNNs) and :mod:`trainables.alignment.train` (the MONAS supernet
and its stand-alone children) train with one epoch loop that runs either in this process or on every
worker of a Ray Train ``TorchTrainer`` (DESIGN.md §6). The loop itself is each module's own; this module
holds what is the same in both:

- the settings check both settings dataclasses make (:func:`batch_split_problems`; the predicates are
  :mod:`trainables.checks`');
- the collectives the loop calls (:class:`LocalComm` in process, :class:`TorchDistComm` over Ray Train's
  process group), :func:`deterministic` (threads, cuDNN) and :func:`batch_bounds`;
- the epoch's end (:func:`stop_if_diverged`, :func:`report_epoch`) and resuming (:func:`check_resume_state`,
  :func:`load_resume_state`);
- the worker's frame (:func:`run_worker`: resume from the run's latest checkpoint via
  :func:`resume_state_from_checkpoint`, stop quietly on divergence) and its rank-0 checkpoints
  (:func:`make_publisher`);
- the driver's side (:func:`run_torch_trainer`: launch the workers, forward their reports to the Tune trial
  we run in through :func:`tune_callbacks`, read the result).

A checkpoint is a folder holding ``state.pt`` (the epoch's state: ``{"epoch", <state dicts>, "metrics"}``,
loadable with ``torch.load(weights_only=True)``), or, for a diverged epoch, ``diverged.txt`` holding the
message: a terminal checkpoint, so that a resumed or retried run stops at once instead of diverging again.
"""

from __future__ import annotations

import contextlib
import copy
import math
import os
import tempfile
from collections.abc import Callable, Iterator, Sequence
from typing import Any, Protocol

import torch
import torch.distributed
from torch import nn

from trainables.checks import is_int

__all__ = [
    "DIVERGED_FILE",
    "STATE_FILE",
    "LocalComm",
    "OnEpoch",
    "Publish",
    "Scaling",
    "TorchDistComm",
    "batch_bounds",
    "batch_split_problems",
    "check_resume_state",
    "deterministic",
    "load_resume_state",
    "make_publisher",
    "report_epoch",
    "resume_state_from_checkpoint",
    "run_torch_trainer",
    "run_worker",
    "stop_if_diverged",
    "tune_callbacks",
]

STATE_FILE = "state.pt"  # the state dict inside a Ray Train checkpoint
DIVERGED_FILE = "diverged.txt"  # marks a Ray Train checkpoint of a diverged run (terminal)

OnEpoch = Callable[[dict[str, Any], dict[str, Any]], None]
"""``on_epoch(metrics, state)``, called on rank 0 after every epoch (see :func:`report_epoch`)."""

Publish = Callable[[dict[str, Any], dict[str, Any] | None], None]
"""``publish(metrics, state)``, called on every rank after every epoch (``state`` only on rank 0, and None
for a diverged epoch); :func:`make_publisher` gives the Ray Train one."""


class Scaling(Protocol):
    """The slice of a settings dataclass that sizes a Ray Train run."""

    @property
    def num_workers(self) -> int: ...

    @property
    def use_gpu(self) -> bool: ...

    @property
    def cpus_per_worker(self) -> float: ...


# --------------------------------------------------------------------------------------------------
# Settings checks
# --------------------------------------------------------------------------------------------------


def batch_split_problems(batch_size: int, num_workers: int) -> list[str]:
    """The rule that the workers split the global batch evenly, as a settings problem (none when it holds)."""
    if batch_size % num_workers == 0:
        return []
    return [
        "batch_size must be a multiple of num_workers (each worker takes batch_size // num_workers), "
        f"but got batch_size={batch_size}, num_workers={num_workers}; "
        f"use e.g. batch_size={batch_size - batch_size % num_workers}"
    ]


# --------------------------------------------------------------------------------------------------
# Collectives and determinism
# --------------------------------------------------------------------------------------------------


class LocalComm:
    """Collectives of a world of one: the in-process run."""

    rank = 0
    world = 1

    def sum_all(self, *values: float) -> tuple[float, ...]:
        """Each value summed over the ranks."""
        return values

    def broadcast_buffers(self, module: nn.Module) -> None:
        pass


class TorchDistComm(LocalComm):
    """Collectives over the ``torch.distributed`` group Ray Train set up (gloo on CPU, nccl on GPU)."""

    def __init__(self, device: torch.device) -> None:
        self._device = device
        self.rank = torch.distributed.get_rank()
        self.world = torch.distributed.get_world_size()

    def sum_all(self, *values: float) -> tuple[float, ...]:
        summed = torch.tensor(values, dtype=torch.float64, device=self._device)
        torch.distributed.all_reduce(summed)  # sum; counts stay exact in float64
        return tuple(summed.tolist())

    def broadcast_buffers(self, module: nn.Module) -> None:
        for buffer in module.buffers():
            torch.distributed.broadcast(buffer, src=0)


@contextlib.contextmanager
def deterministic(threads: int) -> Iterator[None]:
    """Fix the thread count and deterministic cuDNN kernels for the run; restore the caller's values."""
    saved = (torch.get_num_threads(), torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark)
    torch.set_num_threads(threads)
    torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = True, False
    try:
        yield
    finally:
        torch.set_num_threads(saved[0])
        torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = saved[1], saved[2]


def batch_bounds(size: int, batch: int) -> list[tuple[int, int]]:
    """``[start, end)`` of each batch; a trailing batch of one sample is dropped (BatchNorm needs 2)."""
    bounds = [(start, min(start + batch, size)) for start in range(0, size, batch)]
    if bounds and bounds[-1][1] - bounds[-1][0] < 2:
        bounds.pop()
    return bounds


# --------------------------------------------------------------------------------------------------
# The epoch's end and resuming
# --------------------------------------------------------------------------------------------------


def stop_if_diverged(train_loss: float, epoch: int, epochs: int, publish: Publish | None) -> None:
    """Raise when the epoch's training loss is NaN or infinite, after publishing the diverged epoch.

    The diverged epoch is published as ``{"epoch", "epochs", "diverged": message}`` without a state, so that
    :func:`make_publisher` leaves a terminal checkpoint.

    Raises:
        FloatingPointError: ``train_loss`` is not finite (the trial counts as failed).
    """
    if math.isfinite(train_loss):
        return
    message = f"training diverged: train_loss={train_loss} at epoch {epoch}"
    if publish is not None:
        publish({"epoch": epoch, "epochs": epochs, "diverged": message}, None)
    raise FloatingPointError(message)


def report_epoch(
    metrics: dict[str, Any],
    comm: LocalComm,
    *,
    on_epoch: OnEpoch | None,
    publish: Publish | None,
    **parts: nn.Module | torch.optim.Optimizer | torch.optim.lr_scheduler.LRScheduler,
) -> None:
    """End an epoch: rank 0 snapshots the state and calls ``on_epoch``; every rank then calls ``publish``.

    The state is ``{"epoch", <name>: <part's state dict> for each of parts, in order, "metrics"}``, all
    copies (it may be kept while training goes on); ``on_epoch`` gets a copy of the metrics too.
    """
    state = None
    if comm.rank == 0:
        state = {
            "epoch": metrics["epoch"],
            **{name: copy.deepcopy(part.state_dict()) for name, part in parts.items()},
            "metrics": copy.deepcopy(metrics),
        }
        if on_epoch is not None:
            on_epoch(copy.deepcopy(metrics), state)
    if publish is not None:
        publish(metrics, state)


def check_resume_state(state: dict[str, Any], *, keys: Sequence[str], epochs: int) -> None:
    """Refuse a ``resume_state`` that lacks one of ``keys`` or was saved after an epoch outside ``[1, epochs]``.

    Raises:
        ValueError: naming the missing keys or showing the epoch.
    """
    missing = [key for key in keys if key not in state]
    if missing:
        raise ValueError(f"resume_state lacks {missing}; pass a state given to on_epoch (keys {list(keys)})")
    epoch = state["epoch"]
    if not is_int(epoch) or not 1 <= epoch <= epochs:
        raise ValueError(f"resume_state['epoch'] must be in [1, epochs={epochs}], but got {epoch!r}")


def load_resume_state(
    resume_state: dict[str, Any] | None,
    **parts: torch.optim.Optimizer | torch.optim.lr_scheduler.LRScheduler,
) -> int:
    """Load each of ``parts`` from its state dict in ``resume_state``; the first epoch left to train.

    Returns:
        1 without a ``resume_state``, else the epoch after the one it was saved after.
    """
    if resume_state is None:
        return 1
    for name, part in parts.items():
        part.load_state_dict(resume_state[name])
    return int(resume_state["epoch"]) + 1


# --------------------------------------------------------------------------------------------------
# Ray Train workers
# --------------------------------------------------------------------------------------------------


def run_worker(train: Callable[[dict[str, Any] | None, LocalComm, torch.device], object]) -> None:
    """The frame of a Ray Train worker around its epoch loop, ``train(resume_state, comm, device)``.

    ``resume_state`` comes from the run's latest checkpoint (None on a fresh run), ``comm`` spans the
    workers, ``device`` is the one Ray Train gave this worker (its own GPU with ``use_gpu``, made the
    current CUDA device so NCCL and new tensors use it; the CPU otherwise). A diverged run ends quietly, at once when its
    latest checkpoint is the terminal one and when ``train`` raises FloatingPointError (its publisher has just
    left that checkpoint): raising would only make Ray Train retry in vain, and the driver reads the
    divergence from the checkpoint's metrics.
    """
    import ray.train.torch

    with contextlib.suppress(FloatingPointError):  # diverged, in this attempt or an earlier one
        resume_state = resume_state_from_checkpoint()
        device = ray.train.torch.get_device()
        if device.type == "cuda":
            torch.cuda.set_device(device)
        comm = TorchDistComm(device) if torch.distributed.is_initialized() else LocalComm()
        train(resume_state, comm, device)


def resume_state_from_checkpoint() -> dict[str, Any] | None:
    """The state in this Ray Train run's latest checkpoint (``state.pt``, on the CPU); None on a fresh run.

    Raises:
        FloatingPointError: the latest checkpoint is a diverged run's terminal one (with its message).
    """
    import ray.train

    checkpoint = ray.train.get_checkpoint()
    if checkpoint is None:
        return None
    with checkpoint.as_directory() as folder:
        diverged = os.path.join(folder, DIVERGED_FILE)
        if os.path.exists(diverged):
            with open(diverged) as handle:
                raise FloatingPointError(handle.read())
        return torch.load(os.path.join(folder, STATE_FILE), map_location="cpu", weights_only=True)


def make_publisher(comm: LocalComm, *, before_save: Publish | None = None) -> Publish:
    """The ``publish(metrics, state)`` of a Ray Train worker: report the epoch, on rank 0 with a checkpoint.

    Every rank reports the epoch's metrics (Ray Train waits for all); rank 0 attaches a checkpoint holding
    ``state.pt``, or for a diverged epoch (``"diverged"`` in the metrics) the terminal ``diverged.txt``.

    Args:
        comm: the workers' collectives (only ``rank`` is read).
        before_save: called with ``(metrics, state)`` on rank 0 before a state is saved (e.g. TensorBoard
            scalars); not for a diverged epoch.
    """
    import ray.train

    def publish(metrics: dict[str, Any], state: dict[str, Any] | None) -> None:
        if comm.rank != 0:
            ray.train.report(metrics)
            return
        with tempfile.TemporaryDirectory() as folder:
            if "diverged" in metrics:  # a terminal checkpoint: a resumed run stops at once
                with open(os.path.join(folder, DIVERGED_FILE), "w") as handle:
                    handle.write(metrics["diverged"])
            else:
                if before_save is not None:
                    before_save(metrics, state)
                torch.save(state, os.path.join(folder, STATE_FILE))
            ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(folder))

    return publish


# --------------------------------------------------------------------------------------------------
# The driver's side
# --------------------------------------------------------------------------------------------------


def run_torch_trainer(
    worker_fn: Callable[[dict[str, Any]], None],
    worker_config: dict[str, Any],
    settings: Scaling,
    *,
    storage_path: str,
    name: str,
) -> dict[str, Any]:
    """Run ``worker_fn(worker_config)`` on ``settings.num_workers`` Ray Train workers; the final epoch's metrics.

    The run lives in ``storage_path/name``: calling again with the same name (a retried Tune trial) resumes
    from its latest checkpoint, and ``FailureConfig(max_failures=2)`` restarts failed workers from it.
    Called inside a Tune trial, every epoch's report is also forwarded to the trial (:func:`tune_callbacks`).

    Args:
        worker_fn: the workers' loop (it reports with a publisher from :func:`make_publisher`).
        worker_config: its argument, pickled to every worker.
        settings: ``num_workers``, ``use_gpu`` (one GPU per worker, NCCL; else gloo) and ``cpus_per_worker``
            (logical CPUs per worker).
        storage_path: where Ray Train keeps the run (shared storage on a multi-node cluster).
        name: the run's name, stable across retries of one trial so that it resumes.

    Returns:
        Rank 0's metrics of the latest checkpoint plus ``checkpoint_state``: the path of its ``state.pt``.

    Raises:
        FloatingPointError: the run diverged (its latest checkpoint is the terminal one).
        RuntimeError: the run ended without reporting an epoch.
        ray.train.TrainingFailedError: the workers failed more than ``max_failures`` times.
    """
    import ray.train
    from ray.train.torch import TorchConfig, TorchTrainer

    trainer = TorchTrainer(
        worker_fn,
        train_loop_config=worker_config,
        torch_config=TorchConfig(backend="nccl" if settings.use_gpu else "gloo"),  # DESIGN.md §5
        scaling_config=ray.train.ScalingConfig(
            num_workers=settings.num_workers,
            use_gpu=settings.use_gpu,
            resources_per_worker={"CPU": settings.cpus_per_worker},
        ),
        run_config=ray.train.RunConfig(
            name=name,
            storage_path=storage_path,
            failure_config=ray.train.FailureConfig(max_failures=2),
            callbacks=tune_callbacks(),
        ),
    )
    result = trainer.fit()
    metrics = dict(result.metrics or {})  # rank 0's report of the latest checkpoint
    if not metrics or result.checkpoint is None:
        raise RuntimeError(f"Ray Train run {name!r} in {storage_path} ended without reporting an epoch")
    if "diverged" in metrics:
        raise FloatingPointError(metrics["diverged"])
    metrics["checkpoint_state"] = os.path.join(result.checkpoint.path, STATE_FILE)
    return metrics


def tune_callbacks() -> list[Any]:
    """Forward the workers' reports to the Tune trial we run in, if any."""
    from ray.tune.integration.ray_train import TuneReportCallback

    class _ForwardToTune(TuneReportCallback):
        """TuneReportCallback that keeps a diverged epoch (which has no val metrics) from the trial."""

        def after_report(self, run_context: Any, metrics: list[dict[str, Any]], checkpoint: Any) -> None:
            if metrics and "diverged" not in metrics[0]:
                super().after_report(run_context, metrics, checkpoint)

    try:
        return [_ForwardToTune()]
    except RuntimeError as err:
        if "Tune session" not in str(err):
            raise
        return []  # called from a plain driver, not a Tune trial
