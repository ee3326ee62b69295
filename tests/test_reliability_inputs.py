"""Bad input, counted: every rejected request gets DESIGN.md's JSON error with the right 4xx code and a message,
never a 5xx. Over real HTTP against the contract application (Ray Serve, tiny model, seeded random weights),
plus the decoder alone for every Pillow mode and the formats that must never reach a decoder."""

from __future__ import annotations

import io
import json
import zlib
from collections import Counter

import httpx
import numpy as np
import pytest
from PIL import Image

from deployments.imaging import decode_image as decode
from deployments.settings import IngressLimits
from deployments.errors import ApiError

from images import jpeg, photo
from reliability import report

W, H = 96, 72
JPEG = jpeg(W, H, seed=5)
TRIED: Counter = Counter()


def save(image: Image.Image, fmt: str, **kw) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **kw)
    return buffer.getvalue()


def corrupt_png_crc() -> bytes:
    data = bytearray(save(Image.fromarray(photo(W, H)), "PNG"))
    at = data.index(b"IDAT") + 8
    data[at] ^= 0xFF  # a flipped byte in the image data: the chunk's CRC no longer matches
    return bytes(data)


def animated_gif() -> bytes:
    frames = [Image.new("RGB", (W, H), c) for c in ((200, 30, 30), (30, 30, 200), (30, 200, 30))]
    return save(frames[0], "GIF", save_all=True, append_images=frames[1:], duration=40, loop=0)


def multipage_tiff() -> bytes:
    pages = [Image.fromarray(photo(W, H, seed=s)) for s in range(3)]
    return save(pages[0], "TIFF", save_all=True, append_images=pages[1:])


def sixteen_bit_png() -> bytes:
    return save(Image.fromarray(np.linspace(0, 65535, W * H).astype(np.uint16).reshape(H, W)), "PNG")


def bomb_png() -> bytes:
    return save(Image.new("1", (20000, 20000)), "PNG")  # 400 MP in a ~50 KB file


def eps() -> bytes:
    return b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 10 10\nnewpath 0 0 moveto 10 10 lineto stroke\n%%EOF\n"


def file(data: bytes, name: str = "photo.jpg", kind: str = "image/jpeg"):
    return {"image": (name, data, kind)}


def image_case(data, status, code, points="[[10, 10]]", name="photo.jpg"):
    return {"files": file(data, name), "data": {"points": points}}, status, code


def prompt_case(status, code, **fields):
    return {"files": file(JPEG), "data": fields}, status, code


# (route, request, expected status, expected error code); None: 200 and an RGBA PNG of the input's size.
CASES = {
    # -- not an image, damaged, too large ----------------------------------------------------------------------
    "pdf renamed .jpg": ("/v1/cutout", *image_case(b"%PDF-1.7\n1 0 obj <<>> endobj\n", 415, "unsupported_media_type")),
    "random bytes": ("/v1/cutout", *image_case(bytes(range(256)) * 40, 415, "unsupported_media_type")),
    "svg text": ("/v1/cutout", *image_case(b"<svg xmlns='http://www.w3.org/2000/svg'/>", 415,
                                           "unsupported_media_type")),
    "eps (would run Ghostscript)": ("/v1/cutout", *image_case(eps(), 415, "unsupported_media_type")),
    "ico (format not accepted)": ("/v1/cutout", *image_case(save(Image.new("RGB", (32, 32)), "ICO"), 415,
                                                           "unsupported_media_type")),
    "empty file": ("/v1/cutout", *image_case(b"", 400, "empty_image")),
    "truncated jpeg": ("/v1/cutout", *image_case(JPEG[: len(JPEG) // 2], 400, "corrupt_image")),
    "truncated png": ("/v1/cutout", *image_case(save(Image.fromarray(photo(W, H)), "PNG")[:300], 400,
                                                "corrupt_image")),
    "png with a bad crc": ("/v1/cutout", *image_case(corrupt_png_crc(), 400, "corrupt_image")),
    "decompression bomb 20000x20000": ("/v1/cutout", *image_case(bomb_png(), 413, "too_many_pixels")),
    "upload of a pdf": ("/v1/images", {"files": file(b"%PDF-1.4 x")}, 415, "unsupported_media_type"),
    # -- what must work ----------------------------------------------------------------------------------------
    "animated gif (first frame)": ("/v1/cutout", *image_case(animated_gif(), None, None, name="a.gif")),
    "multi-page tiff (first page)": ("/v1/cutout", *image_case(multipage_tiff(), None, None, name="a.tif")),
    "16-bit grey png": ("/v1/cutout", *image_case(sixteen_bit_png(), None, None, name="a.png")),
    "cmyk jpeg": ("/v1/cutout", *image_case(save(Image.fromarray(photo(W, H)).convert("CMYK"), "JPEG"), None, None)),
    # -- wrong multipart shapes --------------------------------------------------------------------------------
    "json body instead of multipart": ("/v1/cutout", {"json": {"points": [[1, 1]]}}, 415, "unsupported_content_type"),
    "no body at all": ("/v1/cutout", {}, 415, "unsupported_content_type"),
    "two images": ("/v1/cutout", {"files": [("image", ("a.jpg", JPEG, "image/jpeg")),
                                            ("image", ("b.jpg", jpeg(W, H, seed=6), "image/jpeg"))],
                                  "data": {"points": "[[1, 1]]"}}, 400, "repeated_field"),
    "two points fields": ("/v1/cutout", {"files": file(JPEG), "data": {"points": ["[[1, 1]]", "[[2, 2]]"]}}, 400,
                          "repeated_field"),
    "text field where the file goes": ("/v1/cutout", {"data": {"image": "not a file", "points": "[[1, 1]]"}}, 400,
                                       "malformed_request"),
    "points sent as a file": ("/v1/cutout", {"files": {**file(JPEG), "points": ("p.json", b"[[1, 1]]", "text/plain")}},
                              400, "malformed_request"),
    "2 MB text field": ("/v1/cutout", {"files": file(JPEG), "data": {"points": "[" * 2_000_000}}, 413,
                        "field_too_large"),
    "multipart without boundary": ("/v1/cutout", {"content": b"--x\r\n\r\n", "headers": {
        "content-type": "multipart/form-data"}}, 400, "malformed_request"),
    "form without image": ("/v1/cutout", {"data": {"points": "[[1, 1]]"}}, 400, "missing_image"),
    "32 MB file (Content-Length)": ("/v1/cutout", {"files": file(b"\0" * 32_000_000), "data": {"points": "[[1, 1]]"}},
                                    413, "request_too_large"),
    "legacy route without points": ("/background-removal/remove", {"files": file(JPEG)}, 400, "malformed_request"),
    "url instead of an image (never fetched)": ("/v1/cutout", {"data": {"image_url": "http://127.0.0.1:9/x.jpg",
                                                                        "points": "[[1, 1]]"}}, 400, "unknown_field"),
    # -- prompts -----------------------------------------------------------------------------------------------
    "points not json": ("/v1/cutout", *prompt_case(400, "malformed_json", points="[[1, 2")),
    "points NaN": ("/v1/cutout", *prompt_case(422, "invalid_points", points="[[NaN, 2]]")),
    "points Infinity": ("/v1/cutout", *prompt_case(422, "invalid_points", points="[[1, -Infinity]]")),
    "points 1e999": ("/v1/cutout", *prompt_case(422, "invalid_points", points="[[1e999, 2]]")),
    "points strings": ("/v1/cutout", *prompt_case(422, "invalid_points", points='[["1", "2"]]')),
    "points booleans": ("/v1/cutout", *prompt_case(422, "invalid_points", points="[[true, false]]")),
    "points an object": ("/v1/cutout", *prompt_case(422, "invalid_points", points='{"x": 1, "y": 2}')),
    "points flat": ("/v1/cutout", *prompt_case(422, "invalid_points", points="[1, 2]")),
    "points 5000-digit number": ("/v1/cutout", *prompt_case(400, "malformed_json", points="[[" + "9" * 5000 + ", 1]]")),
    "points 400-digit integer": ("/v1/cutout", *prompt_case(422, "invalid_points", points="[[" + "9" * 400 + ", 1]]")),
    "box 400-digit integer": ("/v1/cutout", *prompt_case(422, "invalid_box", box="[0, 0, " + "9" * 400 + ", 10]")),
    "points nested 100000 deep": ("/v1/cutout", *prompt_case(400, "malformed_json", points="[" * 100_000)),
    "65 points (cap 64)": ("/v1/cutout", *prompt_case(422, "too_many_points", points=json.dumps([[1, 1]] * 65))),
    "point outside the image": ("/v1/cutout", *prompt_case(422, "point_outside_image", points=f"[[{W}, 1]]")),
    "negative point": ("/v1/cutout", *prompt_case(422, "point_outside_image", points="[[-1, 1]]")),
    "labels shorter than points": ("/v1/cutout", *prompt_case(422, "labels_length_mismatch", points="[[1, 1], [2, 2]]",
                                                              labels="[1]")),
    "labels not 0/1": ("/v1/cutout", *prompt_case(422, "invalid_labels", points="[[1, 1]]", labels="[7]")),
    "labels not json": ("/v1/cutout", *prompt_case(400, "malformed_json", points="[[1, 1]]", labels="[1,")),
    "only exclude points": ("/v1/cutout", *prompt_case(422, "no_keep_point", points="[[1, 1]]", labels="[0]")),
    "no prompt": ("/v1/cutout", *prompt_case(422, "no_prompt")),
    "box outside": ("/v1/cutout", *prompt_case(422, "box_outside_image", box=f"[0, 0, {W + 1}, 10]")),
    "box inverted": ("/v1/cutout", *prompt_case(422, "box_outside_image", box="[50, 50, 10, 10]")),
    "box of 3 numbers": ("/v1/cutout", *prompt_case(422, "invalid_box", box="[0, 0, 10]")),
    "box NaN": ("/v1/cutout", *prompt_case(422, "invalid_box", box="[0, 0, NaN, 10]")),
    # -- options and ids ---------------------------------------------------------------------------------------
    "format gif": ("/v1/cutout", *prompt_case(400, "malformed_request", points="[[1, 1]]", format="gif")),
    "quality 1000": ("/v1/cutout", *prompt_case(422, "invalid_quality", points="[[1, 1]]", quality="1000")),
    "feather nan": ("/v1/cutout", *prompt_case(422, "invalid_feather", points="[[1, 1]]", feather="nan")),
    "crop_margin -1": ("/v1/cutout", *prompt_case(422, "invalid_crop_margin", points="[[1, 1]]", crop_margin="-1")),
    "background not a colour": ("/v1/cutout", *prompt_case(422, "invalid_background", points="[[1, 1]]",
                                                           background="url(http://x)")),
    "jpeg without background": ("/v1/cutout", *prompt_case(422, "jpeg_needs_background", points="[[1, 1]]",
                                                           format="jpeg")),
    "mask_only maybe": ("/v1/cutout", *prompt_case(400, "malformed_request", points="[[1, 1]]", mask_only="maybe")),
    "unknown image_id": ("/v1/cutout", {"data": {"image_id": "0" * 32, "points": "[[1, 1]]"}}, 404, "unknown_image_id"),
    "100 KB image_id": ("/v1/cutout", {"data": {"image_id": "z" * 100_000, "points": "[[1, 1]]"}}, 400,
                        "invalid_image_id"),
    "900 KB hex image_id": ("/v1/cutout", {"data": {"image_id": "a" * 900_000, "points": "[[1, 1]]"}}, 400,
                            "invalid_image_id"),
    "webp 16384 px wide": ("/v1/cutout", {"files": file(save(Image.new("RGB", (16384, 4)), "PNG"), "wide.png"),
                                          "data": {"points": "[[1, 1]]", "format": "webp"}}, 422,
                           "too_large_for_format"),
}


@pytest.mark.e2e
@pytest.mark.parametrize("name", CASES)
def test_bad_input_gets_a_json_4xx(app_url, name):
    path, request, status, code = CASES[name]
    response = httpx.post(app_url + path, timeout=120, **request)
    TRIED[response.status_code] += 1
    assert response.status_code < 500, (name, response.status_code, response.text[:300])
    if status is None:
        assert response.status_code == 200, (name, response.text[:300])
        image = Image.open(io.BytesIO(response.content))
        assert image.mode == "RGBA" and image.size == (W, H)
        return
    assert response.status_code == status, (name, response.text[:300])
    body = response.json()
    assert body["error"]["code"] == code, (name, body)
    assert len(body["error"]["message"]) > 15 and len(body["error"]["message"]) < 2000, body


@pytest.mark.e2e
def test_chunked_upload_past_the_limit_is_cut_off_with_413(app_url):
    """No Content-Length: the guard counts the body as it streams in and answers 413 once past the limit."""
    sent = []

    def body():
        yield (b"--b\r\nContent-Disposition: form-data; name=\"points\"\r\n\r\n[[1, 1]]\r\n"
               b"--b\r\nContent-Disposition: form-data; name=\"image\"; filename=\"big.jpg\"\r\n"
               b"Content-Type: image/jpeg\r\n\r\n")
        for _ in range(40):  # 40 MB, over the 31 MB request limit
            sent.append(1)
            yield b"\0" * 1_000_000
        yield b"\r\n--b--\r\n"

    try:
        response = httpx.post(app_url + "/v1/cutout", content=body(), timeout=120,
                              headers={"content-type": "multipart/form-data; boundary=b"})
    except httpx.TransportError as exc:  # the server may close the connection once it has answered
        pytest.fail(f"no answer to a chunked upload past the limit: {exc!r}")
    TRIED[response.status_code] += 1
    assert "content-length" not in response.request.headers
    assert response.status_code == 413 and response.json()["error"]["code"] == "request_too_large", response.text
    report("inputs", f"chunked upload without Content-Length: 413 request_too_large (the client streamed "
                     f"{len(sent)} MB; the limit is 31 MB)")


@pytest.mark.e2e
def test_report_inputs(app_url):
    """Runs after the table above (file order): prints what was tried."""
    tried = sum(TRIED.values())
    assert tried >= len(CASES)
    report("inputs", f"{tried} bad or unusual inputs over HTTP; status codes {dict(sorted(TRIED.items()))}; "
                     f"5xx: {sum(n for s, n in TRIED.items() if s >= 500)}")


# -- the decoder alone: every Pillow mode, and refusals -------------------------------------------------------

MODES = ["1", "L", "LA", "La", "P", "PA", "RGB", "RGBA", "RGBa", "RGBX", "CMYK", "YCbCr", "LAB", "HSV", "I", "F",
         "I;16", "I;16L", "I;16B", "I;16N"]


@pytest.mark.parametrize("mode", MODES)
def test_every_pillow_mode_decodes_to_rgb8(mode):
    from deployments.imaging import _to_rgb8

    image = Image.new(mode, (24, 16))
    rgb, alpha = _to_rgb8(image)
    assert rgb.shape == (16, 24, 3) and rgb.dtype == np.uint8
    assert alpha is None or (alpha.shape == (16, 24) and alpha.dtype == np.uint8)
    for fmt in ("TIFF", "PNG", "WEBP"):  # and through a file wherever a format stores the mode
        try:
            data = save(image, fmt)
        except (OSError, ValueError, KeyError):
            continue
        decoded = decode(data, IngressLimits())
        assert decoded.rgb.shape == (16, 24, 3), (mode, fmt)


def test_multi_frame_files_give_their_first_frame():
    first = photo(W, H, seed=0)
    for data in (multipage_tiff(), animated_gif()):
        decoded = decode(data, IngressLimits())
        reference = np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))  # Pillow opens on frame 0
        assert np.array_equal(decoded.rgb, reference)
    assert np.array_equal(decode(multipage_tiff(), IngressLimits()).rgb, first)  # TIFF is lossless: page 0 itself
    assert decode(animated_gif(), IngressLimits()).rgb[0, 0].tolist() == [200, 30, 30]  # the red frame, not blue


def test_no_damaged_file_makes_the_decoder_raise_anything_but_a_4xx():
    """A few hundred damaged variants of real files (bytes flipped, cut, zeroed): each decodes or is refused
    with a 4xx ApiError; nothing else escapes."""
    rng = np.random.default_rng(0)
    sources = [JPEG, save(Image.fromarray(photo(W, H)), "PNG"), animated_gif(), multipage_tiff(),
               save(Image.fromarray(photo(W, H)), "WEBP"), save(Image.fromarray(photo(W, H)), "BMP")]
    outcomes = Counter()
    for source in sources:
        for _ in range(60):
            data = bytearray(source)
            kind = rng.integers(3)
            if kind == 0:  # flip bytes, often in the header
                for at in rng.integers(0, min(len(data), 64 if rng.random() < 0.5 else len(data)), size=4):
                    data[at] ^= int(rng.integers(1, 256))
            elif kind == 1:
                data = data[: int(rng.integers(1, len(data)))]
            else:
                start = int(rng.integers(0, len(data)))
                data[start:start + 32] = bytes(min(32, len(data) - start))
            try:
                decode(bytes(data), IngressLimits())
                outcomes["decoded"] += 1
            except ApiError as exc:
                assert 400 <= exc.status < 500
                outcomes[exc.status] += 1
    report("inputs", f"damaged files to the decoder: {sum(outcomes.values())} tried, outcomes {dict(outcomes)}")
    assert outcomes["decoded"] < sum(outcomes.values())


def test_zlib_bomb_inside_a_small_png_is_refused_from_its_header():
    # A 10000x10000 RGB PNG whose IDAT is a highly compressible stream: ~300 MB of pixels from ~300 KB.
    raw = zlib.compress(b"\0" * (10000 * (10000 * 3 + 1)), 9)
    with pytest.raises(ApiError) as info:
        decode(png_with(10000, 10000, raw), IngressLimits())
    assert info.value.status == 413


def png_with(width: int, height: int, idat: bytes) -> bytes:
    import struct

    def chunk(kind: bytes, payload: bytes) -> bytes:
        return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")
