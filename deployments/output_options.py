"""Reading the output options of a cut-out request (form fields, handle keywords, the Accept header)."""

from __future__ import annotations

import re

from PIL import ImageColor

from . import errors

from .messages import MEDIA_TYPES_BY_FORMAT, OutputOptions

_FORMAT_ALIASES = {"png": "png", "webp": "webp", "jpeg": "jpeg", "jpg": "jpeg"}
# What the encoders can hold per side (libwebp: 16383 px, libjpeg: 65500 px); PNG has no practical limit.
MAX_SIDE = {"webp": 16383, "jpeg": 65500}


def format_from_accept(accept: str | None) -> str | None:
    """The first image type the client lists that we produce (q-values respected), if any."""
    if not accept:
        return None
    wanted = []
    for position, part in enumerate(accept.split(",")):
        media, _, params = part.strip().partition(";")
        q = 1.0
        if match := re.search(r"q=([0-9.]+)", params):
            try:
                q = float(match.group(1))
            except ValueError:
                q = 0.0
        wanted.append((-q, position, media.strip().lower()))
    for _, _, media in sorted(wanted):
        for fmt, media_type in MEDIA_TYPES_BY_FORMAT.items():
            if media == media_type:
                return fmt
    return None


def parse_color(value: str) -> tuple[int, int, int]:
    text = value.strip()
    if re.fullmatch(r"\d{1,3}\s*,\s*\d{1,3}\s*,\s*\d{1,3}", text):
        rgb = tuple(int(v) for v in text.split(","))
        if all(0 <= v <= 255 for v in rgb):
            return rgb  # type: ignore[return-value]
    else:
        try:
            return ImageColor.getrgb(text if not re.fullmatch(r"[0-9a-fA-F]{6}", text) else "#" + text)[:3]
        except ValueError:
            pass
    raise errors.invalid_option("invalid_background", f"background {value!r} is not a colour; send e.g. "
                                "'#ffffff', 'white' or '255,255,255'")


def parse_output_options(format: str | None = None, accept: str | None = None, mask_only: bool = False,
                         background: str | tuple | None = None, crop: bool = False, crop_margin: int = 0,
                         feather: float = 0.0, quality: int = 90, refine: bool = False,
                         preview: bool = False) -> OutputOptions:
    if preview:
        _check_preview(format, background, crop, feather, refine)
    if format:
        chosen = _FORMAT_ALIASES.get(format.strip().lower())
        if chosen is None:
            raise errors.invalid_option("invalid_format", f"format {format!r} is not supported; choose png, webp or jpeg")
    else:
        chosen = "png" if preview else format_from_accept(accept) or "png"
    color = None
    if background is not None and background != "":
        color = parse_color(background) if isinstance(background, str) else tuple(int(v) for v in background)
        if len(color) != 3 or not all(0 <= v <= 255 for v in color):
            raise errors.invalid_option("invalid_background", "background must be three values in 0..255")
    if chosen == "jpeg" and color is None and not mask_only:
        if not format:  # asked for by Accept only: fall back to a format that keeps transparency
            chosen = "png"
        else:
            raise errors.invalid_option("jpeg_needs_background", "JPEG has no transparency; add a `background` "
                                        "colour, or ask for png or webp")
    if not 0 <= crop_margin <= 10_000:
        raise errors.invalid_option("invalid_crop_margin", "crop_margin must be between 0 and 10000 pixels")
    if not 0 <= feather <= 100:
        raise errors.invalid_option("invalid_feather", "feather must be between 0 and 100 pixels")
    if not 1 <= quality <= 100:
        raise errors.invalid_option("invalid_quality", "quality must be between 1 and 100")
    return OutputOptions(format=chosen, mask_only=mask_only or preview, background=color, crop=crop,
                         crop_margin=int(crop_margin), feather=float(feather), quality=int(quality),
                         refine=bool(refine), preview=bool(preview))


def _check_preview(format, background, crop, feather, refine) -> None:
    """A preview is the plain mask at SAM's resolution, as a PNG: an option that changes the full-size answer
    would be ignored, so it is refused instead."""
    if format and _FORMAT_ALIASES.get(format.strip().lower()) != "png":
        raise errors.invalid_option("preview_is_png", "a preview is a PNG mask; drop `format` or ask for png")
    asked = [name for name, value in (("background", background not in (None, "")), ("crop", crop),
                                      ("feather", feather), ("refine", refine)) if value]
    if asked:
        verb = "applies" if len(asked) == 1 else "apply"
        raise errors.invalid_option("preview_options", f"a preview is the plain mask at SAM's resolution; "
                                    f"{', '.join(asked)} {verb} to the full-size answer: drop `preview` or them")


def check_output_size(options: OutputOptions, width: int, height: int) -> None:
    """Refuses a format that cannot hold a photo this large, before any work (checked on the whole photo, since a
    crop's size is known only once the mask is)."""
    limit = MAX_SIDE.get(options.format)
    if limit is not None and max(width, height) > limit:
        raise errors.invalid_option("too_large_for_format", f"{options.format} output is limited to {limit} pixels "
                                    f"per side and this photo is {width}x{height}; ask for format=png")
