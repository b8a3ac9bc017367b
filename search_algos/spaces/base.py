"""The extension point for search spaces: typed architecture values and the space that holds them."""

from __future__ import annotations

import hashlib
import json
from abc import ABC, abstractmethod
from typing import Any, ClassVar, Generic, Protocol, TypeVar

import numpy as np

__all__ = ["Architecture", "Encoded", "InvalidArchitecture", "SearchSpace", "canonical_json", "stable_key"]


class InvalidArchitecture(ValueError):
    """An encoding that breaks a rule of its space; the message states the rule and the value."""


def canonical_json(payload: dict[str, Any]) -> str:
    """JSON with sorted keys and no whitespace: equal values give equal strings."""
    return json.dumps(payload, sort_keys=True, separators=(",", ":"))


def stable_key(payload: dict[str, Any]) -> str:
    """A 16-hex-digit key of ``payload``, stable across processes, machines and Python versions."""
    return hashlib.sha256(canonical_json(payload).encode()).hexdigest()[:16]


class Architecture(Protocol):
    """What every encoding offers (frozen dataclasses, validated on construction)."""

    def to_dict(self) -> dict[str, Any]: ...

    def to_json(self) -> str: ...

    def key(self) -> str: ...

    def summary(self) -> str: ...


class Encoded:
    """Mixin for typed values with ``to_dict()``: their canonical JSON and stable key derive from it."""

    __slots__ = ()

    def to_dict(self) -> dict[str, Any]:
        raise NotImplementedError

    def to_json(self) -> str:
        return canonical_json(self.to_dict())

    def key(self) -> str:
        return stable_key(self.to_dict())


A = TypeVar("A", bound=Architecture)


class SearchSpace(ABC, Generic[A]):
    """A set of architectures: membership, seeded sampling, decoding and size.

    Spaces are pure Python + numpy (DESIGN.md §2): no torch, no ray. A space is a value too:
    its constructor arguments are its bounds, and :meth:`describe` returns them.
    """

    name: ClassVar[str]

    @abstractmethod
    def sample(self, rng: np.random.Generator) -> A:
        """Draw one architecture; all randomness comes from ``rng``."""

    @abstractmethod
    def validate(self, arch: A) -> None:
        """Raise :class:`InvalidArchitecture` when ``arch`` lies outside this space's bounds."""

    @abstractmethod
    def from_json(self, text: str | dict[str, Any]) -> A:
        """Parse an encoding (JSON text or its dict) and validate it against this space."""

    @abstractmethod
    def size(self) -> float:
        """Number of architectures in the space (a float: sizes overflow int64 quickly)."""

    @abstractmethod
    def describe(self) -> dict[str, Any]:
        """The space's bounds, as plain JSON-able values."""

    def contains(self, arch: A) -> bool:
        try:
            self.validate(arch)
        except InvalidArchitecture:
            return False
        return True
