"""Handing the heap a long pass has freed back to the system (glibc's ``malloc_trim``).

glibc serves allocations below its mmap threshold (which grows to 32 MB as large blocks are freed)
from a heap that it shrinks only from the top, so the memory a gradient pass frees in the middle
of the heap (layer outputs released during the backward, temporaries of the forward) stays
resident: measured on resnet50 at batch 32, the resident peak of a gradient explain was ~850 MB
above the peak of its live tensors (benchmarks/NOTES.md, issue 24). :class:`HeapReleaser` calls
``malloc_trim(0)`` each time a pass has produced or released ``every_mb`` more of layer outputs,
so that the resident peak follows the live one. A no-op where the C library has no
``malloc_trim`` (macOS, musl).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools

__all__ = ["HeapReleaser", "release_free_heap"]


@functools.cache
def _malloc_trim():
    try:
        return ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").malloc_trim
    except (OSError, AttributeError):
        return None


def release_free_heap() -> bool:
    """``malloc_trim(0)``: return the free pages of every malloc arena to the system; False where
    the C library has no such call."""
    trim = _malloc_trim()
    if trim is None:
        return False
    trim(0)
    return True


class HeapReleaser:
    """Counts bytes and releases the free heap every ``every_mb`` MB of them (0: never)."""

    def __init__(self, every_mb: float):
        self.every = int(every_mb * 2**20)
        self.pending = 0

    def count(self, nbytes: int) -> None:
        if self.every <= 0:
            return
        self.pending += nbytes
        if self.pending >= self.every:
            self.pending = 0
            release_free_heap()
