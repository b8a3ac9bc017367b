"""How cost grows with work: the benchmark store at 1k-100k rows, the random searcher at 100-5,000 trials.

One figure, ``scale``: for each measured quantity, the cost of the whole work at each size (writing N rows,
looking every one of them up once, loading them; suggesting and completing n trials, one ``save`` and
``restore`` of the searcher after n trials, the state file's bytes, the driver's memory), and the growth
exponent of that cost: the slope of log(cost) over log(size) between the two largest sizes (the
least-squares slope over all sizes is in the detail too). 1 is linear (a constant cost per row or trial),
2 quadratic; below 1 a fixed cost (an fsync, Ray's round trip) still dominates at these sizes. The value is the largest exponent; it holds when that is <= 1.1.

- The store (:class:`orchestrator.store.BenchmarkStore`, in this process: the actor's round trip is a
  constant per call, measured by ``store_lookups``): fill an empty store to N rows in 100 durable
  ``put_many`` batches (compaction included); then, in rounds that measure every size once each, look up
  every row once (single-key ``lookup`` over a sample, scaled to N, and ``lookup_many`` of all N keys)
  and make single-row durable puts on the full store (compactions they trigger included, scaled to N);
  reload each store from its folder.
- The random searcher (:class:`search_algos.random_search.RandomArchSearcher` over the global space),
  driven directly for every trial count (``suggest`` then ``on_trial_complete`` with a score hashed from
  the config, two trials in flight as Tune would have them; median of a few drives), then ``save`` /
  ``restore`` of its state after the n trials, the file's size, and the Python memory the searcher holds
  (``tracemalloc``, on a separate drive: tracing slows the calls).
- Real Tune (``Tuner.fit`` of a trivial trainable with the random searcher, ``reuse_actors``, 2
  concurrent trials on a local 2-CPU Ray) only for the smaller trial counts: on 2 cores a trivial Tune
  trial costs about 0.2 s of wall time, so 5,000 of them would take 15-20 minutes. For those counts the
  fit's wall time, the searcher state file Tune saved, and the driver's resident memory (RSS) before and
  after the fit.

``benchmarks/run.py`` loads this module by path and calls :func:`install` with its registry and helpers.
"""

from __future__ import annotations

import contextlib
import functools
import json
import math
import os
import random
import statistics
import sys
import tempfile
import time
import tracemalloc
import zlib
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, NamedTuple

__all__ = ["NAMES", "growth_exponent", "install", "scale"]

NAMES = ("scale",)
GOAL = 1.1  # the largest growth exponent that holds: linear plus measuring noise, far from quadratic (2)
# (quick, full) sizes; the tests shrink them further.
_SIZES: dict[str, dict[str, Any]] = {
    "quick": {"rows": (1_000, 10_000, 100_000), "trials": (100, 1_000, 5_000), "tune_trials": (20, 100),
              "lookup_sample": 2_000, "single_puts": 100, "repeats": 3},
    "full": {"rows": (1_000, 10_000, 100_000), "trials": (100, 1_000, 5_000), "tune_trials": (100, 1_000),
             "lookup_sample": 5_000, "single_puts": 100, "repeats": 5},
}  # fmt: skip
_FILL_BATCHES = 100  # the store is filled in this many put_many calls: a few compactions at every size


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
    """Register ``scale`` with ``run.py``'s ``register``.

    Raises:
        ValueError: (from ``register``) the name is taken, e.g. when installed twice.
    """
    hooks = Hooks(progress=progress, ray_env=ray_env, local_ray=local_ray)
    register("scale")(functools.update_wrapper(functools.partial(scale, hooks=hooks), scale))


def growth_exponent(sizes: Sequence[float], costs: Sequence[float]) -> float | None:
    """Least-squares slope of ``log(cost)`` over ``log(size)``: 1 linear, 2 quadratic, 0 flat.

    Returns:
        The slope; None when fewer than two distinct sizes or a cost is not positive (not measurable).
    """
    pairs = [(math.log(s), math.log(c)) for s, c in zip(sizes, costs) if s > 0 and c is not None and c > 0]
    if len(pairs) != len(sizes) or len({x for x, _ in pairs}) < 2:
        return None
    mx = statistics.fmean(x for x, _ in pairs)
    my = statistics.fmean(y for _, y in pairs)
    return sum((x - mx) * (y - my) for x, y in pairs) / sum((x - mx) ** 2 for x, _ in pairs)


def _rss_bytes() -> int | None:
    """This process's resident set size (Linux ``/proc``); None where unavailable."""
    try:
        with open("/proc/self/statm") as fh:
            return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return None


# --------------------------------------------------------------------------------------------------
# The store
# --------------------------------------------------------------------------------------------------


def _row(i: int) -> dict[str, Any]:
    """A realistic evaluation row (a global-space architecture, a training protocol, three metrics)."""
    arch = {"depth": 2 + i % 7, "widths": [8 + 4 * ((i >> k) % 8) for k in range(6)], "ops": ["sep", "conv"] * 3}
    config = {"arch": json.dumps(arch), "epochs": 4, "training": {"lr": 0.025, "batch_size": 64}}
    return {"space": "global", "arch_key": f"{zlib.crc32(str(i).encode()):08x}-{i}", "config": config,
            "dataset_id": "digits", "fidelity": 4, "seed": 0, "cost_s": 1.0, "run": "scale",
            "metrics": {"val_acc": (i % 1000) / 10.0, "params": float(1000 + i), "test_acc": 50.0}}  # fmt: skip


def _key(i: int) -> tuple[Any, ...]:
    row = _row(i)
    return (row["space"], row["arch_key"], row["dataset_id"], row["fidelity"], row["seed"])


def _fill(rows: int, folder: Path) -> tuple[Any, float]:
    """An empty store at ``folder`` filled with ``rows`` rows in ``_FILL_BATCHES`` durable ``put_many`` calls."""
    from orchestrator.store import BenchmarkStore

    store = BenchmarkStore(str(folder))
    batch = max(1, rows // _FILL_BATCHES)
    began = time.perf_counter()
    for start in range(0, rows, batch):
        store.put_many([_row(i) for i in range(start, min(rows, start + batch))])
    return store, time.perf_counter() - began


def _time_lookups(store: Any, rows: int, *, sample: int, rng: random.Random) -> tuple[float, float]:
    """Seconds per key of single-key ``lookup`` over a random sample, and of one ``lookup_many`` of every key."""
    keys = [_key(rng.randrange(rows)) for _ in range(sample)]
    began = time.perf_counter()
    for key in keys:
        if store.lookup(*key) is None:
            raise RuntimeError(f"stored key {key} not found")
    single = (time.perf_counter() - began) / sample
    keys = [_key(i) for i in range(rows)]
    began = time.perf_counter()
    found = store.lookup_many(keys)
    many = (time.perf_counter() - began) / rows
    if any(row is None for row in found):
        raise RuntimeError("lookup_many missed a stored key")
    return single, many


def _time_puts(store: Any, first: int, count: int) -> float:
    """Seconds per durable single-row put of rows ``first .. first + count - 1`` (compactions included)."""
    began = time.perf_counter()
    for i in range(first, first + count):
        store.put(_row(i))
    return (time.perf_counter() - began) / count


def _stores(sizes: Sequence[int], *, folder: Path, lookup_sample: int, single_puts: int,
            repeats: int) -> dict[int, dict[str, float]]:
    """Fill one store per size, then time lookups and puts on all of them in interleaved rounds.

    Within each round every size is measured once, so a change of the machine's load during the
    measurement touches every size alike (medians over the rounds) rather than bending the slope.
    """
    from orchestrator.store import BenchmarkStore

    stores, out = {}, {}
    for rows in sizes:
        stores[rows], fill_s = _fill(rows, folder / f"store-{rows}")
        out[rows] = {"fill_s": fill_s}
    per_round = max(1, single_puts // repeats)
    timings: dict[int, dict[str, list[float]]] = {n: {"single": [], "many": [], "put": []} for n in sizes}
    rng = random.Random(0)
    for r in range(repeats):
        for rows in sizes:
            single, many = _time_lookups(stores[rows], rows, sample=lookup_sample, rng=rng)
            timings[rows]["single"].append(single)
            timings[rows]["many"].append(many)
            timings[rows]["put"].append(_time_puts(stores[rows], rows + r * per_round, per_round))
    for rows in sizes:
        t = timings[rows]
        out[rows].update(lookup_s_per_key=statistics.median(t["single"]), lookup_many_s_per_key=statistics.median(t["many"]),
                         put_s_per_row=statistics.median(t["put"]), parts=stores[rows]._evaluations.part_count)  # fmt: skip
    del stores
    for rows in sizes:
        began = time.perf_counter()
        reloaded = BenchmarkStore(str(folder / f"store-{rows}"))
        out[rows]["load_s"] = time.perf_counter() - began
        if reloaded.count() != rows + repeats * per_round:
            raise RuntimeError(f"reloaded store holds {reloaded.count()} rows, expected {rows + repeats * per_round}")
        del reloaded
        out[rows]["disk_bytes"] = sum(p.stat().st_size for p in (folder / f"store-{rows}" / "evaluations").glob("*.parquet"))
    return out


# --------------------------------------------------------------------------------------------------
# The random searcher
# --------------------------------------------------------------------------------------------------


def _random_searcher(trials: int, seed: int) -> Any:
    from search_algos.random_search import RandomArchSearcher
    from search_algos.spaces import GlobalSpace

    space = GlobalSpace(d_min=2, d_max=8, w_min=8, w_max=64, w_step=4)
    return RandomArchSearcher(space, num_samples=trials, epochs=1, metric="val_acc", mode="max", seed=seed)


def _score(config: dict[str, Any]) -> float:
    return (zlib.crc32(config["arch"].encode()) % 10_000) / 100.0


def _drive(searcher: Any, trials: int) -> float:
    """Suggest and complete ``trials`` trials, two in flight (as Tune runs them); returns the seconds."""
    live: list[tuple[str, dict[str, Any]]] = []
    began = time.perf_counter()
    for i in range(trials):
        config = searcher.suggest(f"t{i}")
        if not isinstance(config, dict):
            raise RuntimeError(f"the searcher stopped after {i} of {trials} trials ({config!r})")
        live.append((f"t{i}", config))
        if len(live) == 2:
            tid, done = live.pop(0)
            searcher.on_trial_complete(tid, {"val_acc": _score(done)})
    for tid, done in live:
        searcher.on_trial_complete(tid, {"val_acc": _score(done)})
    return time.perf_counter() - began


def _drive_seconds(counts: Sequence[int], *, repeats: int) -> dict[int, float]:
    """Median seconds of driving a fresh random searcher through each count of trials (no tracing).

    The counts are interleaved within each repeat, so a change of the machine's load during the
    measurement touches every count alike rather than bending the slope.
    """
    seconds: dict[int, list[float]] = {n: [] for n in counts}
    for _ in range(repeats):
        for n in counts:
            seconds[n].append(_drive(_random_searcher(n, seed=0), n))
    return {n: statistics.median(v) for n, v in seconds.items()}


def _searcher_at(trials: int, *, folder: Path, repeats: int) -> dict[str, float]:
    """A random searcher driven through ``trials`` trials: the memory it holds afterwards (a traced drive),
    then its save and restore (median of ``repeats``) and the state file's size."""
    _drive(_random_searcher(2, seed=0), 2)  # imports and first-call caches: not the searcher's state
    searcher = _random_searcher(trials, seed=0)
    tracemalloc.start()
    _drive(searcher, trials)
    held = tracemalloc.get_traced_memory()[0]  # what the drive allocated and is still alive
    tracemalloc.stop()
    path = folder / f"searcher-{trials}.json"
    saves, restores = [], []
    for _ in range(repeats):
        began = time.perf_counter()
        searcher.save(str(path))
        saves.append(time.perf_counter() - began)
        fresh = _random_searcher(trials, seed=0)
        began = time.perf_counter()
        fresh.restore(str(path))
        restores.append(time.perf_counter() - began)
    if fresh.get_state() != searcher.get_state():
        raise RuntimeError("the restored searcher's state differs from the saved one")
    return {"save_s": statistics.median(saves), "restore_s": statistics.median(restores),
            "state_bytes": path.stat().st_size, "memory_bytes": max(held, 1)}  # fmt: skip


def _tune_trial(config: dict[str, Any]) -> None:
    """The trivial trainable: one report of a score hashed from the architecture."""
    from ray import tune

    tune.report({"val_acc": _score(config)})


def _tune_at(trials: int, *, folder: Path) -> dict[str, float]:
    """``Tuner.fit`` of ``trials`` trivial trials with the random searcher; wall, state file, driver RSS."""
    from ray import tune

    searcher = _random_searcher(trials, seed=1)
    tuner = tune.Tuner(
        tune.with_resources(_tune_trial, {"cpu": 1}),
        tune_config=tune.TuneConfig(search_alg=searcher, num_samples=-1, reuse_actors=True, max_concurrent_trials=2),
        run_config=tune.RunConfig(name=f"tune-{trials}", storage_path=str(folder), verbose=0),
    )
    rss_before = _rss_bytes()
    began = time.perf_counter()
    grid = tuner.fit()
    fit_s = time.perf_counter() - began
    rss_after = _rss_bytes()
    if grid.errors or len(grid) != trials:
        raise RuntimeError(f"Tune ran {len(grid)} of {trials} trials, {len(grid.errors)} failed")
    saved = sorted((folder / f"tune-{trials}").glob("searcher-state-*"))
    out = {"fit_s": fit_s, "searcher_file_bytes": saved[-1].stat().st_size if saved else None}
    if rss_before is not None and rss_after is not None:
        out["driver_rss_growth_bytes"] = max(rss_after - rss_before, 1)
        out["driver_rss_after_bytes"] = rss_after
    del grid
    return out


# --------------------------------------------------------------------------------------------------
# The figure
# --------------------------------------------------------------------------------------------------

# figure -> (table, size column, how the whole work's cost is read from a row). Per-key and per-row
# times are multiplied by the size: the cost of doing that to every row, linear when each is constant.
_FIGURES: dict[str, tuple[str, Callable[[int, dict[str, float]], float | None]]] = {
    "store_fill_s": ("store", lambda n, r: r["fill_s"]),
    "store_lookup_every_row_s": ("store", lambda n, r: r["lookup_s_per_key"] * n),
    "store_lookup_many_every_row_s": ("store", lambda n, r: r["lookup_many_s_per_key"] * n),
    "store_put_every_row_s": ("store", lambda n, r: r["put_s_per_row"] * n),
    "store_load_s": ("store", lambda n, r: r["load_s"]),
    "store_disk_bytes": ("store", lambda n, r: r["disk_bytes"]),
    "searcher_calls_s": ("searcher", lambda n, r: r["calls_s"]),
    "searcher_save_s": ("searcher", lambda n, r: r["save_s"]),
    "searcher_restore_s": ("searcher", lambda n, r: r["restore_s"]),
    "searcher_state_bytes": ("searcher", lambda n, r: r["state_bytes"]),
    "searcher_memory_bytes": ("searcher", lambda n, r: r["memory_bytes"]),
    "tune_fit_s": ("tune", lambda n, r: r["fit_s"]),
    "tune_searcher_file_bytes": ("tune", lambda n, r: r.get("searcher_file_bytes")),
    "tune_driver_rss_growth_bytes": ("tune", lambda n, r: r.get("driver_rss_growth_bytes")),
}


def _exponents(tables: dict[str, dict[int, dict[str, float]]]) -> dict[str, dict[str, Any]]:
    out = {}
    for figure, (table, cost_of) in _FIGURES.items():
        rows = tables.get(table, {})
        sizes = sorted(rows)
        costs = [cost_of(n, rows[n]) for n in sizes]
        # The slope between the two largest sizes: how the cost grows where the work is large. Fixed costs
        # (an fsync, a dict's power-of-two table) bend the slope at the small sizes either way; the
        # least-squares slope over every size is kept beside it.
        exponent = growth_exponent(sizes[-2:], costs[-2:]) if len(sizes) >= 2 else None
        out[figure] = {"sizes": sizes, "costs": costs, "exponent": exponent,
                       "exponent_fit": growth_exponent(sizes, costs) if len(sizes) >= 2 else None,
                       "holds": exponent is None or exponent <= GOAL}  # fmt: skip
    return out


def scale(quick: bool, *, hooks: Hooks, sizes: dict[str, Any] | None = None) -> dict[str, Any]:
    """Growth exponents of the store's and the random searcher's costs over 1k-100k rows, 100-5,000 trials.

    Returns:
        value = the largest growth exponent of any figure; holds when every exponent is <= 1.1.
    """
    name = "scale"
    size = dict(sizes) if sizes is not None else dict(_SIZES["quick" if quick else "full"])
    tables: dict[str, dict[int, dict[str, float]]] = {"store": {}, "searcher": {}, "tune": {}}
    load_avg = {}
    with tempfile.TemporaryDirectory(prefix="facenas-bench-") as tmp:
        tables["store"] = _stores(size["rows"], folder=Path(tmp), lookup_sample=size["lookup_sample"],
                                  single_puts=size["single_puts"], repeats=size["repeats"])
        for rows, r in tables["store"].items():
            hooks.progress(name, f"store {rows} rows: fill {r['fill_s']:.2f} s, lookup {r['lookup_s_per_key'] * 1e6:.1f} "
                                 f"us/key, put {r['put_s_per_row'] * 1e3:.1f} ms, load {r['load_s']:.2f} s")
        load_avg["store"] = os.getloadavg()[0]
        calls = _drive_seconds(size["trials"], repeats=size["repeats"])
        for trials in size["trials"]:
            tables["searcher"][trials] = {"calls_s": calls[trials],
                                          **_searcher_at(trials, folder=Path(tmp), repeats=size["repeats"])}
            r = tables["searcher"][trials]
            hooks.progress(name, f"searcher {trials} trials: calls {r['calls_s']:.3f} s, save {r['save_s'] * 1e3:.1f} "
                                 f"ms, restore {r['restore_s'] * 1e3:.1f} ms, {r['state_bytes']} bytes")
        load_avg["searcher"] = os.getloadavg()[0]
        if size["tune_trials"]:
            hooks.ray_env()
            os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
            with hooks.local_ray(2):
                import ray.cloudpickle as cloudpickle

                cloudpickle.register_pickle_by_value(sys.modules[__name__])  # workers cannot import this module
                os.environ["TUNE_MAX_PENDING_TRIALS_PG"] = "2"  # the pipeline's setting: as many as CPUs
                _tune_at(4, folder=Path(tmp) / "tune-warmup")  # cold worker processes: outside the timings
                for trials in size["tune_trials"]:
                    tables["tune"][trials] = _tune_at(trials, folder=Path(tmp) / "tune")
                    r = tables["tune"][trials]
                    hooks.progress(name, f"Tune {trials} trials: {r['fit_s']:.1f} s, driver RSS +"
                                         f"{r.get('driver_rss_growth_bytes', 0) / 2**20:.1f} MiB")
            load_avg["tune"] = os.getloadavg()[0]
    figures = _exponents(tables)
    measured = {k: f["exponent"] for k, f in figures.items() if f["exponent"] is not None}
    worst = max(measured, key=measured.get) if measured else None
    value = measured[worst] if worst else math.nan
    return {
        "value": value,
        "unit": "growth exponent (log-log slope of cost over size; 1 linear, 2 quadratic)",
        "goal": GOAL,
        "holds": bool(measured) and all(f["holds"] for f in figures.values()),
        "detail": {
            "worst": worst,
            "exponents": measured,
            "figures": figures,
            "store": tables["store"],
            "searcher": tables["searcher"],
            "tune": tables["tune"],
            "size": size,
            "loadavg_1m_after": load_avg,
            "method": "cost of the whole work at each size (per-row and per-key times x the size); exponent = "
                      "least-squares slope of log(cost) over log(size); the store in-process (no Ray round "
                      "trip), the searcher driven directly for every trial count (2 in flight), real Tune only "
                      "for tune_trials (a trivial Tune trial costs about 0.2 s on 2 cores)",
        },
    }
