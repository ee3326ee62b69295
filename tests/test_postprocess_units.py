"""The postprocess stage's plain parts at their edges (deployments/postprocess.py): feathering, composing on a colour
or on transparency, the options render honours, and the encoders."""

import io
import os
import time

import numpy as np
import pytest
import torch
from PIL import Image, ImageFilter

from deployments.edges import cutout_edge
from deployments.messages import OutputOptions, SegmentResult
from deployments.postprocess import Postprocessor, compose, feather
from deployments.settings import PostprocessConfig

from images import photo


def disc_logits(size=256, radius=60) -> np.ndarray:
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    return (radius - np.hypot(xx - size / 2, yy - size / 2)) / size * 80


@pytest.fixture(scope="module")
def post():
    return Postprocessor(PostprocessConfig(threads=2))


def decode(data: bytes) -> Image.Image:
    image = Image.open(io.BytesIO(data))
    image.load()
    return image


def seg(*masks, scores=None, timings=None) -> SegmentResult:
    logits = np.stack(masks).astype(np.float32)
    scores = np.asarray(scores if scores is not None else [0.5] * len(masks), np.float32)
    return SegmentResult("the-id", logits, scores, cache_hit=True, timings_ms=dict(timings or {}))


def test_no_feathering_leaves_the_alpha_as_it_is():
    alpha = np.random.default_rng(0).integers(0, 256, (20, 30), dtype=np.uint8)
    assert feather(alpha, 0) is alpha and feather(alpha, -1.0) is alpha


def test_feathering_is_a_gaussian_blur_of_the_given_radius():
    alpha = np.zeros((40, 60), np.uint8)
    alpha[:, 30:] = 255
    soft = feather(alpha, 3.0)
    expected = np.asarray(Image.fromarray(alpha).filter(ImageFilter.GaussianBlur(radius=3.0)))
    assert np.array_equal(soft, expected)
    assert 0 < soft[20, 29] < 255 and soft[20, 0] == 0 and soft[20, 59] == 255


def test_composing_on_a_colour_rounds_to_the_nearest_level():
    rng = np.random.default_rng(1)
    rgb = rng.integers(0, 256, (16, 24, 3), dtype=np.uint8)
    alpha = rng.integers(0, 256, (16, 24), dtype=np.uint8)
    alpha[0, :] = 0
    alpha[1, :] = 255
    out = compose(rgb, alpha, (10, 200, 255))
    a = alpha[..., None].astype(np.int64)
    expected = np.rint((rgb * a + np.array([10, 200, 255]) * (255 - a)) / 255)
    assert out.dtype == np.uint8 and out.shape == (16, 24, 3)
    assert np.array_equal(out, expected.astype(np.uint8))
    assert (out[0] == [10, 200, 255]).all() and np.array_equal(out[1], rgb[1])


def test_composing_on_transparency_hides_only_fully_transparent_colour():
    rgb = np.full((4, 5, 3), 77, np.uint8)
    alpha = np.array([[0, 1, 128, 255, 0]] * 4, np.uint8)
    out = compose(rgb, alpha, None)
    assert out.shape == (4, 5, 4) and out.dtype == np.uint8
    assert np.array_equal(out[..., 3], alpha)
    assert (out[:, [0, 4], :3] == 0).all() and (out[:, 1:4, :3] == 77).all()


def test_threads_come_from_the_config_or_the_machine():
    assert Postprocessor(PostprocessConfig(threads=3)).threads == 3
    assert Postprocessor(PostprocessConfig(threads=0)).threads == (os.cpu_count() or 1)
    before = torch.get_num_threads()
    try:
        Postprocessor(PostprocessConfig(threads=1)).use_threads()
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)


def test_the_answer_carries_the_chosen_masks_score_the_id_and_the_timings(post):
    cutout = post.render(seg(-disc_logits(), disc_logits(), scores=[0.2, 0.7], timings={"segment": 5.0}),
                         photo(160, 120))
    image = decode(cutout.data)
    assert image.size == (160, 120) and (cutout.width, cutout.height) == (160, 120)
    assert np.asarray(image)[60, 80, 3] == 255  # the disc (the best mask) is kept
    assert cutout.score == pytest.approx(0.7) and type(cutout.score) is float
    assert (cutout.image_id, cutout.cache_hit, cutout.media_type) == ("the-id", True, "image/png")
    assert cutout.timings_ms["segment"] == 5.0
    assert all(cutout.timings_ms[key] >= 0 for key in ("upsample", "output", "postprocess"))


def test_crop_keeps_the_subject_and_the_margin(post):
    rgb = photo(256, 256)
    plain = np.asarray(decode(post.render(seg(disc_logits()), rgb).data))
    ys, xs = np.nonzero(plain[..., 3])
    cropped = post.render(seg(disc_logits()), rgb, OutputOptions(crop=True, crop_margin=3))
    assert (cropped.width, cropped.height) == (xs.max() - xs.min() + 7, ys.max() - ys.min() + 7)
    image = np.asarray(decode(cropped.data))
    assert np.array_equal(image[3:-3, 3:-3], plain[ys.min():ys.max() + 1, xs.min():xs.max() + 1])


def test_crop_of_an_empty_mask_keeps_the_whole_photo(post):
    cutout = post.render(seg(np.full((256, 256), -10.0)), photo(90, 70), OutputOptions(crop=True))
    assert (cutout.width, cutout.height) == (90, 70)
    assert not np.asarray(decode(cutout.data))[..., 3].any()


def test_feather_softens_the_edge_of_the_answer(post):
    rgb = photo(200, 200)
    hard = np.asarray(decode(post.render(seg(disc_logits()), rgb).data))[..., 3]
    soft = np.asarray(decode(post.render(seg(disc_logits()), rgb, OutputOptions(feather=4)).data))[..., 3]
    partial = lambda alpha: int(((alpha > 0) & (alpha < 255)).sum())  # noqa: E731
    assert partial(soft) > partial(hard) * 1.3
    assert soft[100, 100] == 255 and soft[0, 0] == 0


def test_a_mask_is_single_channel_in_every_format(post):
    rgb = photo(64, 48)
    for fmt, mode in (("png", "L"), ("webp", None), ("jpeg", "L")):
        cutout = post.render(seg(disc_logits()), rgb, OutputOptions(format=fmt, mask_only=True))
        image = decode(cutout.data)
        assert image.format == {"png": "PNG", "webp": "WEBP", "jpeg": "JPEG"}[fmt]
        assert cutout.media_type == f"image/{fmt}" and image.size == (64, 48)
        if mode:
            assert image.mode == mode


def test_a_background_colour_gives_an_opaque_rgb_answer(post):
    rgb = photo(64, 48)
    cutout = post.render(seg(np.full((256, 256), -10.0)), rgb, OutputOptions(background=(0, 0, 255)))
    image = decode(cutout.data)
    assert image.mode == "RGB" and (np.asarray(image) == [0, 0, 255]).all()


def test_both_png_writers_give_the_same_cut_out_and_mask():
    rgb = photo(120, 90)
    decoded = {}
    for compression in ("fast", "small"):
        post = Postprocessor(PostprocessConfig(threads=2, png_compression=compression, png_level=1))
        for mask_only in (False, True):
            data = post.render(seg(disc_logits()), rgb, OutputOptions(mask_only=mask_only)).data
            decoded[compression, mask_only] = np.asarray(decode(data))
    assert decoded["fast", False].shape == (90, 120, 4) and decoded["fast", True].shape == (90, 120)
    for mask_only in (False, True):
        assert np.array_equal(decoded["fast", mask_only], decoded["small", mask_only])
    assert np.array_equal(decoded["fast", True], decoded["fast", False][..., 3])  # the mask is the cut-out's alpha


def test_quality_is_honoured_by_jpeg_and_webp(post):
    pixels = photo(200, 150)
    for fmt in ("jpeg", "webp"):
        low = post.encode(pixels, OutputOptions(format=fmt, quality=5, background=(0, 0, 0)))
        high = post.encode(pixels, OutputOptions(format=fmt, quality=95, background=(0, 0, 0)))
        assert len(low) < len(high)
        image = decode(high)
        assert image.format == fmt.upper() and image.mode == "RGB" and image.size == (200, 150)
        error = np.abs(np.asarray(image).astype(int) - pixels).mean()
        assert error < 8


def test_webp_keeps_the_transparency(post):
    rgba = compose(photo(40, 30), np.array([[0, 255] * 20] * 30, np.uint8), None)
    image = decode(post.encode(rgba, OutputOptions(format="webp", quality=100)))
    assert image.mode == "RGBA" and np.array_equal(np.asarray(image)[..., 3], rgba[..., 3])


def test_the_source_alpha_caps_the_answer(post):
    source = np.full((48, 64), 100, np.uint8)
    cutout = post.render(seg(np.full((256, 256), 10.0)), photo(64, 48), OutputOptions(mask_only=True),
                         source_alpha=source)
    assert (np.asarray(decode(cutout.data)) == 100).all()


def test_the_cut_out_carries_the_edge_colours_and_a_mask_only_its_alpha(post):
    rgb = photo(160, 120, seed=5)
    logits = disc_logits()
    alpha, colours = cutout_edge(rgb, logits, False)
    soft = (alpha > 0) & (alpha < 255)
    assert (colours[soft] != rgb[soft]).any()  # the edge colours are estimated, not the photo's own
    image = np.asarray(decode(post.render(seg(logits), rgb).data))
    assert np.array_equal(image[..., 3], alpha)
    assert np.array_equal(image[..., :3][alpha > 0], colours[alpha > 0])
    mask = np.asarray(decode(post.render(seg(logits), rgb, OutputOptions(mask_only=True)).data))
    assert np.array_equal(mask, alpha)


def test_render_asks_the_edge_for_what_the_options_say_and_reports_its_timings(post, monkeypatch):
    """The edge itself (and its matting) is tested in test_edges.py; here only what render asks of it."""
    import deployments.postprocess as postprocess

    asked = []

    def edge(photo_, logits, refine, *, colours=True, timings=None):
        asked.append((refine, colours))
        timings.update({"refine": 1.5, "refine_mp": 0.25} if refine else {})
        return np.full(photo_.shape[:2], 255, np.uint8), photo_

    monkeypatch.setattr(postprocess, "cutout_edge", edge)
    rgb = photo(40, 30)
    refined = post.render(seg(disc_logits()), rgb, OutputOptions(refine=True))
    plain = post.render(seg(disc_logits()), rgb, OutputOptions(mask_only=True))
    assert asked == [(True, True), (False, False)]
    assert (refined.timings_ms["refine"], refined.timings_ms["refine_mp"]) == (1.5, 0.25)
    assert "refine" not in plain.timings_ms


def test_the_stage_timings_lie_within_the_call(post):
    before = time.perf_counter()
    cutout = post.render(seg(disc_logits()), photo(160, 120))
    took_ms = (time.perf_counter() - before) * 1000
    for key in ("upsample", "output", "postprocess"):
        assert 0 <= cutout.timings_ms[key] <= took_ms + 0.01, key


def test_the_small_png_writer_leaves_other_formats_alone():
    post = Postprocessor(PostprocessConfig(threads=2, png_compression="small"))
    for fmt in ("webp", "jpeg"):
        cutout = post.render(seg(disc_logits()), photo(64, 48), OutputOptions(format=fmt, background=(1, 2, 3)))
        assert decode(cutout.data).format == fmt.upper()
    on_colour = decode(post.render(seg(np.full((256, 256), -10.0)), photo(64, 48), OutputOptions(background=(1, 2, 3))).data)
    assert on_colour.mode == "RGB" and (np.asarray(on_colour) == [1, 2, 3]).all()  # a PNG on a colour: composed
    webp = post.render(seg(disc_logits()), photo(64, 48), OutputOptions(format="webp"))
    assert decode(webp.data).format == "WEBP" and decode(webp.data).mode == "RGBA"


def test_a_feather_of_one_pixel_or_less_still_softens():
    alpha = np.zeros((20, 20), np.uint8)
    alpha[:, 10:] = 255
    for sigma in (0.5, 1.0):
        assert not np.array_equal(feather(alpha, sigma), alpha)


def test_the_png_writer_is_the_one_the_config_names():
    """png_compression "fast" (the default) is fpng; "small" the zlib-ng writer (docs/configuration.md)."""
    from deployments.png import encode_png, encode_png_fast

    rgba = compose(photo(64, 48), np.full((48, 64), 200, np.uint8), None)
    fast = Postprocessor(PostprocessConfig(threads=1))
    small = Postprocessor(PostprocessConfig(threads=1, png_compression="small", png_level=1))
    assert fast.encode(rgba, OutputOptions()) == encode_png_fast(rgba)
    assert small.encode(rgba, OutputOptions()) == encode_png(rgba, level=1)
    logits = disc_logits()
    cutout = fast.render(seg(logits), photo(64, 48))
    alpha, colours = cutout_edge(photo(64, 48), logits, False)
    assert cutout.data == encode_png_fast(compose(colours, alpha, None))
