"""The base of every config section: :mod:`orchestrator.config`'s and the method modules' own.

A module of its own so that a method module (``orchestrator.methods.<m>``) can define its searcher and
space sections without importing :mod:`orchestrator.config`, which imports the methods to collect them.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict

__all__ = ["Section"]


class Section(BaseModel):
    """A config section: unknown keys are refused (each reported with the valid ones), values are frozen."""

    model_config = ConfigDict(extra="forbid", frozen=True)
