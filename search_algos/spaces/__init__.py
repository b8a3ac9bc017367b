"""Search spaces: typed architecture encodings (pure Python + numpy; no torch, no ray)."""

from __future__ import annotations

import json
from typing import Any

from search_algos.spaces.base import Architecture, InvalidArchitecture, SearchSpace
from search_algos.spaces.detector import DetectorArch, DetectorHpoSpace, DetectorNasSpace, HpoConfig
from search_algos.spaces.global_space import GlobalArch, GlobalSpace, count_params, layer_plan
from search_algos.spaces.multipath import MultipathArch, MultipathSpace
from search_algos.spaces.registry import Registry, UnknownNameError
from search_algos.spaces.rnas import RnasGenotype, RnasSpace

__all__ = [
    "SPACES",
    "Architecture",
    "DetectorArch",
    "DetectorHpoSpace",
    "DetectorNasSpace",
    "HpoConfig",
    "GlobalArch",
    "GlobalSpace",
    "InvalidArchitecture",
    "MultipathArch",
    "MultipathSpace",
    "Registry",
    "RnasGenotype",
    "RnasSpace",
    "SearchSpace",
    "UnknownNameError",
    "ARCHS",
    "build_space",
    "decode_arch",
    "count_params",
    "layer_plan",
]

SPACES: Registry[type[SearchSpace]] = Registry("space")
SPACES.register("global", GlobalSpace)
SPACES.register("multipath", MultipathSpace)
SPACES.register("rnas", RnasSpace)
SPACES.register("detector_hpo", DetectorHpoSpace)
SPACES.register("detector_nas", DetectorNasSpace)
# Encodings by space name: decoding needs no bounds (a stored arch stays readable when bounds change).
ARCHS: Registry[type] = Registry("architecture encoding")
ARCHS.register("global", GlobalArch)
ARCHS.register("multipath", MultipathArch)
ARCHS.register("rnas", RnasGenotype)
ARCHS.register("detector_hpo", HpoConfig)
ARCHS.register("detector_nas", DetectorArch)


def decode_arch(space: str, text: str | dict[str, Any]) -> Architecture:
    """Parse an encoding of space ``space`` (JSON text or dict) into its typed value."""
    payload = json.loads(text) if isinstance(text, str) else text
    return ARCHS.get(space).from_dict(payload)


def build_space(name: str, **bounds: Any) -> SearchSpace:
    """Instantiate the space registered as ``name`` with its bounds."""
    return SPACES.get(name)(**bounds)
