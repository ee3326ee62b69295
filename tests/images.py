"""Synthetic test photos (serve_app.samples) plus encode/decode helpers."""

from __future__ import annotations

import io

from PIL import Image

from serve_app.samples import encode, jpeg, photo  # noqa: F401  (re-exported for the tests)


def png(width: int = 640, height: int = 480, seed: int = 0) -> bytes:
    return encode(photo(width, height, seed), "PNG")


def decode(data: bytes) -> Image.Image:
    image = Image.open(io.BytesIO(data))
    image.load()
    return image
