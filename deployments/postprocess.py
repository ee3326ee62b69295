"""CPU stage: choose SAM's mask, make its edge (``deployments.edges.cutout_edge``), compose and encode.

``Postprocessor`` is the plain class; ``PostprocessDeployment`` its Ray shell.
"""

from __future__ import annotations

import asyncio
import io
import os
import time
import warnings
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace

import numpy as np
import torch
from PIL import Image, ImageFilter
from ray import serve

from . import hops
from .edges import cutout_edge, warm_up
from .geometry import subject_box
from .messages import MEDIA_TYPES_BY_FORMAT, Cutout, ImageRef, OutputOptions, SegmentResult
from .metrics import StageMetrics
from .png import CutoutRows, encode_png, encode_png_fast
from .preview import choose_mask
from .settings import PostprocessConfig


def feather(alpha: np.ndarray, sigma: float) -> np.ndarray:
    if sigma <= 0:
        return alpha
    return np.asarray(Image.fromarray(alpha).filter(ImageFilter.GaussianBlur(radius=sigma)))


def _tensor(array: np.ndarray) -> torch.Tensor:
    """A zero-copy tensor view (arrays from Ray's object store are read-only; nothing here writes to them)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        return torch.from_numpy(array)


def compose(rgb: np.ndarray, alpha: np.ndarray, background: tuple[int, int, int] | None) -> np.ndarray:
    """RGBA (or RGB on a background colour). Runs in torch so that a 12 MP compose uses every core."""
    rgb_t, alpha_t = _tensor(rgb), _tensor(alpha).unsqueeze(-1)
    if background is not None:
        a = alpha_t.to(torch.int32)
        bg = torch.tensor(background, dtype=torch.int32)
        return ((rgb_t.to(torch.int32) * a + bg * (255 - a) + 127) // 255).to(torch.uint8).numpy()
    rgba = torch.empty((*alpha.shape, 4), dtype=torch.uint8)
    rgba[..., :3] = rgb_t
    rgba[..., 3:] = alpha_t
    # Colour under fully transparent pixels is zeroed: nothing hidden leaks and the PNG gets smaller.
    rgba[..., :3].mul_(alpha_t > 0)
    return rgba.numpy()


class Postprocessor:
    def __init__(self, config: PostprocessConfig | None = None):
        self.config = config or PostprocessConfig()
        self.threads = self.config.threads or os.cpu_count() or 1
        self.use_threads()
        self._pool = ThreadPoolExecutor(max_workers=self.threads, thread_name_prefix="png")
        warm_up()  # one-time kernel costs are paid here, at replica start, not by the first request

    def use_threads(self) -> None:
        """OpenMP thread counts are per thread (and Ray sets OMP_NUM_THREADS to num_cpus): call this in any
        thread that runs render()."""
        torch.set_num_threads(self.threads)

    def render(self, seg: SegmentResult, rgb: np.ndarray, options: OutputOptions = OutputOptions(),
               source_alpha: np.ndarray | None = None) -> Cutout:
        start = time.perf_counter()
        index = choose_mask(seg.scores)
        edge_ms: dict[str, float] = {}  # refine (ms) and refine_mp (megapixels matting ran at), when asked
        alpha, colours = cutout_edge(rgb, seg.logits[index], options.refine, colours=not options.mask_only,
                                     timings=edge_ms)
        alpha = feather(alpha, options.feather)
        if source_alpha is not None:  # what was transparent in the upload stays transparent
            alpha = np.minimum(alpha, source_alpha)
        upsample_ms = (time.perf_counter() - start) * 1000

        if options.crop and (box := subject_box(alpha, options.crop_margin)) is not None:
            x0, y0, x1, y1 = box
            colours, alpha = colours[y0:y1, x0:x1], alpha[y0:y1, x0:x1]
        encode_start = time.perf_counter()
        if options.format == "png" and not options.mask_only and options.background is None \
                and self.config.png_compression == "small":
            # Composed band by band inside the parallel zlib-ng writer: no full-size RGBA copy.
            data = encode_png(CutoutRows(colours, alpha), self.config.png_level, self._pool, parts=self.threads)
        else:
            data = self.encode(alpha if options.mask_only else compose(colours, alpha, options.background), options)
        timings = {**seg.timings_ms, **edge_ms, "upsample": round(upsample_ms, 2),
                   "output": round((time.perf_counter() - encode_start) * 1000, 2),
                   "postprocess": round((time.perf_counter() - start) * 1000, 2)}
        return Cutout(data=data, media_type=MEDIA_TYPES_BY_FORMAT[options.format], width=alpha.shape[1],
                      height=alpha.shape[0], score=float(seg.scores[index]), image_id=seg.image_id,
                      cache_hit=seg.cache_hit, timings_ms=timings)

    def encode(self, pixels: np.ndarray, options: OutputOptions) -> bytes:
        if options.format == "png" and self.config.png_compression == "fast":
            return encode_png_fast(pixels, self._pool, parts=self.threads)
        if options.format == "png":
            return encode_png(pixels, self.config.png_level, self._pool, parts=self.threads)
        buffer = io.BytesIO()
        image = Image.fromarray(pixels)
        if options.format == "jpeg":
            image.convert("L" if pixels.ndim == 2 else "RGB").save(buffer, format="JPEG", quality=options.quality)
        else:
            image.save(buffer, format="WEBP", quality=options.quality, method=3)
        return buffer.getvalue()


RENDER_THREADS = 4


@serve.deployment(name="Postprocess", max_ongoing_requests=4, max_queued_requests=64,
                  ray_actor_options={"num_cpus": 0.5})
class PostprocessDeployment:
    def __init__(self, config: PostprocessConfig):
        self.postprocessor = Postprocessor(config)
        self._workers = ThreadPoolExecutor(max_workers=RENDER_THREADS, thread_name_prefix="render",
                                           initializer=self.postprocessor.use_threads)
        self.metrics = StageMetrics()

    def stats(self) -> dict:
        """What /healthz's probe asks: an answer means the replica is up and its event loop free to take work."""
        return {"render_threads": RENDER_THREADS}

    async def render(self, seg: SegmentResult, image: ImageRef, options: OutputOptions,
                     source_alpha: ImageRef | None = None) -> Cutout:
        arrived_at = hops.now()
        rgb = await image.resolve()
        alpha = await source_alpha.resolve() if source_alpha is not None else None
        cutout = await asyncio.get_running_loop().run_in_executor(
            self._workers, self.postprocessor.render, seg, rgb, options, alpha)
        self.metrics.timings(cutout.timings_ms, ("upsample", "refine", "output", "postprocess"))
        timings = dict(cutout.timings_ms)
        hops.record(timings, hops.TO_POSTPROCESS, seg.done_at, arrived_at)
        return replace(cutout, timings_ms=timings, done_at=hops.now())
