"""Keep freed memory in the process for the next allocation (glibc's allocator settings).

glibc gives a freed block of more than its mmap threshold (128 KiB, raised as blocks are freed)
back to the system, and trims the heap's free top; the next block of that size is then new
pages, each zeroed by the kernel on first touch. A training step that allocates and frees
tensors of a few MB many times (CQL's 2,560 sampled state-action rows x 256 units, ~2.6 MB each)
then spends a large part of its time in page faults: CQL's offline update took 67 ms with the
defaults and 45 ms with the settings below, on one core (BENCHMARKS.md "Offline gradient
steps"). The settings only change where freed memory waits; the peak memory is unchanged. The
online `train` applies them too (paper-regime SAC: ~100-480 page faults per gradient step
without, ~2-7 with; +4 % steps/s).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import sys

_M_TRIM_THRESHOLD = -1
_M_TOP_PAD = -2
_M_MMAP_THRESHOLD = -3
_MB = 1 << 20

_applied = False


def keep_freed_memory(mmap_threshold_mb: int = 64, trim_threshold_mb: int = 256, top_pad_mb: int = 16) -> bool:
    """Serve allocations under ``mmap_threshold_mb`` from the heap and keep up to
    ``trim_threshold_mb`` of freed heap for reuse; True where applied (Linux with glibc), False
    elsewhere (other allocators keep their own policy). Idempotent; process-wide."""
    global _applied
    if _applied:
        return True
    if not sys.platform.startswith("linux"):
        return False
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # musl and others: no mallopt
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    ok = all(mallopt(param, value * _MB) == 1 for param, value in (
        (_M_MMAP_THRESHOLD, mmap_threshold_mb), (_M_TRIM_THRESHOLD, trim_threshold_mb), (_M_TOP_PAD, top_pad_mb)))
    _applied = ok
    return ok
