"""One exception type for problems a user can fix, so CLIs print one clear line instead of a traceback."""
from __future__ import annotations

from pathlib import Path


class CscError(Exception):
    """A user-facing error: what went wrong, where, and what to do about it."""

    def __init__(self, reason: str, *, path: str | Path | None = None, fix: str | None = None):
        self.reason = reason
        self.path = None if path is None else Path(path)
        self.fix = fix
        super().__init__(str(self))

    def __str__(self) -> str:
        where = f"{self.path}: " if self.path is not None else ""
        todo = f" — {self.fix}" if self.fix else ""
        return f"{where}{self.reason}{todo}"
