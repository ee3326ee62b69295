"""Edge quality of the cut-out: plain upsampling of SAM's 256x256 logits vs the refinements, on a synthetic
set with known ground-truth alpha.

    python -m serve_app.edge_quality              # the full set, prints a JSON table
    python -m serve_app.edge_quality --quick      # a small set (what the test runs)
    bgremove edge-quality [--quick] [--methods guided,closed_form]

Each sample is a subject with an anti-aliased outline, a soft (blurred) stretch of edge and hair-like strands
0.3 to 1.5 pixels wide, composited on a textured background. The coarse input is what SAM at its best could
say: the ground truth reduced to 256x256 (area average, the photo squashed to a square as SAM does), turned
into logits (the logit of the covered fraction, clamped to +-32 as SAM clamps) and upsampled to the photo's
size by the service's own code (``upsample_logits`` + ``soft_alpha``). The refinements see that coarse alpha
and the composited photo, never the ground truth.

Metrics, each per image then averaged: SAD (sum of |alpha - truth| over the image, alpha in [0, 1], / 1000 as
matting papers report it), MSE (mean over the image, x 1e-3), boundary IoU (Cheng et al. 2021: IoU of the
masks at 0.5 within a band of 2% of the diagonal along each contour), and the refinement's milliseconds per
megapixel.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from dataclasses import dataclass

import cv2
import numpy as np

SUPERSAMPLE = 4  # geometry is drawn this many times larger, then area-averaged: exact coverage alpha
FULL_SIZES = ((1024, 768), (1600, 1200), (2048, 1536), (1200, 1600), (1920, 1080), (1280, 960), (1536, 2048),
              (2400, 1600))
QUICK_SIZES = ((1024, 768), (1200, 900))


@dataclass
class Sample:
    rgb: np.ndarray  # (H, W, 3) uint8, the composited photo
    alpha: np.ndarray  # (H, W) float32 in [0, 1], the ground truth
    coarse: np.ndarray  # (H, W) uint8, the service's alpha from 256x256 logits


def _texture(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    """A busy background: multi-scale blurred noise, a grating and a few hard-edged shapes, in colour."""
    image = np.zeros((height, width, 3), np.float32)
    for sigma, weight in ((40, 70), (8, 35), (1.5, 18)):
        noise = rng.normal(size=(height, width, 3)).astype(np.float32)
        noise = cv2.GaussianBlur(noise, (0, 0), sigma)
        image += noise / (noise.std() + 1e-6) * weight
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    angle, period = rng.uniform(0, math.pi), rng.uniform(6, 30)
    image += (np.sin((xx * math.cos(angle) + yy * math.sin(angle)) / period * 2 * math.pi)[..., None]
              * rng.uniform(10, 40, 3).astype(np.float32))
    for _ in range(rng.integers(3, 8)):
        x0, y0 = rng.integers(0, width), rng.integers(0, height)
        cv2.rectangle(image, (int(x0), int(y0)), (int(x0 + rng.integers(20, width // 3)),
                                                   int(y0 + rng.integers(20, height // 3))),
                      rng.uniform(-60, 60, 3).tolist(), -1)
    return image + rng.uniform(50, 200, 3).astype(np.float32)


def _subject_alpha(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    """Ground truth: a wobbly blob with hair-like strands and one stretch of blurred (soft) edge."""
    s = SUPERSAMPLE
    big = np.zeros((height * s, width * s), np.uint8)
    cx, cy = width * rng.uniform(0.4, 0.6), height * rng.uniform(0.4, 0.6)
    radius = min(width, height) * rng.uniform(0.22, 0.3)
    harmonics = [(k, rng.uniform(0, 0.08), rng.uniform(0, 2 * math.pi)) for k in range(2, 7)]

    def r_at(theta):
        return radius * (1 + sum(a * np.cos(k * theta + p) for k, a, p in harmonics))

    thetas = np.linspace(0, 2 * math.pi, 720, endpoint=False)
    outline = np.stack([cx + r_at(thetas) * np.cos(thetas), cy + r_at(thetas) * np.sin(thetas)], -1)
    cv2.fillPoly(big, [np.round(outline * s).astype(np.int32)], 255, cv2.LINE_8)

    # Strands leave the outline over part of it (hair on a head, fur on a back), bending as they go.
    start = rng.uniform(0, 2 * math.pi)
    span = rng.uniform(0.6, 1.4) * math.pi
    for _ in range(int(rng.integers(120, 220))):
        theta = start + rng.uniform(0, span)
        r0 = r_at(theta) * 0.97
        x, y = cx + r0 * math.cos(theta), cy + r0 * math.sin(theta)
        heading = theta + rng.normal(0, 0.35)
        bend = rng.normal(0, 0.02)
        length = radius * rng.uniform(0.08, 0.35)
        steps = max(4, int(length / 3))
        points = []
        for _ in range(steps + 1):
            points.append((x, y))
            x, y = x + math.cos(heading) * length / steps, y + math.sin(heading) * length / steps
            heading += bend + rng.normal(0, 0.03)
        thickness = int(rng.integers(1, 7))  # 0.25 to 1.5 photo pixels
        opacity = int(255 * rng.uniform(0.6, 1.0))
        pts = np.round(np.array(points) * s).astype(np.int32)
        cv2.polylines(big, [pts], False, opacity, thickness, cv2.LINE_8)
    alpha = cv2.resize(big, (width, height), interpolation=cv2.INTER_AREA).astype(np.float32) / 255.0

    # A soft stretch of edge (motion blur, out of focus) opposite the strands.
    blurred = cv2.GaussianBlur(alpha, (0, 0), rng.uniform(2.0, 6.0))
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    angle = np.arctan2(yy - cy, xx - cx)
    opposite = start + span / 2 + math.pi
    weight = np.clip(np.cos(angle - opposite) * 2 - 1, 0, 1).astype(np.float32)
    return np.clip(alpha * (1 - weight) + blurred * weight, 0, 1)


def coarse_logits(alpha: np.ndarray) -> np.ndarray:
    """The best 256x256 logits SAM could give for this ground truth: the logit of each cell's covered fraction."""
    low = cv2.resize(alpha, (256, 256), interpolation=cv2.INTER_AREA).astype(np.float64)
    low = np.clip(low, 1e-14, 1 - 1e-14)
    return np.clip(np.log(low / (1 - low)), -32, 32).astype(np.float32)


def coarse_alpha(alpha: np.ndarray) -> np.ndarray:
    """What the service makes of those logits: its own upsampling and soft alpha."""
    from deployments.postprocess import soft_alpha, upsample_logits

    return soft_alpha(upsample_logits(coarse_logits(alpha), *alpha.shape))


def make_sample(seed: int, width: int, height: int) -> Sample:
    rng = np.random.default_rng(seed)
    alpha = _subject_alpha(rng, height, width)
    background = _texture(rng, height, width)
    foreground = _texture(rng, height, width) * 0.4 + rng.uniform(30, 230, 3).astype(np.float32)
    a = alpha[..., None]
    rgb = np.clip(foreground * a + background * (1 - a) + rng.normal(0, 2, background.shape), 0, 255)
    return Sample(rgb.round().astype(np.uint8), alpha, coarse_alpha(alpha))


def synthetic_set(sizes=FULL_SIZES, seed: int = 0) -> list[Sample]:
    return [make_sample(seed + i, w, h) for i, (w, h) in enumerate(sizes)]


# -- metrics ----------------------------------------------------------------------------------------------------

def sad(pred: np.ndarray, truth: np.ndarray) -> float:
    return float(np.abs(pred.astype(np.float64) - truth).sum() / 1000.0)


def mse(pred: np.ndarray, truth: np.ndarray) -> float:
    return float(((pred.astype(np.float64) - truth) ** 2).mean() * 1000.0)


def _boundary(mask: np.ndarray, dilation_ratio: float = 0.02) -> np.ndarray:
    """The band inside a mask's contour, as boundary-iou-api's mask_to_boundary takes it."""
    height, width = mask.shape
    d = max(1, int(round(dilation_ratio * math.hypot(height, width))))
    padded = cv2.copyMakeBorder(mask.astype(np.uint8), 1, 1, 1, 1, cv2.BORDER_CONSTANT, value=0)
    eroded = cv2.erode(padded, np.ones((3, 3), np.uint8), iterations=d)[1:-1, 1:-1]
    return mask & ~eroded.astype(bool)


def boundary_iou(pred: np.ndarray, truth: np.ndarray) -> float:
    a, b = _boundary(pred >= 0.5), _boundary(truth >= 0.5)
    union = (a | b).sum()
    return float((a & b).sum() / union) if union else 1.0


# -- the measurement --------------------------------------------------------------------------------------------

def measure(samples: list[Sample], methods=("guided", "closed_form")) -> dict:
    from deployments.refine import refine_alpha

    rows: dict[str, dict[str, list[float]]] = {"upsampling": {"sad": [], "mse": [], "boundary_iou": []}}
    for method in methods:
        rows[method] = {"sad": [], "mse": [], "boundary_iou": [], "ms_per_mp": []}
        # Compile once before timing (closed_form's numba kernels), as a long-running replica would have.
        refine_alpha(samples[0].rgb[:64, :64], samples[0].coarse[:64, :64] // 2 + 64, method)
    for sample in samples:
        megapixels = sample.alpha.size / 1e6
        candidates = {"upsampling": (sample.coarse, None)}
        for method in methods:
            start = time.perf_counter()
            refined = refine_alpha(sample.rgb, sample.coarse, method)
            candidates[method] = (refined, (time.perf_counter() - start) * 1000 / megapixels)
        for name, (alpha8, ms_per_mp) in candidates.items():
            pred = alpha8.astype(np.float64) / 255.0
            rows[name]["sad"].append(sad(pred, sample.alpha))
            rows[name]["mse"].append(mse(pred, sample.alpha))
            rows[name]["boundary_iou"].append(boundary_iou(pred, sample.alpha))
            if ms_per_mp is not None:
                rows[name]["ms_per_mp"].append(ms_per_mp)
    base_sad = float(np.mean(rows["upsampling"]["sad"]))
    table = {}
    for name, values in rows.items():
        row = {key: round(float(np.mean(v)), 4) for key, v in values.items()}
        row["sad_vs_upsampling"] = round(float(np.mean(values["sad"])) / base_sad - 1.0, 4) + 0.0  # no "-0.0"
        row["sad_per_image"] = [round(v, 3) for v in values["sad"]]
        table[name] = row
    return {"images": [list(s.alpha.shape[::-1]) for s in samples],
            "megapixels": round(sum(s.alpha.size for s in samples) / 1e6, 2),
            "units": {"sad": "sum |alpha - truth| / 1000", "mse": "x 1e-3", "boundary_iou": "0..1, 2% band",
                      "ms_per_mp": "refinement only, this machine", "sad_vs_upsampling": "relative change"},
            "methods": table}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="edge_quality", description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="two smaller images instead of the full set")
    parser.add_argument("--methods", default="guided,closed_form", help="comma-separated: guided, closed_form")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    methods = tuple(m for m in args.methods.split(",") if m)
    samples = synthetic_set(QUICK_SIZES if args.quick else FULL_SIZES, seed=args.seed)
    json.dump(measure(samples, methods), sys.stdout, indent=2)
    print()
    return 0


if __name__ == "__main__":
    sys.exit(main())
