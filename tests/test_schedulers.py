"""Schedulers (ASHA) and the Optuna ``hpo`` sub-space: config checks, the searcher wrapper, and a tiny
run of ``configs/asha_global.yaml`` in which ASHA stops poor candidates early."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import pandas as pd
import pytest
from ray.tune.schedulers import TrialScheduler
from ray.tune.search import Searcher

from orchestrator.cli import main
from orchestrator.config import load_config, parse_config
from orchestrator.errors import UserError
from orchestrator.schedulers import StageScheduler, build_scheduler
from search_algos.base import REFERENCE_KEY
from search_algos.hpo import HpoSearcher, hpo_problems
from search_algos.random_search import RandomArchSearcher
from search_algos.spaces import GlobalSpace, decode_arch
from tests.cli_driver import evaluations_stored, facenas, kill_when, write_config
from tests.test_macro_micro_integration import CONFIG as MM_CONFIG

REPO = Path(__file__).resolve().parents[1]
CONTINUE, STOP = TrialScheduler.CONTINUE, TrialScheduler.STOP
SPACE = {"lr": ["loguniform", 1e-3, 1e-1], "batch_size": ["choice", 16, 32], "cutout": ["int", 0, 4]}


def _wrapped(seed: int = 0) -> HpoSearcher:
    inner = RandomArchSearcher(GlobalSpace(d_min=2, d_max=5, w_min=8, w_max=16, w_step=4), num_samples=14,
                               epochs=2, metric="val_acc", mode="max", seed=seed)
    return HpoSearcher(inner, SPACE, seed=seed)


def _score(config: dict) -> float:
    """A synthetic accuracy that prefers lr near 0.01, batch 16 and depth 4."""
    arch = decode_arch("global", config["arch"])
    hpo = config["hpo"]
    return 90 - 10 * abs(math.log10(hpo["lr"]) + 2) - (hpo["batch_size"] == 32) - abs(arch.depth - 4)


def _drive(searcher: HpoSearcher, start: int = 0, stop: int | None = None) -> list[dict]:
    configs = []
    n = start
    while stop is None or n < stop:
        config = searcher.suggest(f"t{n}")
        if config == Searcher.FINISHED:
            break
        configs.append(config)
        searcher.on_trial_complete(f"t{n}", {"val_acc": _score(config)} if n != 3 else None, error=n == 3)
        n += 1
    return configs


def test_hpo_values_lie_in_their_space_and_architectures_come_from_the_inner_searcher() -> None:
    configs = _drive(_wrapped())
    reference = RandomArchSearcher(GlobalSpace(d_min=2, d_max=5, w_min=8, w_max=16, w_step=4), num_samples=14,
                                   epochs=2, metric="val_acc", mode="max", seed=0)
    assert len(configs) == 14
    for i, config in enumerate(configs):
        assert config["arch"] == reference.propose(i)["arch"] and config["epochs"] == 2
        assert 1e-3 <= config["hpo"]["lr"] <= 1e-1
        assert config["hpo"]["batch_size"] in (16, 32) and config["hpo"]["cutout"] in range(5)
    assert len({c["hpo"]["lr"] for c in configs}) == 14


def test_hpo_summary_and_failed_trials_and_resume_gives_the_same_draws(tmp_path: Path) -> None:
    whole = _wrapped()
    configs = _drive(whole)
    summary = whole.summary()["hpo"]
    assert [t["value"] is None for t in summary["trials"]] == [i == 3 for i in range(14)]
    best = max((t for t in summary["trials"] if t["value"] is not None), key=lambda t: t["value"])
    assert summary["best_params"] == best["params"]

    first = _wrapped()
    head = _drive(first, stop=6)
    pending = first.suggest("t6")  # running when the driver dies
    first.save(str(tmp_path / "state.json"))
    resumed = _wrapped()
    resumed.restore(str(tmp_path / "state.json"))
    resumed.on_trial_complete("t6", {"val_acc": _score(pending)})
    tail = _drive(resumed, start=7)
    assert [c["hpo"] for c in head + [pending] + tail] == [c["hpo"] for c in configs]


def test_hpo_problems_name_each_key() -> None:
    problems = hpo_problems({"lr": ["loguniform", 0, 1], "batch_size": ["uniform", 8, 64], "depth": ["int", 1, 2],
                             "momentum": ["uniform", 0.9, 0.8], "cutout": ["choice"]})
    assert len(problems) == 5
    assert any(p.startswith("hpo.lr: loguniform needs low > 0") for p in problems)
    assert any(p.startswith("hpo.batch_size: batch_size takes integers") for p in problems)
    assert any(p.startswith("hpo.depth: unknown training key") for p in problems)
    assert any(p.startswith("hpo.momentum: [uniform, low, high] needs two numbers with low < high") for p in problems)
    assert hpo_problems(SPACE) == []


@pytest.mark.parametrize("raw, message", [
    ({"scheduler": {"name": "pbt"}}, "scheduler: pbt does not apply"),
    ({"searcher": {"name": "hyperfd"}, "data": {"dataset": "detection"}, "scheduler": {"name": "hyperband"}},
     "hyperband does not apply to searcher 'hyperfd'"),
    ({"searcher": {"name": "samos"}, "data": {"dataset": "faces3d"}, "space": {"name": "multipath"},
      "scheduler": {"name": "hyperband"}}, "hyperband does not apply to searcher 'samos'"),
    ({"searcher": {"name": "macro_micro"}, "scheduler": {"name": "hyperband"}}, "hyperband does not apply to searcher 'macro_micro'"),
    ({"searcher": {"name": "macro_micro"}, "hpo": {"lr": ["uniform", 0.01, 0.1]}}, "hpo applies only to searchers"),
    ({"searcher": {"name": "macro_micro"}, "scheduler": {"name": "median"}, "hpo": {"lr": ["uniform", 0.01, 0.1]}},
     "hpo applies only to searchers whose trials train for several epochs and report each (random)"),
    ({"scheduler": {"name": "asha", "grace": 1}}, "scheduler.grace: unknown key; valid keys: name, grace_period"),
])
def test_bad_tuning_config_is_one_line(raw: dict, message: str) -> None:
    with pytest.raises(UserError) as err:
        parse_config(raw)
    assert len(err.value.problems) == 1 and message in err.value.problems[0]


def test_bad_hpo_on_the_command_line_exits_2(tmp_path: Path, capsys) -> None:
    code = main(["run", str(REPO / "configs" / "asha_global.yaml"), "--storage", str(tmp_path),
                 "--set", "hpo.lr=[loguniform, 0, 1]"])
    assert code == 2
    assert "hpo: lr: loguniform needs low > 0" in capsys.readouterr().err
    assert not any(tmp_path.iterdir())


def test_asha_example_config_is_valid() -> None:
    config, _raw = load_config(REPO / "configs" / "asha_global.yaml")
    assert config.scheduler.name == "asha" and config.searcher.name == "random" and config.hpo


class _Trial:
    """What Tune's ASHA and median rules read of a trial: its id, config and status."""

    def __init__(self, trial_id: str, *, reference: bool = False) -> None:
        self.trial_id, self.status = trial_id, "RUNNING"
        self.config = {"arch": "{}", "epochs": 4, **({REFERENCE_KEY: True} if reference else {})}


class _Controller:
    """A controller with a trial waiting for a slot (the median rule would pause a trial to yield it)."""

    def get_live_trials(self) -> list:
        waiting = _Trial("waiting")
        waiting.status = "PENDING"
        return [waiting]


def _keep_references(name: str) -> StageScheduler:
    settings = {"name": name, "grace_period": 1, "reduction_factor": 2, "brackets": 1, "max_t": None, "min_samples": 1}
    return StageScheduler(build_scheduler(settings, metric="val_acc", mode="max", max_epochs=8))


@pytest.mark.parametrize("name", ["asha", "median"])
def test_a_reference_trains_in_full_and_still_sets_the_bar(name: str) -> None:
    scheduler, controller = _keep_references(name), _Controller()
    good, ref, weak = _Trial("good"), _Trial("ref", reference=True), _Trial("weak")
    for trial in (good, ref, weak):
        scheduler.on_trial_add(controller, trial)
    for epoch in range(1, 5):  # alone: nothing to compare with, it goes on (the median rule never pauses it)
        assert scheduler.on_trial_result(controller, good, {"epoch": epoch, "val_acc": 90.0}) == CONTINUE
    scheduler.on_trial_complete(controller, good, {"epoch": 4, "val_acc": 90.0})
    for epoch in range(1, 5):  # below the bar at every epoch; a reference is never stopped
        assert scheduler.on_trial_result(controller, ref, {"epoch": epoch, "val_acc": 10.0}) == CONTINUE
    scheduler.on_trial_complete(controller, ref, {"epoch": 4, "val_acc": 10.0})
    # an ordinary trial as weak as the reference is stopped at once: the reference's results counted
    assert scheduler.on_trial_result(controller, weak, {"epoch": 1, "val_acc": 10.0}) == STOP
    assert scheduler.metric == "val_acc" and "Using" in scheduler.debug_string()


def test_the_median_rule_stops_below_the_median_of_the_others_running_means() -> None:
    scheduler, controller = _keep_references("median"), _Controller()
    trials = [_Trial(f"t{i}") for i in range(4)]
    for trial in trials:
        scheduler.on_trial_add(controller, trial)
    for trial, acc in zip(trials[:3], (60.0, 70.0, 80.0)):
        for epoch in (1, 2):
            assert scheduler.on_trial_result(controller, trial, {"epoch": epoch, "val_acc": acc}) == CONTINUE
        scheduler.on_trial_complete(controller, trial, {"epoch": 2, "val_acc": acc})
    # the others' running means at epoch 1 are 60, 70, 80: median 70
    assert scheduler.on_trial_result(controller, trials[3], {"epoch": 1, "val_acc": 71.0}) == CONTINUE
    assert scheduler.on_trial_result(controller, trials[3], {"epoch": 2, "val_acc": 69.0}) == CONTINUE
    stopped = _Trial("t4")
    scheduler.on_trial_add(controller, stopped)
    assert scheduler.on_trial_result(controller, stopped, {"epoch": 1, "val_acc": 69.0}) == STOP


@pytest.mark.parametrize("name", ["asha", "median"])
def test_a_resumed_scheduler_replays_its_journal_and_decides_as_if_uninterrupted(name: str, tmp_path: Path) -> None:
    journal = tmp_path / "search" / "scheduler-journal.jsonl"
    journal.parent.mkdir()
    settings = {"name": name, "grace_period": 1, "reduction_factor": 2, "brackets": 1, "max_t": None, "min_samples": 1}
    make = lambda: StageScheduler(build_scheduler(settings, metric="val_acc", mode="max", max_epochs=8),  # noqa: E731
                                  journal=str(journal))
    first, controller = make(), _Controller()
    for trial, acc in ((_Trial("a"), 80.0), (_Trial("b", reference=True), 20.0)):
        first.on_trial_add(controller, trial)
        for epoch in (1, 2):
            first.on_trial_result(controller, trial, {"epoch": epoch, "val_acc": acc, "arch": "x"})
        first.on_trial_complete(controller, trial, {"epoch": 2, "val_acc": acc})
    running = _Trial("c")
    first.on_trial_add(controller, running)
    assert first.on_trial_result(controller, running, {"epoch": 1, "val_acc": 60.0}) == CONTINUE
    with journal.open("a") as out:
        out.write('{"event": "result", "trial": "c", "res')  # killed mid-write
    # the resume: the scheduler as Tune restores it (as built), the trial in flight added again
    resumed, fresh = make(), StageScheduler(build_scheduler(settings, metric="val_acc", mode="max", max_epochs=8))
    resumed.on_trial_add(controller, running)
    # c's epoch 1 again, replayed by its retry (orchestrator.trial): seen, so not handed on nor journaled
    before = journal.read_text()
    assert resumed.on_trial_result(controller, running, {"epoch": 1, "val_acc": 60.0, "replayed": True}) == CONTINUE
    assert journal.read_text() == before
    late, alone = _Trial("d"), _Trial("d")
    resumed.on_trial_add(controller, late)
    fresh.on_trial_add(controller, alone)
    # what the interrupted run had seen stops it; a scheduler without the journal would let it go on
    assert resumed.on_trial_result(controller, late, {"epoch": 1, "val_acc": 50.0}) == STOP
    assert fresh.on_trial_result(controller, alone, {"epoch": 1, "val_acc": 50.0}) == CONTINUE
    lines = journal.read_text().splitlines()
    assert sum('"event": "add"' in line for line in lines) == 4  # a, b, c (once), d
    torn = [line for line in lines if not line.startswith("{") or not line.endswith("}")]
    assert torn == ['{"event": "result", "trial": "c", "res']  # the events after it have lines of their own
    assert all("arch" not in line for line in lines)  # numbers only


def test_median_and_asha_are_config_choices_for_macro_micro() -> None:
    config = parse_config({"searcher": {"name": "macro_micro"}, "scheduler": {"name": "median", "min_samples": 2}})
    assert config.scheduler.name == "median" and config.scheduler.min_samples == 2
    assert parse_config({"searcher": {"name": "macro_micro"}, "scheduler": {"name": "asha"}}).scheduler.name == "asha"


@pytest.mark.integration
@pytest.mark.slow
def test_asha_stops_poor_candidates_early(tmp_path: Path) -> None:
    done = facenas("run", str(REPO / "configs" / "asha_global.yaml"), "--storage", str(tmp_path),
                   "--set", "searcher.num_samples=6", "--set", "searcher.epochs=3",
                   "--set", "resources.max_concurrent_trials=1", "--set", "resources.num_cpus=2", timeout=500)
    assert done.returncode == 0, done.stderr[-3000:]
    run = tmp_path / "asha_global"
    frame = pd.read_parquet(run / "results.parquet")
    assert len(frame) == 6 and (frame["status"] == "ok").all()
    stopped = frame[frame["error"].str.startswith("stopped early by asha")]
    full = frame[frame["error"] == ""]
    assert len(stopped) >= 1 and len(full) >= 1, frame[["value", "epochs", "error"]]
    assert (stopped["epochs"] < 3).all() and (full["epochs"] == 3).all()
    assert "stopped early at epoch" in done.stdout
    # each stopped trial really trained only that many epochs (one report per epoch in its result.json)
    for row in frame.itertuples():
        (result,) = list((run / "search").glob(f"trial_*_{row.trial_id}/result.json"))
        assert len(result.read_text().strip().splitlines()) == row.epochs
    # ASHA's rule at rung 1 (reduction factor 2, trials in order): a trial below the median of the
    # rung-1 accuracies recorded before it is stopped
    first = []
    for row in frame.itertuples():
        (result,) = list((run / "search").glob(f"trial_*_{row.trial_id}/result.json"))
        acc1 = json.loads(result.read_text().splitlines()[0])["val_acc"]
        if first:
            cutoff = sorted(first)[len(first) // 2] if len(first) % 2 else sum(sorted(first)[len(first) // 2 - 1:len(first) // 2 + 1]) / 2
            assert (acc1 < cutoff) == (row.epochs == 1), (acc1, cutoff, row.epochs)
        first.append(acc1)
    # only whole trainings reach the benchmark store; the Optuna draws are in the stage summary
    assert evaluations_stored(tmp_path) == len(full)
    summary = json.loads((run / "search" / "stage.json").read_text())["summary"]
    assert len(summary["hpo"]["trials"]) == 6
    assert all(0.005 <= t["params"]["lr"] <= 0.1 for t in summary["hpo"]["trials"])
    assert (run / "best.json").is_file() and not (run / "search" / "_checkpoints").exists()
    # every trial's metrics for TensorBoard (Tune's default logger, tensorboardX)
    assert len(list((run / "search").glob("trial_*/events.out.tfevents.*"))) == 6


# The macro-micro pipeline test's search, sequential (no speculation), with ASHA stopping candidates early.
MM_ASHA = {
    **MM_CONFIG,
    "name": "mm_asha",
    "searcher": {**MM_CONFIG["searcher"], "speculate": 1, "final_epochs": 2, "baseline_samples": 1,
                 "equal_param_samples": 0},
    "scheduler": {"name": "asha", "grace_period": 1, "reduction_factor": 4},
    "resources": {**MM_CONFIG["resources"], "max_failures": 0},
}


@pytest.fixture(scope="module")
def mm_asha(tmp_path_factory) -> tuple[Path, Path]:
    """(config file, run directory) of one uninterrupted macro-micro search with ASHA."""
    folder = tmp_path_factory.mktemp("mm_asha")
    config = write_config(folder, "mm_asha", MM_ASHA)
    done = facenas("run", str(config), "--storage", str(folder / "runs"), timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    return config, folder / "runs" / "mm_asha"


@pytest.mark.integration
@pytest.mark.slow
def test_asha_with_macro_micro_rejects_stopped_candidates_and_trains_references_in_full(mm_asha) -> None:
    _config, run = mm_asha
    frame = pd.read_parquet(run / "results.parquet")
    search = frame[frame["stage"] == "search"]
    stopped = search[search["error"].str.startswith("stopped early by asha")]
    assert len(stopped) >= 1 and (search["status"] == "ok").all(), search[["arch_key", "epochs", "value", "error"]]
    summary = json.loads((run / "best.json").read_text())["search"]
    log = [e for e in summary["log"] if e["index"] is not None]
    assert summary["phase"] == "done" and summary["stopped_early"] == len(stopped)
    # every stopped candidate is a rejection in the decision log, with the epochs it trained
    marked = {(e["arch_key"], e["stopped_early"]): e["decision"] for e in log if "stopped_early" in e}
    assert {(r.arch_key, r.epochs) for r in stopped.itertuples()} == set(marked)
    assert set(marked.values()) <= {"drop", "fail", "reject"}
    # the references (the first candidate, the micro baseline) trained their epochs in full
    references = [e for e in log if e["change"] in ("start", "baseline")]
    assert len(references) == 2 and not any("stopped_early" in e for e in references)
    full = {(r.arch_key, r.epochs) for r in search.itertuples() if r.error == ""}
    assert all((e["arch_key"], e["epochs"]) in full for e in references)
    # the retraining and the random baseline are whole trainings (RI compares equals); only whole
    # trainings reach the benchmark store
    assert (frame.loc[frame["stage"] != "search", "error"] == "").all()
    assert evaluations_stored(run.parent) == int((frame["error"] == "").sum() - frame["cached"].sum())
    assert (run / "search" / "scheduler-journal.jsonl").is_file()


@pytest.mark.integration
@pytest.mark.slow
def test_macro_micro_with_asha_killed_and_resumed_takes_the_uninterrupted_decisions(mm_asha, tmp_path: Path) -> None:
    """SIGKILL after the search's fourth stored evaluation; `facenas resume` replays the scheduler's journal
    (Tune restores the scheduler as built), so the same candidates are stopped and the same network found."""
    config, reference = mm_asha
    storage = tmp_path / "killed"
    kill_when(["run", str(config), "--storage", str(storage)], lambda: evaluations_stored(storage) >= 4)
    run = storage / "mm_asha"
    resumed = facenas("resume", str(run), timeout=600)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    got, want = (json.loads((r / "best.json").read_text()) for r in (run, reference))
    verdicts = lambda log: [(e["phase"], e["arch_key"], e["epochs"], e["decision"], e.get("stopped_early"))  # noqa: E731
                            for e in log]
    assert verdicts(got["search"]["log"]) == verdicts(want["search"]["log"])
    assert got["search"]["final_arch"] == want["search"]["final_arch"] and got["value"] == want["value"]


# RNAS-MER's search seeds under ASHA, one at a time (the order, and so the rungs, are those of the seeds).
RNAS_ASHA = {
    "name": "rnas_asha",
    "seed": 0,
    "data": {"dataset": "microexpr", "subjects": 4, "episodes": 6, "frames": 4, "image_size": 16},
    "space": {"name": "rnas", "cells": 2, "nodes": 2, "levels": 2},
    "searcher": {"name": "rnas_mer", "channels": 4, "epochs": 3, "batch_size": 4, "seeds": [0, 1, 2, 3],
                 "loso_epochs": 1, "loso_batch_size": 4, "baseline": False},
    "scheduler": {"name": "asha", "grace_period": 1, "reduction_factor": 2},
    "resources": {"num_cpus": 2, "max_concurrent_trials": 1},
}


@pytest.mark.integration
@pytest.mark.slow
def test_asha_with_rnas_mer_stops_search_seeds_and_retrains_only_whole_searches(tmp_path: Path) -> None:
    config = write_config(tmp_path, "rnas_asha", RNAS_ASHA)
    done = facenas("run", str(config), "--storage", str(tmp_path / "runs"), timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    run = tmp_path / "runs" / "rnas_asha"
    frame = pd.read_parquet(run / "results.parquet")
    search = frame[frame["stage"] == "search"]
    stopped = search[search["error"].str.startswith("stopped early by asha")]
    whole = search[search["error"] == ""]
    assert len(stopped) >= 1 and len(whole) >= 1 and len(search) == 4, search[["arch_key", "epochs", "value", "error"]]
    assert (stopped["epochs"] < 3).all() and (whole["epochs"] == 3).all()
    # a stopped search's genotype is not retrained, unless a whole search decoded the same one
    folds = frame[frame["stage"] == "loso"]
    assert set(folds["arch"]) == set(whole["arch"]) and (folds["error"] == "").all()
    best = json.loads((run / "best.json").read_text())
    marked = {t["seed"]: t.get("stopped_early") for t in best["search_trials"]}
    assert {s for s, e in marked.items() if e is not None} == {json.loads(m)["seed"] for m in stopped["metrics"]}
    assert {e["seed"] for e in best["per_seed"]} == {json.loads(m)["seed"] for m in whole["metrics"]}
    assert best["search_val_uar"] == whole["value"].max()  # the pick: the best of the whole searches
    assert (run / "search" / "scheduler-journal.jsonl").is_file()


# MONAS's retraining under ASHA, one trial at a time: SAMOS's child first (a reference), then the random
# winner, which trails it after one epoch at this seed and is stopped.
MONAS_ASHA = {
    "name": "monas_asha",
    "seed": 4,
    "data": {"dataset": "faces3d", "image_size": 16, "n_train": 48, "n_val": 12, "n_test": 24},
    "space": {"name": "multipath", "layers": 3, "scales": 2},
    "searcher": {"name": "samos", "supernet_epochs": 2, "k_children": 2, "channels": 4, "batch_size": 8,
                 "iterations": 6, "calibration": 2, "chains": 1, "retrain_epochs": 3, "ablation": True,
                 "ablation_children": 3},
    "scheduler": {"name": "asha", "grace_period": 1, "reduction_factor": 2},
    "resources": {"num_cpus": 2, "max_concurrent_trials": 1},
}


@pytest.mark.integration
@pytest.mark.slow
def test_asha_with_monas_stops_a_baseline_retraining_and_trains_samos_child_in_full(tmp_path: Path) -> None:
    config = write_config(tmp_path, "monas_asha", MONAS_ASHA)
    done = facenas("run", str(config), "--storage", str(tmp_path / "runs"), timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    run = tmp_path / "runs" / "monas_asha"
    frame = pd.read_parquet(run / "results.parquet")
    best = json.loads((run / "best.json").read_text())
    retrain = frame[frame["stage"] == "retrain"]
    stopped = retrain[retrain["error"].str.startswith("stopped early by asha")]
    assert len(stopped) == 1 and int(stopped["epochs"].iloc[0]) < 3, retrain[["arch_key", "epochs", "value", "error"]]
    # SAMOS's child is the reference: trained in full and tested, the row best.json reports
    samos = retrain[retrain["arch"] == best["search"]["best_arch"]]
    assert len(samos) == 1 and samos["error"].iloc[0] == "" and int(samos["epochs"].iloc[0]) == 3
    assert best["stage"] == "retrain" and best["nme_mean"] is not None
    # the stopped winner has no test figures, and no SAMOS-vs-random claim is made on test
    table = [r for r in best["ablation"] if r["arch_key"] == stopped["arch_key"].iloc[0]]
    assert table and all(r["stopped_early"] == int(stopped["epochs"].iloc[0]) and r["test_nme"] is None for r in table)
    assert best["samos_vs_random_test_nme"] is None
    # Kendall tau's stand-alone children are whole trainings: the scheduler applies to the retraining only
    assert (frame.loc[frame["stage"] != "retrain", "error"] == "").all()
    journal = [json.loads(line) for line in (run / "retrain" / "scheduler-journal.jsonl").read_text().splitlines()]
    assert any(e.get("reference") for e in journal) and not (run / "tau_standalone" / "scheduler-journal.jsonl").exists()


HYPERFD_TINY = [
    "searcher.domains=[blur]", "searcher.spaces=[detector_hpo]", "searcher.pool_size=3", "searcher.budget=2",
    "searcher.orders=2", "searcher.offline_datasets=2", "searcher.offline_configs=2", "searcher.epochs=3",
    "searcher.eval_every=1", "searcher.source_images=80", "searcher.min_images=15",
    "searcher.clustering_methods=[kmeans]", "searcher.clustering_ks=[2,3]", "data.n_images=20",
    "resources.max_concurrent_trials=1",
]  # fmt: skip
ASHA_SETS = ["scheduler.name=asha", "scheduler.grace_period=1", "scheduler.reduction_factor=2"]


def _sets(*items: str) -> list[str]:
    return [arg for item in items for arg in ("--set", item)]


@pytest.mark.integration
@pytest.mark.slow
def test_asha_with_hyperfd_search_and_build_never_stores_a_stopped_row(tmp_path: Path) -> None:
    storage = tmp_path / "runs"
    search = ["searcher.mode=search", "searcher.pool_size=6", "searcher.num_samples=4", "searcher.warm_start=0",
              "searcher.epochs=4"]
    run = facenas("run", "configs/hyperfd.yaml", "--storage", str(storage), "--name", "search",
                  *_sets(*HYPERFD_TINY, *search, *ASHA_SETS), timeout=600)
    assert run.returncode == 0, run.stderr[-3000:]
    frame = pd.read_parquet(storage / "search" / "results.parquet")
    stopped = frame[frame["error"].str.startswith("stopped early by asha")]
    whole = frame[frame["error"] == ""]
    assert len(frame) == 4 and len(stopped) >= 1 and len(whole) >= 1, frame[["arch_key", "epochs", "value", "error"]]
    assert evaluations_stored(storage) == len(whole)  # only whole trainings are benchmark rows
    best = json.loads((storage / "search" / "best.json").read_text())
    assert best["arch_key"] in set(whole["arch_key"]) and best["value"] == whole["value"].max()
    assert best["best_by_space"]["detector_hpo"]["stopped_early"] == len(stopped)

    # a build with ASHA stores its whole rows only; one without completes the table
    built = facenas("benchmark", "build", "configs/hyperfd.yaml", "--storage", str(tmp_path / "b"),
                    *_sets(*HYPERFD_TINY, *ASHA_SETS), timeout=600)
    assert built.returncode == 0, built.stderr[-3000:]
    cut = re.search(r"(\d+) rows stopped early by asha: not stored", built.stdout)
    assert cut is not None, built.stdout[-2000:]
    rows = evaluations_stored(tmp_path / "b")
    assert rows == 10 - int(cut.group(1)) and f"detector_hpo: {rows} rows evaluated" in built.stdout
    rest = facenas("benchmark", "build", "configs/hyperfd.yaml", "--storage", str(tmp_path / "b"),
                   *_sets(*HYPERFD_TINY), timeout=600)
    assert rest.returncode == 0 and f"detector_hpo: {10 - rows} rows evaluated" in rest.stdout
    assert evaluations_stored(tmp_path / "b") == 10


def test_a_scheduler_with_hyperfd_table7_is_refused_before_anything_starts(tmp_path: Path, capsys) -> None:
    code = main(["run", str(REPO / "configs" / "hyperfd.yaml"), "--storage", str(tmp_path), "--set", "scheduler.name=asha"])
    assert code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "does not apply to hyperfd's mode: protocol" in err[0] and "set searcher.mode: search" in err[0]
    assert not any(tmp_path.iterdir())
