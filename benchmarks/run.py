#!/usr/bin/env python
"""Performance and search-quality benchmarks of facenas (DESIGN.md §3, "Benchmarks").

Usage::

    python benchmarks/run.py [--quick] [--only NAME ...] --out FILE.json

Writes ``{NAME: {"value", "unit", "goal", "holds", "detail"}}`` atomically. Every figure is a ratio (or a
relative improvement) measured side by side inside this one run, never an absolute time compared with
another run; where a quantity is repeated the median is quoted. A benchmark that raises gets
``{"error": "...", "holds": false}`` and the script exits 1 after writing the file; an unknown ``--only``
name is a one-line error listing the valid names, exit 2. Progress goes to stderr.

A benchmark is a function ``fn(quick: bool) -> dict`` added to :data:`BENCHMARKS` with
``@register("name")`` (one line per new benchmark). The Efficient Global NAS ones
(``papers/efficient-global-nas-macro-micro.txt``):

- ``ranking_static_vs_dynamic``: §3.2, Spearman correlation with the final ranking of the static
  (1 epoch each) and the dynamic (epochs growing with parameter count) rankings.
- ``speculative_speedup``: wall time of the macro-micro search stage, sequential / speculative, on a
  2-node local cluster, with the same final architecture.
- ``macro_micro_ri`` (``quality_bench.py``): Relative Improvement (§4.1) of the searched network over
  random networks and over random networks of its size, seeds 0-2, on cluttered digits.
- ``monas_samos_vs_random`` (``quality_bench.py``): SAMOS against random search at equal one-shot
  evaluations, on one-shot and retrained NME, with Kendall tau MNUS vs uniform, seeds 0-2.
- ``hyperfd_vs_reference`` (``quality_bench.py``): Table 7, HyperFD's normalized rank against the
  reference domain's best config and random picks on both spaces, mean ± std over the orders.

``--only`` also takes a group name (:data:`GROUPS`): ``quality`` (does each search beat its simple
alternative), ``performance`` (the CPU figures with goals: one-shot throughput, Train scaling, store
lookups, searcher overhead, speculation), ``scale`` (how cost grows with work).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import numbers
import os
import statistics
import sys
import tempfile
import time
import traceback
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

__all__ = ["BENCHMARKS", "Benchmark", "main", "register", "run_benchmarks", "spread"]

Benchmark = Callable[[bool], dict[str, Any]]
"""``fn(quick) -> {"value": float, "unit": str, "goal": float, "holds": bool, "detail": dict}``."""

BENCHMARKS: dict[str, Benchmark] = {}
# ``--only GROUP`` runs these (in this order); a group name is never a benchmark name.
GROUPS: dict[str, tuple[str, ...]] = {
    # does each search beat its simple alternative
    "quality": ("macro_micro_ri", "monas_samos_vs_random", "hyperfd_vs_reference", "ranking_static_vs_dynamic"),
    # the CPU performance figures with goals, measured side by side in one run
    "performance": ("oneshot_eval_throughput", "train_scaling_2w", "store_lookups", "searcher_overhead",
                    "speculative_speedup"),
}
RESULT_KEYS = ("value", "unit", "goal", "holds", "detail")

_PROG = "benchmarks/run.py"

# Set before Ray is imported (Ray reads them at import or init). RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0 makes
# Ray resolve "127.0.0.1" to itself: otherwise ray.init(address="127.0.0.1:port") and _node_ip_address are
# rewritten to the machine's outward IP, where a Cluster whose nodes listen on 127.0.0.1 does not answer.
_RAY_ENV = {
    "RAY_AUTH_MODE": "disabled",
    "RAY_USAGE_STATS_ENABLED": "0",
    "RAY_TRAIN_V2_ENABLED": "1",
    "RAY_DISABLE_DOCKER_CPU_WARNING": "1",
    "RAY_AIR_NEW_OUTPUT": "0",
    "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0",
}


def register(name: str) -> Callable[[Benchmark], Benchmark]:
    """Add a benchmark to :data:`BENCHMARKS` under ``name``.

    Raises:
        ValueError: ``name`` is taken.
    """

    def add(fn: Benchmark) -> Benchmark:
        if name in BENCHMARKS:
            raise ValueError(
                f"benchmark {name!r} is already registered (by {BENCHMARKS[name].__name__}); pick another name"
            )
        BENCHMARKS[name] = fn
        return fn

    return add


def _progress(name: str, text: str) -> None:
    print(f"[{name}] {text}", file=sys.stderr, flush=True)


def spread(values: Sequence[float]) -> dict[str, Any]:
    """A repeated measurement's median and spread: ``{"median", "min", "max", "q1", "q3", "iqr", "rounds",
    "values"}`` (quartiles by the inclusive method; with one value all equal it).

    Raises:
        ValueError: ``values`` is empty.
    """
    xs = sorted(float(v) for v in values)
    if not xs:
        raise ValueError("spread() needs at least one value")
    q1, _, q3 = statistics.quantiles(xs, n=4, method="inclusive") if len(xs) > 1 else (xs[0],) * 3
    return {"median": statistics.median(xs), "min": xs[0], "max": xs[-1], "q1": q1, "q3": q3, "iqr": q3 - q1,
            "rounds": len(xs), "values": [float(v) for v in values]}  # fmt: skip


# --------------------------------------------------------------------------------------------------
# Runner
# --------------------------------------------------------------------------------------------------


def _check_result(name: str, result: Any) -> dict[str, Any]:
    """The benchmark's result in the contract's shape, or ``TypeError`` naming what is wrong."""
    if not isinstance(result, dict) or set(result) != set(RESULT_KEYS):
        keys = sorted(result) if isinstance(result, dict) else type(result).__name__
        raise TypeError(f"benchmark {name!r} must return a dict with keys {list(RESULT_KEYS)}, got {keys}")
    if not isinstance(result["detail"], dict):
        raise TypeError(f"benchmark {name!r}: detail must be a dict, got {type(result['detail']).__name__}")
    return {
        "value": _finite_or_none(result["value"]),
        "unit": str(result["unit"]),
        "goal": float(result["goal"]),
        "holds": bool(result["holds"]),
        "detail": _jsonable(result["detail"]),
    }


def _finite_or_none(value: Any) -> float | None:
    if value is None:
        return None
    value = float(value)
    return value if math.isfinite(value) else None


def _jsonable(obj: Any) -> Any:
    """Plain JSON values (numpy scalars to Python, NaN/inf to None) so the file is strict JSON."""
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if obj is None or isinstance(obj, (bool, str)):
        return obj
    if isinstance(obj, numbers.Integral):
        return int(obj)
    if isinstance(obj, numbers.Real):
        return _finite_or_none(obj)
    return str(obj)


def run_benchmarks(names: Sequence[str], *, quick: bool) -> dict[str, dict[str, Any]]:
    """Run ``names`` in order; a benchmark that raises gets ``{"error", "holds": False}``."""
    results: dict[str, dict[str, Any]] = {}
    for name in names:
        _progress(name, f"start ({'quick' if quick else 'full'})")
        started = time.perf_counter()
        load_start = _loadavg()
        try:
            results[name] = _check_result(name, BENCHMARKS[name](quick))
        except Exception as exc:  # one broken benchmark must not lose the others' figures
            traceback.print_exc(file=sys.stderr)
            message = f"{type(exc).__name__}: {exc}".splitlines()[0]
            results[name] = {"error": message, "holds": False}
            _progress(name, f"ERROR after {time.perf_counter() - started:.0f} s: {message}")
            continue
        r = results[name]
        # Other work on the machine slows one side of a timing ratio as much as the other only on
        # average: record it, so a reader can judge a timing taken on a busy machine.
        r["detail"]["run_info"] = {
            "quick": quick,
            "seconds": time.perf_counter() - started,
            "cpus": os.cpu_count(),
            "loadavg_1m_start": load_start,
            "loadavg_1m_end": _loadavg(),
        }
        _progress(
            name,
            f"done in {time.perf_counter() - started:.0f} s: value={r['value']} {r['unit']} "
            f"(goal {r['goal']}) holds={r['holds']}",
        )
    return results


def _loadavg() -> float | None:
    try:
        return os.getloadavg()[0]
    except OSError:  # not available on this platform
        return None


def write_json_atomic(payload: Any, path: Path) -> None:
    """Write the figures as JSON in the benchmarks' key order (no sorting): a reader sees the old file or
    the whole new one (:func:`search_algos.durable.write_json_durable`)."""
    from search_algos.durable import write_json_durable

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_json_durable(path, payload, sort_keys=False)


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=_PROG, description="Run facenas benchmarks; write their figures as JSON.")
    p.add_argument("--quick", action="store_true", help="smaller settings (minutes on 2 cores)")
    p.add_argument("--only", nargs="+", action="extend", metavar="NAME", help="run only these benchmarks")
    p.add_argument("--out", required=True, metavar="FILE.json", help="where to write the results")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """CLI entry point; returns the exit code (0 all ran, 1 a benchmark raised, 2 bad input)."""
    args = _parser().parse_args(argv)
    asked = [m for n in args.only for m in GROUPS.get(n, (n,))] if args.only else list(BENCHMARKS)
    names = list(dict.fromkeys(asked))
    unknown = [n for n in names if n not in BENCHMARKS]
    if unknown:
        print(
            f"{_PROG}: unknown benchmark(s) {', '.join(map(repr, unknown))}; valid names: {', '.join(BENCHMARKS)}"
            f"; groups: {', '.join(GROUPS)}",
            file=sys.stderr,
        )
        return 2
    results = run_benchmarks(names, quick=args.quick)
    write_json_atomic(results, Path(args.out))
    print(f"{_PROG}: wrote {args.out}", file=sys.stderr)
    return 1 if any("error" in r for r in results.values()) else 0


# --------------------------------------------------------------------------------------------------
# Shared helpers: Ray, configs
# --------------------------------------------------------------------------------------------------


def _ray_env() -> None:
    """Ray's environment for a benchmark; call before the benchmark first imports ray."""
    for key, value in _RAY_ENV.items():
        os.environ.setdefault(key, value)


# Ray reads some of these when it is first imported (RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER decides whether
# 127.0.0.1 stays 127.0.0.1): set them as soon as this module loads, so no benchmark can import Ray first.
_ray_env()


# Ray 2.60 gives its raylet a fixed 30 s to register with the GCS; on 2 cores that other jobs load (a
# load average above 10) it sometimes needs longer, and a second start succeeds.
_START_ATTEMPTS = 3


@contextlib.contextmanager
def _local_ray(num_cpus: int) -> Iterator[None]:
    """A private local Ray on 127.0.0.1 for one benchmark, shut down afterwards."""
    _ray_env()
    import logging

    import ray

    if ray.is_initialized():
        raise RuntimeError("Ray is already initialised in this process; benchmarks start their own Ray")
    for attempt in range(_START_ATTEMPTS):
        try:
            ray.init(
                address="local",  # never join a Ray that happens to run on this machine
                num_cpus=num_cpus,
                _node_ip_address="127.0.0.1",
                include_dashboard=False,
                namespace="facenas-bench",
                logging_level=logging.ERROR,
                log_to_driver=False,
                object_store_memory=200 * 1024**2,
            )
            break
        except Exception as exc:  # Ray raises a bare Exception when its raylet is slow to register
            if "timed out during startup" not in str(exc) or attempt == _START_ATTEMPTS - 1:
                raise
            ray.shutdown()
            _progress("ray", f"local Ray did not start within Ray's 30 s (load {_loadavg()}); trying again")
    try:
        yield
    finally:
        ray.shutdown()


@contextlib.contextmanager
def _two_node_cluster() -> Iterator[Any]:
    """A head and one worker node, 1 CPU each, all on 127.0.0.1 (``ray.cluster_utils.Cluster``)."""
    _ray_env()
    import logging

    import ray
    from ray.cluster_utils import Cluster

    if ray.is_initialized():
        raise RuntimeError("Ray is already initialised in this process; benchmarks start their own Ray")
    node = {"num_cpus": 1, "node_ip_address": "127.0.0.1", "object_store_memory": 150 * 1024**2}
    for attempt in range(_START_ATTEMPTS):
        cluster = Cluster(initialize_head=False)
        try:
            cluster.add_node(**node, include_dashboard=False)  # the first node added is the head
            cluster.add_node(**node)
            cluster.wait_for_nodes()
            break
        except Exception as exc:  # Ray raises a bare Exception when a raylet is slow to register
            cluster.shutdown()
            if "timed out during startup" not in str(exc) or attempt == _START_ATTEMPTS - 1:
                raise
            _progress("ray", f"a 2-node cluster did not start within Ray's 30 s (load {_loadavg()}); trying again")
    try:
        ray.init(address=cluster.address, namespace="facenas-bench", logging_level=logging.ERROR, log_to_driver=False)
        try:
            yield cluster
        finally:
            ray.shutdown()
    finally:
        cluster.shutdown()


def _macro_micro_raw(
    *, name: str, seed: int, speculate: int, d_max: int, w_max: int, e_min_macro: int, e_min_micro: int,
    final_epochs: int, baseline_samples: int, max_samples: int | None, batch_size: int = 64,
    final_seeds: int = 1,
) -> dict[str, Any]:  # fmt: skip
    """A small macro-micro experiment on digits (configs/macro_micro.yaml, scaled down)."""
    bounds = {"d_min": 2, "d_max": d_max, "w_min": 8, "w_max": w_max}
    return {
        "name": name,
        "seed": seed,
        "data": {"dataset": "digits", "max_samples": max_samples},
        "space": {"name": "global", **bounds, "w_step": 4},  # the random baseline samples the searched bounds
        "searcher": {
            "name": "macro_micro",
            "preset": "tiny",
            **bounds,
            "w_res": 4,
            "e_min_macro": e_min_macro,
            "e_min_micro": e_min_micro,
            "param_slack": 2000,
            "speculate": speculate,
            "final_epochs": final_epochs,
            "final_seeds": final_seeds,
            "baseline_samples": baseline_samples,
        },
        "training": {"batch_size": batch_size, "lr": 0.025},
        "resources": {"cpus_per_trial": 1, "max_failures": 0},
    }


def _run_experiment(raw: dict[str, Any], storage: Path) -> tuple[dict[str, Any], float, Path]:
    """prepare + execute one experiment on the live Ray; returns (best.json, seconds, RUN_DIR).

    Tune's and the pipeline's progress lines go to stderr, with ours.
    """
    from orchestrator.config import parse_config
    from orchestrator.experiment import execute, prepare

    config = parse_config(raw)
    paths = prepare(config, config.model_dump(mode="json"), storage=str(storage), name=raw["name"])
    started = time.perf_counter()
    with contextlib.redirect_stdout(sys.stderr):
        best = execute(config, paths)
    return best, time.perf_counter() - started, paths.root


def _run_experiments(items: Sequence[tuple[dict[str, Any], Path]]) -> list[tuple[dict[str, Any], float, Path]]:
    """Run several experiments side by side; returns (best.json, seconds, RUN_DIR) of each, in order.

    Each is a ``facenas run`` process with its own embedded Ray of the machine's cores, and the operating
    system shares the cores between them: a stage that keeps one trial running (a supernet, an annealing
    chain) no longer leaves the other core idle. (Attached to one Ray, the runs were not served fairly: a
    run's first trial waited 19 minutes while the other runs' trials took every CPU that came free.) A
    trial's result does not depend on what runs beside it (fixed seeds, one torch thread per trial): the
    figures equal those of :func:`_run_experiment` one after the other; ``seconds`` is each run's wall
    time while sharing the cores. Its output goes to ``<storage>.log``. Needs no Ray in this process.

    Raises:
        RuntimeError: a run failed; the message names its log and ends with the log's last line.
    """
    import subprocess

    import yaml

    from orchestrator.config import parse_config

    root = Path(__file__).resolve().parent.parent
    for raw, _storage in items:
        parse_config(raw)  # a bad config is an error here, before any of them starts
    procs: list[tuple[subprocess.Popen, Path, Path, float]] = []
    try:
        for raw, storage in items:
            storage.mkdir(parents=True, exist_ok=True)
            config_file, log = storage / f"{raw['name']}.yaml", storage.with_suffix(".log")
            config_file.write_text(yaml.safe_dump(raw, sort_keys=False))
            command = [sys.executable, "-m", "orchestrator.cli", "run", str(config_file), "--storage", str(storage)]
            with log.open("w") as out:
                proc = subprocess.Popen(command, cwd=root, stdout=out, stderr=subprocess.STDOUT)
            procs.append((proc, storage / raw["name"], log, time.perf_counter()))
        seconds: dict[int, float] = {}
        while len(seconds) < len(procs):  # a failure stops the others at once, not after they finish
            for i, (proc, run_dir, log, started) in enumerate(procs):
                if i in seconds or proc.poll() is None:
                    continue
                if proc.returncode != 0:
                    lines = [line for line in log.read_text().splitlines() if line.strip()]
                    raise RuntimeError(f"{run_dir.name} failed (exit {proc.returncode}, log {log}): "
                                       f"{lines[-1] if lines else 'no output'}")
                seconds[i] = time.perf_counter() - started
                _progress("experiments", f"{run_dir.name} finished in {seconds[i]:.0f} s")
            time.sleep(1.0)
        return [(json.loads((run_dir / "best.json").read_text()), seconds[i], run_dir)
                for i, (_proc, run_dir, _log, _started) in enumerate(procs)]
    finally:
        for proc, *_ in procs:
            if proc.poll() is None:  # a sibling failed, or we were interrupted: stop the rest too
                proc.terminate()
                with contextlib.suppress(Exception):
                    proc.wait(timeout=30)


def _stage_seconds(run_dir: Path, stage: str) -> float:
    return float(json.loads((run_dir / stage / "stage.json").read_text())["seconds"])


# --------------------------------------------------------------------------------------------------
# ranking_static_vs_dynamic (§3.2)
# --------------------------------------------------------------------------------------------------

# §3.2 at CIFAR-10 scale: Spearman with the 50-epoch ranking.
_PAPER_RANKING = {"rho_static": 0.65, "rho_dynamic": 0.85, "rho_params": 0.49, "rho_dynamic_params": 0.91,
                  "networks": 240, "networks_dynamic": 50, "final_epochs": 50}  # fmt: skip


def dynamic_epochs(n: int, final_epochs: int) -> list[int]:
    """Epochs of the i-th smallest of ``n`` networks: 1 for the smallest, ``final_epochs`` for the largest.

    §3.2 trains the smallest network 1 epoch, the next 2, and so on; scaled here so the largest gets the
    final training's epochs: ``k_i = 1 + round(i (E - 1) / (n - 1))``.
    """
    if n < 1 or final_epochs < 1:
        raise ValueError(f"n >= 1 and final_epochs >= 1 must hold, but got n={n}, final_epochs={final_epochs}")
    if n == 1:
        return [final_epochs]
    return [1 + round(i * (final_epochs - 1) / (n - 1)) for i in range(n)]


def _train_val_acc(arch_json: str, epochs: int, seed: int, data: Any) -> dict[str, float]:
    """One independent training (its own cosine schedule); runs as a Ray task with 1 torch thread."""
    import torch

    from search_algos.spaces.global_space import GlobalArch
    from trainables.classification.train import TrainSettings, fit_candidate

    torch.set_num_threads(1)
    arch = GlobalArch.from_dict(json.loads(arch_json))
    started = time.perf_counter()
    metrics = fit_candidate(arch, data, TrainSettings(epochs=epochs, seed=seed, threads=1))
    return {"val_acc": float(metrics["val_acc"]), "seconds": time.perf_counter() - started}


@register("ranking_static_vs_dynamic")
def ranking_static_vs_dynamic(quick: bool) -> dict[str, Any]:
    """§3.2 on digits: do dynamic-epoch rankings agree better with the final ranking than 1-epoch ones?

    ``n`` seeded random networks of a small global space are each trained three ways, every training
    a separate run with its own cosine schedule: ``E`` epochs (the final ranking), 1 epoch (static
    ranking), and ``k_i`` epochs with ``k`` growing with the parameter count (:func:`dynamic_epochs`,
    dynamic ranking). Identical (network, epochs) trainings are run once (deterministic).

    Returns:
        value = rho_dynamic / rho_static (Spearman with the final validation accuracies); holds when
        rho_dynamic >= goal * rho_static (the same test, but also meaningful when rho_static <= 0).
    """
    _ray_env()
    import numpy as np
    import ray
    from scipy.stats import spearmanr

    from search_algos.spaces import GlobalSpace
    from search_algos.spaces.global_space import GlobalArch, count_params
    from trainables.classification.data import load_dataset

    name, seed, goal = "ranking_static_vs_dynamic", 0, 1.0
    n, final_epochs = (30, 4) if quick else (40, 8)
    space = GlobalSpace(d_min=2, d_max=8, w_min=8, w_max=32, w_step=4)
    data = load_dataset("digits")

    rng = np.random.default_rng(seed)
    archs: dict[str, GlobalArch] = {}
    while len(archs) < n:  # distinct networks: a repeat would only tie with itself
        arch = space.sample(rng)
        archs.setdefault(arch.key(), arch)
    params = {k: count_params(a, in_channels=data.in_channels, num_classes=data.num_classes) for k, a in archs.items()}
    by_size = sorted(archs, key=lambda k: (params[k], k))  # ascending parameters (ties by key)
    dyn = dict(zip(by_size, dynamic_epochs(n, final_epochs)))

    jobs = sorted({(k, e) for k in archs for e in (final_epochs, 1, dyn[k])}, key=lambda j: -j[1] * params[j[0]])
    _progress(name, f"{n} networks, E={final_epochs}: {len(jobs)} trainings on 2 workers")
    started = time.perf_counter()
    with _local_ray(num_cpus=2):
        data_ref = ray.put(data)
        train = ray.remote(num_cpus=1)(_train_val_acc)
        pending = {train.remote(archs[k].to_json(), e, seed, data_ref): (k, e) for k, e in jobs}
        acc: dict[tuple[str, int], float] = {}
        cost: list[float] = []
        while pending:
            done, _ = ray.wait(list(pending), num_returns=1)
            job = pending.pop(done[0])
            result = ray.get(done[0])
            acc[job] = result["val_acc"]
            cost.append(result["seconds"])
            if len(acc) % 10 == 0 or not pending:
                _progress(name, f"{len(acc)}/{len(jobs)} trainings ({time.perf_counter() - started:.0f} s)")

    final = [acc[(k, final_epochs)] for k in by_size]
    static = [acc[(k, 1)] for k in by_size]
    dynamic = [acc[(k, dyn[k])] for k in by_size]
    sizes = [params[k] for k in by_size]
    rho_static = float(spearmanr(static, final).statistic)
    rho_dynamic = float(spearmanr(dynamic, final).statistic)
    value = rho_dynamic / rho_static if rho_static != 0 and math.isfinite(rho_static) else math.nan
    holds = math.isfinite(rho_dynamic) and math.isfinite(rho_static) and rho_dynamic >= goal * rho_static
    return {
        "value": value,
        "unit": "ratio",
        "goal": goal,
        "holds": bool(holds),
        "detail": {
            "rho_static": rho_static,
            "rho_dynamic": rho_dynamic,
            "rho_params": float(spearmanr(sizes, final).statistic),
            "rho_dynamic_params": float(spearmanr(sizes, dynamic).statistic),
            "n": n,
            "E": final_epochs,
            "dataset": "digits",
            "space": space.describe(),
            "seed": seed,
            "trainings": len(jobs),
            "median_final_val_acc": statistics.median(final),
            "median_static_val_acc": statistics.median(static),
            "median_training_s": statistics.median(cost),
            "seconds": time.perf_counter() - started,
            "networks": [
                {"summary": archs[k].summary(), "params": params[k], "epochs_dynamic": dyn[k],
                 "val_acc_final": acc[(k, final_epochs)], "val_acc_static": acc[(k, 1)],
                 "val_acc_dynamic": acc[(k, dyn[k])]}  # fmt: skip
                for k in by_size
            ],
            "paper": _PAPER_RANKING,
        },
    }


# --------------------------------------------------------------------------------------------------
# speculative_speedup
# --------------------------------------------------------------------------------------------------


@register("speculative_speedup")
def speculative_speedup(quick: bool) -> dict[str, Any]:
    """Search-stage wall time, ``speculate=1`` over ``speculate=2``, same macro-micro config, 2 nodes.

    Both runs go through the orchestrator (prepare/execute) on one 2-node local cluster (1 CPU each),
    each with its own storage so the benchmark store serves nothing. The runs come in pairs (3 quick, 5
    full) that alternate ``seq, spec, spec, seq, ...`` so warm-up favours neither; each pair gives a
    ratio, and the value is their median (the spread is in the detail). The detail
    also says how much the trials overlapped (``mean_concurrency`` = summed trial time / stage time,
    ``trial_processes`` = distinct trial worker processes), which tells a search that did not get
    faster because nothing ran concurrently from one whose speculation was wasted.

    Returns:
        value = median over the pairs of search seconds sequential / speculative; holds when every run
        found the same final architecture and value >= goal.
    """
    name, goal = "speculative_speedup", 1.5
    repeats = 3 if quick else 5
    # Speculation pays when training dominates a trial. On a 600-sample subset a trial lasts about a
    # second, less than starting a trial worker, and the ratio would measure Ray's start-up: so all of
    # digits, and batches of 16 (4x the steps of the default 64; both sides train the same way).
    size = dict(d_max=6, w_max=24, e_min_macro=3, e_min_micro=4, final_epochs=2, baseline_samples=1,
                max_samples=None, batch_size=16)  # fmt: skip
    order: list[tuple[str, int]] = []
    for i in range(repeats):
        pair = [("seq", 1), ("spec", 2)]
        order += pair if i % 2 == 0 else pair[::-1]
    runs: dict[str, list[dict[str, Any]]] = {"seq": [], "spec": []}
    with tempfile.TemporaryDirectory(prefix="facenas-bench-") as tmp, _two_node_cluster():
        for i, (label, speculate) in enumerate(order):
            raw = _macro_micro_raw(name=f"{label}{i}", seed=0, speculate=speculate, **size)
            _progress(name, f"run {i + 1}/{len(order)}: speculate={speculate}")
            best, total, run_dir = _run_experiment(raw, Path(tmp) / f"{label}{i}")
            search = best["search"]
            search_s = _stage_seconds(run_dir, "search")
            busy_s, processes = _trial_activity(run_dir / "search")
            runs[label].append({
                "search_s": search_s,
                "execute_s": total,
                "final_arch": search["final_arch"],
                "final_summary": search["final_summary"],
                "evaluations": search["evaluations"]["total"],
                "wasted": search["wasted"],
                "cached": _cached_count(run_dir),
                "trial_busy_s": busy_s,
                "mean_concurrency": busy_s / search_s,
                "trial_processes": processes,
            })  # fmt: skip
            _progress(
                name,
                f"  search {search_s:.1f} s ({search['evaluations']['total']} evaluations, {search['wasted']} "
                f"wasted, concurrency {busy_s / search_s:.2f}), {search['final_summary']}",
            )

    def median_of(label: str, key: str) -> float:
        return statistics.median(r[key] for r in runs[label])

    pair_ratios = [a["search_s"] / b["search_s"] for a, b in zip(runs["seq"], runs["spec"])]
    value = statistics.median(pair_ratios)
    archs = {r["final_arch"] for rs in runs.values() for r in rs}
    identical = len(archs) == 1 and None not in archs
    return {
        "value": value,
        "unit": "ratio",
        "goal": goal,
        "holds": bool(identical and value >= goal),
        "detail": {
            "ratio": spread(pair_ratios),
            "ratio_of_medians": median_of("seq", "search_s") / median_of("spec", "search_s"),
            "search_s_sequential": median_of("seq", "search_s"),
            "search_s_speculative": median_of("spec", "search_s"),
            "execute_s_sequential": median_of("seq", "execute_s"),
            "execute_s_speculative": median_of("spec", "execute_s"),
            "execute_ratio": median_of("seq", "execute_s") / median_of("spec", "execute_s"),
            "identical_final_arch": identical,
            "final_summary": runs["seq"][0]["final_summary"],
            "evaluations": runs["seq"][0]["evaluations"],
            "wasted": median_of("spec", "wasted"),
            "mean_concurrency_sequential": median_of("seq", "mean_concurrency"),
            "mean_concurrency_speculative": median_of("spec", "mean_concurrency"),
            "repeats": repeats,
            "order": [label for label, _ in order],
            "cluster": "2 nodes x 1 CPU on 127.0.0.1",
            "config": {**size, "speculate": [1, 2]},
            "runs": runs,
        },
    }


def _cached_count(run_dir: Path) -> int:
    import pandas as pd

    return int(pd.read_parquet(run_dir / "results.parquet")["cached"].sum())


def _trial_activity(stage_dir: Path) -> tuple[float, int]:
    """Summed running time of a stage's trials and the number of distinct processes that ran them.

    Read from Tune's per-trial ``result.json`` (its last row carries ``time_total_s`` and ``pid``).
    """
    busy, processes = 0.0, set()
    for path in stage_dir.glob("trial_*/result.json"):
        lines = [line for line in path.read_text().splitlines() if line.strip()]
        if lines:
            last = json.loads(lines[-1])
            busy += float(last.get("time_total_s", 0.0))
            processes.add((last.get("node_ip"), last.get("pid")))
    return busy, len(processes)


# --------------------------------------------------------------------------------------------------
# Benchmarks kept in their own modules: loaded by path (as this script is run; benchmarks/ is not an
# installed package), each registering here through its install(register, ...).
# --------------------------------------------------------------------------------------------------


def _load_sibling(stem: str) -> Any:
    import importlib.util

    spec = importlib.util.spec_from_file_location(f"facenas_benchmarks_{stem}", Path(__file__).with_name(f"{stem}.py"))
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses and pickling look the module up by name
    spec.loader.exec_module(module)
    return module


_load_sibling("monas_bench").install(
    register, two_node_cluster=_two_node_cluster, progress=_progress, ray_env=_ray_env, local_ray=_local_ray,
    spread=spread,
)
_load_sibling("reliability_bench").install(
    register, progress=_progress, ray_env=_ray_env, local_ray=_local_ray, spread=spread
)
_load_sibling("quality_bench").install(
    register, progress=_progress, local_ray=_local_ray, run_experiment=_run_experiment,
    run_experiments=_run_experiments,
)
_load_sibling("scale_bench").install(register, progress=_progress, ray_env=_ray_env, local_ray=_local_ray)


if __name__ == "__main__":
    sys.exit(main())
