"""The contract every searcher of ``search_algos`` keeps (issue 16, deliverable 5).

One suite, parametrised over every Tune ``Searcher`` the package exports (Optuna's sampler contract
tests and timm's per-model tests are the pattern, STYLE.md): a new searcher inherits the contracts by
one entry in :data:`CASES`. The searchers are driven directly through Tune's ``Searcher`` API, the way
Tune's ``SearchGenerator`` calls it (``search_algos/base.py``): ``suggest(trial_id)`` while a slot is free
until it returns ``Searcher.FINISHED`` (``None``: not ready), ``on_trial_result`` for a report that holds
the metric (Tune's strict metric check stops any other before the searcher), ``on_trial_complete`` once
per trial (``error=True`` for a failed one), ``save(path)``/``restore(path)`` at experiment checkpoints.
No Ray is started: a trial's metric is a hash of its config (:func:`_value`), so every run is a pure
function of the searcher's arguments and the order of calls, and the suite runs in seconds.

Contracts (each test is parametrised over the searchers; where a searcher's design does not promise a
property, the case says so and the test is not run for it):

1. Seeded determinism: the same seed and the same results give the same suggestions; a different seed
   gives another search where the seed drives a random choice, and the same one where it is documented
   as unused (the fixed list, Algorithm 1 of the macro-micro search).
2. Save/restore mid-run equals the uninterrupted run, also with trials pending at the save (they complete
   on the restored searcher, as after ``Tuner.restore``).
3. Bad results (NaN, +inf, -inf, a missing metric, no result, ``error=True`` with a tempting value) count
   as failures: the search goes on exactly as if those trials had failed, none is ever the best, and the
   search finishes with ``FINISHED``.
4. Concurrency: with several trials outstanding and completions out of order, every trial is counted, the
   configs are distinct where the searcher promises it, completions of unknown or already completed trial
   ids are ignored (documented in each searcher), and the outcome does not depend on the completion order
   where the searcher promises that.
5. Every suggested config is valid for the searcher's space (its own ``from_json``/``validate``), and the
   check itself rejects a config outside the space.
"""

from __future__ import annotations

import functools
import hashlib
import json
import math
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from ray.tune.search import Searcher

import search_algos
from search_algos.base import REFERENCE_KEY
from search_algos.spaces import DetectorHpoSpace, GlobalArch, GlobalSpace, MultipathSpace

METRIC = "score"
TEMPTING = 1e9  # a value that would win under max (its negative under min), were a failure believed
_LIMIT = 400  # suggestions; every case's budget is far below


# ----------------------------------------------------------------------------------------------------------
# The fake objective and the driver


def _value(config: dict[str, Any]) -> float:
    """The metric a trial reports: a hash of its config, in [1, 100)."""
    digest = hashlib.sha256(json.dumps(config, sort_keys=True).encode()).digest()
    return 1.0 + int.from_bytes(digest[:6], "big") % 99_000 / 1000.0


Outcome = tuple[dict[str, Any] | None, bool]  # (result passed to on_trial_complete, error)
Objective = Callable[[int, dict[str, Any], str], Outcome]  # (trial number, config, mode) -> outcome


def _good(_number: int, config: dict[str, Any], _mode: str) -> Outcome:
    return {METRIC: _value(config), "training_iteration": 1}, False


def _bad(kind: str, mode: str) -> Outcome:
    tempting = TEMPTING if mode == "max" else -TEMPTING
    return {
        "nan": ({METRIC: math.nan, "training_iteration": 1}, False),
        "+inf": ({METRIC: math.inf, "training_iteration": 1}, False),
        "-inf": ({METRIC: -math.inf, "training_iteration": 1}, False),
        "missing": ({"other": tempting, "training_iteration": 1}, False),
        "none": (None, False),
        "error": ({METRIC: tempting, "training_iteration": 1}, True),  # reported, then raised
        "failed": (None, True),  # what Tune passes for a trial that raised before reporting
    }[kind]


BAD_KINDS = ("nan", "+inf", "-inf", "missing", "none", "error")


def _every_third(kind: str) -> Objective:
    """Trials 1, 4, 7, ... report ``kind``; the others their hash value."""

    def objective(number: int, config: dict[str, Any], mode: str) -> Outcome:
        return _bad(kind, mode) if number % 3 == 1 else _good(number, config, mode)

    return objective


def _mixed(number: int, config: dict[str, Any], mode: str) -> Outcome:
    """Every bad kind in turn on every third trial (1, 4, 7, ...)."""
    if number % 3 == 1:
        return _bad(BAD_KINDS[(number // 3) % len(BAD_KINDS)], mode)
    return _good(number, config, mode)


def _by_config(number: int, config: dict[str, Any], mode: str) -> Outcome:
    """A function of the config alone: its hash value, or a failure (NaN) for about a quarter of configs."""
    return _bad("nan", mode) if _value(config) < 25.0 else _good(number, config, mode)


def _fifo(outstanding: list[str], rng: random.Random) -> int:
    return 0


# Completion orders of the concurrency tests (seeds of _shuffled). Under 6 and 21 some of macro-micro's
# speculative trials complete after their step was committed from another trial (stale: discarded, counted
# as wasted); under 0 the transfer ranker's trials of a dataset finish out of suggestion order.
_ORDERS = (0, 6, 21)


def _shuffled(outstanding: list[str], rng: random.Random) -> int:
    return rng.randrange(len(outstanding))


@dataclass
class Run:
    """What a drive saw: configs in suggestion order, the finite value each reported (``None``: failed)."""

    searcher: Searcher  # at the end (the restored one after a checkpoint)
    configs: list[dict[str, Any]] = field(default_factory=list)
    values: list[float | None] = field(default_factory=list)
    finished: bool = False
    most_outstanding: int = 0


def _drive(
    case: Case,
    searcher: Searcher,
    *,
    objective: Objective = _good,
    width: int = 1,
    order: Callable[[list[str], random.Random], int] = _fifo,
    checkpoint_after: int | None = None,
    tmp: Path | None = None,
    seed: int = 0,
    strays: bool = False,
    order_seed: int = 1234,
) -> Run:
    """Run the search as Tune would with ``width`` trial slots; complete trials in ``order``.

    ``checkpoint_after=k``: after the k-th completion, ``save`` the searcher, build a fresh one
    (``case.make(seed)``), ``restore`` it and go on with that one (pending trials complete on it).
    ``strays``: after each completion, also complete an unknown trial id and the same trial id again,
    both with a tempting value. ``order_seed`` seeds the choices of ``order``.
    """
    run, outstanding, rng, completed = Run(searcher), [], random.Random(order_seed), 0
    numbers: dict[str, int] = {}
    while True:
        while not run.finished and len(outstanding) < width:
            trial_id = f"trial{len(run.configs):03d}"
            config = run.searcher.suggest(trial_id)
            if config is None:
                break
            if config == Searcher.FINISHED:
                run.finished = True  # Tune asks no more after FINISHED
                break
            assert isinstance(config, dict), f"{case.name} suggested {config!r}"
            numbers[trial_id] = len(run.configs)
            run.configs.append(config)
            run.values.append(None)
            outstanding.append(trial_id)
            assert len(run.configs) <= _LIMIT, f"{case.name} never finished"
        run.most_outstanding = max(run.most_outstanding, len(outstanding))
        if not outstanding:
            assert run.finished, f"{case.name} waits (suggest returned None) with no trial outstanding: Tune would hang"
            return run
        trial_id = outstanding.pop(order(outstanding, rng))
        number = numbers[trial_id]
        result, error = objective(number, run.configs[number], case.mode)
        if result is not None and METRIC in result:
            run.searcher.on_trial_result(trial_id, dict(result))
        run.searcher.on_trial_complete(trial_id, result=None if result is None else dict(result), error=error)
        value = None if error or result is None else result.get(METRIC)
        run.values[number] = value if isinstance(value, float) and math.isfinite(value) else None
        if strays:
            tempting = {METRIC: TEMPTING if case.mode == "max" else -TEMPTING, "training_iteration": 1}
            run.searcher.on_trial_complete("nobody-suggested-this", result=dict(tempting))
            run.searcher.on_trial_complete(trial_id, result=dict(tempting))
        completed += 1
        if completed == checkpoint_after:
            path = str(tmp / f"searcher-{completed}.state")
            run.searcher.save(path)
            run.searcher = case.make(seed)
            run.searcher.restore(path)


# ----------------------------------------------------------------------------------------------------------
# The searchers, each from plain arguments with a small space

_GLOBAL = GlobalSpace(d_min=2, d_max=5, w_min=8, w_max=16, w_step=4)
_MULTIPATH = MultipathSpace(layers=3, scales=2)
_DETECTOR = DetectorHpoSpace()
_FIXED_ARCHS = list(dict.fromkeys(_GLOBAL.sample(np.random.default_rng([5, i])).to_json() for i in range(6)))
_POOL = list(dict.fromkeys(_DETECTOR.sample(np.random.default_rng([2, i])).to_json() for i in range(12)))
_ONLINE = [{"dataset_id": f"on{i}", "name": f"on{i}", "features": {"faces": i + 0.5, "light": 0.5}} for i in range(4)]
_HPO_SPACE = {"lr": ["loguniform", 1e-3, 1e-1], "batch_size": ["choice", 16, 32]}
_ARCH_LR, _ARCH_WD = (1e-4, 1e-2), (1e-5, 1e-3)


def _random(seed: int) -> Searcher:
    return search_algos.RandomArchSearcher(_GLOBAL, num_samples=12, epochs=2, metric=METRIC, mode="max", seed=seed)


def _fixed(seed: int) -> Searcher:
    extras = [{"dataset_id": f"d{i % 2}"} for i in range(len(_FIXED_ARCHS))]
    return search_algos.FixedArchSearcher(_FIXED_ARCHS, epochs=3, metric=METRIC, mode="min", seed=seed,
                                          seeds=[0, 1], extras=extras)  # fmt: skip


def _samos(seed: int) -> Searcher:
    return search_algos.SAMOSSearcher(space=_MULTIPATH, metric=METRIC, mode="min", seed=seed, iterations=12,
                                      calibration=3, chains=2)  # fmt: skip


def _macro_micro(seed: int) -> Searcher:
    settings = search_algos.MacroMicroSettings(d_min=2, d_max=5, w_min=8, w_max=16, w_res=4, e_min_macro=1,
                                               e_min_micro=1)  # fmt: skip
    return search_algos.MacroMicroSearcher(settings=settings, in_channels=1, num_classes=3, metric=METRIC,
                                           mode="max", seed=seed, speculate=3)  # fmt: skip


@functools.cache
def _warm_ranker(seed: int) -> dict[str, Any]:
    """The offline warm-up of :meth:`TransferRankerSearcher.warm_start` (seeded), once per seed."""
    import torch

    torch.set_num_threads(1)
    keys = [_DETECTOR.from_json(text).key() for text in _POOL]
    rng = np.random.default_rng(4)
    offline = [search_algos.TaskResults(f"off{i}", {"faces": float(i), "light": float(rng.random())},
                                        {k: float(rng.random()) for k in keys}) for i in range(3)]  # fmt: skip
    settings = search_algos.RankerSettings(hidden=8, warmup_steps=4, iters_per_task=2, trans_iters=1, batch_size=2)
    warm = search_algos.TransferRankerSearcher.warm_start(
        space=_DETECTOR, pool=_POOL, offline=offline, datasets=_ONLINE, settings=settings, budget=3,
        metric=METRIC, seed=seed,
    )  # fmt: skip
    return warm.ranker.get_state()


def _transfer_ranker(seed: int) -> Searcher:
    pytest.importorskip("torch")  # the ranker is a torch model
    # the searcher warm_start(seed=seed) returns, from the cached warm-up (it copies the ranker the same way)
    return search_algos.TransferRankerSearcher(ranker_state=_warm_ranker(seed), pool=_POOL, space=_DETECTOR,
                                               datasets=_ONLINE, budget=3, metric=METRIC, seed=seed)  # fmt: skip


def _arch_lr(seed: int) -> Searcher:
    return search_algos.ArchLrSearch(num_samples=24, arch_lr=_ARCH_LR, arch_weight_decay=_ARCH_WD, metric=METRIC,
                                     mode="min", seed=seed)  # fmt: skip


def _hpo(seed: int) -> Searcher:
    inner = search_algos.RandomArchSearcher(_GLOBAL, num_samples=24, metric=METRIC, mode="max", seed=seed)
    return search_algos.HpoSearcher(inner, _HPO_SPACE, seed=seed)


# -- contract 5: each searcher's space and config shape ------------------------------------------------------
def _check_global(config: dict[str, Any], *, epochs: int | None = None) -> None:
    # plus, on the evaluations later verdicts are measured against, the scheduler hint REFERENCE_KEY
    assert set(config) - {REFERENCE_KEY} == {"arch", "epochs"} and config.get(REFERENCE_KEY) in (None, True), config
    arch = _GLOBAL.from_json(config["arch"])  # raises InvalidArchitecture outside the bounds
    assert arch.to_json() == config["arch"]
    assert isinstance(config["epochs"], int) and config["epochs"] >= 1, config
    assert epochs is None or config["epochs"] == epochs, config


_check_random = functools.partial(_check_global, epochs=2)


def _check_fixed(config: dict[str, Any]) -> None:
    assert set(config) == {"arch", "epochs", "seed", "dataset_id"}, config
    index = _FIXED_ARCHS.index(config["arch"])  # ValueError: not one of the given list
    assert config["epochs"] == 3 and config["seed"] in (0, 1) and config["dataset_id"] == f"d{index % 2}", config


def _check_samos(config: dict[str, Any]) -> None:
    assert set(config) == {"arch", "epochs", "chain", "step"}, config
    _MULTIPATH.from_json(config["arch"])  # Eq. 7-8 validity and the space's size
    assert config["epochs"] == 0 and config["chain"] in (0, 1) and 0 <= config["step"] < 12, config


def _check_transfer(config: dict[str, Any]) -> None:
    assert set(config) == {"arch", "epochs", "dataset_id", "task"}, config
    _DETECTOR.from_json(config["arch"])
    assert config["arch"] in _POOL, "not a config of the candidate pool"
    assert config["dataset_id"] == _ONLINE[config["task"]]["dataset_id"] and config["epochs"] == 1, config


def _check_arch_lr(config: dict[str, Any]) -> None:
    assert set(config) == {"arch_lr", "arch_weight_decay"}, config
    assert _ARCH_LR[0] <= config["arch_lr"] <= _ARCH_LR[1], config
    assert _ARCH_WD[0] <= config["arch_weight_decay"] <= _ARCH_WD[1], config


def _check_hpo(config: dict[str, Any]) -> None:
    _check_global({k: v for k, v in config.items() if k != "hpo"}, epochs=1)
    hpo = config["hpo"]
    assert set(hpo) == set(_HPO_SPACE) and 1e-3 <= hpo["lr"] <= 1e-1 and hpo["batch_size"] in (16, 32), config


# -- contract 3: each searcher's own idea of its best -------------------------------------------------------
def _optimum(run: Run, mode: str, where: Callable[[dict[str, Any]], bool] = lambda c: True) -> float | None:
    values = [v for c, v in zip(run.configs, run.values) if v is not None and where(c)]
    return (max if mode == "max" else min)(values) if values else None


def _best_seen(run: Run, mode: str) -> None:
    """Random, fixed: the best is the optimum of the finite values reported, and its own config."""
    best = run.searcher.best_result()
    assert best is not None and best["value"] == _optimum(run, mode)
    assert best["arch"] == run.configs[run.values.index(best["value"])]["arch"]


def _best_samos(run: Run, mode: str) -> None:
    best = run.searcher.best_result()
    assert best is not None and best["value"] == _optimum(run, mode)
    arch = run.configs[run.values.index(best["value"])]["arch"]
    assert best["arch_key"] == _MULTIPATH.from_json(arch).key()


def _best_macro_micro(run: Run, mode: str) -> None:
    # Algorithm 1 keeps what its greedy verdicts accepted, not the best seen: a finite value a trial reported
    summary = run.searcher.summary()
    assert summary["phase"] == "done" and summary["final_acc"] in {v for v in run.values if v is not None}


def _best_transfer(run: Run, mode: str) -> None:
    # c*_t of every online dataset: the best finite AP among its B suggestions (None when all failed)
    tasks = run.searcher.summary()["tasks"]
    assert len(tasks) == len(_ONLINE)
    for t, task in enumerate(tasks):
        best = task["results"][task["best"]]["val"] if task["best"] else None
        assert best == _optimum(run, mode, lambda c, t=t: c["task"] == t), (t, task)


def _best_arch_lr(run: Run, mode: str) -> None:
    best = run.searcher.summary()["best_hpo"]
    assert best is not None and best["value"] == _optimum(run, mode)


def _best_hpo(run: Run, mode: str) -> None:
    assert run.searcher.inner.best_result()["value"] == _optimum(run, mode)
    best = run.searcher.summary()["hpo"]["best_params"]
    assert best == run.configs[run.values.index(_optimum(run, mode))]["hpo"]


# -- contract 4: evaluations each counted; what must not depend on the completion order ---------------------
def _counted_evaluations(run: Run) -> tuple[int, ...]:
    summary = run.searcher.summary()
    if isinstance(summary.get("evaluations"), dict):  # macro-micro: committed, or discarded (speculation)
        return (summary["evaluations"]["total"] + summary["wasted"],)
    if "hpo" in summary and isinstance(summary["hpo"], dict):  # the HPO wrapper and its inner searcher
        return (len(summary["hpo"]["trials"]), summary["evaluations"])
    if "trials" in summary:  # ArchLrSearch
        return (summary["trials"],)
    return (summary["evaluations"],)


def _sequence(run: Run) -> Any:
    return run.configs


def _by_step(run: Run) -> Any:
    """SAMOS: each chain's step -> child, and the whole summary (trajectory, T0s, best)."""
    return {(c["chain"], c["step"]): c["arch"] for c in run.configs}, run.searcher.summary()


def _decisions(run: Run) -> Any:
    """Macro-micro: the committed verdicts and the architectures chosen (``wasted`` may differ)."""
    summary = run.searcher.summary()
    return summary["log"], summary["macro_arch"], summary["final_arch"], summary["final_acc"]


def _learnt(run: Run) -> Any:
    """Transfer ranker: the B results of a dataset, whichever finished first, teach the ranker the same
    (same suggestions, same figures, the same ranker weights to the bit)."""
    return run.searcher.summary(), run.searcher.ranker.get_state()


@dataclass(frozen=True)
class Case:
    """One searcher and what its design promises."""

    name: str
    make: Callable[[int], Searcher]  # seed -> a fresh searcher
    mode: str
    check_config: Callable[[dict[str, Any]], None]  # contract 5: raises for a config outside the space
    outside: dict[str, Any]  # keys that take a config outside the space (to show the check can fail)
    check_best: Callable[[Run, str], None]  # contract 3
    width: int  # trial slots in the concurrency runs (what the searcher hands out at once)
    seeded: bool  # the seed drives a random choice (else it is documented as unused)
    distinct: bool  # promises that no two trials get the same config
    order_free: Callable[[Run], Any] | None  # the outcome that must not depend on the completion order


_MULTIPATH_OTHER = MultipathSpace(layers=4, scales=2).sample(np.random.default_rng(0)).to_json()
_OFF_POOL = next(c.to_json() for c in _DETECTOR.enumerate() if c.to_json() not in _POOL)

CASES = [
    Case("random", _random, "max", _check_random, {"arch": GlobalArch.uniform(6, 8).to_json()},
         _best_seen, width=4, seeded=True, distinct=False, order_free=_sequence),
    Case("fixed", _fixed, "min", _check_fixed, {"arch": GlobalArch.uniform(2, 8).to_json()},
         _best_seen, width=4, seeded=False, distinct=True, order_free=_sequence),
    Case("samos", _samos, "min", _check_samos, {"arch": _MULTIPATH_OTHER},
         _best_samos, width=6, seeded=True, distinct=True, order_free=_by_step),
    Case("macro_micro", _macro_micro, "max", _check_global, {"arch": GlobalArch.uniform(2, 20).to_json()},
         _best_macro_micro, width=3, seeded=False, distinct=False, order_free=_decisions),
    Case("transfer_ranker", _transfer_ranker, "max", _check_transfer, {"arch": _OFF_POOL},
         _best_transfer, width=3, seeded=True, distinct=True, order_free=_learnt),
    # TPE: a suggestion depends on which results it was told before, so the completion order matters
    Case("arch_lr", _arch_lr, "min", _check_arch_lr, {"arch_lr": 1.0},
         _best_arch_lr, width=4, seeded=True, distinct=False, order_free=None),
    Case("hpo", _hpo, "max", _check_hpo, {"hpo": {"lr": 0.5, "batch_size": 16}},
         _best_hpo, width=4, seeded=True, distinct=False, order_free=None),
]  # fmt: skip


def _cases(where: Callable[[Case], bool] = lambda c: True) -> list[Any]:
    """The cases ``where`` holds, as pytest params named after the searcher."""
    return [pytest.param(c, id=c.name) for c in CASES if where(c)]


def test_every_exported_searcher_is_a_case() -> None:
    """A new searcher exported by ``search_algos`` must join this suite."""
    exported = {n for n in search_algos.__all__ if isinstance(getattr(search_algos, n), type)
                and issubclass(getattr(search_algos, n), Searcher) and n != "ArchSearcher"}  # fmt: skip
    made = {type(case.make(0)).__name__ for case in CASES}
    assert made == exported


# ----------------------------------------------------------------------------------------------------------
# 1. Seeded determinism


@pytest.mark.parametrize("case", _cases())
def test_the_same_seed_gives_the_same_search(case: Case) -> None:
    runs = [_drive(case, case.make(7), objective=_mixed, width=case.width, order=_shuffled) for _ in range(2)]
    assert len(runs[0].configs) >= 6 and runs[0].finished
    assert runs[0].configs == runs[1].configs
    assert runs[0].searcher.summary() == runs[1].searcher.summary()


@pytest.mark.parametrize("case", _cases(where=lambda c: c.seeded))
def test_another_seed_gives_another_search(case: Case) -> None:
    a = _drive(case, case.make(7), width=case.width, order=_shuffled)
    b = _drive(case, case.make(8), width=case.width, order=_shuffled)
    assert a.configs != b.configs


@pytest.mark.parametrize("case", _cases(where=lambda c: not c.seeded))
def test_a_searcher_without_randomness_ignores_the_seed(case: Case) -> None:
    a = _drive(case, case.make(7), width=case.width, order=_shuffled)
    b = _drive(case, case.make(8), width=case.width, order=_shuffled)
    assert a.configs == b.configs and len(a.configs) >= 6


# ----------------------------------------------------------------------------------------------------------
# 2. Save/restore mid-run equals the uninterrupted run


@pytest.mark.parametrize("pending", [False, True], ids=["sequential", "pending"])
@pytest.mark.parametrize("case", _cases())
def test_restore_mid_run_continues_the_uninterrupted_search(case: Case, pending: bool, tmp_path: Path) -> None:
    """Sequential: save between trials; pending: ``width`` trials out (suggested, not completed) at the save."""
    width = case.width if pending else 1
    order = _shuffled if pending else _fifo
    whole = _drive(case, case.make(3), objective=_mixed, width=width, order=order)
    n = len(whole.configs)
    for k in sorted({1, n // 3, 2 * n // 3}):
        resumed = _drive(case, case.make(3), objective=_mixed, width=width, order=order, checkpoint_after=k,
                         tmp=tmp_path, seed=3)  # fmt: skip
        assert resumed.configs == whole.configs, f"after a restore at completion {k} of {n}"
        assert resumed.searcher.summary() == whole.searcher.summary(), f"after a restore at completion {k} of {n}"
        assert resumed.finished
    if pending:
        assert whole.most_outstanding >= 2, "the pending case had no trial pending"


# ----------------------------------------------------------------------------------------------------------
# 3. Bad results are failures: never the best, the search goes on and finishes


@pytest.mark.parametrize("kind", BAD_KINDS)
@pytest.mark.parametrize("case", _cases())
def test_a_bad_result_counts_as_a_failure_and_never_wins(case: Case, kind: str) -> None:
    bad = _drive(case, case.make(5), objective=_every_third(kind), width=case.width, order=_shuffled)
    failed = _drive(case, case.make(5), objective=_every_third("failed"), width=case.width, order=_shuffled)
    assert bad.finished, "the search did not end with FINISHED"
    assert sum(v is None for v in bad.values) >= 2, "no bad result was reported"
    for config in bad.configs:
        case.check_config(config)
    # the same search as with plain failures: same suggestions, same figures
    assert bad.configs == failed.configs
    assert bad.searcher.summary() == failed.searcher.summary()
    case.check_best(bad, case.mode)


# ----------------------------------------------------------------------------------------------------------
# 4. Concurrency


@pytest.mark.parametrize("case", _cases())
def test_outstanding_trials_out_of_order_are_all_counted(case: Case) -> None:
    for order_seed in _ORDERS:
        run = _drive(case, case.make(2), objective=_mixed, width=case.width, order=_shuffled, order_seed=order_seed)
        assert run.finished and run.most_outstanding >= 2, "no two trials were outstanding"
        assert set(_counted_evaluations(run)) == {len(run.configs)}, f"a completed trial was lost (order {order_seed})"
        if case.distinct:
            texts = [json.dumps(c, sort_keys=True) for c in run.configs]
            assert len(set(texts)) == len(texts), f"two trials got the same config (order {order_seed})"


@pytest.mark.parametrize("case", _cases())
def test_unknown_and_repeated_completions_are_ignored(case: Case) -> None:
    """Every searcher documents (and its code does) that a completion it did not hand out, or one reported
    twice, is ignored: the search is the one without such calls, and their tempting value never wins."""
    plain = _drive(case, case.make(4), objective=_mixed, width=case.width, order=_shuffled)
    stray = _drive(case, case.make(4), objective=_mixed, width=case.width, order=_shuffled, strays=True)
    assert stray.configs == plain.configs
    assert stray.searcher.summary() == plain.searcher.summary()
    case.check_best(stray, case.mode)


@pytest.mark.parametrize("case", _cases(where=lambda c: c.order_free is not None))
def test_the_outcome_does_not_depend_on_the_completion_order(case: Case) -> None:
    """Where the design promises it: random/fixed (a pure function of the seed and the index), SAMOS (each
    chain a pure function of its results, whatever the order), macro-micro (speculation commits exactly the
    sequential search's verdicts), the transfer ranker (a dataset's B trials run side by side; the ranker
    learns from their results once all are in). Not Optuna's TPE: it samples from what it was told so far."""
    # the outcome of a trial is a function of its config alone, so both runs see the same value per config
    sequential = _drive(case, case.make(6), objective=_by_config)
    for order_seed in _ORDERS:
        concurrent = _drive(case, case.make(6), objective=_by_config, width=case.width, order=_shuffled,
                            order_seed=order_seed)  # fmt: skip
        assert concurrent.most_outstanding >= 2 and concurrent.finished
        assert case.order_free(concurrent) == case.order_free(sequential), f"completion order {order_seed}"


# ----------------------------------------------------------------------------------------------------------
# 5. Every config is valid for the searcher's space


@pytest.mark.parametrize("case", _cases())
def test_every_suggested_config_is_valid_in_the_space(case: Case) -> None:
    run = _drive(case, case.make(1), objective=_mixed, width=case.width, order=_shuffled)
    assert run.finished and len(run.configs) >= 6
    for config in run.configs:
        case.check_config(config)
    # the check is not vacuous: a config outside the space, or with a key too many, is refused
    with pytest.raises((AssertionError, ValueError)):
        case.check_config({**run.configs[0], **case.outside})
    with pytest.raises(AssertionError):
        case.check_config({**run.configs[0], "junk": 1})
