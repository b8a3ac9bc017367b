"""Search algorithms (Ray Tune searchers) and their search spaces.

Dependency rule (DESIGN.md §2): searchers import ``search_algos.spaces`` and ``ray.tune``,
never ``trainables`` nor ``orchestrator``; no module here imports torch at import time (HyperFD's
ranker, :mod:`search_algos.ranker`, imports it on first use), so ``import search_algos`` and every
module under it work without torch. ``tests/test_layers.py`` checks both.
"""
