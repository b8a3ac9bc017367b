"""Every searcher as a library, through plain Ray Tune (issue 15, deliverables 2 and 3).

Each searcher of ``search_algos`` (the ``HpoSearcher`` wrapper of Optuna draws included) is built from plain
arguments, wrapped in Tune's ``ConcurrencyLimiter`` and run by a bare ``tune.Tuner`` over a function
trainable of this module, without facenas's CLI or pipeline. Ray's invalid-value pattern
(``ray/tune/tests/test_searchers.py``, ``InvalidValuesTest``): the trainable reports NaN, +inf or -inf,
or raises, for some configs. Each run is interrupted after half of its trials (Tune's own stop signal,
sent by a callback, as Ctrl-C would) and continued with ``Tuner.restore(path, trainable)``; then

* the search finished, and the searcher's best (read from the state Tune saved, restored into a fresh
  searcher: so that state stays loadable) is a finite value that a trial reported, the optimum of those
  for the searchers whose best is the best seen; the JSON-state searchers' saved state is strict JSON;
* the configs suggested, in trial order, equal those of the same searcher driven without interruption
  (:func:`_drive`: the same seed, the same outcomes, suggest/complete one trial at a time, as Tune calls
  it under ``ConcurrencyLimiter(max_concurrent=1)``): the restore resumed the searcher exactly.

The outcome of a trial is a pure function of its config (a hash with a per-searcher salt, chosen so that
every kind occurs and one trial raises: a raising trial's actor is replaced, about 4 s on 2 cores). One
trial at a time makes the sequence of suggestions a function of the seed and the results alone, also
for Optuna's TPE, whose suggestions depend on which results it was told before.

The README's example ("Using the searchers in your own Tune code") is extracted and run here too.
"""

from __future__ import annotations

import functools
import hashlib
import json
import math
import os
import re
import signal
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from ray import tune
from ray.tune.search import ConcurrencyLimiter, Searcher

from search_algos.base import REFERENCE_KEY

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
METRIC = "score"
_INVALID = {"nan": math.nan, "+inf": math.inf, "-inf": -math.inf}
_KINDS = ("nan", "+inf", "-inf", "raise")


# ----------------------------------------------------------------------------------------------------------
# The trainable: a trial's outcome is a pure function of what the searcher suggested


def _outcome(config: dict[str, Any]) -> tuple[str, float]:
    """``(kind, value)``: kind is one of ``nan, +inf, -inf, raise`` (each 1 in 8) or ``ok`` with a value.

    ``config["salt"]`` (the case's salt, from ``param_space``) varies the pattern between searchers.
    """
    # what is evaluated: not the salt, nor a scheduler hint (search_algos.base.REFERENCE_KEY)
    suggested = {k: v for k, v in config.items() if k not in ("salt", REFERENCE_KEY)}
    digest = hashlib.sha256((config["salt"] + json.dumps(suggested, sort_keys=True)).encode()).hexdigest()
    h = int(digest, 16)
    kind = {0: "nan", 1: "+inf", 2: "-inf", 3: "raise"}.get(h % 8, "ok")
    return kind, 1.0 + (h // 8) % 990 / 10.0


def _trainable(config: dict[str, Any]) -> None:
    kind, value = _outcome(config)
    if kind == "raise":
        raise RuntimeError("this trial fails on purpose (invalid-value test)")
    tune.report({METRIC: _INVALID.get(kind, value)})


def _dirname(trial: Any) -> str:
    # the experiment tag starts with the trial's number, which orders trials across a restore too
    return f"trial-{int(trial.experiment_tag.split('_', 1)[0]):04d}-{trial.trial_id}"


class _InterruptAfter(tune.Callback):
    """Sends Tune's stop signal (SIGUSR1, handled like Ctrl-C) once ``after`` trials ended, if ``armed``
    exists (the flag is removed, so the restored run, which unpickles this callback, runs to the end)."""

    def __init__(self, after: int, armed: Path) -> None:
        self.after, self.armed, self.ended = after, armed, 0

    def _ended(self) -> None:
        self.ended += 1
        if self.ended >= self.after and self.armed.exists():
            self.armed.unlink()
            os.kill(os.getpid(), signal.SIGUSR1)

    def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._ended()

    def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._ended()


# ----------------------------------------------------------------------------------------------------------
# The searchers, each from plain arguments


def _global_space() -> Any:
    from search_algos.spaces import GlobalSpace

    return GlobalSpace(d_min=2, d_max=5, w_min=8, w_max=16, w_step=4)


def _random() -> Searcher:
    from search_algos import RandomArchSearcher

    # num_samples=None: the budget is TuneConfig's num_samples (Case.tune_samples)
    return RandomArchSearcher(_global_space(), metric=METRIC, mode="max", seed=3)


def _fixed() -> Searcher:
    from search_algos import FixedArchSearcher

    space = _global_space()
    archs = [space.sample(np.random.default_rng([5, i])).to_json() for i in range(9)]
    return FixedArchSearcher(archs, epochs=2, metric=METRIC, mode="min", seeds=[0, 1])


def _samos() -> Searcher:
    from search_algos import SAMOSSearcher
    from search_algos.spaces import MultipathSpace

    return SAMOSSearcher(space=MultipathSpace(layers=3, scales=2), metric=METRIC, mode="min", seed=1,
                         iterations=14, calibration=3)  # fmt: skip


def _macro_micro() -> Searcher:
    from search_algos import MacroMicroSearcher, MacroMicroSettings

    settings = MacroMicroSettings(d_min=2, d_max=5, w_min=8, w_max=16, w_res=4, e_min_macro=1, e_min_micro=1)
    return MacroMicroSearcher(settings=settings, in_channels=1, num_classes=3, metric=METRIC, mode="max", seed=0)


def _transfer_ranker() -> Searcher:
    pytest.importorskip("torch")  # the ranker is a torch model
    from search_algos import RankerSettings, TaskResults, TransferRankerSearcher
    from search_algos.spaces import DetectorHpoSpace

    space = DetectorHpoSpace()
    pool = list(dict.fromkeys(space.sample(np.random.default_rng([2, i])).to_json() for i in range(10)))
    keys = [space.from_json(text).key() for text in pool]
    rng = np.random.default_rng(4)
    offline = [TaskResults(f"off{i}", {"faces": float(i), "light": float(rng.random())},
                           {k: float(rng.random()) for k in keys}) for i in range(3)]  # fmt: skip
    online = [{"dataset_id": f"on{i}", "features": {"faces": i + 0.5, "light": 0.5}} for i in range(4)]
    settings = RankerSettings(hidden=8, warmup_steps=4, iters_per_task=2, trans_iters=1, batch_size=2)
    return TransferRankerSearcher.warm_start(space=space, pool=pool, offline=offline, datasets=online,
                                             settings=settings, budget=3, metric=METRIC, seed=0)  # fmt: skip


def _arch_lr() -> Searcher:
    from search_algos import ArchLrSearch

    return ArchLrSearch(num_samples=12, arch_lr=(1e-4, 1e-2), arch_weight_decay=(1e-5, 1e-3), metric=METRIC,
                        mode="min", seed=0)  # fmt: skip


def _hpo() -> Searcher:
    from search_algos.hpo import HpoSearcher
    from search_algos import RandomArchSearcher

    inner = RandomArchSearcher(_global_space(), num_samples=12, metric=METRIC, mode="max", seed=2)
    return HpoSearcher(inner, {"lr": ["loguniform", 1e-3, 1e-1], "batch_size": ["choice", 16, 32]}, seed=2)


# -- each searcher's own idea of its best ----------------------------------------------------------------
Trials = list[tuple[dict[str, Any], str, float]]  # (suggested config, kind, value) in trial order


def _best_seen(searcher: Any, trials: Trials, mode: str) -> None:
    """The searcher's best is the optimum of the finite values reported (Random, Fixed, SAMOS)."""
    values = [v for _c, kind, v in trials if kind == "ok"]
    assert searcher.best_result()["value"] == (max(values) if mode == "max" else min(values))


def _best_macro_micro(searcher: Any, trials: Trials, mode: str) -> None:
    # Algorithm 1 keeps what its greedy verdicts accepted, not the best seen: finite, and reported.
    acc = searcher.best_result()["acc"]
    assert acc is not None and acc in {v for _c, kind, v in trials if kind == "ok"}
    assert searcher.summary()["phase"] == "done"


def _best_transfer(searcher: Any, trials: Trials, mode: str) -> None:
    # c*_t of every online dataset: the best finite AP among its B suggestions (None when all failed)
    tasks = searcher.summary()["tasks"]
    assert len(tasks) == len(searcher.datasets)
    for t, task in enumerate(tasks):
        values = [v for c, kind, v in trials if c["task"] == t and kind == "ok"]
        best = task["results"][task["best"]]["val"] if task["best"] else None
        assert best == (max(values) if values else None)


def _best_arch_lr(searcher: Any, trials: Trials, mode: str) -> None:
    values = [v for _c, kind, v in trials if kind == "ok"]
    assert searcher.summary()["best_hpo"]["value"] == min(values)
    # Optuna was told only the finite values: the rest are FAIL trials, never its best
    study = searcher._ot_study
    complete = [t.value for t in study.trials if t.state.name == "COMPLETE"]
    assert sorted(complete) == sorted(values) and study.best_value == min(values)


def _best_hpo(searcher: Any, trials: Trials, mode: str) -> None:
    values = [v for _c, kind, v in trials if kind == "ok"]
    assert searcher.inner.best_result()["value"] == max(values)
    told = searcher.summary()["hpo"]["trials"]
    assert sorted(t["value"] for t in told if t["value"] is not None) == sorted(values)
    best = max((t for t in told if t["value"] is not None), key=lambda t: t["value"])
    assert searcher.summary()["hpo"]["best_params"] == best["params"]


@dataclass(frozen=True)
class Case:
    """One searcher: how to build it, which way is better, how to read its best."""

    name: str
    make: Callable[[], Searcher]
    mode: str
    check_best: Callable[[Any, Trials, str], None]
    salt: str  # varies the outcomes (see the module docstring)
    json_state: bool = True  # ArchSearcher's strict-JSON state (Optuna's pickles its own)
    tune_samples: int = -1  # TuneConfig's num_samples: -1 = until the searcher says FINISHED


CASES = [
    Case("random", _random, "max", _best_seen, "random-2", tune_samples=12),
    Case("fixed", _fixed, "min", _best_seen, "fixed-11"),
    Case("samos", _samos, "min", _best_seen, "samos-1"),
    Case("macro_micro", _macro_micro, "max", _best_macro_micro, "macro_micro-5"),
    Case("transfer_ranker", _transfer_ranker, "max", _best_transfer, "transfer_ranker-0"),
    Case("arch_lr", _arch_lr, "min", _best_arch_lr, "arch_lr-6", json_state=False),
    Case("hpo", _hpo, "max", _best_hpo, "hpo-8"),
]


# ----------------------------------------------------------------------------------------------------------
# Runs


def _drive(case: Case, searcher: Searcher | None = None) -> Trials:
    """The uninterrupted search, in this process: suggest, run the trainable's outcome, complete; repeat.

    Tune under ``ConcurrencyLimiter(max_concurrent=1)`` calls the searcher the same way: one suggestion,
    its completion (``result`` with the reported value, or ``error=True`` for a raise), the next one.
    """
    searcher = searcher or case.make()
    trials: Trials = []
    while case.tune_samples < 0 or len(trials) < case.tune_samples:
        trial_id = f"drive{len(trials)}"
        config = searcher.suggest(trial_id)
        if config == Searcher.FINISHED:
            break
        assert config is not None, "with one trial at a time a searcher never waits"
        kind, value = _outcome({"salt": case.salt, **config})
        if kind == "raise":
            searcher.on_trial_complete(trial_id, None, error=True)
        else:
            searcher.on_trial_complete(trial_id, {METRIC: _INVALID.get(kind, value)})
        trials.append((config, kind, value))
        assert len(trials) < 500, "the search never finished"
    return trials


@functools.cache
def _reference(case: Case) -> Trials:
    """:func:`_drive` of a fresh searcher, once per case."""
    return _drive(case)


def _interrupt_after(case: Case) -> int:
    """Trials that end before the interruption: up to the raising one, so that no actor is started to
    replace the raising trial's before the restore (each costs seconds)."""
    return [kind for _c, kind, _v in _reference(case)].index("raise") + 1


@dataclass
class Run:
    path: Path  # the experiment
    trials: Trials  # in trial order
    errors: int
    before: Trials  # the trials of the interrupted part


def _fit(case: Case, path: Path, callbacks: list | None = None, *, restore: bool = False) -> Any:
    if restore:
        return tune.Tuner.restore(str(path), trainable=_trainable).fit()
    tuner = tune.Tuner(
        _trainable,
        param_space={"salt": case.salt},  # constants beside the searcher's suggestions
        tune_config=tune.TuneConfig(
            search_alg=ConcurrencyLimiter(case.make(), max_concurrent=1),
            num_samples=case.tune_samples,
            reuse_actors=True,
            trial_dirname_creator=_dirname,
        ),
        run_config=tune.RunConfig(name=path.name, storage_path=str(path.parent), callbacks=callbacks, verbose=0),
    )
    return tuner.fit()


def _trials(grid: Any) -> Trials:
    # params.json: a restored grid has no config for a trial that failed before the restore
    configs = [json.loads((Path(r.path) / "params.json").read_text()) for r in grid]
    ordered = sorted(zip((Path(r.path).name for r in grid), configs))
    return [({k: v for k, v in c.items() if k != "salt"}, *_outcome(c)) for _name, c in ordered]


@pytest.fixture(scope="module")
def runs(ray_local: Any, tmp_path_factory: pytest.TempPathFactory) -> Callable[[Case], Run]:
    """``runs(case)``: the case's search through Tune, interrupted after half of the trials of
    :func:`_drive` and resumed with ``Tuner.restore``; made on first use, once per module."""
    root = tmp_path_factory.mktemp("searchers")
    made: dict[str, Run] = {}

    def get(case: Case) -> Run:
        if case.name not in made:
            path, armed = root / case.name, root / f"{case.name}.armed"
            armed.touch()
            before = _trials(_fit(case, path, [_InterruptAfter(_interrupt_after(case), armed)]))
            assert not armed.exists(), "the run ended before it was interrupted"
            grid = _fit(case, path, restore=True)
            made[case.name] = Run(path, _trials(grid), len(grid.errors), before)
        return made[case.name]

    return get


def _restored(case: Case, run: Run) -> Any:
    """A fresh searcher with the state Tune saved last (the file Tune writes beside the experiment)."""
    searcher = case.make()
    searcher.restore_from_dir(str(run.path))
    return searcher


def _strict(text: str) -> Any:
    def refuse(token: str) -> None:
        raise ValueError(f"not strict JSON: {token}")

    return json.loads(text, parse_constant=refuse)


# ----------------------------------------------------------------------------------------------------------
# Tests


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_outcomes_cover_every_invalid_kind(case: Case) -> None:
    """The salt does its job: without Ray, the whole search meets NaN, +inf, -inf and one raise, and a
    reported invalid value comes before the raise (the interruption) with trials after it."""
    kinds = [kind for _c, kind, _v in _reference(case)]
    assert set(_KINDS) <= set(kinds) and "ok" in kinds and kinds.count("raise") == 1, kinds
    before = kinds[: _interrupt_after(case)]
    assert set(before) & set(_INVALID) and len(before) < len(kinds), kinds


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_invalid_values_finish_the_search_and_never_win(case: Case, runs: Callable[[Case], Run]) -> None:
    run = runs(case)
    kinds = [kind for _c, kind, _v in run.trials]
    assert set(_KINDS) <= set(kinds) and run.errors == kinds.count("raise")
    assert {"raise", *_INVALID} & {kind for _c, kind, _v in run.before} >= {"raise"}, "failures before the restore"
    searcher = _restored(case, run)  # the saved state stays loadable
    case.check_best(searcher, run.trials, case.mode)
    assert searcher.suggest("one-more") == Searcher.FINISHED or case.tune_samples > 0, "the search finished"
    if case.json_state:
        saved = _strict(max(run.path.glob("searcher-state-*.pkl")).read_text())  # Tune's name for the file
        assert saved["class"] == type(searcher).__name__


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_tuner_restore_resumes_the_same_search(case: Case, runs: Callable[[Case], Run]) -> None:
    run = runs(case)
    assert 0 < len(run.before) < len(run.trials), "the run was interrupted, and resumed"
    assert [c for c, _k, _v in run.trials] == [c for c, _k, _v in _reference(case)]


def test_searchers_are_importable_from_the_package_without_tune_for_spaces() -> None:
    import subprocess
    import sys

    code = (
        "import sys, search_algos.spaces\n"
        "assert 'ray.tune' not in sys.modules and 'optuna' not in sys.modules, 'spaces pulled in Tune'\n"
        "from search_algos import (ArchLrSearch, FixedArchSearcher, HpoSearcher, MacroMicroSearcher,\n"
        "                          RandomArchSearcher, SAMOSSearcher, TransferRankerSearcher)\n"
        "import search_algos\n"
        "assert all(hasattr(search_algos, n) for n in search_algos.__all__)\n"
        "assert 'torch' not in sys.modules\n"
    )
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr


# -- README ------------------------------------------------------------------------------------------------
_SECTION = "## Using the searchers in your own Tune code"


def readme_example() -> str:
    """The first ``python`` code block of the README's section on using the searchers in Tune code."""
    text = (REPO / "README.md").read_text()
    assert _SECTION in text, f"README.md has no section {_SECTION!r}"
    section = text.split(_SECTION, 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```python\n(.*?)```", section, flags=re.S)
    assert blocks, f"README.md's section {_SECTION!r} has no python code block"
    return blocks[0]


def test_readme_example_runs_as_written(ray_local: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)  # the example writes under the working directory
    namespace: dict[str, Any] = {"__name__": "readme_example"}
    exec(compile(readme_example(), "README.md", "exec"), namespace)  # noqa: S102 - our own README
    best = namespace["best"]
    assert math.isfinite(best.metrics["val_nme"]) and namespace["space"].from_json(best.config["arch"])
    assert not namespace["results"].errors
    # run again, as after an interruption: the finished experiment is restored, nothing new is suggested
    exec(compile(readme_example(), "README.md", "exec"), namespace)  # noqa: S102
    assert len(namespace["results"]) == len(list((tmp_path / "tune-runs" / "samos-demo").glob("my_trainable_*")))
