"""Each edge method (plain or refined, photo or estimated colours) run through ``deployments.edges.cutout_edge``
on synthetic photos and scored against their known alpha and colours."""

from __future__ import annotations

import time
from dataclasses import replace
from pathlib import Path

import numpy as np

from deployments.edges import DEFAULT_SETTINGS, EdgeSettings, cutout_edge, decontaminate, warm_up

from . import metrics
from .tables import by_size, seconds_per_mp, size_groups
from .synthetic import Sample

# (name, refine, decontaminate): "plain" is the baseline, SAM's upsampled logits with the photo's own colours.
METHODS = (("plain", False, False), ("plain_colours", False, True), ("refined", True, False),
           ("refined_colours", True, True))
NEW_BACKGROUNDS = ((255, 255, 255), (0, 0, 0), (0, 160, 255), (255, 80, 0))


def new_background(sample: Sample) -> tuple[int, int, int]:
    """The plain colour, of a few, farthest from the photo's own background (so that a halo shows)."""
    behind = sample.rgb[sample.alpha < 0.01].reshape(-1, 3)[::97].mean(0)
    return max(NEW_BACKGROUNDS, key=lambda c: float(np.abs(np.asarray(c) - behind).sum()))


def band_radius(sample: Sample) -> int:
    """Two logit cells: the edge band covers an outline SAM put up to two cells off."""
    return max(1, round(2 * max(sample.alpha.shape) / 256))


def score(sample: Sample, alpha8: np.ndarray, colours: np.ndarray, band: np.ndarray) -> dict:
    pred = alpha8.astype(np.float32) / 255.0
    band_error, image_error = metrics.composite_error(colours, pred, sample.foreground, sample.alpha,
                                                      new_background(sample), band)
    return {"sad": metrics.sad(pred, sample.alpha), "mse": metrics.mse(pred, sample.alpha),
            "gradient": metrics.gradient_error(pred, sample.alpha),
            "boundary_iou": metrics.boundary_iou(pred, sample.alpha),
            "composite_band": band_error, "composite_image": image_error}


TIMING_RUNS = 3


def timed_method(sample: Sample, refine: bool, settings: EdgeSettings, runs: int | None = None):
    """(alpha, colours, wall ms, CPU ms of this process), each time the least of ``runs`` runs: on a shared
    machine torch's threads wait for each other while another process holds a core, which adds CPU time
    (spinning) as well as wall time, so a single run can read several times too high. The refined edge's
    diagnostics (the guard's verdict among them) go into ``sample.cache["diagnostics"]``."""
    walls, cpus = [], []
    for _ in range(runs or TIMING_RUNS):
        diagnostics: dict = {}
        start, cpu = time.perf_counter(), time.process_time()
        alpha, colours = cutout_edge(sample.rgb, sample.logits, refine, settings=settings, diagnostics=diagnostics)
        walls.append((time.perf_counter() - start) * 1000)
        cpus.append((time.process_time() - cpu) * 1000)
        if refine:
            sample.cache["diagnostics"] = diagnostics
    return alpha, colours, min(walls), min(cpus)


def measure(samples: list[Sample], settings: EdgeSettings = DEFAULT_SETTINGS, methods=METHODS,
            reuse_plain: bool = False, runs: int | None = None) -> dict:
    """Per method: each metric's mean over the photos, the per-photo values of SAD and band composite error,
    how many photos got worse than plain, and milliseconds per megapixel (total time / total megapixels).
    ``reuse_plain`` keeps plain's scores and time from an earlier call on the same samples (the tuning grid)."""
    per_photo: dict[str, list[dict]] = {name: [] for name, _, _ in methods}
    guard: list[dict] = []
    elapsed = {name: 0.0 for name, _, _ in methods}
    cpu = {name: 0.0 for name, _, _ in methods}
    for sample in samples:
        if sample.cache.get("band") is None:
            sample.cache["band"] = metrics.edge_band(sample.alpha, band_radius(sample))
        band = sample.cache["band"]
        alphas = {}  # colours never change alpha (tests/test_edges.py): a photo-colours row reuses its alpha
        for name, refine, colours in sorted(methods, key=lambda m: not m[2]):
            if name == "plain" and reuse_plain and "plain" in sample.cache:
                result, ms, cpu_ms = sample.cache["plain"]
            elif not colours and refine in alphas and name != "plain":
                result, ms, cpu_ms = score(sample, alphas[refine], sample.rgb, band), None, None
            else:
                alpha, out, ms, cpu_ms = timed_method(sample, refine, replace(settings, decontaminate=colours), runs)
                alphas[refine] = alpha
                result = score(sample, alpha, out, band)
                if name == "plain":
                    sample.cache["plain"] = (result, ms, cpu_ms)
            per_photo[name].append({**result, "ms": ms, "cpu_ms": cpu_ms})
            if ms is None:  # not run on its own: timed with its colours
                elapsed[name] = cpu[name] = None
            elif elapsed[name] is not None:
                elapsed[name] += ms
                cpu[name] += cpu_ms
        if any(refine for _, refine, _ in methods):
            found = sample.cache.get("diagnostics", {})
            guard.append({"seed": sample.seed, "fired": found.get("guard"), **{
                key: found.get(key) for key in ("verdict", "residual", "displacement_cells", "alignment",
                                                "plain_alignment", "refine_mp", "band_pixels")}})
    megapixels = sum(s.megapixels for s in samples)
    table = {}
    base = per_photo["plain"]
    for name, _, _ in methods:
        rows = per_photo[name]
        row = {key: round(float(np.mean([r[key] for r in rows])), 4) for key in rows[0] if key not in ("ms", "cpu_ms")}
        row["ms_per_mp"] = None if elapsed[name] is None else round(elapsed[name] / megapixels, 1)
        row["cpu_ms_per_mp"] = None if cpu[name] is None else round(cpu[name] / megapixels, 1)
        for key in ("sad", "composite_band"):
            row[f"{key}_vs_plain"] = round(row[key] / float(np.mean([r[key] for r in base])) - 1.0, 4) + 0.0
            row[f"{key}_per_photo"] = [round(r[key], 3) for r in rows]
            row[f"{key}_worse_than_plain"] = sum(r[key] > b[key] for r, b in zip(rows, base))
        table[name] = row
    photos = [{"seed": s.seed, "size": list(s.alpha.shape[::-1]), "features": list(s.features)} for s in samples]
    return {"photos": photos, "megapixels": round(megapixels, 2), "methods": table,
            "sizes": by_size(samples, per_photo), "guard": {"fired": sum(bool(g["fired"]) for g in guard),
                                                            "per_photo": guard}}


def colour_check(samples: list[Sample], settings: EdgeSettings = DEFAULT_SETTINGS) -> dict:
    """Colour estimation on its own: with the true alpha, estimated colours against the photo's own."""
    own, estimated = [], []
    for sample in samples:
        band = metrics.edge_band(sample.alpha, band_radius(sample))
        truth8 = np.round(sample.alpha * 255).astype(np.uint8)
        pred = truth8.astype(np.float32) / 255.0
        background = new_background(sample)
        for colours, out in ((sample.rgb, own), (decontaminate(sample.rgb, truth8, settings), estimated)):
            out.append(metrics.composite_error(colours, pred, sample.foreground, sample.alpha, background, band)[0])
    return {"composite_band_photo_colours": round(float(np.mean(own)), 3),
            "composite_band_estimated_colours": round(float(np.mean(estimated)), 3),
            "change": round(float(np.mean(estimated)) / float(np.mean(own)) - 1.0, 4)}


def first_and_tenth(sample: Sample) -> dict:
    """A replica's start: warm_up() as PostprocessDeployment.__init__ runs it, then ten refined requests."""
    start = time.perf_counter()
    warm_up()
    warm_ms = (time.perf_counter() - start) * 1000
    times = [timed_method(sample, True, DEFAULT_SETTINGS, runs=1)[2] for _ in range(10)]  # each request once
    return {"photo": list(sample.alpha.shape[::-1]), "warm_up_ms": round(warm_ms, 1),
            "first_ms": round(times[0], 1), "tenth_ms": round(times[9], 1),
            "median_ms": round(float(np.median(times)), 1)}


def cpu_per_size(samples: list[Sample], settings: EdgeSettings = DEFAULT_SETTINGS) -> dict:
    """Refined + colours only, per size: CPU and wall seconds per megapixel, each photo the least of three runs
    (``timed_method``). For a quiet machine: the quality run's timings share the machine with its own scoring."""
    rows = [dict(zip(("ms", "cpu_ms"), timed_method(sample, True, settings)[2:])) for sample in samples]
    return {str(group): {"photos": len(index), **seconds_per_mp([rows[i] for i in index],
                                                                sum(samples[i].megapixels for i in index))}
            for group, index in size_groups([s.megapixels for s in samples]).items()}


def render_crop(sample: Sample, path: Path, settings: EdgeSettings = DEFAULT_SETTINGS) -> dict:
    """Side by side on white, 3x enlarged: plain (left) and refined + colour-estimated (right), around the
    spot where plain's composite error is largest."""
    import cv2
    from PIL import Image

    white = (255, 255, 255)
    plain_alpha, _ = cutout_edge(sample.rgb, sample.logits, False, settings=replace(settings, decontaminate=False))
    alpha, colours = cutout_edge(sample.rgb, sample.logits, True, settings=settings)
    truth = metrics.composite(sample.foreground, sample.alpha, white)
    error = np.abs(metrics.composite(sample.rgb, plain_alpha / 255.0, white) - truth).mean(-1)
    h, w = 160, 200
    score_map = cv2.blur(error, (w, h))
    y, x = np.unravel_index(int(np.argmax(score_map[h // 2:-h // 2, w // 2:-w // 2])), (score_map.shape[0] - h,
                                                                                      score_map.shape[1] - w))
    crops = []
    for image in (metrics.composite(sample.rgb, plain_alpha / 255.0, white), metrics.composite(colours, alpha / 255.0, white)):
        crop = np.clip(image[y:y + h, x:x + w], 0, 255).round().astype(np.uint8)
        crops.append(np.kron(crop, np.ones((3, 3, 1), np.uint8)))
    gap = np.full((h * 3, 8, 3), 128, np.uint8)
    Image.fromarray(np.concatenate([crops[0], gap, crops[1]], 1)).save(path)
    return {"path": str(path), "seed": sample.seed, "box": [int(x), int(y), w, h]}
