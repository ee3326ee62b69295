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
from dataclasses import asdict
from pathlib import Path

from deployments.edges import DEFAULT_SETTINGS

from .measure import colour_check, first_and_tenth, measure, render_crop
from .synthetic import QUICK_SIZES, REPORT_SEEDS, SIZES, TUNING_SEEDS, sample_set
from .tuning import GRID_SEEDS, GRID_SIZES, solvers, tune

TUNING_SIZES = SIZES[:8]


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
