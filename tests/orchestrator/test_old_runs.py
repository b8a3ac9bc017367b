"""A stage interrupted by the code before the redesign (commit 154e898) still resumes (issue 16, deliverable 6).

The fixtures in ``tests/data/old_runs`` (see its README) were made by that commit's code: their ``tuner.pkl``
names the old module paths (``orchestrator.hpo``, ...), which ``orchestrator.compat`` resolves while Tune
restores. Each is resumed with ``facenas resume`` (its own Ray, like ``tests/test_run_integration.py``); the
trials that had finished before the interruption must not run again.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tarfile
from pathlib import Path

import pandas as pd
import pytest

from tests.cli_driver import facenas

pytestmark = pytest.mark.integration

OLD_RUNS = Path(__file__).resolve().parents[1] / "data" / "old_runs"
TRIALS = 6  # searcher.num_samples of both fixtures


def _extract(name: str, tmp_path: Path) -> Path:
    """The fixture's storage folder extracted under ``tmp_path``; returns its RUN_DIR."""
    with tarfile.open(OLD_RUNS / f"{name}.tar.gz") as tar:
        tar.extractall(tmp_path, filter="data")
    return tmp_path / name


def _finished_trials(stage_dir: Path) -> dict[str, bytes]:
    """Trial id -> its ``result.json`` for the trials TERMINATED in the latest experiment state."""
    state = json.loads(sorted(stage_dir.glob("experiment_state-*.json"))[-1].read_text())
    out = {}
    for trial_json, _runtime in state["trial_data"]:
        trial = json.loads(trial_json)
        if trial["status"] == "TERMINATED":
            (folder,) = stage_dir.glob(f"trial_*_{trial['trial_id']}")
            out[trial["trial_id"]] = (folder / "result.json").read_bytes()
    return out


def _resume_and_check(run_dir: Path) -> subprocess.CompletedProcess:
    stage_dir = run_dir / "search"
    assert not (stage_dir / "stage.json").exists() and (stage_dir / "tuner.pkl").is_file()
    finished = _finished_trials(stage_dir)
    assert finished, "the fixture has no finished trial: nothing to check"

    proc = facenas("resume", str(run_dir), timeout=240)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "resuming the interrupted stage" in proc.stdout
    assert (stage_dir / "stage.json").is_file() and (run_dir / "best.json").is_file()

    results = pd.read_parquet(run_dir / "results.parquet")
    assert len(results) == TRIALS and results["trial_id"].is_unique
    assert set(finished) <= set(results["trial_id"])
    # finished trials were not run again: their results are untouched and only the others printed a line
    for trial_id, before in finished.items():
        (folder,) = stage_dir.glob(f"trial_*_{trial_id}")
        assert (folder / "result.json").read_bytes() == before, f"trial {trial_id} ran again"
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("[search] trial ")]
    assert len(lines) == TRIALS - len(finished), proc.stdout
    return proc


def _fresh_search(run_dir: Path) -> list[str]:
    """The architecture keys a fresh random search of the run's config proposes (current code, same seed)."""
    from orchestrator.config import load_config
    from search_algos.random_search import RandomArchSearcher
    from search_algos.spaces import decode_arch

    config, _raw = load_config(run_dir / "config.yaml")
    s = config.searcher
    searcher = RandomArchSearcher(config.space.build(), num_samples=s.num_samples, epochs=s.epochs,
                                  metric=config.metric, mode=config.mode, seed=config.seed)  # fmt: skip
    out = []
    for i in range(s.num_samples):
        payload = json.loads(searcher.suggest(f"t{i}")["arch"])
        out.append(decode_arch(payload.get("space", "global"), payload).key())
    return out


def test_old_random_search_resumes_as_the_same_search(tmp_path):
    run_dir = _extract("old_random", tmp_path)
    _resume_and_check(run_dir)
    # old trials and resumed ones together are the search a fresh run of the current code makes
    results = pd.read_parquet(run_dir / "results.parquet")
    assert sorted(results["arch_key"]) == sorted(_fresh_search(run_dir))
    best = json.loads((run_dir / "best.json").read_text())
    assert best["arch_key"] in set(results["arch_key"])


@pytest.mark.slow
def test_old_random_search_best_matches_a_fresh_run(tmp_path):
    run_dir = _extract("old_random", tmp_path / "old")
    _resume_and_check(run_dir)
    fresh = facenas("run", str(run_dir / "config.yaml"), "--storage", str(tmp_path / "fresh"), "--name", "fresh",
                    timeout=240)  # fmt: skip
    assert fresh.returncode == 0, fresh.stdout[-3000:] + fresh.stderr[-3000:]
    old_best = json.loads((run_dir / "best.json").read_text())
    new_best = json.loads((tmp_path / "fresh" / "fresh" / "best.json").read_text())
    assert old_best["arch_key"] == new_best["arch_key"], (old_best["arch"], new_best["arch"])


def test_old_asha_hpo_stage_resumes(tmp_path):
    # its tuner.pkl holds orchestrator.hpo.HpoSearcher (now search_algos.hpo)
    run_dir = _extract("old_asha", tmp_path)
    assert b"orchestrator.hpo" in (run_dir / "search" / "tuner.pkl").read_bytes()
    _resume_and_check(run_dir)
    assert "orchestrator.hpo" not in sys.modules
