import pytest

from deployments.output_options import format_from_accept, parse_color, parse_output_options
from deployments.errors import ApiError


def test_defaults_are_the_old_service_output():
    options = parse_output_options()
    assert (options.format, options.mask_only, options.background, options.crop) == ("png", False, None, False)


@pytest.mark.parametrize("accept, expected", [
    ("image/webp,image/png;q=0.9", "webp"),
    ("image/png;q=0.5, image/webp;q=0.8", "webp"),
    ("text/html, */*", None),
    (None, None),
])
def test_accept_header(accept, expected):
    assert format_from_accept(accept) == expected


def test_explicit_format_beats_accept():
    assert parse_output_options(format="png", accept="image/webp").format == "png"


def test_jpeg_needs_a_background():
    with pytest.raises(ApiError) as info:
        parse_output_options(format="jpeg")
    assert info.value.status == 422
    assert parse_output_options(format="jpeg", background="white").background == (255, 255, 255)
    assert parse_output_options(accept="image/jpeg").format == "png"  # Accept alone falls back


@pytest.mark.parametrize("text, rgb", [("#ff0000", (255, 0, 0)), ("00ff00", (0, 255, 0)),
                                        ("0, 0, 255", (0, 0, 255)), ("white", (255, 255, 255))])
def test_colours(text, rgb):
    assert parse_color(text) == rgb


@pytest.mark.parametrize("kwargs", [{"background": "not-a-colour"}, {"background": "300,0,0"},
                                    {"feather": -1}, {"crop_margin": -5}, {"quality": 0}, {"format": "gif"}])
def test_invalid_options(kwargs):
    with pytest.raises(ApiError) as info:
        parse_output_options(**kwargs)
    assert info.value.status == 422


def test_preview_is_a_png_mask_and_refuses_the_options_it_would_ignore():
    options = parse_output_options(preview=True, accept="image/webp")
    assert (options.preview, options.mask_only, options.format) == (True, True, "png")
    for kwargs, code in [({"format": "webp"}, "preview_is_png"), ({"crop": True}, "preview_options"),
                         ({"feather": 2.0}, "preview_options"), ({"background": "white"}, "preview_options"),
                         ({"refine": True}, "preview_options")]:
        with pytest.raises(ApiError) as caught:
            parse_output_options(preview=True, **kwargs)
        assert (caught.value.status, caught.value.code) == (422, code)
