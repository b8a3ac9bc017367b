"""User-facing errors: each becomes one line per problem on stderr and exit code 2 (no traceback)."""

from __future__ import annotations

__all__ = ["UserError"]


class UserError(Exception):
    """Bad input from the user. ``problems`` are the lines to print, each naming the problem and the fix."""

    def __init__(self, *problems: str) -> None:
        if not problems:
            raise ValueError("UserError needs at least one problem line")
        self.problems = tuple(p.replace("\n", " ") for p in problems)
        super().__init__("; ".join(self.problems))
