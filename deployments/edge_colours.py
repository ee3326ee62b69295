"""The subject's colour on a soft edge. Where alpha is neither 0 nor 255 the photo's pixel mixes subject and old
background; ``decontaminate`` replaces it by an estimate of the subject's colour (Germer et al. 2020, "Fast
multi-level foreground estimation"), so that a cut-out on white or any colour has no halo. Alpha is never
changed.

Cost follows the edge, not the photo: the estimate is solved on a working copy of at most ``colour_megapixels``,
on each level only within the sweeps' reach of a soft pixel (the others cannot change a soft pixel's colour), and
a mask soft almost everywhere (SAM unsure of the whole photo) shrinks the working copy until that band holds at
most ``colour_band_pixels``. At full size only the soft pixels are visited (``edge_colour_kernels.py``)."""

from __future__ import annotations

import functools
import math
import os
from concurrent.futures import ThreadPoolExecutor

import cv2
import numpy as np

from .edge_colour_kernels import finish_soft_pixels, sweep_level
from .edge_grid import downsample, working_size
from .edge_settings import DEFAULT_SETTINGS, EdgeSettings

FINISH_PIXELS_PER_THREAD = 1 << 17  # the full-size step is split across threads (numba releases the GIL) past this
_CORES = os.cpu_count() or 1
REGULARIZATION, GRADIENT_WEIGHT = np.float32(1e-5), np.float32(1.0)  # pymatting's estimate_foreground_ml defaults


def reach(sweeps: int) -> int:
    """How far (pixels) a level's red-black sweeps carry a change: two pixels per sweep, and one for safety."""
    return 2 * sweeps + 1


def near_edge(alpha8: np.ndarray, radius: int) -> np.ndarray:
    """The pixels within ``radius`` (Chebyshev) of a soft one (0 < alpha < 255), as bool."""
    soft = ((alpha8 > 0) & (alpha8 < 255)).view(np.uint8)
    return cv2.dilate(soft, cv2.getStructuringElement(cv2.MORPH_RECT, (2 * radius + 1,) * 2)).view(bool)


def sweep_band(alpha8: np.ndarray, sweeps: int) -> np.ndarray:
    """The pixels a level's sweeps visit for the soft pixels themselves: within reach of a soft pixel or of a cell
    a soft full-size pixel samples its colour from (one pixel around one)."""
    return near_edge(alpha8, reach(sweeps) + 1)


def _nearest_index(source: int, target: int) -> np.ndarray:
    """For each of ``target`` cells, the index of the ``source`` cell nearest-neighbour resampling takes."""
    return np.minimum((np.arange(target) * (source / target)).astype(np.intp), source - 1)


def _nearest(x: np.ndarray, h: int, w: int) -> np.ndarray:
    """Nearest-neighbour resampling of an (H, W, ...) array to (h, w)."""
    if x.shape[:2] == (h, w):
        return x
    return x.take(_nearest_index(x.shape[0], h), 0).take(_nearest_index(x.shape[1], w), 1)


def _sweep_regions(sizes: list[tuple[int, int]], alpha8: np.ndarray, sweeps: list[int]) -> list[np.ndarray]:
    """Per level, the pixels whose sweeps can change the result: at the last level those within reach of the
    soft pixels and the cells their colours are sampled from (one pixel around); at each level below, those within
    reach of the cells the next level starts from. Built finest first; sweeping only these gives the soft pixels
    the same colours as sweeping every pixel."""
    regions = [sweep_band(alpha8, sweeps[-1])]
    for index in range(len(sizes) - 1, 0, -1):
        (h, w), (below_h, below_w) = sizes[index], sizes[index - 1]
        rows, cols = np.nonzero(regions[-1])
        needed = np.zeros((below_h, below_w), bool)
        needed[_nearest_index(below_h, h)[rows], _nearest_index(below_w, w)[cols]] = True
        regions.append(cv2.dilate(needed.view(np.uint8), cv2.getStructuringElement(
            cv2.MORPH_RECT, (2 * reach(sweeps[index - 1]) + 1,) * 2)).view(bool))
    return regions[::-1]


def foreground_ml(image: np.ndarray, alpha8: np.ndarray, iterations: int, everywhere: bool = False) -> np.ndarray:
    """Germer et al. 2020 (pymatting's ``estimate_foreground_ml``): subject (F) and background (B) colours that
    explain the photo (alpha F + (1 - alpha) B) and are smooth where alpha is, solved from 1x1 up to full size,
    each level started from the one below; each level's sweeps run on the pixels within their reach of a soft one.
    (``everywhere``: every pixel, the method as published.) image (h, w, 3) float32 in [0, 1], alpha8 (h, w)
    uint8; returns F and B stacked, (h, w, 6) float32."""
    h0, w0 = alpha8.shape
    starts = []  # the mean colour of the sure subject (alpha > 0.9) and background (< 0.1); else the photo's
    for sure in (alpha8 > 0.9 * 255, alpha8 < 0.1 * 255):
        starts.append(cv2.mean(image, sure.view(np.uint8) if sure.any() else None)[:3])
    colours = np.asarray(starts, np.float32).reshape(1, 1, 6)
    levels = max(1, math.ceil(math.log2(max(h0, w0))))
    sizes = [(round(h0 ** (level / levels)), round(w0 ** (level / levels))) for level in range(levels + 1)]
    sweeps = [10 if h <= 32 and w <= 32 else iterations for h, w in sizes]  # pymatting: 10 up to 32 px, then 2
    regions = [np.ones(size, bool) for size in sizes] if everywhere else _sweep_regions(sizes, alpha8, sweeps)
    for (h, w), level_sweeps, region in zip(sizes, sweeps, regions):
        colours = np.ascontiguousarray(_nearest(colours, h, w))
        if region.any():
            sweep_level(np.ascontiguousarray(_nearest(image, h, w)),
                        _nearest(alpha8, h, w).astype(np.float32) / np.float32(255.0), colours, region,
                        level_sweeps, REGULARIZATION, GRADIENT_WEIGHT)
    return colours


def working_copy(photo: np.ndarray, alpha: np.ndarray, settings: EdgeSettings) -> tuple[np.ndarray, np.ndarray]:
    """The photo (float32 [0, 1]) and alpha (uint8) at the working size: at most ``colour_megapixels``, and
    smaller where the band within reach of the soft edge would hold more than ``colour_band_pixels``."""
    height, width = alpha.shape
    megapixels = settings.colour_megapixels
    for _ in range(4):  # a band's share of the photo barely changes with scale: one shrink is usually enough
        h, w = working_size(height, width, megapixels)
        work_alpha = alpha if (h, w) == alpha.shape else cv2.resize(alpha, (w, h), interpolation=cv2.INTER_AREA)
        band = int(np.count_nonzero(sweep_band(work_alpha, settings.colour_iterations)))
        if band <= settings.colour_band_pixels or h * w <= settings.colour_band_pixels:
            break
        megapixels = h * w / 1e6 * settings.colour_band_pixels / band
    return downsample(photo, megapixels, (h, w)), work_alpha


def decontaminate(photo: np.ndarray, alpha: np.ndarray, settings: EdgeSettings | None = None) -> np.ndarray:
    """The photo with its soft-edge pixels (0 < alpha < 255) replaced by the subject's estimated colour.

    Multi-level foreground estimation runs on the working copy (``working_copy``); at full size each soft pixel
    solves the same two-colour system once more with its own colour and alpha, its neighbours' colours taken
    from the working-size estimate (so detail finer than the working size comes from the photo)."""
    settings = settings or DEFAULT_SETTINGS
    soft = int(np.count_nonzero((alpha > 0) & (alpha < 255)))
    if not soft:
        return photo
    work, work_alpha = working_copy(photo, alpha, settings)
    estimates = foreground_ml(work, work_alpha, settings.colour_iterations)
    out = photo.copy()
    height = alpha.shape[0]
    parts = min(_CORES, max(1, soft // FINISH_PIXELS_PER_THREAD))
    edges = [height * i // parts for i in range(parts + 1)]
    list(_finish_pool().map(lambda i: finish_soft_pixels(photo, alpha, estimates, out, edges[i], edges[i + 1]),
                            range(parts)))
    return out


@functools.cache
def _finish_pool() -> ThreadPoolExecutor:
    return ThreadPoolExecutor(max_workers=_CORES, thread_name_prefix="colours")
