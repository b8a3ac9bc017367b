"""Security (issue 5): loopback servers, token authentication outside tests, no unpickling of swappable files.

- Source scan: every ``torch.load`` in the product passes ``weights_only=True``; nothing calls ``pickle`` /
  ``cloudpickle`` / ``dill`` / ``joblib`` loaders or ``np.load(allow_pickle=True)`` or ``yaml.load``
  except the CIFAR reader's allow-list unpickler; no product code turns token authentication off.
- Behaviour: a checkpoint or a CIFAR batch carrying a code-running pickle is refused and runs nothing;
  a searcher state that is not JSON is refused.
- A local Ray started as the CLI starts it listens on 127.0.0.1 only and has token authentication on;
  the dashboard is asked for on 127.0.0.1.
"""

from __future__ import annotations

import ast
import json
import os
import pickle
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PRODUCT = ["orchestrator", "search_algos", "trainables", "benchmarks"]
MARKER = Path("/tmp/facenas-security-marker")


def _product_files() -> list[Path]:
    return sorted(p for folder in PRODUCT for p in (ROOT / folder).rglob("*.py"))


def _calls(tree: ast.AST):
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            func = node.func
            name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
            owner = func.value.id if isinstance(func, ast.Attribute) and isinstance(func.value, ast.Name) else ""
            yield node, owner, name


def _keyword(node: ast.Call, name: str):
    for kw in node.keywords:
        if kw.arg == name:
            return kw.value
    return None


def test_product_code_never_unpickles_untrusted_files():
    problems = []
    for path in _product_files():
        tree = ast.parse(path.read_text(), filename=str(path))
        where = path.relative_to(ROOT)
        for node, owner, name in _calls(tree):
            line = f"{where}:{node.lineno}"
            if owner == "torch" and name == "load":
                flag = _keyword(node, "weights_only")
                if not (isinstance(flag, ast.Constant) and flag.value is True):
                    problems.append(f"{line}: torch.load without weights_only=True")
            if owner in ("pickle", "cloudpickle", "dill", "joblib", "_pickle") and name in ("load", "loads"):
                problems.append(f"{line}: {owner}.{name}")
            if owner == "np" and name == "load":
                flag = _keyword(node, "allow_pickle")
                if flag is not None and not (isinstance(flag, ast.Constant) and flag.value is False):
                    problems.append(f"{line}: np.load with allow_pickle")
            if owner == "yaml" and name in ("load", "unsafe_load", "full_load"):
                problems.append(f"{line}: yaml.{name} (use yaml.safe_load)")
        for node in ast.walk(tree):  # subclasses of pickle.Unpickler: only the CIFAR allow-list one
            if isinstance(node, ast.ClassDef):
                bases = [ast.unparse(b) for b in node.bases]
                if any(b.endswith("Unpickler") for b in bases) and node.name != "_ArrayUnpickler":
                    problems.append(f"{where}:{node.lineno}: unpickler class {node.name}")
    assert not problems, "\n".join(problems)


def test_product_code_never_turns_token_authentication_off():
    offenders = []
    for path in _product_files():
        text = path.read_text()
        for i, line in enumerate(text.splitlines(), 1):
            if "RAY_AUTH_MODE" in line and "disabled" in line:
                offenders.append(f"{path.relative_to(ROOT)}:{i}: {line.strip()}")
    # benchmarks/run.py starts private throwaway Rays on loopback for measurements, as the tests do.
    assert all(o.startswith("benchmarks/") for o in offenders), offenders


def test_servers_bind_loopback_unless_asked():
    offenders = []
    for path in _product_files():
        for i, line in enumerate(path.read_text().splitlines(), 1):
            if "0.0.0.0" in line or "bind_all" in line:
                offenders.append(f"{path.relative_to(ROOT)}:{i}")
    assert not offenders, offenders


class _RunsCode:
    def __reduce__(self):
        return (os.system, (f"touch {MARKER}",))


@pytest.fixture
def marker():
    MARKER.unlink(missing_ok=True)
    yield MARKER
    assert not MARKER.exists(), "a pickle payload ran"


def test_malicious_checkpoint_is_refused(tmp_path, marker):
    import torch

    from orchestrator.evaluate import load_state, save_state

    good = tmp_path / "good.pt"
    save_state({"epoch": 2, "model": {"w": torch.ones(2)}}, str(good))
    assert load_state(str(good))["epoch"] == 2  # the real format loads
    evil = tmp_path / "evil.pt"
    torch.save({"epoch": 3, "payload": _RunsCode()}, evil)  # as an attacker would swap it in
    assert load_state(str(evil)) is None  # refused; the evaluation starts again instead
    with open(tmp_path / "raw.pt", "wb") as fh:
        pickle.dump(_RunsCode(), fh)
    assert load_state(str(tmp_path / "raw.pt")) is None


def test_malicious_cifar_batch_is_refused(tmp_path, marker):
    import numpy as np

    from trainables.checks import DatasetError
    from trainables.classification.data import load_dataset

    good = pickle.dumps({b"data": np.zeros((4, 3072), np.uint8), b"labels": [0, 1, 2, 3]}, protocol=2)
    for name in ("data_batch_1", "data_batch_2", "data_batch_3", "data_batch_4", "data_batch_5", "test_batch"):
        (tmp_path / name).write_bytes(good)
    (tmp_path / "data_batch_3").write_bytes(pickle.dumps({b"data": _RunsCode(), b"labels": [0]}, protocol=2))
    with pytest.raises(DatasetError, match="data_batch_3"):
        load_dataset(name="cifar10", path=str(tmp_path))


def test_searcher_state_must_be_json(tmp_path, marker):
    from search_algos.random_search import RandomArchSearcher
    from search_algos.spaces import GlobalSpace

    searcher = RandomArchSearcher(GlobalSpace(d_min=2, d_max=3), num_samples=2, epochs=1, metric="val_acc",
                                  mode="max", seed=0)
    state = tmp_path / "searcher-state-x.pkl"  # Tune's file name; facenas writes JSON into it
    searcher.save(str(state))
    assert json.loads(state.read_text())["class"] == "RandomArchSearcher"
    state.write_bytes(pickle.dumps(_RunsCode()))
    with pytest.raises(ValueError):  # UnicodeDecodeError / JSONDecodeError: refused, not executed
        searcher.restore(str(state))


def test_start_ray_asks_for_loopback_and_keeps_auth(monkeypatch):
    import ray

    from orchestrator import runtime

    seen = {}
    monkeypatch.setattr(ray, "is_initialized", lambda: False)
    monkeypatch.setattr(ray, "init", lambda **kw: seen.update(kw) or type("Ctx", (), {"dashboard_url": "127.0.0.1:8265"})())
    monkeypatch.setattr(runtime, "check_dashboard", lambda dashboard: None)
    monkeypatch.delenv("RAY_AUTH_MODE", raising=False)
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    line = runtime.start_ray(None, num_cpus=1, dashboard=True)
    assert seen["_node_ip_address"] == "127.0.0.1" and seen["dashboard_host"] == "127.0.0.1"
    assert seen["address"] == "local" and "127.0.0.1" in line
    assert "RAY_AUTH_MODE" not in os.environ and "_system_config" not in seen
    assert "; dashboard at http://127.0.0.1:8265 (it asks for the token `ray get-auth-token` prints)" in line


def test_attaching_says_where_the_clusters_own_dashboard_is(monkeypatch):
    import ray

    from orchestrator import runtime

    monkeypatch.setattr(ray, "is_initialized", lambda: False)
    monkeypatch.setattr(runtime, "_check_reachable", lambda address: None)
    monkeypatch.setattr(ray, "init", lambda **kw: type("Ctx", (), {"dashboard_url": "10.0.0.5:8265"})())
    line = runtime.start_ray("10.0.0.5:6379", dashboard=True)
    assert line == "attached to Ray cluster at 10.0.0.5:6379; its dashboard at http://10.0.0.5:8265"
    monkeypatch.setattr(ray, "init", lambda **kw: type("Ctx", (), {"dashboard_url": ""})())
    assert runtime.start_ray("10.0.0.5:6379") == "attached to Ray cluster at 10.0.0.5:6379"


_PROBE = textwrap.dedent(
    """
    import os, sys
    sys.argv = ["facenas", "run", "c.yaml"]
    from orchestrator.cli import _loopback_only, _parser
    _loopback_only(_parser().parse_args(["run", "c.yaml"]))  # what the CLI does for a local run
    from orchestrator.runtime import start_ray, stop_ray
    print(start_ray(None, num_cpus=1), flush=True)
    from ray._private.authentication.authentication_utils import is_token_auth_enabled
    print("AUTH", is_token_auth_enabled(), flush=True)
    print("READY", os.getpid(), flush=True)
    sys.stdin.readline()  # keep Ray up while the test looks at its sockets
    stop_ray()
    """
)


def _descendants(pid: int) -> set[int]:
    parents: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                parents[int(entry.name)] = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                pass
    family, grew = {pid}, True
    while grew:
        grew = False
        for child, parent in parents.items():
            if parent in family and child not in family:
                family.add(child)
                grew = True
    return family


def _listening(pids: set[int]) -> list[str]:
    """``addr:port`` of every TCP socket in LISTEN state held by ``pids`` (from /proc)."""
    inodes = set()
    for pid in pids:
        try:
            for fd in Path(f"/proc/{pid}/fd").iterdir():
                target = os.readlink(fd)
                if target.startswith("socket:["):
                    inodes.add(target[8:-1])
        except OSError:
            pass
    found = []
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for row in Path(table).read_text().splitlines()[1:]:
            cols = row.split()
            if cols[3] == "0A" and cols[9] in inodes:  # 0A = LISTEN
                found.append(cols[1])
    return found


def _is_loopback(hex_addr: str) -> bool:
    addr, _ = hex_addr.split(":")
    if len(addr) == 8:
        return addr.endswith("7F")  # 127.x.x.x, little-endian
    return addr in ("00000000000000000000000001000000", "0000000000000000FFFF00000100007F")


@pytest.mark.integration
def test_local_ray_listens_on_loopback_only_with_token_auth():
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_AUTH_MODE", "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "RAY_ADDRESS")}
    proc = subprocess.Popen([sys.executable, "-c", _PROBE], cwd=ROOT, env=env, stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        lines = []
        for line in proc.stdout:
            lines.append(line.strip())
            if line.startswith("READY"):
                break
        assert lines and lines[-1].startswith("READY"), lines
        assert "AUTH True" in lines, "token authentication must stay on outside tests"
        sockets = _listening(_descendants(proc.pid))
        assert sockets, "Ray's servers were not found"
        assert all(_is_loopback(s) for s in sockets), sockets
    finally:
        proc.stdin.close()
        proc.wait(timeout=60)
