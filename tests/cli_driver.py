"""Driving the ``facenas`` CLI as a user would, in subprocesses: run, resume, kill at a chosen moment."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pandas as pd
import yaml

__all__ = ["cli_env", "evaluations_stored", "facenas", "kill_when", "write_config"]


def cli_env() -> dict[str, str]:
    """The environment of a CLI subprocess: auth off (tests only), no inherited cluster address."""
    env = dict(os.environ, RAY_AUTH_MODE="disabled", RAY_USAGE_STATS_ENABLED="0", PYTHONUNBUFFERED="1")
    env.pop("RAY_ADDRESS", None)
    return env


def facenas(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    """Run ``facenas ARGS`` to completion; stdout and stderr captured as text."""
    return subprocess.run(
        [sys.executable, "-m", "orchestrator.cli", *args],
        capture_output=True, text=True, timeout=timeout, env=cli_env(),
    )


def write_config(folder: Path, name: str, payload: dict) -> Path:
    path = folder / f"{name}.yaml"
    path.write_text(yaml.safe_dump(payload))
    return path


def evaluations_stored(storage: Path) -> int:
    """Rows in the benchmark store under ``storage`` (read from its Parquet files)."""
    folder = storage / "benchmark" / "evaluations"
    files = list(folder.glob("part-*.parquet")) if folder.is_dir() else []
    return sum(len(pd.read_parquet(f)) for f in files)


def kill_when(args: list[str], predicate: Callable[[], bool], *, limit: float = 600) -> None:
    """Start ``facenas ARGS``; SIGKILL it with the Ray it started (its process group) once ``predicate``.

    Fails the test if the run ends first or the moment never comes: the kill must happen mid-run.
    """
    proc = subprocess.Popen(
        [sys.executable, "-m", "orchestrator.cli", *args],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=cli_env(), start_new_session=True,
    )
    deadline = time.monotonic() + limit
    while not predicate() and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.3)
    alive = proc.poll() is None
    if alive:
        os.killpg(proc.pid, signal.SIGKILL)  # the driver and its Ray, as in a machine crash
    proc.wait()
    assert alive, "the run finished before it could be killed"
    assert predicate(), "timed out waiting for the moment to kill"
