"""Search algorithms (Ray Tune searchers) and their search spaces.

Dependency rule (DESIGN.md §2): searchers import ``search_algos.spaces`` and ``ray.tune``,
never ``trainables`` nor ``orchestrator``.
"""
