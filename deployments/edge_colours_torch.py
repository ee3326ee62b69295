"""Colour estimation in torch, for a Postprocess replica with a GPU: the same method as ``edge_colours.py``
(Germer et al. 2020's multi-level foreground estimation, then each soft pixel's two colours solved once more at
full size) with the same red-black order, written as whole-level tensor updates instead of numba's per-pixel
loops. It sweeps every pixel of a level (on a GPU that is cheaper than finding the band), which gives the soft
pixels the same colours (``tests/test_edge_colours_torch.py`` compares it with the numba path on the CPU)."""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

from .edge_colours import REGULARIZATION, GRADIENT_WEIGHT, working_copy
from .edge_grid import sample_at
from .edge_settings import EdgeSettings

_SHIFTS = ((0, 1), (2, 1), (1, 0), (1, 2))  # up, down, left, right in a 1-pixel replicate-padded array


def _neighbours(x: torch.Tensor) -> list[torch.Tensor]:
    """The 4-neighbours of each pixel of (C, h, w), borders replicated, as views of one padded copy."""
    h, w = x.shape[-2:]
    padded = F.pad(x[None], (1, 1, 1, 1), mode="replicate")[0]
    return [padded[:, dy:dy + h, dx:dx + w] for dy, dx in _SHIFTS]


def _nearest(x: torch.Tensor, h: int, w: int) -> torch.Tensor:
    """(C, H, W) -> (C, h, w), index floor(i * H / h) as ``edge_colours._nearest``."""
    rows = torch.clamp((torch.arange(h, device=x.device) * (x.shape[1] / h)).long(), max=x.shape[1] - 1)
    cols = torch.clamp((torch.arange(w, device=x.device) * (x.shape[2] / w)).long(), max=x.shape[2] - 1)
    return x[:, rows][:, :, cols]


def foreground_ml(image: torch.Tensor, alpha8: torch.Tensor, iterations: int) -> torch.Tensor:
    """image (3, h, w) float32 in [0, 1], alpha8 (h, w) uint8 -> F and B stacked, (6, h, w)."""
    h0, w0 = alpha8.shape
    starts = []
    for sure in (alpha8 > 0.9 * 255, alpha8 < 0.1 * 255):
        starts.append(image[:, sure].mean(1) if sure.any() else image.reshape(3, -1).mean(1))
    colours = torch.cat(starts).reshape(6, 1, 1)
    alpha = alpha8.float()[None] / 255.0
    levels = max(1, math.ceil(math.log2(max(h0, w0))))
    for level in range(levels + 1):
        h, w = round(h0 ** (level / levels)), round(w0 ** (level / levels))
        colours = _nearest(colours, h, w).clone()
        img, a = _nearest(image, h, w), _nearest(alpha, h, w)
        weights = [REGULARIZATION + GRADIENT_WEIGHT * (a - n).abs() for n in _neighbours(a)]
        total = sum(weights)
        a01, a00, a11 = a * (1 - a), a * a + total, (1 - a) * (1 - a) + total
        det = a00 * a11 - a01 * a01
        yy, xx = torch.meshgrid(torch.arange(h, device=a.device), torch.arange(w, device=a.device), indexing="ij")
        for _ in range(10 if h <= 32 and w <= 32 else iterations):
            for parity in range(2):
                r = sum(k * n for k, n in zip(weights, _neighbours(colours)))
                r0, r1 = a * img + r[:3], (1 - a) * img + r[3:]
                update = torch.cat([(a11 * r0 - a01 * r1) / det, (a00 * r1 - a01 * r0) / det]).clamp_(0.0, 1.0)
                colours = torch.where(((yy + xx) % 2 == parity)[None], update, colours)
    return colours


def finish_soft_pixels(photo: torch.Tensor, alpha8: torch.Tensor, estimates: torch.Tensor) -> torch.Tensor:
    """The full-size step of ``edge_colour_kernels.finish_soft_pixels``: photo (H, W, 3) uint8, alpha8 (H, W)
    uint8, estimates (6, h, w); returns the photo with each soft pixel's subject colour (uint8)."""
    out = photo.clone()
    soft = (alpha8 > 0) & (alpha8 < 255)
    rows, cols = soft.nonzero(as_tuple=True)
    if rows.numel() == 0:
        return out
    sampled = sample_at(estimates, rows.cpu().numpy(), cols.cpu().numpy(), tuple(alpha8.shape))
    a8 = alpha8.float()
    neighbours = _neighbours(a8[None])
    total = (sum((a8[None] - n).abs() for n in neighbours)[0][rows, cols]) / 255.0 + 4e-5
    a = a8[rows, cols] / 255.0
    a11, a01 = (1 - a) * (1 - a) + total, a * (1 - a)
    k = total / ((a * a + total) * a11 - a01 * a01)
    pixels = photo[rows, cols].float().T / 255.0
    value = k * (a * pixels + a11 * sampled[:3] - a01 * sampled[3:])
    out[rows, cols] = (value.clamp(0.0, 1.0) * 255.0).round().to(torch.uint8).T
    return out


def decontaminate(photo: np.ndarray, alpha: np.ndarray, settings: EdgeSettings, device: torch.device) -> np.ndarray:
    """``edge_colours.decontaminate`` on ``device``: same working copy, same method."""
    if not np.count_nonzero((alpha > 0) & (alpha < 255)):
        return photo
    work, work_alpha = working_copy(photo, alpha, settings)
    image = torch.from_numpy(np.ascontiguousarray(work)).to(device).permute(2, 0, 1)
    estimates = foreground_ml(image, torch.from_numpy(np.ascontiguousarray(work_alpha)).to(device),
                              settings.colour_iterations)
    return finish_soft_pixels(torch.from_numpy(np.ascontiguousarray(photo)).to(device),
                              torch.from_numpy(np.ascontiguousarray(alpha)).to(device), estimates).cpu().numpy()
