"""Serving runs below the counting: its threads (drawing, uploads, the server's event loop) are niced, so that on a
box whose cores the counting fills, viewers and uploads wait rather than the counting."""
from __future__ import annotations

import os
import sys
import threading

SERVING_NICENESS = 10  # CFS weighs a nice-10 thread about a tenth of a nice-0 one


def lower_thread_priority(niceness: int = SERVING_NICENESS) -> None:
    """Lower the calling thread's priority (Linux: setpriority on a thread id applies to that thread alone);
    elsewhere, or where refused, nothing happens."""
    if not sys.platform.startswith("linux"):
        return
    try:
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), niceness)
    except OSError:
        pass
