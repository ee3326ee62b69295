"""Turning an upload into pixels: checked, EXIF-oriented, any mode to 8-bit RGB, plus the model-size copy."""

from __future__ import annotations

import hashlib
import hmac
import io
import re
import struct
import warnings
import zlib
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageOps

from . import errors
from .settings import IngressLimits

# Our own pixel limit is checked from the header before any decoding; Pillow's bomb check stays on as a
# second line (it raises at twice MAX_IMAGE_PIXELS), set just above the largest limit anyone configures.
Image.MAX_IMAGE_PIXELS = 200_000_000

SUPPORTED = "JPEG, PNG, WebP, GIF, BMP or TIFF"
# Only these decoders ever see a client's bytes (JPEG includes MPO, the multi-picture JPEG of many cameras).
# Pillow's other readers (EPS runs Ghostscript; PSD, FLI, SGI, ... each with a history of bugs) stay unused.
FORMATS = ("JPEG", "PNG", "WEBP", "GIF", "BMP", "TIFF")
# What Pillow's readers raise for a file that is not what it says or is damaged (UnidentifiedImageError and the
# decoders' "truncated" / "broken data stream" errors are OSErrors; malformed headers raise SyntaxError, ValueError,
# EOFError, struct.error or zlib.error): the client's fault, a 4xx. Anything else is ours and passes through: the
# ingress and the batch job answer MemoryError with a 503 worth a retry and any other exception with a logged 500.
DECODER_ERRORS = (OSError, SyntaxError, ValueError, EOFError, struct.error, zlib.error)


@dataclass(frozen=True)
class DecodedImage:
    image_id: str
    rgb: np.ndarray  # (H, W, 3) uint8, EXIF orientation applied
    model_rgb: np.ndarray  # long side <= limits.model_side; the same array when the image is small
    alpha: np.ndarray | None  # (H, W) uint8 when the upload had transparency

    @property
    def width(self) -> int:
        return self.rgb.shape[1]

    @property
    def height(self) -> int:
        return self.rgb.shape[0]


def image_id_of(data: bytes) -> str:
    """Content hash of the upload: the same file always maps to the same cached embedding."""
    return hashlib.blake2b(data, digest_size=16).hexdigest()


IMAGE_ID = re.compile(r"[0-9a-f]{32}")  # what image_id_of (and a key-scoped id) looks like


def scoped_image_id(content_id: str, owner: str, secret: bytes) -> str:
    """The id a client sees. Without API keys (no owner) the content hash itself; with keys a keyed HMAC of the key's
    digest and the content hash under the server's secret: another key can neither compute nor use it, and the same
    photo gets a different id per key."""
    if not owner:
        return content_id
    return hmac.new(secret, f"{owner}:{content_id}".encode(), hashlib.sha256).hexdigest()[:32]


def check_image_id(image_id: str) -> str:
    if not IMAGE_ID.fullmatch(image_id):
        raise errors.bad_request("invalid_image_id", f"image_id {image_id[:40]!r}{'...' if len(image_id) > 40 else ''} "
                                 "is not an id this service gives out (32 hex digits); use the `image_id` that "
                                 "POST /v1/images returned, or send the photo as `image`")
    return image_id


def decode_image(data: bytes, limits: IngressLimits) -> DecodedImage:
    """Checks the upload's bytes and pixels against ``limits`` (the one place that does): a reader need hand over no
    more than ``max_upload_bytes + 1`` bytes."""
    if not data:
        raise errors.bad_request("empty_image", "the `image` field is empty; attach a photo file")
    if len(data) > limits.max_upload_bytes:
        raise errors.too_large("file_too_large", f"the image is larger than the {limits.max_upload_bytes / 1e6:.0f} "
                               "MB limit; send a smaller or more compressed file")
    image = _open_checked(data, limits)
    try:
        with _blamed(_corrupt):
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # Pillow warns about odd EXIF; the pixels are what matter
                image.seek(0)  # animated or multi-page files: the first frame
                image.load()
                image = ImageOps.exif_transpose(image, in_place=False) if _needs_transpose(image) else image
            rgb, alpha = _to_rgb8(image)
    finally:
        image.close()  # Pillow's copy of the pixels goes now, before the model copy is made
    return DecodedImage(image_id_of(data), rgb, model_copy(rgb, limits.model_side), alpha)


def _corrupt(exc: BaseException) -> errors.ApiError:
    reason = str(exc)[:200] or type(exc).__name__
    return errors.bad_request("corrupt_image", f"the image could not be decoded ({reason}); the file is truncated or "
                              "damaged. Re-export it and upload again.")


def _not_an_image(_: BaseException) -> errors.ApiError:
    return errors.not_an_image(f"the file is not an image we can read; send a {SUPPORTED} file")


@contextmanager
def _blamed(bad_file):
    """Decoder errors become ``bad_file(exc)``, a 4xx; everything else (MemoryError, a bug) passes through."""
    try:
        yield
    except DECODER_ERRORS as exc:
        raise bad_file(exc) from exc


def _open_checked(data: bytes, limits: IngressLimits) -> Image.Image:
    try:
        with _blamed(_not_an_image), warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data), formats=FORMATS)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise errors.too_large("too_many_pixels", f"the image is too large to decode safely ({exc}); the limit is "
                               f"{limits.max_pixels / 1e6:.0f} megapixels. Downscale it first.") from exc
    width, height = image.size
    if width < 1 or height < 1:
        raise errors.bad_request("corrupt_image", "the image has no pixels")
    if width * height > limits.max_pixels:
        raise errors.too_large("too_many_pixels", f"the image is {width}x{height} ({width * height / 1e6:.1f} "
                               f"megapixels); the limit is {limits.max_pixels / 1e6:.0f} megapixels. Downscale it.")
    return image


def _needs_transpose(image: Image.Image) -> bool:
    return image.getexif().get(0x0112, 1) not in (1, None)  # exif_transpose would copy even when upright


def _to_rgb8(image: Image.Image) -> tuple[np.ndarray, np.ndarray | None]:
    """Any Pillow mode to (RGB uint8, alpha uint8 or None) without clipping high bit depths."""
    mode = image.mode
    if mode == "RGB" and "transparency" not in image.info:
        return np.asarray(image), None
    if mode == "La":  # premultiplied; Pillow converts it only to LA
        image, mode = image.convert("LA"), "LA"
    if mode in ("I;16", "I;16L", "I;16B", "I;16N", "I", "F"):
        gray = _scale_to_uint8(np.asarray(image))
        return np.repeat(gray[:, :, None], 3, axis=2), None
    # an alpha channel, or a palette's or a colour key's transparency (PNG's tRNS for grey and RGB too)
    has_alpha = mode in ("RGBA", "LA", "PA", "RGBa", "La") or "transparency" in image.info
    if has_alpha:
        rgba = np.asarray(image if mode == "RGBA" else image.convert("RGBA"))
        alpha = np.ascontiguousarray(rgba[:, :, 3])
        if alpha.min() == 255:
            return np.ascontiguousarray(rgba[:, :, :3]), None
        return _over_white(rgba), alpha
    return np.asarray(image.convert("RGB")), None


def _over_white(rgba: np.ndarray, rows: int = 64) -> np.ndarray:
    """SAM sees transparent areas as white, not as whatever colour hides under alpha 0. The result is 8-bit; the
    16-bit products are made a band of rows at a time, so a 25 MP upload never gets a 16-bit copy of itself.
    round((c * a + 255 * (255 - a)) / 255) == 255 - a + round(c * a / 255), the division done with shifts."""
    rgb = np.empty(rgba.shape[:2] + (3,), np.uint8)
    for top in range(0, rgba.shape[0], rows):
        band = rgba[top:top + rows]
        alpha = band[:, :, 3:4]
        product = band[:, :, :3] * alpha.astype(np.uint16)
        product += 128
        product += product >> 8
        product >>= 8
        np.add(product, 255 - alpha, out=rgb[top:top + rows], casting="unsafe")
    return rgb


def _scale_to_uint8(values: np.ndarray) -> np.ndarray:
    if values.dtype == np.uint8:
        return values
    if np.issubdtype(values.dtype, np.floating):
        finite = np.nan_to_num(values.astype(np.float32), nan=0.0, posinf=0.0, neginf=0.0)
        top = 1.0 if finite.max(initial=0.0) <= 1.0 else 255.0 if finite.max() <= 255.0 else float(finite.max())
        return np.clip(finite / top * 255.0 + 0.5, 0, 255).astype(np.uint8)
    top = int(values.max(initial=0))
    if top <= 255:
        return values.astype(np.uint8)
    bits = 16 if top <= 65535 else max(int(top).bit_length(), 16)
    return (values.astype(np.int64) >> (bits - 8)).clip(0, 255).astype(np.uint8)


def model_copy(rgb: np.ndarray, model_side: int) -> np.ndarray:
    """The image the encoder sees: SAM resizes to 1024x1024 anyway, so never ship more than that."""
    height, width = rgb.shape[:2]
    if max(height, width) <= model_side:
        return rgb
    scale = model_side / max(height, width)
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    return np.asarray(Image.fromarray(rgb).resize(size, Image.BILINEAR, reducing_gap=3.0))
