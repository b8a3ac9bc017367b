"""Train one candidate of the global space from scratch (Efficient Global NAS, performance evaluation).

Paper: ``efficient-global-nas-macro-micro.txt``, §4.1 "Search and Training Settings": every candidate is
trained with SGD (momentum 0.9, weight decay 3e-4), learning rate 0.025 cosine-annealed to 0, batch 64,
optionally cutout, for the number of epochs the searcher asks (§3.2, dynamic learning rankings).

Two entry points share one epoch loop:

- :func:`fit_candidate` trains in this process (one CPU or GPU); the searcher's trials call it directly.
- :func:`fit_candidate_distributed` trains data-parallel as a Ray Train ``TorchTrainer`` (DDP; gloo on CPU,
  nccl on GPU), checkpointing every epoch under a stable run name so a retried trial resumes.

The collectives, the checkpoints and the Ray Train plumbing (worker and driver side) are
:mod:`trainables.train_loop`'s, shared with :mod:`trainables.alignment.train`; this module keeps the task.

Determinism is part of the contract (the resume guarantee rests on it): model init is seeded from
``settings.seed``; epoch ``e`` shuffles with ``numpy.random.default_rng([seed, e])`` (a fresh generator
per epoch, so nothing random is carried across epochs); torch runs with ``settings.threads`` threads.
Equal ``(arch, data, settings)`` give bit-identical metrics, and resuming from the state saved after
epoch ``k`` gives exactly the metrics of the uninterrupted run.

Validation accuracy is in percent (0..100), as the paper's thresholds (+0.10 / -0.05) are in points.
The test split is evaluated once, after the final epoch, and never drives a decision.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from search_algos.spaces.global_space import GlobalArch, count_params
from trainables.checks import is_int, is_real
from trainables.classification.model import build_global_cnn
from trainables.device import (
    DeviceData,
    autocast,
    channels_last,
    precision_problems,
    resolve_device,
    resolve_precision,
)
from trainables.train_loop import (
    LocalComm,
    OnEpoch,
    Publish,
    batch_bounds,
    batch_split_problems,
    check_resume_state,
    deterministic,
    load_resume_state,
    make_publisher,
    report_epoch,
    run_torch_trainer,
    run_worker,
    stop_if_diverged,
)

if TYPE_CHECKING:
    from trainables.classification.data import ImageDataset

__all__ = ["OnEpoch", "TrainSettings", "fit_candidate", "fit_candidate_distributed"]

_EVAL_BATCH = 512  # evaluation holds no activations for backward, so a larger batch is cheap
_STATE_KEYS = ("epoch", "model", "optimizer", "scheduler", "metrics")


@dataclass(frozen=True)
class TrainSettings:
    """How one candidate is trained; defaults are the paper's (§4.1).

    Attributes:
        epochs: epochs of this run; also the length of the cosine schedule (lr reaches 0 at the end).
        batch_size: global batch (split evenly over ``num_workers``); the paper uses 64.
        lr: initial learning rate; 0.025 as in DARTS, which the paper follows.
        momentum: SGD momentum, 0.9.
        weight_decay: L2 weight decay, 3e-4.
        cutout: side of the cutout square in pixels, 0 = off (the paper uses cutout on CIFAR; on 8x8
            digits a square would erase most of the image, so it is off by default).
        seed: seeds model init, shuffling and cutout.
        num_workers: Ray Train workers of :func:`fit_candidate_distributed` (DDP when > 1).
        use_gpu: train on a GPU (one per worker); :func:`trainables.device.resolve_device`.
        cpus_per_worker: logical CPUs each Ray Train worker reserves; fractions let two workers and the
            Tune trial that launched them share a small machine (DESIGN.md §6).
        threads: torch intra-op threads per process; fixed so results do not depend on the machine.
        precision: ``"auto"`` (bf16 on a GPU, fp32 on the CPU), ``"fp32"`` or ``"bf16"`` (autocast of the
            forward pass; the loss and the optimizer stay in fp32).
        channels_last: NHWC memory layout for the convolutions (faster with bf16 on recent GPUs).

    Raises:
        ValueError: listing every broken rule, with the values given.
    """

    epochs: int
    batch_size: int = 64
    lr: float = 0.025
    momentum: float = 0.9
    weight_decay: float = 3e-4
    cutout: int = 0
    seed: int = 0
    num_workers: int = 1
    use_gpu: bool = False
    cpus_per_worker: float = 1.0
    threads: int = 1
    precision: str = "auto"
    channels_last: bool = False

    def __post_init__(self) -> None:
        problems = []
        for name, low in (("epochs", 1), ("batch_size", 1), ("cutout", 0), ("seed", 0), ("num_workers", 1),
                          ("threads", 1)):  # fmt: skip
            value = getattr(self, name)
            if not is_int(value) or value < low:
                problems.append(f"{name} must be an integer >= {low}, but got {name}={value!r}")
        for name, ok, rule in (
            ("lr", lambda v: v > 0, "> 0"),
            ("momentum", lambda v: 0 <= v < 1, "in [0, 1)"),
            ("weight_decay", lambda v: v >= 0, ">= 0"),
            ("cpus_per_worker", lambda v: v > 0, "> 0"),
        ):
            value = getattr(self, name)
            if not is_real(value) or not ok(value):
                problems.append(f"{name} must be a finite number {rule}, but got {name}={value!r}")
        for name in ("use_gpu", "channels_last"):
            if not isinstance(getattr(self, name), bool):
                problems.append(f"{name} must be a bool, but got {name}={getattr(self, name)!r}")
        problems += precision_problems(self.precision)
        if not problems:
            problems += batch_split_problems(self.batch_size, self.num_workers)
        if problems:
            raise ValueError("invalid TrainSettings: " + "; ".join(problems))


# --------------------------------------------------------------------------------------------------
# In-process training
# --------------------------------------------------------------------------------------------------


def fit_candidate(
    arch: GlobalArch,
    data: ImageDataset,
    settings: TrainSettings,
    *,
    on_epoch: OnEpoch | None = None,
    resume_state: dict[str, Any] | None = None,
    device: str | None = None,
) -> dict[str, Any]:
    """Train ``arch`` from scratch on ``data.train`` in this process; evaluate on val (and test at the end).

    Args:
        arch: the candidate.
        data: an :class:`~trainables.classification.data.ImageDataset` (``train``/``val``/``test`` splits with
            ``x`` (N, C, H, W) float32 and ``y`` (N,) int64; ``num_classes``; ``in_channels``).
        settings: the training protocol; ``num_workers`` is ignored here (one process).
        on_epoch: ``on_epoch(metrics, state)`` after every epoch. ``state`` is
            ``{"epoch", "model", "optimizer", "scheduler", "metrics"}`` (state dicts, copied, so it may be
            kept); it round-trips through ``torch.save`` / ``torch.load(weights_only=True)``.
        resume_state: such a state; training continues at the epoch after ``state["epoch"]``. It must
            come from a run with equal ``arch``, data and settings (the schedule length is checked).
        device: torch device; default :func:`trainables.device.resolve_device` of ``settings.use_gpu``.

    Returns:
        The final epoch's metrics: ``epoch`` (1-based), ``epochs``, ``train_loss``, ``val_loss``,
        ``val_acc`` (percent), ``params`` and ``test_acc`` (percent).

    Raises:
        FloatingPointError: the training loss became NaN or infinite (the trial counts as failed).
        ValueError: a training split too small for one batch, or a ``resume_state`` from another run.
        RuntimeError: a GPU asked for (``use_gpu`` or a ``cuda`` device) but CUDA is not available.
    """
    where = torch.device(device) if device is not None else resolve_device(settings.use_gpu)
    if where.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError(
            f"device={device!r} asks for a GPU (use_gpu={settings.use_gpu}) but CUDA is not available; "
            "pass device='cpu' or install a CUDA build of torch"
        )
    with deterministic(settings.threads):
        return _fit(
            arch,
            data,
            settings,
            comm=LocalComm(),
            device=where,
            resume_state=resume_state,
            wrap=lambda model: model,
            on_epoch=on_epoch,
            publish=None,
        )


def _fit(
    arch: GlobalArch,
    data: Any,
    settings: TrainSettings,
    *,
    comm: LocalComm,
    device: torch.device,
    resume_state: dict[str, Any] | None,
    wrap: Callable[[nn.Module], nn.Module],
    on_epoch: OnEpoch | None,
    publish: Publish | None,
) -> dict[str, Any]:
    """The epoch loop shared by both entry points (setup -> train/evaluate per epoch -> test at the end).

    ``wrap`` turns the model into its training form (DDP under Ray Train); ``publish(metrics, state)``
    reports every epoch to Ray Train on all ranks (``state`` only on rank 0; None for a diverged epoch).
    """
    train, val, test = (_device_data(split, device) for split in (data.train, data.val, data.test))
    shard_size = len(train) // comm.world  # the permutation is cut to a multiple of the world size
    local_batch = settings.batch_size // comm.world
    steps = len(batch_bounds(shard_size, local_batch))
    if steps == 0:
        raise ValueError(
            f"the training split must give every worker at least 2 samples, but it has {len(train)} "
            f"samples for num_workers={comm.world}; use a larger dataset (max_samples) or fewer workers"
        )
    total_steps = settings.epochs * steps
    params = count_params(arch, in_channels=data.in_channels, num_classes=data.num_classes)

    with torch.random.fork_rng(devices=[]):  # seed the init without touching the caller's global RNG
        torch.manual_seed(settings.seed)
        model = build_global_cnn(arch, in_channels=data.in_channels, num_classes=data.num_classes)
    if resume_state is not None:
        _check_resume_state(resume_state, settings.epochs, total_steps)
        model.load_state_dict(resume_state["model"])
    model = wrap(channels_last(model.to(device), settings.channels_last))
    precision = resolve_precision(settings.precision, gpu=device.type == "cuda")
    optimizer = torch.optim.SGD(
        model.parameters(), lr=settings.lr, momentum=settings.momentum, weight_decay=settings.weight_decay
    )
    # Annealed per step, to exactly 0 after the last step of the last epoch.
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=total_steps, eta_min=0.0)
    start = load_resume_state(resume_state, optimizer=optimizer, scheduler=scheduler)
    if resume_state is not None and start > settings.epochs:  # saved after the final epoch: nothing left to train
        return dict(resume_state["metrics"])

    metrics: dict[str, Any] = {}
    for epoch in range(start, settings.epochs + 1):
        order, centers = _epoch_plan(len(train), train.tensors[0].shape[-2:], settings, epoch, comm)
        loss_sum, count = _train_epoch(
            model, optimizer, scheduler, train, order, centers, batch=local_batch, cutout=settings.cutout,
            precision=precision, nhwc=settings.channels_last,
        )  # fmt: skip
        loss_sum, count = comm.sum_all(loss_sum, count)
        train_loss = loss_sum / count
        stop_if_diverged(train_loss, epoch, settings.epochs, publish)

        net = _unwrap(model)
        comm.broadcast_buffers(net)  # every rank evaluates (and rank 0 saves) the same BN statistics
        val_loss, val_acc = _evaluate(net, val, comm, precision=precision, nhwc=settings.channels_last)
        metrics = {
            "epoch": epoch,
            "epochs": settings.epochs,
            "train_loss": train_loss,
            "val_loss": val_loss,
            "val_acc": val_acc,
            "params": params,
        }
        if epoch == settings.epochs:
            metrics["test_acc"] = _evaluate(net, test, comm, precision=precision, nhwc=settings.channels_last)[1]
        report_epoch(
            metrics, comm, on_epoch=on_epoch, publish=publish, model=net, optimizer=optimizer, scheduler=scheduler
        )
    return metrics


def _check_resume_state(state: dict[str, Any], epochs: int, total_steps: int) -> None:
    check_resume_state(state, keys=_STATE_KEYS, epochs=epochs)
    saved_steps = state["scheduler"].get("T_max")
    if saved_steps != total_steps:
        raise ValueError(
            f"resume_state comes from a run with another schedule ({saved_steps} steps, this run has "
            f"{total_steps}); resume only with the same arch, data, settings and number of workers"
        )


def _device_data(split: Any, device: torch.device) -> DeviceData:
    """The split's images (N, C, H, W) and labels (N,), resident on ``device`` when they fit (no copy on the CPU)."""
    x = torch.as_tensor(np.asarray(split.x, dtype=np.float32))  # (N, C, H, W)
    y = torch.as_tensor(np.asarray(split.y, dtype=np.int64))  # (N,)
    return DeviceData(x, y, device=device)


def _unwrap(model: nn.Module) -> nn.Module:
    return model.module if isinstance(model, nn.parallel.DistributedDataParallel) else model


def _epoch_plan(
    n: int, image_size: tuple[int, int], settings: TrainSettings, epoch: int, comm: LocalComm
) -> tuple[np.ndarray, np.ndarray | None]:
    """This rank's sample order for ``epoch`` and, with cutout, one square centre per sample.

    A fresh generator per (seed, epoch) makes epoch ``e`` independent of how the run got there (resume).
    All ranks draw the same permutation, cut it to a multiple of the world size and take every
    ``world``-th sample from their rank on, so step ``s`` of all ranks together is one global batch.
    """
    rng = np.random.default_rng([settings.seed, epoch])
    order = rng.permutation(n)  # (n,)
    centers = None
    if settings.cutout:
        centers = rng.integers(0, tuple(image_size), size=(n, 2))  # (n, 2) square centres as (row, col)
    used = n // comm.world * comm.world
    shard = slice(comm.rank, used, comm.world)
    return order[shard], (centers[shard] if centers is not None else None)


def _train_epoch(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    train: DeviceData,
    order: np.ndarray,
    centers: np.ndarray | None,
    batch: int,
    cutout: int,
    *,
    precision: str = "fp32",
    nhwc: bool = False,
) -> tuple[float, int]:
    """One pass over this rank's samples; returns (sum of per-sample losses, number of samples).

    The step loop never waits for the device: the loss is summed on the device and read once, at the end.
    """
    device = train.device
    order_t = torch.from_numpy(order).to(train.home)
    centers_t = torch.from_numpy(centers).to(device) if centers is not None else None
    loss_sum = torch.zeros((), dtype=torch.float64, device=device)
    count = 0
    model.train()
    for start, end in batch_bounds(len(order), batch):
        x, y = train.take(order_t[start:end])  # (b, C, H, W), (b,)
        if centers_t is not None:
            x = _cutout(x, centers_t[start:end], cutout)
        with autocast(device, precision):
            logits = model(channels_last(x, nhwc))  # (b, num_classes)
        loss = F.cross_entropy(logits.float(), y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        scheduler.step()
        loss_sum += loss.detach().double() * (end - start)
        count += end - start
    return float(loss_sum), count  # one device sync per epoch, not per step


def _cutout(x: torch.Tensor, centers: torch.Tensor, size: int) -> torch.Tensor:
    """Zero a ``size`` x ``size`` square per image, centred at ``centers`` and clipped at the border.

    DeVries & Taylor (2017), as used by the paper's training protocol. ``x``: (B, C, H, W); ``centers``:
    (B, 2) integer (row, col).
    """
    height, width = x.shape[-2:]
    top = centers[:, :1] - size // 2  # (B, 1)
    left = centers[:, 1:] - size // 2  # (B, 1)
    rows = torch.arange(height, device=x.device)  # (H,)
    cols = torch.arange(width, device=x.device)  # (W,)
    in_rows = (rows >= top) & (rows < top + size)  # (B, H)
    in_cols = (cols >= left) & (cols < left + size)  # (B, W)
    hole = in_rows[:, :, None] & in_cols[:, None, :]  # (B, H, W)
    return x * (~hole)[:, None].to(x.dtype)  # (B, C, H, W)


@torch.no_grad()
def _evaluate(
    model: nn.Module, split: DeviceData, comm: LocalComm, *, precision: str = "fp32", nhwc: bool = False
) -> tuple[float, float]:
    """Mean cross-entropy and accuracy in percent over the split (each rank takes every world-th sample)."""
    share = split.strided(comm.rank, comm.world)
    loss_sum = torch.zeros((), dtype=torch.float64, device=share.device)
    correct = torch.zeros((), dtype=torch.int64, device=share.device)
    was_training = model.training
    model.eval()
    for start in range(0, len(share), _EVAL_BATCH):
        x, y = share.rows(start, start + _EVAL_BATCH)
        with autocast(share.device, precision):
            logits = model(channels_last(x, nhwc)).float()  # (b, num_classes)
        loss_sum += F.cross_entropy(logits, y, reduction="sum").double()
        correct += (logits.argmax(dim=1) == y).sum()
    model.train(was_training)
    loss_total, correct_total, count = comm.sum_all(float(loss_sum), float(correct), len(share))
    if count == 0:
        return float("nan"), float("nan")
    return loss_total / count, 100.0 * correct_total / count


# --------------------------------------------------------------------------------------------------
# Ray Train (data-parallel) training
# --------------------------------------------------------------------------------------------------


def fit_candidate_distributed(
    arch: GlobalArch,
    data_spec: dict[str, Any],
    settings: TrainSettings,
    *,
    storage_path: str,
    name: str,
    on_epoch: OnEpoch | None = None,
) -> dict[str, Any]:
    """Train ``arch`` data-parallel over ``settings.num_workers`` Ray Train workers (DDP).

    Each worker loads the data itself (``load_dataset(**data_spec)``: no arrays travel), trains on its
    shard of every epoch's permutation with ``batch_size // num_workers`` samples a step, and every
    epoch all workers report the same metrics (train loss, val loss and accuracy are all-reduced);
    rank 0 attaches a checkpoint holding ``state.pt`` with the layout :func:`fit_candidate` gives
    ``on_epoch``. The run lives in ``storage_path/name``: calling again with the same name (a retried
    Tune trial) resumes from its latest checkpoint, and ``FailureConfig(max_failures=2)`` restarts
    failed workers from it. Called inside a Tune trial, every epoch's metrics are also reported to the
    trial (``TuneReportCallback``). Launching the workers costs seconds: for one CPU worker prefer
    :func:`fit_candidate` in the trial itself.

    Args:
        arch: the candidate.
        data_spec: keyword arguments of :func:`trainables.classification.data.load_dataset`, e.g.
            ``{"name": "digits", "split_seed": 0}``.
        settings: the training protocol, including ``num_workers``, ``use_gpu``, ``cpus_per_worker``.
        storage_path: where Ray Train keeps the run (shared storage on a multi-node cluster).
        name: the run's name, stable across retries of one trial so that it resumes.
        on_epoch: ``on_epoch(metrics, state)``, called on the rank-0 worker after every epoch (it is
            pickled to the worker, so its side effects happen there, e.g. through an actor handle).

    Returns:
        The final epoch's metrics, as :func:`fit_candidate` returns them.

    Raises:
        FloatingPointError: the training loss became NaN or infinite.
        ray.train.TrainingFailedError: the workers failed more than ``max_failures`` times.
    """
    config = {"arch": arch, "data_spec": dict(data_spec), "settings": settings, "on_epoch": on_epoch}
    metrics = run_torch_trainer(_train_worker, config, settings, storage_path=storage_path, name=name)
    return {key: metrics[key] for key in _METRIC_KEYS if key in metrics}


_METRIC_KEYS = ("epoch", "epochs", "train_loss", "val_loss", "val_acc", "params", "test_acc")


def _train_worker(config: dict[str, Any]) -> None:
    """One Ray Train worker: resume from the run's checkpoint, load the data, train, report per epoch."""
    import ray.train.torch

    from trainables.classification.data import load_dataset

    settings: TrainSettings = config["settings"]

    def train(resume_state: dict[str, Any] | None, comm: LocalComm, device: torch.device) -> None:
        data = load_dataset(**config["data_spec"])
        with deterministic(settings.threads):
            _fit(
                config["arch"],
                data,
                settings,
                comm=comm,
                device=device,
                resume_state=resume_state,
                wrap=ray.train.torch.prepare_model,
                on_epoch=config["on_epoch"],
                publish=make_publisher(comm),
            )

    run_worker(train)
