"""The one-call library API runs the same stages in process, without Ray."""

import numpy as np
import pytest

from deployments.errors import ApiError
from serve_app.local import remove

from images import decode, jpeg


def test_remove_returns_a_full_size_rgba_png():
    data = remove(jpeg(200, 150, seed=4), points=[[100, 75]], model="tiny", checkpoint="random", device="cpu")
    image = decode(data)
    assert (image.format, image.mode, image.size) == ("PNG", "RGBA", (200, 150))
    webp = decode(remove(jpeg(200, 150, seed=4), points=[[100, 75]], model="tiny", checkpoint="random",
                         device="cpu", format="webp", crop=True))
    assert webp.format == "WEBP" and webp.size[0] <= 200


def test_remove_refuses_bad_input_with_api_errors():
    with pytest.raises(ApiError) as info:
        remove(b"not an image", points=[[1, 1]], model="tiny", checkpoint="random", device="cpu")
    assert info.value.status == 415
    alpha_free = np.asarray(decode(jpeg(50, 40)))
    assert alpha_free.shape == (40, 50, 3)
