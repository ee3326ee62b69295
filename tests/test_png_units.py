"""The PNG writers (deployments/png.py) read back by a strict decoder of our own: every chunk's length and CRC, the
zlib stream's header, end and Adler-32 (``zlib.decompress`` checks them; Pillow forgives some), and the scanlines
unfiltered by the PNG specification (filters 0 and 2, the two our writer may use)."""

import struct
import zlib
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from deployments.png import CutoutRows, Rows, encode_png, encode_png_fast
from message_style import assert_readable

COLOR_TYPES = {0: 1, 4: 2, 2: 3, 6: 4}  # PNG colour type -> channels


def read_png(data: bytes) -> tuple[np.ndarray, list[bytes]]:
    """(pixels (H, W, C), the chunk types in order); raises on anything a strict reader would refuse."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    position, kinds, idat, header = 8, [], b"", None
    while position < len(data):
        (length,) = struct.unpack(">I", data[position:position + 4])
        kind, payload = data[position + 4:position + 8], data[position + 8:position + 8 + length]
        assert len(payload) == length, "chunk runs past the end"
        (crc,) = struct.unpack(">I", data[position + 8 + length:position + 12 + length])
        assert crc == zlib.crc32(kind + payload), f"bad CRC on {kind}"
        kinds.append(kind)
        if kind == b"IHDR":
            header = struct.unpack(">IIBBBBB", payload)
        elif kind == b"IDAT":
            idat += payload
        position += 12 + length
    assert kinds[0] == b"IHDR" and kinds[-1] == b"IEND" and position == len(data)
    assert data[-12:-8] == b"\x00\x00\x00\x00", "IEND carries no data"
    width, height, depth, color_type, compression, filtering, interlace = header
    assert (depth, compression, filtering, interlace) == (8, 0, 0, 0)
    channels = COLOR_TYPES[color_type]
    decompressor = zlib.decompressobj()
    raw = decompressor.decompress(idat)
    assert decompressor.eof and not decompressor.unused_data, "zlib stream not properly ended"
    stride = width * channels
    rows = np.frombuffer(raw, np.uint8).reshape(height, stride + 1)
    pixels = np.zeros((height, stride), np.uint8)
    for y in range(height):
        kind, line = rows[y, 0], rows[y, 1:]
        assert kind in (0, 2), f"filter {kind}"
        pixels[y] = line if kind == 0 or y == 0 else line + pixels[y - 1]  # uint8 wraps as PNG's Up does
    return pixels.reshape(height, width, channels), kinds


def pattern(shape, seed=0) -> np.ndarray:
    pixels = np.random.default_rng(seed).integers(0, 256, size=shape, dtype=np.uint8)
    pixels[: shape[0] // 2] //= 9
    return pixels


@pytest.mark.parametrize("shape", [(1, 1), (3, 5, 1), (17, 9, 2), (31, 23, 3), (40, 33, 4)])
def test_small_images_in_every_colour_type_read_back_strictly(shape):
    pixels = pattern(shape)
    decoded, kinds = read_png(encode_png(pixels))
    assert np.array_equal(decoded, pixels.reshape(shape[0], shape[1], -1))
    assert kinds == [b"IHDR", b"IDAT", b"IDAT", b"IEND"]  # the data, then the Adler-32 on its own


@pytest.mark.parametrize("parts", [2, 3, 5])
def test_bands_compressed_in_parallel_make_one_valid_stream(parts):
    pixels = pattern((601, 300, 4), seed=parts)  # 721 KB of rows: room for every part asked for
    with ThreadPoolExecutor(parts) as pool:
        data = encode_png(pixels, level=1, executor=pool, parts=parts)
    decoded, kinds = read_png(data)
    assert np.array_equal(decoded, pixels)
    assert kinds.count(b"IDAT") == parts + 1


def test_small_images_are_not_split_and_no_pool_means_one_band():
    pixels = pattern((50, 40, 3))
    with ThreadPoolExecutor(4) as pool:
        _, kinds = read_png(encode_png(pixels, executor=pool, parts=4))  # 6 KB: below one part's worth
    assert kinds.count(b"IDAT") == 2
    _, kinds = read_png(encode_png(pattern((600, 300, 4)), parts=4))
    assert kinds.count(b"IDAT") == 2
    with ThreadPoolExecutor(4) as pool:  # a pool alone does not split: parts says how many
        _, kinds = read_png(encode_png(pattern((600, 300, 4)), executor=pool))
    assert kinds.count(b"IDAT") == 2
    with ThreadPoolExecutor(4) as pool:  # never more parts than rows
        decoded, kinds = read_png(encode_png(pattern((3, 30000, 4)), executor=pool, parts=8))
    assert kinds.count(b"IDAT") == 4 and decoded.shape == (3, 30000, 4)


@pytest.mark.parametrize("level", [0, 1, 6, 9])
def test_every_compression_level_reads_back(level):
    pixels = pattern((64, 64, 3))
    decoded, _ = read_png(encode_png(pixels, level=level))
    assert np.array_equal(decoded, pixels)


def test_level_zero_stores_and_higher_levels_compress():
    pixels = np.zeros((200, 200, 3), np.uint8)
    assert len(encode_png(pixels, level=0)) > pixels.nbytes
    assert len(encode_png(pixels, level=1)) < pixels.nbytes // 50


def test_cutout_rows_zero_the_colour_under_full_transparency():
    rgb = pattern((90, 70, 3), seed=3)
    alpha = np.random.default_rng(4).integers(0, 256, size=(90, 70), dtype=np.uint8)
    alpha[:, :20] = 0
    alpha[:, 20:25] = 1
    with ThreadPoolExecutor(2) as pool:
        decoded, _ = read_png(encode_png(CutoutRows(rgb, alpha), level=1, executor=pool, parts=2))
    assert np.array_equal(decoded[..., 3], alpha)
    visible = alpha > 0
    assert np.array_equal(decoded[..., :3][visible], rgb[visible])
    assert not decoded[..., :3][~visible].any()


def test_rows_refuse_anything_but_uint8():
    with pytest.raises(ValueError, match="uint8") as info:
        Rows(np.zeros((4, 4), np.uint16))
    assert_readable(str(info.value))
    with pytest.raises(ValueError):
        encode_png(np.zeros((4, 4, 3), np.float32))


def test_rows_hand_out_the_scanlines_asked_for():
    pixels = pattern((6, 4, 3))
    rows = Rows(pixels[:, ::-1])  # a non-contiguous view
    assert (rows.height, rows.width, rows.channels) == (6, 4, 3)
    assert np.array_equal(rows.band(2, 5), pixels[2:5, ::-1].reshape(3, 12))


@pytest.mark.parametrize("shape", [(30, 20), (30, 20, 1), (30, 20, 2)])
def test_the_fast_writer_hands_shapes_fpng_cannot_write_to_the_zlib_writer(shape):
    pixels = pattern(shape)
    decoded, _ = read_png(encode_png_fast(pixels))
    assert np.array_equal(decoded, pixels.reshape(30, 20, -1))


@pytest.mark.parametrize("channels", [4, 3])
def test_the_fast_writer_is_fpng_where_it_is_installed(channels):
    """RGBA cut-outs and RGB ones (composed on a background) alike."""
    fpng = pytest.importorskip("fpng")
    pixels = pattern((30, 20, channels))
    assert encode_png_fast(pixels) == fpng.from_ndarray(np.ascontiguousarray(pixels))
    with ThreadPoolExecutor(2) as pool:
        flipped = pixels[:, ::-1]
        assert encode_png_fast(flipped, pool, parts=2) == fpng.from_ndarray(np.ascontiguousarray(flipped))
    with pytest.raises(ValueError):
        encode_png_fast(np.zeros((4, 4, 3), np.uint16))  # not uint8: the zlib writer refuses it


def test_the_fast_writers_fallback_still_compresses_in_parallel():
    """A mask (one channel, which fpng cannot write) of a large photo goes to the zlib writer with the pool and the
    part count it was given: several bands, one valid stream."""
    mask = pattern((601, 600))  # 361 KB of rows: room for three parts
    with ThreadPoolExecutor(3) as pool:
        decoded, kinds = read_png(encode_png_fast(mask, pool, parts=3))
    assert np.array_equal(decoded[..., 0], mask) and kinds.count(b"IDAT") == 4
