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
