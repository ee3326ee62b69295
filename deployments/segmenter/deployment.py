"""The segmenter's Ray Serve shell: the model on one thread, concurrent cache misses batched into one pass."""

from __future__ import annotations

import asyncio
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
from ray import serve

from .. import errors, hops, host_memory
from ..messages import ImageRef, SegmentRequest, SegmentResult
from ..metrics import SegmenterMetrics
from ..settings import SegmenterConfig
from .embedding import Embedding, elapsed_ms
from .embeddings import Embeddings
from .faults import encode_in_parts, predict_or_error
from .floor import reference_timings
from .runner import Segmenter


# max_queued_requests: per caller (each ingress replica); past it the caller gets BackPressureError -> 503.
@serve.deployment(name="Segmenter", max_ongoing_requests=2, max_queued_requests=32, ray_actor_options={"num_cpus": 1},
                  health_check_period_s=10, health_check_timeout_s=30)
class SegmenterDeployment:
    def __init__(self, config: SegmenterConfig):
        self.segmenter = Segmenter(config, progress=False)
        self._model_thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="sam2",
                                                initializer=self.segmenter.use_threads)
        self.embeddings = Embeddings(self.segmenter.cache, self._encode_one)
        self._encode_batch.set_max_batch_size(config.max_batch_size)
        self._encode_batch.set_batch_wait_timeout_s(config.batch_wait_timeout_s)
        self.metrics = SegmenterMetrics()

    async def segment(self, request: SegmentRequest) -> SegmentResult:
        start, arrived_at = time.perf_counter(), hops.now()
        embedding, hit, timings = await self.embeddings.get(request.image_id, request.image)
        hops.record(timings, hops.TO_SEGMENTER, request.sent_at, arrived_at)
        decode_start = time.perf_counter()
        logits, scores = await self._on_model_thread(predict_or_error, self.segmenter.predict, embedding,
                                                     request.prompt)
        timings["mask"] = elapsed_ms(decode_start)
        timings["segment"] = elapsed_ms(start)
        self.metrics.request(hit, timings, self.segmenter.cache.stats(), self.segmenter.gpu_memory_bytes())
        return SegmentResult(request.image_id, logits, scores, hit, timings, done_at=hops.now())

    async def cache_embedding(self, image_id: str, image: ImageRef) -> bool:
        """Computes and caches an image's embedding ahead of its first click; returns whether it was cached."""
        _, hit, _ = await self.embeddings.get(image_id, image)
        return hit

    async def reference_timings(self, image: np.ndarray, point: tuple[float, float], repeats: int = 10) -> list[float]:
        return await self._on_model_thread(reference_timings, self.segmenter, image, point, repeats)

    def stats(self) -> dict:
        return {**self.segmenter.cache.stats(), "replica": serve.get_replica_context().replica_id.unique_id,
                "device": str(self.segmenter.device), "model": self.segmenter.config.model,
                "cuda_graphs": self.segmenter.graphs.batch_sizes, "graph_capture_ms": self.segmenter.graphs.capture_ms,
                "host_heap": host_memory.heap_usage()}

    async def check_health(self) -> None:
        # On the model thread: a probe queued behind a long batch is fine (health_check_timeout_s), a hung
        # device fails it by timing out, and the model is never used by two threads at once.
        await self._on_model_thread(self.segmenter.check)

    async def _encode_one(self, pixels: np.ndarray) -> Embedding:
        embedding = await self._encode_batch(pixels)
        if isinstance(embedding, BaseException):  # this image alone did not fit in GPU memory
            raise embedding
        return embedding

    @serve.batch(max_batch_size=4, batch_wait_timeout_s=0.0)
    async def _encode_batch(self, images: list[np.ndarray]) -> list[Embedding | errors.ApiError]:
        self.metrics.batch_size.observe(len(images))
        return await self._on_model_thread(encode_in_parts, self.segmenter.encode, images)

    async def _on_model_thread(self, fn, *args):
        return await asyncio.get_running_loop().run_in_executor(self._model_thread, fn, *args)
