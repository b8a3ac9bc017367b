"""Trainables: PyTorch models, training/evaluation functions, datasets and metrics.

Dependency rule (DESIGN.md §2): imports ``search_algos.spaces``, torch and ray.train/ray.tune;
never the searchers and never ``orchestrator``.
"""
