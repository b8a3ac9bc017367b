"""``facenas tensorboard``: the viewer starts on 127.0.0.1, prints its URL, serves the run's scalars."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from orchestrator.cli import main
from tests.cli_driver import cli_env
from tests.synthetic_runs import global_run


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _get(url: str) -> str:
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # loopback: never a proxy
    with opener.open(url, timeout=10) as response:
        return response.read().decode()


def test_tensorboard_serves_the_runs_scalars_on_loopback(tmp_path: Path) -> None:
    from torch.utils.tensorboard import SummaryWriter

    run = global_run(tmp_path / "runs" / "rnd", searcher="random")
    with SummaryWriter(log_dir=str(run / "supernet" / "tensorboard")) as writer:  # as the supernet writes
        for epoch in range(3):
            writer.add_scalar("train_loss", 1.0 / (epoch + 1), epoch)
    port = _free_port()
    proc = subprocess.Popen([sys.executable, "-m", "orchestrator.cli", "tensorboard", str(run), "--port", str(port)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=cli_env())
    try:
        line = proc.stdout.readline()
        assert f"http://127.0.0.1:{port}/" in line, line + proc.stderr.read()[-2000:] if proc.poll() is not None else line
        url = line.strip().rsplit(" ", 1)[-1]
        assert "TensorBoard" in _get(url) or "<html" in _get(url).lower()
        deadline, tags = time.monotonic() + 60, {}
        while time.monotonic() < deadline and "supernet/tensorboard" not in tags:
            tags = json.loads(_get(url.rstrip("/") + "/data/plugin/scalars/tags"))
            time.sleep(0.5)
        assert "train_loss" in tags["supernet/tensorboard"]
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
    assert proc.returncode == 0


def test_tensorboard_without_event_files_is_a_user_error(tmp_path: Path, capsys) -> None:
    run = global_run(tmp_path / "runs" / "rnd", searcher="random")
    assert main(["tensorboard", str(run), "--port", str(_free_port())]) == 2
    assert "no TensorBoard event files yet" in capsys.readouterr().err
