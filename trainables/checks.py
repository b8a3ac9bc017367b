"""The argument checks every data module and settings dataclass of the trainables share.

One definition each of the predicates the loaders, generators and settings checks test their arguments
with, of the one-line text an error quotes, and of :class:`DatasetError`, the error every dataset of every
task raises. Each caller still words its own messages (they name the dataset and the fix); what they word
them with is here, so the same rule reads the same everywhere.
"""

from __future__ import annotations

import math

import numpy as np

__all__ = ["DatasetError", "finite", "integer_problem", "is_int", "is_plain_int", "is_real", "one_line"]


class DatasetError(ValueError):
    """A dataset cannot be loaded as asked; the one-line message names the problem and the fix."""


def is_int(value: object) -> bool:
    """An integer, numpy's included; not a bool."""
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool)


def is_plain_int(value: object) -> bool:
    """A Python ``int``, not a bool (numpy integers are refused: the stricter rule of some generators)."""
    return isinstance(value, int) and not isinstance(value, bool)


def is_real(value: object) -> bool:
    """A finite real number, numpy's included; not a bool."""
    return isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool) and (
        math.isfinite(float(value))
    )


def integer_problem(name: str, value: object, low: int, high: int | None = None) -> str | None:
    """What is wrong with ``value`` as the integer argument ``name``, or None when it is fine.

    Args:
        name: the argument's name, as the message shows it.
        value: what the caller passed.
        low: the smallest value allowed.
        high: the largest value allowed; None for no bound.

    Returns:
        None when ``value`` is a plain ``int`` (:func:`is_plain_int`) in ``[low, high]``, else the rule and
        the value, e.g. ``"seed must be an integer >= 0, got -1"`` or
        ``"frames must be an integer in [2, 256], got 300"``.
    """
    if is_plain_int(value) and low <= value and (high is None or value <= high):
        return None
    rule = f">= {low}" if high is None else f"in [{low}, {high}]"
    return f"{name} must be an integer {rule}, got {value!r}"


def finite(value: float) -> float:
    """``value``, or 0.0 where it is NaN or infinite (meta-features must be finite)."""
    return value if math.isfinite(value) else 0.0


def one_line(err: BaseException | str) -> str:
    """An exception (``Type: message``) or a text on one line of at most 200 characters, for an error message."""
    text = err if isinstance(err, str) else f"{type(err).__name__}: {err}"
    text = " ".join(str(text).split())
    return text if len(text) <= 200 else text[:197] + "..."
