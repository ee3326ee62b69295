"""Deterministic synthetic photos (a disc on a textured background) for tests and benchmarks."""

from __future__ import annotations

import io

import numpy as np
from PIL import Image


def photo(width: int = 640, height: int = 480, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    background = np.stack([np.sin(xx / 23.0) * 40 + 90, np.cos(yy / 17.0) * 40 + 110, (xx + yy) % 64 + 60], -1)
    cx, cy, r = width * (0.3 + 0.4 * rng.random()), height * (0.3 + 0.4 * rng.random()), min(width, height) / 4
    disc = ((xx - cx) ** 2 + (yy - cy) ** 2) < r ** 2
    image = np.where(disc[..., None], np.array([220, 60, 40], np.float32), background)
    image += rng.normal(0, 4, size=image.shape)
    return image.clip(0, 255).astype(np.uint8)


def encode(array: np.ndarray, fmt: str = "JPEG", **save_args) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format=fmt, **save_args)
    return buffer.getvalue()


def jpeg(width: int = 640, height: int = 480, seed: int = 0, quality: int = 90) -> bytes:
    return encode(photo(width, height, seed), "JPEG", quality=quality)
