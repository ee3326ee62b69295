"""The one-call library API, in process and without Ray: ``remove(image, points=[[x, y]])`` -> PNG bytes.

It runs the very same stage classes as the Ray graph (IngressCore's checks, Segmenter, Postprocessor,
ImageStore), wired with direct calls instead of handles.
"""

from __future__ import annotations

import asyncio
import functools
from pathlib import Path
from typing import Any

import numpy as np

from deployments.image_store import ImageStore
from deployments.ingress import IngressCore
from deployments.messages import ImageRef, StoredImage
from deployments.output_options import parse_output_options
from deployments.postprocess import Postprocessor
from deployments.segmenter import Segmenter

from .config import AppArgs


class LocalStages:
    """The Stages interface of IngressCore, fulfilled by plain objects in this process."""

    def __init__(self, args: AppArgs):
        self.segmenter = Segmenter(args.segmenter())
        self.postprocessor = Postprocessor(args.postprocess())
        self.store = ImageStore(args.image_store())

    def put_pixels(self, array: np.ndarray) -> ImageRef:
        return ImageRef.local(array)

    async def segment(self, request):
        return await asyncio.to_thread(self.segmenter.segment, request.image_id, request.image.get(), request.prompt)

    async def render(self, seg, image, options, source_alpha):
        result = await seg
        alpha = source_alpha.get() if source_alpha is not None else None
        return await asyncio.to_thread(self.postprocessor.render, result, image.get(), options, alpha)

    async def cache_embedding(self, image_id, image) -> bool:
        _, hit, _ = await asyncio.to_thread(self.segmenter.embedding, image_id, image.get())
        return hit

    async def store_image(self, record: StoredImage) -> bool:
        return self.store.put(record)

    async def fetch_image(self, image_id):
        return self.store.get(image_id)


@functools.lru_cache(maxsize=2)
def pipeline(**args: Any) -> IngressCore:
    """An in-process pipeline per distinct configuration (the model is loaded once)."""
    app_args = AppArgs(**args).with_env()
    return IngressCore(LocalStages(app_args), app_args.limits())


def remove(image: bytes | str | Path, points: Any = None, labels: Any = None, box: Any = None, *,
           model: str = "base_plus", checkpoint: str = "auto", device: str = "auto", **options: Any) -> bytes:
    """Cuts the clicked object out of ``image`` (bytes or a path) and returns the encoded cut-out.

    ``options`` are the output options: format, mask_only, background, crop, crop_margin, feather, quality.
    """
    data = Path(image).read_bytes() if isinstance(image, (str, Path)) else bytes(image)
    core = pipeline(model=model, checkpoint=checkpoint, device=device)
    cutout = asyncio.run(core.cutout(image=data, points=points, labels=labels, box=box,
                                     options=parse_output_options(**options)))
    return cutout.data
