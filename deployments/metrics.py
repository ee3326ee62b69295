"""The project's own Prometheus metrics, ``bgremove_*`` (Ray's exporter adds its ``ray_`` prefix).

Recorded by the Ray shells only (the plain stage classes know nothing of Ray); Serve adds the
``deployment``, ``replica`` and ``application`` tags to each series.
"""

from __future__ import annotations

from ray.serve import metrics

MS_BUCKETS = [1, 2, 5, 10, 20, 35, 50, 75, 100, 150, 250, 400, 600, 1000, 1500, 2500, 4000, 7000, 12000, 30000]
MEGAPIXEL_BUCKETS = [0.1, 0.3, 0.5, 1, 2, 4, 8, 12, 16, 25, 50]


class StageMetrics:
    """Per-stage timings (``bgremove_stage_ms{stage=...}``), shared by every deployment."""

    def __init__(self):
        self.stage_ms = metrics.Histogram("bgremove_stage_ms", "Time spent in one step of a request, per stage",
                                          boundaries=MS_BUCKETS, tag_keys=("stage",))

    def timings(self, timings_ms: dict[str, float], only: tuple[str, ...]) -> None:
        for stage in only:
            if stage in timings_ms:
                self.stage_ms.observe(timings_ms[stage], tags={"stage": stage})


class IngressMetrics(StageMetrics):
    def __init__(self):
        super().__init__()
        self.megapixels = metrics.Histogram("bgremove_image_megapixels", "Size of uploaded photos",
                                            boundaries=MEGAPIXEL_BUCKETS)
        self.bytes_in = metrics.Counter("bgremove_bytes_in", "Bytes of photos received", tag_keys=("route",))
        self.bytes_out = metrics.Counter("bgremove_bytes_out", "Bytes of cut-outs sent", tag_keys=("route",))
        self.refused = metrics.Counter("bgremove_refused_requests", "Requests answered with a 4xx/503 error",
                                       tag_keys=("code",))
        self.internal_errors = metrics.Counter("bgremove_internal_errors", "Requests that failed on a fault of the "
                                               "server (answered 500, traceback logged)", tag_keys=("error",))


class SegmenterMetrics(StageMetrics):
    def __init__(self):
        super().__init__()
        self.cache_hits = metrics.Counter("bgremove_embedding_cache_hits", "Clicks served from a cached embedding")
        self.cache_misses = metrics.Counter("bgremove_embedding_cache_misses", "Clicks that ran the image encoder")
        self.cache_evictions = metrics.Counter("bgremove_embedding_cache_evictions", "Embeddings evicted (LRU)")
        self.cache_bytes = metrics.Gauge("bgremove_embedding_cache_bytes", "Bytes held by the embedding cache")
        self.cache_entries = metrics.Gauge("bgremove_embedding_cache_entries", "Embeddings held")
        self.batch_size = metrics.Histogram("bgremove_encoder_batch_size", "Images per image-encoder pass",
                                            boundaries=[1, 2, 3, 4, 6, 8, 12, 16])
        self.gpu_memory = metrics.Gauge("bgremove_gpu_memory_bytes", "GPU memory allocated by this replica")
        self._evictions_seen = 0

    def request(self, hit: bool, timings_ms: dict[str, float], cache_stats: dict[str, int], gpu_bytes: int) -> None:
        (self.cache_hits if hit else self.cache_misses).inc()
        self.timings(timings_ms, ("fetch", "embed", "mask", "segment"))
        new_evictions = cache_stats["evictions"] - self._evictions_seen
        if new_evictions > 0:
            self.cache_evictions.inc(new_evictions)
            self._evictions_seen = cache_stats["evictions"]
        self.cache_bytes.set(cache_stats["bytes"])
        self.cache_entries.set(cache_stats["entries"])
        self.gpu_memory.set(gpu_bytes)


class ImageStoreMetrics:
    def __init__(self):
        self.bytes = metrics.Gauge("bgremove_image_store_bytes", "Bytes of uploaded photos kept for image_id clicks")
        self.images = metrics.Gauge("bgremove_image_store_images", "Photos kept for image_id clicks")

    def update(self, stats: dict[str, int]) -> None:
        self.bytes.set(stats["bytes"])
        self.images.set(stats["images"])
