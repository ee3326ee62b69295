"""An edge's two grids: a working copy of the photo within a megapixel budget, where matting and colour
estimation solve, and the full-size photo, where only the edge band's pixels are touched, a block at a time."""

from __future__ import annotations

import math

import cv2
import numpy as np
import torch
import torch.nn.functional as F

BLOCK_PIXELS = 1 << 20  # full-size work goes a million pixels at a time: a 25 MP band never needs GBs at once


def working_size(height: int, width: int, megapixels: float) -> tuple[int, int]:
    """(h, w) of a copy of at most ``megapixels`` with the photo's aspect (at least 8 pixels a side)."""
    scale = min(1.0, math.sqrt(megapixels * 1e6 / (height * width)))
    return max(8, round(height * scale)), max(8, round(width * scale))


def downsample(photo: np.ndarray, megapixels: float, size: tuple[int, int] | None = None) -> np.ndarray:
    """The photo at no more than ``megapixels`` (or at ``size``), area-averaged, float32 in [0, 1]."""
    h, w = size or working_size(*photo.shape[:2], megapixels)
    small = photo if (h, w) == photo.shape[:2] else cv2.resize(photo, (w, h), interpolation=cv2.INTER_AREA)
    return small.astype(np.float32) / 255.0


def sample_at(grid: torch.Tensor, rows: np.ndarray, cols: np.ndarray, size: tuple[int, int]) -> torch.Tensor:
    """Bilinear samples of a working-size (C, h, w) tensor at full-resolution pixel centres: (C, N)."""
    height, width = size
    x = (torch.from_numpy(cols).float() + 0.5) / width * 2 - 1
    y = (torch.from_numpy(rows).float() + 0.5) / height * 2 - 1
    points = torch.stack([x, y], -1)[None, None].to(grid.device)
    return F.grid_sample(grid[None].float(), points, mode="bilinear", padding_mode="border",
                         align_corners=False)[0, :, 0]


def blocks(mask: np.ndarray):
    """(rows, cols) of the mask's pixels, in blocks of whole image rows."""
    step = max(1, BLOCK_PIXELS // mask.shape[1])
    for top in range(0, mask.shape[0], step):
        rows, cols = np.nonzero(mask[top:top + step])
        if rows.size:
            yield rows + top, cols
