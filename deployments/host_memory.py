"""Giving freed host memory back to the operating system.

An encoder pass on a CPU, or the decode of a large upload, allocates and frees hundreds of MB. glibc keeps much of
that in its arenas (a block still in use pins the rest), so the segmenter sat 100-300 MB above its working set, by
a different amount after each photo, and an ingress replica kept ~300 MB for good after a burst of 25 MP uploads
(docs/benchmarks/host-memory.md). ``malloc_trim(0)`` returns the free pages of every arena: ~12 ms on the
segmenter's 1 GB heap after a 2-3 s pass, under 1 ms on an ingress replica. Elsewhere than glibc it does nothing.

``heap_usage`` is the allocator's own account (``mallinfo2``): the bytes handed out and not yet freed, which a leak
grows and freed memory held by the allocator does not. It tells a leak from allocator retention, which the
process's resident memory cannot: that moves in steps of tens of MB as arenas keep or give back freed pages.
"""

from __future__ import annotations

import ctypes
import functools


class _MallInfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks",
                                                      "fsmblks", "uordblks", "fordblks", "keepcost")]


@functools.cache
def _glibc(name: str, restype=ctypes.c_int):
    """One of the C library's functions, or None where it is not glibc's (macOS, musl) or too old."""
    try:  # the symbols the process already has: glibc's, on Linux with glibc
        function = getattr(ctypes.CDLL(None), name)
    except (OSError, AttributeError, TypeError):  # not there, or no dlopen(NULL) (Windows)
        return None
    function.restype = restype
    return function


def release_free_memory() -> bool:
    """Returns the allocator's free pages to the OS; whether it could (glibc only)."""
    trim = _glibc("malloc_trim")
    if trim is None:
        return False
    trim(0)
    return True


def heap_usage() -> dict[str, int] | None:
    """The C heap by the allocator's own account, every arena together (None where it is not glibc's):
    ``in_use_bytes`` handed out and not freed (heap blocks and mmapped ones), ``free_bytes`` freed and kept in the
    arenas (resident or not: a trim gives the pages back but keeps the address space). Walks every arena's free
    lists under their locks: for stats calls, not for every request."""
    mallinfo2 = _glibc("mallinfo2", _MallInfo2)  # glibc 2.33 and later (mallinfo's int fields wrap past 2 GB)
    if mallinfo2 is None:
        return None
    m = mallinfo2()
    return {"in_use_bytes": m.uordblks + m.hblkhd, "free_bytes": m.fordblks}
