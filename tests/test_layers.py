"""The layer rules of DESIGN.md §2, checked on the code itself.

``search_algos`` (spaces and searchers) must import without torch, trainables or orchestrator: a driver
that only plans a search, or a user reading results on a laptop, needs none of them.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

# Run in a fresh interpreter: this test process has torch (and perhaps trainables) imported already.
# ``sys.modules[name] = None`` makes any later ``import name`` (or ``import name.sub``) raise ImportError.
_IMPORT_WITHOUT = """
import importlib, pkgutil, sys
for blocked in ("torch", "trainables", "orchestrator"):
    sys.modules[blocked] = None
import search_algos
for module in pkgutil.walk_packages(search_algos.__path__, "search_algos."):
    importlib.import_module(module.name)
    print(module.name)
"""


def test_every_search_algos_module_imports_without_torch_trainables_orchestrator() -> None:
    done = subprocess.run(
        [sys.executable, "-c", _IMPORT_WITHOUT], cwd=ROOT, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, f"a search_algos module needs torch, trainables or orchestrator:\n{done.stderr}"
    imported = set(done.stdout.split())
    on_disk = {
        ".".join(p.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__")
        for p in (ROOT / "search_algos").rglob("*.py")
    } - {"search_algos"}
    assert on_disk <= imported, f"modules not reached by the walk: {sorted(on_disk - imported)}"
    assert {"search_algos.ranker", "search_algos.transfer_ranker"} <= imported
