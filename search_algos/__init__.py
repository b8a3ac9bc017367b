"""Search algorithms (Ray Tune searchers) and their search spaces, usable in plain Ray Tune code.

Every searcher is a :class:`ray.tune.search.Searcher` with a keyword-only constructor of plain values (a
space from :mod:`search_algos.spaces`, ``metric``, ``mode``, ``seed`` and the method's own knobs), so it
drops into a user's own ``tune.Tuner(my_trainable, tune_config=tune.TuneConfig(search_alg=...))``, composes
with :class:`ray.tune.search.ConcurrencyLimiter` and resumes exactly under ``Tuner.restore`` (its state is
saved with the experiment)::

    from search_algos import SAMOSSearcher
    from search_algos.spaces import MultipathSpace

    searcher = SAMOSSearcher(space=MultipathSpace(layers=4, scales=3), metric="val_nme", mode="min", seed=0)

Trials receive ``config["arch"]``, the architecture's JSON (``space.from_json`` parses it), and
``config["epochs"]``; README.md ("Using the searchers in your own Tune code") has a runnable example.

The searchers are imported on first use (:func:`__getattr__`): ``import search_algos.spaces`` (which
trainables do) must not import Ray Tune or Optuna.

Dependency rule (DESIGN.md §2): searchers import ``search_algos.spaces`` and ``ray.tune``,
never ``trainables`` nor ``orchestrator``; no module here imports torch at import time (HyperFD's
ranker, :mod:`search_algos.hyperfd.ranker`, imports it on first use), so ``import search_algos`` and every
module under it work without torch. ``tests/test_layers.py`` checks both.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # for type checkers and IDEs; at run time __getattr__ imports on first use
    from search_algos.base import ArchSearcher, score_of
    from search_algos.fixed import FixedArchSearcher
    from search_algos.hpo import HpoSearcher
    from search_algos.hyperfd import PerformanceRanker, RankerSettings, TaskResults, TransferRankerSearcher
    from search_algos.macro_micro import MacroMicroSearcher, MacroMicroSettings
    from search_algos.random_search import RandomArchSearcher
    from search_algos.rnas_hpo import ArchLrSearch
    from search_algos.samos import SAMOSSearcher

# public name -> the module it is imported from (a sub-package re-exports its modules' names)
_EXPORTS: dict[str, str] = {
    "ArchSearcher": "search_algos.base",
    "score_of": "search_algos.base",
    "RandomArchSearcher": "search_algos.random_search",
    "FixedArchSearcher": "search_algos.fixed",
    "SAMOSSearcher": "search_algos.samos",
    "MacroMicroSearcher": "search_algos.macro_micro",
    "MacroMicroSettings": "search_algos.macro_micro",
    "TransferRankerSearcher": "search_algos.hyperfd",
    "PerformanceRanker": "search_algos.hyperfd",
    "RankerSettings": "search_algos.hyperfd",
    "TaskResults": "search_algos.hyperfd",
    "ArchLrSearch": "search_algos.rnas_hpo",
    "HpoSearcher": "search_algos.hpo",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    # PEP 562: reached only for names not yet set here; a submodule name (``search_algos.samos``) falls
    # through to the AttributeError, after which ``from search_algos import samos`` imports the submodule.
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}; its public names: {', '.join(__all__)}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # later look-ups skip __getattr__
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
