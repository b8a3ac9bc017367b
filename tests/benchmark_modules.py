"""Load a benchmarks/ module by path, as `python benchmarks/run.py` does (benchmarks/ is not a package)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from typing import Any

BENCHMARKS_DIR = Path(__file__).resolve().parents[1] / "benchmarks"


def load_benchmark_module(stem: str, name: str) -> Any:
    """``benchmarks/<stem>.py`` as a fresh module registered under ``name`` (dataclasses and pickling look
    a module up by its name, so each test file gives its own)."""
    spec = importlib.util.spec_from_file_location(name, BENCHMARKS_DIR / f"{stem}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module
