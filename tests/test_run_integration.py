"""End to end through the CLI on an embedded local Ray: a small run, a cache hit, resume after SIGKILL.

Each ``facenas`` process starts its own Ray bound to 127.0.0.1 (the CLI's default), so these tests do
not use the shared ``ray_local`` fixture.
"""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
import yaml

from tests.cli_driver import evaluations_stored, facenas, kill_when, write_config

pytestmark = pytest.mark.integration

CONFIG = {
    "name": "small",
    "seed": 3,
    "data": {"dataset": "digits", "max_samples": 400},
    "space": {"d_min": 3, "d_max": 5, "w_min": 8, "w_max": 16, "w_step": 4},
    "searcher": {"name": "random", "num_samples": 5, "epochs": 3},
    "resources": {"num_cpus": 2},
}
CONTRACT_COLUMNS = {"stage", "trial_id", "arch_key", "arch", "metric", "value", "params", "epochs", "cached", "status", "error"}
BEST_KEYS = {"stage", "arch", "arch_key", "metric", "value", "params"}


@pytest.fixture(scope="module")
def config_file(tmp_path_factory) -> Path:
    return write_config(tmp_path_factory.mktemp("cfg"), "small", CONFIG)


@pytest.fixture(scope="module")
def reference(tmp_path_factory, config_file) -> Path:
    """One uninterrupted run; returns its RUN_DIR."""
    storage = tmp_path_factory.mktemp("ref")
    proc = facenas("run", str(config_file), "--storage", str(storage))
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "best architecture:" in proc.stdout
    assert "results.parquet" in proc.stdout
    assert proc.stdout.count("[search] trial ") == 5
    return storage / "small"


def test_run_writes_the_contract(reference):
    frame = pd.read_parquet(reference / "results.parquet")
    assert CONTRACT_COLUMNS <= set(frame.columns)
    assert len(frame) == 5 and frame["trial_id"].is_unique
    assert (frame["status"] == "ok").all() and not frame["cached"].any()
    assert (frame["epochs"] == 3).all() and (frame["params"] > 0).all()
    for arch in frame["arch"]:
        assert json.loads(arch)["space"] == "global"
    best = json.loads((reference / "best.json").read_text())
    assert BEST_KEYS <= set(best)
    assert best["value"] == pytest.approx(frame["value"].max())
    assert best["metric"] == "val_acc" and 0 <= best["test"]["test_acc"] <= 100
    assert yaml.safe_load((reference / "config.yaml").read_text())["seed"] == 3
    assert list(reference.glob("search/trial_*/events.out.tfevents.*")), "TensorBoard event files per trial"


def test_status_and_report(reference):
    proc = facenas("status", str(reference))
    assert proc.returncode == 0 and "stage search: done, 5 ok / 0 failed" in proc.stdout
    proc = facenas("report", str(reference))
    assert proc.returncode == 0, proc.stderr
    page = (reference / "report.html").read_text()
    assert "data:image/png;base64," in page and "Best architecture" in page


def test_second_run_is_served_from_the_store(reference, config_file):
    proc = facenas("run", str(config_file), "--storage", str(reference.parent), "--name", "again")
    assert proc.returncode == 0, proc.stderr[-3000:]
    again = pd.read_parquet(reference.parent / "again" / "results.parquet")
    first = pd.read_parquet(reference / "results.parquet")
    assert again["cached"].all()
    assert list(again["value"]) == list(first["value"])
    assert json.loads((reference.parent / "again" / "best.json").read_text())["arch_key"] == json.loads(
        (reference / "best.json").read_text()
    )["arch_key"]


def test_resume_after_sigkill_equals_uninterrupted(reference, config_file, tmp_path):
    storage = tmp_path / "killed"
    kill_when(["run", str(config_file), "--storage", str(storage)], lambda: evaluations_stored(storage) >= 2)
    run_dir = storage / "small"
    assert not (run_dir / "best.json").exists()

    resumed = facenas("resume", str(run_dir))
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    frame = pd.read_parquet(run_dir / "results.parquet")
    assert len(frame) == 5 and frame["trial_id"].is_unique and (frame["status"] == "ok").all()
    # Nothing finished was trained twice: the store holds each evaluated architecture once.
    assert evaluations_stored(storage) == frame["arch_key"].nunique()
    killed_best = json.loads((run_dir / "best.json").read_text())
    reference_best = json.loads((reference / "best.json").read_text())
    assert killed_best == reference_best


@pytest.mark.slow
def test_candidates_train_with_two_ray_train_workers(config_file, tmp_path):
    """`training.train_workers: 2`: each candidate is a TorchTrainer (DDP, gloo) inside its trial."""
    proc = facenas(
        "run", str(config_file), "--storage", str(tmp_path), "--name", "ddp",
        "--set", "searcher.num_samples=2", "--set", "searcher.epochs=2",
        "--set", "training.train_workers=2", "--set", "training.cpus_per_worker=0.5",
        timeout=400,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    frame = pd.read_parquet(tmp_path / "ddp" / "results.parquet")
    assert len(frame) == 2 and (frame["status"] == "ok").all() and not frame["cached"].any()
    assert list((tmp_path / "ddp" / "_train").iterdir()), "Ray Train kept its checkpoints under RUN_DIR/_train"
    assert evaluations_stored(tmp_path) == frame["arch_key"].nunique()


def test_ctrl_c_stops_the_run_unfinished_and_resume_completes_it(config_file, tmp_path):
    """Ctrl-C (SIGINT): Tune ends its run gracefully and returns; the stage must not count as finished."""
    import os
    import signal
    import subprocess
    import sys
    import time

    from tests.cli_driver import cli_env

    storage = tmp_path / "runs"
    run_dir = storage / "small"
    proc = subprocess.Popen(
        [sys.executable, "-m", "orchestrator.cli", "run", str(config_file), "--storage", str(storage)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=cli_env(), start_new_session=True,
    )
    deadline = time.monotonic() + 300
    while proc.poll() is None and time.monotonic() < deadline and evaluations_stored(storage) < 1:
        time.sleep(0.2)
    assert proc.poll() is None, "the run finished before Ctrl-C"
    os.kill(proc.pid, signal.SIGINT)  # the driver only, as a terminal's Ctrl-C reaches the foreground process
    _out, err = proc.communicate(timeout=300)
    assert proc.returncode == 130, err[-2000:]
    assert "interrupted; continue with `facenas resume RUN_DIR`" in err
    assert not (run_dir / "best.json").exists() and not (run_dir / "search" / "stage.json").exists()

    resumed = facenas("resume", str(run_dir), timeout=600)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    frame = pd.read_parquet(run_dir / "results.parquet")
    assert len(frame) == CONFIG["searcher"]["num_samples"] and frame["arch_key"].is_unique
    assert json.loads((run_dir / "best.json").read_text())["evaluations"] == CONFIG["searcher"]["num_samples"]
