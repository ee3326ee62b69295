"""The one-call library API runs the same stages in process, without Ray."""

import numpy as np
import pytest

from deployments.errors import ApiError
from serve_app.local import remove

from images import crop_box, decode, jpeg, photo, png, real_mask

# What a mask holds is asserted on the test checkpoint whose masks have real 0 and 255 pixels (conftest.SHARP_ARGS).
SHARP = {"model": "tiny", "checkpoint": "random-sharp", "device": "cpu"}


def test_remove_returns_a_full_size_rgba_png():
    data = remove(jpeg(200, 150, seed=4), points=[[100, 75]], model="tiny", checkpoint="random", device="cpu")
    image = decode(data)
    assert (image.format, image.mode, image.size) == ("PNG", "RGBA", (200, 150))


def test_remove_crops_to_the_subject():
    mask = np.asarray(decode(remove(jpeg(200, 150, seed=4), points=[[100, 75]], mask_only=True, **SHARP)))
    real_mask(mask)
    x0, y0, x1, y1 = crop_box(mask, 2)
    webp = decode(remove(jpeg(200, 150, seed=4), points=[[100, 75]], format="webp", crop=True, crop_margin=2,
                         **SHARP))
    assert webp.format == "WEBP" and webp.size == (x1 - x0, y1 - y0)


def test_remove_with_a_background_puts_it_where_the_mask_drops_the_photo():
    data = png(200, 150, seed=4)  # lossless: the kept pixels are the photo's own
    mask = np.asarray(decode(remove(data, points=[[100, 75]], mask_only=True, **SHARP)))
    real_mask(mask)
    filled = decode(remove(data, points=[[100, 75]], background="white", **SHARP))
    assert (filled.mode, filled.size) == ("RGB", (200, 150))  # no alpha left
    pixels = np.asarray(filled)
    assert (pixels[mask == 0] == 255).all()
    assert np.array_equal(pixels[mask == 255], photo(200, 150, seed=4)[mask == 255])


def test_remove_refuses_bad_input_with_api_errors():
    with pytest.raises(ApiError) as info:
        remove(b"not an image", points=[[1, 1]], model="tiny", checkpoint="random", device="cpu")
    assert info.value.status == 415
    with pytest.raises(ApiError) as info:
        remove(jpeg(50, 40), points=[[100, 1]], model="tiny", checkpoint="random", device="cpu")
    assert (info.value.status, info.value.code) == (422, "point_outside_image")
