"""The refined edge (``cutout_edge(..., refine=True)``): closed-form matting of the band where SAM is unsure, at a
working resolution chosen for the band, not for the photo.

What costs is the unknown band, and its pixel count is known before anything is solved: the band is drawn in
logit cells, so counting its cells on SAM's 256x256 logits and multiplying by a cell's area gives it at full size.
The photo is worked on at the largest scale (at most 1) whose band holds at most ``band_pixels``; where that is
below full size, the matte is carried up through the photo's colours (the guided filter's local linear model) and
then, coarse to fine, the pixels it left uncertain are solved again at full size, started from it
(``fine_iterations``). ``edge_guard.py`` then judges the result without the truth and may answer the plain edge.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np
import torch
import torch.nn.functional as F

from .edge_grid import blocks, downsample, sample_at
from .edge_settings import EdgeSettings, torch_device as device
from .geometry import subject_box
from .matting import solve_alpha

LOW_RES = 256
ALPHA_PER_LOGIT = 32.0  # the plain edge's ramp (edges.py): the coarse alpha the solve starts from


def upsample(logits: np.ndarray, height: int, width: int) -> np.ndarray:
    low = torch.from_numpy(np.array(logits, dtype=np.float32))[None, None]
    return F.interpolate(low, (height, width), mode="bilinear", align_corners=False)[0, 0].numpy()


def unknown_band(logits: np.ndarray, cell: tuple[float, float], settings: EdgeSettings) -> np.ndarray:
    """The trimap's unknown region from SAM's uncertainty: |logit| < unknown_logit, dilated by band_cells."""
    unsure = (np.abs(logits) < settings.unknown_logit).astype(np.uint8)
    rx, ry = (max(1, round(settings.band_cells * c)) for c in cell)
    return cv2.dilate(unsure, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * rx + 1, 2 * ry + 1))).astype(bool)


def band_scale(logits: np.ndarray, size: tuple[int, int], settings: EdgeSettings) -> float:
    """The working scale (side over full side, at most 1) at which the band holds at most ``band_pixels``."""
    cells = int(np.count_nonzero(unknown_band(np.asarray(logits, np.float32), (1.0, 1.0), settings)))
    full = cells * size[0] * size[1] / LOW_RES ** 2
    return min(1.0, math.sqrt(settings.band_pixels / max(full, 1.0)))


@dataclass
class Working:
    """The photo at the working scale, with its logits and band."""

    photo: np.ndarray  # (h, w, 3) float32 in [0, 1]
    logits: np.ndarray  # (h, w) float32
    band: np.ndarray  # (h, w) bool
    scale: float  # working side / full side


def working(photo: np.ndarray, logits: np.ndarray, settings: EdgeSettings) -> Working:
    """The photo at the band's scale: estimated from the logits, then shrunk once more if the band drawn at that
    scale still holds more than the budget (the estimate rounds a cell's dilation)."""
    height, width = photo.shape[:2]
    scale = band_scale(logits, (height, width), settings)
    for _ in range(2):
        h, w = max(8, round(height * scale)), max(8, round(width * scale))
        work_logits = upsample(logits, h, w)
        band = unknown_band(work_logits, (w / LOW_RES, h / LOW_RES), settings)
        count = int(np.count_nonzero(band))
        if count <= settings.band_pixels * 1.05:
            break
        scale *= math.sqrt(settings.band_pixels / count)
    return Working(downsample(photo, 0.0, (h, w)), work_logits, band, h / height)


def solve(photo: np.ndarray, known: np.ndarray, start: np.ndarray, settings: EdgeSettings, iterations: int,
          info: dict) -> np.ndarray:
    """Closed-form alpha of the unknown pixels (torch, on the GPU when there is one); float32 (h, w)."""
    if settings.solver != "torch":
        import pymatting  # the comparison methods (numba, imported only when asked for)

        trimap = np.where(known, np.round(start), 0.5).astype(np.float64)
        kwargs = {"laplacian_kwargs": {"epsilon": settings.epsilon}} if settings.solver == "cf" else {}
        info.setdefault("residual", 0.0)
        return getattr(pymatting, f"estimate_alpha_{settings.solver}")(photo.astype(np.float64), trimap,
                                                                       **kwargs).astype(np.float32)
    on = device(settings)
    image = torch.from_numpy(np.ascontiguousarray(photo)).to(on).permute(2, 0, 1).contiguous()
    part: dict = {}
    alpha = solve_alpha(image, torch.from_numpy(known).to(on), torch.from_numpy(start).to(on), settings.epsilon,
                        iterations, info=part)
    info["residual"] = max(info.get("residual", 0.0), part["residual"])
    return alpha.cpu().numpy()


def matte(work: Working, settings: EdgeSettings, info: dict) -> np.ndarray | None:
    """Alpha at the working scale (float32), or None when there is nothing to solve."""
    band, inside = work.band, work.logits > 0
    if not band.any() or not (inside & ~band).any() or not (~inside & ~band).any():
        return None  # matting needs known foreground and background to start from
    x0, y0, x1, y1 = subject_box(band, 2)
    box = (slice(y0, y1), slice(x0, x1))
    start = np.clip(0.5 + work.logits * (ALPHA_PER_LOGIT / 255.0), 0.0, 1.0)
    start[~band] = inside[~band]
    alpha = start.copy()
    alpha[box] = solve(work.photo[box], ~band[box], start[box], settings, settings.iterations, info)
    return alpha


def guide_coefficients(photo: np.ndarray, alpha: np.ndarray, radius: int, epsilon: float,
                       on: torch.device) -> torch.Tensor:
    """He et al.'s guided filter (colour guide): per window, alpha ~ a . colour + b. Returns (4, h, w): a, b,
    averaged over the windows holding each pixel, ready to apply to a full-resolution colour."""
    image = torch.from_numpy(photo).to(on).permute(2, 0, 1)
    p = torch.from_numpy(alpha).to(on)[None]

    def box(x):
        return F.avg_pool2d(x[None], 2 * radius + 1, stride=1, padding=radius, count_include_pad=False)[0]

    mean_i, mean_p = box(image), box(p)
    cov_ip = box(image * p) - mean_i * mean_p
    var = torch.stack([box(image[i:i + 1] * image[j:j + 1])[0] - mean_i[i] * mean_i[j]
                       for i in range(3) for j in range(3)], -1).reshape(*alpha.shape, 3, 3)
    var = var + epsilon * torch.eye(3, device=on)
    a = torch.linalg.solve(var, cov_ip.permute(1, 2, 0)[..., None])[..., 0].permute(2, 0, 1)
    b = mean_p[0] - (a * mean_i).sum(0)
    return box(torch.cat([a, b[None]]))


def full_size(mask: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    return cv2.resize(mask.view(np.uint8), size[::-1], interpolation=cv2.INTER_NEAREST).view(bool)


def refined_matte(photo: np.ndarray, logits: np.ndarray, inside: np.ndarray, settings: EdgeSettings,
                  info: dict) -> tuple[np.ndarray, np.ndarray] | None:
    """The matte at full size, float32 in [0, 1] (SAM's mask, 0 or 1, off the band), and the band it was solved
    in; None when there is nothing to solve. ``info`` gets ``refine_mp`` (the working photo's megapixels),
    ``residual`` (the worst solve's relative residual) and ``fine_pixels`` (pixels solved again at full size)."""
    size = photo.shape[:2]
    work = working(photo, logits, settings)
    info["refine_mp"] = round(work.photo.shape[0] * work.photo.shape[1] / 1e6, 3)
    info["band_pixels"] = int(np.count_nonzero(work.band))
    work_alpha = matte(work, settings, info)
    if work_alpha is None:
        return None
    band = full_size(work.band, size)
    alpha = inside.astype(np.float32)
    if work.scale == 1.0 and work_alpha.shape == size:
        alpha[band] = work_alpha[band]
        info["fine_pixels"] = 0
        return alpha, band
    coefficients = guide_coefficients(work.photo, work_alpha, settings.guide_radius, settings.guide_epsilon,
                                      device(settings))
    for rows, cols in blocks(band):
        sampled = sample_at(coefficients, rows, cols, size).cpu().numpy()
        pixels = photo[rows, cols].astype(np.float32) / 255.0
        alpha[rows, cols] = np.clip((sampled[:3].T * pixels).sum(1) + sampled[3], 0.0, 1.0)
    info["fine_pixels"] = fine_pass(photo, alpha, band, settings, info) if settings.fine_iterations else 0
    return alpha, band


def fine_pass(photo: np.ndarray, alpha: np.ndarray, band: np.ndarray, settings: EdgeSettings, info: dict) -> int:
    """Coarse to fine: the band's pixels the carried-up matte left uncertain (and one pixel around) are solved
    again at full size, started from it, the rest held; in place. Returns how many pixels were solved."""
    low = settings.fine_threshold
    unsure = ((alpha > low) & (alpha < 1.0 - low)).view(np.uint8)
    free = cv2.dilate(unsure, np.ones((3, 3), np.uint8)).view(bool) & band
    count = int(np.count_nonzero(free))
    if not count:
        return 0
    x0, y0, x1, y1 = subject_box(free, 2)
    box = (slice(y0, y1), slice(x0, x1))
    crop = photo[box].astype(np.float32) / 255.0
    alpha[box] = solve(crop, ~free[box], alpha[box].copy(), settings, settings.fine_iterations, info)
    return count
