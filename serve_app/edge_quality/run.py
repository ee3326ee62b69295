"""Edge quality of the cut-out on synthetic photos with known alpha and colours: plain upsampling of SAM's
logits against the colour-estimated and the refined edge, all through ``deployments.edges.cutout_edge``.

    bgremove edge-quality                 # both halves, 20 photos each at 1-12 MP: JSON, per-size tables
    bgremove edge-quality --small         # both halves at 1 MP (CI, a busy machine)
    bgremove edge-quality --quick         # four report photos at 1 and 12 MP (what the tests use)
    bgremove edge-quality --tune          # the grid search on the tuning half (docs/benchmarks/edges/tuning.json)
    bgremove edge-quality --timing        # refined + colours' CPU time per size and a 12 MP replica start, alone

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

from .measure import colour_check, cpu_per_size, first_and_tenth, measure, render_crop
from .synthetic import QUICK_SIZES, REPORT_SEEDS, TUNING_SEEDS, sample_set, size_of
from .tables import markdown
from .tuning import GRID_SEEDS, GRID_SIZES, solvers, tune

# `--quick` (the tests): report photos at 1 and 12 MP, a studio and a cluttered one of each
QUICK_SEEDS = tuple(seed for seed in REPORT_SEEDS if size_of(seed)[0] * size_of(seed)[1] in (1152 * 864, 4000 * 3000)
                    and seed % 4 < 2)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="edge_quality", description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="four report photos (1 and 12 MP, both backgrounds)")
    parser.add_argument("--tune", action="store_true", help="grid search on the tuning half (slow)")
    parser.add_argument("--solvers", action="store_true", help="compare pymatting's methods on 4 tuning photos")
    parser.add_argument("--crop", default=None, help="write the side-by-side crop PNG here")
    parser.add_argument("--small", action="store_true", help="both halves' photos at 1 MP (CI, a busy machine)")
    parser.add_argument("--timing", action="store_true", help="timings only: a 12 MP replica start (first and "
                        "tenth refined request) and CPU s per MP per size on the report photos; for a quiet machine")
    parser.add_argument("--out", default=None, help="also write the JSON here (e.g. docs/benchmarks/edges/)")
    args = parser.parse_args(argv)
    if args.tune:
        result = tune(sample_set(GRID_SEEDS, GRID_SIZES))
    elif args.solvers:
        result = {"seeds": list(TUNING_SEEDS[:4]), "solvers": solvers(sample_set(TUNING_SEEDS[:4], QUICK_SIZES))}
    elif args.timing:
        report = sample_set(REPORT_SEEDS)
        result = {"settings": asdict(DEFAULT_SETTINGS), "first_and_tenth": first_and_tenth(report[-2]),
                  "sizes": cpu_per_size(report)}
    elif args.quick:
        result = {"settings": asdict(DEFAULT_SETTINGS), "report": measure(sample_set(QUICK_SEEDS), runs=1)}
    else:
        sizes = QUICK_SIZES if args.small else None
        report = sample_set(REPORT_SEEDS, sizes)
        first = report[-2]  # the largest: 12 MP unless --small
        result = {"settings": asdict(DEFAULT_SETTINGS), "first_and_tenth": first_and_tenth(first)}
        steps = [("report", lambda: measure(report)),
                 ("crop", lambda: render_crop(next(s for s in report if "hair" in s.features), Path(args.crop))
                  if args.crop else None),
                 ("colours_with_true_alpha", lambda: {"report": colour_check(report)}),
                 ("tuning", lambda: measure(sample_set(TUNING_SEEDS, sizes)))]
        for key, step in steps:
            result[key] = step()
            print(json.dumps({key: result[key]})[:2000], file=sys.stderr, flush=True)  # progress: a long run's parts
        for half in ("report", "tuning"):
            print(f"\n{half} half\n" + markdown(result[half]), file=sys.stderr, flush=True)
    text = json.dumps(result, indent=2)
    print(text)
    if args.out:
        Path(args.out).write_text(text + "\n")
    return 0
