"""benchmarks/gpu.py on a CPU: one line and exit 0 without CUDA; its measuring functions at tiny sizes."""

from __future__ import annotations

import importlib.util
import math
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "benchmarks" / "gpu.py"


def _load() -> Any:
    spec = importlib.util.spec_from_file_location("facenas_benchmarks_gpu", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up while the class is built
    spec.loader.exec_module(module)
    return module


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the machine-without-CUDA path")
def test_without_cuda_it_says_so_in_one_line_and_exits_0(tmp_path) -> None:
    out = tmp_path / "gpu.json"
    done = subprocess.run([sys.executable, str(SCRIPT), "--out", str(out)], capture_output=True, text=True,
                          timeout=120, cwd=tmp_path)  # fmt: skip
    assert done.returncode == 0, done.stderr
    lines = [line for line in (done.stdout + done.stderr).splitlines() if line.strip()]
    assert len(lines) == 1 and "no CUDA device" in lines[0], lines
    assert not out.exists()  # no figures


def test_measuring_functions_run_on_the_cpu_at_tiny_sizes() -> None:
    gpu = _load()
    saved = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        results = {
            "candidate": gpu.measure_candidate("cpu", batch=4, image_size=8, depth=3, width=8, steps=2, warmup=1,
                                               rounds=1, channels_last=True),
            "supernet": gpu.measure_supernet("cpu", batch=4, image_size=16, layers=2, scales=2, channels=4,
                                             k_children=2, steps=2, warmup=1, rounds=1),
            "oneshot": gpu.measure_oneshot("cpu", images=4, image_size=16, layers=2, scales=2, channels=4,
                                           children=1, recalibration_batches=1, rounds=1, precision="fp32"),
            "detector": gpu.measure_detector("cpu", batch=2, image_size=32, steps=2, width_mult=0.25, rounds=1),
        }  # fmt: skip
        rnas = gpu.measure_rnas("cpu", batch=2, frames=4, image_size=16, channels=4, cells=2, nodes=2, levels=2,
                                steps=2, warmup=1, rounds=1)  # fmt: skip
    finally:
        torch.set_num_threads(saved)
    assert set(rnas) == {"fold", "search"}  # the RNAS-MER modules are in this repository
    results.update({f"rnas_{part}": value for part, value in rnas.items()})
    for name, measured in results.items():
        assert measured.items_per_s > 0 and math.isfinite(measured.items_per_s), name
        assert measured.busy is None and measured.busy_source == "not measured on the CPU", name
    variants = {p: results["candidate"].to_dict() for p in ("fp32", "bf16")}
    figure = gpu._busy_figure("candidate", variants, "images/s")
    assert set(figure) == {"value", "unit", "goal", "holds", "detail"} and figure["goal"] == 60.0
    assert figure["value"] is None and figure["holds"] is False and figure["detail"]["bf16_speedup"] == 1.0
    assert gpu._speedup_figure(variants, "images/s")["value"] == 1.0
