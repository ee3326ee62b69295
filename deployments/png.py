"""A PNG writer built for large cut-outs: vectorised 'Up' filter, parallel zlib-ng deflate.

Pillow's encoder runs one zlib stream on one core (about 1 s for a 12 MP RGBA cut-out at level 1 on a 2-core
machine). A deflate stream can be cut at any byte with a sync flush, so the filtered scanlines are split into
one part per core, each compressed on its own thread (zlib-ng releases the GIL) and written as consecutive
IDAT chunks; the zlib header and the Adler-32 of the whole stream frame them. Any PNG decoder reads the result.
"""

from __future__ import annotations

import struct
import zlib
from concurrent.futures import Executor

import numpy as np
from zlib_ng import zlib_ng

_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_COLOR_TYPE = {1: 0, 2: 4, 3: 2, 4: 6}  # channels -> PNG colour type (L, LA, RGB, RGBA)
_MIN_PART_BYTES = 1 << 20  # below this, threads cost more than they save


def _chunk(kind: bytes, payload: bytes | memoryview) -> bytes:
    return b"".join((struct.pack(">I", len(payload)), kind, payload,
                     struct.pack(">I", zlib_ng.crc32(payload, zlib_ng.crc32(kind)) & 0xFFFFFFFF)))


def _filter_up(pixels: np.ndarray) -> np.ndarray:
    """Rows prefixed with filter byte 2 ('Up': each byte minus the byte above). Cheap and compresses
    photos about as well as Pillow's adaptive filters; the first row's 'above' is zero, so it stays as is."""
    height = pixels.shape[0]
    rows = pixels.reshape(height, -1)
    out = np.empty((height, rows.shape[1] + 1), dtype=np.uint8)
    out[:, 0] = 2
    out[0, 1:] = rows[0]
    np.subtract(rows[1:], rows[:-1], out=out[1:, 1:])
    return out.reshape(-1)


def _deflate_part(data: memoryview, level: int, last: bool) -> bytes:
    compressor = zlib_ng.compressobj(level, zlib.DEFLATED, -15)  # raw deflate: the zlib frame is ours
    return compressor.compress(data) + compressor.flush(zlib.Z_FINISH if last else zlib.Z_SYNC_FLUSH)


def encode_png(pixels: np.ndarray, level: int = 2, executor: Executor | None = None, parts: int = 1) -> bytes:
    """Encodes an (H, W), (H, W, 1..4) uint8 array as an 8-bit PNG."""
    if pixels.dtype != np.uint8:
        raise ValueError("encode_png takes uint8 pixels")
    if pixels.ndim == 2:
        pixels = pixels[:, :, None]
    height, width, channels = pixels.shape
    raw = _filter_up(np.ascontiguousarray(pixels))
    view = memoryview(raw)

    parts = max(1, min(parts, len(raw) // _MIN_PART_BYTES)) if executor is not None else 1
    step = -(-len(raw) // parts)
    bounds = [(i, min(i + step, len(raw))) for i in range(0, len(raw), step)]
    jobs = [(view[a:b], level, i == len(bounds) - 1) for i, (a, b) in enumerate(bounds)]
    if len(jobs) > 1:
        deflated = list(executor.map(lambda job: _deflate_part(*job), jobs))
    else:
        deflated = [_deflate_part(*jobs[0])]

    header = bytes((0x78, 0x01))  # zlib header: deflate, 32 KiB window; the level hint is informative only
    trailer = struct.pack(">I", zlib_ng.adler32(raw) & 0xFFFFFFFF)
    ihdr = struct.pack(">IIBBBBB", width, height, 8, _COLOR_TYPE[channels], 0, 0, 0)
    idat = [_chunk(b"IDAT", header + deflated[0])] + [_chunk(b"IDAT", d) for d in deflated[1:]]
    idat.append(_chunk(b"IDAT", trailer))
    return b"".join([_SIGNATURE, _chunk(b"IHDR", ihdr), *idat, _chunk(b"IEND", b"")])
