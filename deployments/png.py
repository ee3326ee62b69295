"""PNG writers for cut-outs: fpng for speed (the default), and our own zlib-ng writer for smaller files.

``encode_png_fast`` hands RGB / RGBA pixels to fpng (Rich Geldreich's fpng through the ``fpng`` package): one
SIMD pass, about a tenth of zlib's CPU, files some 15-25% larger. It holds the GIL while it runs, which is why a
postprocess replica keeps its event loop on another thread (figures: docs/benchmarks/design-notes.md).

The zlib-ng writer (``encode_png``) is built for small files from large cut-outs: vectorised 'Up' filter,
parallel zlib-ng deflate.

Pillow's encoder runs one zlib stream on one core. A deflate stream can be cut at any byte with a sync flush, so the scanlines are split into one band per
core, each filtered and compressed on its own thread (numpy and zlib-ng release the GIL) and written as
consecutive IDAT chunks; the zlib header and the Adler-32 of the whole stream frame them. Any PNG decoder
reads the result.
"""

from __future__ import annotations

import struct
import zlib
from concurrent.futures import Executor

import numpy as np
from zlib_ng import zlib_ng

try:
    import fpng
except ImportError:  # a platform without its wheels: the zlib-ng writer does the work
    fpng = None

_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_COLOR_TYPE = {1: 0, 2: 4, 3: 2, 4: 6}  # channels -> PNG colour type (L, LA, RGB, RGBA)
_MIN_PART_BYTES = 64 << 10  # below this, a thread costs more than it saves


def _chunk(kind: bytes, payload: bytes | memoryview) -> bytes:
    return b"".join((struct.pack(">I", len(payload)), kind, payload,
                     struct.pack(">I", zlib_ng.crc32(payload, zlib_ng.crc32(kind)) & 0xFFFFFFFF)))


class Rows:
    """Scanlines of an (H, W) or (H, W, C) uint8 array, handed out band by band."""

    def __init__(self, pixels: np.ndarray):
        if pixels.dtype != np.uint8:
            raise ValueError("PNG rows are uint8")
        pixels = pixels[:, :, None] if pixels.ndim == 2 else pixels
        self.height, self.width, self.channels = pixels.shape
        self._rows = np.ascontiguousarray(pixels).reshape(self.height, -1)

    def band(self, start: int, stop: int) -> np.ndarray:
        return self._rows[start:stop]


class CutoutRows(Rows):
    """RGBA scanlines of a cut-out, composed band by band in the encoder's threads (no full-size RGBA copy).
    Colour under fully transparent pixels is zeroed: nothing hidden leaks and the PNG gets smaller."""

    def __init__(self, rgb: np.ndarray, alpha: np.ndarray):
        self.height, self.width, self.channels = rgb.shape[0], rgb.shape[1], 4
        self._rgb, self._alpha = rgb, alpha

    def band(self, start: int, stop: int) -> np.ndarray:
        alpha = self._alpha[start:stop]
        rgba = np.empty((stop - start, self.width, 4), dtype=np.uint8)
        np.multiply(self._rgb[start:stop], (alpha > 0)[:, :, None], out=rgba[:, :, :3])
        rgba[:, :, 3] = alpha
        return rgba.reshape(stop - start, -1)


def _encode_band(rows: Rows, start: int, stop: int, level: int) -> tuple[np.ndarray, bytes]:
    """Filters and deflates one band (in a worker thread: numpy and zlib-ng release the GIL). Filter 2, 'Up'
    (each byte minus the byte above), is cheap, vectorised, and compresses photos about as well as Pillow's
    adaptive filters; the image's first row has zeros above."""
    band = rows.band(max(start - 1, 0), stop)
    above, band = (band[0], band[1:]) if start else (None, band)
    raw = np.empty((band.shape[0], band.shape[1] + 1), dtype=np.uint8)
    raw[:, 0] = 2
    np.subtract(band[1:], band[:-1], out=raw[1:, 1:])
    if above is None:
        raw[0, 1:] = band[0]
    else:
        np.subtract(band[0], above, out=raw[0, 1:])
    # Raw deflate (the zlib frame is ours) with the run-length strategy: after the Up filter a photo's bytes
    # have few long-distance matches, and only looking for runs gives the default strategy's size in about 60%
    # of its time (docs/benchmarks/design-notes.md).
    compressor = zlib_ng.compressobj(level, zlib.DEFLATED, -15, 8, zlib_ng.Z_RLE)
    last = stop == rows.height
    return raw, compressor.compress(raw) + compressor.flush(zlib.Z_FINISH if last else zlib.Z_SYNC_FLUSH)


def encode_png(pixels: np.ndarray | Rows, level: int = 2, executor: Executor | None = None, parts: int = 1) -> bytes:
    """Encodes an (H, W) or (H, W, 1..4) uint8 array, or a Rows source, as an 8-bit PNG."""
    rows = pixels if isinstance(pixels, Rows) else Rows(pixels)
    height, width, channels = rows.height, rows.width, rows.channels
    raw_bytes = height * (width * channels + 1)
    parts = max(1, min(parts, raw_bytes // _MIN_PART_BYTES, height)) if executor is not None else 1
    edges = np.linspace(0, height, parts + 1).astype(int)
    jobs = [(rows, int(a), int(b), level) for a, b in zip(edges[:-1], edges[1:])]
    if len(jobs) > 1:
        encoded = list(executor.map(lambda job: _encode_band(*job), jobs))
    else:
        encoded = [_encode_band(*jobs[0])]

    checksum = 1  # Adler-32 of the whole filtered stream, chained over the bands
    for raw, _ in encoded:
        checksum = zlib_ng.adler32(raw, checksum)
    header = bytes((0x78, 0x01))  # zlib header: deflate, 32 KiB window; the level hint is informative only
    ihdr = struct.pack(">IIBBBBB", width, height, 8, _COLOR_TYPE[channels], 0, 0, 0)
    idat = [_chunk(b"IDAT", header + encoded[0][1])] + [_chunk(b"IDAT", deflated) for _, deflated in encoded[1:]]
    idat.append(_chunk(b"IDAT", struct.pack(">I", checksum & 0xFFFFFFFF)))
    return b"".join([_SIGNATURE, _chunk(b"IHDR", ihdr), *idat, _chunk(b"IEND", b"")])


def encode_png_fast(pixels: np.ndarray, executor: Executor | None = None, parts: int = 1) -> bytes:
    """An (H, W, 3 or 4) uint8 array as an 8-bit PNG with fpng; other shapes (and machines without fpng) get the
    zlib-ng writer."""
    if fpng is None or pixels.dtype != np.uint8 or pixels.ndim != 3 or pixels.shape[2] not in (3, 4):
        return encode_png(pixels, executor=executor, parts=parts)
    return fpng.from_ndarray(np.ascontiguousarray(pixels))
