"""Giving freed host memory back to the operating system.

An encoder pass on a CPU allocates and frees a few hundred MB of activations. glibc keeps much of that in its
arenas, so a replica's RSS sat 100-300 MB above its working set, and by a different amount after each photo
(docs/benchmarks/host-memory.md). ``malloc_trim(0)`` returns the free pages of every arena; it costs ~12 ms on a
1 GB heap, against a 2-3 s CPU encoder pass. Elsewhere than glibc (macOS, musl) it does nothing.
"""

from __future__ import annotations

import ctypes
import functools


@functools.cache
def _malloc_trim():
    try:  # the symbols the process already has: glibc's, on Linux with glibc
        return ctypes.CDLL(None).malloc_trim
    except (OSError, AttributeError, TypeError):  # not glibc (macOS, musl), or no dlopen(NULL) (Windows)
        return None


def release_free_memory() -> bool:
    """Returns the allocator's free pages to the OS; whether it could (glibc only)."""
    trim = _malloc_trim()
    if trim is None:
        return False
    trim(0)
    return True
