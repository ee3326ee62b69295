"""Tuning on the tuning half only: a staged grid over ``EdgeSettings``, the matting budget's cost, and
pymatting's methods against the torch solver."""

from __future__ import annotations

import sys
from dataclasses import asdict, replace

import numpy as np

from deployments.edges import DEFAULT_SETTINGS, EdgeSettings

from .measure import METHODS, measure
from .synthetic import QUICK_SIZES, TUNING_SEEDS, Sample

# The grid search runs on six tuning seeds at 1 MP (matting works at <= 1 MP whatever the photo's size, and
# every setting is in logit cells or working pixels), which keeps it within minutes on a shared 2-core CPU.
GRID_SEEDS, GRID_SIZES = TUNING_SEEDS[:6], QUICK_SIZES

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
    for budget in (15_000, 30_000, 60_000):  # what the band budget costs in quality and buys in time
        print(f"budget {budget}", file=sys.stderr, flush=True)
        table = measure(samples, replace(settings, band_pixels=budget),
                        (methods["plain"], methods["refined_colours"]), reuse_plain=True)["methods"]
        row = table["refined_colours"]
        budgets.append({"band_pixels": budget, "sad_vs_plain": row["sad_vs_plain"],
                        "composite_band_vs_plain": row["composite_band_vs_plain"], "ms_per_mp": row["ms_per_mp"],
                        "cpu_ms_per_mp": row["cpu_ms_per_mp"], "plain_cpu_ms_per_mp": table["plain"]["cpu_ms_per_mp"]})
    best = min(budgets, key=lambda r: r["composite_band_vs_plain"])
    settings = replace(settings, band_pixels=best["band_pixels"])
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
