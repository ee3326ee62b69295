"""Postprocess: mask choice, upsampling as SAM does it, soft alpha, feathering, composing, encoding."""

import io

import numpy as np
import pytest
import torch
from PIL import Image

from deployments.messages import OutputOptions, SegmentResult
from deployments.png import encode_png
from deployments.geometry import subject_box
from deployments.edges import soft_alpha, upsample_logits
from deployments.postprocess import Postprocessor, compose, feather
from deployments.preview import choose_mask

from images import photo
from parity import assert_equal_within_rounding


def disc_logits(size=256, radius=60, steep=8.0) -> np.ndarray:
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    return (radius - np.hypot(xx - size / 2, yy - size / 2)) / size * steep * 10


def test_choose_mask_takes_best_score_of_three_and_the_only_one_otherwise():
    assert choose_mask(np.array([0.1, 0.9, 0.5])) == 1
    assert choose_mask(np.array([0.3])) == 0


def test_upsampling_matches_sam2_postprocess_masks():
    from sam2.utils.transforms import SAM2Transforms

    logits = np.random.default_rng(0).normal(size=(3, 256, 256)).astype(np.float32)
    reference = SAM2Transforms(1024, 0.0).postprocess_masks(torch.from_numpy(logits)[None], (480, 640))[0]
    for c in range(3):  # sam2 upsamples the three at once, we one: another layout, so float rounding may differ
        assert_equal_within_rounding(upsample_logits(logits[c], 480, 640), reference[c], f"mask {c}")


def test_soft_alpha_keeps_sams_mask_exactly():
    logits = torch.linspace(-6, 6, 1001)[None].repeat(3, 1)
    logits[0, 500] = 0.0
    logits[1, 500] = 1e-9  # 127 + 32e-9 rounds to 127.0 in float32: must still be inside
    logits[2, 500] = -1e-9
    inside = (logits > 0).numpy()
    alpha = soft_alpha(logits.clone())
    assert np.array_equal(alpha >= 128, inside)
    ramp = alpha[0][(alpha[0] > 0) & (alpha[0] < 255)]
    assert len(ramp) > 100  # a soft ramp, not a hard 0/255 step
    assert alpha[0, 0] == 0 and alpha[0, -1] == 255  # saturated far from the edge
    assert np.all(np.diff(alpha[0].astype(int)) >= 0)  # monotonic in the logit


def test_feather_softens_the_edge_but_keeps_the_inside():
    alpha = np.zeros((100, 100), np.uint8)
    alpha[30:70, 30:70] = 255
    soft = feather(alpha, 3.0)
    partial = lambda a: int(((a > 0) & (a < 255)).sum())
    assert partial(soft) > partial(alpha) + 200
    assert soft[50, 50] == 255 and soft[0, 0] == 0
    assert feather(alpha, 0) is alpha


def test_compose_zeroes_colour_under_transparency():
    rgb = np.full((4, 4, 3), 200, np.uint8)
    alpha = np.array([[0, 1, 128, 255]] * 4, np.uint8)
    rgba = compose(rgb, alpha, None)
    assert rgba.shape == (4, 4, 4)
    assert (rgba[:, 0, :3] == 0).all() and (rgba[:, 1:, :3] == 200).all()
    assert np.array_equal(rgba[..., 3], alpha)


def test_compose_on_a_background_colour():
    rgb = np.full((1, 3, 3), 200, np.uint8)
    alpha = np.array([[0, 255, 128]], np.uint8)
    out = compose(rgb, alpha, (0, 0, 0))
    assert out.shape == (1, 3, 3)
    assert out[0, 0].tolist() == [0, 0, 0] and out[0, 1].tolist() == [200, 200, 200]
    assert 95 <= out[0, 2, 0] <= 105


def test_subject_box_with_margin():
    alpha = np.zeros((50, 80), np.uint8)
    alpha[10:20, 30:40] = 200
    assert subject_box(alpha, 0) == (30, 10, 40, 20)
    assert subject_box(alpha, 5) == (25, 5, 45, 25)
    assert subject_box(alpha, 100) == (0, 0, 80, 50)
    assert subject_box(np.zeros((5, 5), np.uint8), 3) is None


@pytest.mark.parametrize("shape", [(37, 53), (37, 53, 2), (37, 53, 3), (300, 700, 4)])
@pytest.mark.parametrize("parts", [1, 4])
def test_png_writer_round_trips(shape, parts):
    from concurrent.futures import ThreadPoolExecutor

    pixels = np.random.default_rng(1).integers(0, 256, size=shape, dtype=np.uint8)
    pixels[: shape[0] // 2] //= 7  # some compressible structure
    with ThreadPoolExecutor(4) as pool:
        data = encode_png(pixels, level=2, executor=pool, parts=parts)
    image = Image.open(io.BytesIO(data))
    image.load()
    assert image.size == (shape[1], shape[0])
    assert np.array_equal(np.asarray(image).reshape(pixels.shape), pixels)


def test_png_writer_splits_large_images_into_parallel_parts():
    from concurrent.futures import ThreadPoolExecutor

    pixels = np.random.default_rng(2).integers(0, 256, size=(1200, 1200, 4), dtype=np.uint8)
    with ThreadPoolExecutor(4) as pool:
        data = encode_png(pixels, executor=pool, parts=4)
    assert data.count(b"IDAT") >= 4  # one chunk per part plus the checksum
    assert np.array_equal(np.asarray(Image.open(io.BytesIO(data))), pixels)


def _seg(logits: np.ndarray, scores) -> SegmentResult:
    return SegmentResult("img", logits, np.asarray(scores, np.float32), cache_hit=False)


def test_render_default_is_full_size_rgba_png_with_the_best_mask():
    rgb = photo(320, 240)
    logits = np.stack([-disc_logits(), disc_logits(), -disc_logits()])  # best (index 1) is the disc
    cutout = Postprocessor().render(_seg(logits, [0.1, 0.9, 0.2]), rgb)
    image = Image.open(io.BytesIO(cutout.data))
    assert (cutout.media_type, image.mode, image.size) == ("image/png", "RGBA", (320, 240))
    alpha = np.asarray(image)[..., 3]
    assert alpha[120, 160] == 255 and alpha[0, 0] == 0
    assert cutout.score == pytest.approx(0.9)
    assert np.array_equal(np.asarray(image)[120, 160, :3], rgb[120, 160])
    assert {"upsample", "output", "postprocess"} <= set(cutout.timings_ms)


def test_render_options():
    rgb = photo(320, 240)
    seg = _seg(disc_logits()[None], [0.8])
    post = Postprocessor()
    mask = Image.open(io.BytesIO(post.render(seg, rgb, OutputOptions(mask_only=True)).data))
    assert mask.mode == "L" and mask.size == (320, 240)
    cropped = post.render(seg, rgb, OutputOptions(crop=True, crop_margin=2))
    assert cropped.width < 320 and cropped.height < 240
    jpeg = Image.open(io.BytesIO(post.render(seg, rgb, OutputOptions(format="jpeg", background=(255, 255, 255))).data))
    assert jpeg.format == "JPEG" and jpeg.mode == "RGB"
    assert np.asarray(jpeg)[0, 0].min() > 240  # background filled with white
    webp = Image.open(io.BytesIO(post.render(seg, rgb, OutputOptions(format="webp")).data))
    assert webp.format == "WEBP" and webp.mode == "RGBA"


def test_render_respects_the_uploads_own_transparency():
    rgb = photo(320, 240)
    source_alpha = np.full((240, 320), 255, np.uint8)
    source_alpha[:, :160] = 0
    cutout = Postprocessor().render(_seg(disc_logits()[None], [0.8]), rgb, source_alpha=source_alpha)
    alpha = np.asarray(Image.open(io.BytesIO(cutout.data)))[..., 3]
    assert alpha[:, :160].max() == 0 and alpha[120, 200] == 255


def test_cutout_rows_png_equals_the_composed_rgba():
    from concurrent.futures import ThreadPoolExecutor

    from deployments.png import CutoutRows

    rgb = photo(333, 211, seed=8)
    alpha = np.random.default_rng(3).integers(0, 256, size=(211, 333), dtype=np.uint8)
    alpha[:, :100] = 0
    with ThreadPoolExecutor(3) as pool:
        data = encode_png(CutoutRows(rgb, alpha), level=1, executor=pool, parts=3)
    assert np.array_equal(np.asarray(Image.open(io.BytesIO(data))), compose(rgb, alpha, None))


@pytest.mark.parametrize("shape", [(37, 53, 3), (300, 700, 4), (1, 1, 4)])
def test_fast_png_writer_round_trips(shape):
    from deployments.png import encode_png_fast

    pixels = np.random.default_rng(4).integers(0, 256, size=shape, dtype=np.uint8)
    pixels[: shape[0] // 2] //= 7
    data = encode_png_fast(pixels[:, ::-1])  # a non-contiguous view, as a crop or flip gives
    assert data.startswith(b"\x89PNG")
    assert np.array_equal(np.asarray(Image.open(io.BytesIO(data))), pixels[:, ::-1])


def test_fast_png_writer_hands_grey_images_to_the_zlib_writer():
    from deployments.png import encode_png_fast

    mask = np.random.default_rng(5).integers(0, 256, size=(40, 30), dtype=np.uint8)
    image = Image.open(io.BytesIO(encode_png_fast(mask)))
    assert image.mode == "L" and np.array_equal(np.asarray(image), mask)


def test_fast_and_small_png_compressions_give_the_same_pixels():
    from deployments.settings import PostprocessConfig

    rgb = photo(320, 240, seed=2)
    seg = _seg(np.stack([disc_logits(), -disc_logits(), -disc_logits()]), [0.9, 0.1, 0.2])
    decoded = {}
    for compression in ("fast", "small"):
        cutout = Postprocessor(PostprocessConfig(png_compression=compression)).render(seg, rgb)
        decoded[compression] = np.asarray(Image.open(io.BytesIO(cutout.data)))
    assert decoded["fast"].shape == (240, 320, 4)
    assert decoded["fast"][120, 160, 3] == 255 and decoded["fast"][0, 0, 3] == 0
    assert np.array_equal(decoded["fast"], decoded["small"])
