import json
import os
import platform
import subprocess
import sys

import pytest


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="the heap tuning is for glibc; elsewhere it is a no-op")
def test_keep_freed_memory_takes_effect_on_glibc():
    # In a child, so that this test process keeps glibc's defaults. After the call, a freed image-sized buffer
    # stays in the heap: the process's resident size does not fall back when it is freed.
    code = """
import numpy as np
from runtime.io.heap import keep_freed_memory
assert keep_freed_memory() is True
def rss():
    return int(open('/proc/self/statm').read().split()[1])
before = rss()
block = np.ones(8 << 20, np.uint8)
del block
print(rss() - before)
"""
    kept = int(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout)
    assert kept * 4096 >= 4 << 20, "an 8 MiB buffer was handed back to the kernel instead of kept"


def test_keep_freed_memory_is_a_no_op_off_glibc(monkeypatch):
    from runtime.io import heap

    monkeypatch.setattr(heap.platform, "libc_ver", lambda: ("", ""))
    assert heap.keep_freed_memory() is False


# For the probes: the resident kB of the mapping that holds an address in this process (None: no such mapping).
_RSS_AT = """
def rss_kb_at(address):
    from benchmarks.speed.soak import smaps_entries
    return next((fields["Rss"] for m, fields in smaps_entries(open("/proc/self/smaps").read())
                 if m.start <= address < m.end), None)
"""


_COMMIT_PROBE = """
import json, os, threading
import numpy as np
from benchmarks.speed.soak import anon_regions_mb
from runtime.io.heap import commit_heap, keep_freed_memory
""" + _RSS_AT + """
keep_freed_memory()
held = np.empty(24 << 20, np.uint8)  # from the main heap (below the mmap threshold), never written
held[:16] = 7
mapped = np.empty(40 << 20, np.uint8)  # above the threshold: mapped on its own, not the allocator's to commit
ready, done = threading.Event(), threading.Event()
def worker():  # a thread's buffers come from its own arena
    block = np.empty(8 << 20, np.uint8)
    ready.set()
    done.wait()
thread = threading.Thread(target=worker)
thread.start()
ready.wait()
before = anon_regions_mb(os.getpid())
asked = commit_heap()
after = anon_regions_mb(os.getpid())
done.set()
thread.join()
print(json.dumps([before, after, asked, int(held[:16].sum()), rss_kb_at(mapped.ctypes.data)]))
"""


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="commit_heap is for glibc's heap")
def test_commit_heap_makes_held_pages_resident_without_changing_them():
    # In a fresh process: the heap and a thread's arena hold buffers never written, which the kernel has not
    # mapped yet; committed, they are resident, and what was written stays as it was.
    env = {k: v for k, v in os.environ.items() if k != "MALLOC_ARENA_MAX"}  # one arena per thread, as by default
    out = subprocess.run([sys.executable, "-c", _COMMIT_PROBE], capture_output=True, text=True, check=True,
                         env=env).stdout
    before, after, asked, kept, mapped_rss_kb = json.loads(out)
    assert after["main_heap"] - before["main_heap"] >= 23, (before, after)
    assert after["thread_arenas"] - before["thread_arenas"] >= 7, (before, after)
    assert after["other_anon"] - before["other_anon"] < 2, "committed memory outside the allocator's own"
    assert asked >= 32 << 20
    assert kept == 7 * 16
    assert mapped_rss_kb is not None and mapped_rss_kb < 1024, "a buffer mapped on its own was committed"


def test_commit_heap_is_a_no_op_off_glibc(monkeypatch):
    from runtime.io import heap

    monkeypatch.setattr(heap.platform, "libc_ver", lambda: ("", ""))
    assert heap.commit_heap() is None


def test_thread_arenas_are_told_from_buffers_by_their_layout():
    """A window is an arena when writable mappings run from its aligned start to its end, or to an inaccessible
    reserve that reaches its end; the writable run may be listed in pieces, or span a full window and the start of
    the arena's next one. A buffer that starts on a boundary, or spans one, is not an arena."""
    from runtime.io.heap import ARENA_WINDOW as W, arena_windows, mappings_of

    def line(start: int, end: int, perms: str = "rw-p", name: str = "") -> str:
        return f"{start:x}-{end:x} {perms} 00000000 00:00 0 {name}".rstrip()

    mib = 1 << 20
    maps = mappings_of("\n".join([
        line(2 * W, 2 * W + mib), line(2 * W + mib, 2 * W + 3 * mib), line(2 * W + 3 * mib, 3 * W, "---p"),  # pieces
        line(4 * W, 5 * W + 2 * mib), line(5 * W + 2 * mib, 6 * W, "---p"),  # a full window joined to the next
        line(7 * W, 7 * W + 8 * mib),  # a buffer starting on a boundary, no reserve after it
        line(9 * W - mib, 10 * W + mib),  # a buffer spanning a whole window
        line(11 * W, 11 * W + mib), line(11 * W + mib, 11 * W + 2 * mib, "---p"),  # a reserve short of the end
        line(12 * W, 12 * W + mib, name="[heap]"), line(12 * W + mib, 13 * W, "---p"),  # named: not an arena
    ]))
    assert arena_windows(maps) == {2 * W, 4 * W, 5 * W}


@pytest.mark.skipif(platform.system() != "Linux", reason="reads /proc/self/maps")
def test_commit_heap_gives_up_on_an_old_kernel_and_stops_when_memory_runs_out(monkeypatch):
    import ctypes
    import errno

    from runtime.io import heap

    class Libc:  # madvise as the kernel answers it; a zero-length call is the support probe
        def __init__(self, knows_populate: bool):
            self.knows_populate, self.asked = knows_populate, []

        def madvise(self, address: int, length: int, advice: int) -> int:
            self.asked.append(length)
            if length == 0 and self.knows_populate:
                return 0
            ctypes.set_errno(errno.EINVAL if length == 0 else errno.ENOMEM)
            return -1

    old = Libc(knows_populate=False)
    monkeypatch.setattr(heap, "_glibc", lambda: old)
    assert heap.commit_heap() is None and old.asked == [0]
    full = Libc(knows_populate=True)
    monkeypatch.setattr(heap, "_glibc", lambda: full)
    assert heap.commit_heap() == 0
    assert len(full.asked) == 2, "one probe, then the first mapping's ENOMEM stops the walk"


_LOOKALIKE_PROBE = """
import ctypes, json, mmap
from runtime.io.heap import ARENA_WINDOW, commit_heap
""" + _RSS_AT + """
libc = ctypes.CDLL(None, use_errno=True)
libc.mmap.restype = ctypes.c_void_p
libc.mmap.argtypes = (ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int, ctypes.c_int, ctypes.c_long)
libc.mprotect.argtypes = (ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int)
libc.munmap.argtypes = (ctypes.c_void_p, ctypes.c_size_t)
# A window laid out as glibc lays out an arena (aligned, 1 MiB writable, the rest reserved to the window's end),
# but holding no heap header: zeros. A reserved page is kept just below it: a writable neighbour there would merge
# with its writable part into one smaps entry, whose resident pages (the neighbour's) this test once counted.
page = mmap.PAGESIZE
base = libc.mmap(None, 2 * ARENA_WINDOW + page, 0,  # PROT_NONE
                 mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS, -1, 0)
start = (base + page + ARENA_WINDOW - 1) // ARENA_WINDOW * ARENA_WINDOW
if start - page > base:
    libc.munmap(base, start - page - base)
libc.munmap(start + ARENA_WINDOW, base + 2 * ARENA_WINDOW + page - start - ARENA_WINDOW)
assert libc.mprotect(start, 1 << 20, mmap.PROT_READ | mmap.PROT_WRITE) == 0
commit_heap()
print(json.dumps(rss_kb_at(start)))
"""


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="commit_heap is for glibc's heap")
def test_a_buffer_laid_out_like_an_arena_but_without_its_header_is_not_committed():
    rss_kb = json.loads(subprocess.run([sys.executable, "-c", _LOOKALIKE_PROBE], capture_output=True, text=True,
                                       check=True).stdout)
    assert rss_kb == 0
