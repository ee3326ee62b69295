"""The one bounded least-recently-used map behind every cache here: embeddings, the decoder's prepared images,
the image store and an ingress replica's recent image records.

Bounded in bytes (each value's ``nbytes``), in entries and, optionally, in time. Thread-safe: a replica's model
thread and its event loop both use the embedding cache.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from typing import Callable, Generic, Hashable, TypeVar

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


def _nbytes(value) -> int:
    return value.nbytes


class LRUCache(Generic[K, V]):
    """``max_bytes`` / ``max_entries`` 0: no bound of that kind. ``ttl_s`` 0: entries never expire; otherwise an
    entry expires ``ttl_s`` after it was put, or after it was last read when ``renew`` is set."""

    def __init__(self, max_bytes: int = 0, max_entries: int = 0, ttl_s: float = 0.0, renew: bool = True,
                 size: Callable[[V], int] = _nbytes, clock: Callable[[], float] = time.monotonic,
                 on_drop: Callable[[K, V], None] | None = None):
        self.max_bytes, self.max_entries, self.ttl_s, self.renew = int(max_bytes), max_entries, ttl_s, renew
        self._size, self._clock, self._on_drop = size, clock, on_drop
        self._entries: OrderedDict[K, tuple[V, int, float]] = OrderedDict()  # value, its size, its deadline
        self._lock = threading.RLock()
        self.bytes = 0
        self.hits = self.misses = self.evictions = self.expirations = 0

    def get(self, key: K) -> V | None:
        with self._lock:
            self._expire()
            entry = self._entries.get(key)
            if entry is None:
                self.misses += 1
                return None
            self.hits += 1
            self._entries.move_to_end(key)
            if self.renew and self.ttl_s:
                self._entries[key] = (entry[0], entry[1], self._clock() + self.ttl_s)
            return entry[0]

    def __contains__(self, key: K) -> bool:
        """Whether ``key`` is held; neither counts as a read nor changes the order."""
        with self._lock:
            self._expire()
            return key in self._entries

    def put(self, key: K, value: V) -> bool:
        """Keeps ``value`` (replacing ``key``'s), evicting the least recently used; False if it alone is over
        the byte bound (then nothing is kept under ``key``)."""
        size = self._size(value)
        with self._lock:
            self.pop(key)
            if self.max_bytes and size > self.max_bytes:
                return False
            self._expire()
            while self._entries and self._over(size):
                self._evict(next(iter(self._entries)))
            self._entries[key] = (value, size, self._clock() + self.ttl_s if self.ttl_s else float("inf"))
            self.bytes += size
            return True

    def pop(self, key: K) -> V | None:
        with self._lock:
            entry = self._entries.pop(key, None)
            if entry is None:
                return None
            self.bytes -= entry[1]
            if self._on_drop is not None:
                self._on_drop(key, entry[0])
            return entry[0]

    def evict(self, key: K) -> None:
        """Drops ``key`` to make room (counted as an eviction), for owners with bounds of their own."""
        with self._lock:
            if key in self._entries:
                self._evict(key)

    def items(self) -> list[tuple[K, V]]:
        """The live entries, least recently used first."""
        with self._lock:
            self._expire()
            return [(key, entry[0]) for key, entry in self._entries.items()]

    def clear(self) -> None:
        with self._lock:
            for key in list(self._entries):
                self.pop(key)

    def __len__(self) -> int:
        return len(self._entries)

    def stats(self) -> dict[str, int]:
        stats = {"entries": len(self._entries), "bytes": self.bytes, "max_bytes": self.max_bytes, "hits": self.hits,
                 "misses": self.misses, "evictions": self.evictions}
        return {**stats, "expirations": self.expirations} if self.ttl_s else stats

    def _over(self, incoming: int) -> bool:
        return bool((self.max_bytes and self.bytes + incoming > self.max_bytes)
                    or (self.max_entries and len(self._entries) + 1 > self.max_entries))

    def _evict(self, key: K) -> None:
        self.pop(key)
        self.evictions += 1

    def _expire(self) -> None:
        if not self.ttl_s:
            return
        now = self._clock()
        for key in [key for key, (_, _, deadline) in self._entries.items() if deadline <= now]:
            self.pop(key)
            self.expirations += 1
