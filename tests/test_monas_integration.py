"""MONAS end to end on a local Ray: stages, NME by yaw, ablation figures; SIGKILL in two stages + resume."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from tests.cli_driver import facenas, kill_when, write_config

pytestmark = [pytest.mark.integration, pytest.mark.slow]

CONFIG = {
    "name": "monas",
    "seed": 2,
    "data": {"dataset": "faces3d", "image_size": 16, "n_train": 48, "n_val": 12, "n_test": 24},
    "space": {"name": "multipath", "layers": 3, "scales": 2},
    "searcher": {
        "name": "samos", "supernet_epochs": 3, "k_children": 2, "channels": 4, "batch_size": 8,
        "iterations": 6, "calibration": 2, "chains": 1, "retrain_epochs": 1,
        "ablation": True, "ablation_children": 3,
    },
    "resources": {"num_cpus": 2},
}
STAGES = ["supernet", "search", "random", "supernet_uniform", "search_uniform", "random_uniform",
          "retrain", "tau_oneshot_mnus", "tau_oneshot_uniform", "tau_standalone"]


@pytest.fixture(scope="module")
def config_file(tmp_path_factory) -> Path:
    return write_config(tmp_path_factory.mktemp("monascfg"), "monas", CONFIG)


@pytest.fixture(scope="module")
def reference(tmp_path_factory, config_file) -> tuple[Path, str]:
    storage = tmp_path_factory.mktemp("monasref")
    proc = facenas("run", str(config_file), "--storage", str(storage), timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return storage / "monas", proc.stdout


def test_stages_and_figures(reference):
    run_dir, stdout = reference
    assert "test NME (%) by yaw bin: [0,30]:" in stdout
    frame = pd.read_parquet(run_dir / "results.parquet")
    assert list(dict.fromkeys(frame["stage"])) == STAGES
    assert (frame[frame["stage"] == "search"]["epochs"] == 0).all()  # one-shot: no training
    assert (frame["stage"] == "search").sum() == 6 and (frame["stage"] == "random").sum() == 6
    # random search scores children_per_trial (4) children per trial: two trials, a row per child
    random_ids = frame[frame["stage"] == "random"]["trial_id"].tolist()
    assert [i.rsplit("/", 1)[1] for i in random_ids] == ["0", "1", "2", "3", "0", "1"]
    assert len({i.rsplit("/", 1)[0] for i in random_ids}) == 2
    assert "/" not in "".join(frame[frame["stage"] == "search"]["trial_id"])  # SAMOS: one child per trial
    assert stdout.count("[random] trial ") == 6  # a progress line per child
    best = json.loads((run_dir / "best.json").read_text())
    assert best["stage"] == "retrain" and best["metric"] == "val_nme"
    assert set(best["nme_by_yaw"]) == {"[0,30]", "[30,60]", "[60,90]", "mean"}
    assert best["nme_mean"] == pytest.approx(best["nme_by_yaw"]["mean"])
    assert best["arch"] == json.loads(best["search"]["best_arch"])  # the SAMOS child, retrained
    rows = {(r["supernet"], r["search"]) for r in best["ablation"]}
    assert rows == {("mnus", "SAMOS"), ("mnus", "random"), ("uniform", "SAMOS"), ("uniform", "random")}
    assert set(best["ranking_correlation"]) == {"mnus", "uniform"}
    assert list(run_dir.glob("supernet/tensorboard/events.out.tfevents.*")), "supernet loss curves for TensorBoard"


def test_sigkill_in_supernet_and_in_search_then_resume(reference, config_file, tmp_path):
    run_dir = tmp_path / "monas"
    state = run_dir / "supernet" / "_checkpoints" / "supernet-state.pt"
    # 1) during supernet training, once an epoch checkpoint exists
    kill_when(["run", str(config_file), "--storage", str(tmp_path)], state.exists)
    assert not (run_dir / "supernet" / "stage.json").exists()
    # 2) during the SAMOS search, after the supernet stage finished
    search_trials = lambda: len(list((run_dir / "search").glob("trial_*"))) >= 3  # noqa: E731
    kill_when(["resume", str(run_dir)], search_trials)
    assert (run_dir / "supernet" / "stage.json").exists()
    # 3) resume to the end: the finished supernet stage is skipped, not trained again
    proc = facenas("resume", str(run_dir), timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "[supernet] already finished" in proc.stdout
    got = json.loads((run_dir / "best.json").read_text())
    want = json.loads((reference[0] / "best.json").read_text())
    assert got["arch_key"] == want["arch_key"]
    assert got["nme_by_yaw"] == pytest.approx(want["nme_by_yaw"])
    frame = pd.read_parquet(run_dir / "results.parquet")
    assert (frame["stage"] == "search").sum() == 6 and frame.groupby("stage")["trial_id"].apply(lambda s: s.is_unique).all()
