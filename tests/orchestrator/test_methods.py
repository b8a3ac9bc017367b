"""The method registry (``orchestrator.methods.METHODS``): shared modules name no method, the registry is
loud both ways, and a new method is one module plus one registry line (no Ray)."""

from __future__ import annotations

import importlib
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from orchestrator.config import parse_config
from orchestrator.errors import UserError
from orchestrator.methods import METHODS, Method
from search_algos.spaces.registry import UnknownNameError

ROOT = Path(__file__).resolve().parents[2]

# -- (a) the shared modules hold no method names ---------------------------------------------------------

# What belongs to one method, and so to its module under orchestrator/methods/: the methods' names and
# titles, their searchers' names (the config's searcher.name) and classes, and the spaces only one method
# searches. Matched case-insensitively anywhere in a shared module: code, strings, comments, docstrings.
#
# Left out on purpose, each shared by several methods or by all: the bare word "random" (numpy's and
# Python's random, "a random baseline": only the quoted searcher name 'random' and the Random*Searcher
# identifiers count); the space name "global" (the default space, searched by two methods: random search
# and Efficient Global NAS; also a Python keyword; arch JSON and best.json written before they named
# their space fall back to it); the data kinds and dataset names (classification, alignment, faces3d,
# detection, microexpr, mer_folder: tasks of trainables/<task>/, open to any method of the task); the
# techniques several methods use (supernet, one-shot, LOSO, a transfer ranker); FixedArchSearcher (a
# generic searcher every pipeline may use).
METHOD_NAMES: dict[str, str] = {
    "MONAS": r"monas",
    "SAMOS (MONAS's searcher)": r"samos",
    "multipath (MONAS's space)": r"multi[-_ ]?path",
    "RNAS-MER (searcher rnas_mer, space rnas)": r"rnas",
    "ArchLrSearch (RNAS-MER's Optuna searcher)": r"archlrsearch",
    "HyperFD": r"hyper[-_ ]?fd",
    "HyperFD's spaces": r"detector_(?:hpo|nas)",
    "TransferRankerSearcher (HyperFD's searcher)": r"transfer_?ranker",
    "macro_micro (Efficient Global NAS's searcher)": r"macro[-_ ]?micro",
    "Efficient Global NAS": r"global[-_ ]nas",
    "random_search (module)": r"random_search",
    "'random' (searcher name)": r"""["']random["']""",
    "Random*Searcher (random search's classes)": r"random\w*searcher",
}
_PATTERN = re.compile("|".join(f"(?P<g{i}>{p})" for i, p in enumerate(METHOD_NAMES.values())), re.IGNORECASE)
_LABELS = list(METHOD_NAMES)


def _hits(text: str) -> list[str]:
    """The labels of every method name in ``text``."""
    return [_LABELS[int(m.lastgroup[1:])] for m in _PATTERN.finditer(text)]


# orchestrator/compat.py maps the module paths from before the redesign (orchestrator/hpo.py, the old
# method modules, HyperFD's JobListSearcher) to their new homes, so old interrupted stages still resume:
# it names them by nature and holds no method's logic.
_LEGACY_MAP = {"compat.py"}


def _shared_modules() -> list[Path]:
    """Every orchestrator/*.py outside orchestrator/methods/ (but the legacy module map)."""
    return sorted(p for p in (ROOT / "orchestrator").glob("*.py") if p.name not in _LEGACY_MAP)


@pytest.mark.parametrize("text", [
    "from orchestrator.methods.monas import monas_stages", "SAMOSSearcher", "MultipathSpace", "a multi-path child",
    "searcher 'rnas_mer' (RNAS-MER)", "ArchLrSearch", "HyperFDSearcherConfig", "space detector_nas",
    "TransferRankerSearcher", "MacroMicroSearcher", "the macro-micro search", "Efficient Global NAS",
    "search_algos.random_search", 'section.get("name", "random")', "RandomArchSearcher", "RandomSearcherConfig",
])
def test_the_name_list_finds_method_names(text: str) -> None:
    assert _hits(text), text


@pytest.mark.parametrize("text", [
    "np.random.default_rng(seed)", "import random", "a random baseline at equal budget", 'best.get("space", "global")',
    "global average pooling", "dataset 'mer_folder'", "trains a supernet", "LOSO folds", "a transfer ranker learns",
    "FixedArchSearcher", "random.Random(0)",
])
def test_the_name_list_spares_shared_words(text: str) -> None:
    assert not _hits(text), (text, _hits(text))


def test_shared_orchestrator_modules_name_no_method() -> None:
    modules = _shared_modules()
    assert {"config.py", "experiment.py", "export.py", "pipeline.py", "cli.py", "pictures.py", "report.py"} <= {
        p.name for p in modules}
    found = []
    for path in modules:
        for number, line in enumerate(path.read_text().splitlines(), 1):
            found += [f"{path.relative_to(ROOT)}:{number}: {label}: {line.strip()}" for label in _hits(line)]
    assert not found, "method names in shared modules (move the code into orchestrator/methods/):\n" + "\n".join(found)


# -- (b) the registry is loud both ways ----------------------------------------------------------------


def test_an_unknown_method_lists_the_valid_ones() -> None:
    with pytest.raises(UnknownNameError, match=r"unknown method 'nope'; valid methods: hyperfd, macro_micro, random, rnas_mer, samos"):
        METHODS.get("nope")
    with pytest.raises(UnknownNameError, match="unknown method 'nope'"):
        METHODS.remove("nope")
    with pytest.raises(UserError) as err:
        parse_config({"searcher": {"name": "nope"}})
    assert list(err.value.problems) == [
        "config: searcher.name: unknown searcher 'nope'; valid searchers: random, macro_micro, samos, rnas_mer, hyperfd"
    ]


def test_a_method_registered_twice_is_refused() -> None:
    with pytest.raises(ValueError, match="method 'samos' is registered twice; pick another name"):
        METHODS.add(METHODS.get("samos"))
    assert [m.name for m in METHODS.in_order()] == ["random", "macro_micro", "samos", "rnas_mer", "hyperfd"]


def test_a_method_whose_section_has_another_name_is_refused() -> None:
    samos = METHODS.get("samos")
    with pytest.raises(ValueError, match=r"method 'other': its searcher section SamosSearcherConfig must have a field"):
        Method(name="other", title="x", section=samos.section, data="alignment", space=None, stages=samos.stages)


def test_two_pictures_for_one_space_are_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    from dataclasses import replace

    monkeypatch.setitem(METHODS._items, "random", replace(METHODS.get("random"), picture=lambda arch: None))
    with pytest.raises(ValueError, match="methods 'random' and 'macro_micro' give different pictures for space 'global'"):
        METHODS.by_space("picture")


def test_export_of_a_space_no_method_exports_says_which_spaces_it_supports() -> None:
    from orchestrator.export import _network

    with pytest.raises(UserError) as err:
        _network("rnas", None, parse_config({}), 0)
    assert list(err.value.problems) == ["export supports the spaces global and multipath, not 'rnas'; nothing was written"]


def test_the_registry_and_the_config_import_without_ray_torch_pandas_matplotlib() -> None:
    """Method modules are imported with the config (before Ray starts): their heavy imports are lazy."""
    code = textwrap.dedent("""
        import sys
        for blocked in ("torch", "ray", "pandas", "matplotlib", "trainables", "scipy"):
            sys.modules[blocked] = None
        import orchestrator.config, orchestrator.methods
        print(len(orchestrator.methods.METHODS.names()))
    """)
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and done.stdout.split() == ["5"], done.stderr[-3000:]


# -- (c) a new method: one module plus one registry line -------------------------------------------------

_FAKE_MODULE = '''
"""A tiny method: one fixed random architecture of the global space, trained once."""

from __future__ import annotations

from typing import Literal

import numpy as np
from pydantic import Field

from orchestrator.methods.base import Command, Method
from orchestrator.methods.global_nas import GlobalSpaceConfig, candidate_job
from orchestrator.sections import Section


class FakeSearcherConfig(Section):
    name: Literal["fake"] = "fake"
    epochs: int = Field(2, ge=1)


def _check(config):
    if config.data_kind != "classification":
        raise ValueError(f"searcher 'fake' needs a classification dataset, got dataset {config.data.dataset!r}")


def fake_stages(config, data, store, run_dir):
    from orchestrator.pipeline import Stage
    from search_algos.fixed import FixedArchSearcher

    arch = config.space.build().sample(np.random.default_rng(config.seed)).to_json()
    stage = Stage(
        name="train",
        make_searcher=lambda _earlier: FixedArchSearcher(
            [arch], epochs=config.searcher.epochs, metric=config.metric, mode=config.mode),
        job=candidate_job(config, store, run_dir, "train"),
    )
    return [stage], None, None


METHOD = Method(
    name="fake", title="Fake", section=FakeSearcherConfig, data="classification", space=GlobalSpaceConfig,
    stages=fake_stages, check=_check,
    commands=(Command(group="benchmark", action="fake-build", help="fill nothing", config_help="a fake config",
                      needs="it is the fake method", run=lambda config, storage: ["done"], interrupted="stopped"),),
)
'''


@pytest.fixture
def fake_method(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    (tmp_path / "fake_method.py").write_text(_FAKE_MODULE)
    monkeypatch.syspath_prepend(str(tmp_path))
    module = importlib.import_module("fake_method")
    METHODS.add(module.METHOD)  # the one registry line
    try:
        yield module
    finally:
        METHODS.remove("fake")
        sys.modules.pop("fake_method", None)


def test_a_new_method_is_parsed_built_and_offered_by_the_cli(
    fake_method, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    from orchestrator.cli import main
    from orchestrator.experiment import _pipeline

    config = parse_config({"seed": 3, "searcher": {"name": "fake", "epochs": 4}})
    assert isinstance(config.searcher, fake_method.FakeSearcherConfig) and config.searcher.epochs == 4
    assert config.space.name == "global"  # the default space, as for every searcher
    pipeline = _pipeline(config, None, None, tmp_path / "run")
    assert [s.name for s in pipeline.stages] == ["train"] and pipeline.deciding == "train"
    assert pipeline.stages[0].job.run == "run" and pipeline.stages[0].job.stage == "train"
    searcher = pipeline.stages[0].make_searcher({})
    assert searcher.epochs == 4 and len(searcher.archs) == 1

    # the config's messages know it: its keys, its rule, its place in the list of searchers
    with pytest.raises(UserError) as err:
        parse_config({"searcher": {"name": "fake", "nope": 1}, "data": {"dataset": "faces3d"}})
    assert list(err.value.problems) == ["config: searcher.nope: unknown key; valid keys: name, epochs"]
    with pytest.raises(UserError) as err:
        parse_config({"searcher": {"name": "fake"}, "data": {"dataset": "faces3d"}, "space": {"name": "multipath"}})
    assert list(err.value.problems) == ["config: searcher: searcher 'fake' needs a classification dataset, got dataset 'faces3d'"]
    with pytest.raises(UserError) as err:
        parse_config({"searcher": {"name": "nope"}})
    assert err.value.problems[0].endswith("valid searchers: random, macro_micro, samos, rnas_mer, hyperfd, fake")

    # its command: offered beside benchmark build, and refusing another searcher's config before Ray starts
    other = tmp_path / "random.yaml"
    other.write_text("searcher: {name: random}\n")
    assert main(["benchmark", "fake-build", str(other)]) == 2
    assert capsys.readouterr().err.strip() == (
        f"facenas: {other}: benchmark fake-build needs searcher.name: fake (it is the fake method), got 'random'")


def test_a_removed_method_is_unknown_again(fake_method) -> None:
    METHODS.remove("fake")
    try:
        with pytest.raises(UserError, match="unknown searcher 'fake'"):
            parse_config({"searcher": {"name": "fake"}})
    finally:
        METHODS.add(fake_method.METHOD)  # the fixture removes it
