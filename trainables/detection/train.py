"""Train and evaluate one face detector for a (hyper-parameter, architecture) configuration.

Paper: ``hyperfd-online-automl-face-detection-supplement.txt`` §B.1 (training and evaluation) and
Table 2 (what the HPO configuration controls):

- anchor matching: positive when IoU >= ``iou_pos``, negative when IoU < ``iou_pos / 2 + 0.05``,
  ignored in between; every face also claims its best anchor (so small faces are never unmatched);
- loss = classification (sigmoid cross-entropy over positives and mined negatives) + ``loc_weight`` x
  smooth-L1 box loss over positives, both divided by the number of positives;
- hard-negative mining keeps the ``neg_pos_ratio`` x (positives) highest-loss negatives per image;
- augmentation: random square crop keeping a side fraction in ``[min_crop, 1]`` (faces whose centre
  leaves the crop are dropped), resized back, and a horizontal flip;
- optimizer: SGD (momentum 0.9, weight decay 5e-4) or Adam, cosine learning-rate decay;
- model selection: validation AP@50 after every ``eval_every`` epochs; the best model in history is
  evaluated on test (§B.1 "We select the best model in history and evaluate it on test dataset").

Scaled down from the paper (up to 1000 epochs at 640 px, with pre-training) to a CPU: 64 px images, about
a dozen epochs of 120 images, training from scratch. Measured on the 2-core development machine under
heavy load (other processes: load average 15 to 25), MobileNetV2 backbone, batch 8, 10 epochs: about
20 CPU seconds a run; val / test AP@50 0.43 / 0.39 on ``plain``.
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from search_algos.spaces.detector import DetectorArch, HpoConfig
from trainables.checks import integer_problem
from trainables.detection.data import DetectionDataset, DetectionSplit
from trainables.detection.metrics import ap50
from trainables.detection.model import FaceDetector, decode_boxes, encode_boxes
from trainables.device import (
    DeviceData,
    autocast,
    cached_on_device,
    channels_last,
    precision_problems,
    resolve_device,
    resolve_precision,
    to_device,
)
from trainables.train_loop import deterministic

__all__ = ["DetectorFit", "augment_batch", "detect", "detection_loss", "fit_detector", "match_anchors"]

_SGD_MOMENTUM, _SGD_WEIGHT_DECAY = 0.9, 5e-4
_MAX_DETECTIONS = 100  # per image, before NMS
_MIN_SCORE = 0.01
_MIN_BOX_SIDE = 2.0  # pixels; smaller faces left after a crop are dropped


@dataclass(frozen=True)
class DetectorFit:
    """What one training run yields (plain numbers: it goes to the benchmark store as is).

    Attributes:
        val_ap50: best validation AP@50 (in [0, 1]) over the evaluated epochs.
        test_ap50: test AP@50 of the model of that epoch.
        best_epoch: the epoch (1-based) of the selected model.
        epochs: epochs trained.
        train_loss: mean training loss of the last epoch.
        cost_s: wall-clock seconds of the whole run (training and evaluation).
        cpu_s: CPU seconds of this process over the run (close to ``cost_s`` on an idle machine with
            ``threads=1``; unlike it, hardly inflated when other processes share the cores).
        params: trainable parameters.
    """

    val_ap50: float
    test_ap50: float
    best_epoch: int
    epochs: int
    train_loss: float
    cost_s: float
    cpu_s: float
    params: int

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


# --------------------------------------------------------------------------------------------------
# Matching and loss
# --------------------------------------------------------------------------------------------------


def _iou(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """(N, 4) x (M, 4) -> (N, M) IoU."""
    lt = torch.maximum(a[:, None, :2], b[None, :, :2])
    rb = torch.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = (rb - lt).clamp(min=0).prod(dim=2)
    area_a = (a[:, 2:] - a[:, :2]).clamp(min=0).prod(dim=1)
    area_b = (b[:, 2:] - b[:, :2]).clamp(min=0).prod(dim=1)
    return inter / (area_a[:, None] + area_b[None, :] - inter).clamp(min=1e-9)


def match_anchors(
    anchors: torch.Tensor, faces: torch.Tensor, iou_pos: float, iou_neg: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """Assign anchors to faces.

    Args:
        anchors: (N, 4) xyxy.
        faces: (M, 4) xyxy ground truth (M may be 0).
        iou_pos, iou_neg: thresholds (Table 2: ``iou_neg = iou_pos / 2 + 0.05``).

    Returns:
        ``labels`` (N,) int64: 1 positive, 0 negative, -1 ignored; ``target`` (N,) int64: the face each
        anchor is matched to (its best overlap; meaningful where ``labels == 1``).
    """
    n = anchors.shape[0]
    if faces.shape[0] == 0:
        return torch.zeros(n, dtype=torch.int64), torch.zeros(n, dtype=torch.int64)
    iou = _iou(anchors, faces)  # (N, M)
    best_iou, target = iou.max(dim=1)
    labels = torch.full((n,), -1, dtype=torch.int64)
    labels[best_iou < iou_neg] = 0
    labels[best_iou >= iou_pos] = 1
    # Each face claims its best anchor, even below iou_pos (later faces win a shared anchor).
    best_anchor = iou.argmax(dim=0)  # (M,)
    labels[best_anchor] = 1
    target[best_anchor] = torch.arange(faces.shape[0])
    return labels, target


def detection_loss(
    logits: torch.Tensor,
    offsets: torch.Tensor,
    anchors: torch.Tensor,
    faces: Sequence[torch.Tensor],
    hpo: HpoConfig,
) -> tuple[torch.Tensor, dict[str, float]]:
    """RetinaFace-style loss of a batch (see the module docstring).

    Args:
        logits: (B, N) face logits; offsets: (B, N, 4); anchors: (N, 4); faces: B tensors (M_i, 4).
        hpo: supplies ``iou_pos``, ``iou_neg``, ``neg_pos_ratio`` and ``loc_weight``.

    Returns:
        ``(loss, parts)`` with ``parts = {"cls": float, "loc": float, "positives": float}``.
    """
    targets = _match_batch(anchors.cpu(), [gt.cpu() for gt in faces], hpo, logits.device)
    cls, loc = _loss_terms(logits, offsets, targets)
    loss = cls + hpo.loc_weight * loc
    return loss, {"cls": float(cls.detach()), "loc": float(loc.detach()), "positives": float(targets.n_pos)}


@dataclass(frozen=True)
class _BatchTargets:
    """What the loss of one batch needs from its faces, matched on the host and moved to the device.

    Matching and hard-negative counts have data-dependent sizes: done on the host, they cost the device
    step no wait (on a GPU the loss then runs without a device-to-host sync).

    Attributes:
        labels: (B, N) float, 1 for a positive anchor (the classification target), else 0.
        negative: (B, N) bool, the anchors that may be mined as negatives.
        positive: B index tensors (P_b,) of the positive anchors, ascending.
        wanted: B tensors (P_b, 4), the encoded boxes the positives regress to.
        hard: B counts of mined negatives, ``min(negatives, neg_pos_ratio * max(P_b, 1))``.
        n_pos: sum of the P_b.
    """

    labels: torch.Tensor
    negative: torch.Tensor
    positive: list[torch.Tensor]
    wanted: list[torch.Tensor]
    hard: list[int]
    n_pos: int


def _match_batch(
    anchors: torch.Tensor, faces: Sequence[torch.Tensor], hpo: HpoConfig, device: torch.device
) -> _BatchTargets:
    """Match every image's faces to the anchors on the host (``anchors`` (N, 4) and ``faces`` on the CPU)."""
    labels, negative, positive, wanted, hard = [], [], [], [], []
    for gt in faces:
        matched, target = match_anchors(anchors, gt, hpo.iou_pos, hpo.iou_neg)
        pos, neg = matched == 1, matched == 0
        index = pos.nonzero().squeeze(1)  # (P,) ascending: the order boolean indexing gives
        labels.append(pos.float())
        negative.append(neg)
        positive.append(index)
        wanted.append(encode_boxes(gt[target[index]], anchors[index]))  # (P, 4)
        hard.append(min(int(neg.sum()), hpo.neg_pos_ratio * max(len(index), 1)))
    sizes = [len(index) for index in positive]
    # One copy per kind for the whole batch; the per-image parts are views of it.
    flat_index = to_device(torch.cat(positive), device).split(sizes)
    flat_wanted = to_device(torch.cat(wanted), device).split(sizes)
    return _BatchTargets(
        labels=to_device(torch.stack(labels), device),
        negative=to_device(torch.stack(negative), device),
        positive=list(flat_index),
        wanted=list(flat_wanted),
        hard=hard,
        n_pos=sum(sizes),
    )


def _loss_terms(
    logits: torch.Tensor, offsets: torch.Tensor, targets: _BatchTargets
) -> tuple[torch.Tensor, torch.Tensor]:
    """The classification and box terms (each divided by the positives) of a batch; no device sync.

    ``logits`` (B, N) and ``offsets`` (B, N, 4) in float32.
    """
    cls_terms, loc_terms = [], []
    for b, (index, wanted, k) in enumerate(zip(targets.positive, targets.wanted, targets.hard)):
        per_anchor = F.binary_cross_entropy_with_logits(logits[b], targets.labels[b], reduction="none")  # (N,)
        if k:
            hard = per_anchor.detach().masked_fill(~targets.negative[b], -1.0).topk(k).indices
        else:
            hard = torch.empty(0, dtype=torch.int64, device=logits.device)
        cls_terms.append(per_anchor[index].sum() + per_anchor[hard].sum())
        if len(index):
            loc_terms.append(F.smooth_l1_loss(offsets[b][index], wanted, reduction="sum"))
    norm = max(targets.n_pos, 1)
    cls = torch.stack(cls_terms).sum() / norm
    loc = torch.stack(loc_terms).sum() / norm if loc_terms else offsets.sum() * 0.0
    return cls, loc


# --------------------------------------------------------------------------------------------------
# Augmentation
# --------------------------------------------------------------------------------------------------


def augment_batch(
    images: torch.Tensor, faces: Sequence[torch.Tensor], min_crop: float, generator: torch.Generator
) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """Random square crop (side fraction in ``[min_crop, 1]``) resized back, and a random flip.

    Args:
        images: (B, 3, S, S), on any device; faces: B tensors (M_i, 4) pixel xyxy, on the CPU.
        generator: a CPU generator; the random draws (B numbers each) stay on the host, so the crops and
            the boxes do not depend on the device the pixels are resampled on.

    Returns:
        The augmented (B, 3, S, S) images (on the images' device) and their boxes on the CPU (faces whose
        centre left the crop, or that became thinner than 2 px, are dropped; the rest are clipped to the crop).
    """
    b, _, size, _ = images.shape
    scale = min_crop + (1 - min_crop) * torch.rand(b, generator=generator)  # (B,) side fraction
    x0 = (1 - scale) * torch.rand(b, generator=generator) * size  # (B,) crop corner, pixels
    y0 = (1 - scale) * torch.rand(b, generator=generator) * size
    flip = torch.rand(b, generator=generator) < 0.5
    sign = torch.where(flip, -1.0, 1.0)
    # affine_grid maps output coords on [-1, 1] to input coords: x_in = a x_out + t.
    theta = torch.zeros(b, 2, 3)
    theta[:, 0, 0] = scale * sign
    theta[:, 0, 2] = 2 * x0 / size - 1 + scale
    theta[:, 1, 1] = scale
    theta[:, 1, 2] = 2 * y0 / size - 1 + scale
    grid = F.affine_grid(to_device(theta, images.device).to(images.dtype), list(images.shape), align_corners=False)
    out = F.grid_sample(images, grid, mode="bilinear", padding_mode="border", align_corners=False)
    boxes = []
    for i, gt in enumerate(faces):
        side = float(scale[i]) * size
        cx, cy = (gt[:, 0] + gt[:, 2]) / 2, (gt[:, 1] + gt[:, 3]) / 2
        inside = (cx >= x0[i]) & (cx < x0[i] + side) & (cy >= y0[i]) & (cy < y0[i] + side)
        g = gt[inside].clone()
        g[:, [0, 2]] = ((g[:, [0, 2]] - x0[i]) / float(scale[i])).clamp(0, size)
        g[:, [1, 3]] = ((g[:, [1, 3]] - y0[i]) / float(scale[i])).clamp(0, size)
        if flip[i]:
            g[:, [0, 2]] = size - g[:, [2, 0]]
        keep = ((g[:, 2] - g[:, 0]) >= _MIN_BOX_SIDE) & ((g[:, 3] - g[:, 1]) >= _MIN_BOX_SIDE)
        boxes.append(g[keep])
    return out, boxes


# --------------------------------------------------------------------------------------------------
# Inference and evaluation
# --------------------------------------------------------------------------------------------------


def _normalise(images: torch.Tensor) -> torch.Tensor:
    return (images - 0.5) / 0.25


@torch.no_grad()
def detect(
    model: FaceDetector,
    images: torch.Tensor,
    *,
    batch: int = 64,
    precision: str = "fp32",
    nhwc: bool = False,
) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Raw detections (before NMS) per image: top boxes (K, 4) clipped to the image, scores (K,).

    ``images`` (N, 3, S, S) on the model's device; the forward pass runs at ``precision``; each batch's
    top detections are read back to the host once.
    """
    model.eval()
    boxes_out, scores_out = [], []
    size = images.shape[-1]
    for start in range(0, len(images), batch):
        with autocast(images.device, precision):
            logits, offsets = model(channels_last(_normalise(images[start : start + batch]), nhwc))
        scores = torch.sigmoid(logits.float())  # (b, N)
        boxes = decode_boxes(offsets.float(), model.anchors).clamp(0, size)  # (b, N, 4)
        k = min(_MAX_DETECTIONS, scores.shape[1])
        top, index = scores.topk(k, dim=1)
        top, index, boxes = top.cpu(), index.cpu(), boxes.cpu()  # one read-back a batch; no copy on the CPU
        for s, i, bx in zip(top, index, boxes):
            keep = s >= _MIN_SCORE
            boxes_out.append(bx[i[keep]].double().numpy())
            scores_out.append(s[keep].double().numpy())
    return boxes_out, scores_out


def _evaluate(
    model: FaceDetector, split: DetectionSplit, device: torch.device, precision: str = "fp32", nhwc: bool = False
) -> float:
    images = cached_on_device(split.images, device)  # (N, 3, S, S); on a GPU copied once per run, not per epoch
    boxes, scores = detect(model, images, precision=precision, nhwc=nhwc)
    return ap50(boxes, scores, list(split.boxes), nms_iou=0.4)


# --------------------------------------------------------------------------------------------------
# Training
# --------------------------------------------------------------------------------------------------


def fit_detector(
    data: DetectionDataset,
    hpo: HpoConfig,
    arch: DetectorArch,
    *,
    epochs: int = 12,
    seed: int = 0,
    batch_size: int = 8,
    width_mult: float = 1.0,
    eval_every: int = 3,
    threads: int = 1,
    use_gpu: bool = False,
    precision: str = "auto",
    channels_last: bool = False,
    device: str | None = None,
    on_epoch: Callable[[dict[str, float]], None] | None = None,
) -> DetectorFit:
    """Train a :class:`FaceDetector` of ``arch`` on ``data.train`` with ``hpo``; AP@50 on val and test.

    Args:
        data: the detection task (train / val / test).
        hpo: the Table 2 configuration.
        arch: the Table 3 backbone.
        epochs: training epochs (also the cosine schedule's length).
        seed: seeds initialisation, shuffling and augmentation (same seed, same result on one machine).
        batch_size: images per step.
        width_mult: scales Table 3's widths (1.0: as in the table, the paper's channels x 0.5 variant).
        eval_every: validate every this many epochs (and after the last one).
        threads: torch intra-op threads for the run.
        use_gpu: train on this process's GPU (:func:`trainables.device.resolve_device`).
        precision: ``"auto"`` (bf16 on a GPU, fp32 on the CPU), ``"fp32"`` or ``"bf16"`` (autocast of the
            forward passes; the loss and the optimizer stay in fp32).
        channels_last: NHWC memory layout for the convolutions (faster with bf16 on recent GPUs).
        device: torch device; default :func:`trainables.device.resolve_device` of ``use_gpu``.
        on_epoch: called after each epoch with ``{"epoch", "train_loss", "val_ap50"}`` (``val_ap50`` is
            NaN on epochs without validation).

    Returns:
        A :class:`DetectorFit`.

    Raises:
        FloatingPointError: the training loss of an epoch became NaN or infinite (the evaluation counts as
            failed).
        ValueError: bad arguments (all problems at once).
        RuntimeError: ``use_gpu`` but no CUDA device is visible.
    """
    problems = []
    for name, value, low in (("epochs", epochs, 1), ("batch_size", batch_size, 2), ("eval_every", eval_every, 1),
                             ("threads", threads, 1)):  # fmt: skip
        problem = integer_problem(name, value, low)
        if problem:
            problems.append(problem)
    if not (isinstance(width_mult, (int, float)) and 0 < width_mult <= 4):
        problems.append(f"width_mult must be a number in (0, 4], got {width_mult!r}")
    if len(data.train) < 2:
        problems.append(f"the train split needs at least 2 images, got {len(data.train)}")
    for name, value in (("use_gpu", use_gpu), ("channels_last", channels_last)):
        if not isinstance(value, bool):
            problems.append(f"{name} must be a bool, got {value!r}")
    problems += precision_problems(precision)
    if problems:
        raise ValueError("invalid fit_detector arguments: " + "; ".join(problems))
    where = torch.device(device) if device is not None else resolve_device(use_gpu)
    precision = resolve_precision(precision, gpu=where.type == "cuda")
    with deterministic(threads):
        return _fit(data, hpo, arch, epochs, seed, batch_size, width_mult, eval_every, where, on_epoch,
                    precision=precision, nhwc=channels_last)  # fmt: skip


def _fit(
    data: DetectionDataset,
    hpo: HpoConfig,
    arch: DetectorArch,
    epochs: int,
    seed: int,
    batch_size: int,
    width_mult: float,
    eval_every: int,
    device: torch.device,
    on_epoch: Callable[[dict[str, float]], None] | None,
    *,
    precision: str,
    nhwc: bool,
) -> DetectorFit:
    """Setup -> per epoch: train (no device sync in the step loop), validate every ``eval_every`` -> test the best."""
    start, start_cpu = time.perf_counter(), time.process_time()
    torch.manual_seed(seed)
    generator = torch.Generator().manual_seed(seed)
    model = channels_last(FaceDetector(arch, image_size=data.image_size, width_mult=width_mult).to(device), nhwc)
    params = sum(p.numel() for p in model.parameters() if p.requires_grad)
    if hpo.optimizer == "sgd":
        optimizer: torch.optim.Optimizer = torch.optim.SGD(
            model.parameters(), lr=hpo.lr, momentum=_SGD_MOMENTUM, weight_decay=_SGD_WEIGHT_DECAY, foreach=True
        )
    else:  # foreach: one fused update over all tensors; the per-tensor loop costs ~8 ms a step on a CPU
        optimizer = torch.optim.Adam(model.parameters(), lr=hpo.lr, foreach=True)
    n_train = len(data.train)
    batch_size = min(batch_size, n_train)
    steps_per_epoch = n_train // batch_size  # the last partial batch is dropped (BatchNorm needs >= 2)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=epochs * steps_per_epoch)
    # The pixels resident on the device when they fit; boxes, matching and random draws stay on the host.
    train = DeviceData(torch.from_numpy(np.array(data.train.images)), device=device)  # (N, 3, S, S); a writable copy
    faces = [torch.tensor(np.asarray(b, dtype=np.float32)).reshape(-1, 4) for b in data.train.boxes]
    anchors = model.anchors.cpu()  # (N_anchors, 4), for matching on the host

    best = (-math.inf, 0, None)  # (val AP, epoch, state)
    train_loss = math.nan
    for epoch in range(1, epochs + 1):
        model.train()
        order = torch.randperm(n_train, generator=generator)
        total = torch.zeros((), dtype=torch.float64, device=device)  # summed on the device, read once an epoch
        for step in range(steps_per_epoch):
            rows = order[step * batch_size : (step + 1) * batch_size]
            (pixels,) = train.take(rows)
            x, gt = augment_batch(pixels, [faces[int(r)] for r in rows], hpo.min_crop, generator)
            targets = _match_batch(anchors, gt, hpo, device)
            with autocast(device, precision):
                logits, offsets = model(channels_last(_normalise(x), nhwc))
            cls, loc = _loss_terms(logits.float(), offsets.float(), targets)
            loss = cls + hpo.loc_weight * loc
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.step()
            total += loss.detach().double()
        epoch_total = float(total)
        if not math.isfinite(epoch_total):
            raise FloatingPointError(f"training diverged: loss={epoch_total} at epoch {epoch}")
        train_loss = epoch_total / steps_per_epoch
        val = math.nan
        if epoch % eval_every == 0 or epoch == epochs:
            val = _evaluate(model, data.val, device, precision, nhwc)
            if math.isfinite(val) and val > best[0]:
                best = (val, epoch, copy.deepcopy(model.state_dict()))
        if on_epoch is not None:
            on_epoch({"epoch": float(epoch), "train_loss": train_loss, "val_ap50": val})
    val_ap, best_epoch, state = best
    if state is not None:
        model.load_state_dict(state)
    test_ap = _evaluate(model, data.test, device, precision, nhwc)
    return DetectorFit(
        val_ap50=float(val_ap) if math.isfinite(val_ap) else math.nan,
        test_ap50=float(test_ap),
        best_epoch=int(best_epoch),
        epochs=epochs,
        train_loss=float(train_loss),
        cost_s=time.perf_counter() - start,
        cpu_s=time.process_time() - start_cpu,
        params=int(params),
    )
