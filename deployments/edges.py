"""The cut-out's edge: SAM's 256x256 logits and the full-resolution photo in, alpha and edge colours out.

``cutout_edge(photo, logits, refine)`` is the one entry point; the postprocess stage, the edge benchmark
(``bgremove edge-quality``) and outside checks all call it.

- Plain (``refine=False``): the logits upsampled exactly as sam2 does, as a soft alpha (``soft_alpha``:
  >= 128 exactly where SAM's mask is), so masks are SAM2ImagePredictor's masks.
- Refined (``refine=True``): a trimap from SAM's own uncertainty (pixels whose logit is below
  ``unknown_logit`` in magnitude, widened by ``band_cells`` logit cells so that an outline one cell off lies
  inside it), closed-form matting of that band at a working size chosen for the band (``edge_refine.py``; torch
  conjugate gradients in ``matting.py``, on the GPU when there is one), the matte brought to full size through the
  photo's own colours, and a guard (``edge_guard.py``) that answers the plain edge when the matte looks wrong.
- Colours, both paths: the soft edge's pixels get the subject's estimated colour
  (``deployments/edge_colours.py``; on a GPU ``edge_colours_torch.py``); alpha is never changed by this.

Cost bound: matting works at the largest scale whose band holds at most ``band_pixels``, colour estimation on a
copy of at most ``colour_megapixels``; at full size only the edge band's pixels are touched, so a 25 MP photo
costs the upsampling of its logits plus a band's worth of arithmetic, never a 25 MP linear system.
"""

from __future__ import annotations

import time
from dataclasses import replace

import cv2
import numpy as np
import torch
import torch.nn.functional as F

from . import edge_colours_torch
from .edge_colours import decontaminate
from .edge_grid import blocks
from .edge_guard import verdict
from .edge_refine import refined_matte, unknown_band
from .edge_settings import DEFAULT_SETTINGS, EdgeSettings, torch_device

__all__ = ["DEFAULT_SETTINGS", "EdgeSettings", "cutout_edge", "decontaminate", "soft_alpha", "unknown_band",
           "upsample_logits", "warm_up"]

LOW_RES = 256  # SAM's mask logits are 256x256 whatever the photo's shape
# Logit units per step of 8-bit alpha in the plain soft edge: the ramp spans logits -4..+4 (the web page's
# overlay applies the same ramp to previews: deployments/static/app.js).
ALPHA_PER_LOGIT = 32.0


def upsample_logits(logits: np.ndarray, height: int, width: int) -> torch.Tensor:
    """256x256 logits to (height, width), exactly as SAM2Transforms.postprocess_masks does (bilinear,
    align_corners=False, FP32), so that `> 0` gives SAM2ImagePredictor's mask."""
    low_res = torch.from_numpy(np.array(logits, dtype=np.float32))[None, None]  # a writable copy (256 KB)
    return F.interpolate(low_res, (height, width), mode="bilinear", align_corners=False)[0, 0]


def soft_alpha(full_logits: torch.Tensor) -> np.ndarray:
    """Logits to an 8-bit alpha with a soft edge: a clipped linear ramp, ceil(127 + 32 * logit), which is
    >= 128 exactly where the logit is > 0 (SAM's mask) and <= 127 elsewhere, so the edge never moves.
    Overwrites ``full_logits`` (a 12 MP image is 48 MB of floats; no copies)."""
    inside = full_logits > 0
    alpha = full_logits.mul_(ALPHA_PER_LOGIT).add_(127.0).ceil_().clamp_(0.0, 255.0).to(torch.uint8)
    # 127 + tiny positive logit rounds to 127.0 in float32: lift those few pixels to 128.
    return torch.maximum(alpha, inside.view(torch.uint8).mul_(128)).numpy()


def cutout_edge(photo: np.ndarray, logits: np.ndarray, refine: bool, *, colours: bool = True,
                settings: EdgeSettings | None = None, timings: dict | None = None,
                diagnostics: dict | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Alpha uint8 (H, W) and the colours to put under it, uint8 (H, W, 3), for one chosen mask.

    photo: uint8 (H, W, 3), full resolution; logits: float32 (256, 256), the mask's low-res logits as the
    segmenter returns them; refine: matting on SAM's uncertain band (slower) instead of the plain soft edge.
    ``colours=False`` skips colour estimation (mask-only output) and returns the photo itself as colours;
    ``timings``, if given, receives ``refine`` (ms), ``refine_mp`` (the megapixels matting ran at) and
    ``refine_guard`` when the guard answered the plain edge; ``diagnostics`` the solve's and the guard's figures.
    """
    settings = settings or DEFAULT_SETTINGS
    height, width = photo.shape[:2]
    size = (height, width)
    full_logits = upsample_logits(logits, height, width)
    inside = (full_logits > 0).numpy() if refine else None
    alpha = soft_alpha(full_logits)
    want_colours = colours and settings.decontaminate
    if not refine and not want_colours:
        return alpha, photo
    start = time.perf_counter()
    if refine:
        info: dict = {}
        alpha = _refined(photo, logits, inside, alpha, settings, info)
        if timings is not None:
            timings.update(refine=round((time.perf_counter() - start) * 1000, 2), refine_mp=info.get("refine_mp", 0.0))
            if info.get("guard"):
                timings["refine_guard"] = 1.0  # the plain edge was answered (Server-Timing shows it)
        if diagnostics is not None:
            diagnostics.update(info)
    if not want_colours:
        return alpha, photo
    on = torch_device(settings)
    if on.type == "cuda":  # numba's loops run on the CPU; on a GPU the same method in torch
        return alpha, edge_colours_torch.decontaminate(photo, alpha, settings, on)
    return alpha, decontaminate(photo, alpha, settings)


def _refined(photo: np.ndarray, logits: np.ndarray, inside: np.ndarray, plain: np.ndarray, settings: EdgeSettings,
             info: dict) -> np.ndarray:
    """The refined alpha (uint8), or ``plain`` when there is nothing to solve or the guard finds it worse."""
    result = refined_matte(photo, logits, inside, settings, info)
    if result is None:
        return plain
    matte, band = result
    reason = verdict(photo, matte, plain, inside, band, logits, info, settings)
    info["verdict"], info["guard"] = reason, reason if settings.guard else None
    if info["guard"]:
        return plain
    alpha = inside.view(np.uint8) * np.uint8(255)
    for rows, cols in blocks(band):
        values = (matte[rows, cols] - settings.alpha_low) / (settings.alpha_high - settings.alpha_low)
        alpha[rows, cols] = np.round(np.clip(values, 0.0, 1.0) * 255.0).astype(np.uint8)
    return alpha


def warm_up() -> None:
    """Run both paths once on a tiny photo, so that the first request pays no one-time cost (torch kernels'
    first dispatch, cv2's thread pool, the colour kernels' numba compile; pymatting's numba kernels when a
    pymatting solver is configured). The plain path runs again on a read-only photo, as the postprocess stage gets
    them from Ray's object store: numba compiles read-only arrays separately."""
    yy, xx = np.mgrid[0:96, 0:128].astype(np.float32)
    inside = (xx - 64) ** 2 + (yy - 48) ** 2 < 30 ** 2
    photo = np.where(inside[..., None], np.uint8(200), np.uint8(40)).repeat(3, -1)
    # blurred, so that the edge has soft pixels and colour estimation runs
    logits = cv2.GaussianBlur(cv2.resize(np.where(inside, 10.0, -10.0).astype(np.float32), (LOW_RES, LOW_RES)),
                              (0, 0), 8)
    for refine in (False, True):
        cutout_edge(photo, logits, refine)
    # and the path of photos whose band is over budget: solved smaller, carried up through the guided filter
    cutout_edge(photo, logits, True, settings=replace(DEFAULT_SETTINGS, band_pixels=500))
    photo.setflags(write=False)
    cutout_edge(photo, logits, False)
