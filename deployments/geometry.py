"""Where the subject is: the bounding box of a mask's non-zero pixels, for cropping and for the edge band."""

from __future__ import annotations

import numpy as np


def subject_box(mask: np.ndarray, margin: int) -> tuple[int, int, int, int] | None:
    """(x0, y0, x1, y1) of every non-zero pixel, grown by ``margin`` within the image; None for an empty mask."""
    rows = np.flatnonzero(mask.any(axis=1))
    if rows.size == 0:
        return None
    cols = np.flatnonzero(mask.any(axis=0))
    height, width = mask.shape
    return (max(0, int(cols[0]) - margin), max(0, int(rows[0]) - margin),
            min(width, int(cols[-1]) + 1 + margin), min(height, int(rows[-1]) + 1 + margin))
