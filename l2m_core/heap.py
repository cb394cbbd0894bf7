"""Freed memory handed back to the operating system while a long document is encoded.

Each chunk's forward pass allocates and frees tens of MB of tensors from two threads, between the small
allocations that outlive it (each block's representative keys). glibc's malloc keeps such freed memory in
its heaps rather than returning it, and then raises its threshold for serving large requests from fresh
mappings, so the heaps fragment and a process's RSS grew by 15-19 KB per token encoded (bench/SPEED.md):
1.8 GB after an 80K-token document against 1.0 GB after 10K. `malloc_trim` returns the free pages of every
heap; called once per chunk it costs nothing measurable next to the forward pass. Elsewhere than glibc it
does nothing.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools


@functools.cache
def _malloc_trim():
    try:
        return ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").malloc_trim
    except (OSError, AttributeError):  # not glibc
        return None


def trim() -> None:
    """Return the free pages of the C heaps to the operating system (glibc; elsewhere a no-op)."""
    malloc_trim = _malloc_trim()
    if malloc_trim is not None:
        malloc_trim(0)
