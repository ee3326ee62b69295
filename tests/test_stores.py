"""The embedding cache (LRU by bytes) and the image store (LRU by bytes + TTL)."""

from dataclasses import dataclass

import numpy as np

from deployments.lru import LRUCache as EmbeddingCache
from deployments.image_store import ImageStore
from deployments.messages import ImageRef, StoredImage
from deployments.settings import ImageStoreConfig


@dataclass
class Blob:
    nbytes: int


def test_cache_hit_miss_and_eviction_by_bytes():
    cache = EmbeddingCache(max_bytes=100)
    assert cache.get("a") is None
    cache.put("a", Blob(40))
    cache.put("b", Blob(40))
    assert cache.get("a") is not None  # a is now the most recently used
    cache.put("c", Blob(40))  # 120 > 100: evicts the least recently used, b
    assert "b" not in cache and "a" in cache and "c" in cache
    assert cache.stats() == {"entries": 2, "bytes": 80, "max_bytes": 100, "hits": 1, "misses": 1, "evictions": 1}


def test_cache_refuses_an_entry_larger_than_the_budget_and_replaces_same_key():
    cache = EmbeddingCache(max_bytes=100)
    cache.put("big", Blob(101))
    assert "big" not in cache and cache.bytes == 0
    cache.put("a", Blob(30))
    cache.put("a", Blob(50))
    assert cache.bytes == 50 and len(cache) == 1


class Clock:
    now = 0.0

    def __call__(self):
        return self.now


def record(image_id: str, nbytes: int) -> StoredImage:
    pixels = ImageRef.local(np.zeros((2, 2, 3), np.uint8))
    return StoredImage(image_id, 2, 2, pixels, pixels, None, nbytes)


def test_image_store_ttl_renewed_by_use():
    clock = Clock()
    store = ImageStore(ImageStoreConfig(ttl_s=10, max_bytes=1000), clock=clock)
    store.put(record("a", 10))
    clock.now = 9
    assert store.get("a") is not None  # renews: now expires at 19
    clock.now = 18
    assert store.get("a") is not None
    clock.now = 28.5
    assert store.get("a") is None
    assert store.stats()["expirations"] == 1 and store.bytes == 0


def test_image_store_byte_budget():
    store = ImageStore(ImageStoreConfig(ttl_s=100, max_bytes=100))
    assert store.put(record("a", 60))
    assert store.put(record("b", 30))
    assert store.put(record("c", 30))  # evicts a
    assert store.get("a") is None and store.get("b") and store.get("c")
    assert not store.put(record("huge", 101))
    assert store.stats()["evictions"] == 1


def test_ingress_recent_images_bounded_by_age_entries_and_bytes():
    from deployments.ingress import RecentImages

    clock = Clock()
    recent = RecentImages(max_entries=2, max_bytes=100, fresh_s=5, clock=clock)
    recent.add(record("a", 10))
    recent.add(record("b", 10))
    assert recent.get("a") is not None  # a is now the most recent
    recent.add(record("c", 10))  # three entries > 2: the least recent, b, goes
    assert recent.get("b") is None and recent.get("a") and recent.get("c")
    recent.add(record("big", 95))  # over the byte budget: the oldest go until it fits
    assert recent.get("a") is None and recent.get("big") is not None
    clock.now = 5.0
    assert recent.get("big") is None  # too old to trust: the store is asked again


def owned(image_id: str, nbytes: int, owner: str) -> StoredImage:
    pixels = ImageRef.local(np.zeros((2, 2, 3), np.uint8))
    return StoredImage(image_id, 2, 2, pixels, pixels, None, nbytes, content_id="c" + image_id, owner=owner)


def test_a_key_past_its_quota_evicts_its_own_uploads_not_other_keys():
    store = ImageStore(ImageStoreConfig(ttl_s=100, max_bytes=1000, max_bytes_per_owner=300))
    assert store.put(owned("a1", 200, "key-a"))
    for i in range(20):  # key b floods the store
        assert store.put(owned(f"b{i}", 100, "key-b"))
    assert store.get("a1") is not None  # a's upload survives
    assert store.owner_bytes == {"key-a": 200, "key-b": 300} and store.bytes == 500
    assert [store.get(f"b{i}") is not None for i in (16, 17, 18, 19)] == [False, True, True, True]
    assert not store.put(owned("b-big", 301, "key-b"))  # larger than a key's whole quota
    assert store.put(owned("open", 900, ""))  # without keys (no owner) only the store's budget applies
    assert store.get("a1") is None and store.owner_bytes == {"": 900, "key-b": 100}  # then least recently used


def test_lru_bounds_entries_and_time_and_counts_what_it_drops():
    from deployments.lru import LRUCache

    clock = Clock()
    dropped = []
    lru = LRUCache(max_entries=2, ttl_s=10, renew=False, clock=lambda: clock.now,
                   on_drop=lambda key, value: dropped.append(key))
    lru.put("a", Blob(1))
    lru.put("b", Blob(1))
    lru.put("c", Blob(1))  # a third entry: the least recently used, a, goes
    assert "a" not in lru and lru.evictions == 1 and dropped == ["a"]
    clock.now = 5
    assert lru.get("b") is not None  # read, but without renewal its deadline stays at 10
    clock.now = 10
    assert lru.get("b") is None and lru.get("c") is None and lru.expirations == 2 and lru.bytes == 0
    renewing = LRUCache(ttl_s=10, clock=lambda: clock.now)
    renewing.put("x", Blob(3))
    clock.now = 19
    assert renewing.get("x") is not None  # read at 19: now alive until 29
    clock.now = 28
    assert "x" in renewing and renewing.stats()["expirations"] == 0
    renewing.evict("x")
    assert renewing.evictions == 1 and renewing.pop("x") is None and len(renewing) == 0
