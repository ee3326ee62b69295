"""Ingress decoding: every common mode to 8-bit RGB, EXIF orientation, limits and refusals."""

import io

import numpy as np
import pytest
from PIL import Image

from deployments.imaging import decode_image as decode, image_id_of, model_copy
from deployments.settings import IngressLimits
from deployments.errors import ApiError

from images import encode, photo

LIMITS = IngressLimits()


def _save(image: Image.Image, fmt: str = "PNG", **kw) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **kw)
    return buffer.getvalue()


def test_rgb_jpeg_decodes_to_rgb_uint8():
    decoded = decode(encode(photo(320, 200), "JPEG"), LIMITS)
    assert decoded.rgb.shape == (200, 320, 3) and decoded.rgb.dtype == np.uint8
    assert decoded.model_rgb is decoded.rgb  # small images are their own model copy
    assert decoded.alpha is None


def test_grayscale_and_bilevel_become_gray_rgb():
    gray = Image.fromarray(np.tile(np.arange(256, dtype=np.uint8), (10, 1)), "L")
    decoded = decode(_save(gray), LIMITS)
    assert np.array_equal(decoded.rgb[..., 0], np.asarray(gray))
    assert np.array_equal(decoded.rgb[..., 0], decoded.rgb[..., 2])
    bilevel = decode(_save(gray.convert("1")), LIMITS)
    assert set(np.unique(bilevel.rgb)) <= {0, 255}


def test_sixteen_bit_gray_is_scaled_not_clipped():
    values = np.linspace(0, 65535, 64 * 64).astype(np.uint16).reshape(64, 64)
    decoded = decode(_save(Image.fromarray(values)), LIMITS)
    expected = (values >> 8).astype(np.uint8)
    assert np.array_equal(decoded.rgb[..., 0], expected)
    assert decoded.rgb.max() == 255 and decoded.rgb.min() == 0  # clipping would make most pixels 255


def test_float_tiff_is_scaled():
    values = np.linspace(0.0, 1.0, 32 * 32, dtype=np.float32).reshape(32, 32)
    decoded = decode(_save(Image.fromarray(values, "F"), "TIFF"), LIMITS)
    assert decoded.rgb.max() == 255 and decoded.rgb[0, 0, 0] == 0


def test_cmyk_jpeg_becomes_rgb():
    rgb = photo(64, 48)
    decoded = decode(_save(Image.fromarray(rgb).convert("CMYK"), "JPEG", quality=95), LIMITS)
    assert decoded.rgb.shape == (48, 64, 3)
    assert np.abs(decoded.rgb.astype(int) - rgb.astype(int)).mean() < 12


def test_rgba_keeps_alpha_and_shows_white_under_transparency():
    rgba = np.zeros((20, 30, 4), np.uint8)
    rgba[..., :3] = (10, 20, 30)
    rgba[:, 15:, 3] = 255  # left half transparent
    decoded = decode(_save(Image.fromarray(rgba, "RGBA")), LIMITS)
    assert decoded.alpha is not None and decoded.alpha[:, :15].max() == 0 and decoded.alpha[:, 15:].min() == 255
    assert (decoded.rgb[:, :15] == 255).all()  # transparent -> white for the model
    assert (decoded.rgb[:, 15:] == (10, 20, 30)).all()


def test_opaque_rgba_has_no_alpha():
    rgba = np.full((8, 8, 4), 200, np.uint8)
    rgba[..., 3] = 255
    assert decode(_save(Image.fromarray(rgba, "RGBA")), LIMITS).alpha is None


def test_palette_with_transparency():
    image = Image.fromarray(photo(40, 30)).convert("P", palette=Image.ADAPTIVE, colors=16)
    image.info["transparency"] = 0
    decoded = decode(_save(image, transparency=0), LIMITS)
    assert decoded.rgb.shape == (30, 40, 3)
    assert decoded.alpha is not None


def test_la_mode():
    la = Image.merge("LA", [Image.new("L", (10, 10), 90), Image.new("L", (10, 10), 128)])
    decoded = decode(_save(la), LIMITS)
    assert decoded.alpha is not None and decoded.alpha.max() == 128


def test_exif_rotated_jpeg_is_oriented():
    # Stored landscape 60x40 with orientation 6 (rotate 90 CW to display): the user sees 40x60 portrait.
    stored = np.zeros((40, 60, 3), np.uint8)
    stored[:, :10] = (255, 0, 0)  # red strip on the stored image's left edge
    exif = Image.Exif()
    exif[0x0112] = 6
    decoded = decode(_save(Image.fromarray(stored), "JPEG", exif=exif.tobytes(), quality=95), LIMITS)
    assert (decoded.width, decoded.height) == (40, 60)
    top_strip = decoded.rgb[:8, :, 0].mean()
    bottom = decoded.rgb[-8:, :, 0].mean()
    assert top_strip > 200 and bottom < 50  # the left edge is now at the top


def test_animated_gif_uses_first_frame():
    frames = [Image.new("RGB", (16, 16), color) for color in ((255, 0, 0), (0, 0, 255))]
    buffer = io.BytesIO()
    frames[0].save(buffer, format="GIF", save_all=True, append_images=frames[1:], duration=50)
    decoded = decode(buffer.getvalue(), LIMITS)
    assert decoded.rgb[0, 0, 0] > 200 and decoded.rgb[0, 0, 2] < 50


def test_model_copy_long_side_and_aspect():
    big = photo(2000, 1000)
    copy = model_copy(big, 1024)
    assert copy.shape == (512, 1024, 3)
    decoded = decode(encode(big, "PNG"), LIMITS)
    assert decoded.model_rgb.shape == (512, 1024, 3)


def test_image_id_is_a_content_hash():
    data = encode(photo(32, 32), "PNG")
    assert image_id_of(data) == image_id_of(bytes(data))
    assert image_id_of(data) != image_id_of(data + b"\0")
    assert decode(data, LIMITS).image_id == image_id_of(data)


@pytest.mark.parametrize("data, status, code", [
    (b"", 400, "empty_image"),
    (b"%PDF-1.7 this is a pdf renamed to .jpg", 415, "unsupported_media_type"),
    (b"\x00" * 100, 415, "unsupported_media_type"),
])
def test_refusals(data, status, code):
    with pytest.raises(ApiError) as info:
        decode(data, LIMITS)
    assert (info.value.status, info.value.code) == (status, code)


def test_truncated_file_is_a_clear_400():
    data = encode(photo(200, 200), "PNG")
    with pytest.raises(ApiError) as info:
        decode(data[: len(data) // 2], LIMITS)
    assert info.value.status == 400 and "truncated" in info.value.message


def test_byte_and_pixel_limits():
    data = encode(photo(300, 300), "PNG")
    with pytest.raises(ApiError) as info:
        decode(data, IngressLimits(max_upload_bytes=len(data) - 1))
    assert info.value.status == 413 and info.value.code == "file_too_large"
    with pytest.raises(ApiError) as info:
        decode(data, IngressLimits(max_pixels=300 * 300 - 1))
    assert info.value.status == 413 and info.value.code == "too_many_pixels"


def test_decompression_bomb_is_refused_before_decoding():
    # A 20000x20000 PNG header over a tiny body: refused from the header alone.
    bomb = Image.new("1", (20000, 20000))
    data = _save(bomb)
    assert len(data) < 100_000
    with pytest.raises(ApiError) as info:
        decode(data, LIMITS)
    assert info.value.status == 413
