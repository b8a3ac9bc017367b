"""Reading a stage saved by the code before the redesign (issue 16): old module paths while unpickling.

``Tuner.restore`` unpickles ``tuner.pkl`` (the Tune config with its searcher and scheduler, the run config with
its callbacks), which names every pickled object by the module its class (or function) lived in when the
stage was started; the trials of the experiment state, read later by ``fit``, hold plain configs only. Commit 154e898 and earlier kept, e.g.,
the HPO searcher in ``orchestrator.hpo`` (now :mod:`search_algos.hpo`) and the HyperFD benchmark's
``JobListSearcher`` in ``orchestrator.hyperfd`` (removed: :class:`~search_algos.fixed.FixedArchSearcher`
with ``extras``). :func:`old_module_paths` makes those names resolvable for the duration of a restore only:
no old module file exists, nothing stays in ``sys.modules`` afterwards, and new code can never import an
old path by accident.

:data:`MOVED` is the whole map, old module -> the new modules its names now live in (looked up in order).
It lists every module moved or split by the redesign (``git diff --name-status -M 154e898 HEAD``), not only
those known to be pickled today, so an old stage of any method reads back.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import json
import sys
import types
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from search_algos.durable import write_text_durable
from search_algos.fixed import FixedArchSearcher

__all__ = ["MOVED", "JobListSearcher", "old_module_paths"]

# old module -> new modules holding its names (first match wins)
MOVED: dict[str, tuple[str, ...]] = {
    "orchestrator.hpo": ("search_algos.hpo", "orchestrator.schedulers"),
    "orchestrator.monas": ("orchestrator.methods.monas",),
    "orchestrator.rnas": ("orchestrator.methods.rnas_mer",),
    "orchestrator.rnas_pictures": ("orchestrator.methods.rnas_mer_pictures",),
    "orchestrator.hyperfd": (
        "orchestrator.compat",  # JobListSearcher
        "orchestrator.methods.hyperfd.benchmark", "orchestrator.methods.hyperfd.plan",
        "orchestrator.methods.hyperfd.online", "orchestrator.methods.hyperfd.table", "orchestrator.methods.hyperfd",
    ),
    "search_algos.ranker": ("search_algos.hyperfd.ranker", "search_algos.hyperfd.networks", "search_algos.hyperfd.data"),
    "search_algos.transfer_ranker": (
        "search_algos.hyperfd.searcher", "search_algos.hyperfd.ranker", "search_algos.hyperfd.data",
        "search_algos.hyperfd.networks",
    ),
    "trainables.faces3d": (
        "trainables.alignment.generator", "trainables.alignment.data", "trainables.alignment.formats", "trainables.faces",
    ),
    "trainables.alignment_metrics": ("trainables.alignment.metrics",),
    "trainables.supernet": ("trainables.alignment.train",),
    "trainables.datasets": ("trainables.classification.data", "trainables.classification.formats", "trainables.faces"),
    "trainables.candidate": ("trainables.classification.train",),
    "trainables.detection_metrics": ("trainables.detection.metrics",),
    "trainables.detector_train": ("trainables.detection.train",),
    "trainables.detection_data": (
        "trainables.detection.data", "trainables.detection.generator", "trainables.detection.formats", "trainables.faces",
    ),
    "trainables.microexpr": ("trainables.microexpr.data",),  # the old module is now a package of that name
    "trainables.mer_metrics": ("trainables.microexpr.metrics",),
    "trainables.rnas_search": ("trainables.microexpr.train",),
    "trainables.models": (),  # package removed; its modules below
    "trainables.models.multipath": ("trainables.alignment.model",),
    "trainables.models.global_cnn": ("trainables.classification.model",),
    "trainables.models.detector": ("trainables.detection.model",),
    "trainables.models.rnas": ("trainables.microexpr.model",),
}


# old module paths that are modules again (a package of the same name): looked up by a fallback instead
_NOW_PACKAGES = ("trainables.microexpr",)


def _lookup(old: str, name: str) -> Any:
    if name.startswith("__"):  # the import system's own probes (__spec__, __path__, ...)
        raise AttributeError(name)
    for new in MOVED[old]:
        module = importlib.import_module(new)
        if name in vars(module):
            return vars(module)[name]
    raise AttributeError(f"module {old!r} (before the redesign) has no attribute {name!r} in {list(MOVED[old])}")


class _OldPathFinder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Finds an old module path of :data:`MOVED` that no longer exists: a module resolving names lazily."""

    def __init__(self) -> None:
        self.created: list[str] = []  # the old-path modules made, removed from sys.modules after the block

    def find_spec(self, fullname: str, path: Any = None, target: Any = None) -> importlib.machinery.ModuleSpec | None:
        if fullname not in MOVED or fullname in _NOW_PACKAGES:
            return None
        is_package = any(other.startswith(fullname + ".") for other in MOVED)
        return importlib.machinery.ModuleSpec(fullname, self, is_package=is_package)

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> types.ModuleType:
        module = types.ModuleType(spec.name, f"{spec.name} before the redesign (orchestrator.compat)")
        module.__getattr__ = lambda name: _lookup(spec.name, name)  # type: ignore[method-assign]
        self.created.append(spec.name)
        return module

    def exec_module(self, module: types.ModuleType) -> None:
        pass


@contextmanager
def old_module_paths() -> Iterator[None]:
    """Within the block, the old module paths of :data:`MOVED` resolve to the names' new homes.

    A path that is a module again (``trainables.microexpr``, now a package) gets a fallback module
    ``__getattr__`` for the block. On leaving, the finder, those fallbacks and every old-path module
    created in the block are removed.
    """
    finder = _OldPathFinder()
    patched: list[types.ModuleType] = []
    sys.meta_path.append(finder)  # last: a module that exists is always the real one
    try:
        for old in _NOW_PACKAGES:
            module = importlib.import_module(old)
            if "__getattr__" not in vars(module):
                module.__getattr__ = lambda name, _old=old: _lookup(_old, name)  # type: ignore[method-assign]
                patched.append(module)
        yield
    finally:
        sys.meta_path.remove(finder)
        for module in patched:
            del module.__getattr__
        for name in finder.created:
            sys.modules.pop(name, None)


class JobListSearcher(FixedArchSearcher):
    """HyperFD's benchmark searcher before the redesign, read back as a :class:`FixedArchSearcher`.

    An old stage pickled ``orchestrator.hyperfd.JobListSearcher`` (attributes ``jobs``: ``{"arch",
    "epochs", "dataset_id"}`` dicts, ``_issued``, ``_done``) and saved its state as ``{"class":
    "JobListSearcher", "state": {"jobs", "issued", "done"}}``. Both are turned into the
    ``FixedArchSearcher`` of the same list (``dataset_id`` as the extras) that hands out the jobs not yet
    issued; it saves its state as a ``FixedArchSearcher``, so the pipeline reads it back as one.
    """

    def __setstate__(self, state: dict[str, Any]) -> None:
        if "jobs" in state:
            old = {"jobs": state.pop("jobs"), "issued": state.pop("_issued", 0)}
            state.pop("_done", None)
            self.__dict__.update(state)
            self._from_old(old)
        else:
            self.__dict__.update(state)

    def _from_old(self, old: dict[str, Any]) -> None:
        jobs = [dict(j) for j in old["jobs"]]
        self.seeds = None
        self.archs = [j["arch"] for j in jobs]
        self.extras = [{k: v for k, v in j.items() if k not in ("arch", "epochs", "seed")} for j in jobs]
        self.epochs = int(jobs[0]["epochs"]) if jobs else 1
        self._issued = int(old["issued"])
        self._live = {}
        self._scores = {}

    def restore(self, checkpoint_path: str) -> None:
        with open(checkpoint_path) as fh:
            saved = json.load(fh)
        if saved.get("class") == "JobListSearcher":
            self._from_old(saved["state"])
        elif saved.get("class") == FixedArchSearcher.__name__:
            self.set_state(saved["state"])
        else:
            super().restore(checkpoint_path)  # names the state's class in its error

    def save(self, checkpoint_path: str) -> None:
        state = {"class": FixedArchSearcher.__name__, "state": self.get_state()}
        write_text_durable(checkpoint_path, json.dumps(state))
