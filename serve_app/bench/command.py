"""``bgremove bench [SCENARIO]``: the scenarios as sub-verbs, the flags that chose them before (kept: DESIGN.md,
the docs and the Makefile call them), and one JSON object printed per run.

  bgremove bench [graph]              the graph over HTTP against the old design (--routing etc. absent)
  bgremove bench overhead             the same plus the echo and chain apps, each click's overhead (--overhead)
  bgremove bench routing [UxC]        routers compared on 2 segmenter replicas               (--routing UxC)
  bgremove bench segmenter            the segmenter class alone, per precision               (--segmenter)
  bgremove bench batch                the Ray Data job against a serial loop                 (--batch)
  bgremove bench batch-memory [N]     one job over N small photos, every process's RSS       (--batch-memory N)
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from .stats import device_name, parse_size

SCENARIOS = {
    "graph": "first and repeat clicks over HTTP, throughput, the old single-process design (the default)",
    "overhead": "the graph benchmark plus a bare Serve echo app, the graph's shape with no work (chain app) and "
                "each click's overhead over its stages' work, hop by hop",
    "routing": "compare routers on 2 segmenter replicas, USERSxCLICKS (default 20x5)",
    "segmenter": "the segmenter class alone; --precision fp32,fp16,... compares precisions",
    "batch": "the Ray Data catalogue job against a serial loop",
    "batch-memory": "one job over N photos of 320x240 (default 500), with every process's RSS",
}
DEFAULT_ROUTING = "20x5"
DEFAULT_BATCH_MEMORY = 500


def _add_settings(parser: argparse.ArgumentParser, suppress: bool) -> None:
    """The flags every scenario reads. On a sub-verb they default to nothing, so a value given before the
    sub-verb (`bgremove bench --model small routing`) is not overwritten by the sub-verb's default."""
    def add(*names: str, **kwargs: Any) -> None:
        parser.add_argument(*names, **({**kwargs, "default": argparse.SUPPRESS} if suppress else kwargs))

    add("--url", default=None, help="benchmark a running service instead of starting one here")
    add("--model", default="tiny", choices=["tiny", "small", "base_plus", "large"])
    add("--checkpoint", default="random", help="weights do not change the cost; default random")
    add("--device", default="auto", choices=["auto", "cuda", "cpu"])
    add("--sizes", default="1024x768,4032x3024", help="photo sizes; the first is the primary one")
    add("--first-clicks", type=int, default=7, help="first clicks per size (each a new photo)")
    add("--repeat-clicks", type=int, default=42)
    add("--concurrency", default="1,4", help="client concurrency levels")
    add("--segmenter-replicas", type=int, default=1)
    add("--cuda-graphs", action="store_true", default=False, help="capture the encoder as a CUDA graph")
    add("--postprocess-threads", type=int, default=0)
    add("--serve-env", action="append", default=[], metavar="KEY=VALUE",
        help="environment for the graph's replicas, e.g. RAY_SERVE_RUN_ROUTER_IN_SEPARATE_LOOP=0")
    add("--no-baseline", action="store_true", default=False, help="skip the old single-process design")
    add("--floor", action="store_true", default=False, help="also time sam2's predictor inside the replica")
    add("--precision", default=None,
        help="segmenter: e.g. fp32,fp16,bf16,fp16+graph (the first is the IoU reference)")
    add("--plot", default=None, help="write a latency-vs-concurrency PNG here")
    add("--seed", type=int, default=0)
    add("--output", default=None, help="also write the JSON here")
    add("--batch-set", default="1024x1024:6,4000x3000:2", metavar="WxH:N,...",
        help="batch: photo sizes and counts (default: 1 MP and 12 MP)")
    add("--batch-size", type=int, default=0, help="batch: photos per encoder pass")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    _add_settings(parser, suppress=False)
    # The scenario flags of before the sub-verbs.
    parser.add_argument("--overhead", action="store_true", help="as `bench overhead`")
    parser.add_argument("--routing", default=None, metavar="USERSxCLICKS", help="as `bench routing USERSxCLICKS`")
    parser.add_argument("--segmenter", action="store_true", help="as `bench segmenter`")
    parser.add_argument("--batch", action="store_true", help="as `bench batch`")
    parser.add_argument("--batch-memory", type=int, default=0, metavar="N", help="as `bench batch-memory N`")
    verbs = parser.add_subparsers(dest="scenario", metavar="SCENARIO", title="scenarios (default: graph)")
    for name, text in SCENARIOS.items():
        verb = verbs.add_parser(name, help=text, description=text)
        _add_settings(verb, suppress=True)
        if name == "routing":
            verb.add_argument("routing", nargs="?", default=argparse.SUPPRESS, metavar="USERSxCLICKS")
        if name == "batch-memory":
            verb.add_argument("batch_memory", nargs="?", type=int, default=None, metavar="N")


def choose_scenario(args: argparse.Namespace) -> str:
    """The scenario a command line asks for, by sub-verb or by the older flag; sets ``args`` to match, so that
    both spellings of a scenario leave the same arguments."""
    if args.scenario is None:
        flags = {"routing": args.routing, "batch": args.batch, "batch-memory": args.batch_memory,
                 "segmenter": args.segmenter, "overhead": args.overhead}
        args.scenario = next((name for name, given in flags.items() if given), "graph")
    args.overhead = args.scenario == "overhead"
    args.segmenter = args.scenario == "segmenter"
    args.batch = args.scenario == "batch"
    args.routing = (args.routing or DEFAULT_ROUTING) if args.scenario == "routing" else None
    args.batch_memory = (args.batch_memory or DEFAULT_BATCH_MEMORY) if args.scenario == "batch-memory" else 0
    return args.scenario


def _honour_environment(args: argparse.Namespace) -> None:
    """BGREMOVE_MODEL, BGREMOVE_CHECKPOINT and BGREMOVE_DEVICE override the flags, as they do for the graph."""
    from ..config import AppArgs

    resolved = AppArgs(model=args.model, checkpoint=args.checkpoint, device=args.device).with_env()
    args.model, args.checkpoint, args.device = resolved.model, resolved.checkpoint, resolved.device


def run(args: argparse.Namespace) -> dict[str, Any]:
    scenario = choose_scenario(args)
    _honour_environment(args)
    report: dict[str, Any] = {"device": device_name(args.device), "model": args.model,
                              "checkpoint": args.checkpoint, "python": sys.version.split()[0]}
    if scenario == "routing":
        from .routing import bench_routing

        users, clicks = (int(v) for v in args.routing.split("x"))
        report["routing"] = bench_routing(args, users, clicks)
    elif scenario in ("batch", "batch-memory"):
        from .batch import bench_batch, bench_memory

        report["batch" if args.batch else "batch_memory"] = bench_batch(args) if args.batch else bench_memory(args)
    elif scenario == "segmenter":
        from .segmenter import bench_segmenter

        precisions = args.precision.split(",") if args.precision else ["auto"]
        report["segmenter"] = bench_segmenter(args.model, args.checkpoint, args.device,
                                              parse_size(args.sizes.split(",")[0]), args.first_clicks, precisions)
    else:
        from .graph import run_graph

        run_graph(args, report)
    return report


def main(args: argparse.Namespace) -> int:
    report = run(args)
    text = json.dumps(report, indent=2)
    print(text)
    if args.output:
        with open(args.output, "w") as f:
            f.write(text + "\n")
    return 0
