"""Synthetic photos with known alpha and known subject colours, and SAM-like coarse logits for them.

Several generators, so that a method tuned on one kind of picture is not graded on the same kind only:

- backgrounds: ``studio`` (smooth two-colour gradient, vignette, sensor noise) and ``cluttered`` (multi-scale
  colour noise, a grating, hard-edged rectangles);
- subjects: a wobbly body with, by chance, fur/hair strands (0.25-1.5 px) on part of its outline, a soft
  (motion / defocus) stretch of edge, thin limbs a fraction of a logit cell wide, and holes;
- colours: the subject's colour sometimes nearly matches the background's;
- sizes: 1, 2, 4, 8 and 12 megapixels, four photos each (two studio, two cluttered).

The coarse input looks like SAM's rather than like the truth: the truth's coverage of each 256x256 cell (the
photo squashed to a square as SAM does) is pushed through a steep tanh (logits of +-10..20 that flip within
one cell); in two or three angular sectors the outline is moved out or in by one to two cells; small spurious
blobs appear next to the subject; and what covers less than half a cell (strands, thin limbs) is missed.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import cv2
import numpy as np

LOW_RES = 256
# Five sizes people send (1, 2, 4, 8 and 12 MP), four photos each: studio and cluttered backgrounds, landscape
# and portrait. Seed i of either half (counted from the half's first seed) gets SIZES[i]; the background
# alternates with the seed, so every size has two of each.
SIZE_GROUPS = {1: ((1152, 864), (864, 1152)), 2: ((1632, 1224), (1224, 1632)), 4: ((2304, 1728), (1728, 2304)),
               8: ((3264, 2448), (2448, 3264)), 12: ((4000, 3000), (3000, 4000))}
SIZES = tuple(size for pair in SIZE_GROUPS.values() for size in (pair[0], pair[0], pair[1], pair[1]))
TUNING_SEEDS = tuple(range(100, 100 + len(SIZES)))
REPORT_SEEDS = tuple(range(0, len(SIZES)))
QUICK_SIZES = ((1152, 864), (864, 1152))  # 1 MP, landscape and portrait: `--small`, the grid
BACKGROUNDS = ("studio", "cluttered")


@dataclass
class Sample:
    seed: int
    background_kind: str
    rgb: np.ndarray  # (H, W, 3) uint8, the photo
    alpha: np.ndarray  # (H, W) float32 in [0, 1], the truth
    foreground: np.ndarray  # (H, W, 3) uint8, the subject's true colour everywhere
    logits: np.ndarray  # (256, 256) float32, SAM-like coarse logits
    features: tuple[str, ...] = ()
    cache: dict = field(default_factory=dict, repr=False)  # what the benchmark computes once per photo

    @property
    def megapixels(self) -> float:
        return self.alpha.size / 1e6


def _smooth_noise(rng, height, width, sigma, channels=3) -> np.ndarray:
    """Unit-variance noise blurred at ``sigma`` pixels, drawn small and resized when sigma is large (fast)."""
    factor = max(1, int(sigma // 4))
    h, w = max(2, height // factor), max(2, width // factor)
    if factor == 1 and h * w > 1 << 20:  # fine grain: one 1024x1024 tile repeated is enough and much faster
        tile = _smooth_noise(rng, 1024, 1024, sigma, channels)
        return np.tile(tile, (height // 1024 + 1, width // 1024 + 1, 1))[:height, :width]
    noise = cv2.GaussianBlur(rng.standard_normal((h, w, channels), np.float32), (0, 0), sigma / factor)
    if factor > 1:
        noise = cv2.resize(noise, (width, height), interpolation=cv2.INTER_LINEAR)
    noise = noise.reshape(height, width, channels)
    return noise / (noise[::4, ::4].std() + 1e-6)


def _cluttered(rng, height, width, scale) -> np.ndarray:
    image = np.zeros((height, width, 3), np.float32)
    for sigma, weight in ((40 * scale, 70), (8 * scale, 35), (1.5, 18)):
        image += _smooth_noise(rng, height, width, sigma) * weight
    yy, xx = np.ogrid[0:height, 0:width]
    yy, xx = yy.astype(np.float32), xx.astype(np.float32)
    angle, period = rng.uniform(0, math.pi), rng.uniform(6, 30) * scale
    image += (np.sin((xx * math.cos(angle) + yy * math.sin(angle)) / period * 2 * math.pi)[..., None]
              * rng.uniform(10, 40, 3).astype(np.float32))
    for _ in range(rng.integers(3, 8)):
        x0, y0 = int(rng.integers(0, width)), int(rng.integers(0, height))
        cv2.rectangle(image, (x0, y0), (x0 + int(rng.integers(20, width // 3)), y0 + int(rng.integers(20, height // 3))),
                      rng.uniform(-60, 60, 3).tolist(), -1)
    return image + rng.uniform(50, 200, 3).astype(np.float32)


def _studio(rng, height, width, scale) -> np.ndarray:
    yy, xx = np.ogrid[0:height, 0:width]
    yy, xx = yy.astype(np.float32), xx.astype(np.float32)
    angle = rng.uniform(0, 2 * math.pi)
    t = ((xx / width - 0.5) * math.cos(angle) + (yy / height - 0.5) * math.sin(angle) + 0.5)[..., None]
    top, bottom = rng.uniform(40, 230, 3), rng.uniform(40, 230, 3)
    image = (top * (1 - t) + bottom * t).astype(np.float32)
    vignette = 1 - 0.25 * (((xx / width - 0.5) ** 2 + (yy / height - 0.5) ** 2) * 2)[..., None]
    return image * vignette + _smooth_noise(rng, height, width, 60 * scale) * 6


def _body(rng, height, width, s) -> tuple[np.ndarray, tuple[float, float, float], callable]:
    big = np.zeros((height * s, width * s), np.uint8)
    cx, cy = width * rng.uniform(0.4, 0.6), height * rng.uniform(0.4, 0.6)
    radius = min(width, height) * rng.uniform(0.2, 0.3)
    harmonics = [(k, rng.uniform(0, 0.08), rng.uniform(0, 2 * math.pi)) for k in range(2, 7)]

    def r_at(theta):
        return radius * (1 + sum(a * np.cos(k * theta + p) for k, a, p in harmonics))

    thetas = np.linspace(0, 2 * math.pi, 720, endpoint=False)
    outline = np.stack([cx + r_at(thetas) * np.cos(thetas), cy + r_at(thetas) * np.sin(thetas)], -1)
    cv2.fillPoly(big, [np.round(outline * s).astype(np.int32)], 255, cv2.LINE_8)
    return big, (cx, cy, radius), r_at


def _polyline(big, rng, start, heading, length, s, thickness, value, bend_sd=0.03):
    x, y = start
    steps = max(4, int(length / 3))
    points, bend = [], rng.normal(0, 0.02)
    for _ in range(steps + 1):
        points.append((x, y))
        x, y = x + math.cos(heading) * length / steps, y + math.sin(heading) * length / steps
        heading += bend + rng.normal(0, bend_sd)
    cv2.polylines(big, [np.round(np.array(points) * s).astype(np.int32)], False, value, thickness, cv2.LINE_8)


def _subject(rng, height, width) -> tuple[np.ndarray, tuple[float, float], tuple[str, ...]]:
    s = 4 if height * width <= 2.2e6 else 2  # supersampling: geometry drawn s times larger, then area-averaged
    big, (cx, cy, radius), r_at = _body(rng, height, width, s)
    features = []
    cell = max(height, width) / LOW_RES
    if rng.random() < 0.5:  # holes (a handle, the gap under an arm)
        features.append("holes")
        for _ in range(int(rng.integers(1, 3))):
            theta, dist = rng.uniform(0, 2 * math.pi), radius * rng.uniform(0.2, 0.5)
            axes = (int(radius * rng.uniform(0.08, 0.2) * s), int(radius * rng.uniform(0.05, 0.15) * s))
            centre = (int((cx + dist * math.cos(theta)) * s), int((cy + dist * math.sin(theta)) * s))
            cv2.ellipse(big, centre, axes, rng.uniform(0, 180), 0, 360, 0, -1)
    if rng.random() < 0.6:  # thin limbs: antennae, straps, legs, a fraction of a logit cell wide
        features.append("thin")
        for _ in range(int(rng.integers(2, 5))):
            theta = rng.uniform(0, 2 * math.pi)
            r0 = r_at(theta) * 0.95
            _polyline(big, rng, (cx + r0 * math.cos(theta), cy + r0 * math.sin(theta)), theta + rng.normal(0, 0.3),
                      radius * rng.uniform(0.3, 0.7), s, max(1, int(cell * s * rng.uniform(0.2, 0.8))), 255, 0.01)
    start, span = rng.uniform(0, 2 * math.pi), rng.uniform(0.5, 1.3) * math.pi
    if rng.random() < 0.75:  # fur or hair on part of the outline
        features.append("hair")
        for _ in range(int(rng.integers(120, 260))):
            theta = start + rng.uniform(0, span)
            r0 = r_at(theta) * 0.97
            _polyline(big, rng, (cx + r0 * math.cos(theta), cy + r0 * math.sin(theta)), theta + rng.normal(0, 0.35),
                      radius * rng.uniform(0.06, 0.3), s, int(rng.integers(1, 7)) * s // 4 or 1,
                      int(255 * rng.uniform(0.6, 1.0)))
    alpha = cv2.resize(big, (width, height), interpolation=cv2.INTER_AREA).astype(np.float32) / 255.0
    if rng.random() < 0.6:  # a soft stretch of edge (motion blur, out of focus) away from the hair
        features.append("soft")
        blurred = cv2.GaussianBlur(alpha, (0, 0), cell * rng.uniform(0.3, 1.0))
        yy, xx = np.ogrid[0:height, 0:width]
        angle = np.arctan2(yy.astype(np.float32) - cy, xx.astype(np.float32) - cx)
        weight = np.clip(np.cos(angle - (start + span / 2 + math.pi)) * 2 - 1, 0, 1).astype(np.float32)
        alpha = np.clip(alpha * (1 - weight) + blurred * weight, 0, 1)
    return alpha, (cx, cy), tuple(features)


def sam_like_logits(alpha: np.ndarray, centre: tuple[float, float], rng: np.random.Generator) -> np.ndarray:
    """What SAM might answer for this truth (see the module's docstring): steep, locally a cell or two off."""
    height, width = alpha.shape
    coverage = cv2.resize(alpha, (LOW_RES, LOW_RES), interpolation=cv2.INTER_AREA)
    yy, xx = np.mgrid[0:LOW_RES, 0:LOW_RES].astype(np.float32)
    angle = np.arctan2((yy + 0.5) / LOW_RES * height - centre[1], (xx + 0.5) / LOW_RES * width - centre[0])
    moved = coverage.copy()
    for _ in range(int(rng.integers(2, 4))):  # sectors where the outline is one or two cells off
        cells = int(rng.integers(1, 3))
        kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * cells + 1, 2 * cells + 1))
        shifted = cv2.dilate(coverage, kernel) if rng.random() < 0.5 else cv2.erode(coverage, kernel)
        middle, half = rng.uniform(-math.pi, math.pi), rng.uniform(0.2, 0.6)
        sector = np.abs(np.angle(np.exp(1j * (angle - middle)))) < half
        moved[sector] = shifted[sector]
    amplitude, steepness = rng.uniform(10, 20), rng.uniform(4, 8)
    logits = amplitude * np.tanh(steepness * (moved - 0.5))
    logits += cv2.GaussianBlur(rng.normal(0, 1.5, logits.shape).astype(np.float32), (0, 0), 1.0)
    for _ in range(int(rng.integers(1, 4))):  # small spurious blobs near the subject
        r = rng.uniform(1, 2.5)
        x, y = rng.uniform(0.2, 0.8) * LOW_RES, rng.uniform(0.2, 0.8) * LOW_RES
        blob = np.exp(-((xx - x) ** 2 + (yy - y) ** 2) / (2 * r * r))
        logits = np.where((blob > 0.3) & (moved < 0.05), amplitude * 0.6 * blob, logits)
    return logits.astype(np.float32)


def make_sample(seed: int, width: int, height: int) -> Sample:
    rng = np.random.default_rng(seed)
    kind = BACKGROUNDS[seed % 2]
    scale = math.sqrt(width * height / 1e6)
    alpha, centre, features = _subject(rng, height, width)
    background = (_studio if kind == "studio" else _cluttered)(rng, height, width, scale)
    base = rng.uniform(30, 230, 3).astype(np.float32)
    if rng.random() < 0.3:  # the subject nearly matches what is behind it
        features += ("near_colours",)
        base = np.clip(background.reshape(-1, 3).mean(0) + rng.uniform(-25, 25, 3), 20, 235).astype(np.float32)
    texture = _smooth_noise(rng, height, width, 6 * scale) * 12 + _smooth_noise(rng, height, width, 1.0) * 6
    foreground = np.clip(texture + base, 0, 255)
    a = alpha[..., None]
    photo = foreground * a + background * (1 - a) + _smooth_noise(rng, height, width, 0.5, 1) * 2
    return Sample(seed, kind, np.clip(photo, 0, 255).round().astype(np.uint8), alpha,
                  foreground.round().astype(np.uint8), sam_like_logits(alpha, centre, rng), (kind, *features))


def size_of(seed: int) -> tuple[int, int]:
    """The photo size (width, height) seed ``seed`` of either half gets."""
    return SIZES[(seed - (TUNING_SEEDS[0] if seed >= TUNING_SEEDS[0] else REPORT_SEEDS[0])) % len(SIZES)]


def sample_set(seeds, sizes=None) -> list[Sample]:
    """The photos of these seeds, each at its own size (``size_of``), or at ``sizes`` in turn when given."""
    return [make_sample(seed, *(size_of(seed) if sizes is None else sizes[i % len(sizes)]))
            for i, seed in enumerate(seeds)]
