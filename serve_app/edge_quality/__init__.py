"""Edge quality of the cut-out on synthetic photos with known alpha and colours: plain upsampling of SAM's
logits against the colour-estimated and the refined edge, all through ``deployments.edges.cutout_edge``.

    bgremove edge-quality                 # tuning and report halves with the defaults: one JSON object
    bgremove edge-quality --quick         # four 1 MP report photos (what the tests use)
    bgremove edge-quality --tune          # the grid search on the tuning half (docs/benchmarks/edges-tuning.json)

Seeds are split: ``TUNING_SEEDS`` chose every setting in ``EdgeSettings``; ``REPORT_SEEDS`` are what the
README reports. See ``synthetic.py`` for how the photos and SAM-like logits are made, ``metrics.py`` for the
metrics.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import asdict, replace
from pathlib import Path

import numpy as np

from deployments.edges import DEFAULT_SETTINGS, EdgeSettings, cutout_edge, decontaminate, warm_up

from . import metrics
from .synthetic import REPORT_SEEDS, SIZES, TUNING_SEEDS, Sample, sample_set

QUICK_SIZES = ((1152, 864), (864, 1152))
# The grid search runs on six tuning seeds at 1 MP (matting works at <= 1 MP whatever the photo's size, and
# every setting is in logit cells or working pixels), which keeps it within minutes on a shared 2-core CPU.
TUNING_SIZES = SIZES[:8]
GRID_SEEDS, GRID_SIZES = TUNING_SEEDS[:6], QUICK_SIZES
# (name, refine, decontaminate): "plain" is the service before this work (upsampled logits, photo colours).
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


def run_method(sample: Sample, refine: bool, settings: EdgeSettings) -> tuple[np.ndarray, np.ndarray, float]:
    alpha, colours, ms, _ = timed_method(sample, refine, settings)
    return alpha, colours, ms


TIMING_RUNS = 3


def timed_method(sample: Sample, refine: bool, settings: EdgeSettings, runs: int = TIMING_RUNS):
    """(alpha, colours, wall ms, CPU ms of this process), each time the least of ``runs`` runs: on a shared
    machine torch's threads wait for each other while another process holds a core, which adds CPU time
    (spinning) as well as wall time, so a single run can read several times too high."""
    walls, cpus = [], []
    for _ in range(runs):
        start, cpu = time.perf_counter(), time.process_time()
        alpha, colours = cutout_edge(sample.rgb, sample.logits, refine, settings=settings)
        walls.append((time.perf_counter() - start) * 1000)
        cpus.append((time.process_time() - cpu) * 1000)
    return alpha, colours, min(walls), min(cpus)


def measure(samples: list[Sample], settings: EdgeSettings = DEFAULT_SETTINGS, methods=METHODS,
            reuse_plain: bool = False) -> dict:
    """Per method: each metric's mean over the photos, the per-photo values of SAD and band composite error,
    how many photos got worse than plain, and milliseconds per megapixel (total time / total megapixels).
    ``reuse_plain`` keeps plain's scores and time from an earlier call on the same samples (the tuning grid)."""
    per_photo: dict[str, list[dict]] = {name: [] for name, _, _ in methods}
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
                alpha, out, ms, cpu_ms = timed_method(sample, refine, replace(settings, decontaminate=colours))
                alphas[refine] = alpha
                result = score(sample, alpha, out, band)
                if name == "plain":
                    sample.cache["plain"] = (result, ms, cpu_ms)
            per_photo[name].append(result)
            if ms is None:  # not run on its own: timed with its colours
                elapsed[name] = cpu[name] = None
            elif elapsed[name] is not None:
                elapsed[name] += ms
                cpu[name] += cpu_ms
    megapixels = sum(s.megapixels for s in samples)
    table = {}
    base = per_photo["plain"]
    for name, _, _ in methods:
        rows = per_photo[name]
        row = {key: round(float(np.mean([r[key] for r in rows])), 4) for key in rows[0]}
        row["ms_per_mp"] = None if elapsed[name] is None else round(elapsed[name] / megapixels, 1)
        row["cpu_ms_per_mp"] = None if cpu[name] is None else round(cpu[name] / megapixels, 1)
        for key in ("sad", "composite_band"):
            row[f"{key}_vs_plain"] = round(row[key] / float(np.mean([r[key] for r in base])) - 1.0, 4) + 0.0
            row[f"{key}_per_photo"] = [round(r[key], 3) for r in rows]
            row[f"{key}_worse_than_plain"] = sum(r[key] > b[key] for r, b in zip(rows, base))
        table[name] = row
    return {"photos": [{"seed": s.seed, "size": list(s.alpha.shape[::-1]), "features": list(s.features)}
                       for s in samples],
            "megapixels": round(megapixels, 2), "methods": table}


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
    times = [run_method(sample, True, DEFAULT_SETTINGS)[2] for _ in range(10)]
    return {"photo": list(sample.alpha.shape[::-1]), "warm_up_ms": round(warm_ms, 1),
            "first_ms": round(times[0], 1), "tenth_ms": round(times[9], 1),
            "median_ms": round(float(np.median(times)), 1)}


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


# -- tuning: a staged grid on the tuning half only --------------------------------------------------------------

GRID = (
    ("band", "refined", "sad", {"unknown_logit": (2.0, 4.0, 8.0), "band_cells": (1.0, 2.0, 3.0)}),
    ("iterations", "refined", "sad", {"iterations": (30, 60, 120)}),
    ("colours", "refined_colours", "composite_band", {"colour_megapixels": (0.25, 0.5, 1.0)}),
    ("guide", "refined_colours", "composite_band", {"guide_radius": (1, 2, 4), "guide_epsilon": (1e-6, 1e-4, 1e-2)}),
    ("levels", "refined_colours", "composite_band", {"alpha_low": (0.0, 0.03, 0.08), "alpha_high": (1.0, 0.97, 0.92)}),
)


def _combinations(axes: dict) -> list[dict]:
    combos = [{}]
    for key, values in axes.items():
        combos = [{**c, key: v} for c in combos for v in values]
    return combos


def tune(samples: list[Sample], settings: EdgeSettings = EdgeSettings()) -> dict:
    """Each stage searches its axes with the earlier stages' picks fixed; the objective is the mean over the
    photos of the metric relative to plain (so a 12 MP photo does not outweigh the others)."""
    methods = {name: (name, refine, colours) for name, refine, colours in METHODS}
    stages = []
    for stage, method, metric, axes in GRID:
        results = []
        for combo in _combinations(axes):
            candidate = replace(settings, **combo)
            print(stage, combo, file=sys.stderr, flush=True)
            table = measure(samples, candidate, (methods["plain"], methods[method]), reuse_plain=True)["methods"]
            relative = float(np.mean(np.asarray(table[method][f"{metric}_per_photo"])
                                     / np.asarray(table["plain"][f"{metric}_per_photo"]))) - 1.0
            results.append({**combo, f"{metric}_vs_plain_mean_per_photo": round(relative, 4),
                            "ms_per_mp": table[method]["ms_per_mp"]})
        best = min(results, key=lambda r: r[f"{metric}_vs_plain_mean_per_photo"])
        settings = replace(settings, **{key: best[key] for key in axes})
        stages.append({"stage": stage, "method": method, "objective": f"{metric} relative to plain",
                       "searched": results, "picked": {key: best[key] for key in axes}})
    budgets = []
    for budget in (0.25, 0.5, 1.0):  # what the matting budget costs in quality and buys in time
        print(f"budget {budget}", file=sys.stderr, flush=True)
        table = measure(samples, replace(settings, work_megapixels=budget),
                        (methods["plain"], methods["refined_colours"]), reuse_plain=True)["methods"]
        row = table["refined_colours"]
        budgets.append({"work_megapixels": budget, "sad_vs_plain": row["sad_vs_plain"],
                        "composite_band_vs_plain": row["composite_band_vs_plain"], "ms_per_mp": row["ms_per_mp"],
                        "cpu_ms_per_mp": row["cpu_ms_per_mp"], "plain_cpu_ms_per_mp": table["plain"]["cpu_ms_per_mp"]})
    best = min(budgets, key=lambda r: r["composite_band_vs_plain"])
    settings = replace(settings, work_megapixels=best["work_megapixels"])
    return {"seeds": [s.seed for s in samples], "stages": stages, "budgets": budgets, "picked": asdict(settings)}


def solvers(samples: list[Sample], names=("torch", "cf", "knn", "lkm", "rw")) -> list[dict]:
    """Classical matting methods tried on the same trimap (pymatting's, against this package's torch CG)."""
    rows = []
    for name in names:
        print(name, file=sys.stderr, flush=True)
        table = measure(samples, replace(DEFAULT_SETTINGS, solver=name), (METHODS[0], METHODS[2]),
                        reuse_plain=True)["methods"]["refined"]
        rows.append({"solver": name, **{key: table[key] for key in ("sad", "sad_vs_plain", "composite_band",
                                                                    "gradient", "ms_per_mp", "cpu_ms_per_mp")}})
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="edge_quality", description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="four 1 MP report photos instead of both halves")
    parser.add_argument("--tune", action="store_true", help="grid search on the tuning half (slow)")
    parser.add_argument("--solvers", action="store_true", help="compare pymatting's methods on 4 tuning photos")
    parser.add_argument("--crop", default=None, help="write the side-by-side crop PNG here")
    parser.add_argument("--small", action="store_true", help="both halves' 12 photos at 1 MP (a busy machine)")
    args = parser.parse_args(argv)
    if args.tune:
        result = tune(sample_set(GRID_SEEDS, GRID_SIZES))
    elif args.solvers:
        result = {"seeds": list(TUNING_SEEDS[:4]), "solvers": solvers(sample_set(TUNING_SEEDS[:4], QUICK_SIZES))}
    elif args.quick:
        samples = sample_set(REPORT_SEEDS[:4], QUICK_SIZES)
        result = {"settings": asdict(DEFAULT_SETTINGS), "report": measure(samples)}
    else:
        sizes = QUICK_SIZES if args.small else SIZES
        report = sample_set(REPORT_SEEDS, sizes)
        result = {"settings": asdict(DEFAULT_SETTINGS), "first_and_tenth": first_and_tenth(report[2])}
        steps = [("report", lambda: measure(report)),
                 ("crop", lambda: render_crop(next(s for s in report if "hair" in s.features), Path(args.crop))
                  if args.crop else None),
                 ("colours_with_true_alpha", lambda: {"report": colour_check(report)}),
                 ("tuning", lambda: measure(sample_set(TUNING_SEEDS, QUICK_SIZES if args.small else TUNING_SIZES)))]
        for key, step in steps:
            result[key] = step()
            print(json.dumps({key: result[key]}), file=sys.stderr, flush=True)  # progress: a long run's parts
    json.dump(result, sys.stdout, indent=2)
    print()
    return 0
