"""Decoding uploads at their edges (deployments/imaging.py): ids, the model copy's size, the limits at exactly their
value, every pixel mode to 8-bit RGB, and which failures are the file's (4xx) and which are ours."""

import hashlib
import hmac
import io

import numpy as np
import pytest
from PIL import Image

from deployments import imaging
from deployments.errors import ApiError
from deployments.imaging import check_image_id, decode_image, image_id_of, model_copy, scoped_image_id
from deployments.settings import IngressLimits
from message_style import assert_readable

from images import encode, photo


def as_file(image: Image.Image, fmt: str = "PNG", **params) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **params)
    return buffer.getvalue()


def refusal(data: bytes, limits: IngressLimits = IngressLimits()) -> ApiError:
    with pytest.raises(ApiError) as info:
        decode_image(data, limits)
    assert_readable(info.value.message)
    return info.value


# -- ids --------------------------------------------------------------------------------------------------------------

def test_an_image_id_is_32_hex_digits_of_the_contents():
    assert image_id_of(b"abc") == hashlib.blake2b(b"abc", digest_size=16).hexdigest()
    assert len(image_id_of(b"")) == 32 and image_id_of(b"a") != image_id_of(b"b")


def test_a_scoped_id_is_the_content_id_without_keys_and_a_keyed_hmac_with_them():
    content = image_id_of(b"photo")
    assert scoped_image_id(content, "", b"secret") == content
    scoped = scoped_image_id(content, "owner-digest", b"secret")
    expected = hmac.new(b"secret", f"owner-digest:{content}".encode(), hashlib.sha256).hexdigest()[:32]
    assert scoped == expected and check_image_id(scoped) == scoped
    assert scoped != scoped_image_id(content, "other-owner", b"secret")
    assert scoped != scoped_image_id(content, "owner-digest", b"other-secret")


@pytest.mark.parametrize("bad", ["", "0" * 31, "0" * 33, "G" * 32, "A" * 32, "0" * 31 + " ", "../" + "0" * 29])
def test_only_ids_this_service_gives_out_are_accepted(bad):
    with pytest.raises(ApiError) as info:
        check_image_id(bad)
    assert (info.value.status, info.value.code) == (400, "invalid_image_id")
    assert "`image_id`" in info.value.message and "POST /v1/images" in info.value.message
    assert_readable(info.value.message.replace(bad, ""))  # the echoed id may be anything


def test_a_long_bad_id_is_echoed_only_in_part():
    with pytest.raises(ApiError) as info:
        check_image_id("z" * 100)
    assert repr("z" * 40) + "..." in info.value.message and "z" * 41 not in info.value.message
    with pytest.raises(ApiError) as info:
        check_image_id("z" * 41)
    assert repr("z" * 40) + "..." in info.value.message
    with pytest.raises(ApiError) as info:
        check_image_id("z" * 40)
    assert repr("z" * 40) + " is" in info.value.message


# -- the model copy ---------------------------------------------------------------------------------------------------

def test_a_photo_at_or_below_the_model_side_is_its_own_model_copy():
    rgb = photo(1024, 700)
    assert model_copy(rgb, 1024) is rgb


@pytest.mark.parametrize("width, height, expected", [(2048, 1536, (1024, 768)), (1025, 10, (1024, 10)),
                                                      (300, 5000, (61, 1024)), (4000, 1, (1024, 1))])
def test_the_model_copy_has_its_long_side_at_the_model_side(width, height, expected):
    copy = model_copy(np.zeros((height, width, 3), np.uint8), 1024)
    assert (copy.shape[1], copy.shape[0]) == expected and copy.dtype == np.uint8


def test_the_model_copy_is_a_smooth_downscale():
    rgb = np.zeros((400, 800, 3), np.uint8)
    rgb[:, 400:] = 200
    copy = model_copy(rgb, 200)
    assert copy.shape == (100, 200, 3)
    assert (copy[:, :95] == 0).all() and (copy[:, 105:] == 200).all()


def test_the_model_copy_adds_no_halo_at_a_hard_edge():
    """Bilinear, not a sharpening filter (bicubic, Lanczos): across an edge the copy goes from one side's colour to
    the other's without over- or undershooting, so the encoder sees no bright or dark fringe the photo lacks."""
    rgb = np.full((400, 800, 3), 30, np.uint8)
    rgb[:, 400:] = 200
    row = model_copy(rgb, 200)[50, :, 0].astype(int)
    assert row.min() == 30 and row.max() == 200 and (np.diff(row) >= 0).all()


def test_a_decoded_upload_carries_its_id_size_and_model_copy():
    data = encode(photo(1500, 600), "PNG")
    decoded = decode_image(data, IngressLimits(model_side=500))
    assert decoded.image_id == image_id_of(data)
    assert (decoded.width, decoded.height) == (1500, 600) and decoded.model_rgb.shape == (200, 500, 3)
    assert decoded.alpha is None


# -- limits -----------------------------------------------------------------------------------------------------------

def test_an_upload_of_exactly_the_byte_limit_is_accepted():
    data = encode(photo(20, 10), "PNG")
    assert decode_image(data, IngressLimits(max_upload_bytes=len(data))).width == 20
    error = refusal(data, IngressLimits(max_upload_bytes=len(data) - 1))
    assert (error.status, error.code) == (413, "file_too_large")


def test_the_byte_limit_is_given_in_megabytes():
    error = refusal(b"x" * 3_000_001, IngressLimits(max_upload_bytes=3_000_000))
    assert "3 MB" in error.message


def test_an_image_of_exactly_the_pixel_limit_is_accepted():
    data = encode(photo(50, 40), "PNG")
    assert decode_image(data, IngressLimits(max_pixels=2000)).height == 40
    error = refusal(data, IngressLimits(max_pixels=1999))
    assert (error.status, error.code) == (413, "too_many_pixels")
    assert "50x40" in error.message


def test_an_empty_upload_is_a_400():
    error = refusal(b"")
    assert (error.status, error.code) == (400, "empty_image") and "`image`" in error.message


def test_not_an_image_names_the_formats_we_read():
    error = refusal(b"%PDF-1.4 not a photo")
    assert (error.status, error.code) == (415, "unsupported_media_type")
    assert all(fmt in error.message for fmt in ("JPEG", "PNG", "WebP", "GIF", "BMP", "TIFF"))


@pytest.mark.parametrize("fmt", ["EPS", "ICO", "PCX"])
def test_formats_outside_the_list_are_not_opened(fmt):
    image = Image.new("RGB", (16, 16), "red")
    try:
        data = as_file(image, fmt)
    except (OSError, KeyError):
        pytest.skip(f"Pillow cannot write {fmt} here")
    assert refusal(data).status == 415


# -- modes -------------------------------------------------------------------------------------------------------------

def test_rgba_over_white_rounds_exactly():
    rgba = np.zeros((1, 256, 4), np.uint8)
    rgba[0, :, 0] = 200
    rgba[0, :, 3] = np.arange(256)
    decoded = decode_image(as_file(Image.fromarray(rgba, "RGBA")), IngressLimits())
    a = np.arange(256)
    expected = np.floor((200 * a + 255 * (255 - a)) / 255 + 0.5).astype(np.uint8)
    assert np.array_equal(decoded.rgb[0, :, 0], expected)
    assert (decoded.rgb[0, :, 1] == 255 - a).all() and np.array_equal(decoded.alpha[0], a.astype(np.uint8))
    assert decoded.rgb.dtype == np.uint8 and decoded.alpha.dtype == np.uint8


def test_a_tall_rgba_image_is_flattened_band_by_band_without_seams():
    rng = np.random.default_rng(0)
    rgba = rng.integers(0, 256, (150, 7, 4), dtype=np.uint8)
    decoded = decode_image(as_file(Image.fromarray(rgba, "RGBA")), IngressLimits())
    a = rgba[..., 3:].astype(np.int64)
    expected = np.floor((rgba[..., :3] * a + 255 * (255 - a)) / 255 + 0.5).astype(np.uint8)
    assert np.array_equal(decoded.rgb, expected)


@pytest.mark.parametrize("mode", ["LA", "PA"])
def test_grey_and_palette_with_alpha_keep_their_alpha(mode):
    base = Image.new("LA", (8, 4), (90, 255))
    base.putpixel((0, 0), (90, 0))
    image = base if mode == "LA" else base.convert("RGBA").convert("PA") if hasattr(Image, "PA") else base
    try:
        data = as_file(image)
    except (OSError, ValueError):
        pytest.skip(f"Pillow cannot write {mode} as PNG")
    decoded = decode_image(data, IngressLimits())
    assert decoded.alpha is not None and decoded.alpha[0, 0] == 0 and decoded.alpha[1, 1] == 255
    assert tuple(decoded.rgb[0, 0]) == (255, 255, 255) and tuple(decoded.rgb[1, 1]) == (90, 90, 90)


def test_a_palette_image_without_transparency_has_no_alpha():
    image = Image.new("P", (6, 6), 3)
    image.putpalette([0, 0, 0, 10, 20, 30, 40, 50, 60, 70, 80, 90] + [0] * 756)
    decoded = decode_image(as_file(image), IngressLimits())
    assert decoded.alpha is None and tuple(decoded.rgb[0, 0]) == (70, 80, 90)


@pytest.mark.parametrize("mode, key, fill, seen", [
    ("L", 0, 90, (90, 90, 90)), ("RGB", (0, 0, 0), (200, 100, 50), (200, 100, 50)), ("1", 0, 1, (255, 255, 255)),
])
def test_a_colour_keys_transparency_is_kept_as_a_palettes_is(mode, key, fill, seen):
    """PNG's tRNS chunk can make one grey or RGB value transparent (optimisers write it for an RGBA image whose alpha
    is only on or off): those pixels are transparent, white for SAM, and the rest opaque, as in a palette image."""
    image = Image.new(mode, (4, 3), fill)
    image.putpixel((0, 0), key)
    decoded = decode_image(as_file(image, transparency=key), IngressLimits())
    assert decoded.alpha is not None and decoded.alpha[0, 0] == 0 and (decoded.alpha.ravel()[1:] == 255).all()
    assert tuple(decoded.rgb[0, 0]) == (255, 255, 255) and tuple(decoded.rgb[1, 1]) == seen


@pytest.mark.parametrize("values, expected", [
    ([0, 255], [0, 255]),  # 8 bits held in 32: as they are
    ([0, 256, 65535], [0, 1, 255]),  # 16 bits: the top byte
    ([0, 1 << 20, (1 << 21) - 1], [0, 128, 255]),  # wider still: the top 8 of its bits
    ([0, 1, 256], [0, 0, 1]),  # just past 8 bits: read as 16
    ([0, 65536], [0, 128]),  # just past 16 bits: read as 17
    ([-5, 65535], [0, 255]),  # below zero: black
])
def test_integer_grey_of_any_depth_keeps_its_top_bits(values, expected):
    image = Image.fromarray(np.array([values], np.int32), "I")
    decoded = decode_image(as_file(image, "TIFF"), IngressLimits())
    assert decoded.rgb[0, :, 0].tolist() == expected and (decoded.rgb[..., 0] == decoded.rgb[..., 2]).all()
    assert decoded.rgb.shape == (1, len(values), 3)
    assert decoded.rgb.dtype == np.uint8


@pytest.mark.parametrize("values, expected", [
    ([0.0, 0.5, 1.0], [0, 128, 255]),  # 0..1
    ([0.0, 127.5, 255.0], [0, 128, 255]),  # 0..255
    ([0.0, 500.0, 1000.0], [0, 128, 255]),  # larger: its own maximum
    ([float("nan"), float("inf"), 1.0], [0, 0, 255]),
    ([float("-inf"), 1.0], [0, 255]),
    ([0.0, 0.6, 1.0], [0, 153, 255]),
    ([0.0, 1.5], [0, 2]),  # past 1: read as 0..255
    ([0.0, 100.0], [0, 100]),
    ([-5.0, 255.0], [0, 255]),  # below zero: black
])
def test_float_grey_is_scaled_by_its_range(values, expected):
    image = Image.fromarray(np.array([values], np.float32), "F")
    decoded = decode_image(as_file(image, "TIFF"), IngressLimits())
    assert decoded.rgb[0, :, 0].tolist() == expected and decoded.rgb.dtype == np.uint8


# -- whose fault a failure is ----------------------------------------------------------------------------------------

@pytest.mark.parametrize("exc", [OSError("broken data stream"), SyntaxError("bad header"), ValueError("bad size"),
                                 EOFError(), __import__("struct").error("unpack"), __import__("zlib").error("inflate")])
def test_a_decoder_error_is_the_files_fault_a_400_that_says_why(monkeypatch, exc):
    monkeypatch.setattr("deployments.imaging._to_rgb8", lambda image: (_ for _ in ()).throw(exc))
    error = refusal(encode(photo(8, 8), "PNG"))
    assert (error.status, error.code) == (400, "corrupt_image")
    assert f"({str(exc) or type(exc).__name__})" in error.message and "upload again" in error.message


def test_the_decoders_reason_is_cut_at_200_characters(monkeypatch):
    monkeypatch.setattr("deployments.imaging._to_rgb8", lambda image: (_ for _ in ()).throw(ValueError("y" * 500)))
    message = refusal(encode(photo(8, 8), "PNG")).message
    assert "y" * 200 in message and "y" * 201 not in message


@pytest.mark.parametrize("exc", [MemoryError(), RuntimeError("a bug of ours"), KeyError("x")])
def test_other_failures_while_decoding_are_ours_and_pass_through(monkeypatch, exc):
    monkeypatch.setattr("deployments.imaging._to_rgb8", lambda image: (_ for _ in ()).throw(exc))
    with pytest.raises(type(exc)):
        decode_image(encode(photo(8, 8), "PNG"), IngressLimits())


def test_opening_blames_the_file_only_for_decoder_errors(monkeypatch):
    data = encode(photo(8, 8), "PNG")
    for exc in (OSError("cannot identify"), SyntaxError("not a PNG"), ValueError("bad mode")):
        monkeypatch.setattr(Image, "open", lambda *a, exc=exc, **k: (_ for _ in ()).throw(exc))
        assert refusal(data).status == 415
    for exc in (MemoryError(), RuntimeError("ours")):
        monkeypatch.setattr(Image, "open", lambda *a, exc=exc, **k: (_ for _ in ()).throw(exc))
        with pytest.raises(type(exc)):
            decode_image(data, IngressLimits())


@pytest.mark.parametrize("bomb", [Image.DecompressionBombError("too big"), Image.DecompressionBombWarning("big")])
def test_pillows_bomb_check_is_a_413_with_our_limit(monkeypatch, bomb):
    monkeypatch.setattr(Image, "open", lambda *a, **k: (_ for _ in ()).throw(bomb))
    error = refusal(encode(photo(8, 8), "PNG"), IngressLimits(max_pixels=12_000_000))
    assert (error.status, error.code) == (413, "too_many_pixels") and "12 megapixels" in error.message


def test_pillows_bomb_warning_is_raised_not_just_printed():
    """A header that claims more pixels than Pillow's MAX_IMAGE_PIXELS (200 MP) but under twice it: Pillow only warns;
    we refuse it before decoding, whatever our own limit says."""
    import struct
    import zlib

    def chunk(kind, payload):
        return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))

    header = struct.pack(">IIBBBBB", 20_000, 12_000, 8, 0, 0, 0, 0)  # 240 MP of grey
    data = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0")) + chunk(b"IEND", b"")
    error = refusal(data, IngressLimits(max_pixels=10 ** 9))
    assert (error.status, error.code) == (413, "too_many_pixels")


def test_a_warning_while_opening_is_no_refusal():
    """Pillow warns about a PNG whose animation header is broken (an acTL chunk of no frames) and reads its still
    image: only the decompression-bomb warning refuses a file, any other stays a warning."""
    import struct
    import zlib

    def chunk(kind, payload):
        return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))

    pixels = photo(12, 8)
    still = encode(pixels, "PNG")
    ihdr_end = 8 + 12 + 13  # the signature, then IHDR: length, type and CRC around 13 bytes of header
    data = still[:ihdr_end] + chunk(b"acTL", struct.pack(">II", 0, 0)) + still[ihdr_end:]
    with pytest.warns(UserWarning, match="APNG"):
        decoded = decode_image(data, IngressLimits())
    assert np.array_equal(decoded.rgb, pixels)


@pytest.mark.parametrize("orientation, turn", [(1, lambda a: a), (2, lambda a: a[:, ::-1]), (3, lambda a: a[::-1, ::-1]),
                                               (6, lambda a: np.rot90(a, -1)), (8, lambda a: np.rot90(a, 1))])
def test_exif_orientation_is_applied(orientation, turn):
    pixels = np.zeros((4, 6, 3), np.uint8)
    pixels[0, 0] = 255  # one white corner
    image = Image.fromarray(pixels)
    exif = Image.Exif()
    exif[0x0112] = orientation
    decoded = decode_image(as_file(image, "PNG", exif=exif.tobytes()), IngressLimits())
    assert np.array_equal(decoded.rgb, turn(pixels))


# Pillow's rarer modes, as a decoder hands them over (PSD, TIFF and PNG readers make them): each becomes 8-bit RGB, and
# an alpha it carries is kept.


def _two_tone(mode: str, size=(4, 3)) -> Image.Image:
    """A ``mode`` image whose first pixel is transparent (where the mode has alpha) and the rest opaque."""
    image = Image.new("RGBA", size, (200, 100, 50, 255))
    image.putpixel((0, 0), (0, 0, 0, 0))
    if mode == "La":  # Pillow converts nothing to La: its bytes are LA's, the grey premultiplied (0 where alpha is)
        return Image.frombytes("La", size, image.convert("LA").tobytes())
    return image.convert(mode)


@pytest.mark.parametrize("mode", ["La", "LA", "PA", "RGBa", "RGBA"])
def test_modes_with_alpha_keep_it_and_give_three_channels(mode):
    rgb, alpha = imaging._to_rgb8(_two_tone(mode))
    assert rgb.shape == (3, 4, 3) and rgb.dtype == np.uint8
    assert alpha is not None and alpha[0, 0] == 0 and alpha[1, 1] == 255
    assert tuple(rgb[0, 0]) == (255, 255, 255)  # transparent: white for SAM


@pytest.mark.parametrize("mode", ["RGBA", "LA", "RGBa"])
def test_an_opaque_image_with_an_alpha_channel_has_no_alpha_and_three_channels(mode):
    image = Image.new("RGBA", (4, 3), (10, 20, 30, 255)).convert(mode)
    rgb, alpha = imaging._to_rgb8(image)
    assert alpha is None and rgb.shape == (3, 4, 3)


@pytest.mark.parametrize("mode", ["I;16", "I;16L", "I;16B", "I;16N"])
def test_sixteen_bit_grey_of_every_byte_order_is_scaled_not_clipped(mode):
    values = np.array([[0, 256, 40000, 65535]], np.uint16)
    image = Image.frombytes(mode, (4, 1), values.astype(">u2" if mode == "I;16B" else "<u2").tobytes())
    rgb, alpha = imaging._to_rgb8(image)
    assert alpha is None and rgb[0, :, 0].tolist() == [0, 1, 156, 255] and (rgb[..., 0] == rgb[..., 2]).all()


def test_a_photo_far_wider_than_tall_keeps_one_row_in_the_model_copy():
    copy = model_copy(np.zeros((1, 3000, 3), np.uint8), 1024)
    assert copy.shape == (1, 1024, 3)
    assert model_copy(np.zeros((3000, 1, 3), np.uint8), 1024).shape == (1024, 1, 3)


def test_a_one_pixel_wide_or_tall_image_is_an_image():
    for size in ((1, 5), (5, 1), (1, 1)):
        decoded = decode_image(as_file(Image.new("RGB", size, (9, 9, 9))), IngressLimits())
        assert (decoded.width, decoded.height) == size


def test_the_pixel_limit_refusal_states_the_photos_and_the_limits_megapixels():
    error = refusal(as_file(Image.new("L", (6000, 5000))), IngressLimits(max_pixels=25_000_000))
    assert (error.status, error.code) == (413, "too_many_pixels")
    assert "6000x5000 (30.0 megapixels)" in error.message and "the limit is 25 megapixels" in error.message
