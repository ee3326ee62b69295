"""The refined edge's guard: without the truth, tell when matting did not help, so that the answer is the plain
edge instead (``cutout_edge`` then answers as ``refine=False`` does, colours included). It fires when

- the solve did not converge (its relative residual above ``guard_residual``), or gave NaN;
- the matte moved SAM's outline farther than the band allows: the area where the refined mask (alpha >= 0.5)
  and SAM's disagree, over the outline's length, is more than ``guard_cells`` logit cells on average (SAM's
  outline is off by a cell or two in places, not all round);
- the matte's gradients do not follow the photo's: on the band, the cosine between |grad alpha| and
  |grad photo| is not at least ``guard_alignment`` above the plain edge's own (a matte that found the photo's
  edges agrees with them better than SAM's staircase does; on the tuning half the gain was 0.15 to 0.55).
"""

from __future__ import annotations

import cv2
import numpy as np

from .edge_settings import EdgeSettings
from .geometry import subject_box

LOW_RES = 256


def _gradient(image: np.ndarray) -> np.ndarray:
    return cv2.magnitude(cv2.Sobel(image, cv2.CV_32F, 1, 0, ksize=3), cv2.Sobel(image, cv2.CV_32F, 0, 1, ksize=3))


def alignment(photo: np.ndarray, alpha: np.ndarray, band: np.ndarray) -> float:
    """Cosine, over the band, between the magnitudes of alpha's gradient and the photo's (grey) gradient."""
    x0, y0, x1, y1 = subject_box(band, 2)
    box = (slice(y0, y1), slice(x0, x1))
    grey = cv2.cvtColor(np.ascontiguousarray(photo[box]), cv2.COLOR_RGB2GRAY).astype(np.float32) / 255.0
    g_alpha, g_photo = _gradient(np.ascontiguousarray(alpha[box], np.float32))[band[box]], _gradient(grey)[band[box]]
    norm = float(np.linalg.norm(g_alpha) * np.linalg.norm(g_photo))
    return float(g_alpha @ g_photo) / norm if norm > 0 else 0.0


def displacement(alpha: np.ndarray, inside: np.ndarray, band: np.ndarray, logits: np.ndarray) -> float:
    """Mean distance (logit cells) between the refined outline and SAM's: the area where they disagree, in
    cells, over the length of SAM's outline, in cells."""
    outline = _outline_cells(logits)
    flipped = int(np.count_nonzero(band & ((alpha >= 0.5) != inside)))
    cell_area = inside.size / LOW_RES ** 2
    return flipped / cell_area / max(outline, 1.0)


def soft_width(alpha: np.ndarray, band: np.ndarray, logits: np.ndarray) -> float:
    """How wide (logit cells, on average along SAM's outline) the matte's undecided part is: pixels of the band
    with 0.1 < alpha < 0.9. Hair makes it wider in places; a matte that cannot tell the subject from a textured
    background leaves much of the band undecided."""
    undecided = int(np.count_nonzero(band & (alpha > 0.1) & (alpha < 0.9)))
    return undecided / (alpha.size / LOW_RES ** 2) / max(_outline_cells(logits), 1.0)


def _outline_cells(logits: np.ndarray) -> float:
    contours, _ = cv2.findContours((logits > 0).view(np.uint8), cv2.RETR_LIST, cv2.CHAIN_APPROX_NONE)
    return sum(cv2.arcLength(c, True) for c in contours)


def verdict(photo: np.ndarray, alpha: np.ndarray, plain: np.ndarray, inside: np.ndarray, band: np.ndarray,
            logits: np.ndarray, info: dict, settings: EdgeSettings) -> str | None:
    """Why the refined ``alpha`` (float32, full size) should not be answered, or None when it may. ``plain`` is
    the plain edge's alpha (uint8). Fills ``info`` with the measured figures."""
    info["displacement_cells"] = round(displacement(alpha, inside, band, logits), 3)
    info["soft_cells"] = round(soft_width(alpha, band, logits), 3)
    refined_alignment = alignment(photo, alpha, band)
    plain_alignment = alignment(photo, plain.astype(np.float32) / 255.0, band)
    info["alignment"] = round(refined_alignment, 4)
    info["plain_alignment"] = round(plain_alignment, 4)
    if not np.isfinite(info.get("residual", 0.0)) or not np.isfinite(refined_alignment):
        return "nan"
    if info.get("residual", 0.0) > settings.guard_residual:
        return "not_converged"
    if info["displacement_cells"] > settings.guard_cells:
        return "moved"
    if refined_alignment < plain_alignment + settings.guard_alignment:
        return "gradients"
    return None
