"""The benchmarks' loops keep freed memory for the next step, as the trainers' runs do anyway.

A bare stacked step in a loop (rnn_lab.bench.stacked_speed: K=36 arms at H=64, float64) makes
and drops several arrays of 0.5-2 MB: the hidden states (T+1, K, B, H), the flat gradients
(K, P), the loss's temporaries. With nothing else allocating between steps, glibc's malloc hands
the free top of the heap back to the OS at the end of each step and the next step takes fresh
pages: 400-540 minor page faults a step when run from a shell (the count depends on what the
process freed before: glibc moves its thresholds after large frees), which made the loop 15-25%
slower (`python -m rnn_lab.bench.stacked_speed --malloc-defaults`). The trainers do not pay
this: train_group at K=36 takes ~30 fresh pages a step (its per-arm bookkeeping keeps the
heap's top in use), and fixing the thresholds inside it changed neither its nor a lone run's
speed (measured: 360-416 against 364-396 us an arm-step at K=36; H=256, B=32: 28.1-28.8 against
29.3-31.4 ms a step), so the trainers leave malloc alone and the benchmarks set it, to time the
engine and not the allocator's reaction to a bare loop.

Fixing both thresholds keeps up to RETAINED_BYTES of freed memory in this process; arrays
above MMAP_THRESHOLD_BYTES still get their own mapping, returned to the OS when freed. glibc
only (Linux); elsewhere, or when MALLOC_MMAP_THRESHOLD_ / MALLOC_TRIM_THRESHOLD_ are set in
the environment (an explicit setting wins), nothing changes. Allocation never changes a
result: the arithmetic is the same whichever pages hold the arrays.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import platform

# mallopt parameters (glibc's malloc.h)
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3

MMAP_THRESHOLD_BYTES = 32 * 1024 * 1024  # glibc's own ceiling for its adaptive threshold
RETAINED_BYTES = 128 * 1024 * 1024  # free memory at the heap's top kept before trimming

_ENV_KEYS = ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_")
_applied: bool | None = None  # None: reuse_freed_memory() has not been called
_why_not = ""  # when it was called and set nothing: why


def _ruled_out() -> str | None:
    """Why the thresholds are not for this process to set whatever is asked, or None."""
    set_here = [k for k in _ENV_KEYS if k in os.environ]
    if set_here:
        return f"{', '.join(set_here)} set in the environment"
    libc = platform.libc_ver()[0]
    if libc != "glibc":
        return f"not glibc ({libc or 'libc unknown'})"
    return None


def reuse_freed_memory() -> bool:
    """Set glibc's mmap and trim thresholds for this process (once); True when they are set
    (now or by an earlier call), False where this is not glibc or the environment decides."""
    global _applied, _why_not
    if _applied is not None:
        return _applied
    _applied = False
    _why_not = _ruled_out() or ""
    if _why_not:
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError) as e:
        _why_not = f"mallopt unavailable: {e}"
        return False
    mallopt.argtypes, mallopt.restype = (ctypes.c_int, ctypes.c_int), ctypes.c_int
    # mallopt returns 1 on success; the mmap threshold first: setting either one turns off
    # glibc's adaptive adjustment of both.
    ok = mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES) == 1
    ok = mallopt(_M_TRIM_THRESHOLD, RETAINED_BYTES) == 1 and ok
    _applied = ok
    _why_not = "" if ok else "mallopt refused the thresholds"
    return ok


def describe() -> str:
    """One line for a benchmark's header: what malloc does with freed memory here. Reports
    this process's state and sets nothing: a benchmark calls reuse_freed_memory() first."""
    if _applied:
        return (
            f"malloc keeps freed memory for reuse (mmap threshold "
            f"{MMAP_THRESHOLD_BYTES >> 20} MiB, trim threshold {RETAINED_BYTES >> 20} MiB)"
        )
    why = _why_not if _applied is False else _ruled_out() or "reuse_freed_memory() not called"
    return f"malloc's defaults, thresholds not applied ({why})"
