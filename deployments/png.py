"""A PNG writer built for large cut-outs: vectorised 'Up' filter, parallel zlib-ng deflate.

Pillow's encoder runs one zlib stream on one core (about 1 s for a 12 MP RGBA cut-out at level 1 on a 2-core
machine). A deflate stream can be cut at any byte with a sync flush, so the scanlines are split into one band per
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

_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_COLOR_TYPE = {1: 0, 2: 4, 3: 2, 4: 6}  # channels -> PNG colour type (L, LA, RGB, RGBA)
_MIN_PART_BYTES = 128 << 10  # below this, a thread costs more than it saves


def _chunk(kind: bytes, payload: bytes | memoryview) -> bytes:
    return b"".join((struct.pack(">I", len(payload)), kind, payload,
                     struct.pack(">I", zlib_ng.crc32(payload, zlib_ng.crc32(kind)) & 0xFFFFFFFF)))


def _filter_up(rows: np.ndarray, above: np.ndarray | None) -> bytes:
    """Scanlines prefixed with filter byte 2 ('Up': each byte minus the byte above). Cheap, vectorised, and
    compresses photos about as well as Pillow's adaptive filters. The image's first row has zeros above."""
    out = np.empty((rows.shape[0], rows.shape[1] + 1), dtype=np.uint8)
    out[:, 0] = 2
    np.subtract(rows[1:], rows[:-1], out=out[1:, 1:])
    if above is None:
        out[0, 1:] = rows[0]
    else:
        np.subtract(rows[0], above, out=out[0, 1:])
    return out.tobytes()


def _encode_part(rows: np.ndarray, above: np.ndarray | None, level: int, last: bool) -> tuple[bytes, bytes]:
    """Filters and deflates one band of rows (in a worker thread: numpy and zlib-ng release the GIL)."""
    raw = _filter_up(rows, above)
    compressor = zlib_ng.compressobj(level, zlib.DEFLATED, -15)  # raw deflate: the zlib frame is ours
    return raw, compressor.compress(raw) + compressor.flush(zlib.Z_FINISH if last else zlib.Z_SYNC_FLUSH)


def encode_png(pixels: np.ndarray, level: int = 2, executor: Executor | None = None, parts: int = 1) -> bytes:
    """Encodes an (H, W), (H, W, 1..4) uint8 array as an 8-bit PNG."""
    if pixels.dtype != np.uint8:
        raise ValueError("encode_png takes uint8 pixels")
    if pixels.ndim == 2:
        pixels = pixels[:, :, None]
    height, width, channels = pixels.shape
    rows = np.ascontiguousarray(pixels).reshape(height, width * channels)

    parts = max(1, min(parts, rows.nbytes // _MIN_PART_BYTES, height)) if executor is not None else 1
    edges = np.linspace(0, height, parts + 1).astype(int)
    jobs = [(rows[a:b], rows[a - 1] if a else None, level, b == height) for a, b in zip(edges[:-1], edges[1:])]
    if len(jobs) > 1:
        encoded = list(executor.map(lambda job: _encode_part(*job), jobs))
    else:
        encoded = [_encode_part(*jobs[0])]

    checksum = 1  # Adler-32 of the whole filtered stream, chained over the parts
    for raw, _ in encoded:
        checksum = zlib_ng.adler32(raw, checksum)
    header = bytes((0x78, 0x01))  # zlib header: deflate, 32 KiB window; the level hint is informative only
    ihdr = struct.pack(">IIBBBBB", width, height, 8, _COLOR_TYPE[channels], 0, 0, 0)
    idat = [_chunk(b"IDAT", header + encoded[0][1])] + [_chunk(b"IDAT", deflated) for _, deflated in encoded[1:]]
    idat.append(_chunk(b"IDAT", struct.pack(">I", checksum & 0xFFFFFFFF)))
    return b"".join([_SIGNATURE, _chunk(b"IHDR", ihdr), *idat, _chunk(b"IEND", b"")])
