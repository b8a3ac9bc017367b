"""Macro-micro pipeline end to end on a local Ray: search -> retrain -> baseline, RI, SIGKILL + resume."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from tests.cli_driver import evaluations_stored, facenas, kill_when, write_config

pytestmark = [pytest.mark.integration, pytest.mark.slow]

CONFIG = {
    "name": "mm",
    "seed": 1,
    "data": {"dataset": "digits", "max_samples": 500},
    "space": {"d_min": 2, "d_max": 4, "w_min": 8, "w_max": 16, "w_step": 4},
    "searcher": {
        "name": "macro_micro", "preset": "tiny", "d_min": 2, "d_max": 4, "w_min": 8, "w_max": 16, "w_res": 4,
        "e_min_macro": 2, "e_min_micro": 2, "param_slack": 500, "speculate": 2, "final_epochs": 3,
        "baseline_samples": 2, "equal_param_samples": 2, "param_band": 0.5,
    },
    "resources": {"num_cpus": 2},
}


@pytest.fixture(scope="module")
def config_file(tmp_path_factory) -> Path:
    return write_config(tmp_path_factory.mktemp("mmcfg"), "mm", CONFIG)


@pytest.fixture(scope="module")
def reference(tmp_path_factory, config_file) -> Path:
    storage = tmp_path_factory.mktemp("mmref")
    proc = facenas("run", str(config_file), "--storage", str(storage), timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return storage / "mm"


def test_pipeline_stages_and_best(reference):
    frame = pd.read_parquet(reference / "results.parquet")
    assert list(dict.fromkeys(frame["stage"])) == ["search", "retrain", "baseline", "baseline_equal"]
    assert (frame["stage"] == "retrain").sum() == 1 and (frame["stage"] == "baseline").sum() == 2
    # the equal-parameter baseline: random networks within +-50 % of the searched network's size
    searched = int(frame.loc[frame["stage"] == "retrain", "params"].iloc[0])
    equal = frame.loc[frame["stage"] == "baseline_equal", "params"]
    assert len(equal) == 2 and all(0.5 * searched <= p <= 1.5 * searched for p in equal)
    best = json.loads((reference / "best.json").read_text())
    assert isinstance(best["ri_equal_params"], float) and best["equal_params_evaluations"] == 2
    search = best["search"]
    assert best["stage"] == "retrain" and best["epochs"] == 3
    assert best["arch"] == json.loads(search["final_arch"])
    counts = search["evaluations"]
    assert counts["total"] == counts["grow"] + counts["prune"] + counts["baseline"] + counts["micro"]
    assert counts["baseline"] == 1
    # every committed verdict corresponds to a finished trial of the search stage
    assert len(search["log"]) >= counts["total"]
    assert isinstance(best["ri"], float) and isinstance(best["ri_val"], float)
    # the search decided on validation accuracy only: the log never mentions test accuracy
    assert all("test" not in json.dumps(e) for e in search["log"])


def test_resume_after_sigkill_gives_the_same_architecture(reference, config_file, tmp_path):
    storage = tmp_path / "killed"
    kill_when(["run", str(config_file), "--storage", str(storage)], lambda: evaluations_stored(storage) >= 3)
    run_dir = storage / "mm"
    resumed = facenas("resume", str(run_dir), timeout=600)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    got = json.loads((run_dir / "best.json").read_text())
    want = json.loads((reference / "best.json").read_text())
    assert got["arch_key"] == want["arch_key"]
    assert got["search"]["final_arch"] == want["search"]["final_arch"]
    committed = lambda log: [(e["phase"], e["arch_key"], e["epochs"], e["decision"]) for e in log]  # noqa: E731
    assert committed(got["search"]["log"]) == committed(want["search"]["log"])
    assert got["value"] == want["value"] and got["ri"] == pytest.approx(want["ri"])
