"""Our masks against those of sam2's own SAM2ImagePredictor (tests/test_segmenter.py, tests/test_e2e_http.py)."""

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
