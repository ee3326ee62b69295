"""Edge refinement: sharpen SAM's coarse alpha with the full-resolution photo.

SAM's mask is 256x256 logits upsampled to the photo's size, so on a 2000-pixel photo each logit covers an
8x8 block: edges come out as soft staircases and thin strands (hair, fur) blur into a faint haze. Both
refiners here look only at a band around the coarse edge, where the photo itself says where the edge is;
inside and outside that band the coarse alpha is kept as it is.

- ``guided``: He et al.'s guided filter (OpenCV's ``ximgproc.guidedFilter``, colour guide). In each window the
  alpha becomes a linear function of the photo's colour, which moves the edge onto the colour edge and
  brings thin strands back where they differ in colour from what lies behind them. Fast (box filters).
- ``closed_form``: Levin et al.'s closed-form matting (``pymatting``) with a trimap made from the coarse
  alpha. Solves a sparse linear system over the band: slower, measured as the quality reference.

``python -m serve_app.edge_quality`` measures both against plain upsampling on a synthetic set.
"""

from __future__ import annotations

import cv2
import numpy as np

METHODS = ("guided", "closed_form")


def upsampling_factor(height: int, width: int, low_res: int = 256) -> float:
    """Photo pixels per low-res logit along the longer side (SAM squashes every photo to 256x256)."""
    return max(height, width) / low_res


def _disk(radius: int) -> np.ndarray:
    return cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * radius + 1, 2 * radius + 1))


def uncertain_band(alpha: np.ndarray, radius: int, low: float = 0.02, high: float = 0.98) -> np.ndarray:
    """Pixels within ``radius`` of the coarse alpha's soft ramp (where it is neither clearly in nor out)."""
    ramp = ((alpha > low) & (alpha < high)).astype(np.uint8)
    return cv2.dilate(ramp, _disk(radius)).astype(bool)


def _bounding_slices(mask: np.ndarray, margin: int) -> tuple[slice, slice] | None:
    rows = np.flatnonzero(mask.any(axis=1))
    if rows.size == 0:
        return None
    cols = np.flatnonzero(mask.any(axis=0))
    h, w = mask.shape
    return (slice(max(0, rows[0] - margin), min(h, rows[-1] + 1 + margin)),
            slice(max(0, cols[0] - margin), min(w, cols[-1] + 1 + margin)))


def guided(rgb: np.ndarray, alpha: np.ndarray, radius: int | None = None, eps: float = 1e-2,
           band_radius: int | None = None) -> np.ndarray:
    """Guided-filter refinement of a float alpha in [0, 1]; returns float32 in [0, 1]."""
    factor = upsampling_factor(*alpha.shape)
    # The window spans the coarse ramp (about one logit, ``factor`` pixels) to see both sides of it. Radius,
    # eps and band were the best of a grid on a tuning set (seeds 100-102), which the report does not use.
    radius = radius or max(1, round(factor))
    band_radius = band_radius or max(1, round(factor / 2))
    band = uncertain_band(alpha, band_radius)
    out = alpha.astype(np.float32, copy=True)
    box = _bounding_slices(band, radius + 1)
    if box is None:  # an all-in or all-out mask has no edge to refine
        return out
    guide = rgb[box].astype(np.float32) / 255.0
    filtered = cv2.ximgproc.guidedFilter(guide, out[box], radius, eps)
    inside = band[box]
    out[box][inside] = np.clip(filtered[inside], 0.0, 1.0)
    return out


def closed_form(rgb: np.ndarray, alpha: np.ndarray, band_radius: int | None = None) -> np.ndarray:
    """Closed-form matting over a trimap whose unknown region is the coarse edge band."""
    from pymatting import estimate_alpha_cf  # heavy import (numba); only this method needs it

    # Half a logit's width around the coarse ramp: wide enough to hold the strands, narrow enough that the
    # known regions pin the solution (wider bands let busy backgrounds leak in; tuned on seeds 100-102).
    band_radius = band_radius or max(1, round(upsampling_factor(*alpha.shape) / 2))
    band = uncertain_band(alpha, band_radius)
    out = alpha.astype(np.float32, copy=True)
    box = _bounding_slices(band, 4)
    if box is None:
        return out
    trimap = np.where(alpha[box] >= 0.5, 1.0, 0.0)
    trimap[band[box]] = 0.5
    if not ((trimap == 1.0).any() and (trimap == 0.0).any()):
        return out  # matting needs known foreground and background to start from
    solved = estimate_alpha_cf(rgb[box].astype(np.float64) / 255.0, trimap,
                               laplacian_kwargs={"epsilon": 1e-6}, cg_kwargs={"maxiter": 2000})
    inside = band[box]
    out[box][inside] = np.clip(solved[inside], 0.0, 1.0)
    return out


def refine_alpha(rgb: np.ndarray, alpha: np.ndarray, method: str = "closed_form") -> np.ndarray:
    """uint8 alpha in, uint8 alpha out, same shape; ``rgb`` is the full-resolution photo."""
    if method not in METHODS:
        raise ValueError(f"unknown refinement {method!r}; choose one of {', '.join(METHODS)}")
    refine = guided if method == "guided" else closed_form
    result = refine(rgb, alpha.astype(np.float32) / 255.0)
    return np.round(result * 255.0).astype(np.uint8)
