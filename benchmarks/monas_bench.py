"""MONAS benchmarks: one-shot evaluation through the orchestrator, MNUS step cost, 2-worker supernet scaling.

Paper: ``papers/monas-multipath-oneshot-nas-3d-face-alignment.txt`` (Algorithm 1, MNUS; §III-C, one-shot
evaluation of children on the trained supernet). The workload is ``configs/monas.yaml``'s: faces3d at
32 x 32, L = 4 columns, D = 3 scales, supernet width 8, batches of 16, K = 4 children per MNUS step.

- ``oneshot_eval_throughput``: children scored per second by a MONAS search stage (Tune trials of
  :func:`orchestrator.methods.monas.oneshot_trial`, the benchmark store, ``run_stage``) / by a bare
  ``evaluate_child`` loop over the same children in this process; both on one CPU.
- ``mnus_step_overhead``: child-samples per second of MNUS supernet training (K children per batch, one
  Adam step) / of training the same K children as stand-alone networks (one Adam step each) on the
  same batches; the literal "one child" figure is in the detail.
- ``train_scaling_2w``: supernet training samples per second with 2 Ray Train workers / 1 worker on a
  2-node local cluster (1 CPU each), same global batch.

``benchmarks/run.py`` loads this module by path and calls :func:`install` with its registry and helpers;
nothing here imports ``run.py`` (it runs as ``__main__``: a second import would make a second registry).
Nothing defined here is shipped to Ray workers (this module is not importable there): trials and Train
workers run library code only.
"""

from __future__ import annotations

import contextlib
import functools
import json
import math
import os
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, NamedTuple

__all__ = ["NAMES", "install", "mnus_step_overhead", "oneshot_eval_throughput", "train_scaling_2w"]

NAMES = ("oneshot_eval_throughput", "mnus_step_overhead", "train_scaling_2w")

# configs/monas.yaml: the pipeline's own data, space and supernet protocol.
_DATA = {"name": "faces3d", "image_size": 32, "n_train": 600, "n_val": 150, "n_test": 300, "seed": 0}
_SPACE = {"layers": 4, "scales": 3}
_CHANNELS, _BATCH, _K, _SEED = 8, 16, 4, 0
# (quick, full) sizes of each benchmark; the tests shrink them.
_SIZES: dict[str, tuple[dict[str, Any], dict[str, Any]]] = {
    "oneshot_eval_throughput": ({"children": 24, "rounds": 3}, {"children": 60, "rounds": 5}),
    "mnus_step_overhead": ({"repeats": 3, "n_train": 256}, {"repeats": 7, "n_train": 480}),
    "train_scaling_2w": ({"n_train": 384, "epochs": 3, "order": (1, 2, 2, 1, 1, 2)},
                         {"n_train": 576, "epochs": 4, "order": (1, 2, 2, 1, 1, 2, 2, 1, 1, 2)}),
}  # fmt: skip
_GPU = "not measured: no GPU lent to this task"
_CORES = "this machine has 2 physical cores for everything (driver, Ray's own processes, trials, workers)"


class Hooks(NamedTuple):
    """What ``run.py`` lends the benchmarks (its helpers, passed in rather than imported)."""

    # a 2-node cluster on 127.0.0.1 (head + 1 worker node, 1 CPU each), Ray initialised to it
    two_node_cluster: Callable[[], contextlib.AbstractContextManager[Any]]
    progress: Callable[[str, str], None]  # progress(name, text) -> stderr
    ray_env: Callable[[], None]  # Ray's environment variables (auth off, ...); call before importing ray
    local_ray: Callable[[int], contextlib.AbstractContextManager[Any]]  # a fresh local Ray with N CPUs
    spread: Callable[[Any], dict[str, Any]]  # spread(values) -> {"median", "min", "max", "q1", "q3", ...}


Registrar = Callable[[str], Callable[[Callable[[bool], dict[str, Any]]], Any]]


def install(
    register: Registrar,
    *,
    two_node_cluster: Callable[[], contextlib.AbstractContextManager[Any]],
    progress: Callable[[str, str], None],
    ray_env: Callable[[], None],
    local_ray: Callable[[int], contextlib.AbstractContextManager[Any]],
    spread: Callable[[Any], dict[str, Any]],
) -> None:
    """Register the three MONAS benchmarks with ``register`` (``run.py``'s, which refuses duplicates).

    Args:
        register: ``register(name)(fn)`` adds ``fn(quick) -> dict`` under ``name``.
        two_node_cluster, progress, ray_env, local_ray, spread: ``run.py``'s helpers (see :class:`Hooks`).

    Raises:
        ValueError: (from ``register``) a name is taken, e.g. when installed twice (then the first name
            already fails, and nothing is added).
    """
    hooks = Hooks(two_node_cluster=two_node_cluster, progress=progress, ray_env=ray_env, local_ray=local_ray,
                  spread=spread)
    for name, fn in zip(NAMES, (oneshot_eval_throughput, mnus_step_overhead, train_scaling_2w)):
        register(name)(functools.update_wrapper(functools.partial(fn, hooks=hooks), fn))


# --------------------------------------------------------------------------------------------------
# Shared
# --------------------------------------------------------------------------------------------------


@contextlib.contextmanager
def _torch_threads(count: int) -> Iterator[None]:
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _settings(**changes: Any) -> Any:
    from trainables.alignment.train import SupernetSettings

    base = {"epochs": 1, "batch_size": _BATCH, "k_children": _K, "channels": _CHANNELS, "seed": _SEED,
            "threads": 1}  # fmt: skip
    return SupernetSettings(**{**base, **changes})


def _size(name: str, quick: bool) -> dict[str, Any]:
    return _SIZES[name][0 if quick else 1]


def _space() -> Any:
    from search_algos.spaces.multipath import MultipathSpace

    return MultipathSpace(**_SPACE)


def _gpu_note() -> str:
    import torch

    return _GPU if not torch.cuda.is_available() else "not measured: these benchmarks run on the CPU"


# --------------------------------------------------------------------------------------------------
# oneshot_eval_throughput
# --------------------------------------------------------------------------------------------------


def oneshot_eval_throughput(quick: bool, *, hooks: Hooks) -> dict[str, Any]:
    """One-shot evaluations per second: a MONAS search stage / a bare loop, same children, one CPU each.

    A supernet is trained once in this process (MNUS, 1 epoch on ``configs/monas.yaml``'s data) and saved
    as ``supernet_trial`` saves it. Then, on a local Ray with 1 CPU: (a) the bare loop runs
    ``evaluate_child`` over the N children here with 1 torch thread, before and after (b) the
    orchestrator runs them as the pipeline's random stage does: ``run_stage`` with ``oneshot_trial``, a
    ``FixedArchSearcher`` of the N children batched ``children_per_trial`` (4) per trial as
    ``monas_stages`` batches random search (``search_algos.batch``), ``{"cpu": 1}`` per trial (so one trial
    at a time, in one reused actor, 1 torch thread: ``oneshot_trial`` sets it) and a fresh benchmark store
    (nothing cached). Each round also runs the stage at one child per trial, as SAMOS's annealing moves
    run (each waits for the one before): the detail's ``one_child_per_trial``.

    The orchestrator's time runs from its first trial's start (its end minus Tune's ``time_total_s``)
    to its last trial's end (the latest ``created_at`` of its store rows, written just before the trial
    reports): it includes the trial actor's one-time set-up (the trainables' imports, reading the driver's
    data set from the object store as ``monas_stages`` shares it, loading the supernet), as the pipeline
    pays it once per stage, but not Ray's start-up; whole-stage time (``run_stage``) is in the detail too.
    Both sides must give the same NME per child. Rounds (3 quick, 5 full) alternate bare pass, stage,
    bare pass, stage, ..., bare pass (batched and one-per-trial stages in turn); each stage (a fresh store,
    so nothing is cached, and a fresh trial actor, so each pays the set-up) is compared with the median of
    the two bare passes around it; the per-round figures of the detail are the median batched round's.

    Returns:
        value = median over the batched rounds of bare seconds / orchestrator span (children/s ratio);
        holds when >= 0.8 and the scores agree (in every stage, batched or not).
    """
    hooks.ray_env()  # first: Ray reads some of it when first imported, and our imports import Ray
    from orchestrator.evaluate import save_state, share_dataset
    from orchestrator.methods.monas import AlignmentJob, SamosSearcherConfig, oneshot_trial, supernet_identity
    from orchestrator.pipeline import Stage, run_stage
    from orchestrator.store import StoreClient
    from search_algos.fixed import FixedArchSearcher
    from trainables.alignment.data import load_alignment_dataset
    from trainables.alignment.train import evaluate_child, load_supernet, train_supernet

    name, goal = "oneshot_eval_throughput", 0.8
    n_children, rounds = (_size(name, quick)[k] for k in ("children", "rounds"))
    recalibration = 4  # configs/monas.yaml's bn_recalibration_batches (the searcher's default)
    batch = SamosSearcherConfig.model_fields["children_per_trial"].default  # the random stage's batches
    space = _space()
    job_settings = {"epochs": 1, "batch_size": _BATCH, "lr": 1e-3, "k_children": _K, "channels": _CHANNELS,
                    "num_workers": 1, "use_gpu": False, "cpus_per_worker": 1.0,
                    "bn_recalibration_batches": recalibration}  # fmt: skip  (monas_stages' settings keys)
    children = _distinct_children(space, n_children, seed=_SEED)

    with tempfile.TemporaryDirectory(prefix="facenas-bench-") as tmp:
        run_dir = Path(tmp) / "oneshot"
        weights = run_dir / "supernet" / "supernet.pt"
        hooks.progress(name, "generating the data set and training the supernet (1 epoch, MNUS)")
        data = load_alignment_dataset(**_DATA)
        states: dict[str, Any] = {}
        trained = train_supernet(space, data, _settings(epochs=1), on_epoch=lambda _m, state: states.update(state))
        save_state(states["model"], str(weights))  # what supernet_trial leaves for the search stage
        model = load_supernet(str(weights), space, _settings(epochs=1))

        scores: dict[str, float] = {}  # arch key -> val_nme of the bare loop

        def bare_pass() -> list[float]:
            seconds = []
            with _torch_threads(1):
                for arch in children:
                    began = time.perf_counter()
                    scores[arch.key()] = evaluate_child(
                        model, arch, data, "val", recalibration_batches=recalibration, seed=_SEED
                    )["val_nme"]
                    seconds.append(time.perf_counter() - began)
            return seconds

        with hooks.local_ray(1):
            hooks.progress(name, f"bare loop over {n_children} children (1 thread)")
            bare = [_at_niceness(_ray_worker_niceness(), bare_pass)]
            archs = [arch.to_json() for arch in children]
            stages = []
            # bare, stage, bare, stage, ..., bare: each stage between two bare passes; the stages alternate the
            # random stage's batches (children_per_trial) and one child per trial (SAMOS's annealing moves)
            plan = [batch, 1] * rounds
            for r, size in enumerate(plan):
                store = StoreClient.start(str(Path(tmp) / f"store{r}"), namespace="facenas-bench")  # nothing cached
                job = AlignmentJob(
                    space=dict(_SPACE), data=dict(_DATA), settings=job_settings, seed=_SEED, store=store,
                    run=f"{run_dir.name}{r}", stage="search", storage_path=str(run_dir / f"r{r}"),
                    supernet=str(weights),
                    supernet_id=supernet_identity(data.dataset_id, job_settings, dict(_SPACE), _SEED, "mnus"),
                    dataset=share_dataset(dict(_DATA), data, load_alignment_dataset),  # as monas_stages shares it
                )  # fmt: skip
                stage = Stage(
                    name="search",
                    make_searcher=lambda _e: FixedArchSearcher(archs, epochs=1, metric="val_nme", mode="min",
                                                               seed=_SEED),
                    job=job, trainable=oneshot_trial, total=lambda _e: len(archs), resources={"cpu": 1, "gpu": 0},
                    children_per_trial=size,
                )  # fmt: skip
                hooks.progress(name, f"stage {r + 1}/{len(plan)}: {n_children} children, {size} per oneshot_trial "
                                     "trial, on a 1-CPU local Ray")  # fmt: skip
                with contextlib.redirect_stdout(sys.stderr):  # Tune's and the stage's progress lines
                    outcome = run_stage(
                        stage, run_dir=run_dir / f"r{r}", earlier={}, metric="val_nme", mode="min",
                        resources={"max_concurrent_trials": None, "max_failures": 0}, training={"train_workers": 1},
                    )  # fmt: skip
                stored = store.rows(run=f"{run_dir.name}{r}")
                hooks.progress(name, "bare loop again (brackets the orchestrator's run)")
                bare.append(_at_niceness(_ray_worker_niceness(), bare_pass))
                stages.append({"outcome": outcome, "size": size,
                               "trials": _trial_timings(run_dir / f"r{r}" / "search", stored)})  # fmt: skip

    bare_totals = [sum(p) for p in bare]
    # Each stage against the median of the two bare passes around it (side by side in time).
    all_ratios = [statistics.median(bare_totals[r:r + 2]) / st["trials"]["span_s"] for r, st in enumerate(stages)]
    batched = [r for r, st in enumerate(stages) if st["size"] == batch]
    single = [r for r, st in enumerate(stages) if st["size"] == 1]
    ratios = [all_ratios[r] for r in batched]
    middle = batched[sorted(range(rounds), key=lambda i: (ratios[i], i))[(rounds - 1) // 2]]  # the median round
    outcome, trials = stages[middle]["outcome"], stages[middle]["trials"]
    bare_s = statistics.median(bare_totals)
    bare_child_s = statistics.median(s for p in bare for s in p)
    span_s = trials["span_s"]
    differences = []
    for st in stages:
        orchestrated = {row["arch_key"]: row["value"] for row in st["outcome"].frame.to_dict("records")}
        differences.append([abs(orchestrated[k] - v) for k, v in scores.items() if k in orchestrated])
    agree = all(len(d) == n_children and max(d) <= 1e-4 for d in differences)
    steady = trials["steady_interval_s"]
    value = statistics.median(ratios)

    def spread_or_none(values: list[float]) -> dict[str, Any] | None:  # no steady state: one trial per stage
        return hooks.spread(values) if values else None

    return {
        "value": value,
        "unit": "ratio",
        "goal": goal,
        "holds": bool(agree and value >= goal),
        "detail": {
            "children": n_children,
            "ratio": hooks.spread(ratios),
            "children_per_trial": batch,
            "ratio_steady_state_rounds": spread_or_none([
                bare_child_s / stages[r]["trials"]["steady_interval_s"] for r in batched
                if stages[r]["trials"]["steady_interval_s"]
            ]),
            "first_trial_s_rounds": [stages[r]["trials"]["first_trial_s"] for r in batched],
            "one_child_per_trial": {  # SAMOS's annealing stage: its moves wait for each other, one per trial
                "ratio": hooks.spread([all_ratios[r] for r in single]),
                "ratio_steady_state": spread_or_none([
                    bare_child_s / stages[r]["trials"]["steady_interval_s"] for r in single
                    if stages[r]["trials"]["steady_interval_s"]
                ]),
                "overhead_per_child_s": statistics.median(
                    stages[r]["trials"]["steady_interval_s"] - bare_child_s for r in single
                    if stages[r]["trials"]["steady_interval_s"]
                ) if any(stages[r]["trials"]["steady_interval_s"] for r in single) else None,
                "first_trial_s_rounds": [stages[r]["trials"]["first_trial_s"] for r in single],
            },
            "median_round": middle,
            "children_per_s_bare": n_children / bare_s,
            "children_per_s_orchestrator": n_children / span_s,
            "bare_s": bare_s,
            "bare_s_passes": bare_totals,
            "bare_per_child_s": bare_child_s,
            "orchestrator_span_s": span_s,
            "stage_s": outcome.seconds,
            "ratio_stage": bare_s / outcome.seconds,
            "ratio_steady_state": bare_child_s / steady if steady else None,
            "orchestrator_steady_interval_s": steady,
            "overhead_per_child_s": None if steady is None else steady - bare_child_s,
            "overhead_per_child_in_trial_s": (
                None if trials["steady_trial_s"] is None else trials["steady_trial_s"] - bare_child_s
            ),
            "overhead_between_trials_s": trials["steady_gap_s"],
            "first_trial_s": trials["first_trial_s"],
            "actor_setup_s": trials["first_trial_s"] - bare_child_s * trials["first_trial_children"],
            "trial_processes": trials["processes"],
            "trials_done": len(outcome.frame),
            "cached": int(outcome.frame["cached"].sum()),
            "scores_agree": agree,
            "max_abs_nme_difference": max((max(d) for d in differences if d), default=None),
            "supernet_val_nme": trained.get("val_nme"),
            "resources": "equal, 1 CPU each: the bare loop runs here with 1 torch thread; the orchestrator "
            "runs on a local Ray with num_cpus=1 and trials at {'cpu': 1} (one at a time, one reused actor, "
            "oneshot_trial sets 1 torch thread). Ray's own processes (GCS, raylet, driver, store actor) "
            "use the other core: that is part of the orchestrator's cost. Not 2 CPUs each: the pipeline's "
            "trials are single-threaded, and a 2-thread bare loop would compete with Ray's processes and "
            "other jobs for the 2 cores, measuring contention rather than the orchestrator",
            "timing": "orchestrator span = last trial's end (store created_at) - first trial's start (its "
            "end - Tune time_total_s): includes the trial actor's one-time set-up (lazy imports, reading the "
            "driver's data set from the object store, supernet load), excludes Ray start-up; steady state = "
            "median interval between consecutive trial ends after each actor's first trial, per child of the "
            "trial (a batch of children_per_trial)",
            "data": _DATA,
            "space": _SPACE,
            "bn_recalibration_batches": recalibration,
            "niceness": f"both sides at {_ray_worker_niceness()}: Ray's worker niceness for the trials, a thread "
            "of that niceness for the bare loop",
            "gpu": _gpu_note(),
        },
    }


def _ray_worker_niceness() -> int:
    """The niceness Ray's raylet gives worker processes (config ``worker_niceness``, default 15)."""
    return int(os.environ.get("RAY_worker_niceness", "15"))


def _at_niceness(niceness: int, fn: Callable[[], Any]) -> Any:
    """``fn()`` in a new thread of this process whose Linux niceness is ``niceness``.

    Ray runs trials at its worker niceness; on a machine that other jobs load, a loop at niceness 0
    would win CPU time from them that the trials cannot, and the ratio would measure priorities. A
    thread's niceness can be raised without privileges and dies with it, so the caller's is unchanged.
    Where threads have no niceness of their own (not Linux), ``fn`` runs at the caller's.
    """
    out: dict[str, Any] = {}

    def target() -> None:
        try:
            with contextlib.suppress(AttributeError, OSError):
                tid = threading.get_native_id()
                os.setpriority(os.PRIO_PROCESS, tid, max(niceness, os.getpriority(os.PRIO_PROCESS, tid)))
            out["value"] = fn()
        except BaseException as exc:  # re-raised in the caller
            out["error"] = exc

    thread = threading.Thread(target=target, name="bare-loop")
    thread.start()
    thread.join()
    if "error" in out:
        raise out["error"]
    return out["value"]


def _distinct_children(space: Any, count: int, *, seed: int) -> list[Any]:
    """``count`` distinct uniform samples of ``space`` from a seeded generator (the same list every run)."""
    import numpy as np

    rng = np.random.default_rng([seed, 24])
    archs: dict[str, Any] = {}
    while len(archs) < count:
        arch = space.sample(rng)
        archs.setdefault(arch.key(), arch)
    return list(archs.values())


def _trial_timings(stage_dir: Path, stored: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """When each trial of a stage started and ended, from Tune's ``result.json`` and the store's rows.

    A trial's end is the latest ``created_at`` of its children's store rows (``time.time()`` in the trial,
    just before it reports; Tune's own ``timestamp`` has whole seconds only); its start is that end minus
    Tune's ``time_total_s`` (from the trial's ``train()`` call to its report, hence also the actor's set-up
    for its first trial). A batched trial (``children`` in its report) scores several children; the steady
    figures are per child (a trial's interval and length divided by its children), the gap per trial.
    Times are ``time.time()`` of processes on this one machine.
    """
    ended = {row["arch_key"]: float(row["created_at"]) for row in stored}
    trials = []
    for path in stage_dir.glob("trial_*/result.json"):
        lines = [line for line in path.read_text().splitlines() if line.strip()]
        if not lines:
            continue
        last = json.loads(lines[-1])
        keys = [c.get("arch_key") for c in last.get("children") or [last]]
        if keys and all(k in ended for k in keys):
            end = max(ended[k] for k in keys)
            trials.append({"end": end, "start": end - float(last["time_total_s"]), "children": len(keys),
                           "seconds": float(last["time_total_s"]), "pid": last.get("pid")})  # fmt: skip
    if not trials:
        raise RuntimeError(f"no finished trial with a store row under {stage_dir}")
    trials.sort(key=lambda t: t["end"])
    intervals, in_trial, gaps = [], [], []
    last: dict[Any, dict[str, Any]] = {}  # the latest trial of each actor process
    for trial in trials:
        previous = last.get(trial["pid"])
        if previous is not None:  # not the actor's first trial: steady state
            intervals.append((trial["end"] - previous["end"]) / trial["children"])
            in_trial.append(trial["seconds"] / trial["children"])
            gaps.append(trial["start"] - previous["end"])
        last[trial["pid"]] = trial

    def median(values: list[float]) -> float | None:
        return statistics.median(values) if values else None

    return {
        "span_s": trials[-1]["end"] - min(t["start"] for t in trials),
        "first_trial_s": trials[0]["seconds"],
        "first_trial_children": trials[0]["children"],
        "steady_interval_s": median(intervals),
        "steady_trial_s": median(in_trial),
        "steady_gap_s": median(gaps),
        "processes": len({t["pid"] for t in trials}),
        "trials": len(trials),
    }


# --------------------------------------------------------------------------------------------------
# mnus_step_overhead
# --------------------------------------------------------------------------------------------------


def mnus_step_overhead(quick: bool, *, hooks: Hooks) -> dict[str, Any]:
    """Child-samples/s of MNUS supernet training / of the same K children trained as plain networks.

    One MNUS step (Algorithm 1) passes a batch of B images through K children and makes one Adam step:
    K*B child-samples. The reference trains the K children of step 0 as stand-alone networks
    (``child_model(arch)``, ``train_standalone``: one Adam step each) on the same batches (same seed, same
    shuffling), one after another: K*B child-samples per K steps. Both through the library's training
    loops (``train_supernet`` / ``train_standalone``), 1 torch thread, 2 epochs each: the first is
    warm-up, the second's ``samples_per_s`` (training only, validation excluded) is compared. Repeats
    alternate which side runs first; the value is the median of the per-repeat ratios.

    The literal "one fixed child" figure divides the same MNUS child-samples/s by the stand-alone
    samples/s of the median-size child (by parameters) of the K (``ratio_one_child``).

    Returns:
        value = median MNUS / K-stand-alone child-samples/s ratio; holds when >= 0.7.
    """
    hooks.ray_env()  # first: Ray reads some of it when first imported, and our imports import Ray
    import numpy as np

    from search_algos.spaces.multipath import mnus_children
    from trainables.alignment.data import load_alignment_dataset
    from trainables.alignment.model import MultipathSupernet
    from trainables.alignment.train import train_standalone, train_supernet

    name, goal = "mnus_step_overhead", 0.7
    repeats, n_train = (_size(name, quick)[k] for k in ("repeats", "n_train"))
    data = load_alignment_dataset(**{**_DATA, "n_train": n_train, "n_val": 16, "n_test": 16})
    space = _space()
    # Validation is not timed; no BN recalibration keeps it short.
    settings = _settings(epochs=2, bn_recalibration_batches=0)
    children = mnus_children(space, _K, np.random.default_rng((_SEED, 0)))  # what step 0 trains
    reference = MultipathSupernet(layers=space.layers, scales=space.scales, channels=_CHANNELS)
    params = [sum(p.numel() for p in reference.child_model(c).parameters()) for c in children]
    median_child = sorted(range(_K), key=lambda i: (params[i], i))[(_K - 1) // 2]

    def mnus() -> float:  # images/s, each through K children
        return _last_epoch_samples_per_s(lambda on_epoch: train_supernet(space, data, settings, on_epoch=on_epoch))

    def alone(child: Any) -> float:  # samples/s of one child trained by itself
        return _last_epoch_samples_per_s(lambda on_epoch: train_standalone(child, data, settings, on_epoch=on_epoch))

    rounds = []
    for r in range(repeats):
        hooks.progress(name, f"repeat {r + 1}/{repeats}")
        if r % 2 == 0:
            images_per_s, each = mnus(), [alone(c) for c in children]
        else:
            each = [alone(c) for c in children]
            images_per_s = mnus()
        mnus_cs = _K * images_per_s  # child-samples/s
        alone_cs = _K / sum(1.0 / s for s in each)  # K children, n samples each, one after another
        rounds.append({
            "mnus_child_samples_per_s": mnus_cs,
            "standalone_child_samples_per_s": alone_cs,
            "one_child_samples_per_s": each[median_child],
            "ratio": mnus_cs / alone_cs,
            "ratio_one_child": mnus_cs / each[median_child],
            "standalone_samples_per_s_each": each,
        })  # fmt: skip
        hooks.progress(name, f"  MNUS {mnus_cs:.0f} vs stand-alone {alone_cs:.0f} child-samples/s")

    def median_of(key: str) -> float:
        return statistics.median(r[key] for r in rounds)

    steps = n_train // _BATCH
    measured_steps = range(steps * (settings.epochs - 1), steps * settings.epochs)
    mnus_edges = [_edge_counts(c) for s in measured_steps
                  for c in mnus_children(space, _K, np.random.default_rng((_SEED, s)))]  # fmt: skip
    value = median_of("ratio")
    return {
        "value": value,
        "unit": "ratio",
        "goal": goal,
        "holds": bool(value >= goal),
        "detail": {
            "ratio_one_child": median_of("ratio_one_child"),
            "mnus_child_samples_per_s": median_of("mnus_child_samples_per_s"),
            "standalone_child_samples_per_s": median_of("standalone_child_samples_per_s"),
            "one_child_samples_per_s": median_of("one_child_samples_per_s"),
            "one_child": {"index": median_child, "params": params[median_child],
                          "summary": children[median_child].summary()},  # fmt: skip
            "children_params": params,
            "active_edges_per_child_mnus_measured_steps": _mean_counts(mnus_edges),
            "active_edges_per_child_standalone": _mean_counts([_edge_counts(c) for c in children]),
            "repeats": repeats,
            "rounds": rounds,
            "units": "child-samples/s: one image through one child (an MNUS step of B images is K*B)",
            "protocol": f"train_supernet (mnus, K={_K}) vs train_standalone of step 0's K children; batch "
            f"{_BATCH}, n_train {n_train} ({steps} steps/epoch), 2 epochs, epoch 2 measured, 1 torch thread "
            "each, same shuffling; MNUS draws new children every step (its cost is included), the "
            "stand-alone side keeps step 0's: the active-edge counts say how comparable the work is",
            "data": {**_DATA, "n_train": n_train, "n_val": 16, "n_test": 16},
            "space": _SPACE,
            "gpu": _gpu_note(),
        },
    }


def _last_epoch_samples_per_s(train: Callable[[Callable[[dict[str, Any], dict[str, Any]], None]], Any]) -> float:
    """``samples_per_s`` of the last epoch of ``train(on_epoch)`` (the earlier ones are warm-up)."""
    per_epoch: dict[int, float] = {}
    train(lambda metrics, _state: per_epoch.__setitem__(int(metrics["epoch"]), float(metrics["samples_per_s"])))
    return per_epoch[max(per_epoch)]


def _edge_counts(arch: Any) -> dict[str, int]:
    from search_algos.spaces.multipath import EDGE_HPM, EDGE_IDENTITY, active_edges

    edges, active = arch.as_array(), active_edges(arch)
    return {"hpm": int(((edges == EDGE_HPM) & active).sum()),
            "identity": int(((edges == EDGE_IDENTITY) & active).sum())}  # fmt: skip


def _mean_counts(counts: list[dict[str, int]]) -> dict[str, float]:
    return {key: statistics.mean(c[key] for c in counts) for key in counts[0]}


# --------------------------------------------------------------------------------------------------
# train_scaling_2w
# --------------------------------------------------------------------------------------------------


def train_scaling_2w(quick: bool, *, hooks: Hooks) -> dict[str, Any]:
    """Supernet training samples/s, 2 Ray Train workers / 1, on a 2-node local cluster (1 CPU each).

    ``train_supernet_distributed`` (MNUS, K = 4, global batch 16: 8 per worker with 2) is called from
    the driver with ``num_workers`` 1 and 2, ``cpus_per_worker=1``: two workers can only land one per
    node, which the detail checks (the nodes of the run's ``RayTrainWorker`` actors). Each run trains a
    few epochs; the first is warm-up, and the median ``samples_per_s`` of the others (all workers'
    images over rank 0's epoch training time, validation excluded) is the run's figure, read from the
    run's per-epoch checkpoints. Runs alternate 1, 2, 2, 1, 1, 2 (... full) workers: each consecutive pair
    gives one ratio, and the value is their median (spread in the detail).

    Returns:
        value = median over consecutive (1-worker, 2-worker) pairs of samples/s with 2 workers / with 1;
        holds when >= 1.5 and the 2 workers ran on 2 nodes.
    """
    hooks.ray_env()  # first: Ray reads some of it when first imported, and our imports import Ray
    from trainables.alignment.data import load_alignment_dataset
    from trainables.alignment.train import train_supernet, train_supernet_distributed

    name, goal = "train_scaling_2w", 1.5
    n_train, epochs, order = (_size(name, quick)[k] for k in ("n_train", "epochs", "order"))
    data_spec = {**_DATA, "n_train": n_train, "n_val": 16, "n_test": 3}
    space = _space()
    # How much of the gap is the half batch each of 2 workers computes (per-sample cost at batch 8 vs
    # 16), measured in this process, 1 thread, 2 epochs each (the second counts): no Ray, no all-reduce.
    hooks.progress(name, f"in-process reference: batch {_BATCH // 2} vs {_BATCH}")
    data = load_alignment_dataset(**data_spec)
    half_batch = {
        batch: _last_epoch_samples_per_s(lambda on_epoch, b=batch: train_supernet(
            space, data, _settings(epochs=2, batch_size=b, bn_recalibration_batches=0), on_epoch=on_epoch))
        for batch in (_BATCH // 2, _BATCH)
    }  # fmt: skip
    del data
    runs: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="facenas-bench-") as tmp, hooks.two_node_cluster():
        import ray

        node_kind = {n["NodeID"]: ("head" if "node:__internal_head__" in n["Resources"] else "worker")
                     for n in ray.nodes() if n["Alive"]}  # fmt: skip
        for i, workers in enumerate(order):
            hooks.progress(name, f"run {i + 1}/{len(order)}: {workers} worker(s), {epochs} epochs of {n_train}")
            before = _train_worker_nodes()
            settings = _settings(epochs=epochs, num_workers=workers, cpus_per_worker=1.0, bn_recalibration_batches=0)
            run_name = f"w{workers}-{i}"
            began = time.perf_counter()
            final = train_supernet_distributed(space, data_spec, settings, storage_path=tmp, name=run_name)
            fit_s = time.perf_counter() - began
            epoch_metrics = _epoch_metrics(Path(tmp) / run_name) or {int(final["epoch"]): final}
            per_epoch = {e: float(m["samples_per_s"]) for e, m in epoch_metrics.items()}
            # The share of rank 0's epoch training time spent in the all-reduce (gloo blocks, so it holds
            # the transfer and the wait for the other worker); the epoch's time is its samples / rate.
            samples = n_train // workers * workers
            shares = {e: float(m.get("allreduce_s", 0.0)) * per_epoch[e] / samples for e, m in epoch_metrics.items()}
            after = _train_worker_nodes()
            nodes = None if before is None or after is None else sorted(
                node_kind.get(node, node) for actor, node in after.items() if actor not in before
            )  # fmt: skip
            later = [e for e in sorted(per_epoch) if e > 1] or sorted(per_epoch)
            runs.append({"workers": workers, "samples_per_s": statistics.median(per_epoch[e] for e in later),
                         "allreduce_share": statistics.median(shares[e] for e in later),
                         "samples_per_s_by_epoch": per_epoch, "fit_s": fit_s, "worker_nodes": nodes,
                         "weights_identical": len(set(final.get("weights_digests", [0]))) == 1})  # fmt: skip
            hooks.progress(name, f"  {runs[-1]['samples_per_s']:.1f} samples/s, workers on {nodes}")

    def median_of(workers: int, key: str) -> float:
        return statistics.median(r[key] for r in runs if r["workers"] == workers)

    # Consecutive runs (1 then 2 workers, or 2 then 1) are pairs measured side by side: one ratio each.
    pairs = [(runs[i], runs[i + 1]) for i in range(0, len(runs) - 1, 2)]
    ratios = [(b if b["workers"] == 2 else a)["samples_per_s"] / (a if a["workers"] == 1 else b)["samples_per_s"]
              for a, b in pairs]  # fmt: skip
    value = statistics.median(ratios)
    spread = all(r["worker_nodes"] is None or len(set(r["worker_nodes"])) == r["workers"] for r in runs)
    return {
        "value": value,
        "unit": "ratio",
        "goal": goal,
        "holds": bool(spread and value >= goal and math.isfinite(value)),
        "detail": {
            "ratio": hooks.spread(ratios),
            "ratio_of_medians": median_of(2, "samples_per_s") / median_of(1, "samples_per_s"),
            "samples_per_s_1_worker": median_of(1, "samples_per_s"),
            "samples_per_s_2_workers": median_of(2, "samples_per_s"),
            "fit_s_1_worker": median_of(1, "fit_s"),
            "fit_s_2_workers": median_of(2, "fit_s"),
            "ratio_fit_wall": median_of(1, "fit_s") / median_of(2, "fit_s"),
            "one_worker_per_node": spread,
            "half_batch_efficiency": half_batch[_BATCH // 2] / half_batch[_BATCH],
            "ceiling": _scaling_factors(half_batch, median_of(1, "samples_per_s"), median_of(2, "samples_per_s"),
                                        median_of(2, "allreduce_share")),
            "half_batch_note": f"in-process samples/s at batch {_BATCH // 2} / at {_BATCH} (1 thread, no Ray): "
            "the best 2 workers can do is about 2x this, before all-reduce and contention",
            "in_process_samples_per_s_by_batch": half_batch,
            "runs": runs,
            "order": list(order),
            "cluster": "2 nodes x 1 CPU on 127.0.0.1 (ray.cluster_utils.Cluster), cpus_per_worker=1",
            "cores": _CORES + ": with 2 workers both cores train and everything else competes with them; "
            "with 1 worker the other core is free for it. Ideal is < 2 here",
            "protocol": f"train_supernet_distributed from the driver (no Tune trial: the pipeline's supernet "
            f"trial reserves 0.25 CPU, which would not fit beside two 1-CPU workers on 1-CPU nodes), "
            f"global batch {_BATCH} ({_BATCH // 2} per worker with 2), K={_K}, n_train {n_train}, "
            f"{epochs} epochs, epoch 1 warm-up; gradients all-reduced once per step (gloo)",
            "data": data_spec,
            "space": _SPACE,
            "gpu": _gpu_note(),
        },
    }


def _train_worker_nodes() -> dict[str, str] | None:
    """Actor id -> node id of every ``RayTrainWorker`` the cluster knows (dead ones too); None if unknown.

    Ray's private GCS view: the public state API needs the dashboard, which the cluster does not start.
    """
    try:
        from ray._private import state

        return {
            actor_id: info["Address"]["NodeID"]
            for actor_id, info in state.actors().items()
            if info.get("ActorClassName") == "RayTrainWorker" and info.get("Address")
        }
    except Exception:  # a private API: placement is then reported as unknown, never a failure
        return None


def _scaling_factors(in_process: dict[int, float], one_worker: float, two_workers: float,
                     allreduce_share: float) -> dict[str, Any]:
    """The 2-worker ratio as a product of measured factors, so its ceiling on this machine can be read.

    With ``r(b)`` the in-process samples/s at batch ``b`` (1 thread), ``R1`` and ``R2`` the runs' rates and
    ``a`` the 2-worker run's all-reduce share of its epoch time, each worker computes at
    ``c = R2 / 2 / (1 - a)`` samples/s between all-reduces, and::

        R2 / R1 = 2 * [r(8) / r(16)] * [c / r(8)] * (1 - a) * [r(16) / R1]
                = 2 * half_batch * contention * (1 - allreduce) * one_worker_in_ray

    ``half_batch``: per-sample speed at each worker's half batch; ``contention``: a worker beside the other
    (both cores busy, with the driver and Ray's processes) against alone in a process; ``one_worker_in_ray``:
    the 1-worker baseline against the same training in a process (above 1 when the 1-worker run has the
    other core to itself for Ray's and the driver's work). The identity holds exactly; each factor is measured.
    """
    half, full = in_process[_BATCH // 2], in_process[_BATCH]
    compute = two_workers / 2 / (1 - allreduce_share) if allreduce_share < 1 else math.nan
    factors = {
        "half_batch": half / full,
        "contention": compute / half,
        "allreduce": 1 - allreduce_share,
        "one_worker_in_ray": full / one_worker,
    }
    return {**factors, "product": 2 * math.prod(factors.values()),
            "without_half_batch_and_contention": 2 * factors["allreduce"] * factors["one_worker_in_ray"],
            "note": "value's ratio of medians = 2 x half_batch x contention x allreduce x one_worker_in_ray"}


def _epoch_metrics(run_dir: Path) -> dict[int, dict[str, Any]]:
    """``{epoch: metrics}`` from a Ray Train run's per-epoch checkpoints (``state.pt``), where they have
    ``samples_per_s``."""
    import torch

    out: dict[int, dict[str, Any]] = {}
    for path in run_dir.glob("checkpoint_*/state.pt"):
        metrics = torch.load(path, map_location="cpu", weights_only=True).get("metrics", {})
        if "epoch" in metrics and "samples_per_s" in metrics:
            out[int(metrics["epoch"])] = metrics
    return out
