"""MONAS supernet training with MNUS, one-shot child evaluation, and stand-alone retraining of a child.

Paper: ``monas-multipath-oneshot-nas-3d-face-alignment.txt``: §III-B and Algorithm 1 (MNUS: every step
samples K children, accumulates their gradients on the same batch, then updates the supernet once),
§IV-B (Adam, learning rate 1e-3). The network is :class:`~trainables.alignment.model.MultipathSupernet`;
the task is UV position-map regression with a weighted MSE (DESIGN.md §1: weights 16 : 4 : 3 : 0).

Entry points:

- :func:`train_supernet` trains the supernet in this process; :func:`train_supernet_distributed` trains
  it data-parallel as a Ray Train ``TorchTrainer`` inside a Tune trial (DESIGN.md §6), checkpointing every
  epoch under a stable run name so that a replaced worker or a retried trial resumes.
- :func:`evaluate_child` scores one child with the supernet's weights (one-shot), after recalibrating
  its BatchNorm statistics; :func:`load_supernet` reads a saved supernet for the search stage.
- :func:`train_standalone` retrains a child from scratch and reports the test NME by yaw bin.

The collectives, the checkpoints and the Ray Train plumbing (worker and driver side) are
:mod:`trainables.train_loop`'s, shared with :mod:`trainables.classification.train`.

Determinism (the resume guarantee rests on it, as in :mod:`trainables.classification.train`): init is seeded from
``settings.seed``; epoch ``e`` shuffles with ``default_rng((seed, e, 1))``; step ``s`` (counted from the
start of training) draws its children with ``default_rng((seed, s))`` -- a fresh generator per step, so
every Ray Train worker draws the same children and a resumed run draws what the uninterrupted one did;
torch runs with ``settings.threads`` threads. Equal inputs give bit-identical weights and metrics (except
the wall-clock ``samples_per_s``), and resuming from the state saved after epoch ``k`` gives exactly the
uninterrupted run's.

NME is in percent (AFLW2000-3D protocol, :mod:`trainables.alignment.metrics`).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
import torch.distributed
from torch import nn

from search_algos.spaces.multipath import MultipathSpace, mnus_children, uniform_children
from trainables.alignment.metrics import dense_nme, landmarks_from_uv, nme, nme_by_yaw
from trainables.alignment.model import MultipathSupernet
from trainables.checks import is_int, is_real
from trainables.device import (
    DeviceData,
    autocast,
    cached_on_device,
    channels_last,
    precision_problems,
    resolve_device,
    resolve_precision,
)
from trainables.train_loop import (
    STATE_FILE,
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
    from trainables.alignment.data import AlignmentDataset, AlignmentSplit

__all__ = [
    "OnEpoch",
    "SupernetSettings",
    "evaluate_child",
    "load_supernet",
    "train_standalone",
    "train_supernet",
    "train_supernet_distributed",
    "uv_loss",
]

SAMPLERS: dict[str, Callable[[MultipathSpace, int, np.random.Generator], list[Any]]] = {
    "mnus": mnus_children,  # Algorithm 1
    "uniform": uniform_children,  # the paper's "w/o MNUS" ablation
}
_EVAL_BATCH = 64  # no activations kept for backward: a larger batch is cheap
_STATE_KEYS = ("epoch", "model", "optimizer", "metrics")
# Random streams. The children of step s draw from default_rng((seed, s)); the others carry a third seed
# word, non-zero because SeedSequence pads entropy with zeros ((seed, s) is (seed, s, 0)).
_SHUFFLE_SALT = 1  # (seed, epoch, salt): the order of the training images in that epoch
_RECALIBRATION_SALT = 2  # (seed, 0, salt): the train images that recalibrate a child's batch norms


@dataclass(frozen=True)
class SupernetSettings:
    """How the supernet (and a stand-alone child) is trained; defaults fit a 2-core CPU.

    Attributes:
        epochs: epochs of this run.
        batch_size: global batch (split evenly over ``num_workers``); small, as the images are.
        lr: Adam learning rate, 1e-3 as in the paper (§IV-B).
        k_children: K, children per step (Algorithm 1; DESIGN.md default 4).
        sampling: ``"mnus"`` (Algorithm 1) or ``"uniform"`` (children drawn independently: the ablation).
        channels: base width of the supernet (scale ``d`` has ``channels * 2**min(d, 3)``); a multiple of 4.
        seed: seeds init, shuffling, children and BN recalibration batches.
        num_workers: Ray Train workers of :func:`train_supernet_distributed`.
        use_gpu: train on a GPU (one per worker); :func:`trainables.device.resolve_device`.
        cpus_per_worker: logical CPUs each Ray Train worker reserves; fractions let two workers and the
            Tune trial that launched them share a small machine (DESIGN.md §6).
        threads: torch intra-op threads per process; fixed so results do not depend on the machine.
        precision: ``"auto"`` (bf16 on a GPU, fp32 on the CPU), ``"fp32"`` or ``"bf16"`` (autocast of the
            forward passes, training and one-shot evaluation; losses and Adam stay in fp32).
        channels_last: NHWC memory layout for the convolutions (faster with bf16 on recent GPUs).
        bn_recalibration_batches: train batches on which one-shot evaluation re-estimates a child's BN
            statistics (0 = use the supernet's running statistics). Why: during training every BN layer
            sees the mixture of all sampled children, but a node's input statistics depend on which edges
            feed it (the sum of one edge or of three), so the averaged running statistics fit no single
            child and would distort one-shot rankings (Guo et al. 2020, SPOS); a few forward passes per
            child fix that without any gradient step.

    Raises:
        ValueError: listing every broken rule, with the values given.
    """

    epochs: int
    batch_size: int = 16
    lr: float = 1e-3
    k_children: int = 4
    sampling: str = "mnus"
    channels: int = 8
    seed: int = 0
    num_workers: int = 1
    use_gpu: bool = False
    cpus_per_worker: float = 1.0
    threads: int = 1
    bn_recalibration_batches: int = 4
    precision: str = "auto"
    channels_last: bool = False

    def __post_init__(self) -> None:
        problems = []
        for name, low in (("epochs", 1), ("batch_size", 2), ("k_children", 1), ("channels", 4), ("seed", 0),
                          ("num_workers", 1), ("threads", 1), ("bn_recalibration_batches", 0)):  # fmt: skip
            value = getattr(self, name)
            if not is_int(value) or value < low:
                problems.append(f"{name} must be an integer >= {low}, but got {name}={value!r}")
        for name in ("lr", "cpus_per_worker"):
            value = getattr(self, name)
            if not is_real(value) or not value > 0:
                problems.append(f"{name} must be a finite number > 0, but got {name}={value!r}")
        if self.sampling not in SAMPLERS:
            problems.append(f"sampling must be one of {sorted(SAMPLERS)}, but got sampling={self.sampling!r}")
        for name in ("use_gpu", "channels_last"):
            if not isinstance(getattr(self, name), bool):
                problems.append(f"{name} must be a bool, but got {name}={getattr(self, name)!r}")
        problems += precision_problems(self.precision)
        if not problems and self.channels % 4:
            problems.append(
                f"channels must be a multiple of 4 (the HPM block splits C/2, C/4, C/4), but got "
                f"channels={self.channels}"
            )
        if not problems:
            problems += batch_split_problems(self.batch_size, self.num_workers)
        if problems:
            raise ValueError("invalid SupernetSettings: " + "; ".join(problems))


# --------------------------------------------------------------------------------------------------
# Loss and evaluation
# --------------------------------------------------------------------------------------------------


def uv_loss(
    pred: torch.Tensor, target_uv: torch.Tensor, weights: torch.Tensor, image_size: float
) -> torch.Tensor:
    """Weighted MSE between a predicted (normalised) UV map and a target in pixels (PRNet's loss).

    ``sum_{b,c,h,w} W[h,w] * (pred - target / S)**2 / (B * 3 * sum_{h,w} W[h,w])``: a weighted mean, so the
    value does not depend on the scale of the weights (DESIGN.md §1: 16 : 4 : 3 : 0 for landmarks :
    eyes/nose/mouth : face : rest).

    Args:
        pred: (B, 3, H, W) model output, UV coordinates divided by the image size ``S``.
        target_uv: (B, 3, H, W) ground truth in pixels (x, y, z).
        weights: (H, W) non-negative texel weights.
        image_size: ``S``, the side of the image in pixels.

    Returns:
        A scalar tensor.
    """
    return _weighted_mse(pred, target_uv / image_size, weights)


def _weighted_mse(pred: torch.Tensor, target: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    squared = (pred - target).square() * weights  # (B, 3, H, W)
    return squared.sum() / (pred.shape[0] * pred.shape[1] * weights.sum())


def _as_tensor(array: Any, device: torch.device) -> torch.Tensor:
    """A float32 tensor on ``device`` (no copy for a float32 array on the CPU)."""
    return torch.as_tensor(np.asarray(array, dtype=np.float32), device=device)


@torch.no_grad()
def _predict(
    forward: Callable[[torch.Tensor], torch.Tensor], images: torch.Tensor, precision: str = "fp32"
) -> torch.Tensor:
    """Normalised UV maps (N, 3, H, W) of ``images`` (N, 3, H, W), in batches of ``_EVAL_BATCH``, in float32."""
    with autocast(images.device, precision):
        preds = [forward(images[s : s + _EVAL_BATCH]) for s in range(0, len(images), _EVAL_BATCH)]
    return torch.cat(preds).float()


def _split_metrics(
    pred: torch.Tensor, split: AlignmentSplit, data: AlignmentDataset, weights: torch.Tensor, name: str
) -> dict[str, Any]:
    """NME (%) from the landmarks read off the predicted UV maps; loss and dense NME where UV maps exist.

    Args:
        pred: (N, 3, H, W) normalised predictions on ``split``.
        name: the split's name, prefix of ``<name>_nme`` and ``<name>_loss``.
    """
    size = float(data.image_size)
    pred_px = pred.float().cpu().numpy() * size  # (N, 3, H, W) pixels
    per_sample = nme(landmarks_from_uv(pred_px, data.landmark_uv), split.landmarks)  # (N,) percent
    by_yaw = nme_by_yaw(per_sample, split.yaw)
    metrics: dict[str, Any] = {
        f"{name}_nme": float(per_sample.mean()),
        "nme_by_yaw": by_yaw,
        "nme_mean": by_yaw["mean"],
    }
    if split.has_uv:
        metrics[f"{name}_loss"] = float(uv_loss(pred, cached_on_device(split.uv_maps, pred.device), weights, size))
        metrics["dense_nme"] = float(dense_nme(pred_px, split.uv_maps, data.uv_weights, split.landmarks).mean())
    return metrics


@contextlib.contextmanager
def _recalibrated(
    model: nn.Module,
    forward: Callable[[torch.Tensor], torch.Tensor],
    batches: list[torch.Tensor],
    precision: str = "fp32",
) -> Iterator[None]:
    """``model`` in eval mode with BN statistics re-estimated by ``forward`` over ``batches``.

    Every BN layer's running statistics are reset and re-accumulated as a plain average over the
    batches (``momentum=None``); on exit the statistics, momenta and the train/eval mode are restored,
    so one evaluation never leaks into the next. No batches: the running statistics are used as they are.
    """
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    saved = [(m.momentum, {k: v.clone() for k, v in m.state_dict().items()}) for m in norms]
    was_training = model.training
    try:
        if batches:
            for norm in norms:
                norm.reset_running_stats()
                norm.momentum = None  # cumulative average over the recalibration batches
            model.train()
            with torch.no_grad(), autocast(batches[0].device, precision):
                for batch in batches:
                    forward(batch)
        model.eval()
        yield
    finally:
        for norm, (momentum, state) in zip(norms, saved):
            norm.momentum = momentum
            norm.load_state_dict(state)
        model.train(was_training)


def _recalibration_batches(train: torch.Tensor, count: int, batch: int, seed: int) -> list[torch.Tensor]:
    """``count`` batches of ``batch`` train images, the same for every child (a fair comparison)."""
    order = np.random.default_rng((seed, 0, _RECALIBRATION_SALT)).permutation(len(train))
    index = torch.as_tensor(order[: count * batch], device=train.device)
    return [train[index[s : s + batch]] for s in range(0, len(index), batch) if len(index[s : s + batch]) > 1]


def evaluate_child(
    model: MultipathSupernet,
    arch: Any,
    data: AlignmentDataset,
    split: str = "val",
    *,
    recalibration_batches: int = 4,
    batch_size: int = 16,
    seed: int = 0,
    precision: str = "auto",
    nhwc: bool = False,
) -> dict[str, Any]:
    """One-shot evaluation of ``arch`` with the supernet's weights (what the search stage scores).

    The child's BN statistics are first re-estimated on ``recalibration_batches`` train batches (see
    :class:`SupernetSettings`); the supernet's weights and buffers are unchanged afterwards. Deterministic:
    the batches depend on ``seed`` only, the same for every child.

    Args:
        model: the trained supernet (on the device to evaluate on).
        arch: a ``MultipathArch`` (or its (L-1, D, D) array).
        data: an ``AlignmentDataset``.
        split: ``"val"`` (the search's) or ``"test"``.
        recalibration_batches: 0 uses the running statistics.
        batch_size: images per recalibration batch.
        seed: picks the recalibration batches.
        precision: of the forward passes (``"auto"``: bf16 on a GPU, fp32 on the CPU).
        nhwc: feed the model channels-last batches (for a model moved with
            :func:`trainables.device.channels_last`).

    Returns:
        ``<split>_nme`` (mean over the faces, %), ``nme_by_yaw`` (dict by yaw bin), ``nme_mean`` (mean of
        the bins), and where the split has UV maps ``<split>_loss`` and ``dense_nme`` (%).
    """
    if split not in ("train", "val", "test"):
        raise ValueError(f"split must be 'train', 'val' or 'test', but got split={split!r}")
    device = next(model.parameters()).device
    precision = resolve_precision(precision, gpu=device.type == "cuda")
    target: AlignmentSplit = getattr(data, split)

    def forward(x: torch.Tensor) -> torch.Tensor:
        return model(channels_last(x, nhwc), arch)

    # On a GPU the splits are copied once per process, not once per child (cached_on_device).
    train = cached_on_device(data.train.images, device)  # (N, 3, H, W); no copy on the CPU
    batches = _recalibration_batches(train, recalibration_batches, batch_size, seed)
    with _recalibrated(model, forward, batches, precision):
        pred = _predict(forward, cached_on_device(target.images, device), precision)  # (N, 3, H, W)
    return _split_metrics(pred, target, data, cached_on_device(data.uv_weights, device), split)


def load_supernet(path: str, space: MultipathSpace, settings: SupernetSettings) -> MultipathSupernet:
    """The supernet saved at ``path`` (a ``state.pt`` or the checkpoint folder holding one), on the CPU.

    Args:
        path: :func:`train_supernet_distributed`'s ``checkpoint_state``, or a file holding an ``on_epoch``
            state (or only its ``model`` state dict).
        space: the space it was trained on (``layers``, ``scales``).
        settings: its training settings (``channels``).
    """
    if os.path.isdir(path):
        path = os.path.join(path, STATE_FILE)
    state = torch.load(path, map_location="cpu", weights_only=True)
    model = MultipathSupernet(layers=space.layers, scales=space.scales, channels=settings.channels)
    model.load_state_dict(state["model"] if "model" in state else state)
    return model


# --------------------------------------------------------------------------------------------------
# The epoch loop, shared by the supernet and stand-alone training
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Task:
    """What differs between supernet and stand-alone training.

    ``children(step)``: the archs whose gradients one step accumulates (``[None]``: the model needs no
    arch); ``evaluate(model, final)``: the epoch's validation (and, when ``final``, test) metrics.
    """

    model: nn.Module
    children: Callable[[int], Sequence[Any]]
    evaluate: Callable[[nn.Module, bool], dict[str, Any]]
    params: int


def _fit(
    task: _Task,
    data: AlignmentDataset,
    settings: SupernetSettings,
    *,
    comm: LocalComm,
    device: torch.device,
    resume_state: dict[str, Any] | None,
    on_epoch: OnEpoch | None,
    publish: Publish | None,
) -> dict[str, Any]:
    """Setup -> per epoch: train, evaluate, report (``publish`` on every rank, ``on_epoch`` on rank 0)."""
    if not data.train.has_uv:
        raise ValueError(f"the training split of {data.name!r} has no UV maps; the UV loss needs them")
    images = _as_tensor(data.train.images, torch.device("cpu"))  # (N, 3, H, W)
    targets = _as_tensor(data.train.uv_maps, torch.device("cpu")) / float(data.image_size)  # (N, 3, H, W) normalised
    train = DeviceData(images, targets, device=device)  # resident on the GPU when it fits
    weights = _as_tensor(data.uv_weights, device)  # (H, W)
    n = len(train)
    local_batch = settings.batch_size // comm.world
    steps = len(batch_bounds(n // comm.world, local_batch))
    if steps == 0:
        raise ValueError(
            f"the training split must give every worker at least 2 samples, but it has {n} samples for "
            f"num_workers={comm.world}"
        )
    model = channels_last(task.model.to(device), settings.channels_last)
    if resume_state is not None:
        check_resume_state(resume_state, keys=_STATE_KEYS, epochs=settings.epochs)
        model.load_state_dict(resume_state["model"])
    precision = resolve_precision(settings.precision, gpu=device.type == "cuda")
    optimizer = torch.optim.Adam(model.parameters(), lr=settings.lr)
    start = load_resume_state(resume_state, optimizer=optimizer)
    if resume_state is not None and start > settings.epochs:  # saved after the final epoch: nothing left to train
        return dict(resume_state["metrics"])

    metrics: dict[str, Any] = {}
    for epoch in range(start, settings.epochs + 1):
        order = np.random.default_rng((settings.seed, epoch, _SHUFFLE_SALT)).permutation(n)
        shard = order[comm.rank : n // comm.world * comm.world : comm.world]  # step s of all ranks = one batch
        began = time.perf_counter()
        loss_sum, count, children_digest, allreduce_s = _train_epoch(
            task, optimizer, train, weights, shard, local_batch,
            first_step=(epoch - 1) * steps, comm=comm, precision=precision, nhwc=settings.channels_last,
        )  # fmt: skip
        elapsed = time.perf_counter() - began
        loss_sum, count = comm.sum_all(loss_sum, count)
        train_loss = loss_sum / count
        stop_if_diverged(train_loss, epoch, settings.epochs, publish)
        children_digests = _gather_ints(children_digest, comm, device)
        if len(set(children_digests)) > 1:  # all-reduced gradients of different children are garbage
            raise RuntimeError(f"workers drew different children in epoch {epoch}: digests {children_digests}")
        metrics = {
            "epoch": epoch,
            "epochs": settings.epochs,
            "train_loss": train_loss,
            **task.evaluate(model, epoch == settings.epochs),
            "samples_per_s": count / elapsed if elapsed > 0 else math.nan,
            "allreduce_s": allreduce_s,  # of this rank's epoch time spent in the gradient all-reduce (0 alone)
            "params": task.params,
            "children_digests": children_digests,
            "weights_digests": _gather_ints(_weights_digest(model), comm, device),
        }
        report_epoch(metrics, comm, on_epoch=on_epoch, publish=publish, model=model, optimizer=optimizer)
    return metrics


def _train_epoch(
    task: _Task,
    optimizer: torch.optim.Optimizer,
    train: DeviceData,
    weights: torch.Tensor,
    shard: np.ndarray,
    batch: int,
    *,
    first_step: int,
    comm: LocalComm,
    precision: str = "fp32",
    nhwc: bool = False,
) -> tuple[float, int, int, float]:
    """One pass over this rank's samples: (sum of per-sample losses, samples, digest of the children,
    seconds spent in the gradient all-reduce).

    The all-reduce seconds are wall time around the collective: on the CPU (gloo) it blocks, so they hold
    the transfer and the wait for the slower worker; on a GPU (NCCL) the call only enqueues, so they are
    near zero and the wait shows up in the next step's kernels instead.

    ``train``: images and normalised UV targets, (N, 3, H, W) each. The step loop never waits for the
    device: the loss and the workers' agreement on the children are kept on it and read once, at the end.

    Raises:
        RuntimeError: the workers computed gradients for different parameters in some step.
    """
    device = train.device
    order = torch.from_numpy(shard).to(train.home)
    loss_sum = torch.zeros((), dtype=torch.float64, device=device)
    disagreed = torch.zeros((), dtype=torch.bool, device=device)
    digest = hashlib.blake2b(digest_size=8)
    count = 0
    allreduce_s = 0.0
    task.model.train()
    for step, (start, end) in enumerate(batch_bounds(len(shard), batch), start=first_step):
        children = task.children(step)
        digest.update("|".join(_arch_key(c) for c in children).encode())
        x, target = train.take(order[start:end])
        loss = _accumulate(task.model, children, channels_last(x, nhwc), target, weights, precision)
        before = time.perf_counter()
        mismatch = _average_gradients(task.model, comm)
        if mismatch is not None:  # more than one worker: the collective ran
            allreduce_s += time.perf_counter() - before
            disagreed |= mismatch
        optimizer.step()
        loss_sum += loss.double() * (end - start)
        count += end - start
    if bool(disagreed):  # one device sync per epoch, not per step
        raise RuntimeError("workers computed gradients for different parameters: they drew different children")
    return float(loss_sum), count, _digest_int(digest), allreduce_s


def _accumulate(
    model: nn.Module,
    children: Sequence[Any],
    x: torch.Tensor,
    target: torch.Tensor,
    weights: torch.Tensor,
    precision: str = "fp32",
) -> torch.Tensor:
    """Algorithm 1's inner loop: the gradients of the children's mean loss on one batch, accumulated.

    ``x`` (b, 3, H, W), ``target`` (b, 3, H, W) normalised. Averaging (rather than summing) the K losses
    keeps the loss on the scale of one network's; Adam is invariant to the gradient's scale anyway.
    Returns the mean loss (detached). Parameters no child used keep ``grad = None``: Adam leaves them
    untouched, exactly as if they were not in the supernet this step.
    """
    for param in model.parameters():
        param.grad = None
    total = torch.zeros((), device=x.device)
    for child in children:
        with autocast(x.device, precision):
            pred = model(x) if child is None else model(x, child)  # (b, 3, H, W)
        loss = _weighted_mse(pred.float(), target, weights) / len(children)
        loss.backward()
        total += loss.detach()
    return total


def _average_gradients(model: nn.Module, comm: LocalComm) -> torch.Tensor | None:
    """Average the accumulated gradients over the workers: one all-reduce of one flat buffer per step.

    Every parameter takes part (zeros where this worker has no gradient) plus one presence flag per
    parameter, so the collective has the same size on every worker whatever the children, and cannot
    hang on a mismatch; a parameter with a gradient on some workers only means the workers drew different
    children, which the caller refuses: the returned boolean scalar (on the device, so that the step does
    not wait for it; None for a world of one) is True then. Which gradients are kept follows this worker's
    own presence flags (known on the host: no sync); parameters without a gradient stay at ``grad = None``.

    Why not DDP: the set of used parameters changes every step (``find_unused_parameters`` re-walks the
    graph each backward), the K backward passes would need ``no_sync`` for all but the last, and DDP
    re-broadcasts BN buffers every forward. One explicit all-reduce after accumulation does exactly the
    single-process update, with the gradient of the global batch.
    """
    if comm.world == 1:
        return None
    params = list(model.parameters())
    present = [p.grad is not None for p in params]
    flat = torch.cat(
        [(p.grad if p.grad is not None else torch.zeros_like(p)).reshape(-1) for p in params]
        + [torch.tensor(present, dtype=params[0].dtype, device=params[0].device)]
    )
    torch.distributed.all_reduce(flat)
    flags = flat[-len(params) :]
    offset = 0
    for param, flag in zip(params, present):
        size = param.numel()
        param.grad = flat[offset : offset + size].view_as(param) / comm.world if flag else None
        offset += size
    return ~((flags == 0) | (flags == comm.world)).all()


def _arch_key(arch: Any) -> str:
    return "-" if arch is None else arch.key()


def _digest_int(digest: Any) -> int:
    return int.from_bytes(digest.digest(), "big") >> 1  # 63 bits: fits an int64 tensor and a Parquet column


def _weights_digest(model: nn.Module) -> int:
    digest = hashlib.blake2b(digest_size=8)
    for param in model.parameters():
        digest.update(param.detach().cpu().numpy().tobytes())
    return _digest_int(digest)


def _gather_ints(value: int, comm: LocalComm, device: torch.device) -> list[int]:
    """``value`` of every rank, in rank order (``device``: where the process group expects tensors)."""
    if comm.world == 1:
        return [value]
    gathered = [torch.zeros(1, dtype=torch.int64, device=device) for _ in range(comm.world)]
    torch.distributed.all_gather(gathered, torch.tensor([value], dtype=torch.int64, device=device))
    return [int(t.item()) for t in gathered]


def _fit_in_process(
    make_task: Callable[[], _Task],
    data: AlignmentDataset,
    settings: SupernetSettings,
    *,
    device: str | None,
    resume_state: dict[str, Any] | None,
    on_epoch: OnEpoch | None,
    tensorboard_dir: str | None = None,
) -> dict[str, Any]:
    """:func:`_fit` in this process (a world of one); the task is built under the run's thread count."""
    where = torch.device(device) if device is not None else resolve_device(settings.use_gpu)
    with deterministic(settings.threads), _tensorboard(tensorboard_dir, resume_state) as board:
        return _fit(
            make_task(),
            data,
            settings,
            comm=LocalComm(),
            device=where,
            resume_state=resume_state,
            on_epoch=on_epoch,
            publish=board,
        )


# --------------------------------------------------------------------------------------------------
# Supernet training (in process)
# --------------------------------------------------------------------------------------------------


def _supernet_task(space: MultipathSpace, data: AlignmentDataset, settings: SupernetSettings) -> _Task:
    """The supernet, its per-step children and its per-epoch one-shot validation."""
    with torch.random.fork_rng(devices=[]):  # seed the init without touching the caller's global RNG
        torch.manual_seed(settings.seed)
        model = MultipathSupernet(layers=space.layers, scales=space.scales, channels=settings.channels)
    sample = SAMPLERS[settings.sampling]

    def children(step: int) -> list[Any]:
        return sample(space, settings.k_children, np.random.default_rng((settings.seed, step)))

    val_children = children(0)  # a fixed set (step 0's), so that epochs compare

    def evaluate(net: nn.Module, final: bool) -> dict[str, Any]:
        scores = [
            evaluate_child(net, child, data, "val", recalibration_batches=settings.bn_recalibration_batches,
                           batch_size=settings.batch_size, seed=settings.seed, precision=settings.precision,
                           nhwc=settings.channels_last)
            for child in val_children
        ]  # fmt: skip
        keys = [key for key in ("val_loss", "val_nme") if key in scores[0]]
        return {key: float(np.mean([score[key] for score in scores])) for key in keys}

    params = sum(p.numel() for p in model.parameters())
    return _Task(model=model, children=children, evaluate=evaluate, params=params)


def train_supernet(
    space: MultipathSpace,
    data: AlignmentDataset,
    settings: SupernetSettings,
    *,
    on_epoch: OnEpoch | None = None,
    resume_state: dict[str, Any] | None = None,
    tensorboard_dir: str | None = None,
    device: str | None = None,
) -> dict[str, Any]:
    """Train the supernet of ``space`` with MNUS (Algorithm 1) in this process.

    Every step draws K children (``settings.sampling``) from ``default_rng((seed, step))``, accumulates
    their gradients on the same batch and makes one Adam step.

    Args:
        space: the multi-path space (its ``layers`` and ``scales`` shape the supernet).
        data: an ``AlignmentDataset`` (its training split must have UV maps).
        settings: the training protocol; ``num_workers`` is ignored here (one process).
        on_epoch: ``on_epoch(metrics, state)`` after every epoch; ``state`` is ``{"epoch", "model",
            "optimizer", "metrics"}`` (copies), loadable with ``torch.load(weights_only=True)``.
        resume_state: such a state; training continues at the epoch after ``state["epoch"]``. It must
            come from a run with equal space, data and settings.
        tensorboard_dir: where to write a TensorBoard event file (scalars per epoch); None writes none.
        device: torch device; default :func:`trainables.device.resolve_device` of ``settings.use_gpu``.

    Returns:
        The final epoch's metrics: ``epoch``, ``epochs``, ``train_loss`` (mean over samples and the K
        children), ``val_loss`` and ``val_nme`` (%; means over the K children of step 0, a fixed set,
        each evaluated one-shot as :func:`evaluate_child` does), ``samples_per_s`` (training images per
        second, all workers together; each image passes through K children), ``params`` (of the whole supernet),
        ``children_digests`` and ``weights_digests`` (one per worker: a hash of the epoch's children and
        of the weights after it; equal on all workers).

    Raises:
        FloatingPointError: the training loss became NaN or infinite.
    """
    return _fit_in_process(
        lambda: _supernet_task(space, data, settings),
        data,
        settings,
        device=device,
        resume_state=resume_state,
        on_epoch=on_epoch,
        tensorboard_dir=tensorboard_dir,
    )


@contextlib.contextmanager
def _tensorboard(folder: str | None, resume_state: dict[str, Any] | None) -> Iterator[Publish | None]:
    """A ``publish`` hook writing the numeric metrics of each epoch as TensorBoard scalars (or None).

    On resume, ``purge_step`` makes TensorBoard drop what an interrupted run wrote after the saved epoch.
    """
    if folder is None:
        yield None
        return
    from torch.utils.tensorboard import SummaryWriter

    purge = int(resume_state["epoch"]) + 1 if resume_state is not None else None
    writer = SummaryWriter(log_dir=folder, purge_step=purge)

    def write(metrics: dict[str, Any], state: dict[str, Any] | None) -> None:
        if "diverged" in metrics:
            return
        for key, value in metrics.items():
            numeric = isinstance(value, (int, float)) and not isinstance(value, bool)
            if numeric and key not in ("epoch", "epochs"):
                writer.add_scalar(f"supernet/{key}", value, global_step=metrics["epoch"])
        writer.flush()

    try:
        yield write
    finally:
        writer.close()


# --------------------------------------------------------------------------------------------------
# Supernet training over Ray Train workers
# --------------------------------------------------------------------------------------------------


def train_supernet_distributed(
    space: MultipathSpace,
    data_spec: dict[str, Any],
    settings: SupernetSettings,
    *,
    storage_path: str,
    name: str,
    on_epoch: OnEpoch | None = None,
    tensorboard_dir: str | None = None,
    _fail_once: tuple[int, int, str] | None = None,
) -> dict[str, Any]:
    """Train the supernet data-parallel over ``settings.num_workers`` Ray Train workers.

    Each worker loads the data itself (``load_alignment_dataset(**data_spec)``: no arrays travel), takes
    its shard of every global batch (``batch_size // num_workers`` images), draws the same K children as
    every other worker (the generator is seeded by ``(seed, step)``), accumulates their gradients, and
    all-reduces the accumulated gradients once per step (:func:`_average_gradients`, not DDP); every
    worker then makes the same Adam step, so the weights stay identical (checked every epoch through
    ``weights_digests``). Every epoch rank 0 attaches a checkpoint (``state.pt``, the layout
    :func:`train_supernet` gives ``on_epoch``) and writes the TensorBoard scalars (Train workers write no
    event files themselves, DESIGN.md §6). The run lives in ``storage_path/name``: calling again with the
    same name (a retried Tune trial) resumes from its latest checkpoint, and ``FailureConfig(max_failures=2)``
    restarts failed workers from it. Called inside a Tune trial, every epoch is also reported to the trial.

    Args:
        space: the multi-path space.
        data_spec: keyword arguments of :func:`trainables.alignment.data.load_alignment_dataset`.
        settings: the training protocol, including ``num_workers``, ``use_gpu``, ``cpus_per_worker``.
        storage_path: where Ray Train keeps the run (shared storage on a multi-node cluster).
        name: the run's name, stable across retries of one trial so that it resumes.
        on_epoch: ``on_epoch(metrics, state)`` on the rank-0 worker after every epoch (pickled to it).
        tensorboard_dir: folder for rank 0's TensorBoard event files (shared storage on a cluster).
        _fail_once: test hook ``(rank, epoch, marker_file)``: unless the marker file exists, that rank
            writes the epoch's metrics to it as JSON and raises, after training the epoch and before
            its checkpoint.

    Returns:
        The final epoch's metrics (as :func:`train_supernet`) plus ``checkpoint_state``: the path of the final
        ``state.pt`` (for :func:`load_supernet`).

    Raises:
        FloatingPointError: the training loss became NaN or infinite (rank 0 leaves a terminal checkpoint
            holding ``diverged.txt``, so a retried trial stops at once instead of diverging again).
        ray.train.TrainingFailedError: the workers failed more than ``max_failures`` times.
    """
    config = {
        "space": space,
        "data_spec": dict(data_spec),
        "settings": settings,
        "on_epoch": on_epoch,
        "tensorboard_dir": tensorboard_dir,
        "fail_once": _fail_once,
    }
    return run_torch_trainer(_train_worker, config, settings, storage_path=storage_path, name=name)


def _train_worker(config: dict[str, Any]) -> None:
    """One Ray Train worker: resume from the run's checkpoint, load the data, train, report per epoch."""
    from trainables.alignment.data import load_alignment_dataset

    settings: SupernetSettings = config["settings"]

    def train(resume_state: dict[str, Any] | None, comm: LocalComm, device: torch.device) -> None:
        data = load_alignment_dataset(**config["data_spec"])
        board_dir = config["tensorboard_dir"] if comm.rank == 0 else None
        with deterministic(settings.threads), _tensorboard(board_dir, resume_state) as board:
            publish = _failing_once(make_publisher(comm, before_save=board), config["fail_once"], comm.rank)
            _fit(
                _supernet_task(config["space"], data, settings),
                data,
                settings,
                comm=comm,
                device=device,
                resume_state=resume_state,
                on_epoch=config["on_epoch"],
                publish=publish,
            )

    run_worker(train)


def _failing_once(publish: Publish, fail_once: tuple[int, int, str] | None, rank: int) -> Publish:
    """``publish`` behind the test hook ``_fail_once`` of :func:`train_supernet_distributed`."""
    if fail_once is None:
        return publish
    when, marker = tuple(fail_once[:2]), fail_once[2]

    def publish_or_fail(metrics: dict[str, Any], state: dict[str, Any] | None) -> None:
        if (rank, metrics["epoch"]) == when and not os.path.exists(marker):
            with open(marker, "w") as handle:
                json.dump(metrics, handle)
            raise RuntimeError(f"injected failure of rank {rank} at epoch {metrics['epoch']}")
        publish(metrics, state)

    return publish_or_fail


# --------------------------------------------------------------------------------------------------
# Stand-alone retraining of one child
# --------------------------------------------------------------------------------------------------


def train_standalone(
    arch: Any,
    data: AlignmentDataset,
    settings: SupernetSettings,
    *,
    on_epoch: OnEpoch | None = None,
    resume_state: dict[str, Any] | None = None,
    device: str | None = None,
) -> dict[str, Any]:
    """Train the child ``arch`` from scratch (Adam, the UV loss) and test it after the final epoch.

    The network is ``MultipathSupernet(...).child_model(arch)`` (fresh init seeded by ``settings.seed``;
    ``channels`` from ``settings``), so it has exactly the modules the child has in the supernet.
    ``k_children``, ``sampling`` and ``bn_recalibration_batches`` do not apply (the child keeps its own
    BN statistics). ``on_epoch`` and ``resume_state`` work as in :func:`train_supernet`.

    Returns:
        The final epoch's metrics: ``epoch``, ``epochs``, ``train_loss``, ``val_loss``, ``val_nme`` (%),
        ``samples_per_s``, ``params`` (of the child), the digests, and from the test split ``test_nme``,
        ``nme_by_yaw`` (dict by yaw bin), ``nme_mean`` (mean of the bins), ``dense_nme`` and ``test_loss``.
    """
    return _fit_in_process(
        lambda: _standalone_task(arch, data, settings),
        data,
        settings,
        device=device,
        resume_state=resume_state,
        on_epoch=on_epoch,
    )


def _standalone_task(arch: Any, data: AlignmentDataset, settings: SupernetSettings) -> _Task:
    """The child alone (one arch-free pass a step), its validation per epoch and its test at the end."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(settings.seed)
        supernet = MultipathSupernet(layers=arch.layers, scales=arch.scales, channels=settings.channels)
        child = supernet.child_model(arch)

    def evaluate(net: nn.Module, final: bool) -> dict[str, Any]:
        device = next(net.parameters()).device
        precision = resolve_precision(settings.precision, gpu=device.type == "cuda")
        weights = cached_on_device(data.uv_weights, device)

        def forward(x: torch.Tensor) -> torch.Tensor:
            return net(channels_last(x, settings.channels_last))

        net.eval()
        try:
            splits = ("val", "test") if final else ("val",)
            preds = {
                name: _predict(forward, cached_on_device(getattr(data, name).images, device), precision)
                for name in splits
            }
        finally:
            net.train()
        metrics = _split_metrics(preds["val"], data.val, data, weights, "val")
        metrics = {key: metrics[key] for key in ("val_loss", "val_nme") if key in metrics}
        if final:
            metrics.update(_split_metrics(preds["test"], data.test, data, weights, "test"))
        return metrics

    return _Task(
        model=child,
        children=lambda step: [None],
        evaluate=evaluate,
        params=sum(p.numel() for p in child.parameters()),
    )
