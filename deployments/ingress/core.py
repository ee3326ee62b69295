"""The ingress without Ray or HTTP: ``IngressCore`` decodes and checks an upload, then drives the other stages
through a small ``Stages`` interface (Ray handles in the graph, direct calls in process)."""

import asyncio
import logging
import secrets
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Awaitable, Protocol

from .. import errors, hops, host_memory
from ..imaging import DecodedImage, check_image_id, decode_image, scoped_image_id
from ..lru import LRUCache
from ..messages import Cutout, ImageRef, OutputOptions, SegmentRequest, SegmentResult, StoredImage
from ..output_options import check_output_size
from ..preview import preview_cutout
from ..prompts import parse_model_prompt
from ..settings import IngressLimits

logger = logging.getLogger(__name__)


class Stages(Protocol):
    """What the ingress needs from the rest of the graph."""

    def put_pixels(self, array) -> ImageRef:
        """Puts an array where the other stages can read it (Ray's object store, or this process's memory)."""

    def segment(self, request: SegmentRequest) -> Awaitable[SegmentResult]: ...

    def render(self, seg: Awaitable[SegmentResult], image: ImageRef, options: OutputOptions,
               source_alpha: ImageRef | None) -> Awaitable[Cutout]: ...

    def cache_embedding(self, image_id: str, image: ImageRef) -> Awaitable[bool]:
        """Computes and caches the image's embedding ahead of its first click; whether it was cached already."""

    def store_image(self, record: StoredImage) -> Awaitable[bool]:
        """Keeps the record in the image store for clicks by id; whether the store kept it."""

    def fetch_image(self, image_id: str) -> Awaitable[StoredImage | None]:
        """The stored record (a fetch renews its TTL), or None."""


def _ms(start: float) -> float:
    return round((time.perf_counter() - start) * 1000.0, 2)


class RecentImages(LRUCache[str, StoredImage]):
    """This replica's short memory of image records, so that a burst of clicks on one photo skips the round
    trip to the image store. Bounded in entries, pinned bytes and age: after ``fresh_s`` the store is asked
    again (reads do not renew it), so the store's TTL and evictions stay the truth."""

    def __init__(self, max_entries: int = 128, max_bytes: int = 512 << 20, fresh_s: float = 10.0,
                 clock=time.monotonic):
        super().__init__(max_bytes, max_entries, ttl_s=fresh_s, renew=False, clock=clock)

    def add(self, record: StoredImage) -> None:
        self.put(record.image_id, record)


# Server-Timing entries that exist only when the embedding was computed for this request: with API keys they would
# tell a key that another key had uploaded the same photo, so they are left out of answers to requests with a photo.
CACHE_REVEALING_TIMINGS = frozenset({"fetch", "embed", "coalesced"})
# After decoding a photo this large the replica hands the freed memory back to the OS (deployments/host_memory.py):
# a burst of 25 MP uploads otherwise left ~350 MB with the allocator for good. Smaller decodes leave little.
RELEASE_AFTER_PIXELS = 4_000_000


class IngressCore:
    """``owner`` below: the API key's SHA-256 digest the request came with ("" without keys). Stored images (and
    their ids) belong to it; the embedding cache underneath is shared, keyed by content hash."""

    def __init__(self, stages: Stages, limits: IngressLimits, id_secret: str = ""):
        self.stages = stages
        self.limits = limits
        self._id_secret = (id_secret or secrets.token_hex(32)).encode()
        self.recent = RecentImages(fresh_s=limits.recent_image_s)
        # The decode threads are the bound (a semaphore would be released by a request that timed out while its
        # thread, which cannot be stopped, still decodes); the other uploads wait in the pool's queue.
        self._decoders = ThreadPoolExecutor(limits.max_concurrent_decodes, thread_name_prefix="decode")

    async def _decode_and_put(self, data: bytes, owner: str) -> StoredImage:
        """Decoded pixels live here only until they are put (in Ray: copied to the object store), so a burst of
        large uploads holds at most max_concurrent_decodes images' worth of decoding memory in this replica."""
        def decode_and_put() -> StoredImage:  # both on the decode thread: a put copies megabytes (ray.put)
            decoded = decode_image(data, self.limits)
            large = decoded.width * decoded.height >= RELEASE_AFTER_PIXELS
            stored = self._put_decoded(decoded, owner)
            del decoded
            if large:  # Pillow's and the conversions' freed blocks, else kept by the allocator after a burst
                host_memory.release_free_memory()
            return stored

        return await asyncio.get_running_loop().run_in_executor(self._decoders, decode_and_put)

    async def upload(self, data: bytes, owner: str = "") -> StoredImage:
        """Stores an image for later clicks and computes its embedding ahead of them (POST /v1/images)."""
        start = time.perf_counter()
        stored = await self._decode_and_put(data, owner)
        kept, _ = await asyncio.gather(self.stages.store_image(stored),
                                       self.stages.cache_embedding(stored.embedding_id, stored.model_image))
        if not kept:
            raise errors.too_large("image_store_full", "the image is larger than the image store keeps for one "
                                   f"{'API key' if owner else 'server'}; send it with each /v1/cutout request instead")
        await self._renew_if_slow(stored.image_id, start)
        return stored

    async def cutout(self, *, image: bytes | None = None, image_id: str | None = None, points: Any = None,
                     labels: Any = None, box: Any = None, options: OutputOptions = OutputOptions(),
                     owner: str = "") -> Cutout:
        start = time.perf_counter()
        timings: dict[str, float] = {}
        storing = None
        if image is not None:
            source = await self._decode_and_put(image, owner)
            timings["read"] = _ms(start)
            # Later clicks may name this photo by its id alone, on any ingress replica: the image store keeps
            # it while the model works, and the answer waits for that so the id is good once the client has it.
            storing = self._in_background(self.stages.store_image(source))
        elif image_id:
            source = await self._owned_image(check_image_id(image_id), owner)
        else:
            raise errors.bad_request("missing_image", "send the photo as `image`, or the `image_id` that "
                                     "POST /v1/images returned")

        model_prompt = parse_model_prompt(points, labels, box, source.width, source.height, source.model_image.shape,
                                          self.limits.max_points)
        check_output_size(options, source.width, source.height)
        seg = self.stages.segment(SegmentRequest(source.embedding_id, source.model_image, model_prompt,
                                                 sent_at=hops.now()))
        if options.preview:  # answered here from the logits: no postprocess hop (deployments/preview.py)
            result = await seg
            hops.record(timings, hops.BACK, result.done_at)
            cutout = preview_cutout(result)
        else:
            cutout = await self.stages.render(seg, source.full, options, source.alpha)
            hops.record(timings, hops.BACK, cutout.done_at)
        image_id = source.image_id
        if storing is not None:
            if await storing:
                await self._renew_if_slow(image_id, start)
            else:  # not kept (larger than the store takes for this key, or the store failed): promise no id
                image_id = ""
        timings["total"] = _ms(start)
        cache_hit, stage_timings = cutout.cache_hit, cutout.timings_ms
        if owner and image is not None:
            # The cache is shared by all keys: a hit on a photo sent now may come from another key's upload. Say
            # only what this key's own uploads tell it (a hit on its image_id); the response time still differs.
            cache_hit = False
            stage_timings = {k: v for k, v in stage_timings.items() if k not in CACHE_REVEALING_TIMINGS}
        return Cutout(**{**cutout.__dict__, "image_id": image_id, "cache_hit": cache_hit,
                         "timings_ms": {**stage_timings, **timings},
                         "source_megapixels": source.width * source.height / 1e6})

    def _put_decoded(self, decoded: DecodedImage, owner: str) -> StoredImage:
        full = self.stages.put_pixels(decoded.rgb)
        model = full if decoded.model_rgb is decoded.rgb else self.stages.put_pixels(decoded.model_rgb)
        alpha = self.stages.put_pixels(decoded.alpha) if decoded.alpha is not None else None
        nbytes = StoredImage.size_of(decoded.rgb, decoded.model_rgb, decoded.alpha)
        image_id = scoped_image_id(decoded.image_id, owner, self._id_secret)
        stored = StoredImage(image_id, decoded.width, decoded.height, full, model, alpha, nbytes,
                             content_id=decoded.image_id, owner=owner)
        self.recent.add(stored)  # the next click on this photo may come here before the store has it
        return stored

    async def _renew_if_slow(self, image_id: str, start: float) -> None:
        """The store's TTL counts from when the record went in, at the start of the request: after a slow answer
        (longer than recent_image_s, a quarter of the TTL at most) one read renews it, so the id the client now
        holds is good for a whole TTL, however long the model took."""
        if time.perf_counter() - start > self.limits.recent_image_s:
            await self.stages.fetch_image(image_id)

    async def _owned_image(self, image_id: str, owner: str) -> StoredImage:
        # A record this replica fetched (and so renewed in the store) less than fresh_s ago needs no store call:
        # the store's TTL (at least 4x fresh_s) then counts from at most fresh_s before the latest click.
        stored = self.recent.get(image_id)
        if stored is None:
            stored = await self.stages.fetch_image(image_id)
            if stored is not None:
                self.recent.add(stored)
        if stored is None or stored.owner != owner:  # another key's id (unguessable anyway) is unknown to this one
            raise errors.unknown_image(image_id)
        return stored

    @staticmethod
    def _in_background(work: Awaitable) -> asyncio.Task:
        """Runs bookkeeping concurrently; its failure is logged (the task's result is then None), never the
        request's failure."""
        async def run():
            try:
                return await work
            except Exception:
                logger.warning("background call failed", exc_info=True)
                return None
        task = asyncio.get_running_loop().create_task(run())
        _background_tasks.add(task)  # a reference, so the task is not garbage-collected mid-flight
        task.add_done_callback(_background_tasks.discard)
        return task


_background_tasks: set[asyncio.Task] = set()
