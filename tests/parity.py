"""Our masks against those of sam2's own SAM2ImagePredictor (tests/test_segmenter.py, tests/test_e2e_http.py), and
our float32 computations against sam2's within float rounding: the same sums added in another order (other SIMD
widths, a matrix product for a convolution) round differently on each CPU's kernels, so no comparison here is bit for
bit. What users see (the thresholded masks, the chosen mask) must be the same."""

from __future__ import annotations

import numpy as np

# Our mask decoder (deployments/decoder.py) sums in another order than sam2's on some inputs, and so does a batched
# encoder pass: FP32 logits then differ from sam2's by up to ~3e-7 (measured on this CPU; bilinear upsampling
# cannot enlarge it). So a pixel may differ from sam2's mask only where sam2's own logit is this close to 0.
LOGIT_NOISE = 1e-4
MIN_IOU = 0.999  # stated and asserted on top: a mask whose edge runs along logit 0 could otherwise differ a lot


def assert_same_mask(ours: np.ndarray, logits: np.ndarray, what: object = "mask") -> None:
    """``ours`` (booleans) is sam2's mask ``logits > 0`` up to LOGIT_NOISE, and neither empty nor full (an
    all-or-nothing mask would make the comparison meaningless)."""
    expected = logits > 0
    assert 0 < ours.sum() < ours.size, f"{what}: degenerate mask ({ours.mean():.3f} of the image)"
    differ = ours != expected
    assert not (differ & (np.abs(logits) > LOGIT_NOISE)).any(), \
        f"{what}: {int(differ.sum())} pixels differ from sam2's mask, some of them far from its threshold"
    assert (ours & expected).sum() / (ours | expected).sum() >= MIN_IOU, what


EPS32 = float(np.finfo(np.float32).eps)
# The widest sum in the mask decoder and its upscaler adds 256 channels' products. Two float32 evaluations of the same
# products in another order typically differ by about sqrt(256) = 16 roundings at the result's scale (the worst case
# grows with the count); four times that is the margin. Measured: 0.5 roundings at the logits' scale for the whole
# decoder, 2.8 for the upscaler's 64-channel product, on this CPU's AVX-512, AVX2 and plain kernels.
ROUNDING_ULPS = 4 * 16


def rounding_tolerance(reference) -> float:
    """How far a float32 re-computation of ``reference`` may lie from it: ROUNDING_ULPS roundings at its scale."""
    return ROUNDING_ULPS * EPS32 * max(float(np.abs(np.asarray(reference, np.float64)).max(initial=0.0)), EPS32)


def assert_equal_within_rounding(ours, reference, what: object = "values") -> None:
    """``ours`` equals ``reference`` up to float32 rounding, and the masks they threshold to (``> 0``) are the same
    except where the reference lies within that rounding of the threshold."""
    ours, reference = np.asarray(ours, np.float64), np.asarray(reference, np.float64)
    assert ours.shape == reference.shape, (what, ours.shape, reference.shape)
    tolerance = rounding_tolerance(reference)
    worst = float(np.abs(ours - reference).max(initial=0.0))
    assert worst <= tolerance, f"{what}: differ by {worst:.3g}, more than float rounding allows ({tolerance:.3g})"
    flipped = (ours > 0) != (reference > 0)
    assert not (flipped & (np.abs(reference) > tolerance)).any(), f"{what}: a thresholded mask differs"


# The preview (deployments/preview.py) stretched over the photo against the full-size mask: the bar.
PREVIEW_MIN_IOU = 0.99


def preview_mask(grey: np.ndarray, scale: float, height: int, width: int) -> np.ndarray:
    """A preview as the web page reads it (app.js, previewAlpha): its logits, (grey - 127.5) / scale, upsampled
    bilinearly (align_corners=False) to the photo's size; > 0 is the mask."""
    import torch
    import torch.nn.functional as F

    logits = (torch.from_numpy(grey.astype(np.float32)) - 127.5) / scale
    return (F.interpolate(logits[None, None], (height, width), mode="bilinear", align_corners=False)[0, 0] > 0).numpy()


def iou(a: np.ndarray, b: np.ndarray) -> float:
    return float((a & b).sum() / max(1, (a | b).sum()))
