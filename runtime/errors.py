"""One exception type for problems a user can fix, so CLIs print one clear line instead of a traceback."""
from __future__ import annotations

from pathlib import Path


class CscError(Exception):
    """A user-facing error: what went wrong, where, and what to do about it.

    ``exit_code`` is the command's exit status: 2 for what stops a command before or instead of its work (a bad
    option, a missing file), 1 where the work ran and ended in failure (`csc-run`'s stalled source), so that a
    supervisor or a script can tell a run to restart from a command line to correct."""

    def __init__(self, reason: str, *, path: str | Path | None = None, fix: str | None = None, exit_code: int = 2):
        self.reason = reason
        self.path = None if path is None else Path(path)
        self.fix = fix
        self.exit_code = exit_code
        super().__init__(str(self))

    def __str__(self) -> str:
        where = f"{self.path}: " if self.path is not None else ""
        todo = f" — {self.fix}" if self.fix else ""
        return f"{where}{self.reason}{todo}"
