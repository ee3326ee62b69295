"""Edge metrics against a known truth. Alphas are floats in [0, 1]; colours uint8.

- SAD: sum |alpha - truth| over the photo / 1000 (as matting papers report it).
- MSE: mean (alpha - truth)^2 over the photo, x 1e-3.
- gradient error: sum (|grad alpha| - |grad truth|)^2 with Gaussian-derivative filters (sigma 1.4), / 1000,
  as in the Composition-1k evaluation code.
- boundary IoU (Cheng et al. 2021): IoU of the masks at 0.5 within a band of 2% of the diagonal.
- composite error: the cut-out (its colours under its alpha) on a new plain background against the true
  subject on the same background; mean absolute error in 8-bit levels over the edge band and over the photo.
"""

from __future__ import annotations

import math

import cv2
import numpy as np


def sad(pred: np.ndarray, truth: np.ndarray) -> float:
    return float(np.abs(pred.astype(np.float64) - truth).sum() / 1000.0)


def mse(pred: np.ndarray, truth: np.ndarray) -> float:
    return float(((pred.astype(np.float64) - truth) ** 2).mean() * 1000.0)


def _gradient_magnitude(alpha: np.ndarray, sigma: float = 1.4) -> np.ndarray:
    smooth = cv2.GaussianBlur(alpha.astype(np.float32), (0, 0), sigma)
    return cv2.magnitude(cv2.Sobel(smooth, cv2.CV_32F, 1, 0, ksize=3), cv2.Sobel(smooth, cv2.CV_32F, 0, 1, ksize=3))


def gradient_error(pred: np.ndarray, truth: np.ndarray) -> float:
    diff = _gradient_magnitude(pred) - _gradient_magnitude(truth)
    return float((diff.astype(np.float64) ** 2).sum() / 1000.0)


def _boundary(mask: np.ndarray, dilation_ratio: float = 0.02) -> np.ndarray:
    """The band inside a mask's contour, as boundary-iou-api's mask_to_boundary takes it."""
    height, width = mask.shape
    d = max(1, int(round(dilation_ratio * math.hypot(height, width))))
    padded = cv2.copyMakeBorder(mask.astype(np.uint8), 1, 1, 1, 1, cv2.BORDER_CONSTANT, value=0)
    eroded = cv2.erode(padded, np.ones((3, 3), np.uint8), iterations=d)[1:-1, 1:-1]
    return mask & ~eroded.astype(bool)


def boundary_iou(pred: np.ndarray, truth: np.ndarray) -> float:
    a, b = _boundary(pred >= 0.5), _boundary(truth >= 0.5)
    union = (a | b).sum()
    return float((a & b).sum() / union) if union else 1.0


def edge_band(truth: np.ndarray, radius: int) -> np.ndarray:
    """Pixels within ``radius`` of the truth's edge (its soft pixels and its 0.5 contour): the region every
    method is scored on, whatever its own trimap."""
    soft = (truth > 0.01) & (truth < 0.99)
    mask = (truth >= 0.5).astype(np.uint8)
    contour = cv2.morphologyEx(mask, cv2.MORPH_GRADIENT, np.ones((3, 3), np.uint8)).astype(bool)
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * radius + 1, 2 * radius + 1))
    return cv2.dilate((soft | contour).astype(np.uint8), kernel).astype(bool)


def composite(colours: np.ndarray, alpha: np.ndarray, background: tuple[int, int, int]) -> np.ndarray:
    a = alpha.astype(np.float32)[..., None]
    return colours.astype(np.float32) * a + np.asarray(background, np.float32) * (1 - a)


def composite_error(colours: np.ndarray, alpha: np.ndarray, foreground: np.ndarray, truth: np.ndarray,
                    background: tuple[int, int, int], band: np.ndarray) -> tuple[float, float]:
    """(mean absolute error on the band, over the photo), 8-bit levels averaged over the three channels."""
    error = np.abs(composite(colours, alpha, background) - composite(foreground, truth, background)).mean(-1)
    return float(error[band].mean()), float(error.mean())
