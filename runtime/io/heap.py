"""Keeping freed image buffers in the process heap, so per-image work stops page-faulting fresh memory.

glibc hands any allocation over 128 KiB straight to the kernel (mmap) and gives it back on free. A 512×512
image, its float copy and every OpenCV temporary are such allocations, so each image touches ~1 MiB of new pages,
and on a virtual machine the faults can cost more than the arithmetic. Raising the thresholds makes those buffers
come from, and go back to, the heap, where the next image reuses them; the effect on a whole run is measured by
`python -m benchmarks.speed.e2e_ratio --baseline` (the host budget, this included, switched off).
"""
from __future__ import annotations

import ctypes
import ctypes.util
import platform

# mallopt(3) parameters, from glibc's malloc.h.
_M_TRIM_THRESHOLD = -1
_M_TOP_PAD = -2
_M_MMAP_THRESHOLD = -3

MMAP_THRESHOLD = 32 << 20  # glibc's ceiling; larger buffers (a 4000×3000 colour frame, 36 MB) are still mmap'd
TRIM_THRESHOLD = 256 << 20  # the most freed memory a process keeps rather than returning it to the system
TOP_PAD = 16 << 20


def keep_freed_memory() -> bool:
    """Tune glibc's allocator for repeated image-sized allocations; False (and no change) on other C libraries."""
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return False
    libc = ctypes.CDLL(ctypes.util.find_library("c"))
    settings = ((_M_MMAP_THRESHOLD, MMAP_THRESHOLD), (_M_TRIM_THRESHOLD, TRIM_THRESHOLD), (_M_TOP_PAD, TOP_PAD))
    return all(libc.mallopt(param, value) == 1 for param, value in settings)
