"""``bgremove``: one verb per job, each a thin adapter over the library.

  bgremove serve                       run the service locally (blocks)
  bgremove cut photo.jpg --point 120,340 -o cutout.png
  bgremove batch photos/ -o cutouts/   a folder, glob or manifest as one Ray Data job (serve_app/batch/)
  bgremove weights download --model tiny | bgremove weights list
  bgremove bench [SCENARIO] --model tiny      JSON: first / repeat clicks, throughput, baseline, ...
  bgremove edge-quality [--quick]      JSON: edge colours and refinement vs plain upsampling (synthetic)
"""

from __future__ import annotations

import argparse
import os
import sys

from deployments.settings import MODEL_SIZES

from .commands import cmd_batch, cmd_bench, cmd_cut, cmd_edge_quality, cmd_serve, cmd_weights

DEFAULT_URL = "http://127.0.0.1:8000"


def _pair(text: str) -> list[float]:
    return _numbers(text, 2)


def _box(text: str) -> list[float]:
    return _numbers(text, 4)


def _numbers(text: str, count: int) -> list[float]:
    try:
        values = [float(v) for v in text.replace(" ", "").split(",")]
    except ValueError:
        values = []
    if len(values) != count:
        raise argparse.ArgumentTypeError(f"expected {count} comma-separated numbers, got {text!r}")
    return values


def add_output_flags(verb: argparse.ArgumentParser) -> None:
    """The output options of /v1/cutout (but the format), as `cut` and `batch` both take them."""
    verb.add_argument("--background", default=None, help="fill colour, e.g. white or #ff0000")
    verb.add_argument("--crop", action="store_true", help="crop to the subject")
    verb.add_argument("--crop-margin", dest="crop_margin", type=int, default=None)
    verb.add_argument("--mask-only", dest="mask_only", action="store_true")
    verb.add_argument("--feather", type=float, default=None, help="extra edge softening (Gaussian sigma, pixels)")
    verb.add_argument("--quality", type=int, default=None, help="WebP / JPEG quality (1-100)")
    verb.add_argument("--refine", action="store_true", help="refine the edge with the full-resolution photo (slower)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="bgremove", description="Cut the clicked object out of a photo.")
    verbs = parser.add_subparsers(dest="verb", required=True)

    serve = verbs.add_parser("serve", help="run the service locally (blocks)")
    serve.add_argument("--model", choices=MODEL_SIZES, default=None)
    serve.add_argument("--checkpoint", default=None, help="auto | random | path | URL")
    serve.add_argument("--device", choices=["auto", "cuda", "cpu"], default=None)
    serve.add_argument("--host", default=os.environ.get("BGREMOVE_HOST", "127.0.0.1"))
    serve.add_argument("--port", type=int, default=int(os.environ.get("BGREMOVE_PORT", "8000")))
    serve.add_argument("--num-cpus", type=int, default=None, help="CPUs Ray may use (default: all)")
    serve.set_defaults(run=cmd_serve)

    cut = verbs.add_parser("cut", help="cut out an object with a running service")
    cut.add_argument("image")
    cut.add_argument("--point", type=_pair, action="append", default=[], metavar="X,Y", help="keep this object")
    cut.add_argument("--exclude", type=_pair, action="append", default=[], metavar="X,Y", help="not this part")
    cut.add_argument("--box", type=_box, default=None, metavar="X0,Y0,X1,Y1")
    cut.add_argument("-o", "--output", required=True)
    cut.add_argument("--format", choices=["png", "webp", "jpeg"], default=None, help="default: from -o's suffix")
    add_output_flags(cut)
    cut.add_argument("--url", default=os.environ.get("BGREMOVE_URL", DEFAULT_URL))
    cut.add_argument("--api-key", default=os.environ.get("BGREMOVE_API_KEY"))
    cut.add_argument("--timeout", type=float, default=120.0)
    cut.set_defaults(run=cmd_cut)

    batch_cmd = verbs.add_parser("batch", help="cut out a folder, a glob or a JSONL manifest of photos (Ray Data)")
    batch_cmd.add_argument("input", help="a folder (recursive), a glob ('photos/**/*.jpg') or a manifest (*.jsonl)")
    batch_cmd.add_argument("-o", "--output", required=True, help="a folder or a filesystem URI (s3://...)")
    batch_cmd.add_argument("--format", choices=["png", "webp", "jpeg"], default=None)
    add_output_flags(batch_cmd)
    batch_cmd.add_argument("--model", choices=MODEL_SIZES, default=None)
    batch_cmd.add_argument("--checkpoint", default=None, help="auto | random | path | URL")
    batch_cmd.add_argument("--device", choices=["auto", "cuda", "cpu"], default=None)
    batch_cmd.add_argument("--address", default=None, help="a running Ray cluster (default: RAY_ADDRESS, else a "
                           "local Ray)")
    batch_cmd.add_argument("--actors", type=int, default=0, help="segmenter actors (default: one per GPU, else 1)")
    batch_cmd.add_argument("--batch-size", dest="batch_size", type=int, default=0,
                           help="photos per encoder pass (default: 8 on GPUs, 1 on CPUs)")
    batch_cmd.add_argument("--gpus-per-actor", dest="gpus_per_actor", type=float, default=None,
                           help="default: 1 when the cluster has GPUs, else 0")
    batch_cmd.add_argument("--cpu-tasks", dest="cpu_tasks", type=int, default=0,
                           help="decode and render tasks at once, each (default: two per actor)")
    batch_cmd.add_argument("--retry-failed", dest="retry_failed", action="store_true",
                           help="also redo the photos that errors.jsonl lists")
    batch_cmd.add_argument("--no-progress", dest="no_progress", action="store_true")
    batch_cmd.add_argument("--json", action="store_true", help="the summary with every worker's peak RSS")
    batch_cmd.set_defaults(run=cmd_batch)

    weights_cmd = verbs.add_parser("weights", help="download or list SAM 2.1 checkpoints")
    weights_cmd.add_argument("action", choices=["download", "list"])
    weights_cmd.add_argument("--model", default="base_plus", choices=[*MODEL_SIZES, "all"])
    weights_cmd.add_argument("--cache-dir", default=None)
    weights_cmd.set_defaults(run=cmd_weights)

    bench_cmd = verbs.add_parser("bench", help="latency / throughput against the old single-process design (JSON)")
    from .bench import add_arguments

    add_arguments(bench_cmd)
    bench_cmd.set_defaults(run=cmd_bench)

    edges = verbs.add_parser("edge-quality", help="edge colours and refinement vs plain upsampling on synthetic "
                             "photos: tuning and report halves (JSON)")
    edges.add_argument("--quick", action="store_true", help="four report photos (1 and 12 MP) instead of both halves")
    edges.add_argument("--tune", action="store_true", help="the grid search on the tuning half (slow)")
    edges.add_argument("--solvers", action="store_true", help="pymatting's methods against the torch solver")
    edges.add_argument("--crop", default=None, help="also render the side-by-side crop to this PNG")
    edges.add_argument("--timing", action="store_true", help="timings only (a 12 MP replica start, CPU s per MP "
                       "per size): for a quiet machine")
    edges.add_argument("--small", action="store_true", help="both halves' photos at 1 MP (CI, a busy machine)")
    edges.add_argument("--out", default=None, help="also write the JSON here (e.g. docs/benchmarks/edges/)")
    edges.set_defaults(run=cmd_edge_quality)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return args.run(args)


if __name__ == "__main__":
    sys.exit(main())
