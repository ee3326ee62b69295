"""An image's embedding: from the cache, or encoded once, however many concurrent requests want it."""

from __future__ import annotations

import asyncio
import time
from typing import Awaitable, Callable

import numpy as np

from ..lru import LRUCache
from ..messages import ImageRef
from .embedding import Embedding, elapsed_ms


class Embeddings:
    """The cache-miss path of the Ray shell and of the in-process library. ``encode`` turns one image's pixels
    into its embedding (the Ray shell batches concurrent calls into one encoder pass)."""

    def __init__(self, cache: LRUCache[str, Embedding], encode: Callable[[np.ndarray], Awaitable[Embedding]]):
        self.cache, self._encode = cache, encode
        self._pending: dict[str, asyncio.Future] = {}

    async def get(self, image_id: str, image: ImageRef) -> tuple[Embedding, bool, dict[str, float]]:
        """(embedding, whether it was cached, timings of the work this call did or waited for)."""
        embedding = self.cache.get(image_id)
        if embedding is not None:
            return embedding, True, {}
        if image_id in self._pending:  # another request is already encoding this image
            return await asyncio.shield(self._pending[image_id]), False, {"coalesced": 1.0}
        future = asyncio.get_running_loop().create_future()
        future.add_done_callback(lambda f: f.cancelled() or f.exception())  # never "exception never retrieved"
        self._pending[image_id] = future
        try:
            fetch_start = time.perf_counter()
            pixels = await image.resolve()  # only now do the pixels travel to this replica
            fetch_ms = elapsed_ms(fetch_start)
            encode_start = time.perf_counter()
            embedding = await self._encode(pixels)
            self.cache.put(image_id, embedding)
            future.set_result(embedding)
            return embedding, False, {"fetch": fetch_ms, "embed": elapsed_ms(encode_start)}
        except BaseException as exc:
            if not future.done():
                future.set_exception(exc)
            raise
        finally:
            self._pending.pop(image_id, None)
