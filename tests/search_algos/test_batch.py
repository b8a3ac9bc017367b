"""search_algos.batch.BatchSearcher: several configs per trial, the inner searcher none the wiser.

Driven through Tune's Searcher API as tests/search_algos/test_contract.py drives searchers (no Ray): a
child's metric is a hash of its config, so a batched search and the same search unbatched can be compared
decision for decision.
"""

from __future__ import annotations

import hashlib
import json
import math
import random
from typing import Any

import numpy as np
import pytest
from ray.tune.search import Searcher

from search_algos.batch import CHILDREN_KEY, BatchSearcher, child_id
from search_algos.fixed import FixedArchSearcher
from search_algos.random_search import RandomArchSearcher
from search_algos.samos import SAMOSSearcher
from search_algos.spaces import GlobalSpace, MultipathSpace

METRIC = "score"
_GLOBAL = GlobalSpace(d_min=2, d_max=5, w_min=8, w_max=16, w_step=4)
_MULTIPATH = MultipathSpace(layers=3, scales=2)


def _value(config: dict[str, Any]) -> float:
    digest = hashlib.sha256(json.dumps(config, sort_keys=True).encode()).digest()
    return 1.0 + int.from_bytes(digest[:6], "big") % 99_000 / 1000.0


def _random(seed: int = 0) -> RandomArchSearcher:
    return RandomArchSearcher(_GLOBAL, num_samples=11, epochs=1, metric=METRIC, mode="min", seed=seed)


def _samos(seed: int = 0) -> SAMOSSearcher:
    return SAMOSSearcher(space=_MULTIPATH, metric=METRIC, mode="min", seed=seed, iterations=10, calibration=3,
                         chains=2)  # fmt: skip


def _drive(searcher: Searcher, *, width: int, order_seed: int = 0, fail: set[int] = frozenset(),
           save_after: int | None = None, make: Any = None, tmp: Any = None) -> tuple[Searcher, list[list[dict]]]:
    """Run as Tune would with ``width`` slots, completing trials in a seeded random order.

    Trial numbers in ``fail`` raise (``error=True``, no result). ``save_after=k``: after the k-th completion,
    save, build ``make()``, restore, and go on with it. Returns the searcher at the end and each trial's
    children configs (a plain config counts as a batch of one).
    """
    rng, outstanding, trials, done, finished = random.Random(order_seed), [], [], 0, False
    while True:
        while not finished and len(outstanding) < width:
            trial_id = f"t{len(trials):03d}"
            config = searcher.suggest(trial_id)
            if config is None:
                break
            if config == Searcher.FINISHED:
                finished = True
                break
            trials.append(config.get(CHILDREN_KEY, [config]))
            outstanding.append((trial_id, len(trials) - 1))
            assert len(trials) < 200
        if not outstanding:
            assert finished, "waits with nothing outstanding: Tune would hang"
            return searcher, trials
        trial_id, number = outstanding.pop(rng.randrange(len(outstanding)))
        if number in fail:
            searcher.on_trial_complete(trial_id, None, error=True)
        else:
            children = [{METRIC: _value(c)} for c in trials[number]]
            result = {CHILDREN_KEY: children, METRIC: min(r[METRIC] for r in children)}
            searcher.on_trial_complete(trial_id, result)
        done += 1
        if done == save_after:
            path = str(tmp / "state.json")
            searcher.save(path)
            searcher = make()
            searcher.restore(path)


def _children(trials: list[list[dict]]) -> list[dict]:
    return [c for batch in trials for c in batch]


@pytest.mark.parametrize("size", [1, 3, 4])
def test_batched_random_search_suggests_and_decides_as_unbatched(size: int) -> None:
    plain, plain_trials = _drive(_random(), width=1)
    batched, trials = _drive(BatchSearcher(_random(), size), width=2, order_seed=3)
    assert _children(trials) == _children(plain_trials)  # the same 11 configs, in the same order
    assert [len(t) for t in trials] == [size] * (11 // size) + ([11 % size] if 11 % size else [])
    assert batched.inner.best_result() == plain.best_result()
    assert batched.summary() == plain.summary()


def test_batched_samos_makes_the_same_moves_and_never_waits_for_a_batch_to_fill() -> None:
    plain, plain_trials = _drive(_samos(), width=2)
    batched, trials = _drive(BatchSearcher(_samos(), 4), width=2, order_seed=5)
    by_step = lambda ts: {(c["chain"], c["step"]): c["arch"] for c in _children(ts)}  # noqa: E731
    assert by_step(trials) == by_step(plain_trials)
    assert batched.summary() == plain.summary()
    # the chains' starts and calibration neighbours (4 each) are drawn up front and fill two batches; then
    # each chain's annealing move waits for the one before: a batch holds at most one move per chain
    assert [len(t) for t in trials[:2]] == [4, 4]
    assert all(len(t) <= 2 for t in trials[2:]) and len(trials) > 2


def test_a_crashed_trial_fails_each_of_its_children_and_a_missing_result_fails_that_child() -> None:
    searcher = BatchSearcher(FixedArchSearcher([_GLOBAL.sample(np.random.default_rng(i)).to_json() for i in range(5)],
                                               metric=METRIC, mode="min"), 3)  # fmt: skip
    first, second = searcher.suggest("a"), searcher.suggest("b")
    assert len(first[CHILDREN_KEY]) == 3 and len(second[CHILDREN_KEY]) == 2
    assert searcher.suggest("c") == Searcher.FINISHED
    searcher.on_trial_complete("a", None, error=True)
    searcher.on_trial_complete("b", {CHILDREN_KEY: [{METRIC: 5.0}]})  # the second child's result is missing
    inner = searcher.inner
    assert [math.isinf(inner._scores[i]) for i in range(5)] == [True, True, True, False, True]
    assert inner.best_result()["arch"] == second[CHILDREN_KEY][0]["arch"]


def test_saved_mid_run_with_batches_outstanding_it_continues_exactly(tmp_path) -> None:
    whole, whole_trials = _drive(BatchSearcher(_samos(), 3), width=3, order_seed=2)
    resumed, trials = _drive(BatchSearcher(_samos(), 3), width=3, order_seed=2, save_after=3,
                             make=lambda: BatchSearcher(_samos(), 3), tmp=tmp_path)  # fmt: skip
    assert trials == whole_trials
    assert resumed.summary() == whole.summary()


def test_a_stage_saved_unbatched_resumes_batched(tmp_path) -> None:
    # an earlier attempt of the stage ran one config per trial and saved the bare searcher's state
    plain = _random()
    first = plain.suggest("old1")
    plain.on_trial_complete("old1", {METRIC: _value(first)})
    pending = plain.suggest("old2")
    plain.save(str(tmp_path / "state.json"))
    searcher = BatchSearcher(_random(), 4)
    searcher.restore(str(tmp_path / "state.json"))
    searcher.on_trial_complete("old2", {METRIC: _value(pending)})  # the restored plain trial completes
    batch = searcher.suggest("new")
    fresh = _random()
    assert [c["arch"] for c in batch[CHILDREN_KEY]] == [fresh.suggest(str(i))["arch"] for i in range(6)][2:6]
    assert searcher.inner.summary()["evaluations"] == 2


def test_child_ids_and_bad_sizes() -> None:
    assert child_id("t7", 2) == "t7/2"
    with pytest.raises(ValueError, match="size >= 1"):
        BatchSearcher(_random(), 0)
