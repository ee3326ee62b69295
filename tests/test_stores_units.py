"""The bounded LRU (deployments/lru.py), the image store on it (deployments/image_store.py) and the subject's box
(deployments/geometry.py), at their bounds: exactly full, exactly expired, replaced, dropped, counted."""

from dataclasses import dataclass

import numpy as np
import pytest

from deployments.geometry import subject_box
from deployments.image_store import ImageStore
from deployments.lru import LRUCache
from deployments.messages import ImageRef, StoredImage
from deployments.settings import ImageStoreConfig


@dataclass
class Blob:
    nbytes: int


class Clock:
    def __init__(self):
        self.now = 100.0

    def __call__(self):
        return self.now


def test_a_cache_filled_exactly_to_its_byte_bound_keeps_everything():
    cache = LRUCache(max_bytes=100.0)  # a float bound is read as whole bytes
    assert cache.max_bytes == 100 and type(cache.max_bytes) is int
    assert cache.put("a", Blob(60)) and cache.put("b", Blob(40))
    assert len(cache) == 2 and cache.bytes == 100 and cache.evictions == 0
    assert cache.put("c", Blob(1))  # one byte over: the least recently used goes
    assert "a" not in cache and cache.bytes == 41 and cache.evictions == 1


def test_an_entry_bound_keeps_exactly_that_many():
    cache = LRUCache(max_entries=3)
    for key in "abc":
        cache.put(key, Blob(1))
    assert [key for key, _ in cache.items()] == ["a", "b", "c"] and cache.evictions == 0
    cache.put("d", Blob(1))
    assert [key for key, _ in cache.items()] == ["b", "c", "d"] and cache.evictions == 1


def test_evicting_goes_on_until_the_newcomer_fits():
    cache = LRUCache(max_bytes=100)
    for key in "abcd":
        cache.put(key, Blob(25))
    assert cache.put("big", Blob(70))
    assert [key for key, _ in cache.items()] == ["d", "big"] and cache.evictions == 3 and cache.bytes == 95


def test_an_entry_over_the_whole_bound_replaces_nothing_and_removes_its_key():
    dropped = []
    cache = LRUCache(max_bytes=100, on_drop=lambda key, value: dropped.append((key, value.nbytes)))
    cache.put("a", Blob(10))
    cache.put("b", Blob(10))
    assert cache.put("a", Blob(101)) is False
    assert "a" not in cache and "b" in cache and cache.bytes == 10 and dropped == [("a", 10)]
    assert cache.evictions == 0


def test_replacing_a_key_drops_the_old_value_and_counts_its_bytes_once():
    dropped = []
    cache = LRUCache(max_bytes=100, on_drop=lambda key, value: dropped.append(value))
    old, new = Blob(30), Blob(50)
    cache.put("a", old)
    cache.put("a", new)
    assert dropped == [old] and cache.get("a") is new and cache.bytes == 50 and len(cache) == 1


def test_reads_count_and_reorder_but_membership_does_neither():
    cache = LRUCache()
    cache.put("a", Blob(1))
    cache.put("b", Blob(1))
    assert "a" in cache and "zz" not in cache
    assert (cache.hits, cache.misses) == (0, 0) and [k for k, _ in cache.items()] == ["a", "b"]
    assert cache.get("a").nbytes == 1 and cache.get("zz") is None
    assert (cache.hits, cache.misses) == (1, 1) and [k for k, _ in cache.items()] == ["b", "a"]
    assert cache.get("b") is not None and cache.get("yy") is None and cache.get("a") is not None
    assert (cache.hits, cache.misses) == (3, 2)


def test_pop_and_evict():
    dropped = []
    cache = LRUCache(on_drop=lambda key, value: dropped.append(key))
    blob = Blob(7)
    cache.put("a", blob)
    cache.put("b", Blob(3))
    assert cache.pop("a") is blob and cache.bytes == 3 and dropped == ["a"] and cache.evictions == 0
    assert cache.pop("a") is None and dropped == ["a"]
    cache.evict("missing")
    assert cache.evictions == 0
    cache.evict("b")
    assert cache.evictions == 1 and dropped == ["a", "b"] and len(cache) == 0 and cache.bytes == 0


def test_clear_drops_everything_without_counting_evictions():
    dropped = []
    cache = LRUCache(on_drop=lambda key, value: dropped.append(key))
    for key in "abc":
        cache.put(key, Blob(2))
    cache.clear()
    assert sorted(dropped) == ["a", "b", "c"] and len(cache) == 0 and cache.bytes == 0 and cache.evictions == 0


def test_a_custom_size():
    cache = LRUCache(max_bytes=10, size=len)
    cache.put("a", "12345")
    cache.put("b", "123456")
    assert "a" not in cache and cache.bytes == 6


def test_an_entry_expires_exactly_ttl_after_it_was_put():
    clock = Clock()
    cache = LRUCache(ttl_s=10, renew=False, clock=clock)
    cache.put("a", Blob(4))
    clock.now += 9.999
    assert "a" in cache
    clock.now = 110.0
    assert "a" not in cache and cache.expirations == 1 and cache.bytes == 0 and cache.items() == []


def test_a_renewing_read_moves_the_deadline_from_the_read():
    clock = Clock()
    cache = LRUCache(ttl_s=10, clock=clock)
    cache.put("a", Blob(4))
    clock.now += 8
    assert cache.get("a") is not None
    clock.now += 9.5  # 17.5 after the put, 9.5 after the read
    assert "a" in cache
    clock.now += 0.5
    assert cache.get("a") is None and cache.expirations == 1


def test_without_a_time_to_live_nothing_expires_and_stats_say_nothing_of_it():
    clock = Clock()
    cache = LRUCache(max_bytes=50, clock=clock)
    cache.put("a", Blob(5))
    clock.now = 1e12
    assert cache.get("a") is not None
    assert cache.stats() == {"entries": 1, "bytes": 5, "max_bytes": 50, "hits": 1, "misses": 0, "evictions": 0}
    timed = LRUCache(ttl_s=1, clock=clock)
    assert timed.stats()["expirations"] == 0


def test_expired_entries_make_room_before_anything_is_evicted():
    clock = Clock()
    cache = LRUCache(max_entries=2, ttl_s=5, renew=False, clock=clock)
    cache.put("old", Blob(1))
    clock.now += 3
    cache.put("fresh", Blob(1))
    clock.now += 2  # "old" has expired
    cache.put("new", Blob(1))
    assert [key for key, _ in cache.items()] == ["fresh", "new"]
    assert (cache.expirations, cache.evictions) == (1, 0)


# -- the image store --------------------------------------------------------------------------------------------------

def record(image_id: str, nbytes: int, owner: str = "") -> StoredImage:
    pixels = ImageRef.local(np.zeros((2, 2, 3), np.uint8))
    return StoredImage(image_id, 2, 2, pixels, pixels, None, nbytes, content_id="c" + image_id, owner=owner)


def test_the_store_reports_what_it_holds():
    clock = Clock()
    store = ImageStore(ImageStoreConfig(ttl_s=10, max_bytes=100), clock=clock)
    assert store.put(record("a", 60)) and store.put(record("b", 40))
    assert "a" in store and "zz" not in store and len(store) == 2 and store.bytes == 100
    assert store.put(record("c", 10))  # evicts a
    clock.now += 10  # b and c expire
    assert store.get("b") is None
    assert store.stats() == {"images": 0, "bytes": 0, "max_bytes": 100, "evictions": 1, "expirations": 2}
    assert (store.evictions, store.expirations) == (1, 2)


def test_the_store_takes_an_image_exactly_its_budget_or_its_quota():
    store = ImageStore(ImageStoreConfig(ttl_s=100, max_bytes=100, max_bytes_per_owner=50))
    assert store.put(record("whole", 100))
    assert store.put(record("quota", 50, owner="k"))
    assert not store.put(record("over", 51, owner="k"))
    assert not store.put(record("huge", 101))
    assert store.owner_bytes == {"k": 50}


def test_putting_the_same_id_again_replaces_it_and_counts_its_bytes_once():
    store = ImageStore(ImageStoreConfig(ttl_s=100, max_bytes=1000, max_bytes_per_owner=100))
    assert store.put(record("a", 60, owner="k"))
    assert store.put(record("a", 70, owner="k"))  # its own old copy is not counted against the quota
    assert store.owner_bytes == {"k": 70} and store.bytes == 70 and len(store) == 1 and store.evictions == 0


def test_a_key_at_its_quota_gives_up_its_oldest_uploads_first_and_only_as_many_as_needed():
    store = ImageStore(ImageStoreConfig(ttl_s=100, max_bytes=1000, max_bytes_per_owner=100))
    for name in ("k1", "k2", "k3", "k4"):
        assert store.put(record(name, 25, owner="k"))
    assert store.put(record("other", 25, owner="j"))
    assert store.put(record("k5", 50, owner="k"))
    assert [name in store for name in ("k1", "k2", "k3", "k4", "k5", "other")] == [False, False, True, True, True, True]
    assert store.owner_bytes == {"k": 100, "j": 25} and store.evictions == 2


def test_an_owner_with_nothing_left_disappears_from_the_accounting():
    clock = Clock()
    store = ImageStore(ImageStoreConfig(ttl_s=10, max_bytes=1000, max_bytes_per_owner=500), clock=clock)
    store.put(record("a", 10, owner="k"))
    store.put(record("b", 20, owner="j"))
    clock.now += 10
    assert store.get("a") is None
    assert store.owner_bytes == {} and store.bytes == 0


def test_without_a_quota_owners_share_the_budget():
    store = ImageStore(ImageStoreConfig(ttl_s=100, max_bytes=100))
    assert store.put(record("a", 60, owner="k"))
    assert store.put(record("b", 60, owner="k"))  # no quota: the store's LRU makes room
    assert "a" not in store and store.owner_bytes == {"k": 60}


# -- the subject's box ------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("seed", range(5))
def test_the_box_holds_every_subject_pixel_and_no_empty_border(seed):
    rng = np.random.default_rng(seed)
    mask = np.zeros((37, 61), np.uint8)
    y0, x0 = rng.integers(0, 30), rng.integers(0, 50)
    mask[y0:y0 + rng.integers(1, 8), x0:x0 + rng.integers(1, 12)] = rng.integers(1, 256)
    box = subject_box(mask, 0)
    ys, xs = np.nonzero(mask)
    assert box == (xs.min(), ys.min(), xs.max() + 1, ys.max() + 1)
    left, top, right, bottom = box
    assert mask[top:bottom, left:right].sum() == mask.sum()
    for edge in (mask[top], mask[bottom - 1], mask[:, left], mask[:, right - 1]):
        assert edge.any()


def test_the_margin_grows_the_box_within_the_image():
    mask = np.zeros((40, 90), bool)
    mask[0, 89] = True  # top right corner
    assert subject_box(mask, 3) == (86, 0, 90, 4)
    mask[39, 0] = True  # and bottom left
    assert subject_box(mask, 3) == (0, 0, 90, 40)
    single = np.zeros((40, 90), bool)
    single[20, 50] = True
    assert subject_box(single, 0) == (50, 20, 51, 21)
    assert subject_box(single, 7) == (43, 13, 58, 28)
    assert all(isinstance(v, int) for v in subject_box(single, 7))
