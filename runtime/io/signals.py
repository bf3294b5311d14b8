"""A signal handler for the length of a block: the one way the CLIs and the labeller set and restore theirs."""
from __future__ import annotations

import signal
import threading
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from typing import Any

Handler = Callable[[int, Any], Any] | int | signal.Handlers


@contextmanager
def handling(signum: int, handler: Handler) -> Iterator[None]:
    """``handler`` for ``signum`` inside the block, the previous one restored after. Outside the main thread it does
    nothing: Python delivers signals to the main thread alone, and `signal.signal` raises anywhere else."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signum, handler)
    try:
        yield
    finally:
        signal.signal(signum, previous)


def sigterm_as_interrupt() -> AbstractContextManager[None]:
    """SIGTERM — how systemd, `docker stop`, `timeout` and batch schedulers end a process — raises KeyboardInterrupt
    inside the block, so that it stops as Ctrl-C does: files closed, summaries and metadata written. Python's
    default ends the process on the spot, with no `finally` run."""

    def interrupt(signum, frame) -> None:
        raise KeyboardInterrupt

    return handling(signal.SIGTERM, interrupt)
