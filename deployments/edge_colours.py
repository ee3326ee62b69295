"""The subject's colour on a soft edge. Where alpha is neither 0 nor 255 the photo's pixel mixes subject and old
background; ``decontaminate`` replaces it by an estimate of the subject's colour (Germer et al. 2020, "Fast
multi-level foreground estimation"), so that a cut-out on white or any colour has no halo. Alpha is never
changed. Estimation runs on a working copy of at most ``colour_megapixels``; at full size only the soft pixels
are touched."""

from __future__ import annotations

import math

import cv2
import numpy as np
import torch
import torch.nn.functional as F

from .edge_grid import blocks, downsample, sample_at
from .edge_settings import DEFAULT_SETTINGS, EdgeSettings


def colour_pair_system(alpha, weight):
    """Each pixel's subject and background colours (F, B) solve the 2x2 system
    [[a^2 + w, a (1 - a)], [a (1 - a), (1 - a)^2 + w]] [F, B] = [a I + w F', (1 - a) I + w B'], with I the
    photo's colour, F' and B' the neighbours' weighted colours and w their summed weights. Returns the matrix's
    entries and determinant (a00, a01, a11, det); numpy or torch alike."""
    a00, a11, a01 = alpha * alpha + weight, (1 - alpha) ** 2 + weight, alpha * (1 - alpha)
    return a00, a01, a11, a00 * a11 - a01 * a01


def _neighbours(x: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """The 4-neighbours of every pixel of (C, h, w), borders replicated: up, down, left, right."""
    p = F.pad(x[None], (1, 1, 1, 1), mode="replicate")[0]
    return p[..., :-2, 1:-1], p[..., 2:, 1:-1], p[..., 1:-1, :-2], p[..., 1:-1, 2:]


def _nearest(x: torch.Tensor, h: int, w: int) -> torch.Tensor:
    return F.interpolate(x[None], (h, w), mode="nearest")[0]


def _foreground_ml(image: torch.Tensor, alpha: torch.Tensor, iterations: int, regularization: float = 1e-5,
                   gradient_weight: float = 1.0) -> tuple[torch.Tensor, torch.Tensor]:
    """Germer et al. 2020, "Fast multi-level foreground estimation" (pymatting's ``estimate_foreground_ml``),
    in torch: subject (F) and background (B) colours that explain the photo (alpha F + (1 - alpha) B) and are
    smooth where alpha is, solved from 1x1 up to full size, each level started from the one below. Pixels are
    updated in red-black order (Gauss-Seidel, as pymatting's sequential loop, but vectorised).
    image (3, h, w) and alpha (h, w), float32 in [0, 1]; returns F, B (3, h, w)."""
    h0, w0 = alpha.shape
    fg_mask, bg_mask = alpha > 0.9, alpha < 0.1
    fg = (image[:, fg_mask].mean(1) if fg_mask.any() else image.mean((1, 2)))[:, None, None]
    bg = (image[:, bg_mask].mean(1) if bg_mask.any() else image.mean((1, 2)))[:, None, None]
    levels = max(1, math.ceil(math.log2(max(h0, w0))))
    for level in range(levels + 1):
        h, w = round(h0 ** (level / levels)), round(w0 ** (level / levels))
        img, a = _nearest(image, h, w), _nearest(alpha[None], h, w)
        fg, bg = _nearest(fg, h, w), _nearest(bg, h, w)
        weights = [regularization + gradient_weight * (a - n).abs() for n in _neighbours(a)]
        a00, a01, a11, det = colour_pair_system(a, sum(weights))
        b00, b01, b11 = a11 / det, -a01 / det, a00 / det  # the inverse, once for all the level's sweeps
        weighted_f, weighted_b = a * img, (1 - a) * img
        red = (torch.arange(h)[:, None] + torch.arange(w)[None]) % 2 == 0
        for _ in range(10 if h <= 32 and w <= 32 else iterations):  # pymatting: 10 sweeps up to 32 px, then 2
            for update in (red, ~red):
                r0 = weighted_f + sum(k * n for k, n in zip(weights, _neighbours(fg)))
                r1 = weighted_b + sum(k * n for k, n in zip(weights, _neighbours(bg)))
                fg = torch.where(update, (b00 * r0 + b01 * r1).clamp_(0.0, 1.0), fg)
                bg = torch.where(update, (b01 * r0 + b11 * r1).clamp_(0.0, 1.0), bg)
    return fg, bg


def decontaminate(photo: np.ndarray, alpha: np.ndarray, settings: EdgeSettings | None = None) -> np.ndarray:
    """The photo with its soft-edge pixels (0 < alpha < 255) replaced by the subject's estimated colour.

    Multi-level foreground estimation runs on a copy of at most ``colour_megapixels``; at full size each soft
    pixel solves the same two-colour system once more with its own colour and alpha, its neighbours' colours
    taken from the working-size estimate (so detail finer than the working size comes from the photo)."""
    settings = settings or DEFAULT_SETTINGS
    size = alpha.shape
    soft = (alpha > 0) & (alpha < 255)
    if not soft.any():
        return photo
    work = downsample(photo, settings.colour_megapixels)
    h, w = work.shape[:2]
    work_alpha = (alpha if (h, w) == size else cv2.resize(alpha, (w, h), interpolation=cv2.INTER_AREA))
    fg, bg = _foreground_ml(torch.from_numpy(work).permute(2, 0, 1),
                            torch.from_numpy(work_alpha.astype(np.float32) / 255.0), settings.colour_iterations)
    estimates = torch.cat([fg, bg])
    out = photo.copy()
    padded = np.pad(alpha, 1, mode="edge")
    for rows, cols in blocks(soft):
        sampled = sample_at(estimates, rows, cols, size).numpy().T
        a = alpha[rows, cols].astype(np.float32)[:, None] / 255.0
        # the full-size pixel's own neighbour weights (1e-5 + |alpha difference|, as in _foreground_ml)
        total = sum(np.abs(alpha[rows, cols].astype(np.float32) - padded[rows + 1 + dy, cols + 1 + dx])
                    for dy, dx in ((-1, 0), (1, 0), (0, -1), (0, 1)))[:, None] / 255.0 + 4e-5
        pixels = photo[rows, cols].astype(np.float32) / 255.0
        _, a01, a11, det = colour_pair_system(a, total)
        r0, r1 = a * pixels + total * sampled[:, :3], (1 - a) * pixels + total * sampled[:, 3:]
        estimate = np.clip((a11 * r0 - a01 * r1) / det, 0.0, 1.0)  # F by Cramer's rule
        out[rows, cols] = np.round(estimate * 255.0).astype(np.uint8)
    return out
