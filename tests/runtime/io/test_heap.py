import json
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


_COMMIT_PROBE = """
import json, os, threading
import numpy as np
from benchmarks.speed.soak import anon_regions_mb
from runtime.io.heap import commit_heap, keep_freed_memory
keep_freed_memory()
held = np.empty(24 << 20, np.uint8)  # from the main heap (below the mmap threshold), never written
held[:16] = 7
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
print(json.dumps([before, after, asked, int(held[:16].sum())]))
"""


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="commit_heap is for glibc's heap")
def test_commit_heap_makes_held_pages_resident_without_changing_them():
    # In a fresh process: the heap and a thread's arena hold buffers never written, which the kernel has not
    # mapped yet; committed, they are resident, and what was written stays as it was.
    out = subprocess.run([sys.executable, "-c", _COMMIT_PROBE], capture_output=True, text=True, check=True).stdout
    before, after, asked, kept = json.loads(out)
    assert after["main_heap"] - before["main_heap"] >= 23, (before, after)
    assert after["thread_arenas"] - before["thread_arenas"] >= 7, (before, after)
    assert after["other_anon"] - before["other_anon"] < 2, "committed memory outside the allocator's own"
    assert asked >= 32 << 20
    assert kept == 7 * 16


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
