"""fastinterp-bench's memory column: each method's peak, measured in a process of its own.

Why a process per method: glibc keeps the heap a process has freed for its next allocations, so in
one process the peak resident memory (VmHWM) of each method includes whatever heap its predecessors
left behind, and the column only ever grew down the table. Each (method, batch, threads) therefore
runs in a fresh child (``measure_in_child``: ``python -m fastinterp.runtime.bench --memory``), which:

1. builds only what that method needs (the CNN, its explainer, an ONNX Runtime session, ...) and
   its images;
2. calls it once: the warm-up (lazy initialisation, Inductor's compile, fastinterp's per-model
   learning); the peak of this first call, minus the memory held before it, is ``first_call_mb``;
3. returns the freed heap to the system (``gc.collect()``, glibc's ``malloc_trim(0)``), reads the
   resident memory now held (VmRSS: libraries, weights, sessions, images), resets the peak
   (``/proc/self/clear_refs``) and calls the method again: ``peak_mb`` = that call's peak minus the
   memory held before it, the working memory of one call in steady state.

Both in MB (2**20 bytes). Linux only (``/proc``); elsewhere the column stays empty. CUDA is measured
in the bench's own process (``torch.cuda.max_memory_allocated`` minus the memory allocated before
the call): the caching allocator's statistics count live allocations, so nothing is inherited.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import gc
import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

__all__ = ["measure", "measure_in_child", "release_free_heap", "rss_mb", "supported"]


def supported() -> bool:
    """True where a process's peak resident memory can be read and reset (Linux)."""
    return Path("/proc/self/clear_refs").exists() and Path("/proc/self/status").exists()


def rss_mb(field: str = "VmRSS") -> float:
    """This process's resident memory (``VmRSS``) or its peak since the last reset (``VmHWM``), MB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"/proc/self/status has no {field}")


def _reset_peak() -> None:
    Path("/proc/self/clear_refs").write_text("5")


@functools.cache
def _malloc_trim():
    try:
        return ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").malloc_trim
    except (OSError, AttributeError):
        return None


def release_free_heap() -> bool:
    """Collect garbage, then glibc's ``malloc_trim(0)``: the free pages of every malloc arena go
    back to the system. False where the C library has no such call (macOS, musl). (Called inside
    the gradient pass it cut resnet50's b32 peak by 0.45 GB for 31% more time: benchmarks/NOTES.md.)"""
    gc.collect()
    trim = _malloc_trim()
    if trim is None:
        return False
    trim(0)
    return True


def measure(method: Callable[[], object]) -> dict[str, float]:
    """In this (fresh) process: ``first_call_mb``, ``peak_mb``, ``held_mb`` (see the module doc),
    and the absolute peaks (``first_call_rss_mb``, ``peak_rss_mb``: VmHWM), all MB."""
    release_free_heap()
    held = rss_mb()
    _reset_peak()
    method()
    first_held, first_peak = held, rss_mb("VmHWM")
    release_free_heap()
    held = rss_mb()
    _reset_peak()
    method()
    peak = rss_mb("VmHWM")
    return {"first_call_mb": first_peak - first_held, "peak_mb": peak - held, "held_mb": held,
            "first_call_rss_mb": first_peak, "peak_rss_mb": peak}


def measure_in_child(request: dict) -> dict[str, float]:
    """``measure`` in a fresh Python process, ``python -m fastinterp.runtime.bench --memory REQUEST``
    (``runtime.bench`` builds the one method the request names)."""
    argv = [sys.executable, "-m", "fastinterp.runtime.bench", "--memory", json.dumps(request)]
    run = subprocess.run(argv, capture_output=True, text=True)
    if run.returncode != 0:
        last = run.stderr.strip().splitlines()[-1] if run.stderr.strip() else f"exit status {run.returncode}"
        raise RuntimeError(f"measuring the memory of {request.get('method')} (batch {request.get('batch')}) in a "
                           f"fresh process failed: {last}")
    return json.loads(run.stdout.strip().splitlines()[-1])
