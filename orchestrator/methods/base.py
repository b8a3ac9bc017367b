"""What a search method brings to facenas (:class:`Method`), and the registry of methods.

A method is one module of :mod:`orchestrator.methods` that defines its config sections, its pipeline
of stages and whatever else it shows (pictures, an export, extra commands), and ends with one
``METHOD = Method(...)``; ``orchestrator/methods/__init__.py`` registers it with one line. The shared
modules (config, experiment, export, report, cli) find everything through the registry.

Method modules are imported whenever the config is (``facenas run`` checks a config before Ray
starts): at module level they import light modules only (pydantic, numpy, :mod:`search_algos.spaces`,
:mod:`orchestrator.sections`, one another); Ray, torch, pandas, matplotlib and trainables are imported
inside the functions that need them (``tests/orchestrator/test_methods.py`` checks it).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from search_algos.spaces.registry import Registry

if TYPE_CHECKING:
    from orchestrator.config import ExperimentConfig
    from orchestrator.pictures import RunView
    from orchestrator.pipeline import Stage, StageOutcome
    from orchestrator.sections import Section
    from orchestrator.store import StoreClient

__all__ = ["Command", "Extras", "Method", "MethodRegistry", "Select", "StagePlan", "StagesBuilder"]

# (config, data, store, run_dir) -> (stages, select, extras): the ``orchestrator.pipeline.Stage`` list;
# ``select(outcomes)`` gives best.json's row (None instead of a function: the best evaluation of the
# deciding stage); ``extras(outcomes)`` the method's own best.json figures (or None). ``outcomes`` maps a
# stage name to its ``StageOutcome``; ``store`` is the benchmark store client; ``data`` is whatever the
# config's data kind loads (digit splits, faces, clips; HyperFD's stages load their own domains), hence Any.
Outcomes = dict[str, "StageOutcome"]
Select = Callable[[Outcomes], "dict[str, Any] | None"]  # best.json's row
Extras = Callable[[Outcomes], dict[str, Any]]
StagePlan = tuple[list["Stage"], "Select | None", "Extras | None"]
StagesBuilder = Callable[["ExperimentConfig", Any, "StoreClient", str], StagePlan]


@dataclass(frozen=True)
class Command:
    """An offline job a method adds to the CLI: ``facenas <group> <action> CONFIG [--storage DIR]
    [--address ADDR] [--set KEY.PATH=VALUE ...]``.

    The CLI loads CONFIG (with the overrides), refuses a config of another searcher, starts Ray, calls
    :attr:`run` and prints the lines it returns; Ctrl-C prints :attr:`interrupted` and exits 130.

    Attributes:
        group: the first word (``benchmark``); the CLI knows each group's own help.
        action: the second word (``build``).
        help: the action's help line.
        config_help: the help of its CONFIG argument.
        needs: why it needs its method's config, said when another searcher's config is passed.
        run: ``run(config, storage)`` with the resolved storage folder; returns the lines to print.
        interrupted: the line printed (after ``facenas: ``) when Ctrl-C stops it.
    """

    group: str
    action: str
    help: str
    config_help: str
    needs: str
    run: Callable[[ExperimentConfig, Path], Sequence[str]]
    interrupted: str


@dataclass(frozen=True)
class Method:
    """One search method: everything the shared modules look up by ``searcher.name``.

    Attributes:
        name: the config's ``searcher.name`` (the registry key; the section's ``name`` must equal it).
        title: how messages name the method ("MONAS").
        section: the ``searcher`` config section (a :class:`~orchestrator.sections.Section` whose ``name``
            field is a ``Literal`` of :attr:`name` with that default).
        data: the data kind it trains on (``classification``, ``alignment``, ``detection``, ``microexpr``:
            ``orchestrator.config``'s data sections).
        space: the ``space`` config section of the space it searches (its ``name`` field names the space),
            or None when the searcher section says which spaces (HyperFD's detector spaces).
        stages: ``stages(config, data, store, run_dir) -> (stages, select, extras)``; see ``StagesBuilder``.
        deciding: the stage whose evaluations best.json describes; None: the last stage.
        check: ``check(config)`` raises ``ValueError`` (its message states the rule) when the sections of
            a config do not go with this method; called once the config's sections are valid.
        run_check: ``run_check(config)`` raises ``ValueError`` for a config :attr:`check` accepts that
            ``facenas run`` cannot run (its offline :attr:`commands` can); called before anything is created.
        exclusive: :attr:`data` and :attr:`space` go with this method only: :attr:`check` also runs for a
            config of another searcher that names either.
        export: ``export(arch, config) -> (model, input_shape, prepare)`` for ``facenas export`` of an
            architecture of :attr:`space` (a seeded eager ``torch.nn.Module``, the shape of one input
            batch, and how to prepare inputs); None: export is not supported.
        picture: ``picture(arch) -> Figure``, the report's drawing of an architecture of :attr:`space`.
        plots: ``plots(run) -> [(title, Figure), ...]``, the report's plots of the searcher, from a
            :class:`~orchestrator.pictures.RunView`.
        commands: offline jobs it adds to the CLI.
    """

    name: str
    title: str
    section: type[Section]
    data: str
    space: type[Section] | None
    stages: StagesBuilder
    deciding: str | None = None
    check: Callable[[ExperimentConfig], None] | None = None
    run_check: Callable[[ExperimentConfig], None] | None = None
    exclusive: bool = False
    export: Callable[[Any, ExperimentConfig], tuple[Any, tuple[int, ...], dict[str, Any]]] | None = None
    picture: Callable[[Any], Any] | None = None
    plots: Callable[[RunView], list[tuple[str, Any]]] | None = None
    commands: tuple[Command, ...] = ()

    def __post_init__(self) -> None:
        field = self.section.model_fields.get("name")
        if field is None or field.default != self.name:
            raise ValueError(
                f"method {self.name!r}: its searcher section {self.section.__name__} must have a field "
                f"name: Literal[{self.name!r}] = {self.name!r}, got default {getattr(field, 'default', None)!r}"
            )
        if self.space is None and (self.export is not None or self.picture is not None):
            raise ValueError(f"method {self.name!r}: export and picture draw architectures of its space; it has none")

    @property
    def space_name(self) -> str | None:
        """The name of :attr:`space` (``global``, ...), or None."""
        return None if self.space is None else str(self.space.model_fields["name"].default)


class MethodRegistry(Registry[Method]):
    """Methods by ``searcher.name``, loud both ways (:class:`search_algos.spaces.registry.Registry`: a name
    registered twice raises, an unknown name lists the valid ones) and kept in registration order: the
    order in which config errors list the valid searchers and spaces."""

    def __init__(self) -> None:
        super().__init__("method")

    def add(self, method: Method) -> Method:
        """Register ``method`` under its :attr:`Method.name`."""
        return self.register(method.name, method)

    def remove(self, name: str) -> Method:
        """Unregister ``name`` (a test's or a plugin's temporary method); unknown names raise."""
        method = self.get(name)
        del self._items[name]
        return method

    def in_order(self) -> list[Method]:
        """Every method, in registration order."""
        return list(self._items.values())

    def by_space(self, attribute: str) -> dict[str, Any]:
        """Space name -> the methods' :attr:`Method.space` section, :attr:`Method.export` or :attr:`Method.picture`.

        Methods sharing a space (random search and Efficient Global NAS) share the drawing; two different
        ones for one space raise ``ValueError``. Spaces in registration order; methods without one skipped.
        """
        out: dict[str, Any] = {}
        owner: dict[str, str] = {}
        for method in self.in_order():
            item = getattr(method, attribute)
            if item is None or method.space_name is None:
                continue
            space = method.space_name
            if space in out and out[space] is not item:
                raise ValueError(f"methods {owner[space]!r} and {method.name!r} give different {attribute}s "
                                 f"for space {space!r}; one space has one")
            out[space], owner[space] = item, owner.get(space, method.name)
        return out
