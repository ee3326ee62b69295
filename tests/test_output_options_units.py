"""Output options at their edges: Accept negotiation, colours, the documented ranges, preview refusals and the
per-format size limits (deployments/output_options.py)."""

import pytest

from deployments.errors import ApiError
from deployments.output_options import check_output_size, format_from_accept, parse_color, parse_output_options
from message_style import assert_readable


def refusal(**kwargs) -> ApiError:
    with pytest.raises(ApiError) as info:
        parse_output_options(**kwargs)
    assert info.value.status == 422
    assert_readable(info.value.message)
    return info.value


@pytest.mark.parametrize("accept, expected", [
    ("image/webp, image/png", "webp"),  # equal q: the client's order decides
    ("image/png, image/webp", "png"),
    ("image/png;q=1, image/webp", "png"),  # no q means q=1
    ("image/png;q=0.9, image/webp", "webp"),
    ("image/webp;q=1..2, image/png;q=0.5", "png"),  # an unreadable q ranks last
    ("  IMAGE/JPEG ;q=0.8", "jpeg"),
    ("text/html;q=1, image/png;q=0.1", "png"),
    ("text/html, application/json", None),
    ("", None),
])
def test_accept_negotiation(accept, expected):
    assert format_from_accept(accept) == expected


@pytest.mark.parametrize("text, rgb", [
    ("255,255,255", (255, 255, 255)), ("0 , 0 ,0", (0, 0, 0)), (" 12,34,56 ", (12, 34, 56)),
    ("00FF00", (0, 255, 0)), ("#abc", (170, 187, 204)), ("#ff000080", (255, 0, 0)), (" Navy ", (0, 0, 128)),
])
def test_colour_spellings(text, rgb):
    assert parse_color(text) == rgb


@pytest.mark.parametrize("text", ["256,0,0", "1,2", "1,2,3,4", "#12345", "ff00zz", "transparent-ish"])
def test_not_a_colour(text):
    with pytest.raises(ApiError) as info:
        parse_color(text)
    assert (info.value.status, info.value.code) == (422, "invalid_background")
    assert repr(text) in info.value.message
    assert_readable(info.value.message)


def test_the_returned_options_carry_every_choice():
    options = parse_output_options(format=" WebP ", background=(1, 2, 3), crop=True, crop_margin=7.0, feather=2,
                                   quality=55.0, refine=1)
    assert (options.format, options.background, options.crop, options.crop_margin, options.feather, options.quality,
            options.refine, options.preview, options.mask_only) == ("webp", (1, 2, 3), True, 7, 2.0, 55, True, False,
                                                                     False)
    assert type(options.crop_margin) is int and type(options.feather) is float and type(options.quality) is int
    assert type(options.refine) is bool and type(options.preview) is bool


@pytest.mark.parametrize("alias, fmt", [("jpg", "jpeg"), ("JPEG", "jpeg"), (" png ", "png"), ("WEBP", "webp")])
def test_format_aliases(alias, fmt):
    assert parse_output_options(format=alias, background="white").format == fmt


def test_an_empty_background_means_none():
    assert parse_output_options(background="").background is None
    assert parse_output_options(background=None).background is None


@pytest.mark.parametrize("background", [(256, 0, 0), (0, -1, 0), (1, 2), (1, 2, 3, 4)])
def test_a_background_from_the_handle_api_is_three_values_in_range(background):
    assert refusal(background=background).code == "invalid_background"


def test_jpeg_keeps_its_format_with_a_background_or_for_a_mask():
    assert parse_output_options(accept="image/jpeg", background="black").format == "jpeg"
    options = parse_output_options(format="jpeg", mask_only=True)
    assert (options.format, options.mask_only) == ("jpeg", True)
    error = refusal(format="jpg")
    assert error.code == "jpeg_needs_background" and "`background`" in error.message


@pytest.mark.parametrize("name, good, bad, code", [
    ("crop_margin", (0, 10_000), (-1, 10_001), "invalid_crop_margin"),
    ("feather", (0, 100), (-0.5, 100.5), "invalid_feather"),
    ("quality", (1, 100), (0, 101), "invalid_quality"),
])
def test_documented_ranges_are_inclusive(name, good, bad, code):
    for value in good:
        assert getattr(parse_output_options(**{name: value}), name) == value
    for value in bad:
        error = refusal(**{name: value})
        assert error.code == code and name in error.message


def test_an_unsupported_format_is_named_and_the_choices_given():
    error = refusal(format="gif")
    assert error.code == "invalid_format" and "'gif'" in error.message
    assert all(choice in error.message for choice in ("png", "webp", "jpeg"))


def test_a_preview_accepts_png_spelled_any_way_and_an_empty_background():
    for fmt in ("PNG", " png", None, ""):
        assert parse_output_options(preview=True, format=fmt, background="").format == "png"


def test_a_preview_names_every_option_it_would_ignore():
    error = refusal(preview=True, crop=True)
    assert error.code == "preview_options" and "crop applies" in error.message
    error = refusal(preview=True, background="red", feather=1.5, refine=True)
    assert "background, feather, refine apply" in error.message and "crop" not in error.message
    error = refusal(preview=True, format="jpg")
    assert error.code == "preview_is_png"


@pytest.mark.parametrize("fmt, limit", [("webp", 16383), ("jpeg", 65500)])
def test_a_format_refuses_a_photo_over_its_side_limit(fmt, limit):
    options = parse_output_options(format=fmt, background="white")
    check_output_size(options, limit, limit)  # at the limit: fine
    for width, height in ((limit + 1, 10), (10, limit + 1)):
        with pytest.raises(ApiError) as info:
            check_output_size(options, width, height)
        error = info.value
        assert (error.status, error.code) == (422, "too_large_for_format")
        assert str(limit) in error.message and f"{width}x{height}" in error.message and "png" in error.message
        assert_readable(error.message)


def test_png_has_no_side_limit():
    check_output_size(parse_output_options(), 200_000, 200_000)


def test_the_documented_defaults():
    """docs/http-api.md, output options: format png, mask_only false, no background, crop false with margin 0,
    feather 0, quality 90, preview and refine false."""
    options = parse_output_options()
    assert (options.format, options.mask_only, options.background, options.crop, options.crop_margin,
            options.feather, options.quality, options.preview, options.refine) == ("png", False, None, False, 0, 0.0,
                                                                                 90, False, False)
