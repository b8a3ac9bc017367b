"""Schedulers (ASHA) and the Optuna ``hpo`` sub-space: config checks, the searcher wrapper, and a tiny
run of ``configs/asha_global.yaml`` in which ASHA stops poor candidates early."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pandas as pd
import pytest
from ray.tune.search import Searcher

from orchestrator.cli import main
from orchestrator.config import load_config, parse_config
from orchestrator.errors import UserError
from search_algos.hpo import HpoSearcher, hpo_problems
from search_algos.random_search import RandomArchSearcher
from search_algos.spaces import GlobalSpace, decode_arch
from tests.cli_driver import evaluations_stored, facenas

REPO = Path(__file__).resolve().parents[1]
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
    ({"searcher": {"name": "macro_micro"}, "scheduler": {"name": "asha"}}, "scheduler applies only to searchers"),
    ({"searcher": {"name": "macro_micro"}, "hpo": {"lr": ["uniform", 0.01, 0.1]}}, "hpo applies only to searchers"),
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
