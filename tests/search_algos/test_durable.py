"""``search_algos.durable``: the one durable file write (its numbered argument is in the module docstring)."""

from __future__ import annotations

import json
import math
import os
import stat
import subprocess
import sys
from pathlib import Path
from typing import IO

import pytest

from search_algos import durable
from search_algos.durable import (
    TMP_SUFFIX,
    write_bytes_durable,
    write_durable,
    write_json_durable,
    write_text_durable,
)

ROOT = Path(__file__).resolve().parents[2]


def _left_over(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.endswith(TMP_SUFFIX))


def test_writes_bytes_text_and_json(tmp_path: Path) -> None:
    write_bytes_durable(tmp_path / "a.bin", b"\x00\x01")
    write_text_durable(tmp_path / "b.txt", "naïve\n")
    write_json_durable(tmp_path / "c.json", {"b": 1, "a": [1.5, None]})
    write_json_durable(tmp_path / "d.json", {"b": 1, "a": 2}, sort_keys=False)
    assert (tmp_path / "a.bin").read_bytes() == b"\x00\x01"
    assert (tmp_path / "b.txt").read_bytes() == "naïve\n".encode()
    # The exact text json.dump wrote before (results.py's best.json format), and the caller's key order.
    assert (tmp_path / "c.json").read_text() == json.dumps({"a": [1.5, None], "b": 1}, indent=2) + "\n"
    assert (tmp_path / "d.json").read_text() == '{\n  "b": 1,\n  "a": 2\n}\n'
    assert _left_over(tmp_path) == []


def test_replaces_an_existing_file_with_default_permissions(tmp_path: Path) -> None:
    target, plain = tmp_path / "t.txt", tmp_path / "plain.txt"
    target.write_text("old")
    plain.write_text("made by open()")
    write_text_durable(target, "new")
    assert target.read_text() == "new"
    assert target.stat().st_mode & 0o777 == plain.stat().st_mode & 0o777  # umask applies, not mkstemp's 0600


def test_fsyncs_the_file_before_the_rename_and_the_folder_after(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    events: list[str] = []
    real_fsync, real_replace = os.fsync, os.replace

    def fsync(fd: int) -> None:
        events.append("fsync dir" if stat.S_ISDIR(os.fstat(fd).st_mode) else "fsync file")
        real_fsync(fd)

    def replace(src: str, dst: str) -> None:
        events.append("replace")
        real_replace(src, dst)

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "replace", replace)
    write_text_durable(tmp_path / "x", "data")
    expected = ["fsync file", "replace", "fsync dir"] if os.name == "posix" else ["fsync file", "replace"]
    assert events == expected


@pytest.mark.parametrize("existed", [True, False])
def test_a_failed_rename_keeps_the_old_content_and_leaves_no_temp_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, existed: bool
) -> None:
    target = tmp_path / "best.json"
    if existed:
        write_json_durable(target, {"value": 1})

    def crash(src: str, dst: str) -> None:
        assert Path(src).read_text() == '{\n  "value": 2\n}\n'  # the new content was complete, not yet in place
        raise OSError("simulated crash between write and replace")

    monkeypatch.setattr(os, "replace", crash)
    with pytest.raises(OSError, match="simulated crash"):
        write_json_durable(target, {"value": 2})
    if existed:
        assert json.loads(target.read_text()) == {"value": 1}
    else:
        assert not target.exists()
    assert _left_over(tmp_path) == []


def test_a_writer_that_fails_halfway_keeps_the_old_content(tmp_path: Path) -> None:
    target = tmp_path / "state.pt"
    target.write_bytes(b"old state")

    def half(fh: IO[bytes]) -> None:
        fh.write(b"new sta")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError, match="disk full"):
        write_durable(target, half)
    assert target.read_bytes() == b"old state"
    assert _left_over(tmp_path) == []


def test_nan_is_refused_before_anything_is_written(tmp_path: Path) -> None:
    target = tmp_path / "best.json"
    target.write_text("{}")
    with pytest.raises(ValueError):
        write_json_durable(target, {"value": math.nan})
    assert target.read_text() == "{}"
    assert list(tmp_path.iterdir()) == [target]


def test_a_missing_folder_is_the_callers_error(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        write_text_durable(tmp_path / "missing" / "x.txt", "data")
    assert list(tmp_path.iterdir()) == []


def test_a_killed_process_leaves_the_old_file_and_at_most_a_hidden_tmp(tmp_path: Path) -> None:
    # A real crash (no exception handler runs): the process dies after writing, before the rename.
    target = tmp_path / "config.yaml"
    target.write_text("seed: 1\n")
    code = (
        "import os, sys\n"
        "from search_algos.durable import write_durable\n"
        "def die(fh):\n"
        "    fh.write(b'seed: 2\\n')\n"
        "    fh.flush()\n"
        "    os._exit(9)\n"
        f"write_durable({str(target)!r}, die)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 9, done.stderr
    assert target.read_text() == "seed: 1\n"
    (left,) = _left_over(tmp_path)
    assert left.startswith(".config.yaml.")  # hidden, and *.tmp: scans of final names skip it


def test_is_the_only_hand_written_replace_in_the_project() -> None:
    # The point of the module: no other file renames a temporary file into place by hand. (Tune's own
    # rename of the searcher state, and the benchmark that measures raw fsync speed, are not ours.)
    own = Path(durable.__file__).resolve()
    others = [
        f"{p.relative_to(ROOT)}:{n}"
        for folder in ("orchestrator", "search_algos", "trainables", "benchmarks")
        for p in sorted((ROOT / folder).rglob("*.py"))
        if p.resolve() != own
        for n, line in enumerate(p.read_text(encoding="utf-8").splitlines(), 1)
        if "os.replace(" in line or ".replace(out)" in line or "tmp.replace(" in line or "mkstemp(" in line
    ]
    assert others == [], f"write files with search_algos.durable instead: {others}"
