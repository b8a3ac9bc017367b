"""RunPaths owns every name of a run directory (issue 16, deliverable 4): no other module of orchestrator/
or trainables/ spells a run-directory file or folder name in code (docstrings and messages may name them),
and the names themselves stay those old run directories have (they must still resume)."""

from __future__ import annotations

import ast
from pathlib import Path

from orchestrator.paths import RunPaths

ROOT = Path(__file__).resolve().parents[2]
# The run directory's own names (README's run-directory contract); a code literal of one of these outside
# orchestrator/paths.py is a path built by hand.
NAMES = {"stage.json", "evaluations.parquet", "results.parquet", "best.json", "config.yaml", "report.html",
         "supernet.pt", "_checkpoints", "_history", "_folds", "_train"}


def _docstrings(tree: ast.AST) -> set[int]:
    kinds = (ast.Module, ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)
    return {id(node.body[0].value) for node in ast.walk(tree)
            if isinstance(node, kinds) and node.body and isinstance(node.body[0], ast.Expr)
            and isinstance(node.body[0].value, ast.Constant)}


def _hand_built(path: Path, root: Path = ROOT) -> list[str]:
    """``file:line 'literal'`` for each code string (no spaces: not a message) naming a run-dir entry."""
    tree = ast.parse(path.read_text())
    docs, found = _docstrings(tree), []
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docs:
            text = node.value
            if " " in text:
                continue
            last = text.rstrip("/").rsplit("/", 1)[-1]
            if last in NAMES:
                found.append(f"{path.relative_to(root)}:{node.lineno} {text!r}")
    return found


def test_no_module_but_paths_spells_a_run_directory_name():
    modules = [p for folder in ("orchestrator", "trainables") for p in sorted((ROOT / folder).rglob("*.py"))
               if p.name != "paths.py"]
    assert len(modules) > 40, "the scan found the packages"
    found = [hit for p in modules for hit in _hand_built(p)]
    assert found == [], f"build these paths with orchestrator.paths.RunPaths: {found}"


def test_the_scan_sees_a_hand_built_path(tmp_path):
    (tmp_path / "x.py").write_text('"""The docstring may say best.json."""\nMARK = "stage.json"\n')
    assert _hand_built(tmp_path / "x.py", tmp_path) == ["x.py:2 'stage.json'"]


def test_the_names_are_the_old_ones(tmp_path):
    paths = RunPaths.of(tmp_path / "run")
    assert paths.stage_marker("search") == tmp_path / "run" / "search" / "stage.json"
    assert paths.stage_evaluations("search") == tmp_path / "run" / "search" / "evaluations.parquet"
    assert paths.checkpoints_dir("search") == tmp_path / "run" / "search" / "_checkpoints"
    assert paths.checkpoint("search", "e.pt") == paths.checkpoints_dir("search") / "e.pt"
    (tmp_path / "run" / "search").mkdir(parents=True)
    (tmp_path / "run" / "retrain").mkdir()
    paths.stage_marker("search").write_text("{}")
    assert paths.stage_markers() == [paths.stage_marker("search")]
