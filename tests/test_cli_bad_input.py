"""Bad input through the CLI: one line per problem, exit code 2, no traceback, nothing created."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest
import yaml

from orchestrator.cli import main

GOOD = {
    "name": "t",
    "seed": 0,
    "data": {"dataset": "digits", "max_samples": 300},
    "space": {"d_min": 3, "d_max": 4, "w_min": 8, "w_max": 12, "w_step": 4},
    "searcher": {"name": "random", "num_samples": 2, "epochs": 1},
}


def _write(tmp_path: Path, payload: object, name: str = "c.yaml") -> Path:
    path = tmp_path / name
    path.write_text(yaml.safe_dump(payload) if not isinstance(payload, str) else payload)
    return path


def _run(argv: list[str], capsys) -> tuple[int, list[str]]:
    code = main(argv)
    err = capsys.readouterr().err
    assert "Traceback" not in err
    return code, [ln for ln in err.splitlines() if ln.strip()]


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_three_mistakes_three_lines_nothing_created(tmp_path, capsys):
    bad = dict(GOOD, seed=-1, searcher={"name": "random", "num_samples": -2}, data={"dataset": "nope"})
    storage = tmp_path / "runs"
    code, lines = _run(["run", str(_write(tmp_path, bad)), "--storage", str(storage)], capsys)
    assert code == 2
    assert len(lines) == 3, lines
    assert all(ln.startswith("facenas: c.yaml: ") for ln in lines)
    assert not storage.exists()


@pytest.mark.parametrize(
    ("override", "fragment"),
    [
        ({"data": {"dataset": "cifar10"}}, "set data.path"),
        ({"data": {"dataset": "mnist", "path": "/nonexistent/mnist"}}, "does not exist"),
        ({"searcher": {"name": "random", "num_samples": -5}}, "searcher.num_samples"),
        ({"space": {"name": "cells"}}, "space.name"),
        ({"searcher": {"name": "bayes"}}, "unknown searcher 'bayes'; valid searchers: random"),
    ],
)
def test_bad_values(tmp_path, capsys, override, fragment):
    storage = tmp_path / "runs"
    code, lines = _run(["run", str(_write(tmp_path, dict(GOOD, **override))), "--storage", str(storage)], capsys)
    assert code == 2
    assert len(lines) == 1 and fragment in lines[0], lines
    assert not storage.exists()


def test_corrupt_dataset_file(tmp_path, capsys):
    folder = tmp_path / "mnist"
    folder.mkdir()
    for name in ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"):
        (folder / name).write_bytes(b"\x00\x00\x08\x03garbage")
    cfg = dict(GOOD, data={"dataset": "mnist", "path": str(folder)})
    code, lines = _run(["run", str(_write(tmp_path, cfg)), "--storage", str(tmp_path / "runs")], capsys)
    assert code == 2 and len(lines) == 1 and "mnist" in lines[0], lines
    assert not (tmp_path / "runs").exists()


def test_missing_config_and_bad_yaml(tmp_path, capsys):
    code, lines = _run(["run", str(tmp_path / "none.yaml")], capsys)
    assert code == 2 and "does not exist" in lines[0]
    code, lines = _run(["run", str(_write(tmp_path, "searcher: {name: [\n"))], capsys)
    assert code == 2 and "not valid YAML" in lines[0]


@pytest.mark.parametrize("text", ["", " \n\n\t\n", "# only comments\n# here\n", "~\n", "---\n", "null\n"])
@pytest.mark.parametrize("verb", [["run"], ["benchmark", "build"]])
def test_empty_config_is_refused_not_run_with_defaults(tmp_path, capsys, text, verb):
    storage = tmp_path / "runs"
    path = _write(tmp_path, text)
    for extra in ([], ["--set", "seed=1"]):
        code, lines = _run([*verb, str(path), "--storage", str(storage), *extra], capsys)
        assert code == 2
        assert lines == [f"facenas: config file {path} is empty; start from configs/quickstart.yaml"]
        assert not storage.exists()


def test_bad_override(tmp_path, capsys):
    code, lines = _run(["run", str(_write(tmp_path, GOOD)), "--set", "searcher.num_samples"], capsys)
    assert code == 2 and "expected key.path=value" in lines[0]


def test_unreachable_address(tmp_path, capsys):
    storage = tmp_path / "runs"
    port = _closed_port()
    code, lines = _run(
        ["run", str(_write(tmp_path, GOOD)), "--storage", str(storage), "--address", f"127.0.0.1:{port}"], capsys
    )
    assert code == 2 and len(lines) == 1 and f"cannot reach a Ray cluster at 127.0.0.1:{port}" in lines[0]
    assert not storage.exists()


def test_run_dir_that_is_not_a_run(tmp_path, capsys):
    (tmp_path / "notarun").mkdir()
    for verb in ("resume", "status", "report"):
        code, lines = _run([verb, str(tmp_path / "notarun")], capsys)
        assert code == 2 and "is not a facenas run" in lines[0], (verb, lines)
    code, lines = _run(["status", str(tmp_path / "missing")], capsys)
    assert code == 2 and "is not a directory" in lines[0]


def test_corrupt_run_config(tmp_path, capsys):
    run = tmp_path / "r"
    run.mkdir()
    (run / "config.yaml").write_text("seed: [\n")
    code, lines = _run(["resume", str(run)], capsys)
    assert code == 2 and "corrupt" in lines[0]


def test_resume_of_a_finished_run(tmp_path, capsys):
    run = tmp_path / "done"
    run.mkdir()
    (run / "config.yaml").write_text(yaml.safe_dump(GOOD))
    (run / "best.json").write_text("{}")
    before = sorted(p.name for p in run.iterdir())
    code, lines = _run(["resume", str(run)], capsys)
    assert code == 2 and "already finished" in lines[0]
    assert sorted(p.name for p in run.iterdir()) == before


def test_explicit_name_that_exists(tmp_path, capsys):
    (tmp_path / "runs" / "taken").mkdir(parents=True)
    (tmp_path / "runs" / "taken" / "config.yaml").write_text("x: 1\n")
    code, lines = _run(
        ["run", str(_write(tmp_path, GOOD)), "--storage", str(tmp_path / "runs"), "--name", "taken"], capsys
    )
    assert code == 2 and "already exists" in lines[0] and "facenas resume" in lines[0]
    assert (tmp_path / "runs" / "taken" / "config.yaml").read_text() == "x: 1\n"


def test_reserved_name(tmp_path, capsys):
    code, lines = _run(["run", str(_write(tmp_path, GOOD)), "--name", "benchmark", "--storage", str(tmp_path)], capsys)
    assert code == 2 and "reserved" in lines[0]


def test_local_runs_keep_ray_on_loopback(monkeypatch):
    from orchestrator.cli import _loopback_only, _parser

    monkeypatch.delenv("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", raising=False)
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    _loopback_only(_parser().parse_args(["run", "c.yaml", "--address", "10.0.0.1:6379"]))
    assert "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER" not in os.environ  # a cluster keeps its own addresses
    _loopback_only(_parser().parse_args(["run", "c.yaml"]))
    assert os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] == "0"


def test_dashboard_without_its_extra(tmp_path, capsys, monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "aiohttp" else real(name, *a))
    storage = tmp_path / "runs"
    code, lines = _run(["run", str(_write(tmp_path, GOOD)), "--storage", str(storage), "--dashboard"], capsys)
    assert code == 2 and len(lines) == 1 and "facenas[dashboard]" in lines[0] and "missing: aiohttp" in lines[0]
    assert not storage.exists()


def test_resume_with_dashboard_without_its_extra(tmp_path, capsys, monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "grpc" else real(name, *a))
    run_dir = tmp_path / "runs" / "t"
    run_dir.mkdir(parents=True)
    _write(run_dir, GOOD, "config.yaml")
    code, lines = _run(["resume", str(run_dir), "--dashboard"], capsys)
    assert code == 2 and len(lines) == 1 and "facenas[dashboard]" in lines[0] and "missing: grpc" in lines[0]
    assert sorted(p.name for p in run_dir.iterdir()) == ["config.yaml"]  # nothing started, nothing written
