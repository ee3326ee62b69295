"""deployments/host_memory.py: freed heap memory goes back to the OS, and the segmenter does it after a CPU pass."""

import ctypes
import os
import platform

import pytest

from deployments import host_memory
from reliability import anonymous_bytes

MiB = 2**20
glibc_only = pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="malloc_trim is glibc's")
SIZE, COUNT = 64 * 1024, 2000  # 125 MiB of blocks under glibc's mmap threshold, so they come from the heap


def libc():
    c = ctypes.CDLL(None)
    c.malloc.restype, c.malloc.argtypes = ctypes.c_void_p, [ctypes.c_size_t]
    c.free.argtypes = [ctypes.c_void_p]
    return c


def resident_blocks(libc) -> list[int]:
    blocks = [libc.malloc(SIZE) for _ in range(COUNT)]
    for block in blocks:
        ctypes.memset(block, 1, SIZE)  # make the pages resident
    return blocks


@glibc_only
def test_release_gives_freed_heap_pages_back_that_free_alone_keeps():
    """Heap blocks all freed but the last: the one still in use pins the heap's top, so free() alone returns nothing,
    as after an encoder pass's activations."""
    c = libc()
    blocks = resident_blocks(c)
    for block in blocks[:-1]:
        c.free(block)
    after_free = anonymous_bytes(os.getpid())
    assert host_memory.release_free_memory()
    after_release = anonymous_bytes(os.getpid())
    c.free(blocks[-1])
    assert after_free - after_release > 100 * MiB, (after_free / MiB, after_release / MiB)


def test_a_cpu_encoder_pass_gives_its_freed_memory_back(monkeypatch):
    from deployments.segmenter import Segmenter
    from deployments.settings import SegmenterConfig
    from images import photo

    segmenter = Segmenter(SegmenterConfig(model="tiny", checkpoint="random", device="cpu"), progress=False)
    calls = []
    monkeypatch.setattr(host_memory, "release_free_memory", lambda: calls.append(1) or True)
    segmenter.encode([photo(320, 240, seed=1), photo(200, 150, seed=2)])
    assert len(calls) == 1  # once per pass, after it


@glibc_only
def test_heap_usage_counts_blocks_in_use_and_not_the_freed_ones_the_allocator_keeps():
    """What tells a leak from retention: blocks in use count, freed ones the allocator keeps (pinned by the last,
    as above) move to free_bytes, though they stay resident."""
    c = libc()
    before = host_memory.heap_usage()
    blocks = resident_blocks(c)
    holding = host_memory.heap_usage()
    for block in blocks[:-1]:
        c.free(block)
    freed = host_memory.heap_usage()
    c.free(blocks[-1])
    assert holding["in_use_bytes"] - before["in_use_bytes"] >= COUNT * SIZE
    assert abs(freed["in_use_bytes"] - before["in_use_bytes"]) < 8 * MiB, (before, freed)
    assert freed["free_bytes"] - holding["free_bytes"] > 100 * MiB, (holding, freed)
