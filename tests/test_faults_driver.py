"""The driver SIGKILLed again and again (issue 5, fault test b), for every pipeline, through the CLI.

For each pipeline (random, macro_micro, samos) a tiny config runs once uninterrupted (the reference);
then the same config is started in another storage and killed with SIGKILL (driver and its Ray, as a
machine crash) at five or more seeded random moments — ``run``, kill, ``resume``, kill, ``resume``, ... —
and finally resumed to the end. Its ``best.json`` must equal the reference's, and no evaluation may be
lost or stored twice.

A moment is a seeded random delay after the driver's Ray is up (Tune writes its result files in
batches, so they cannot time a kill); the delays are scaled to the reference's wall time, so kills land
mid-epoch, between trials and between stages while every cycle still makes progress from checkpoints.
"""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from tests.cli_driver import cli_env, evaluations_stored, facenas, write_config

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.timeout(1800)]

KILLS = 5
# With speculation (speculate=2) the number of speculative trials run, and wasted, depends on when results
# arrive, in any two runs, killed or not: those counts are not compared; the committed search is.
TIMING_DEPENDENT = {"macro_micro": {"best.evaluations", "best.search.wasted"}}
CONFIGS = {
    "random": {
        "name": "rnd", "seed": 4,
        "data": {"dataset": "digits", "max_samples": 200},
        "space": {"d_min": 2, "d_max": 4, "w_min": 8, "w_max": 16, "w_step": 4},
        "searcher": {"name": "random", "num_samples": 4, "epochs": 4},
        "training": {"batch_size": 16},
        "resources": {"num_cpus": 2},
    },
    "macro_micro": {
        "name": "mm", "seed": 1,
        "data": {"dataset": "digits", "max_samples": 300},
        "space": {"d_min": 2, "d_max": 3, "w_min": 8, "w_max": 12, "w_step": 4},
        "searcher": {
            "name": "macro_micro", "preset": "tiny", "d_min": 2, "d_max": 3, "w_min": 8, "w_max": 12, "w_res": 4,
            "e_min_macro": 1, "e_min_micro": 1, "param_slack": 500, "speculate": 2, "final_epochs": 2,
            "baseline_samples": 1,
        },
        "training": {"batch_size": 16},
        "resources": {"num_cpus": 2},
    },
    "samos": {
        "name": "monas", "seed": 2,
        "data": {"dataset": "faces3d", "image_size": 16, "n_train": 32, "n_val": 8, "n_test": 12},
        "space": {"name": "multipath", "layers": 3, "scales": 2},
        "searcher": {
            "name": "samos", "supernet_epochs": 2, "k_children": 2, "channels": 4, "batch_size": 8,
            "iterations": 4, "calibration": 2, "chains": 1, "retrain_epochs": 1, "random_samples": 2,
        },
        "resources": {"num_cpus": 2},
    },
}


def _start(args: list[str], log: Path) -> subprocess.Popen:
    with open(log, "wb") as out:  # a file, not a pipe: a full pipe would stall the driver
        return subprocess.Popen(
            [sys.executable, "-m", "orchestrator.cli", *args],
            stdout=out, stderr=subprocess.STDOUT, env=cli_env(), start_new_session=True,
        )


def _kill_after(proc: subprocess.Popen, log: Path, delay: float, limit: float = 300) -> bool:
    """SIGKILL ``proc`` (and its Ray) ``delay`` s after its Ray is up; False if it ended first."""
    deadline = time.monotonic() + limit
    while proc.poll() is None and b"local Ray with" not in log.read_bytes():
        assert time.monotonic() < deadline, f"Ray did not start within {limit} s"
        time.sleep(0.05)
    end = time.monotonic() + delay
    while proc.poll() is None and time.monotonic() < end:
        time.sleep(0.02)
    if proc.poll() is not None:
        return False
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    return True


def _same(got: Any, want: Any, path: str = "best", skip: frozenset[str] = frozenset()) -> None:
    """Equal JSON values; floats to 1e-9 relative (the same computation, maybe summed in another order)."""
    if path in skip:
        return
    if isinstance(want, dict):
        assert isinstance(got, dict) and set(got) == set(want), (path, sorted(set(got) ^ set(want)))
        for key in want:
            _same(got[key], want[key], f"{path}.{key}", skip)
    elif isinstance(want, list):
        assert isinstance(got, list) and len(got) == len(want), path
        for i, (g, w) in enumerate(zip(got, want)):
            _same(g, w, f"{path}[{i}]", skip)
    elif isinstance(want, float) and not isinstance(got, bool):
        assert isinstance(got, (int, float)) and math.isclose(got, want, rel_tol=1e-9, abs_tol=1e-12), (path, got, want)
    else:
        assert got == want, (path, got, want)


@pytest.mark.parametrize("pipeline", list(CONFIGS))
def test_repeated_driver_sigkill_then_resume_equals_uninterrupted(pipeline, tmp_path):
    config = write_config(tmp_path, pipeline, CONFIGS[pipeline])
    name = CONFIGS[pipeline]["name"]

    started = time.monotonic()
    reference = facenas("run", str(config), "--storage", str(tmp_path / "ref"), timeout=900)
    elapsed = time.monotonic() - started
    assert reference.returncode == 0, reference.stderr[-3000:]
    ref_dir = tmp_path / "ref" / name

    rng = np.random.default_rng([5, list(CONFIGS).index(pipeline)])
    run_dir = tmp_path / "killed" / name
    # Delays average 40 % of the reference's wall time over the kills: they land all over the first
    # part of the run, and the cycles' progress (from checkpoints) carries later kills deeper into it.
    mean_delay = 0.4 * elapsed / KILLS
    kills, args = 0, ["run", str(config), "--storage", str(tmp_path / "killed")]
    while kills < KILLS:
        log = tmp_path / f"driver-{kills}.log"
        proc = _start(args, log)
        if not _kill_after(proc, log, delay=float(rng.uniform(0.1, 2 * mean_delay))):
            assert proc.returncode == 0, log.read_text()[-3000:]
            break  # it finished before this moment
        if (run_dir / "best.json").exists():
            break  # killed while it was shutting down, after the run had finished
        kills += 1
        args = ["resume", str(run_dir)]
    assert kills >= KILLS, f"only {kills} kills landed before {pipeline} finished (reference {elapsed:.0f} s)"

    resumed = facenas("resume", str(run_dir), timeout=900)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    got_best, want_best = json.loads((run_dir / "best.json").read_text()), json.loads((ref_dir / "best.json").read_text())
    skip = frozenset(TIMING_DEPENDENT.get(pipeline, ()))
    _same(got_best, want_best, skip=skip)

    # Nothing lost, nothing twice: the same evaluations per stage, each trial once, each trained
    # evaluation stored once (a store key is an architecture at its epochs).
    got, want = pd.read_parquet(run_dir / "results.parquet"), pd.read_parquet(ref_dir / "results.parquet")
    sizes = lambda frame: frame.groupby("stage").size().to_dict()  # noqa: E731
    if skip:  # speculative search: every committed evaluation is there; the extra ones vary with timing
        committed = {e["arch_key"] for e in want_best["search"]["log"] if e.get("epochs")}  # skipped: no epochs
        assert committed <= set(got[got["stage"] == "search"]["arch_key"])
        got, want = got[got["stage"] != "search"], want[want["stage"] != "search"]
    assert sizes(got) == sizes(want)
    assert got.groupby("stage")["trial_id"].apply(lambda s: s.is_unique).all()
    assert (got["status"] == "ok").all(), got[got["status"] != "ok"][["stage", "error"]]
    stored = evaluations_stored(tmp_path / "killed")
    if skip:  # each trained (architecture, epochs) once
        trained = pd.read_parquet(run_dir / "results.parquet").query("not cached")[["arch_key", "epochs"]]
        assert stored == len(trained.drop_duplicates())
    else:
        assert stored == evaluations_stored(tmp_path / "ref")
