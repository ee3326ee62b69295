"""Synthetic test photos (serve_app.samples) plus encode/decode helpers."""

from __future__ import annotations

import io

import numpy as np
from PIL import Image

from serve_app.samples import encode, jpeg, photo  # noqa: F401  (re-exported for the tests)


def png(width: int = 640, height: int = 480, seed: int = 0) -> bytes:
    return encode(photo(width, height, seed), "PNG")


def decode(data: bytes) -> Image.Image:
    image = Image.open(io.BytesIO(data))
    image.load()
    return image


def real_mask(alpha: np.ndarray) -> np.ndarray:
    """The mask (alpha >= 128) of an answer whose content a test asserts, first checked to mean something: real
    transparent (0) and opaque (255) pixels, and neither nothing nor everything kept (conftest.SHARP_ARGS gives
    such masks; seeded random weights give alpha 114..140 everywhere)."""
    alpha = np.asarray(alpha)
    assert (alpha == 0).any() and (alpha == 255).any(), f"no real 0 and 255 pixels: alpha {alpha.min()}..{alpha.max()}"
    mask = alpha >= 128
    assert 0 < mask.mean() < 1, f"trivial mask: {mask.mean():.3f} of the image kept"
    return mask


def crop_box(alpha: np.ndarray, margin: int) -> tuple[int, int, int, int]:
    """(x0, y0, x1, y1): the pixels with any alpha, plus ``margin``, within the image; checked to be smaller than
    the image (else a crop that does nothing would pass)."""
    height, width = alpha.shape
    rows, cols = np.flatnonzero(alpha.any(1)), np.flatnonzero(alpha.any(0))
    box = (max(0, cols[0] - margin), max(0, rows[0] - margin), min(width, cols[-1] + 1 + margin),
           min(height, rows[-1] + 1 + margin))
    assert box[2] - box[0] < width and box[3] - box[1] < height, f"the subject spans the image: {box}"
    return tuple(int(v) for v in box)
