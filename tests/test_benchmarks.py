"""benchmarks/run.py: the CLI contract (DESIGN.md §3), the registry, the JSON shape. Fast: nothing trains."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "benchmarks" / "run.py"
THREE = {"ranking_static_vs_dynamic", "speculative_speedup", "macro_micro_ri"}


def _load_run_module():
    # By path: the script is run as `python benchmarks/run.py`, and `benchmarks` is not an installed package.
    spec = importlib.util.spec_from_file_location("facenas_benchmarks_run", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def bench():
    return _load_run_module()


def _fake(value: float = 1.5) -> Any:
    def fake(quick: bool) -> dict[str, Any]:
        return {"value": value, "unit": "ratio", "goal": 1.0, "holds": value >= 1.0, "detail": {"quick": quick}}

    return fake


def _broken(quick: bool) -> dict[str, Any]:
    raise RuntimeError("boom\nsecond line")


def test_registry_lists_the_three_benchmarks(bench):
    assert THREE <= set(bench.BENCHMARKS)
    assert all(callable(fn) for fn in bench.BENCHMARKS.values())


def test_register_refuses_a_duplicate_name(bench):
    with pytest.raises(ValueError, match="'macro_micro_ri' is already registered"):
        bench.register("macro_micro_ri")(_fake())


def test_cli_rejects_unknown_names_with_one_line_and_exit_2(tmp_path):
    out = tmp_path / "out.json"
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), "--only", "macro_micro_ri", "nope", "--out", str(out)],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=60,
    )
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert "'nope'" in lines[0] and "valid names:" in lines[0]
    assert all(name in lines[0] for name in THREE)
    assert not out.exists()


def test_output_has_exactly_the_contract_keys(bench, monkeypatch, tmp_path):
    monkeypatch.setattr(bench, "BENCHMARKS", {"fake": _fake(1.5), "other": _fake(0.5)})
    out = tmp_path / "sub" / "out.json"
    assert bench.main(["--quick", "--only", "fake", "--out", str(out)]) == 0
    payload = json.loads(out.read_text())
    assert set(payload) == {"fake"}
    entry = payload["fake"]
    assert set(entry) == {"value", "unit", "goal", "holds", "detail"}
    assert entry["value"] == 1.5 and entry["unit"] == "ratio" and entry["goal"] == 1.0 and entry["holds"] is True
    assert entry["detail"]["quick"] is True
    assert [p.name for p in out.parent.iterdir()] == ["out.json"]  # atomic write leaves no temp file


def test_all_registered_benchmarks_run_without_only(bench, monkeypatch, tmp_path):
    monkeypatch.setattr(bench, "BENCHMARKS", {"a": _fake(2.0), "b": _fake(0.5)})
    out = tmp_path / "out.json"
    assert bench.main(["--out", str(out)]) == 0
    payload = json.loads(out.read_text())
    assert list(payload) == ["a", "b"]
    assert payload["b"]["holds"] is False and payload["a"]["detail"]["quick"] is False


def test_a_raising_benchmark_gives_an_error_entry_and_exit_1(bench, monkeypatch, tmp_path):
    monkeypatch.setattr(bench, "BENCHMARKS", {"fake": _fake(), "broken": _broken})
    out = tmp_path / "out.json"
    assert bench.main(["--only", "broken", "fake", "--out", str(out)]) == 1
    payload = json.loads(out.read_text())
    assert payload["broken"] == {"error": "RuntimeError: boom", "holds": False}
    assert set(payload["fake"]) == {"value", "unit", "goal", "holds", "detail"}


def test_a_result_of_the_wrong_shape_is_an_error(bench, monkeypatch, tmp_path):
    monkeypatch.setattr(bench, "BENCHMARKS", {"bad": lambda quick: {"value": 1.0}})
    out = tmp_path / "out.json"
    assert bench.main(["--only", "bad", "--out", str(out)]) == 1
    entry = json.loads(out.read_text())["bad"]
    assert entry["holds"] is False and "must return a dict with keys" in entry["error"]


def test_non_finite_values_are_written_as_null(bench, monkeypatch, tmp_path):
    import numpy as np

    def nan_bench(quick: bool) -> dict[str, Any]:
        detail = {"rho": np.float64("nan"), "n": np.int64(3), "xs": (np.float32(0.5), float("inf"))}
        return {"value": float("nan"), "unit": "ratio", "goal": 1.0, "holds": False, "detail": detail}

    monkeypatch.setattr(bench, "BENCHMARKS", {"nan": nan_bench})
    out = tmp_path / "out.json"
    assert bench.main(["--only", "nan", "--out", str(out)]) == 0
    entry = json.loads(out.read_text())["nan"]  # strict JSON: json.loads accepts NaN, so check the values
    assert entry["value"] is None
    assert entry["detail"]["rho"] is None and entry["detail"]["n"] == 3 and entry["detail"]["xs"] == [0.5, None]


@pytest.mark.parametrize(
    ("n", "epochs", "expected"),
    [(5, 5, [1, 2, 3, 4, 5]), (3, 8, [1, 5, 8]), (1, 8, [8]), (4, 1, [1, 1, 1, 1])],
)
def test_dynamic_epochs_run_from_one_to_the_final_epochs(bench, n, epochs, expected):
    assert bench.dynamic_epochs(n, epochs) == expected


def test_dynamic_epochs_for_thirty_networks_are_monotone(bench):
    ks = bench.dynamic_epochs(30, 8)
    assert ks[0] == 1 and ks[-1] == 8 and ks == sorted(ks) and set(ks) == set(range(1, 9))


def test_spread_gives_the_median_and_the_spread_of_rounds(bench):
    got = bench.spread([3.0, 1.0, 2.0, 10.0])
    assert got["median"] == 2.5 and got["min"] == 1.0 and got["max"] == 10.0 and got["rounds"] == 4
    assert got["q1"] == 1.75 and got["q3"] == 4.75 and got["iqr"] == 3.0  # inclusive quartiles
    assert got["values"] == [3.0, 1.0, 2.0, 10.0]  # in the order measured
    one = bench.spread([0.9])
    assert one["median"] == one["min"] == one["max"] == one["q1"] == one["q3"] == 0.9 and one["iqr"] == 0.0
    with pytest.raises(ValueError, match="at least one value"):
        bench.spread([])


def test_every_registered_benchmark_is_listed_in_the_readme(bench):
    readme = (ROOT / "benchmarks" / "README.md").read_text()
    missing = [name for name in bench.BENCHMARKS if f"### `{name}`" not in readme]
    assert not missing, f"benchmarks/README.md has no section for {missing}"
