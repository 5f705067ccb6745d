"""Process-wide tuning for entry points (the server, benchmarks); never applied at import.

glibc hands every allocation of 128 KiB or more back to the OS when freed, so each fresh 1 MiB
message pays hundreds of page faults; raising M_MMAP_THRESHOLD and M_TRIM_THRESHOLD keeps such
buffers in the heap for reuse (measured +40% on raw gRPC streams here).
"""

from __future__ import annotations

import ctypes
import ctypes.util

M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3


def tune_malloc(mmap_threshold: int = 16 << 20, trim_threshold: int = 256 << 20) -> bool:
    """Apply the settings; False where the C library is not glibc."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    return bool(mallopt(M_MMAP_THRESHOLD, mmap_threshold)) and bool(mallopt(M_TRIM_THRESHOLD, trim_threshold))
