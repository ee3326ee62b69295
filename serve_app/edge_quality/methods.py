"""The refined edge's methods compared on the tuning half, per size (``python -m serve_app.edge_quality.methods``;
docs/benchmarks/edges/methods-tuning.json): each configuration of ``EdgeSettings`` (working size by band budget,
the full-size coarse-to-fine pass) on the 20 tuning photos, one timing run each, per photo SAD and band composite
error relative to plain upsampling, the guard's figures, and the means per size.

``--stress W`` adds pixel-scale texture (weight W, in 8-bit levels) to the cluttered backgrounds: a harder set,
used only to probe the guard (tuning seeds only)."""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import replace

import numpy as np

from deployments.edges import DEFAULT_SETTINGS, cutout_edge, warm_up

from . import metrics, synthetic
from .measure import band_radius, score
from .tables import size_groups

CONFIGS = ({"band_pixels": 10_000}, {"band_pixels": 15_000}, {"band_pixels": 20_000}, {"band_pixels": 30_000},
           {"band_pixels": 15_000, "fine_iterations": 40})


def _stressed(weight: float):
    plain = synthetic._cluttered

    def cluttered(rng, height, width, scale):
        fine = synthetic._smooth_noise(np.random.default_rng(7), height, width, 0.7) * weight
        return plain(rng, height, width, scale) + fine

    return cluttered


def photo_rows(seeds, overrides: dict) -> list[dict]:
    settings = replace(DEFAULT_SETTINGS, **overrides)
    rows = []
    for seed in seeds:
        sample = synthetic.make_sample(seed, *synthetic.size_of(seed))
        band = metrics.edge_band(sample.alpha, band_radius(sample))
        plain_alpha, _ = cutout_edge(sample.rgb, sample.logits, False, colours=False)
        plain = score(sample, plain_alpha, sample.rgb, band)
        found: dict = {}
        start, cpu = time.perf_counter(), time.process_time()
        alpha, colours = cutout_edge(sample.rgb, sample.logits, True, settings=settings, diagnostics=found)
        wall, cpu = time.perf_counter() - start, time.process_time() - cpu
        refined = score(sample, alpha, colours, band)
        row = {"seed": seed, "background": sample.background_kind, "megapixels": round(sample.megapixels, 2),
               **{f"{key}_vs_plain": round(refined[key] / plain[key] - 1, 4) for key in ("sad", "composite_band")},
               "wall_s": round(wall, 3), "cpu_s": round(cpu, 3), **found}
        rows.append(row)
        print(json.dumps(row), file=sys.stderr, flush=True)
    return rows


def per_size(rows: list[dict]) -> dict:
    table = {}
    for group, index in size_groups([r["megapixels"] for r in rows]).items():
        part = [rows[i] for i in index]
        table[str(group)] = {"photos": len(part), **{
            f"mean_{key}_vs_plain": round(float(np.mean([r[f"{key}_vs_plain"] for r in part])), 4)
            for key in ("sad", "composite_band")},
            "worst_sad_vs_plain": max(r["sad_vs_plain"] for r in part),
            "worst_composite_band_vs_plain": max(r["composite_band_vs_plain"] for r in part),
            "cpu_s_per_mp": round(sum(r["cpu_s"] for r in part) / sum(r["megapixels"] for r in part), 3)}
    return table


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="edge_quality.methods", description=__doc__.split("\n\n")[0])
    parser.add_argument("--configs", default=None, help="a JSON list of EdgeSettings overrides")
    parser.add_argument("--stress", type=float, default=0.0, help="extra pixel-scale texture on cluttered photos")
    parser.add_argument("--seeds", default=None, help="comma-separated tuning seeds (default: all 20)")
    args = parser.parse_args(argv)
    seeds = [int(s) for s in args.seeds.split(",")] if args.seeds else list(synthetic.TUNING_SEEDS)
    if set(seeds) & set(synthetic.REPORT_SEEDS):
        parser.error("methods are compared on tuning seeds only")
    if args.stress:
        synthetic._cluttered = _stressed(args.stress)
    warm_up()
    result = {"seeds": seeds, "stress": args.stress, "configs": []}
    for overrides in (json.loads(args.configs) if args.configs else CONFIGS):
        rows = photo_rows(seeds, overrides)
        result["configs"].append({"settings": overrides, "sizes": per_size(rows), "photos": rows})
    print(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
