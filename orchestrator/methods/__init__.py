"""The search methods, one module (or sub-package) each, and :data:`METHODS`, the one registry of them.

Each method module defines its config sections, its pipeline of stages and what it shows, and ends with
``METHOD = Method(...)`` (:class:`~orchestrator.methods.base.Method` lists the fields). The shared
modules look a method up by the config's ``searcher.name``: ``METHODS.get("samos")``; an unknown name
lists the valid ones, a name registered twice raises.

Adding a method is one module here plus one line below; its position is the place it takes in the
config errors' lists of valid searchers and spaces. :data:`DEFAULT` is the searcher of a config without a
``searcher`` section (and its space that of a config without a ``space`` section).
"""

from __future__ import annotations

from orchestrator.methods import global_nas, hyperfd, monas, random_search, rnas_mer
from orchestrator.methods.base import Command, Method, MethodRegistry

__all__ = ["DEFAULT", "METHODS", "Command", "Method", "MethodRegistry"]

METHODS = MethodRegistry()
METHODS.add(random_search.METHOD)  # random search on the global space, the baseline of every method
METHODS.add(global_nas.METHOD)  # Efficient Global NAS (macro_micro)
METHODS.add(monas.METHOD)  # MONAS (samos)
METHODS.add(rnas_mer.METHOD)  # RNAS-MER
METHODS.add(hyperfd.METHOD)  # HyperFD

DEFAULT = random_search.METHOD.name
