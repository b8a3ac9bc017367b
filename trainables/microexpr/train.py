"""RNAS-MER training: the bilevel search (Algorithm 1, search and decode stages) and LOSO retraining.

Paper: ``rnas-mer-micro-expression-nas.txt``, Algorithm 1. Search: the clips are split by subject into
Train A and Train B; every step first updates the weights ``w`` on a batch of A, then ``alpha, eta,
beta`` on a batch of B (first-order alternation, as DARTS's first-order variant). After every epoch the
supernet's UAR on B is measured and the genotype decoded (Viterbi path, top-2 cell). Training stage:
the decoded network (or the baseline) is trained on all subjects but one and predicts the held-out
subject's clips (leave-one-subject-out); the caller pools the predictions over folds.

Both loops know nothing of Tune: they call ``on_epoch(metrics, state)`` after every epoch (the caller
checkpoints ``state`` and reports), and continue from ``resume_state`` (a state passed to ``on_epoch``).
Raises ``FloatingPointError`` when the loss diverges. Both follow the device rule of
:mod:`trainables.device`: ``use_gpu`` trains on the trial's GPU with the clips resident there,
``precision`` (``auto``: bf16 on a GPU, fp32 on the CPU) runs the forward passes under autocast, and the
step loops read no value back from the device (losses are summed there and read once per epoch).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from search_algos.spaces.rnas import RnasGenotype
from trainables.device import DeviceData, autocast, resolve_device, resolve_precision
from trainables.microexpr.data import MicroExprDataset, subject_split
from trainables.microexpr.metrics import uar, uf1
from trainables.microexpr.model import RnasSupernet, SupernetSpec

__all__ = ["FoldSettings", "SearchSettings", "fit_fold", "run_search", "search_step"]

OnEpoch = Callable[[dict[str, Any], dict[str, Any]], None]

# The loops' random streams, per (seed, epoch) so a resumed run draws what an uninterrupted one does:
# batches from ``numpy.random.default_rng([seed, epoch])``, the horizontal flips from a torch generator
# seeded with :func:`_flip_seed`.
_FLIP_SEED_STRIDE = 1000  # epochs per seed in the flip seeds: distinct (seed, epoch) below 1000 epochs


def _flip_seed(seed: int, epoch: int) -> int:
    """The seed of epoch ``epoch``'s flip generator: ``seed * 1000 + epoch`` (the values always used)."""
    return seed * _FLIP_SEED_STRIDE + epoch


@dataclass(frozen=True)
class SearchSettings:
    """The search's optimisation (DARTS defaults where the paper is silent).

    Attributes:
        epochs: search epochs.
        batch_size: clips per step, on A and on B.
        lr, momentum, weight_decay: SGD on the weights ``w`` (cosine-annealed).
        arch_lr, arch_weight_decay: Adam (betas 0.5, 0.999) on ``alpha, eta, beta``.
        split_fraction: share of the subjects in Train A.
        seed: weight init, batches and the A/B split.
    """

    epochs: int = 6
    batch_size: int = 8
    lr: float = 0.025
    momentum: float = 0.9
    weight_decay: float = 3e-4
    arch_lr: float = 3e-3
    arch_weight_decay: float = 1e-3
    split_fraction: float = 0.5
    seed: int = 0


@dataclass(frozen=True)
class FoldSettings:
    """Training of one LOSO fold (Adam, cosine-annealed; light augmentation by horizontal flips)."""

    epochs: int = 15
    batch_size: int = 8
    lr: float = 2e-3
    weight_decay: float = 1e-4
    seed: int = 0


def _batches(rows: np.ndarray, batch: int, rng: np.random.Generator) -> list[np.ndarray]:
    order = rng.permutation(rows)
    return [order[i:i + batch] for i in range(0, len(order), batch)]


def _clips(ds: MicroExprDataset, device: torch.device) -> DeviceData:
    """The clips ``(N, 1, T, H, W)`` and labels ``(N,)``, resident on ``device`` when they fit."""
    return DeviceData(torch.from_numpy(ds.clips), torch.from_numpy(ds.labels), device=device)


def _take(clips: DeviceData, rows: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
    x, y = clips.take(torch.from_numpy(np.asarray(rows)))
    return x, y


def _flip(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Mirror each clip left-right with probability 1/2 (the three classes are left-right symmetric).

    The coin flips come from the CPU generator ``gen`` (the same on every device, so resumable)."""
    mask = (torch.rand(x.shape[0], generator=gen) < 0.5).to(x.device)
    return torch.where(mask.view(-1, 1, 1, 1, 1), x.flip(-1), x)


@torch.no_grad()
def _predict(model: nn.Module, clips: DeviceData, rows: np.ndarray, batch: int, precision: str = "fp32") -> np.ndarray:
    model.eval()
    out = []
    for i in range(0, len(rows), batch):
        x, _ = _take(clips, rows[i:i + batch])
        with autocast(x.device, precision):
            logits = model(x)
        out.append(logits.argmax(dim=1))
    return torch.cat(out).cpu().numpy() if out else np.zeros(0, dtype=np.int64)


def _check_loss(loss: float, epoch: int) -> None:
    if not math.isfinite(loss):
        raise FloatingPointError(f"loss became {loss} in epoch {epoch}; lower the learning rate")


def _loss(model: nn.Module, batch: tuple[torch.Tensor, torch.Tensor], optimisers: tuple[torch.optim.Optimizer, ...],
          precision: str = "fp32") -> torch.Tensor:
    """Cross-entropy of ``batch`` with fresh gradients (every optimiser's gradients cleared first)."""
    for opt in optimisers:
        opt.zero_grad(set_to_none=True)
    x, y = batch
    with autocast(x.device, precision):
        logits = model(x)
    loss = F.cross_entropy(logits.float(), y)  # in fp32 (a no-op cast under fp32)
    loss.backward()
    return loss.detach()


def search_step(model: RnasSupernet, w_opt: torch.optim.Optimizer, a_opt: torch.optim.Optimizer,
                batch_a: tuple[torch.Tensor, torch.Tensor], batch_b: tuple[torch.Tensor, torch.Tensor], *,
                precision: str = "fp32") -> tuple[torch.Tensor, torch.Tensor]:
    """One alternation of Algorithm 1: ``w`` on a batch of A, then ``alpha, eta, beta`` on a batch of B.

    Returns the two detached losses where they were computed (reading them is the caller's device sync).
    """
    model.train()
    loss_w = _loss(model, batch_a, (w_opt, a_opt), precision)
    nn.utils.clip_grad_norm_(model.weight_parameters(), 5.0)
    w_opt.step()
    loss_a = _loss(model, batch_b, (w_opt, a_opt), precision)
    a_opt.step()
    return loss_w, loss_a


def _search_optimisers(model: RnasSupernet, s: SearchSettings) -> tuple[torch.optim.Optimizer, torch.optim.Optimizer, Any]:
    w_opt = torch.optim.SGD(model.weight_parameters(), lr=s.lr, momentum=s.momentum, weight_decay=s.weight_decay)
    a_opt = torch.optim.Adam(model.arch_parameters(), lr=s.arch_lr, betas=(0.5, 0.999), weight_decay=s.arch_weight_decay)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(w_opt, T_max=s.epochs, eta_min=s.lr * 0.05)
    return w_opt, a_opt, schedule


def run_search(ds: MicroExprDataset, spec: SupernetSpec, settings: SearchSettings, *,
               on_epoch: OnEpoch | None = None, resume_state: dict[str, Any] | None = None,
               use_gpu: bool = False, precision: str = "auto") -> dict[str, Any]:
    """Search for ``settings.epochs`` epochs; returns the last epoch's metrics.

    Every epoch's metrics (passed to ``on_epoch`` and kept in ``state["history"]``) are the search
    diagnostics: ``train_loss`` / ``arch_loss`` (means over the epoch's steps on A and B), ``train_uar``
    (supernet on A, eval mode), ``val_uar`` / ``val_uf1`` / ``val_acc`` (on B), the architecture
    entropies (:meth:`RnasSupernet.entropy`) and the decoded ``genotype`` (JSON). ``use_gpu`` and
    ``precision`` as :mod:`trainables.device` (not part of ``settings``: where a search runs does not
    change what it is).
    """
    device = resolve_device(use_gpu)
    precision = resolve_precision(precision, gpu=device.type == "cuda")
    torch.manual_seed(settings.seed)
    model = RnasSupernet(spec).to(device)
    clips = _clips(ds, device)
    w_opt, a_opt, schedule = _search_optimisers(model, settings)
    rows_a, rows_b = subject_split(ds.subjects, settings.seed, settings.split_fraction)
    start, history = 1, []
    if resume_state is not None:
        model.load_state_dict(resume_state["model"])  # onto the model's device
        w_opt.load_state_dict(resume_state["w_opt"])
        a_opt.load_state_dict(resume_state["a_opt"])
        schedule.load_state_dict(resume_state["schedule"])
        start = int(resume_state["epoch"]) + 1
        history = [dict(h) for h in resume_state["history"]]
    metrics: dict[str, Any] = dict(history[-1]) if history else {}
    for epoch in range(start, settings.epochs + 1):
        rng = np.random.default_rng([settings.seed, epoch])  # batches depend on (seed, epoch): resumable
        gen = torch.Generator().manual_seed(_flip_seed(settings.seed, epoch))
        batches_a = _batches(rows_a, settings.batch_size, rng)
        batches_b = _batches(rows_b, settings.batch_size, rng)
        steps = max(len(batches_a), len(batches_b))
        sums = torch.zeros(2, dtype=torch.float64, device=device)  # summed on the device: no sync per step
        for i in range(steps):
            xa, ya = _take(clips, batches_a[i % len(batches_a)])
            xb, yb = _take(clips, batches_b[i % len(batches_b)])
            lw, la = search_step(model, w_opt, a_opt, (_flip(xa, gen), ya), (_flip(xb, gen), yb), precision=precision)
            sums += torch.stack([lw, la]).double()
        mean_w, mean_a = (sums / steps).tolist()
        _check_loss(mean_w + mean_a, epoch)
        schedule.step()
        predicted = _predict(model, clips, rows_b, settings.batch_size, precision)
        truth = ds.labels[rows_b]
        train_predicted = _predict(model, clips, rows_a, settings.batch_size, precision)
        genotype = model.genotype()
        metrics = {
            "epoch": epoch, "train_loss": mean_w, "arch_loss": mean_a,
            "train_uar": uar(ds.labels[rows_a], train_predicted, ds.num_classes),
            "val_uar": uar(truth, predicted, ds.num_classes), "val_uf1": uf1(truth, predicted, ds.num_classes),
            "val_acc": float(np.mean(truth == predicted)), **model.entropy(), "genotype": genotype.to_json(),
        }
        history.append(metrics)
        state = {"epoch": epoch, "model": model.state_dict(), "w_opt": w_opt.state_dict(),
                 "a_opt": a_opt.state_dict(), "schedule": schedule.state_dict(), "history": history}
        if on_epoch is not None:
            on_epoch(dict(metrics), state)
    return metrics


def fit_fold(make_model: Callable[[], nn.Module], ds: MicroExprDataset, train_rows: np.ndarray, test_rows: np.ndarray,
             settings: FoldSettings, *, on_epoch: OnEpoch | None = None,
             resume_state: dict[str, Any] | None = None, use_gpu: bool = False, precision: str = "auto") -> dict[str, Any]:
    """Train on ``train_rows``, predict ``test_rows`` (Algorithm 1's training stage, one subject left out).

    ``use_gpu`` and ``precision`` as :mod:`trainables.device`.

    Returns:
        ``{"epoch", "train_loss", "predicted": list[int], "truth": list[int], "fold_acc"}``.
    """
    device = resolve_device(use_gpu)
    precision = resolve_precision(precision, gpu=device.type == "cuda")
    torch.manual_seed(settings.seed)
    model = make_model().to(device)
    clips = _clips(ds, device)
    opt = torch.optim.Adam(model.parameters(), lr=settings.lr, weight_decay=settings.weight_decay)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=settings.epochs)
    start = 1
    if resume_state is not None:
        model.load_state_dict(resume_state["model"])
        opt.load_state_dict(resume_state["opt"])
        schedule.load_state_dict(resume_state["schedule"])
        start = int(resume_state["epoch"]) + 1
    result: dict[str, Any] = dict(resume_state["result"]) if resume_state is not None else {}
    for epoch in range(start, settings.epochs + 1):
        model.train()
        rng = np.random.default_rng([settings.seed, epoch])
        gen = torch.Generator().manual_seed(_flip_seed(settings.seed, epoch))
        loss_sum, steps = torch.zeros((), dtype=torch.float64, device=device), 0
        for rows in _batches(train_rows, settings.batch_size, rng):
            if len(rows) < 2:  # BatchNorm needs two clips
                continue
            x, y = _take(clips, rows)
            opt.zero_grad(set_to_none=True)
            with autocast(device, precision):
                logits = model(_flip(x, gen))
            loss = F.cross_entropy(logits.float(), y)
            loss.backward()
            opt.step()
            loss_sum += loss.detach().double()  # read once per epoch, not per step
            steps += 1
        train_loss = float(loss_sum) / steps if steps else math.nan
        if steps:
            _check_loss(train_loss, epoch)  # a diverged step makes the epoch's mean non-finite
        schedule.step()
        predicted = _predict(model, clips, test_rows, settings.batch_size, precision)
        truth = ds.labels[test_rows]
        result = {"epoch": epoch, "train_loss": train_loss,
                  "predicted": [int(p) for p in predicted], "truth": [int(t) for t in truth],
                  "fold_acc": float(np.mean(predicted == truth)) if len(truth) else math.nan}
        state = {"epoch": epoch, "model": model.state_dict(), "opt": opt.state_dict(),
                 "schedule": schedule.state_dict(), "result": result}
        if on_epoch is not None:
            on_epoch(dict(result), state)
    return result


def settings_dict(settings: SearchSettings | FoldSettings) -> dict[str, Any]:
    return asdict(settings)
