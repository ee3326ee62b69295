"""The web page's quick mask (``preview``): the chosen mask's 256x256 logits as an 8-bit greyscale PNG, answered
by the ingress from the segmenter's result, with no postprocess hop and 65,536 pixels to encode whatever the
photo's size. SAM 2 squashes every photo to 1024x1024, so the grid covers the whole photo.

The grey is linear in the logit, ``127.5 + scale * logit`` rounded, with ``scale`` (sent as ``X-Preview-Scale``)
chosen so that the largest logit just fits: no value is clipped, so a client reads the logits back to within half
a grey level (0.5/scale), upsamples them bilinearly as the server makes its full-size mask
(``edges.upsample_logits``), and > 0 is the mask. The web page does this itself (``static/app.js``,
``previewAlpha``): a canvas's own bilinear stretch of the grey rounds in 8 bits, which moves a flat mask's edge.
"""

from __future__ import annotations

import time

import numpy as np

from .messages import Cutout, SegmentResult
from .png import encode_png

# Grey levels per logit at most: logits that are all nearly zero (a flat mask) are not magnified past this.
MAX_SCALE = 1024.0


def choose_mask(scores: np.ndarray) -> int:
    """With SAM's three candidate masks for one click, keep the one it predicts to be best; else the only one."""
    return int(np.argmax(scores)) if len(scores) > 1 else 0


def encode_logits(logits: np.ndarray) -> tuple[np.ndarray, float]:
    """(grey, scale): grey = round(127.5 + scale * logit) in 0..255, >= 128 exactly where the logit is > 0."""
    logits = np.asarray(logits, dtype=np.float32)
    largest = max(float(logits.max(initial=0.0)), -float(logits.min(initial=0.0)))
    scale = float(f"{min(MAX_SCALE, 127.0 / largest) if largest > 0 else MAX_SCALE:.6g}")  # as the header says it
    # floor(128 + scale * logit) is >= 128 for every positive logit; a logit <= 0 lands on 128 only when the
    # product rounds to 0, and is moved to 127.
    grey = np.clip(np.floor(logits * np.float32(scale) + np.float32(128.0)), 0, 255).astype(np.uint8)
    grey -= (grey == 128) & (logits <= 0)
    return grey, scale


def preview_cutout(seg: SegmentResult) -> Cutout:
    """The preview answer: the best mask's grey PNG, with the segmenter's score and timings and the scale."""
    start = time.perf_counter()
    index = choose_mask(seg.scores)
    grey, scale = encode_logits(seg.logits[index])
    data = encode_png(grey, level=1)
    timings = {**seg.timings_ms, "preview": round((time.perf_counter() - start) * 1000, 2)}
    return Cutout(data=data, media_type="image/png", width=grey.shape[1], height=grey.shape[0],
                  score=float(seg.scores[index]), image_id=seg.image_id, cache_hit=seg.cache_hit, timings_ms=timings,
                  preview_scale=scale)
