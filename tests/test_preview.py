"""The preview mask (deployments/preview.py): SAM's 256x256 logits as grey, linear in the logit, that the web page
upsamples over the photo. Read back and upsampled as the page does it, it must give the server's full-size mask
(edges.upsample_logits, > 0): IoU >= 0.99 on steep SAM-like logits and on the flat logits of random weights, at
several photo sizes."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from deployments.edges import soft_alpha, upsample_logits
from deployments.messages import SegmentResult
from deployments.preview import MAX_SCALE, encode_logits, preview_cutout
from images import decode
from parity import PREVIEW_MIN_IOU, iou, preview_mask


def sam_like(seed: int) -> np.ndarray:
    """Steep logits around a wobbly blob: about -20..+20, several logits per cell across the edge."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:256, 0:256] / 256.0
    angle = np.arctan2(y - 0.5, x - 0.5)
    radius = 0.3 + 0.05 * np.sin(3 * angle + rng.uniform(0, 6)) + 0.03 * np.sin(7 * angle + rng.uniform(0, 6))
    distance = radius - np.hypot(x - 0.5, y - 0.5)
    return np.clip(distance * 256 * 4 + rng.normal(0, 0.5, distance.shape), -20, 20).astype(np.float32)


def random_weights_like(seed: int) -> np.ndarray:
    """What the tiny model with seeded random weights answers: smooth and flat, about -0.4..+0.4."""
    noise = torch.from_numpy(np.random.default_rng(seed).normal(0, 1, (1, 1, 32, 32)).astype(np.float32))
    return (F.interpolate(noise, (256, 256), mode="bicubic", align_corners=False)[0, 0] * 0.2).numpy()


@pytest.mark.parametrize("make", [sam_like, random_weights_like])
@pytest.mark.parametrize("size", [(480, 360), (1024, 768), (4032, 3024)])
def test_a_stretched_preview_is_the_full_size_mask(make, size):
    width, height = size
    for seed in range(3):
        logits = make(seed)
        full = soft_alpha(upsample_logits(logits, height, width)) >= 128
        grey, scale = encode_logits(logits)
        score = iou(preview_mask(grey, scale, height, width), full)
        assert score >= PREVIEW_MIN_IOU, f"{make.__name__} seed {seed} at {width}x{height}: IoU {score:.4f}"


def test_grey_is_linear_in_the_logit_unclipped_and_128_exactly_on_the_mask():
    logits = sam_like(0)
    logits[0, :6] = [1e-7, -1e-7, 0.0, 20.0, -20.0, 1e-3]
    grey, scale = encode_logits(logits)
    assert ((grey >= 128) == (logits > 0)).all()
    assert grey.max() <= 255 and grey.min() >= 0 and scale == pytest.approx(127 / 20, rel=1e-5)
    decoded = (grey.astype(np.float64) - 127.5) / scale
    assert np.abs(decoded - logits)[np.abs(logits) > 1 / scale].max() <= 0.5 / scale + 1e-6
    flat, flat_scale = encode_logits(np.zeros((256, 256), np.float32))
    assert flat_scale == MAX_SCALE and (flat == 127).all()  # no mask, nothing divided by zero


def test_preview_answer_is_the_best_masks_grid_with_its_score_and_scale():
    logits = np.stack([sam_like(1), -sam_like(2), sam_like(3)])
    seg = SegmentResult("img", logits, np.array([0.2, 0.9, 0.5], np.float32), True, {"mask": 5.0})
    cutout = preview_cutout(seg)
    image = decode(cutout.data)
    assert (image.mode, image.size, cutout.media_type) == ("L", (256, 256), "image/png")
    assert ((np.asarray(image) >= 128) == (logits[1] > 0)).all()
    assert cutout.score == pytest.approx(0.9) and cutout.preview_scale == encode_logits(logits[1])[1]
    assert cutout.cache_hit and cutout.timings_ms["mask"] == 5.0 and "preview" in cutout.timings_ms
