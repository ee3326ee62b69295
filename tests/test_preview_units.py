"""The preview's grey encoding at its edges (deployments/preview.py): which mask, the scale a client reads back with,
and the answer's fields."""

import io
import time

import numpy as np
import pytest
from PIL import Image

from deployments.messages import SegmentResult
from deployments.preview import MAX_SCALE, choose_mask, encode_logits, preview_cutout


def read_back(grey: np.ndarray, scale: float) -> np.ndarray:
    """What a client computes from the grey and X-Preview-Scale (the module docstring's formula)."""
    return (grey.astype(np.float64) - 127.5) / scale


@pytest.mark.parametrize("scores, best", [([0.1, 0.9, 0.2], 1), ([0.7, 0.2, 0.1], 0), ([0.1, 0.2, 0.3], 2),
                                          ([0.4, 0.4, 0.1], 0), ([0.3], 0), ([-1.0], 0)])
def test_the_best_scored_mask_is_chosen(scores, best):
    assert choose_mask(np.asarray(scores, np.float32)) == best


@pytest.mark.parametrize("low, high", [(-20.0, 5.0), (-3.0, 12.7), (-0.001, 0.002), (-400.0, -1.0), (2.0, 90.0),
                                       (-0.5, 0.25), (-0.2, 0.9)])
def test_logits_read_back_within_half_a_grey_level_whichever_sign_is_larger(low, high):
    logits = np.linspace(low, high, 256 * 256, dtype=np.float32).reshape(256, 256)
    grey, scale = encode_logits(logits)
    assert grey.dtype == np.uint8 and grey.shape == (256, 256)
    if max(abs(low), abs(high)) * MAX_SCALE > 127:  # not a flat mask: the scale fits the largest logit
        assert np.abs(read_back(grey, scale) - logits).max() <= 0.5 / scale * 1.0001
        assert grey.min() <= 1 or grey.max() >= 254  # and uses the range
    assert np.array_equal(grey >= 128, logits > 0)


def test_the_largest_logit_just_fits():
    logits = np.zeros((4, 4), np.float32)
    logits[0, 0], logits[0, 1] = 12.7, -6.35
    grey, scale = encode_logits(logits)
    assert scale == pytest.approx(10.0)
    assert (grey[0, 0], grey[0, 1]) == (255, 64)
    logits[0, 1] = -12.7  # the negative side as large: both ends of the range
    grey, scale = encode_logits(logits)
    assert scale == pytest.approx(10.0) and (grey[0, 0], grey[0, 1]) == (255, 1)


def test_a_flat_mask_is_not_magnified_past_the_cap():
    zero, scale = encode_logits(np.zeros((8, 8), np.float32))
    assert scale == MAX_SCALE and (zero == 127).all()  # nothing is > 0: nothing reads as mask
    tiny = np.full((8, 8), 1e-4, np.float32)
    tiny[0] = -1e-4
    grey, scale = encode_logits(tiny)
    assert scale == MAX_SCALE
    assert (grey[1:] >= 128).all() and (grey[0] < 128).all()


def test_a_logit_that_rounds_to_zero_keeps_its_side():
    logits = np.array([[1e-9, -1e-9, 0.0, 100.0]], np.float32)
    grey, _ = encode_logits(logits)
    assert grey.tolist() == [[128, 127, 127, 255]]


def test_the_scale_is_what_the_header_carries():
    """X-Preview-Scale carries six significant digits: the grey is made with exactly that number."""
    logits = np.full((4, 4), 3.0, np.float32)
    _, scale = encode_logits(logits)
    assert float(f"{scale:.6g}") == scale and scale == pytest.approx(127 / 3, rel=1e-5)


def test_the_preview_answer():
    logits = np.stack([np.full((256, 256), v, np.float32) for v in (-1.0, 2.0, 1.0)])
    logits[1, :128] = -2.0
    seg = SegmentResult("abc", logits, np.array([0.2, 0.9, 0.5], np.float32), cache_hit=True,
                        timings_ms={"segment": 3.0})
    before = time.perf_counter()
    cutout = preview_cutout(seg)
    took_ms = (time.perf_counter() - before) * 1000
    grey, scale = encode_logits(logits[1])
    image = Image.open(io.BytesIO(cutout.data))
    assert (cutout.media_type, image.format, image.mode) == ("image/png", "PNG", "L")
    assert np.array_equal(np.asarray(image), grey)
    assert (cutout.width, cutout.height, cutout.image_id, cutout.cache_hit) == (256, 256, "abc", True)
    assert cutout.score == pytest.approx(0.9) and cutout.preview_scale == scale
    assert cutout.timings_ms["segment"] == 3.0
    assert 0 <= cutout.timings_ms["preview"] <= took_ms + 0.01  # its own work, within the call around it


def test_the_answer_has_the_grids_own_size():
    logits = np.zeros((1, 64, 256), np.float32)
    cutout = preview_cutout(SegmentResult("x", logits, np.array([0.5], np.float32), cache_hit=False))
    assert (cutout.width, cutout.height) == (256, 64) and Image.open(io.BytesIO(cutout.data)).size == (256, 64)
