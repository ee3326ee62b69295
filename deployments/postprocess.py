"""CPU stage: choose SAM's mask, bring its logits to full size, make a soft alpha, compose and encode.

``Postprocessor`` is the plain class; ``PostprocessDeployment`` its Ray shell.
"""

from __future__ import annotations

import asyncio
import io
import os
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageFilter
from ray import serve

from serve_app.config import PostprocessConfig

from .messages import MEDIA_TYPES_BY_FORMAT, Cutout, ImageRef, OutputOptions, SegmentResult
from .png import encode_png


def choose_mask(scores: np.ndarray) -> int:
    """With SAM's three candidate masks for one click, keep the one it predicts to be best; else the only one."""
    return int(np.argmax(scores)) if len(scores) > 1 else 0


def upsample_logits(logits: np.ndarray, height: int, width: int) -> torch.Tensor:
    """256x256 logits to (height, width), exactly as SAM2Transforms.postprocess_masks does (bilinear,
    align_corners=False, FP32), so that `> 0` gives SAM2ImagePredictor's mask bit for bit."""
    low_res = torch.from_numpy(np.array(logits, dtype=np.float32))[None, None]  # a writable copy (256 KB)
    return F.interpolate(low_res, (height, width), mode="bilinear", align_corners=False)[0, 0]


def soft_alpha(full_logits: torch.Tensor) -> np.ndarray:
    """Logits to an 8-bit alpha with a soft edge: sigmoid, clamped so that alpha >= 128 exactly where the
    logit is > 0 (SAM's mask), and the soft ramp never moves the edge."""
    alpha = torch.sigmoid(full_logits).mul_(255.0).round_()
    inside = full_logits > 0
    alpha = torch.where(inside, alpha.clamp(min=128.0), alpha.clamp(max=127.0))
    return alpha.to(torch.uint8).numpy()


def feather(alpha: np.ndarray, sigma: float) -> np.ndarray:
    if sigma <= 0:
        return alpha
    return np.asarray(Image.fromarray(alpha).filter(ImageFilter.GaussianBlur(radius=sigma)))


def subject_box(alpha: np.ndarray, margin: int) -> tuple[int, int, int, int] | None:
    """(x0, y0, x1, y1) of every non-transparent pixel, grown by margin; None for an empty mask."""
    rows = np.flatnonzero(alpha.any(axis=1))
    if rows.size == 0:
        return None
    cols = np.flatnonzero(alpha.any(axis=0))
    height, width = alpha.shape
    return (max(0, int(cols[0]) - margin), max(0, int(rows[0]) - margin),
            min(width, int(cols[-1]) + 1 + margin), min(height, int(rows[-1]) + 1 + margin))


def compose(rgb: np.ndarray, alpha: np.ndarray, background: tuple[int, int, int] | None) -> np.ndarray:
    if background is not None:
        a = alpha[:, :, None].astype(np.uint16)
        bg = np.array(background, dtype=np.uint16)
        return ((rgb.astype(np.uint16) * a + bg * (255 - a) + 127) // 255).astype(np.uint8)
    rgba = np.empty((*alpha.shape, 4), dtype=np.uint8)
    # Colour under fully transparent pixels is zeroed: nothing hidden leaks and the PNG gets smaller.
    np.multiply(rgb, (alpha > 0)[:, :, None], out=rgba[:, :, :3], casting="unsafe")
    rgba[:, :, 3] = alpha
    return rgba


class Postprocessor:
    def __init__(self, config: PostprocessConfig | None = None):
        self.config = config or PostprocessConfig()
        self.threads = self.config.threads or os.cpu_count() or 1
        self.use_threads()
        self._pool = ThreadPoolExecutor(max_workers=self.threads, thread_name_prefix="png")

    def use_threads(self) -> None:
        """OpenMP thread counts are per thread (and Ray sets OMP_NUM_THREADS to num_cpus): call this in any
        thread that runs render()."""
        torch.set_num_threads(self.threads)

    def render(self, seg: SegmentResult, rgb: np.ndarray, options: OutputOptions = OutputOptions(),
               source_alpha: np.ndarray | None = None) -> Cutout:
        start = time.perf_counter()
        height, width = rgb.shape[:2]
        index = choose_mask(seg.scores)
        alpha = soft_alpha(upsample_logits(seg.logits[index], height, width))
        alpha = feather(alpha, options.feather)
        if source_alpha is not None:  # what was transparent in the upload stays transparent
            alpha = np.minimum(alpha, source_alpha)
        upsample_ms = (time.perf_counter() - start) * 1000

        if options.crop and (box := subject_box(alpha, options.crop_margin)) is not None:
            x0, y0, x1, y1 = box
            rgb, alpha = rgb[y0:y1, x0:x1], alpha[y0:y1, x0:x1]
        pixels = alpha if options.mask_only else compose(rgb, alpha, options.background)
        encode_start = time.perf_counter()
        data = self.encode(pixels, options)
        timings = {**seg.timings_ms, "upsample": round(upsample_ms, 2),
                   "output": round((time.perf_counter() - encode_start) * 1000, 2),
                   "postprocess": round((time.perf_counter() - start) * 1000, 2)}
        return Cutout(data=data, media_type=MEDIA_TYPES_BY_FORMAT[options.format], width=pixels.shape[1],
                      height=pixels.shape[0], score=float(seg.scores[index]), image_id=seg.image_id,
                      cache_hit=seg.cache_hit, timings_ms=timings)

    def encode(self, pixels: np.ndarray, options: OutputOptions) -> bytes:
        if options.format == "png":
            return encode_png(pixels, self.config.png_level, self._pool, parts=self.threads)
        buffer = io.BytesIO()
        image = Image.fromarray(pixels)
        if options.format == "jpeg":
            image.convert("L" if pixels.ndim == 2 else "RGB").save(buffer, format="JPEG", quality=options.quality)
        else:
            image.save(buffer, format="WEBP", quality=options.quality, method=3)
        return buffer.getvalue()


@serve.deployment(name="Postprocess", max_ongoing_requests=4, max_queued_requests=64,
                  ray_actor_options={"num_cpus": 0.5})
class PostprocessDeployment:
    def __init__(self, config: PostprocessConfig):
        self.postprocessor = Postprocessor(config)
        self._workers = ThreadPoolExecutor(max_workers=4, thread_name_prefix="render",
                                           initializer=self.postprocessor.use_threads)

    async def render(self, seg: SegmentResult, image: ImageRef, options: OutputOptions,
                     source_alpha: ImageRef | None = None) -> Cutout:
        rgb = await image.resolve()
        alpha = await source_alpha.resolve() if source_alpha is not None else None
        return await asyncio.get_running_loop().run_in_executor(
            self._workers, self.postprocessor.render, seg, rgb, options, alpha)
