"""Uploaded images kept for later clicks, bounded in bytes and in time, shared by every ingress replica.

``ImageStore`` is the plain class (LRU + TTL over records); ``ImageStoreDeployment`` its Ray shell, which
copies the pixels into objects it owns so that they outlive the ingress replica that received the upload.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from typing import Callable

import numpy as np
from ray import serve

from .lru import LRUCache
from .messages import ImageRef, StoredImage
from .metrics import ImageStoreMetrics
from .settings import ImageStoreConfig


class ImageStore:
    def __init__(self, config: ImageStoreConfig, clock: Callable[[], float] = time.monotonic):
        self.config = config
        # Each click renews a record's time to live: an image stays while people click on it.
        self._records: LRUCache[str, StoredImage] = LRUCache(config.max_bytes, ttl_s=config.ttl_s, clock=clock,
                                                             on_drop=self._dropped)
        self._lock = threading.Lock()
        self.owner_bytes: Counter[str] = Counter()

    def put(self, record: StoredImage) -> bool:
        """Keeps a record; returns False when it alone is larger than the whole budget, or than its key's quota."""
        quota = self.config.max_bytes_per_owner if record.owner else 0
        with self._lock:
            self._records.pop(record.image_id)
            if record.nbytes > self.config.max_bytes or (quota and record.nbytes > quota):
                return False
            if quota:  # a key past its quota makes room from its own oldest uploads, not from other keys'
                own = [key for key, r in self._records.items() if r.owner == record.owner]
                while own and self.owner_bytes[record.owner] + record.nbytes > quota:
                    self._records.evict(own.pop(0))
            if not self._records.put(record.image_id, record):
                return False
            self.owner_bytes[record.owner] += record.nbytes
            return True

    def get(self, image_id: str) -> StoredImage | None:
        """The record, its time to live renewed (each click keeps an image alive); None if unknown or expired."""
        with self._lock:  # a read may expire records, which changes owner_bytes: under the same lock as put
            return self._records.get(image_id)

    def __contains__(self, image_id: str) -> bool:
        return self.get(image_id) is not None

    def __len__(self) -> int:
        return len(self._records)

    @property
    def bytes(self) -> int:
        return self._records.bytes

    @property
    def evictions(self) -> int:
        return self._records.evictions

    @property
    def expirations(self) -> int:
        return self._records.expirations

    def stats(self) -> dict[str, int]:
        return {"images": len(self._records), "bytes": self.bytes, "max_bytes": self.config.max_bytes,
                "evictions": self.evictions, "expirations": self.expirations}

    def _dropped(self, _image_id: str, record: StoredImage) -> None:
        self.owner_bytes[record.owner] -= record.nbytes
        if not self.owner_bytes[record.owner]:
            del self.owner_bytes[record.owner]


@serve.deployment(name="ImageStore", num_replicas=1, max_ongoing_requests=64, ray_actor_options={"num_cpus": 0.05})
class ImageStoreDeployment:
    def __init__(self, config: ImageStoreConfig):
        self.store = ImageStore(config)
        self.metrics = ImageStoreMetrics()

    def put(self, image_id: str, full: np.ndarray, model_image: np.ndarray, alpha: np.ndarray | None = None,
            content_id: str = "", owner: str = "") -> bool:
        # The id is a content hash (scoped to the key, with keys): a repeat upload holds the same pixels. Keeping
        # the record (its time to live renewed) rather than replacing it also keeps its objects alive: clicks in
        # flight may hold references to them, which Ray's reference counting does not see through Serve responses.
        if self.store.get(image_id) is not None:
            return True
        # Small images are their own model copy: one object serves both.
        model_image = full if model_image.shape == full.shape else model_image
        full_ref = ImageRef.put(full)
        model_ref = full_ref if model_image is full else ImageRef.put(model_image)
        alpha_ref = ImageRef.put(alpha) if alpha is not None else None
        nbytes = StoredImage.size_of(full, model_image, alpha)
        kept = self.store.put(StoredImage(image_id, full.shape[1], full.shape[0], full_ref, model_ref, alpha_ref,
                                          nbytes, content_id, owner))
        self.metrics.update(self.store.stats())
        return kept

    def get(self, image_id: str) -> StoredImage | None:
        record = self.store.get(image_id)
        self.metrics.update(self.store.stats())  # expiries happen on access
        return record

    def stats(self) -> dict:
        return self.store.stats()
