"""The layer rules of DESIGN.md §2, checked on the code itself.

Two checks:

* Every module under ``search_algos`` (sub-packages included) imports, and every public name of
  ``search_algos`` resolves, in a fresh interpreter where torch, trainables and orchestrator cannot be
  imported (a driver that only plans a search, or a user reading results on a laptop, needs none of them).
* Every ``.py`` under ``search_algos/``, ``trainables/`` and ``orchestrator/`` is parsed with :mod:`ast`
  (never imported, so a violation cannot hide behind an import that happens to succeed here) and each
  import is checked against the rules below.

What counts as an import: ``import a.b``, ``from a.b import c`` (checked as ``a.b.c`` too, so ``from
search_algos import samos`` is seen as ``search_algos.samos``), relative imports resolved against the
file's package, and ``importlib.import_module("...")`` / ``__import__("...")`` with a literal name.
Where it sits decides when it runs:

* *module level*: anywhere executed at import, i.e. not in the body of a function or lambda (class bodies,
  ``try`` and ``if`` blocks at the top, decorators and default values count as module level);
* *function level*: inside a function or lambda, runs only when called;
* *type-only*: under ``if TYPE_CHECKING:``, never runs.

The rules, per layer (a file's layer is its folder):

1. ``search_algos/spaces/`` (pure Python + numpy): no torch, ray, trainables, orchestrator, nor any
   ``search_algos`` module outside ``search_algos.spaces``, wherever the import sits (type-only too).
2. ``search_algos/`` (searchers): no trainables, no orchestrator, wherever the import sits.
3. ``search_algos/``: no torch at module level (the allow-listed files neither). At function level only
   in :data:`LAZY_TORCH` (HyperFD's ranker, which trains a torch model on first use); type-only torch
   imports are allowed everywhere (annotations, never executed).
4. ``trainables/``: no orchestrator; of ``search_algos`` only ``search_algos.spaces`` (models are built
   from encodings; searchers are not theirs to call); wherever the import sits.

``orchestrator/`` is the top layer: it may import every layer, so its files are parsed (each must be
valid Python) but no import of theirs is refused. That nothing but tests and the CLI imports
orchestrator follows from rules 1, 2 and 4.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
LAYERS = ("search_algos", "trainables", "orchestrator")
# rule 3's allow-list: function-level torch only here (HyperFD's ranker and its networks, built on first use)
LAZY_TORCH = frozenset({"search_algos/hyperfd/networks.py", "search_algos/hyperfd/ranker.py"})


# ----------------------------------------------------------------------------------------------------------
# Import in a fresh interpreter


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
for name in search_algos.__all__:  # the package's lazily imported exports
    getattr(search_algos, name)
"""


def test_every_search_algos_module_imports_without_torch_trainables_orchestrator() -> None:
    done = subprocess.run(
        [sys.executable, "-c", _IMPORT_WITHOUT], cwd=ROOT, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, f"a search_algos module needs torch, trainables or orchestrator:\n{done.stderr}"
    imported = set(done.stdout.split())
    on_disk = {_module_name(p.relative_to(ROOT).as_posix()) for p in (ROOT / "search_algos").rglob("*.py")}
    on_disk.discard("search_algos")
    assert on_disk <= imported, f"modules not reached by the walk: {sorted(on_disk - imported)}"
    hyperfd = {f"search_algos.hyperfd.{m}" for m in ("data", "networks", "ranker", "searcher")}
    searchers = {"search_algos.hpo", "search_algos.hyperfd", *hyperfd}
    assert searchers <= imported


# ----------------------------------------------------------------------------------------------------------
# The static checker


@dataclass(frozen=True)
class Import:
    """One imported module name as the checker sees it.

    Attributes:
        module: the absolute dotted name (``a.b.c``).
        line: 1-based line of the import statement.
        where: ``"module"``, ``"function"`` or ``"type-only"`` (see the module docstring).
    """

    module: str
    line: int
    where: str


@dataclass(frozen=True)
class Violation:
    """One import that breaks a rule; ``str()`` is the line the failing test prints."""

    path: str
    line: int
    module: str
    rule: str

    def __str__(self) -> str:
        return f"{self.path}:{self.line}: imports {self.module} -- {self.rule}"


def _module_name(rel_path: str) -> str:
    """``search_algos/spaces/base.py`` -> ``search_algos.spaces.base``; a package's ``__init__`` -> its name."""
    parts = rel_path.removesuffix(".py").split("/")
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _dynamic_import(node: ast.Call) -> str | None:
    """The literal module name of ``importlib.import_module("x")`` or ``__import__("x")``, else None."""
    func = node.func
    named = (isinstance(func, ast.Attribute) and func.attr == "import_module") or (
        isinstance(func, ast.Name) and func.id in ("import_module", "__import__")
    )
    if named and node.args and isinstance(node.args[0], ast.Constant) and isinstance(node.args[0].value, str):
        return node.args[0].value
    return None


def _resolve(node: ast.ImportFrom, package: str) -> str:
    if not node.level:
        return node.module or ""
    parts = package.split(".")
    base = parts[: len(parts) - (node.level - 1)]  # level 1 = this package, 2 = its parent, ...
    return ".".join(base + ([node.module] if node.module else []))


def imports_of(source: str, rel_path: str) -> list[Import]:
    """Every import in ``source`` (the text of the file at ``rel_path``), with where it sits.

    Raises:
        SyntaxError: the source does not parse.
    """
    module = _module_name(rel_path)
    package = module if rel_path.endswith("__init__.py") else module.rpartition(".")[0]
    found: list[Import] = []

    def visit(node: ast.AST, where: str) -> None:
        if isinstance(node, ast.Import):
            found.extend(Import(alias.name, node.lineno, where) for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = _resolve(node, package)
            found.append(Import(base, node.lineno, where))
            # ``from a import b`` may import the module a.b: check that name too.
            found.extend(Import(f"{base}.{a.name}", node.lineno, where) for a in node.names if a.name != "*")
        elif isinstance(node, ast.Call) and (name := _dynamic_import(node)) is not None:
            found.append(Import(name, node.lineno, where))
        if isinstance(node, ast.If) and _is_type_checking(node.test):
            for child in node.body:
                visit(child, "type-only")
            for child in node.orelse:
                visit(child, where)
            return
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
            # Decorators and default values run when the ``def`` runs; only the body waits for a call.
            body = node.body if isinstance(node.body, list) else [node.body]
            for child in ast.iter_child_nodes(node):
                visit(child, where if where == "type-only" or child not in body else "function")
            return
        for child in ast.iter_child_nodes(node):
            visit(child, where)

    visit(ast.parse(source, filename=rel_path), "module")
    return found


def _under(module: str, *roots: str) -> bool:
    return any(module == r or module.startswith(r + ".") for r in roots)


def _searcher_module(module: str) -> bool:
    """A ``search_algos`` module other than the spaces (the bare package itself only holds a docstring)."""
    return _under(module, "search_algos") and not _under(module, "search_algos.spaces") and module != "search_algos"


_RULE_1 = "rule 1: search_algos/spaces is pure Python + numpy (no torch, ray, trainables, orchestrator, searchers)"
_RULE_2 = "rule 2: search_algos never imports trainables nor orchestrator"
_RULE_3_MODULE = "rule 3: search_algos imports no torch at module level (import it in the function that needs it)"
_RULE_3_FUNCTION = f"rule 3: function-level torch imports in search_algos only in {sorted(LAZY_TORCH)}"
_RULE_4_ORCHESTRATOR = "rule 4: trainables never import orchestrator"
_RULE_4_SEARCHERS = "rule 4: trainables import only search_algos.spaces of search_algos"


def _rules_broken(imp: Import, rel_path: str) -> list[str]:
    m, broken = imp.module, []
    if rel_path.startswith("search_algos/spaces/"):
        if _under(m, "torch", "ray", "trainables", "orchestrator") or _searcher_module(m):
            broken.append(_RULE_1)
    if rel_path.startswith("search_algos/"):
        if _under(m, "trainables", "orchestrator"):
            broken.append(_RULE_2)
        if _under(m, "torch") and imp.where == "module":
            broken.append(_RULE_3_MODULE)
        if _under(m, "torch") and imp.where == "function" and rel_path not in LAZY_TORCH:
            broken.append(_RULE_3_FUNCTION)
    if rel_path.startswith("trainables/"):
        if _under(m, "orchestrator"):
            broken.append(_RULE_4_ORCHESTRATOR)
        if _searcher_module(m):
            broken.append(_RULE_4_SEARCHERS)
    return broken


def check_source(source: str, rel_path: str) -> list[Violation]:
    """The layer-rule violations of one file (``rel_path`` relative to the repository, ``/``-separated)."""
    out: list[Violation] = []
    for imp in imports_of(source, rel_path):
        for rule in _rules_broken(imp, rel_path):
            # One report per statement and rule: ``from torch import nn`` is one offence, not two.
            if not any(v.line == imp.line and v.rule == rule for v in out):
                out.append(Violation(rel_path, imp.line, imp.module, rule))
    return out


def _project_files() -> Iterator[Path]:
    for layer in LAYERS:
        yield from sorted((ROOT / layer).rglob("*.py"))


def test_every_module_keeps_the_layer_rules() -> None:
    files = list(_project_files())
    assert len(files) > 30, f"found only {len(files)} files under {LAYERS}: is ROOT right?"
    problems = [
        str(v) for p in files for v in check_source(p.read_text(encoding="utf-8"), p.relative_to(ROOT).as_posix())
    ]
    assert not problems, "layer rules of DESIGN.md §2 broken:\n" + "\n".join(problems)


def test_the_lazy_torch_allow_list_names_files_that_exist() -> None:
    # A stale allow-list entry would silently permit torch in a file added later under that name.
    assert all((ROOT / p).is_file() for p in LAZY_TORCH), sorted(LAZY_TORCH)


# ----------------------------------------------------------------------------------------------------------
# The checker catches what it should (synthetic sources)


def _rules(source: str, rel_path: str) -> list[str]:
    return [v.rule.split(":")[0] for v in check_source(source, rel_path)]


@pytest.mark.parametrize(
    ("source", "rel_path", "expected"),
    [
        ("import torch\n", "search_algos/samos.py", ["rule 3"]),
        ("from torch import nn\n", "search_algos/samos.py", ["rule 3"]),
        ("try:\n    import torch\nexcept ImportError:\n    pass\n", "search_algos/x.py", ["rule 3"]),
        ("class A:\n    import torch\n", "search_algos/x.py", ["rule 3"]),  # class bodies run at import
        ("def f():\n    import torch\n", "search_algos/samos.py", ["rule 3"]),  # not on the allow-list
        ("def f():\n    import torch\n", "search_algos/hyperfd/ranker.py", []),
        ("def f(m=__import__('torch')):\n    pass\n", "search_algos/hyperfd/ranker.py", ["rule 3"]),  # defaults run
        ("import torch\n", "search_algos/hyperfd/ranker.py", ["rule 3"]),  # allow-listed for functions only
        ("from torch import nn\n", "search_algos/hyperfd/__init__.py", ["rule 3"]),
        ("def f():\n    import torch\n", "search_algos/hyperfd/searcher.py", ["rule 3"]),  # sub-packages too
        ("def f():\n    import torch\n", "search_algos/hyperfd/data.py", ["rule 3"]),  # the ranker's numpy side
        ("from orchestrator.store import StoreClient\n", "search_algos/hpo.py", ["rule 2"]),
        ("def f():\n    from trainables.detection.train import fit_detector\n", "search_algos/hyperfd/x.py", ["rule 2"]),
        ("from ..fixed import FixedArchSearcher\n", "search_algos/hyperfd/searcher.py", []),
        ("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    import torch\n", "search_algos/x.py", []),
        ("if TYPE_CHECKING:\n    pass\nelse:\n    import torch\n", "search_algos/x.py", ["rule 3"]),
        ("from trainables.classification.train import train\n", "search_algos/x.py", ["rule 2"]),
        ("def f():\n    import orchestrator.store\n", "search_algos/x.py", ["rule 2"]),
        ("f = lambda: __import__('orchestrator')\n", "search_algos/x.py", ["rule 2"]),
        ("import importlib\nimportlib.import_module('trainables.x')\n", "search_algos/x.py", ["rule 2"]),
        ("import ray\n", "search_algos/spaces/x.py", ["rule 1"]),
        ("def f():\n    import torch\n", "search_algos/spaces/x.py", ["rule 1", "rule 3"]),
        ("from search_algos import samos\n", "search_algos/spaces/x.py", ["rule 1"]),
        ("from .. import samos\n", "search_algos/spaces/x.py", ["rule 1"]),
        ("from .base import SearchSpace\n", "search_algos/spaces/x.py", []),
        ("from search_algos.spaces import GlobalArch\n", "search_algos/spaces/x.py", []),
        ("import numpy as np\nimport ray.tune\n", "search_algos/x.py", []),
        ("from search_algos.spaces.global_space import GlobalArch\n", "trainables/x.py", []),
        ("from search_algos import spaces\n", "trainables/x.py", []),
        ("from search_algos.samos import SamosSearcher\n", "trainables/x.py", ["rule 4"]),
        ("def f():\n    from orchestrator import store\n", "trainables/detection/x.py", ["rule 4"]),
        ("import torch\nimport orchestrator\nimport trainables\n", "orchestrator/x.py", []),
    ],
)
def test_checker_finds_exactly_the_synthetic_violations(source: str, rel_path: str, expected: list[str]) -> None:
    assert _rules(source, rel_path) == expected


def test_violation_message_names_file_line_and_rule() -> None:
    (v,) = check_source("import numpy\n\nimport torch\n", "search_algos/samos.py")
    assert str(v).startswith("search_algos/samos.py:3: imports torch -- rule 3:")


def _names(source: str, rel_path: str) -> list[str]:
    return [i.module for i in imports_of(source, rel_path)]


def test_relative_imports_resolve_against_the_package() -> None:
    assert _names("from . import x\n", "search_algos/spaces/__init__.py") == [
        "search_algos.spaces",
        "search_algos.spaces.x",
    ]
    assert _names("from ..samos import S\n", "search_algos/spaces/base.py") == [
        "search_algos.samos",
        "search_algos.samos.S",
    ]
