"""Search spaces: typed architecture encodings (pure Python + numpy; no torch, no ray)."""

from __future__ import annotations

from typing import Any

from search_algos.spaces.base import Architecture, InvalidArchitecture, SearchSpace
from search_algos.spaces.global_space import GlobalArch, GlobalSpace, count_params, layer_plan
from search_algos.spaces.registry import Registry, UnknownNameError

__all__ = [
    "SPACES",
    "Architecture",
    "GlobalArch",
    "GlobalSpace",
    "InvalidArchitecture",
    "Registry",
    "SearchSpace",
    "UnknownNameError",
    "build_space",
    "count_params",
    "layer_plan",
]

SPACES: Registry[type[SearchSpace]] = Registry("space")
SPACES.register("global", GlobalSpace)


def build_space(name: str, **bounds: Any) -> SearchSpace:
    """Instantiate the space registered as ``name`` with its bounds."""
    return SPACES.get(name)(**bounds)
