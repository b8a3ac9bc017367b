"""Reliability benchmarks: what facenas's searchers cost the Tune driver, and how fast the benchmark store is.

- ``searcher_overhead``: driver-side wall time per trial of each facenas searcher (random, macro_micro,
  samos) / that of Ray Tune's own random search (``BasicVariantGenerator``), with the same trivial
  trainable (one report of a score derived from the config), the same Tune settings (``reuse_actors``,
  pending trials, concurrency) and the same number of trials, run alternately in one local Ray. The
  value is the worst searcher's median ratio (goal <= 1.05: a searcher's bookkeeping is invisible next to
  Tune's own per-trial work).
- ``store_throughput``: durable batched writes per second (rows in ``put_many`` batches, each batch one
  fsynced Parquet part) from 8 concurrent clients (Ray tasks) through the store actor; the detail has
  lookups per second from the same 8 clients, single-row durable puts per second, and a bare
  write+fsync loop of the same batches in one process measured in the same run (the disk's own bound).

``benchmarks/run.py`` loads this module by path and calls :func:`install` with its registry and helpers.
Functions defined here that Ray runs (the trivial trainable, the store clients) are shipped by value,
since workers cannot import this module.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import statistics
import sys
import tempfile
import time
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Any, NamedTuple

__all__ = ["NAMES", "install", "searcher_overhead", "store_throughput"]

NAMES = ("searcher_overhead", "store_throughput")
SEARCHERS = ("random", "macro_micro", "samos")
_CLIENTS = 8
# (quick, full) sizes; the tests shrink them further.
_SIZES: dict[str, tuple[dict[str, Any], dict[str, Any]]] = {
    "searcher_overhead": ({"trials": 12, "rounds": 2}, {"trials": 40, "rounds": 4}),
    "store_throughput": ({"prefill": 400, "lookups": 200, "batches": 6, "batch": 25, "singles": 10},
                         {"prefill": 2000, "lookups": 1000, "batches": 20, "batch": 50, "singles": 40}),
}  # fmt: skip


class Hooks(NamedTuple):
    """What ``run.py`` lends the benchmarks (its helpers, passed in rather than imported)."""

    progress: Callable[[str, str], None]  # progress(name, text) -> stderr
    ray_env: Callable[[], None]  # Ray's environment variables; call before importing ray
    local_ray: Callable[[int], contextlib.AbstractContextManager[Any]]  # a fresh local Ray with N CPUs


Registrar = Callable[[str], Callable[[Callable[[bool], dict[str, Any]]], Any]]


def install(
    register: Registrar,
    *,
    progress: Callable[[str, str], None],
    ray_env: Callable[[], None],
    local_ray: Callable[[int], contextlib.AbstractContextManager[Any]],
    **_unused: Any,
) -> None:
    """Register ``searcher_overhead`` and ``store_throughput`` with ``run.py``'s ``register``.

    Raises:
        ValueError: (from ``register``) a name is taken, e.g. when installed twice.
    """
    hooks = Hooks(progress=progress, ray_env=ray_env, local_ray=local_ray)
    for name, fn in zip(NAMES, (searcher_overhead, store_throughput)):
        register(name)(functools.update_wrapper(functools.partial(fn, hooks=hooks), fn))


def _size(name: str, quick: bool, sizes: dict[str, Any] | None) -> dict[str, Any]:
    return dict(sizes) if sizes is not None else dict(_SIZES[name][0 if quick else 1])


def _ship_by_value() -> None:
    """Ray workers cannot import this module (loaded by path): pickle its functions by value."""
    import ray.cloudpickle as cloudpickle

    cloudpickle.register_pickle_by_value(sys.modules[__name__])


# --------------------------------------------------------------------------------------------------
# searcher_overhead
# --------------------------------------------------------------------------------------------------


def trivial_trial(config: dict[str, Any], metric: str) -> None:
    """One report of a deterministic score in [0, 100) derived from the config: no training at all."""
    from ray import tune

    text = config["arch"] if "arch" in config else json.dumps(config, sort_keys=True, default=str)
    tune.report({metric: (zlib.crc32(text.encode()) % 10_000) / 100.0})


def _searcher(kind: str, trials: int, seed: int) -> tuple[Any, str, str]:
    """(searcher, metric, mode) for a facenas searcher asked for about ``trials`` evaluations."""
    if kind == "random":
        from search_algos.random_search import RandomArchSearcher
        from search_algos.spaces import GlobalSpace

        space = GlobalSpace(d_min=2, d_max=8, w_min=8, w_max=64, w_step=4)
        return RandomArchSearcher(space, num_samples=trials, epochs=1, metric="val_acc", mode="max", seed=seed), "val_acc", "max"
    if kind == "macro_micro":
        from search_algos.macro_micro import MacroMicroSearcher, MacroMicroSettings

        settings = MacroMicroSettings.preset("tiny", d_min=2, d_max=5, w_min=8, w_max=16, w_res=4)
        searcher = MacroMicroSearcher(settings=settings, in_channels=1, num_classes=10, seed=seed, speculate=2)
        return searcher, "val_acc", "max"
    if kind == "samos":
        from search_algos.samos import SAMOSSearcher
        from search_algos.spaces.multipath import MultipathSpace

        searcher = SAMOSSearcher(space=MultipathSpace(layers=4, scales=3), seed=seed,
                                 iterations=max(1, trials - 2), calibration=2)
        return searcher, "val_nme", "min"
    raise ValueError(f"unknown searcher {kind!r}; valid: {', '.join(SEARCHERS)}")


def _expected_trials(kind: str, trials: int, seed: int) -> int:
    """How many trials ``kind`` runs (random and SAMOS: known; macro-micro: replayed without Tune)."""
    if kind == "random":
        return trials
    searcher, metric, mode = _searcher(kind, trials, seed)
    live: dict[str, dict[str, Any]] = {}
    count = 0
    while True:  # suggest until FINISHED, completing the oldest live trial whenever none is offered
        config = searcher.suggest(f"t{count}")
        if config == "FINISHED" or (config is None and not live):
            return count
        if config is None:
            tid, cfg = next(iter(live.items()))
            del live[tid]
            text = cfg["arch"] if "arch" in cfg else json.dumps(cfg, sort_keys=True)
            searcher.on_trial_complete(tid, {metric: (zlib.crc32(text.encode()) % 10_000) / 100.0})
            continue
        live[f"t{count}"] = config
        count += 1


def _fit(trainable: Any, tune_config: Any, param_space: dict[str, Any] | None, storage: Path, name: str) -> tuple[float, int]:
    """Wall seconds of ``Tuner.fit`` and the number of trials it ran."""
    from ray import tune

    tuner = tune.Tuner(
        trainable, param_space=param_space, tune_config=tune_config,
        run_config=tune.RunConfig(name=name, storage_path=str(storage), verbose=0),
    )
    started = time.perf_counter()
    grid = tuner.fit()
    seconds = time.perf_counter() - started
    if grid.errors:
        raise RuntimeError(f"{name}: {len(grid.errors)} trials failed: {grid.errors[0]}")
    return seconds, len(grid)


def searcher_overhead(quick: bool, *, hooks: Hooks, sizes: dict[str, Any] | None = None,
                      searchers: tuple[str, ...] = SEARCHERS) -> dict[str, Any]:
    """Per-trial driver wall time of each facenas searcher / Tune's BasicVariantGenerator (same trials)."""
    name = "searcher_overhead"
    size = _size(name, quick, sizes)
    hooks.ray_env()
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
    with hooks.local_ray(2), tempfile.TemporaryDirectory(prefix="facenas-bench-") as tmp:
        from ray import tune

        _ship_by_value()
        # The pipeline's own setting (run_stage), for both sides: as many pending trials as CPUs.
        os.environ["TUNE_MAX_PENDING_TRIALS_PG"] = "2"
        per: dict[str, dict[str, Any]] = {}
        warmed = False
        for kind in searchers:
            ratios, rows = [], []
            for r in range(size["rounds"]):
                searcher, metric, mode = _searcher(kind, size["trials"], seed=r)
                trainable = tune.with_resources(tune.with_parameters(trivial_trial, metric=metric), {"cpu": 1})
                common = {"reuse_actors": True, "max_concurrent_trials": 2}
                if not warmed:  # Ray's first actors start cold processes: pay that outside the timings
                    _fit(trainable, tune.TuneConfig(num_samples=4, **common), {"x": tune.uniform(0.0, 1.0)},
                         Path(tmp), "warmup")
                    warmed = True

                def ours() -> tuple[float, int]:
                    return _fit(trainable, tune.TuneConfig(search_alg=searcher, num_samples=-1, **common),
                                None, Path(tmp), f"{kind}-{r}")

                def basic(n: int) -> tuple[float, int]:  # Tune's own random search, the same trial count
                    return _fit(trainable, tune.TuneConfig(num_samples=n, metric=metric, mode=mode, **common),
                                {"x": tune.uniform(0.0, 1.0)}, Path(tmp), f"{kind}-{r}-basic")

                if r % 2 == 0:  # alternate which side runs first (ABBA): drift on the machine cancels
                    ours_s, n = ours()
                    base_s, n_base = basic(n)
                else:
                    n = _expected_trials(kind, size["trials"], seed=r)
                    base_s, n_base = basic(n)
                    ours_s, n = ours()
                ratio = (ours_s / n) / (base_s / n_base)
                ratios.append(ratio)
                rows.append({"trials": n, "facenas_s_per_trial": ours_s / n, "tune_random_s_per_trial": base_s / n_base,
                             "ratio": ratio})
                hooks.progress(name, f"{kind} round {r}: {n} trials, {ours_s / n:.3f} s vs {base_s / n_base:.3f} s per trial")
            per[kind] = {"median_ratio": statistics.median(ratios), "rounds": rows}
    worst = max(per, key=lambda k: per[k]["median_ratio"])
    value = per[worst]["median_ratio"]
    return {
        "value": value,
        "unit": "x (per-trial driver wall time / Tune BasicVariantGenerator)",
        "goal": 1.05,
        "holds": value <= 1.05,
        "detail": {
            "worst": worst,
            "searchers": per,
            "size": size,
            "method": "each round: the facenas searcher's Tuner.fit, then Tune's own random search for the same "
                      "number of trials (alternating which runs first, after an untimed warm-up); trivial trainable (one report), reuse_actors, 2 pending/concurrent "
                      "trials, 1 CPU each, local Ray with 2 CPUs; ratio of seconds per trial",
        },
    }


# --------------------------------------------------------------------------------------------------
# store_throughput
# --------------------------------------------------------------------------------------------------


def _row(client: int, i: int, tag: str) -> dict[str, Any]:
    return {
        "space": "global", "arch_key": f"{tag}-{client}-{i}", "config": {"i": i}, "dataset_id": "bench",
        "fidelity": 1, "seed": client, "metrics": {"val_acc": float(i % 100)}, "cost_s": 0.0, "run": "bench",
    }


def _client_task(store: Any, job: dict[str, Any], start_at: float) -> dict[str, float]:
    """One client: wait for the common start, then do ``job``; returns its own start and end times."""
    import random

    while time.time() < start_at:
        time.sleep(0.001)
    started = time.time()
    kind, client = job["kind"], job["client"]
    if kind == "lookup":
        rng = random.Random(client)
        for _ in range(job["count"]):
            i = rng.randrange(job["prefill"])
            store.lookup("global", f"pre-0-{i}", "bench", 1, 0)
    elif kind == "batch":
        for b in range(job["count"]):
            store.put_many([_row(client, b * job["batch"] + k, "batch") for k in range(job["batch"])])
    elif kind == "single":
        for i in range(job["count"]):
            store.put(_row(client, i, "single"))
    return {"start": started, "end": time.time()}


def _concurrent(ray: Any, task: Any, store: Any, jobs: list[dict[str, Any]]) -> float:
    """Run the clients together; wall seconds from the common start to the last client's end."""
    start_at = time.time() + 2.0  # every client is scheduled and waiting before the clock starts
    spans = ray.get([task.remote(store, job, start_at) for job in jobs])
    return max(s["end"] for s in spans) - start_at


def _raw_fsync_rate(folder: Path, batches: int, batch: int) -> float:
    """Rows per second of writing the same batches as Parquet files, fsync each, in one process."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    rows = [{k: (json.dumps(v) if isinstance(v, dict) else v) for k, v in _row(0, i, "raw").items()} for i in range(batch)]
    table = pa.Table.from_pylist(rows)
    folder.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    for b in range(batches):
        path = folder / f"raw-{b}.parquet"
        with open(path, "wb") as fh:
            pq.write_table(table, fh)
            fh.flush()
            os.fsync(fh.fileno())
    return batches * batch / (time.perf_counter() - started)


def store_throughput(quick: bool, *, hooks: Hooks, sizes: dict[str, Any] | None = None) -> dict[str, Any]:
    """Durable batched rows/s (8 clients); lookups/s and single-row puts/s in the detail."""
    name = "store_throughput"
    size = _size(name, quick, sizes)
    hooks.ray_env()
    with hooks.local_ray(2), tempfile.TemporaryDirectory(prefix="facenas-bench-") as tmp:
        import ray

        from orchestrator.store import StoreClient

        _ship_by_value()
        task = ray.remote(num_cpus=0.1, max_retries=0)(_client_task)
        store = StoreClient.start(str(Path(tmp) / "benchmark"))
        store.put_many([_row(0, i, "pre") for i in range(size["prefill"])])
        ray.get([task.remote(store, {"kind": "noop", "client": c}, 0.0) for c in range(_CLIENTS)])  # warm workers

        lookups = _CLIENTS * size["lookups"]
        lookup_s = _concurrent(ray, task, store, [
            {"kind": "lookup", "client": c, "count": size["lookups"], "prefill": size["prefill"]} for c in range(_CLIENTS)
        ])
        rows = _CLIENTS * size["batches"] * size["batch"]
        batch_s = _concurrent(ray, task, store, [
            {"kind": "batch", "client": c, "count": size["batches"], "batch": size["batch"]} for c in range(_CLIENTS)
        ])
        singles = _CLIENTS * size["singles"]
        single_s = _concurrent(ray, task, store, [
            {"kind": "single", "client": c, "count": size["singles"]} for c in range(_CLIENTS)
        ])
        expected = size["prefill"] + rows + singles
        if store.count() != expected:
            raise RuntimeError(f"store holds {store.count()} rows after the run, expected {expected}")
        raw = _raw_fsync_rate(Path(tmp) / "raw", _CLIENTS * size["batches"], size["batch"])
    rate = rows / batch_s
    hooks.progress(name, f"batched {rate:.0f} rows/s, lookups {lookups / lookup_s:.0f}/s, single {singles / single_s:.0f}/s")
    goal = 200.0
    return {
        "value": rate,
        "unit": "durable rows/s (batched, 8 clients)",
        "goal": goal,
        "holds": rate >= goal,
        "detail": {
            "lookups_per_s": lookups / lookup_s,
            "single_row_puts_per_s": singles / single_s,
            "batched_rows_per_s": rate,
            "batches_per_s": rows / size["batch"] / batch_s,
            "raw_fsync_rows_per_s_one_process": raw,
            "store_vs_raw_fsync": rate / raw,
            "clients": _CLIENTS,
            "size": size,
            "goal_reason": "200 rows/s fills a HyperFD benchmark of thousands of evaluations in seconds",
        },
    }
