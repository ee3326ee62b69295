"""Output options of /v1/cutout over HTTP, through the real graph: format by field or Accept, mask only, background
colour (JPEG), crop with a margin, feather; the default stays the old route's full-size RGBA PNG. On the test
checkpoint random-sharp (conftest.SHARP_ARGS), so that the masks these assert on have real 0 and 255 pixels and a
subject smaller than the photo."""

import httpx
import numpy as np
import pytest

from images import crop_box, decode, photo, png, real_mask

pytestmark = pytest.mark.e2e

WIDTH, HEIGHT = 400, 300
CLICK = {"points": "[[200, 150]]"}


@pytest.fixture(scope="module")
def app_url(sharp_app_url):
    return sharp_app_url


@pytest.fixture(scope="module")
def image_id(app_url):
    response = httpx.post(app_url + "/v1/images", files={"image": ("p.png", png(WIDTH, HEIGHT, seed=41), "image/png")},
                          timeout=120)
    assert response.status_code == 200, response.text
    return response.json()["image_id"]


def cut(app_url, image_id, headers=None, **fields):
    response = httpx.post(app_url + "/v1/cutout", data={"image_id": image_id, **CLICK, **fields}, headers=headers,
                          timeout=120)
    return response


@pytest.mark.parametrize("fields, headers, media_type, expected", [
    ({}, None, "image/png", ("PNG", "RGBA", (WIDTH, HEIGHT))),
    ({}, {"Accept": "image/webp,image/png;q=0.8"}, "image/webp", ("WEBP", "RGBA", (WIDTH, HEIGHT))),
    ({"format": "png"}, {"Accept": "image/webp"}, "image/png", ("PNG", "RGBA", (WIDTH, HEIGHT))),
    ({"format": "webp", "quality": "60"}, None, "image/webp", ("WEBP", "RGBA", (WIDTH, HEIGHT))),
    ({"format": "jpeg", "background": "#00ff00"}, None, "image/jpeg", ("JPEG", "RGB", (WIDTH, HEIGHT))),
    ({"background": "white"}, None, "image/png", ("PNG", "RGB", (WIDTH, HEIGHT))),
    ({"mask_only": "true"}, None, "image/png", ("PNG", "L", (WIDTH, HEIGHT))),
])
def test_formats(app_url, image_id, fields, headers, media_type, expected):
    response = cut(app_url, image_id, headers, **fields)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == media_type
    image = decode(response.content)
    assert (image.format, image.mode, image.size) == expected


def test_background_is_composited_under_the_mask(app_url, image_id):
    """The background goes under the same alpha and the same edge colours (decontaminated at the edge, the photo's
    own inside) as the transparent cut-out's."""
    cutout = np.asarray(decode(cut(app_url, image_id).content)).astype(np.uint16)
    mask = np.asarray(decode(cut(app_url, image_id, mask_only="true").content)).astype(np.uint16)
    real_mask(mask)
    opaque = mask == 255
    assert np.array_equal(cutout[..., 3], mask)
    filled = np.asarray(decode(cut(app_url, image_id, background="#ff00ff").content))
    alpha = mask[..., None]
    expected = (cutout[..., :3] * alpha + np.array([255, 0, 255], np.uint16) * (255 - alpha) + 127) // 255
    assert np.array_equal(filled, expected.astype(np.uint8))
    # Inside the subject the photo's own colours; outside it the background alone.
    assert np.array_equal(filled[opaque], photo(WIDTH, HEIGHT, seed=41)[opaque])
    assert (filled[mask == 0] == [255, 0, 255]).all()


def test_crop_keeps_the_subject_and_the_margin(app_url, image_id):
    mask = np.asarray(decode(cut(app_url, image_id, mask_only="true").content))
    real_mask(mask)
    margin = 7
    box = crop_box(mask, margin)
    cropped = decode(cut(app_url, image_id, crop="true", crop_margin=str(margin)).content)
    assert cropped.size == (box[2] - box[0], box[3] - box[1])
    assert np.array_equal(np.asarray(cropped)[..., 3], mask[box[1]:box[3], box[0]:box[2]])


def test_feather_softens_the_mask(app_url, image_id):
    sharp = np.asarray(decode(cut(app_url, image_id, mask_only="true").content))
    soft = np.asarray(decode(cut(app_url, image_id, mask_only="true", feather="4").content))
    real_mask(sharp)
    # A blurred edge is a wider band of partial alpha (its total variation would not tell: a ramp has a step's).
    band = lambda a: int(((a > 0) & (a < 255)).sum())
    assert band(soft) > 4 * band(sharp), (band(soft), band(sharp))
    # Softened, not moved: deep inside and far outside the subject the mask stays what it was.
    inside, outside = eroded(sharp == 255, 16), eroded(sharp == 0, 16)
    assert inside.any() and outside.any()
    assert (soft[inside] == 255).all() and (soft[outside] == 0).all()


def eroded(mask: np.ndarray, radius: int) -> np.ndarray:
    """Pixels whose whole (2r+1)^2 neighbourhood lies in ``mask``: beyond the reach of a blur of that radius."""
    windows = np.lib.stride_tricks.sliding_window_view(np.pad(mask, radius), (2 * radius + 1,) * 2)
    return windows.all(axis=(2, 3))


@pytest.mark.parametrize("fields, code", [
    ({"format": "jpeg"}, "jpeg_needs_background"),
    ({"format": "gif"}, "malformed_request"),
    ({"background": "not-a-colour"}, "invalid_background"),
    ({"feather": "-1"}, "invalid_feather"),
])
def test_refused_options_say_why(app_url, image_id, fields, code):
    response = cut(app_url, image_id, **fields)
    assert 400 <= response.status_code < 500
    error = response.json()["error"]
    assert error["code"] == code and error["message"]
