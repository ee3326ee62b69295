"""IngressCore without Ray: how often a click on a stored image asks the image store."""

import asyncio

import numpy as np
import pytest

from deployments.ingress import IngressCore, RecentImages
from deployments.messages import Cutout, ImageRef, StoredImage
from deployments import errors
from deployments.settings import IngressLimits


class Clock:
    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now


class StoreOnlyStages:
    """Stages whose image store holds one record; the model stages answer at once."""

    def __init__(self, record: StoredImage | None):
        self.record, self.recalls = record, 0

    def put_pixels(self, array):
        return ImageRef.local(array)

    async def segment(self, request):
        return request

    async def render(self, seg, image, options, source_alpha):
        request = await seg
        return Cutout(data=b"png", media_type="image/png", width=8, height=6, score=1.0, image_id=request.image_id)

    async def fetch_image(self, image_id):
        self.recalls += 1
        return self.record if self.record and self.record.image_id == image_id else None


IMG = "0123456789abcdef" * 2


def _record(image_id=IMG) -> StoredImage:
    pixels = np.zeros((6, 8, 3), np.uint8)
    return StoredImage(image_id, 8, 6, ImageRef.local(pixels), ImageRef.local(pixels), None, pixels.nbytes)


def test_clicks_on_a_recent_image_skip_the_store_until_its_record_is_stale():
    clock = Clock()
    stages = StoreOnlyStages(_record())
    core = IngressCore(stages, IngressLimits())
    core.recent = RecentImages(fresh_s=5.0, clock=clock)

    async def clicks(n):
        for i in range(n):
            cutout = await core.cutout(image_id=IMG, points=[[1 + i % 5, 2]])
            assert cutout.image_id == IMG

    asyncio.run(clicks(10))
    assert stages.recalls == 1  # the first click fetched (and so renewed) the record; the next nine did not ask
    clock.now = 5.0  # stale: the store is asked again, which renews its TTL
    asyncio.run(clicks(3))
    assert stages.recalls == 2


def test_an_unknown_image_id_is_a_404_that_says_upload_again():
    core = IngressCore(StoreOnlyStages(None), IngressLimits())
    with pytest.raises(errors.ApiError) as caught:
        asyncio.run(core.cutout(image_id="f" * 32, points=[[1, 2]]))
    assert caught.value.status == 404 and "upload" in caught.value.message


# -- uploads belong to the API key that sent them ----------------------------------------------------------------

class RecordingStages:
    """An image store in a dict and a model that always reports a cache hit (as if another key had sent the photo),
    recording the embedding ids it is asked for."""

    def __init__(self):
        self.records, self.embedding_ids = {}, []

    def put_pixels(self, array):
        return ImageRef.local(array)

    async def segment(self, request):
        self.embedding_ids.append(request.image_id)
        return request

    async def render(self, seg, image, options, source_alpha):
        request = await seg
        return Cutout(data=b"png", media_type="image/png", width=8, height=6, score=1.0, image_id=request.image_id,
                      cache_hit=True, timings_ms={"embed": 900.0, "fetch": 3.0, "mask": 20.0})

    async def cache_embedding(self, image_id, image):
        self.embedding_ids.append(image_id)
        return True

    async def store_image(self, record):
        self.records[record.image_id] = record
        return True

    async def fetch_image(self, image_id):
        return self.records.get(image_id)


def test_with_keys_an_upload_belongs_to_its_key_and_the_shared_cache_stays_hidden():
    from deployments.imaging import image_id_of
    from images import jpeg

    data = jpeg(64, 48, seed=3)
    content_id = image_id_of(data)
    stages = RecordingStages()
    core = IngressCore(stages, IngressLimits(), id_secret="server-secret")
    key_a, key_b = "a" * 64, "b" * 64  # SHA-256 digests of two API keys, as the guard passes them

    async def scenario():
        by_a = await core.cutout(image=data, points=[[5, 5]], owner=key_a)
        by_b = await core.cutout(image=data, points=[[5, 5]], owner=key_b)
        # The same photo: one embedding (content hash) underneath, a different id per key, neither the hash.
        assert stages.embedding_ids == [content_id, content_id]
        assert len({by_a.image_id, by_b.image_id, content_id}) == 3
        # The model said "hit" (B's photo was cached by A's upload); a request with a photo never says so with keys,
        # nor shows the timings that only a miss has.
        assert not by_b.cache_hit and not {"embed", "fetch"} & set(by_b.timings_ms) and "mask" in by_b.timings_ms
        # B cannot click on A's upload by A's id (nor A on B's), though the store holds both.
        for owner, other in ((key_b, by_a.image_id), (key_a, by_b.image_id)):
            with pytest.raises(errors.ApiError) as caught:
                await core.cutout(image_id=other, points=[[5, 5]], owner=owner)
            assert caught.value.status == 404
        core.recent = RecentImages()  # also when the record comes from the store rather than this replica's memory
        with pytest.raises(errors.ApiError):
            await core.cutout(image_id=by_a.image_id, points=[[5, 5]], owner=key_b)
        # Its own id works, and a click by id reports the cache as it is.
        again = await core.cutout(image_id=by_a.image_id, points=[[5, 5]], owner=key_a)
        assert again.image_id == by_a.image_id and again.cache_hit
        # Another replica with the same secret derives the same id; another secret does not.
        twin = IngressCore(RecordingStages(), IngressLimits(), id_secret="server-secret")
        assert (await twin.upload(data, owner=key_a)).image_id == by_a.image_id
        other = IngressCore(RecordingStages(), IngressLimits(), id_secret="another-secret")
        assert (await other.upload(data, owner=key_a)).image_id != by_a.image_id
        # Without keys nothing changes: the id is the content hash, the cache is reported as it is.
        open_core = IngressCore(RecordingStages(), IngressLimits(), id_secret="server-secret")
        plain = await open_core.cutout(image=data, points=[[5, 5]])
        assert plain.image_id == content_id and plain.cache_hit and "embed" in plain.timings_ms

    asyncio.run(scenario())


def test_a_large_upload_hands_its_freed_decoding_memory_back_and_a_small_one_does_not(monkeypatch):
    from deployments import host_memory
    from deployments.ingress.core import RELEASE_AFTER_PIXELS
    from images import jpeg

    releases = []
    monkeypatch.setattr(host_memory, "release_free_memory", lambda: releases.append(1) or True)
    core = IngressCore(RecordingStages(), IngressLimits())
    side = int(RELEASE_AFTER_PIXELS ** 0.5)
    asyncio.run(core.upload(jpeg(side - 1, side - 1, seed=1)))
    assert releases == []
    asyncio.run(core.upload(jpeg(side, side, seed=2)))
    asyncio.run(core.cutout(image=jpeg(side + 8, side, seed=3), points=[[5, 5]]))
    assert releases == [1, 1]  # once per decode, uploads and cut-outs alike


def test_at_most_max_concurrent_decodes_run_at_once_even_when_callers_give_up(monkeypatch):
    import threading
    import time as clock

    from deployments.ingress import core as ingress
    from images import jpeg

    running, peak, lock = [0], [0], threading.Lock()

    def slow_decode(data, limits):
        with lock:
            running[0] += 1
            peak[0] = max(peak[0], running[0])
        clock.sleep(0.05)
        with lock:
            running[0] -= 1
        return real_decode(data, limits)

    real_decode = ingress.decode_image
    monkeypatch.setattr(ingress, "decode_image", slow_decode)
    core = IngressCore(RecordingStages(), IngressLimits(max_concurrent_decodes=2))

    async def burst():
        uploads = [asyncio.ensure_future(core.upload(jpeg(32, 24, seed=i))) for i in range(12)]
        await asyncio.sleep(0.01)
        for task in uploads[:4]:  # clients that gave up (a deadline): their decodes may still be running
            task.cancel()
        return await asyncio.gather(*uploads, return_exceptions=True)

    results = asyncio.run(burst())
    assert sum(not isinstance(r, BaseException) for r in results) == 8
    assert peak[0] == 2


# -- an id is good for a whole TTL from the answer that gave it ---------------------------------------------------

class SlowModelStages(RecordingStages):
    """The real image store (on a fake clock) under a model that takes 3/4 of the store's TTL to answer."""

    def __init__(self, clock: Clock, ttl_s: float):
        super().__init__()
        from deployments.image_store import ImageStore
        from deployments.settings import ImageStoreConfig

        self.clock, self.ttl_s = clock, ttl_s
        self.store = ImageStore(ImageStoreConfig(ttl_s=ttl_s), clock=clock)

    async def render(self, seg, image, options, source_alpha):
        await asyncio.sleep(0.05)  # real time too, past the core's recent_image_s below
        self.clock.now += 0.75 * self.ttl_s
        return await super().render(seg, image, options, source_alpha)

    async def cache_embedding(self, image_id, image):
        await asyncio.sleep(0.05)
        self.clock.now += 0.75 * self.ttl_s
        return True

    async def store_image(self, record):
        return self.store.put(record)

    async def fetch_image(self, image_id):
        return self.store.get(image_id)


@pytest.mark.parametrize("route", ["cutout", "upload"])
@pytest.mark.parametrize("renews", [True, False])
def test_a_slow_first_answer_renews_the_stored_image(route, renews):
    """The store's TTL starts when the upload goes in; an answer that took longer than recent_image_s renews it,
    so a click half a TTL after the answer still finds the photo. (renews=False: the same scenario with the
    renewal threshold out of reach, which loses it: the check can fail.)"""
    from images import jpeg

    clock, ttl = Clock(), 100.0
    stages = SlowModelStages(clock, ttl)
    core = IngressCore(stages, IngressLimits(recent_image_s=0.01 if renews else 1e9))
    data = jpeg(64, 48, seed=5)

    async def first_answer():
        if route == "cutout":
            return (await core.cutout(image=data, points=[[5, 5]])).image_id
        return (await core.upload(data)).image_id

    image_id = asyncio.run(first_answer())
    clock.now += 0.5 * ttl
    assert (stages.store.get(image_id) is not None) is renews


@pytest.mark.parametrize("store_answer", ["refused", "failed"])
def test_a_photo_the_store_did_not_keep_gets_no_id(store_answer):
    """The cut-out is still served, but it promises no image_id that the next click would find unknown."""
    from images import jpeg

    class NotKeeping(RecordingStages):
        async def store_image(self, record):
            if store_answer == "failed":
                raise RuntimeError("image store replica died")
            return False

    cutout = asyncio.run(IngressCore(NotKeeping(), IngressLimits()).cutout(image=jpeg(64, 48, seed=6),
                                                                            points=[[5, 5]]))
    assert cutout.data == b"png" and cutout.image_id == ""
    kept = asyncio.run(IngressCore(RecordingStages(), IngressLimits()).cutout(image=jpeg(64, 48, seed=6),
                                                                              points=[[5, 5]]))
    assert kept.image_id


def test_the_http_answer_names_no_image_id_when_there_is_none():
    from deployments.ingress import cutout_response

    def answer(image_id):
        return cutout_response(Cutout(data=b"png", media_type="image/png", width=8, height=6, score=1.0,
                                      image_id=image_id))

    assert "x-image-id" not in answer("").headers
    assert answer(IMG).headers["x-image-id"] == IMG


@pytest.mark.parametrize("route", ["cutout", "upload"])
def test_an_image_over_the_byte_limit_is_refused_by_decoding(route):
    """The HTTP layer reads at most one byte past the limit; decoding is the one place that refuses the file."""
    from images import jpeg

    data = jpeg(64, 48, seed=7)
    core = IngressCore(RecordingStages(), IngressLimits(max_upload_bytes=len(data) - 1))
    call = core.cutout(image=data, points=[[5, 5]]) if route == "cutout" else core.upload(data)
    with pytest.raises(errors.ApiError) as caught:
        asyncio.run(call)
    assert caught.value.status == 413 and caught.value.code == "file_too_large"
    assert f"{(len(data) - 1) / 1e6:.0f} MB limit" in caught.value.message
