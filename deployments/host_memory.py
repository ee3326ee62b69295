"""Giving freed host memory back to the operating system.

An encoder pass on a CPU, or the decode of a large upload, allocates and frees hundreds of MB. glibc keeps much of
that in its arenas (a block still in use pins the rest), so the segmenter sat 100-300 MB above its working set, by
a different amount after each photo, and an ingress replica kept ~300 MB for good after a burst of 25 MP uploads
(docs/benchmarks/host-memory.md). ``malloc_trim(0)`` returns the free pages of every arena: ~12 ms on the
segmenter's 1 GB heap after a 2-3 s pass, under 1 ms on an ingress replica. Elsewhere than glibc it does nothing.
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
