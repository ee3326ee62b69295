"""IngressCore without Ray: how often a click on a stored image asks the image store."""

import asyncio

import numpy as np
import pytest

from deployments.ingress import IngressCore, RecentImages
from deployments.messages import Cutout, ImageRef, StoredImage
from serve_app import errors
from serve_app.config import IngressLimits


class Clock:
    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now


class StoreOnlyStages:
    """Stages whose image store holds one record; the model stages answer at once."""

    def __init__(self, record: StoredImage | None):
        self.record, self.recalls = record, 0

    def share(self, array):
        return ImageRef.local(array)

    async def segment(self, request):
        return request

    async def render(self, seg, image, options, source_alpha):
        request = await seg
        return Cutout(data=b"png", media_type="image/png", width=8, height=6, score=1.0, image_id=request.image_id)

    async def recall(self, image_id):
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
