"""Keeping freed image buffers in the process heap, so per-image work stops page-faulting fresh memory.

glibc hands any allocation over 128 KiB straight to the kernel (mmap) and gives it back on free. A 512×512
image, its float copy and every OpenCV temporary are such allocations, so each image touches ~1 MiB of new pages,
and on a virtual machine the faults can cost more than the arithmetic. Raising the thresholds makes those buffers
come from, and go back to, the heap, where the next image reuses them; the effect on a whole run is measured by
`python -m benchmarks.speed.e2e_ratio --baseline` (the host budget, this included, switched off).

`commit_heap` then makes the pages the allocator already holds resident at once, so that a long run's memory is
flat from its first minute instead of creeping up as frames first touch pages held since the start.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import errno
import functools
import mmap
import os
import platform
import struct
from dataclasses import dataclass
from pathlib import Path

# mallopt(3) parameters, from glibc's malloc.h.
_M_TRIM_THRESHOLD = -1
_M_TOP_PAD = -2
_M_MMAP_THRESHOLD = -3

MMAP_THRESHOLD = 32 << 20  # glibc's ceiling; larger buffers (a 4000×3000 colour frame, 36 MB) are still mmap'd
TRIM_THRESHOLD = 256 << 20  # the most freed memory a process keeps rather than returning it to the system
TOP_PAD = 16 << 20


def _glibc() -> ctypes.CDLL | None:
    """The C library where it is glibc on Linux, else None."""
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return None
    return _load_libc()


@functools.cache
def _load_libc() -> ctypes.CDLL:
    """Loaded once: find_library runs ldconfig in a subprocess, which a running pipeline should not do."""
    libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
    libc.madvise.argtypes = (ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int)
    return libc


def keep_freed_memory() -> bool:
    """Tune glibc's allocator for repeated image-sized allocations; False (and no change) on other C libraries."""
    libc = _glibc()
    if libc is None:
        return False
    settings = ((_M_MMAP_THRESHOLD, MMAP_THRESHOLD), (_M_TRIM_THRESHOLD, TRIM_THRESHOLD), (_M_TOP_PAD, TOP_PAD))
    return all(libc.mallopt(param, value) == 1 for param, value in settings)


# glibc's per-thread arenas live in windows of HEAP_MAX_SIZE (64 MiB on 64-bit), reserved whole and aligned to
# their size; the arena makes writable the part it uses (mprotect) and leaves the rest inaccessible.
ARENA_WINDOW = 64 << 20
_MADV_POPULATE_WRITE = 23  # Linux ≥ 5.14: fault pages in as if written, contents untouched


@dataclass(frozen=True)
class Mapping:
    """One line of /proc/PID/maps (or a mapping's first line in /proc/PID/smaps)."""

    start: int
    end: int
    perms: str
    name: str  # "" for an anonymous mapping


def mapping_of_line(line: str) -> Mapping | None:
    """The mapping a /proc/PID/maps line (or a mapping's first line in /proc/PID/smaps) names; None for any other
    line (smaps' per-mapping fields)."""
    head = line.split(None, 5)
    if len(head) < 5 or "-" not in head[0] or head[0].endswith(":"):
        return None
    start, end = (int(x, 16) for x in head[0].split("-"))
    name = head[5].strip() if len(head) > 5 else ""
    # an unnamed mapping of a file (inode ≠ 0: a deleted file's pages) is not anonymous memory
    return Mapping(start, end, head[1], name if name or head[4] == "0" else "(file)")


def mappings_of(text: str) -> list[Mapping]:
    """The mappings a /proc/PID/maps or /proc/PID/smaps text lists."""
    return [m for m in map(mapping_of_line, text.splitlines()) if m is not None]


def allocator_region(mapping: Mapping, arenas: set[int]) -> str:
    """Whose memory a mapping is: "main_heap" (glibc's [heap]), "thread_arenas" (inside a window that
    `arena_windows` found) or "other_anon" (Python's object arenas, stacks, libraries' pools, buffers mapped whole;
    file mappings included: callers count only anonymous pages)."""
    if mapping.name == "[heap]":
        return "main_heap"
    if not mapping.name and mapping.start - mapping.start % ARENA_WINDOW in arenas:
        return "thread_arenas"
    return "other_anon"


def arena_windows(maps: list[Mapping]) -> set[int]:
    """Starts of the ARENA_WINDOW-sized windows that hold glibc's thread arenas.

    An arena's heap is a window reserved whole at an address aligned to its size, writable from its start as far as
    the arena has grown and inaccessible (``---p``) from there to the window's end. The writable part may be listed
    as several mappings (the kernel keeps apart ranges that differ in its own bookkeeping), and a window grown full
    is writable whole, then possibly joined to the writable start of the arena's next window. So a run of adjacent
    writable anonymous mappings that starts on a window boundary and ends on one, or ends where an inaccessible one
    takes it to a boundary, covers arenas; a buffer that merely starts on a boundary, or spans one, does not."""
    after = {m.start: m for m in maps}
    found: set[int] = set()
    for m in maps:
        if m.name or m.perms != "rw-p" or m.start % ARENA_WINDOW:
            continue
        end = m.end
        while (nxt := after.get(end)) is not None and not nxt.name and nxt.perms == "rw-p" \
                and end % ARENA_WINDOW:
            end = nxt.end
        if end % ARENA_WINDOW:
            reserve = after.get(end)
            if reserve is None or reserve.name or not reserve.perms.startswith("---") or \
                    reserve.end != end - end % ARENA_WINDOW + ARENA_WINDOW:
                continue
            end = reserve.end
        found.update(range(m.start, end, ARENA_WINDOW))
    return found


@functools.cache
def _populate_supported(libc: ctypes.CDLL) -> bool:
    """Whether the kernel knows MADV_POPULATE_WRITE (Linux ≥ 5.14): it checks the advice before the range, so an
    empty range answers EINVAL only for an unknown advice."""
    return libc.madvise(mmap.PAGESIZE, 0, _MADV_POPULATE_WRITE) == 0


def _glibc_heap_header(mem, start: int) -> bool:
    """Whether the window at ``start`` begins with glibc's heap header (``heap_info``: arena, previous heap, size,
    mprotect_size) with sizes an arena can have: a buffer laid out like an arena is not committed. Read through
    /proc/self/mem, which answers an error, not a crash, where the window has gone meanwhile."""
    try:
        arena, _, size, writable = struct.unpack("4Q", os.pread(mem, 32, start))
    except OSError:
        return False
    return arena != 0 and 0 < size <= writable <= ARENA_WINDOW


def commit_heap() -> int | None:
    """Make resident every writable page of glibc's heap and thread arenas, contents untouched; the bytes asked
    for, or None where it cannot (not glibc on 64-bit Linux ≥ 5.14, or no /proc).

    Why: an allocator keeps what it once held (keep_freed_memory), but the kernel maps a held page only when it is
    first written. A frame whose temporaries reach deeper than any before touches such pages, so a run's resident
    memory crept up for minutes after its start (benchmarks/results/soak_regions.json: +1.8 MB over 30 minutes,
    nearly all of it in the heap and the arenas). Committed, the held memory is resident from the start: what
    grows after it is memory newly taken from the system, which is what a leak is. Idempotent and cheap once
    committed (a page-table walk), so a run calls it again after its arenas may have grown. Races cost at most
    memory: a mapping the allocator drops between the read of the maps and the call is skipped, or, were its range
    mapped again meanwhile, made resident too; contents never change."""
    libc = _glibc()
    if libc is None or ctypes.sizeof(ctypes.c_void_p) != 8 or not _populate_supported(libc):
        return None  # 32-bit glibc's heaps are 1 MiB windows, not ARENA_WINDOW
    try:
        maps = mappings_of(Path("/proc/self/maps").read_text())
        mem = os.open("/proc/self/mem", os.O_RDONLY)
    except OSError:
        return None
    try:
        arenas = {start for start in arena_windows(maps) if _glibc_heap_header(mem, start)}
    finally:
        os.close(mem)
    asked = 0
    for m in maps:
        if m.perms == "rw-p" and allocator_region(m, arenas) != "other_anon":
            if libc.madvise(m.start, m.end - m.start, _MADV_POPULATE_WRITE) == 0:
                asked += m.end - m.start
            elif ctypes.get_errno() == errno.ENOMEM:
                break  # out of memory, or the mapping has gone: either way, stop asking
    return asked
