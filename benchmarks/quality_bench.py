"""Search quality: does each search beat its simple alternative at the same cost, over seeds (issue 13)?

- ``macro_micro_ri`` (Efficient Global NAS, ``papers/efficient-global-nas-macro-micro.txt`` §4.1): the
  whole ``configs/macro_micro.yaml`` pipeline (search -> retrain the result over ``final_seeds`` training
  seeds -> ``baseline_samples`` random networks of the space -> ``equal_param_samples`` random networks
  within +-``param_band`` of the searched network's size) for seeds 0, 1, 2 on ``cluttered_digits``.
  Value: the mean RI (test accuracy, %) over the seeds; ``holds`` when RI > 0 on every seed (the paper's
  criterion). Beside it, never in ``holds``: the RI at equal parameters (mean ± std), and whether the
  task separates architectures at all: the spread of the random networks' validation accuracy and its
  Spearman correlation with their parameter counts (pooled over seeds; after ``final_epochs``).

- ``monas_samos_vs_random`` (MONAS, ``papers/monas-multipath-oneshot-nas-3d-face-alignment.txt``
  §III-D, Table IV): the whole ``configs/monas.yaml`` pipeline (MNUS supernet -> SAMOS -> random search at
  equal one-shot evaluations on the same supernet -> both winners retrained from scratch and tested; with
  its ablation: a uniform-sampled supernet and Kendall's tau of one-shot vs stand-alone NME) for seeds 0, 1,
  2. Value: the mean over seeds of (random's - SAMOS's) retrained test NME (%, > 0: SAMOS's child is
  better). ``holds`` when SAMOS's mean is below random's both on one-shot validation NME (what both
  searches optimise) and on retrained test NME, and the supernet is trained well enough that SAMOS's
  child's one-shot validation NME is within :data:`MONAS_GAP` points of its stand-alone validation NME
  (mean over seeds of the absolute difference). Beside it: tau (MNUS vs uniform) per seed and mean ± std,
  and per-seed wins.

- ``hyperfd_vs_reference`` (HyperFD, ``papers/hyperfd-online-automl-face-detection-supplement.txt`` Table
  7): the whole ``configs/hyperfd.yaml`` protocol (offline benchmark -> ranker warm-up -> Algorithm 1 over
  ``orders`` random orders of the online domains) on both spaces. Value: the worst space's HyperFD minus
  best-on-reference normalized rank (points, <= 0: HyperFD at or below the reference domain's best config);
  ``holds`` when it is <= 0 on every space (the paper: HyperFD leads). Beside it: the three methods'
  normalized rank mean ± std over the orders, per space. The benchmark's rows (296 per space, about 3
  CPU-hours for the whole table) ship in :data:`HYPERFD_SNAPSHOT`: full mode copies them into a temporary
  store less :data:`SNAPSHOT_CHECK_ROWS` rows per space, which the protocol trains again, and ``holds``
  also asks that they come back within :data:`SNAPSHOT_TOLERANCE` (``detail["snapshot"]``). With
  ``$FACENAS_BENCH_HYPERFD_STORAGE`` the rows are the store of that folder instead (trained there once,
  read back afterwards; ``--quick`` always trains its own small table).

Every decision of a search is taken on validation figures; test figures enter only what is reported.

The seeds of ``macro_micro_ri`` and of ``monas_samos_vs_random`` run side by side, one ``facenas run``
process each with its own embedded Ray (``Hooks.run_experiments``), the operating system sharing the 2
cores: a supernet's training, the annealing chain, a retraining's last seed keep one trial running, and
the other seeds take the second core (one MONAS seed alone kept the CPUs 68 % busy). The figures are those of the seeds one after the
other (each trial is seeded and uses one torch thread; the ``--quick`` figures matched to the last digit);
only the per-seed ``seconds`` are wall times while sharing.

``benchmarks/run.py`` loads this module by path and calls :func:`install` with its registry and helpers;
nothing here imports ``run.py``.
"""

from __future__ import annotations

import contextlib
import functools
import statistics
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, NamedTuple

__all__ = ["NAMES", "hyperfd_vs_reference", "install", "macro_micro_ri", "monas_samos_vs_random"]

NAMES = ("macro_micro_ri", "monas_samos_vs_random", "hyperfd_vs_reference")
SEEDS = (0, 1, 2)
_CONFIG = Path(__file__).resolve().parent.parent / "configs" / "macro_micro.yaml"
_MONAS = Path(__file__).resolve().parent.parent / "configs" / "monas.yaml"
_HYPERFD = Path(__file__).resolve().parent.parent / "configs" / "hyperfd.yaml"
HYPERFD_STORAGE_ENV = "FACENAS_BENCH_HYPERFD_STORAGE"  # a folder whose benchmark store outlives the run
# The whole benchmark table of configs/hyperfd.yaml (2 x 296 rows, about 3 CPU-hours to build): a storage
# folder (HYPERFD_SNAPSHOT/benchmark is a store), written by `python benchmarks/quality_bench.py
# hyperfd-snapshot STORAGE` from a finished `facenas benchmark build configs/hyperfd.yaml --storage STORAGE`.
HYPERFD_SNAPSHOT = Path(__file__).resolve().parent / "data" / "hyperfd"
# Full mode without a kept store starts from the snapshot less these many rows per space (drawn among the
# online domains' cheaper half), trains them again and compares: the table must reproduce on this machine.
SNAPSHOT_CHECK_ROWS = 2
SNAPSHOT_TOLERANCE = 0.01  # AP@50, absolute; on the machine that built it the rows came back bit-identical
# The distance (NME points) within which one-shot NME must come to stand-alone NME for the supernet to count
# as trained: stated before the measurement (issue 13 asks for "a stated distance"); at 6 supernet epochs it
# was about 4 (19 vs 15).
MONAS_GAP = 2.5
# --quick: the same task and pipeline, shorter (a smoke test of the figure, not the figure).
_MONAS_QUICK = {"supernet_epochs": 3, "iterations": 10, "retrain_epochs": 3, "ablation_children": 4}
# --quick: the same task and pipeline at a smaller budget (a smoke test of the figure, not the figure).
_QUICK = {"d_max": 5, "w_max": 16, "e_min_macro": 3, "e_min_micro": 3, "final_epochs": 6, "final_seeds": 1,
          "baseline_samples": 4, "equal_param_samples": 4}  # fmt: skip
# --quick: the same protocol on fewer domains, configs and images, trained shorter (a smoke test of the
# figure, not the figure: at this fidelity the detectors barely learn).
_HYPERFD_QUICK_DATA = {"image_size": 32, "n_images": 60}
_HYPERFD_QUICK = {"domains": ["plain", "mask", "blur"], "pool_size": 6, "budget": 2, "orders": 2,
                  "source_images": 160, "offline_datasets": 3, "offline_configs": 3, "min_images": 40,
                  "epochs": 2, "eval_every": 2, "width_mult": 0.25, "iters_per_task": 5, "trans_iters": 2,
                  "warmup_steps": 20}  # fmt: skip
HYPERFD_METHODS = ("HyperFD", "Best on reference", "Random search")


class Hooks(NamedTuple):
    """What ``run.py`` lends the benchmarks (its helpers, passed in rather than imported)."""

    progress: Callable[[str, str], None]
    local_ray: Callable[[int], contextlib.AbstractContextManager[Any]]
    run_experiment: Callable[[dict[str, Any], Path], tuple[dict[str, Any], float, Path]]
    # several experiments side by side, each its own `facenas run` (the seeds of one benchmark), results in order
    run_experiments: Callable[[Sequence[tuple[dict[str, Any], Path]]], list[tuple[dict[str, Any], float, Path]]]


Registrar = Callable[[str], Callable[[Callable[[bool], dict[str, Any]]], Any]]


def install(
    register: Registrar,
    *,
    progress: Callable[[str, str], None],
    local_ray: Callable[[int], contextlib.AbstractContextManager[Any]],
    run_experiment: Callable[[dict[str, Any], Path], tuple[dict[str, Any], float, Path]],
    run_experiments: Callable[[Sequence[tuple[dict[str, Any], Path]]], list[tuple[dict[str, Any], float, Path]]],
) -> None:
    """Register the search-quality benchmarks with ``register`` (``run.py``'s, which refuses duplicates)."""
    hooks = Hooks(progress=progress, local_ray=local_ray, run_experiment=run_experiment,
                  run_experiments=run_experiments)
    for name, fn in zip(NAMES, (macro_micro_ri, monas_samos_vs_random, hyperfd_vs_reference)):
        register(name)(functools.update_wrapper(functools.partial(fn, hooks=hooks), fn))


def mean_std(values: Sequence[float | None]) -> dict[str, Any]:
    """``{"mean", "std", "n"}`` of the finite values (population std; None when there are none)."""
    finite = [float(v) for v in values if v is not None]
    if not finite:
        return {"mean": None, "std": None, "n": 0}
    return {"mean": statistics.fmean(finite), "std": statistics.pstdev(finite), "n": len(finite)}


def macro_micro_raw(seed: int, *, quick: bool, side_by_side: bool = False) -> dict[str, Any]:
    """``configs/macro_micro.yaml`` for one seed (its quick variant shrinks the budget, not the task).

    ``side_by_side``: for seeds run side by side, without speculation. ``searcher.speculate`` only decides
    what runs while the search waits (the same architecture and figures; ``speculative_speedup`` checks
    it): alone, a seed fills its second core with the likely next candidates (10 of seed 0's 35 search
    trials were discarded); beside other seeds, that core has their work to do.
    """
    import yaml

    raw = yaml.safe_load(_CONFIG.read_text())
    raw.update(name=f"ri-seed{seed}", seed=seed)
    raw["resources"] = {**raw.get("resources", {}), "max_failures": 0}
    if quick:
        bounds = {k: v for k, v in _QUICK.items() if k in ("d_max", "w_max")}
        raw["space"].update(bounds)
        raw["searcher"].update(_QUICK)
    if side_by_side:
        raw["searcher"]["speculate"] = 1
    return raw


def _stage_rows(run_dir: Path, stage: str) -> list[dict[str, Any]]:
    import pandas as pd

    frame = pd.read_parquet(run_dir / "results.parquet")
    ok = frame[(frame["stage"] == stage) & (frame["status"] == "ok")]
    return ok[["params", "value", "test_acc"]].to_dict("records")


def task_separation(rows: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """How much the task separates random networks: val-accuracy spread, and Spearman(val acc, params)."""
    from scipy.stats import spearmanr

    accs = [r["value"] for r in rows]
    if len(rows) < 3:
        return {"networks": len(rows), "val_acc_spread": None, "spearman_acc_params": None}
    rho = spearmanr(accs, [r["params"] for r in rows]).statistic
    return {
        "networks": len(rows),
        "val_acc_min": min(accs),
        "val_acc_max": max(accs),
        "val_acc_spread": max(accs) - min(accs),
        "spearman_acc_params": float(rho),
    }


def macro_micro_ri(quick: bool, *, hooks: Hooks) -> dict[str, Any]:
    """RI of the searched network over random networks (§4.1) and over random networks of its size.

    Returns:
        value = mean RI over seeds 0-2; holds when every seed's RI > 0.
    """
    name, goal = "macro_micro_ri", 0.0
    per_seed, random_rows = [], []
    with tempfile.TemporaryDirectory(prefix="facenas-bench-") as tmp:
        hooks.progress(name, f"seeds {', '.join(map(str, SEEDS))} side by side")
        runs = hooks.run_experiments([(macro_micro_raw(seed, quick=quick, side_by_side=True), Path(tmp) / f"seed{seed}")
                                      for seed in SEEDS])  # fmt: skip
        for seed, (best, seconds, run_dir) in zip(SEEDS, runs):
            baseline = _stage_rows(run_dir, "baseline")
            equal = _stage_rows(run_dir, "baseline_equal")
            random_rows += baseline
            per_seed.append({
                "seed": seed,
                "ri": best["ri"],
                "ri_val": best["ri_val"],
                "ri_equal_params": best.get("ri_equal_params"),
                "ri_equal_params_val": best.get("ri_equal_params_val"),
                "arch": best["arch"],
                "params": best["params"],
                "searched_test_accs": best.get("searched_test_accs"),
                "random_mean_test_acc": best.get("random_mean_test_acc"),
                "random_mean_params": statistics.fmean(r["params"] for r in baseline) if baseline else None,
                "equal_params_mean_test_acc": best.get("equal_params_mean_test_acc"),
                "equal_params_mean_params": best.get("equal_params_mean_params"),
                "random_evaluations": len(baseline),
                "equal_params_evaluations": len(equal),
                "search_evaluations": best["search"]["evaluations"]["total"],
                "macro_summary": best["search"].get("macro_summary"),
                "final_summary": best["search"].get("final_summary"),
                "seconds": seconds,
            })  # fmt: skip
            hooks.progress(name, f"  seed {seed}: RI={best['ri']} (equal params {best.get('ri_equal_params')})")
    ris = [s["ri"] for s in per_seed]
    ri = mean_std(ris)
    return {
        "value": ri["mean"],
        "unit": "%",
        "goal": goal,
        "holds": all(v is not None and v > goal for v in ris),
        "detail": {
            "dataset": "cluttered_digits",
            "seeds": list(SEEDS),
            "ri": ris,
            "ri_mean_std": ri,
            "ri_val_mean_std": mean_std([s["ri_val"] for s in per_seed]),
            "ri_equal_params": [s["ri_equal_params"] for s in per_seed],
            "ri_equal_params_mean_std": mean_std([s["ri_equal_params"] for s in per_seed]),
            "ri_equal_params_val_mean_std": mean_std([s["ri_equal_params_val"] for s in per_seed]),
            "task_separation": task_separation(random_rows),
            "config": str(_CONFIG.name) + (" (quick budget: " + str(_QUICK) + ")" if quick else ""),
            "per_seed": per_seed,
            "paper": "RI > 2 in 5 search runs on CIFAR-10 (§4.1, Table 3); criterion RI > 0 across runs",
        },
    }


def monas_raw(seed: int, *, quick: bool) -> dict[str, Any]:
    """``configs/monas.yaml`` for one seed (its quick variant shortens the budget, not the task)."""
    import yaml

    raw = yaml.safe_load(_MONAS.read_text())
    raw.update(name=f"monas-seed{seed}", seed=seed)
    raw["resources"] = {**raw.get("resources", {}), "max_failures": 0}
    # the uniform supernet serves tau only: its own searches and their winners' retraining (Table IV's other
    # two rows, a third of a seed's CPU time) enter no figure here
    raw["searcher"]["ablation_searches"] = False
    if quick:
        raw["searcher"].update(_MONAS_QUICK)
    return raw


def monas_seed_figures(best: dict[str, Any]) -> dict[str, Any]:
    """One seed's figures from MONAS's best.json: both searches' one-shot and retrained NME, the gap, tau."""
    table = {(r["supernet"], r["search"]): r for r in best["ablation"]}
    main = best["ablation"][0]["supernet"]  # the config's sampling comes first (monas_figures)
    samos, rand = table[(main, "SAMOS")], table[(main, "random")]
    taus = {k: v.get("kendall_tau") for k, v in (best.get("ranking_correlation") or {}).items()}
    return {
        "oneshot_val_nme": {"samos": samos["oneshot_val_nme"], "random": rand["oneshot_val_nme"]},
        "test_nme": {"samos": samos["test_nme"], "random": rand["test_nme"]},
        # SAMOS's child: one-shot validation NME on the supernet - its validation NME trained alone (the
        # mean over its training seeds when it was retrained with several)
        "oneshot_gap": samos["oneshot_val_nme"] - samos.get("standalone_val_nme", best["value"]),
        "standalone_val_nme": samos.get("standalone_val_nme", best["value"]),
        "test_nme_by_seed": {"samos": samos.get("test_nme_by_seed"), "random": rand.get("test_nme_by_seed")},
        "kendall_tau": taus,
        "arch_key": {"samos": samos["arch_key"], "random": rand["arch_key"]},
        "evaluations": {"samos": samos["evaluations"], "random": rand["evaluations"]},
        # how much the architecture matters: the ablation's uniformly drawn children trained alone
        "space_spread": best.get("space_spread") or {},
    }


def _spread_summary(spreads: list[dict[str, Any]]) -> dict[str, Any]:
    """The seeds' ``space_spread`` figures side by side: can a search beat random search in this space?"""
    return {
        "spearman_params": mean_std([s.get("spearman_params") for s in spreads]),
        "val_nme_range": [[s["val_nme"]["min"], s["val_nme"]["max"]] if "val_nme" in s else None for s in spreads],
        "near_best": [s.get("near_best") for s in spreads],
        "of_children": [s.get("children") for s in spreads],
        "winners_vs_best": {who: mean_std([(s.get("winners_vs_best") or {}).get(who) for s in spreads])
                            for who in ("SAMOS", "random")},
        "note": "the ablation's children drawn uniformly from the space, trained alone (validation NME): "
                "spearman_params near -1 and many children near the best mean a flat top that random search "
                "reaches with near certainty",
    }


def monas_samos_vs_random(quick: bool, *, hooks: Hooks) -> dict[str, Any]:
    """SAMOS against random search at equal one-shot evaluations, over seeds (issue 13, deliverable 3).

    Returns:
        value = mean over seeds of random's - SAMOS's retrained test NME (%); holds as the module says.
    """
    name = "monas_samos_vs_random"
    per_seed = []
    with tempfile.TemporaryDirectory(prefix="facenas-bench-") as tmp:
        hooks.progress(name, f"seeds {', '.join(map(str, SEEDS))} side by side")
        runs = hooks.run_experiments([(monas_raw(seed, quick=quick), Path(tmp) / f"seed{seed}") for seed in SEEDS])
        for seed, (best, seconds, _run_dir) in zip(SEEDS, runs):
            figures = {"seed": seed, **monas_seed_figures(best), "seconds": seconds}
            per_seed.append(figures)
            hooks.progress(name, f"  seed {seed}: one-shot {figures['oneshot_val_nme']}  test {figures['test_nme']}")

    def side(key: str, who: str) -> dict[str, Any]:
        return mean_std([s[key][who] for s in per_seed])

    margins = [None if s["test_nme"]["samos"] is None or s["test_nme"]["random"] is None
               else s["test_nme"]["random"] - s["test_nme"]["samos"] for s in per_seed]
    oneshot = {who: side("oneshot_val_nme", who) for who in ("samos", "random")}
    test = {who: side("test_nme", who) for who in ("samos", "random")}
    gap = mean_std([abs(s["oneshot_gap"]) for s in per_seed])  # a distance: one-shot may lie above or below
    samplings = sorted({k for s in per_seed for k in s["kendall_tau"]})
    holds = (
        None not in margins
        and oneshot["samos"]["mean"] < oneshot["random"]["mean"]
        and test["samos"]["mean"] < test["random"]["mean"]
        and gap["mean"] <= MONAS_GAP
    )
    return {
        "value": mean_std(margins)["mean"],
        "unit": "NME points",
        "goal": 0.0,
        "holds": bool(holds),
        "detail": {
            "dataset": "faces3d",
            "seeds": list(SEEDS),
            "oneshot_val_nme_mean_std": oneshot,
            "test_nme_mean_std": test,
            "test_margin": margins,
            "samos_wins": {
                "oneshot": sum(s["oneshot_val_nme"]["samos"] < s["oneshot_val_nme"]["random"] for s in per_seed),
                "test": sum(m is not None and m > 0 for m in margins),
                "of": len(per_seed),
            },
            "oneshot_gap_abs_mean_std": gap,
            "oneshot_gap": [s["oneshot_gap"] for s in per_seed],
            "oneshot_gap_goal": MONAS_GAP,
            "kendall_tau_mean_std": {k: mean_std([s["kendall_tau"].get(k) for s in per_seed]) for k in samplings},
            "space_spread": _spread_summary([s["space_spread"] for s in per_seed]),
            "config": str(_MONAS.name) + (" (quick budget: " + str(_MONAS_QUICK) + ")" if quick else ""),
            "per_seed": per_seed,
            "paper": "Table IV: SAMOS beats random search, and MNUS's tau beats uniform sampling's",
        },
    }


def hyperfd_raw(*, quick: bool) -> dict[str, Any]:
    """``configs/hyperfd.yaml`` (its quick variant: fewer domains, configs and images, shorter training)."""
    import yaml

    raw = yaml.safe_load(_HYPERFD.read_text())
    raw.update(name=f"hyperfd-quality-{time.strftime('%Y%m%d-%H%M%S')}")  # runs in a kept storage stay apart
    if quick:
        raw["data"].update(_HYPERFD_QUICK_DATA)
        raw["searcher"].update(_HYPERFD_QUICK)
    return raw


def hyperfd_figures(table7: Any) -> dict[str, Any]:
    """Per space and method: normalized rank mean ± std over the orders (each order's mean over the domains).

    ``table7``: the protocol's long frame (``RUN_DIR/table7.csv``: space, method, domain, order, ...).
    "Best on reference" is one config whatever the order, so its std is 0.
    """
    figures: dict[str, Any] = {}
    for space, rows in table7.groupby("space"):
        per_order = rows.groupby(["method", "order"])["normalized_rank"].mean()
        figures[str(space)] = {m: {**mean_std(list(per_order[m])), "per_order": [float(v) for v in per_order[m]]}
                               for m in HYPERFD_METHODS if m in per_order.index.get_level_values(0)}
    return figures


def _row_key(row: dict[str, Any]) -> tuple[Any, ...]:
    return (row["space"], row["arch_key"], row["dataset_id"], int(row["fidelity"]), int(row["seed"]), row["protocol"])


def snapshot_check_rows(
    snapshot: Path, domains: Sequence[str], per_space: int, *, seed: int = 0
) -> list[dict[str, Any]]:
    """The snapshot's rows that the benchmark trains again: ``per_space`` per space, seeded, drawn among the
    rows of the online ``domains`` whose build took at most the space's median time (the check stays short)."""
    import numpy as np

    from orchestrator.store import BenchmarkStore

    store = BenchmarkStore(str(snapshot / "benchmark"))
    online = {d["dataset_id"] for d in store.datasets() if d["name"] in set(domains)}
    rows = [r for r in store.rows() if r["dataset_id"] in online]
    picked = []
    for space in sorted({r["space"] for r in rows}):
        pool = sorted((r for r in rows if r["space"] == space), key=lambda r: (r["cost_s"], _row_key(r)))
        pool = pool[: (len(pool) + 1) // 2]
        draw = np.random.default_rng([seed, len(picked)]).choice(len(pool), min(per_space, len(pool)), replace=False)
        picked += [pool[i] for i in sorted(draw)]
    return picked


def seed_from_snapshot(snapshot: Path, storage: Path, leave_out: Sequence[dict[str, Any]] = ()) -> int:
    """Copy the snapshot's rows (less ``leave_out``) and datasets into ``storage``'s store; returns the rows copied."""
    from orchestrator.store import BenchmarkStore

    source, target = BenchmarkStore(str(snapshot / "benchmark")), BenchmarkStore(str(storage / "benchmark"))
    skip = {_row_key(r) for r in leave_out}
    rows = [r for r in source.rows() if _row_key(r) not in skip]
    copied = sum(target.put_many(rows))
    for d in source.datasets():
        target.put_dataset(d["dataset_id"], d["name"], d["features"])
    return copied


def snapshot_reproduced(held: Sequence[dict[str, Any]], storage: Path) -> dict[str, Any]:
    """The held-out rows as this run trained them again, against the snapshot's: the largest AP differences."""
    from orchestrator.store import BenchmarkStore

    now = {_row_key(r): r for r in BenchmarkStore(str(storage / "benchmark")).rows()}
    diffs: dict[str, list[float]] = {"val_ap50": [], "test_ap50": []}
    missing = 0
    for row in held:
        again = now.get(_row_key(row))
        if again is None:  # left out and not trained again: the run failed before it, or never needed it
            missing += 1
            continue
        for metric, found in diffs.items():
            found.append(abs(float(again["metrics"][metric]) - float(row["metrics"][metric])))
    largest = {metric: max(found) if found else None for metric, found in diffs.items()}
    return {
        "rows": len(held),
        "not_trained": missing,
        "max_abs_diff": largest,
        "tolerance": SNAPSHOT_TOLERANCE,
        "reproduces": bool(held) and missing == 0 and all(v is not None and v <= SNAPSHOT_TOLERANCE
                                                          for v in largest.values()),
        "held_out": [{"space": r["space"], "dataset_id": r["dataset_id"], "arch_key": r["arch_key"]} for r in held],
    }


def write_hyperfd_snapshot(storage: Path, out: Path = HYPERFD_SNAPSHOT) -> dict[str, int]:
    """``out`` <- the rows of ``configs/hyperfd.yaml``'s plan from ``storage``'s store, one part file per table.

    Raises:
        ValueError: the store lacks rows of the plan (the build is not finished), or ``out`` exists.
    """
    import shutil

    from orchestrator.config import load_config
    from orchestrator.methods.hyperfd.benchmark import missing_jobs
    from orchestrator.methods.hyperfd.plan import Plan, same_protocol
    from orchestrator.store import BenchmarkStore
    from search_algos.spaces import decode_arch

    if not (storage / "benchmark").is_dir():
        raise ValueError(f"{storage} holds no benchmark store (no {storage / 'benchmark'}); give the --storage of a "
                         f"finished `facenas benchmark build {_HYPERFD.relative_to(_HYPERFD.parent.parent)}`")
    if out.exists():
        raise ValueError(f"{out} exists; remove it first (the snapshot is replaced whole)")
    config, _raw = load_config(str(_HYPERFD))
    plan = Plan.from_config(config)
    source = BenchmarkStore(str(storage / "benchmark"))
    missing = {space: len(missing_jobs(plan, space, source)) for space in config.searcher.spaces}
    if any(missing.values()):
        raise ValueError(f"{storage}: the build is not finished ({missing} rows missing); run `facenas benchmark "
                         f"build {_HYPERFD.relative_to(_HYPERFD.parent.parent)} --storage {storage}` first")
    ids = set(plan.recipes())
    keys = {space: {(j["dataset_id"], decode_arch(space, j["arch"]).key()) for j in plan.jobs(space)}
            for space in config.searcher.spaces}  # fmt: skip
    rows = [r for space in config.searcher.spaces for r in source.rows(space=space)
            if same_protocol(r, plan, space) and (r["dataset_id"], r["arch_key"]) in keys[space]]
    target = BenchmarkStore(str(out / "benchmark"), max_parts=1)  # one file per table
    try:
        target.put_many(rows)
        for d in source.datasets():
            if d["dataset_id"] in ids:
                target.put_dataset(d["dataset_id"], d["name"], d["features"])
    except BaseException:
        shutil.rmtree(out, ignore_errors=True)
        raise
    return {space: sum(r["space"] == space for r in rows) for space in config.searcher.spaces}


def hyperfd_vs_reference(quick: bool, *, hooks: Hooks) -> dict[str, Any]:
    """HyperFD against the reference domain's best config and random picks, Table 7 (issue 13, deliverable 4).

    Returns:
        value = the largest (over spaces) HyperFD - best-on-reference mean normalized rank (points); holds when
        it is <= 0 (HyperFD at or below best-on-reference on every space).
    """
    import os

    import pandas as pd

    from orchestrator.paths import RunPaths

    name = "hyperfd_vs_reference"
    kept = os.environ.get(HYPERFD_STORAGE_ENV, "")
    # full mode starts from the shipped table (less the rows it trains again to check it), unless a kept
    # store is named; --quick trains its own small table
    snapshot = HYPERFD_SNAPSHOT if not quick and not kept and (HYPERFD_SNAPSHOT / "benchmark").is_dir() else None
    held: list[dict[str, Any]] = []
    with contextlib.ExitStack() as stack:
        tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="facenas-bench-")))
        storage = Path(kept) / ("quick" if quick else "full") if kept else tmp / "storage"
        if snapshot is not None:
            held = snapshot_check_rows(snapshot, hyperfd_raw(quick=False)["searcher"]["domains"], SNAPSHOT_CHECK_ROWS)
            copied = seed_from_snapshot(snapshot, storage, held)
            hooks.progress(name, f"store seeded from {snapshot}: {copied} rows; {len(held)} left out to train again")
        stack.enter_context(hooks.local_ray(2))
        keep = "" if kept else f" (temporary; set {HYPERFD_STORAGE_ENV} to keep its rows for the next run)"
        hooks.progress(name, f"store {storage / 'benchmark'}{keep}")
        best, seconds, run_dir = hooks.run_experiment(hyperfd_raw(quick=quick), storage)
        check = snapshot_reproduced(held, storage) if snapshot is not None else None
        table = pd.read_csv(run_dir / "table7.csv")
        paths = RunPaths.of(run_dir)
        built = {stage: len(pd.read_parquet(paths.stage_evaluations(stage)))
                 for stage in sorted(p.name for p in run_dir.glob("benchmark-*"))
                 if paths.stage_evaluations(stage).is_file()}  # fmt: skip
    figures = hyperfd_figures(table)
    margins = {space: f["HyperFD"]["mean"] - f["Best on reference"]["mean"] for space, f in figures.items()}
    for space, margin in margins.items():
        hooks.progress(name, f"  {space}: HyperFD - best on reference = {margin:+.1f} points")
    if check is not None:
        trained = check["rows"] - check["not_trained"]
        hooks.progress(name, f"  snapshot rows trained again: {trained} of {check['rows']}, largest AP@50 difference "
                             f"{check['max_abs_diff']} (tolerance {SNAPSHOT_TOLERANCE})")
    return {
        "value": max(margins.values()),
        "unit": "normalized-rank points",
        "goal": 0.0,
        # from the shipped table only when it reproduces here: else the figure is another machine's
        "holds": all(m <= 0 for m in margins.values()) and (check is None or check["reproduces"]),
        "detail": {
            "dataset": "detection",
            "normalized_rank_mean_std": figures,
            "margin_vs_reference": margins,
            "orders": best.get("orders"),
            "seconds": seconds,
            "rows_trained": built,
            "storage": str(storage) if kept else "temporary",
            "snapshot": None if snapshot is None else {"path": str(snapshot.relative_to(snapshot.parent.parent.parent)),
                                                       **check},
            "config": str(_HYPERFD.name) + (" (quick: " + str({**_HYPERFD_QUICK_DATA, **_HYPERFD_QUICK}) + ")"
                                            if quick else ""),
            "paper": "Table 7: HyperFD has the lowest normalized rank on both spaces",
        },
    }


def main(argv: Sequence[str] | None = None) -> int:
    """``python benchmarks/quality_bench.py hyperfd-snapshot STORAGE [--out DIR]``: write the shipped table."""
    import argparse
    import sys

    parser = argparse.ArgumentParser(prog="benchmarks/quality_bench.py", description="search-quality benchmark data")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    snap = sub.add_parser("hyperfd-snapshot", help="write the HyperFD benchmark table of a finished build")
    snap.add_argument("storage", help="the --storage of `facenas benchmark build configs/hyperfd.yaml`")
    snap.add_argument("--out", default=str(HYPERFD_SNAPSHOT), help=f"folder to write (default {HYPERFD_SNAPSHOT})")
    args = parser.parse_args(argv)
    try:
        counts = write_hyperfd_snapshot(Path(args.storage), Path(args.out))
    except ValueError as exc:
        print(f"{parser.prog}: {exc}", file=sys.stderr)
        return 2
    print(f"wrote {args.out}: " + ", ".join(f"{space} {n} rows" for space, n in counts.items()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
