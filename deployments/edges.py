"""The cut-out's edge: SAM's 256x256 logits and the full-resolution photo in, alpha and edge colours out.

``cutout_edge(photo, logits, refine)`` is the one entry point; the postprocess stage, the edge benchmark
(``bgremove edge-quality``) and outside checks all call it.

- Plain (``refine=False``): the logits upsampled exactly as sam2 does, as a soft alpha (``soft_alpha``:
  >= 128 exactly where SAM's mask is), so masks match SAM2ImagePredictor bit for bit.
- Refined (``refine=True``): a trimap from SAM's own uncertainty (pixels whose logit is below
  ``unknown_logit`` in magnitude, widened by ``band_cells`` logit cells so that an outline one cell off lies
  inside it), closed-form matting of that band (``deployments/matting.py``, torch conjugate gradients, on
  the GPU when there is one), and the matte brought to full size through the photo's own colours (the guided
  filter's local linear model, fitted where the matte was solved and applied to full-resolution pixels).
- Colours, both paths: the soft edge's pixels get the subject's estimated colour
  (``deployments/edge_colours.py``); alpha is never changed by this.

Cost bound: matting runs on a copy of at most ``work_megapixels`` and colour estimation on one of at most
``colour_megapixels`` (downsample-solve-upsample, ``deployments/edge_grid.py``); at full size only the edge
band's pixels are touched, so a 25 MP photo costs the upsampling of its logits plus a band's worth of
arithmetic, never a 25 MP linear system.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import cv2
import numpy as np
import torch
import torch.nn.functional as F

from .edge_colours import decontaminate
from .edge_grid import blocks, downsample, sample_at
from .edge_settings import DEFAULT_SETTINGS, EdgeSettings
from .geometry import subject_box
from .matting import solve_alpha

__all__ = ["DEFAULT_SETTINGS", "EdgeSettings", "cutout_edge", "decontaminate", "soft_alpha", "unknown_band",
           "upsample_logits", "warm_up"]

LOW_RES = 256  # SAM's mask logits are 256x256 whatever the photo's shape
# Logit units per step of 8-bit alpha in the plain soft edge: the ramp spans logits -4..+4 (the web page's
# overlay applies the same ramp to previews: deployments/static/app.js).
ALPHA_PER_LOGIT = 32.0


def upsample_logits(logits: np.ndarray, height: int, width: int) -> torch.Tensor:
    """256x256 logits to (height, width), exactly as SAM2Transforms.postprocess_masks does (bilinear,
    align_corners=False, FP32), so that `> 0` gives SAM2ImagePredictor's mask bit for bit."""
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


def _device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def _box(x: torch.Tensor, radius: int) -> torch.Tensor:
    """Mean over a (2r+1)^2 window clipped at the borders; x (C, H, W)."""
    return F.avg_pool2d(x[None], 2 * radius + 1, stride=1, padding=radius, count_include_pad=False)[0]


@dataclass
class _Working:
    """The photo at the matting budget's size, with what both paths need there."""

    photo: np.ndarray  # (h, w, 3) float32 in [0, 1]
    logits: np.ndarray  # (h, w) float32
    cell: tuple[float, float]  # working pixels per logit cell (x, y)
    scale: float  # working side / full side


def _working(photo: np.ndarray, logits: np.ndarray, settings: EdgeSettings) -> _Working:
    small = downsample(photo, settings.work_megapixels)
    h, w = small.shape[:2]
    return _Working(small, upsample_logits(logits, h, w).numpy(), (w / LOW_RES, h / LOW_RES), h / photo.shape[0])


def unknown_band(logits: np.ndarray, cell: tuple[float, float], settings: EdgeSettings) -> np.ndarray:
    """The trimap's unknown region from SAM's uncertainty: |logit| < unknown_logit, dilated by band_cells."""
    unsure = (np.abs(logits) < settings.unknown_logit).astype(np.uint8)
    rx, ry = (max(1, round(settings.band_cells * c)) for c in cell)
    return cv2.dilate(unsure, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * rx + 1, 2 * ry + 1))).astype(bool)


def _solve(photo: np.ndarray, known: np.ndarray, start: np.ndarray, settings: EdgeSettings) -> np.ndarray:
    """Closed-form (or another pymatting method's) alpha of the unknown pixels; float32 (h, w)."""
    if settings.solver == "torch":
        device = _device()
        image = torch.from_numpy(photo).to(device).permute(2, 0, 1).contiguous()
        alpha = solve_alpha(image, torch.from_numpy(known).to(device), torch.from_numpy(start).to(device),
                            settings.epsilon, settings.iterations)
        return alpha.cpu().numpy()
    import pymatting  # the comparison methods (numba, imported only when asked for)

    trimap = np.where(known, np.round(start), 0.5).astype(np.float64)
    estimate = getattr(pymatting, f"estimate_alpha_{settings.solver}")
    kwargs = {"laplacian_kwargs": {"epsilon": settings.epsilon}} if settings.solver == "cf" else {}
    return estimate(photo.astype(np.float64), trimap, **kwargs).astype(np.float32)


def _matte(work: _Working, settings: EdgeSettings) -> tuple[np.ndarray, np.ndarray] | None:
    """Alpha at working size (float32) and the band it was solved in, or None when there is nothing to solve."""
    band = unknown_band(work.logits, work.cell, settings)
    inside = work.logits > 0
    if not band.any() or not (inside & ~band).any() or not (~inside & ~band).any():
        return None  # matting needs known foreground and background to start from
    x0, y0, x1, y1 = subject_box(band, 2)
    box = (slice(y0, y1), slice(x0, x1))
    start = np.clip(0.5 + work.logits * (ALPHA_PER_LOGIT / 255.0), 0.0, 1.0)
    start[~band] = inside[~band]
    alpha = start.copy()
    alpha[box] = _solve(work.photo[box], ~band[box], start[box], settings)
    return alpha, band


def _guide_coefficients(photo: np.ndarray, alpha: np.ndarray, radius: int, epsilon: float) -> torch.Tensor:
    """He et al.'s guided filter (colour guide): per window, alpha ~ a . colour + b. Returns (4, h, w): a, b,
    averaged over the windows holding each pixel, ready to apply to a full-resolution colour."""
    image = torch.from_numpy(photo).permute(2, 0, 1)
    p = torch.from_numpy(alpha)[None]
    mean_i, mean_p = _box(image, radius), _box(p, radius)
    cov_ip = _box(image * p, radius) - mean_i * mean_p
    var = torch.stack([_box(image[i:i + 1] * image[j:j + 1], radius)[0] - mean_i[i] * mean_i[j]
                       for i in range(3) for j in range(3)], -1).reshape(*alpha.shape, 3, 3)
    var = var + epsilon * torch.eye(3)
    a = torch.linalg.solve(var, cov_ip.permute(1, 2, 0)[..., None])[..., 0].permute(2, 0, 1)
    b = mean_p[0] - (a * mean_i).sum(0)
    return _box(torch.cat([a, b[None]]), radius)


def _full_size(mask: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    return cv2.resize(mask.astype(np.uint8), size[::-1], interpolation=cv2.INTER_NEAREST).astype(bool)


def cutout_edge(photo: np.ndarray, logits: np.ndarray, refine: bool, *, colours: bool = True,
                settings: EdgeSettings | None = None, timings: dict | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Alpha uint8 (H, W) and the colours to put under it, uint8 (H, W, 3), for one chosen mask.

    photo: uint8 (H, W, 3), full resolution; logits: float32 (256, 256), the mask's low-res logits as the
    segmenter returns them; refine: matting on SAM's uncertain band (slower) instead of the plain soft edge.
    ``colours=False`` skips colour estimation (mask-only output) and returns the photo itself as colours;
    ``timings``, if given, receives ``refine`` (ms) and ``refine_mp`` (the megapixels matting ran at).
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
        work = _working(photo, logits, settings)
        matte = _matte(work, settings)
        if timings is not None:
            timings["refine_mp"] = round(work.photo.shape[0] * work.photo.shape[1] / 1e6, 2)
        if matte is not None:
            work_alpha, band = matte
            full_band = _full_size(band, size)
            alpha = inside.view(np.uint8) * np.uint8(255)
            coefficients = None if work.scale == 1.0 else _guide_coefficients(
                work.photo, work_alpha, settings.guide_radius, settings.guide_epsilon)
            for rows, cols in blocks(full_band):
                if coefficients is None:
                    values = work_alpha[rows, cols]
                else:
                    sampled = sample_at(coefficients, rows, cols, size).numpy()
                    pixels = photo[rows, cols].astype(np.float32) / 255.0
                    values = (sampled[:3].T * pixels).sum(1) + sampled[3]
                values = (values - settings.alpha_low) / (settings.alpha_high - settings.alpha_low)
                # A degenerate solve (NaN) becomes background, never an undefined byte.
                values = np.nan_to_num(values, nan=0.0)
                alpha[rows, cols] = np.round(np.clip(values, 0.0, 1.0) * 255.0).astype(np.uint8)
        if timings is not None:
            timings["refine"] = round((time.perf_counter() - start) * 1000, 2)
    if not want_colours:
        return alpha, photo
    return alpha, decontaminate(photo, alpha, settings)


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
    photo.setflags(write=False)
    cutout_edge(photo, logits, False)
