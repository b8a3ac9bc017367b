#!/usr/bin/env python
"""GPU throughput of every trainable, fp32 vs bf16, and how busy the GPU is (issue 14, deliverable 3).

Usage::

    python benchmarks/gpu.py [--quick] [--out FILE.json]      # about 3 minutes on one GPU (--quick: 1)

On a machine without CUDA it prints one line saying so and exits 0, writing nothing. With CUDA it
measures, on the first GPU, each trainable's real step loop (the code a trial runs, through
:mod:`trainables.device`) at a realistic batch, in fp32 and in bf16 autocast, and samples the GPU's busy
share while it runs; with N >= 2 GPUs also the supernet on 1 vs N Ray Train workers (NCCL). It writes
``{NAME: {"value", "unit", "goal", "holds", "detail"}}`` like ``benchmarks/run.py`` (atomically):

- ``candidate``, ``supernet``: value = the GPU's busy share (%) in bf16 (the GPU default), goal 60;
  ``detail`` has images/s and busy share of fp32, bf16 and bf16 + channels_last, and the bf16 speed-up.
- ``oneshot_eval``, ``detector``, ``rnas_mer_fold``, ``rnas_mer_search``: value = bf16 / fp32 throughput
  (images/s; clips/s for RNAS-MER), goal 1.0; ``detail`` as above. RNAS-MER's entries measure a LOSO
  fold step of a decoded network and a search step of the supernet with the device rule applied around
  them (model and clips on the GPU, the forward under autocast).
- ``supernet_train_scaling`` (N >= 2 GPUs): value = samples/s of N workers / 1 worker, goal 0.8 N.

Busy share: ``torch.cuda.utilization`` (NVML, through ``pynvml``) sampled every 50 ms in a thread while
the timed steps run; without NVML, the share of the wall time the profiler saw CUDA kernels running on a
separate pass (``detail.busy_source`` says which). Throughputs are medians of ``rounds`` timed passes
after warm-up steps; every figure is measured side by side in this one run.

Every ``measure_*`` function takes ``device`` ("cuda" by default; "cpu" runs the same code, for the tests)
and its sizes, so ``tests/test_benchmarks_gpu.py`` runs them on a CPU at tiny sizes.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import inspect
import math
import os
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any

_ROOT = Path(__file__).resolve().parents[1]
if str(_ROOT) not in sys.path:  # run as `python benchmarks/gpu.py` from anywhere
    sys.path.insert(0, str(_ROOT))

import numpy as np  # noqa: E402
import torch  # noqa: E402

__all__ = [
    "Throughput",
    "main",
    "measure_candidate",
    "measure_detector",
    "measure_oneshot",
    "measure_rnas",
    "measure_supernet",
    "measure_supernet_scaling",
    "run_all",
]

_PROG = "benchmarks/gpu.py"
BUSY_GOAL = 60.0  # % of the wall time the GPU runs kernels, on the supernet and candidate paths
PRECISIONS = ("fp32", "bf16")


@dataclass(frozen=True)
class Throughput:
    """One measurement: items (images or clips) per second and the GPU's busy share while it ran.

    Attributes:
        items_per_s: median over the timed rounds.
        busy: share of the time the GPU was busy (0..1), None when not measured (the CPU, or no source).
        busy_source: ``nvml`` (sampled utilisation), ``profiler`` (kernel time / wall time), or why none.
        items: items per timed round.
        rounds: timed rounds.
    """

    items_per_s: float
    busy: float | None
    busy_source: str
    items: int
    rounds: int

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


# --------------------------------------------------------------------------------------------------
# Timing and the busy share
# --------------------------------------------------------------------------------------------------


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class _BusySampler:
    """NVML utilisation of ``device`` sampled in a thread while the block runs (mean over the samples)."""

    def __init__(self, device: torch.device, interval: float = 0.05) -> None:
        self.device, self.interval = device, interval
        self.samples: list[float] = []
        self.source = self._probe()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _probe(self) -> str:
        if self.device.type != "cuda":
            return "not measured on the CPU"
        try:
            torch.cuda.utilization(self.device)
        except Exception as exc:  # no pynvml / NVML: the caller falls back to the profiler
            return f"no NVML ({type(exc).__name__})"
        return "nvml"

    def _run(self) -> None:
        while not self._stop.is_set():
            self.samples.append(float(torch.cuda.utilization(self.device)))
            self._stop.wait(self.interval)

    def __enter__(self) -> _BusySampler:
        if self.source == "nvml":
            self._thread = threading.Thread(target=self._run, daemon=True)
            self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()

    @property
    def share(self) -> float | None:
        return statistics.fmean(self.samples) / 100.0 if self.samples else None


def _kernel_share(run: Callable[[], int], device: torch.device) -> tuple[float | None, str]:
    """Kernel time / wall time of one ``run()`` under the profiler (the fallback without NVML)."""
    try:
        from torch.profiler import ProfilerActivity, profile

        with profile(activities=[ProfilerActivity.CUDA]) as prof:
            began = time.perf_counter()
            run()
            _sync(device)
            wall = time.perf_counter() - began
        kernel_us = 0.0
        for event in prof.events():
            if str(getattr(event, "device_type", "")).endswith("CUDA"):
                kernel_us += float(getattr(event, "device_time_total", getattr(event, "cuda_time_total", 0.0)))
        return min(1.0, kernel_us / 1e6 / wall), "profiler"
    except Exception as exc:  # a profiler without CUPTI: say so instead of failing the benchmark
        return None, f"no NVML, profiler failed ({type(exc).__name__})"


def _measure(run: Callable[[], int], device: torch.device, *, warmup: Callable[[], object], rounds: int) -> Throughput:
    """Throughput of ``run`` (returns the items it processed) over ``rounds`` passes after ``warmup()``.

    Under the trials' own settings (:func:`trainables.train_loop.deterministic` with one thread:
    deterministic cuDNN kernels, no autotuning), so the figures are what a trial gets.
    """
    from trainables.train_loop import deterministic

    with deterministic(1):
        warmup()
        _sync(device)
        rates = []
        with _BusySampler(device) as sampler:
            for _ in range(rounds):
                began = time.perf_counter()
                items = run()
                _sync(device)
                rates.append(items / (time.perf_counter() - began))
        busy, source = sampler.share, sampler.source
        if busy is None and device.type == "cuda":
            busy, source = _kernel_share(run, device)
    return Throughput(statistics.median(rates), busy, source, items, rounds)


@contextlib.contextmanager
def _seeded(seed: int = 0) -> Iterator[None]:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        yield


# --------------------------------------------------------------------------------------------------
# The trainables' step loops
# --------------------------------------------------------------------------------------------------


def measure_candidate(
    device: str = "cuda",
    *,
    precision: str = "bf16",
    channels_last: bool = False,
    batch: int = 256,
    image_size: int = 32,
    depth: int = 10,
    width: int = 64,
    steps: int = 40,
    warmup: int = 5,
    rounds: int = 3,
) -> Throughput:
    """Images/s of the candidate CNN's training step loop (``trainables.classification.train._train_epoch``).

    CIFAR-sized by default (3 x 32 x 32, batch 256, a 10-layer ``sep`` network of width 64); the data is
    resident on the device (:class:`trainables.device.DeviceData`), as in a trial.
    """
    from search_algos.spaces.global_space import GlobalArch
    from trainables.classification.model import build_global_cnn
    from trainables.classification.train import _train_epoch
    from trainables.device import DeviceData
    from trainables.device import channels_last as nhwc

    where = torch.device(device)
    with _seeded():
        model = build_global_cnn(GlobalArch.uniform(depth, width), in_channels=3, num_classes=10)
        x = torch.randn(batch * steps, 3, image_size, image_size)  # (N, 3, S, S)
        y = torch.randint(0, 10, (batch * steps,))
    model = nhwc(model.to(where), channels_last)
    data = DeviceData(x, y, device=where)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.025, momentum=0.9, weight_decay=3e-4)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=10**9)

    def run(count: int = steps) -> int:
        order = np.arange(batch * count)
        _train_epoch(model, optimizer, scheduler, data, order, None, batch, 0, precision=precision, nhwc=channels_last)
        return len(order)

    return _measure(run, where, warmup=lambda: run(warmup), rounds=rounds)


def _alignment_data(n: int, image_size: int, seed: int = 0) -> SimpleNamespace:
    """An ``AlignmentDataset``-shaped synthetic set (random images, smooth UV maps, 68 landmarks)."""
    rng = np.random.default_rng(seed)
    rows, cols = np.mgrid[0:image_size, 0:image_size].astype(np.float32)
    landmark_uv = rng.integers(image_size // 4, 3 * image_size // 4, size=(68, 2))  # (68, 2) (row, col)
    weights = np.full((image_size, image_size), 3.0, dtype=np.float32)
    weights[landmark_uv[:, 0], landmark_uv[:, 1]] = 16.0

    def split(count: int) -> SimpleNamespace:
        shift = rng.uniform(-4, 4, size=(count, 1, 1)).astype(np.float32)
        uv = np.stack([cols + shift, rows - shift, np.zeros_like(rows) + shift], axis=1)  # (n, 3, H, W)
        images = rng.random((count, 3, image_size, image_size), dtype=np.float32)
        landmarks = uv[:, :, landmark_uv[:, 0], landmark_uv[:, 1]].transpose(0, 2, 1)  # (n, 68, 3)
        yaw = rng.uniform(-90, 90, size=count).astype(np.float32)
        return SimpleNamespace(images=images, uv_maps=uv.astype(np.float32), landmarks=landmarks.astype(np.float32),
                               yaw=yaw, has_uv=True)  # fmt: skip

    return SimpleNamespace(train=split(n), val=split(max(2, n // 2)), test=split(2), image_size=image_size,
                           uv_weights=weights, landmark_uv=landmark_uv, dataset_id="gpu-bench", name="gpu-bench")  # fmt: skip


def measure_supernet(
    device: str = "cuda",
    *,
    precision: str = "bf16",
    channels_last: bool = False,
    batch: int = 32,
    image_size: int = 64,
    layers: int = 6,
    scales: int = 4,
    channels: int = 16,
    k_children: int = 4,
    steps: int = 12,
    warmup: int = 2,
    rounds: int = 3,
) -> Throughput:
    """Images/s of the MONAS supernet's MNUS step loop (``trainables.alignment.train._train_epoch``).

    Each image passes through ``k_children`` children per step (Algorithm 1); images/s counts images.
    """
    from search_algos.spaces.multipath import MultipathSpace, mnus_children
    from trainables.alignment.model import MultipathSupernet
    from trainables.alignment.train import _Task, _train_epoch
    from trainables.device import DeviceData
    from trainables.device import channels_last as nhwc
    from trainables.train_loop import LocalComm

    where = torch.device(device)
    space = MultipathSpace(layers=layers, scales=scales)
    data = _alignment_data(batch * steps, image_size)
    with _seeded():
        model = MultipathSupernet(layers=layers, scales=scales, channels=channels)
    model = nhwc(model.to(where), channels_last)
    train = DeviceData(torch.from_numpy(data.train.images), torch.from_numpy(data.train.uv_maps) / image_size,
                       device=where)  # fmt: skip
    weights = torch.from_numpy(data.uv_weights).to(where)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    task = _Task(model=model, children=lambda step: mnus_children(space, k_children, np.random.default_rng((0, step))),
                 evaluate=lambda net, final: {}, params=0)  # fmt: skip

    def run(count: int = steps) -> int:
        shard = np.arange(batch * count)
        _train_epoch(task, optimizer, train, weights, shard, batch, first_step=0, comm=LocalComm(),
                     precision=precision, nhwc=channels_last)  # fmt: skip
        return len(shard)

    return _measure(run, where, warmup=lambda: run(warmup), rounds=rounds)


def measure_oneshot(
    device: str = "cuda",
    *,
    precision: str = "bf16",
    images: int = 256,
    image_size: int = 64,
    layers: int = 6,
    scales: int = 4,
    channels: int = 16,
    children: int = 4,
    recalibration_batches: int = 4,
    rounds: int = 3,
) -> Throughput:
    """Validation images/s of one-shot evaluation (``trainables.alignment.train.evaluate_child``, BN recalibrated).

    Each round scores ``children`` children on a split of ``images`` images, NME included (as a trial does).
    """
    from search_algos.spaces.multipath import MultipathSpace
    from trainables.alignment.model import MultipathSupernet
    from trainables.alignment.train import evaluate_child

    where = torch.device(device)
    space = MultipathSpace(layers=layers, scales=scales)
    data = _alignment_data(2 * images, image_size)  # val split: `images` images
    with _seeded():
        model = MultipathSupernet(layers=layers, scales=scales, channels=channels).to(where)
    archs = [space.sample(np.random.default_rng(i)) for i in range(children)]

    def run(count: int = children) -> int:
        for arch in archs[:count]:
            evaluate_child(model, arch, data, "val", recalibration_batches=recalibration_batches, batch_size=32,
                           precision=precision)  # fmt: skip
        return count * len(data.val.images)

    return _measure(run, where, warmup=lambda: run(1), rounds=rounds)


def measure_detector(
    device: str = "cuda",
    *,
    precision: str = "bf16",
    channels_last: bool = False,
    batch: int = 32,
    image_size: int = 128,
    steps: int = 10,
    width_mult: float = 1.0,
    rounds: int = 3,
) -> Throughput:
    """Training images/s of the HyperFD detector (``fit_detector``: augmentation, matching, loss, step).

    Times whole epochs of :func:`trainables.detection.train.fit_detector` between its ``on_epoch`` calls
    (validation only after the last one), on synthetic images with 1-4 random faces each; MobileNetV2.
    """
    from search_algos.spaces.detector import DetectorArch, HpoConfig
    from trainables.detection.data import DetectionDataset, DetectionSplit
    from trainables.detection.train import fit_detector

    where = torch.device(device)
    rng = np.random.default_rng(0)

    def split(count: int) -> DetectionSplit:
        boxes = []
        for _ in range(count):
            side = rng.uniform(0.15, 0.5, size=(rng.integers(1, 5), 1)) * image_size
            corner = rng.uniform(0, image_size - side, size=(len(side), 2))
            boxes.append(np.concatenate([corner, corner + side], axis=1).astype(np.float32))
        return DetectionSplit(images=rng.random((count, 3, image_size, image_size), dtype=np.float32),
                              boxes=tuple(boxes))  # fmt: skip

    data = DetectionDataset(name="gpu-bench", domain="plain", image_size=image_size, dataset_id="det-gpu-bench",
                            train=split(batch * steps), val=split(4), test=split(4))  # fmt: skip
    stamps: list[float] = []
    epochs = rounds + 2  # the first epoch warms up, the last one also validates: neither is timed
    fit_detector(data, HpoConfig.default(), DetectorArch.mobilenet_v2(), epochs=epochs, batch_size=batch,
                 width_mult=width_mult, eval_every=10**6, threads=1, device=str(where),
                 precision=precision, channels_last=channels_last,
                 on_epoch=lambda metrics: (_sync(where), stamps.append(time.perf_counter())))  # fmt: skip
    # on_epoch of the last epoch comes after its validation: time the epochs before it.
    rates = [batch * steps / (b - a) for a, b in zip(stamps[:-2], stamps[1:-1])] or [math.nan]
    busy, source = None, "not measured on the CPU"
    if where.type == "cuda":  # one more epoch, sampled (the rates above are the unsampled ones)
        with _BusySampler(where) as sampler:
            fit_detector(data, HpoConfig.default(), DetectorArch.mobilenet_v2(), epochs=2, batch_size=batch,
                         width_mult=width_mult, eval_every=10**6, device=str(where), precision=precision,
                         channels_last=channels_last)  # fmt: skip
        busy, source = sampler.share, sampler.source
    return Throughput(statistics.median(rates), busy, source, batch * steps, len(rates))


def measure_rnas(
    device: str = "cuda",
    *,
    precision: str = "bf16",
    batch: int = 16,
    frames: int = 8,
    image_size: int = 32,
    channels: int = 8,
    cells: int = 6,
    nodes: int = 4,
    levels: int = 4,
    steps: int = 6,
    warmup: int = 1,
    rounds: int = 3,
) -> dict[str, Throughput]:
    """RNAS-MER clips/s: ``{"fold": a LOSO fold step of the decoded network, "search": a search step}``.

    The device rule is applied around RNAS-MER's own code (model and clips on ``device``, the forward
    passes under :func:`trainables.device.autocast`): the fold step is ``fit_fold``'s (Adam, cross-entropy,
    no host read-back), the search step is :func:`trainables.microexpr.train.search_step` itself (it reads its
    two losses back, as the search loop does).
    """
    import torch.nn.functional as F

    from trainables.device import autocast
    from trainables.microexpr.model import RnasNetwork, RnasSupernet, SupernetSpec
    from trainables.microexpr.train import search_step

    where = torch.device(device)
    spec = SupernetSpec(channels=channels, cells=cells, nodes=nodes, levels=levels)
    with _seeded():
        supernet = RnasSupernet(spec)
        network = RnasNetwork(supernet.genotype(), channels=channels, num_classes=spec.num_classes)
        clips = torch.randn(batch * steps, 1, frames, image_size, image_size)  # (N, 1, T, H, W)
        labels = torch.randint(0, spec.num_classes, (batch * steps,))
    clips, labels = clips.to(where), labels.to(where)
    supernet, network = supernet.to(where), network.to(where)
    w_opt = torch.optim.SGD(supernet.weight_parameters(), lr=0.025, momentum=0.9, weight_decay=3e-4)
    a_opt = torch.optim.Adam(supernet.arch_parameters(), lr=3e-3, betas=(0.5, 0.999), weight_decay=1e-3)
    f_opt = torch.optim.Adam(network.parameters(), lr=2e-3, weight_decay=1e-4)

    def batches(count: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        for i in range(count):
            yield clips[i * batch : (i + 1) * batch], labels[i * batch : (i + 1) * batch]

    def fold(count: int = steps) -> int:
        network.train()
        for x, y in batches(count):
            f_opt.zero_grad(set_to_none=True)
            with autocast(where, precision):
                logits = network(x)
            F.cross_entropy(logits.float(), y).backward()
            f_opt.step()
        return count * batch

    # search_step's own precision argument once it has one (the device rule applied inside); else around it.
    own_precision = "precision" in inspect.signature(search_step).parameters

    def search(count: int = steps) -> int:
        pairs = list(batches(count))
        for i, pair in enumerate(pairs):
            other = pairs[(i + 1) % len(pairs)]
            if own_precision:
                search_step(supernet, w_opt, a_opt, pair, other, precision=precision)
            else:
                with autocast(where, precision):
                    search_step(supernet, w_opt, a_opt, pair, other)
        return count * batch

    return {
        "fold": _measure(fold, where, warmup=lambda: fold(warmup), rounds=rounds),
        "search": _measure(search, where, warmup=lambda: search(warmup), rounds=rounds),
    }


def measure_supernet_scaling(
    workers: int,
    *,
    use_gpu: bool = True,
    batch: int = 32,
    image_size: int = 64,
    n_train: int = 512,
    epochs: int = 2,
    layers: int = 6,
    scales: int = 4,
    channels: int = 16,
) -> float:
    """Training samples/s of the supernet over ``workers`` Ray Train workers (the last epoch's, all workers).

    Starts (and stops) a local Ray on 127.0.0.1 with every local GPU; each worker loads the generated
    ``faces3d`` set itself, as in a trial.
    """
    import logging

    for key, value in (("RAY_AUTH_MODE", "disabled"), ("RAY_USAGE_STATS_ENABLED", "0"), ("RAY_TRAIN_V2_ENABLED", "1"),
                       ("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")):  # fmt: skip
        os.environ.setdefault(key, value)
    import ray

    from search_algos.spaces.multipath import MultipathSpace
    from trainables.alignment.train import SupernetSettings, train_supernet_distributed

    settings = SupernetSettings(epochs=epochs, batch_size=batch * workers, channels=channels, num_workers=workers,
                                use_gpu=use_gpu, cpus_per_worker=1.0, bn_recalibration_batches=1)  # fmt: skip
    data_spec = {"name": "faces3d", "image_size": image_size, "n_train": n_train, "n_val": 16, "n_test": 16}
    ray.init(address="local", num_cpus=max(2, workers + 1), _node_ip_address="127.0.0.1", include_dashboard=False,
             logging_level=logging.ERROR, log_to_driver=False, namespace="facenas-gpu-bench")  # fmt: skip
    try:
        with tempfile.TemporaryDirectory() as folder:
            metrics = train_supernet_distributed(MultipathSpace(layers=layers, scales=scales), data_spec, settings,
                                                 storage_path=folder, name=f"scaling-{workers}")  # fmt: skip
    finally:
        ray.shutdown()
    return float(metrics["samples_per_s"])


# --------------------------------------------------------------------------------------------------
# The run
# --------------------------------------------------------------------------------------------------


def _sizes(quick: bool) -> dict[str, dict[str, Any]]:
    """Realistic batches; ``quick`` times fewer steps (the same batches)."""
    steps = 0.5 if quick else 1.0
    return {
        "candidate": {"steps": int(40 * steps)},
        "supernet": {"steps": int(12 * steps)},
        "oneshot": {"children": 2 if quick else 4},
        "detector": {"steps": int(10 * steps)},
        "rnas": {"steps": int(6 * steps)},
    }


def _variants(measure: Callable[..., Throughput], *, layout: bool, **sizes: Any) -> dict[str, dict[str, Any]]:
    out = {precision: measure(precision=precision, **sizes).to_dict() for precision in PRECISIONS}
    if layout:
        out["bf16_channels_last"] = measure(precision="bf16", channels_last=True, **sizes).to_dict()
    return out


def _busy_figure(name: str, variants: dict[str, dict[str, Any]], unit: str) -> dict[str, Any]:
    busy = variants["bf16"]["busy"]
    value = None if busy is None else 100.0 * busy
    return {
        "value": value,
        "unit": "% GPU busy (bf16)",
        "goal": BUSY_GOAL,
        "holds": value is not None and value >= BUSY_GOAL,
        "detail": {**variants, "bf16_speedup": _ratio(variants), "throughput_unit": unit},
    }


def _speedup_figure(variants: dict[str, dict[str, Any]], unit: str) -> dict[str, Any]:
    ratio = _ratio(variants)
    return {
        "value": ratio,
        "unit": f"ratio bf16 / fp32 ({unit})",
        "goal": 1.0,
        "holds": math.isfinite(ratio) and ratio >= 1.0,
        "detail": {**variants, "throughput_unit": unit},
    }


def _ratio(variants: dict[str, dict[str, Any]]) -> float:
    fp32, bf16 = variants["fp32"]["items_per_s"], variants["bf16"]["items_per_s"]
    return bf16 / fp32 if fp32 and math.isfinite(fp32) and math.isfinite(bf16) else math.nan


def run_all(device: str = "cuda", *, quick: bool = False, progress: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Every figure of the module docstring, as ``{NAME: {"value", "unit", "goal", "holds", "detail"}}``."""
    say = progress or (lambda text: print(f"[gpu] {text}", file=sys.stderr, flush=True))
    sizes = _sizes(quick)
    results: dict[str, Any] = {}
    say("candidate CNN (3x32x32, batch 256)")
    results["candidate"] = _busy_figure("candidate", _variants(measure_candidate, layout=True, device=device,
                                                               **sizes["candidate"]), "images/s")  # fmt: skip
    say("MONAS supernet, MNUS K=4 (3x64x64, batch 32)")
    results["supernet"] = _busy_figure("supernet", _variants(measure_supernet, layout=True, device=device,
                                                             **sizes["supernet"]), "images/s")  # fmt: skip
    say("one-shot evaluation (256 val images a child)")
    results["oneshot_eval"] = _speedup_figure(_variants(measure_oneshot, layout=False, device=device,
                                                        **sizes["oneshot"]), "images/s")  # fmt: skip
    say("HyperFD detector (MobileNetV2, 3x128x128, batch 32)")
    results["detector"] = _speedup_figure(_variants(measure_detector, layout=True, device=device,
                                                    **sizes["detector"]), "images/s")  # fmt: skip
    say("RNAS-MER fold and search steps (1x8x32x32 clips, batch 16)")
    rnas = {precision: measure_rnas(device, precision=precision, **sizes["rnas"]) for precision in PRECISIONS}
    for part in ("fold", "search"):
        variants = {precision: rnas[precision][part].to_dict() for precision in PRECISIONS}
        results[f"rnas_mer_{part}"] = _speedup_figure(variants, "clips/s")
    gpus = torch.cuda.device_count() if torch.device(device).type == "cuda" else 0
    if gpus >= 2:
        say(f"supernet on 1 vs {gpus} Ray Train workers (NCCL)")
        one, many = measure_supernet_scaling(1), measure_supernet_scaling(gpus)
        results["supernet_train_scaling"] = {
            "value": many / one, "unit": f"ratio samples/s {gpus} workers / 1", "goal": 0.8 * gpus,
            "holds": many / one >= 0.8 * gpus, "detail": {"samples_per_s_1": one, f"samples_per_s_{gpus}": many},
        }
    return results


def _device_info() -> dict[str, Any]:
    props = torch.cuda.get_device_properties(0)
    return {"name": props.name, "memory_gib": props.total_memory / 2**30, "count": torch.cuda.device_count(),
            "torch": torch.__version__, "cuda": torch.version.cuda, "bf16": torch.cuda.is_bf16_supported()}  # fmt: skip


def _load_run_script() -> Any:
    """``benchmarks/run.py`` as a module (by path: ``benchmarks`` is not an installed package)."""
    spec = importlib.util.spec_from_file_location("facenas_benchmarks_run", Path(__file__).with_name("run.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=_PROG, description="GPU throughput and busy share of every facenas trainable.")
    p.add_argument("--quick", action="store_true", help="fewer timed steps (about a minute)")
    p.add_argument("--out", default="gpu.json", metavar="FILE.json", help="where to write the figures (default gpu.json)")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """CLI entry point: 0 (also without CUDA: one line, no figures), 1 when a measurement raised."""
    args = _parser().parse_args(argv)
    if not torch.cuda.is_available():
        print(f"{_PROG}: no CUDA device (torch {torch.__version__}); nothing measured, no figures written")
        return 0
    started = time.perf_counter()
    try:
        results = run_all("cuda", quick=args.quick)
    except Exception as exc:  # one line, then the traceback for whoever runs it
        import traceback

        traceback.print_exc()
        print(f"{_PROG}: {type(exc).__name__}: {exc}".splitlines()[0], file=sys.stderr)
        return 1
    for result in results.values():
        result["detail"]["run_info"] = {"device": _device_info(), "seconds": time.perf_counter() - started,
                                        "quick": args.quick}  # fmt: skip
    run = _load_run_script()  # its JSON conventions: strict JSON (NaN -> null), written atomically
    run.write_json_atomic(run._jsonable(results), Path(args.out))
    for name, result in results.items():
        print(f"{name}: {result['value']} {result['unit']} (goal {result['goal']}) holds={result['holds']}")
    print(f"{_PROG}: wrote {args.out} in {time.perf_counter() - started:.0f} s", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
