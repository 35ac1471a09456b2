"""Handing the heap a process has freed back to the system (glibc's ``malloc_trim``).

glibc serves allocations below its mmap threshold (which grows to 32 MB as large blocks are freed)
from a heap that it shrinks only from the top, so memory freed in the middle stays resident and
a process's peak resident memory includes heap left over by earlier work.
``fastinterp.runtime.bench_memory`` releases it before each measured call. Calling it inside the
gradient pass, every 512 MB of layer outputs, cut resnet50's batch-32 peak by 0.45 GB but made the
call 31% slower (page faults on the memory handed back): measured and left out (benchmarks/NOTES.md).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import gc

__all__ = ["release_free_heap"]


@functools.cache
def _malloc_trim():
    try:
        return ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").malloc_trim
    except (OSError, AttributeError):
        return None


def release_free_heap() -> bool:
    """Collect garbage, then ``malloc_trim(0)``: return the free pages of every malloc arena to the
    system. False where the C library has no such call (macOS, musl)."""
    gc.collect()
    trim = _malloc_trim()
    if trim is None:
        return False
    trim(0)
    return True
