"""What each ``bgremove`` verb does: thin adapters over the library (``serve_app/cli.py`` holds the parser)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

def cmd_bench(args: argparse.Namespace) -> int:
    from . import bench

    return bench.main(args)


def cmd_serve(args: argparse.Namespace) -> int:
    from ray import serve

    from .app import APP_NAME, build_app
    from .config import AppArgs
    from .local_ray import init_local_ray
    from deployments.weights import WeightsError, resolve

    app_args = AppArgs(**{k: v for k, v in {"model": args.model, "checkpoint": args.checkpoint,
                                              "device": args.device}.items() if v}).with_env()
    # The checkpoint is fetched here, before Ray starts: a download shows its progress bar in this terminal, and a
    # failure is one line and exit 2 (not a replica's traceback, repeated as Serve retries it).
    try:
        resolve(app_args.model, app_args.checkpoint, app_args.checkpoint_sha256, app_args.cache_dir,
                seed=app_args.seed, allow_unverified=app_args.allow_unverified_checkpoint)
    except WeightsError as error:
        print(f"error: {error} To try the service without them (meaningless masks): BGREMOVE_CHECKPOINT=random",
              file=sys.stderr)
        return 2
    init_local_ray(num_cpus=args.num_cpus, include_dashboard=False)
    serve.start(http_options={"host": args.host, "port": args.port})
    serve.run(build_app(app_args), name=APP_NAME, route_prefix="/", blocking=False)
    print(f"background-remover is serving on http://{args.host}:{args.port}  (docs: /docs; Ctrl+C to stop)",
          flush=True)
    try:
        import time

        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        serve.shutdown()
    return 0


def cmd_cut(args: argparse.Namespace) -> int:
    import httpx

    image = Path(args.image)
    if not image.is_file():
        print(f"error: {image} does not exist", file=sys.stderr)
        return 2
    points = [*args.point, *args.exclude]
    labels = [1] * len(args.point) + [0] * len(args.exclude)
    if not points and not args.box:
        print("error: give at least one --point X,Y or a --box X0,Y0,X1,Y1", file=sys.stderr)
        return 2
    fields = {"points": json.dumps(points), "labels": json.dumps(labels)} if points else {}
    if args.box:
        fields["box"] = json.dumps(args.box)
    output = Path(args.output)
    if not output.parent.is_dir():
        print(f"error: cannot write {output}: the folder {output.parent} does not exist", file=sys.stderr)
        return 2
    fmt = args.format or {".webp": "webp", ".jpg": "jpeg", ".jpeg": "jpeg"}.get(output.suffix.lower(), "png")
    fields["format"] = fmt
    for name in ("background", "crop_margin", "feather", "quality"):
        if getattr(args, name) is not None:
            fields[name] = str(getattr(args, name))
    if args.crop:
        fields["crop"] = "true"
    if args.mask_only:
        fields["mask_only"] = "true"
    if args.refine:
        fields["refine"] = "true"
    headers = {"Authorization": f"Bearer {args.api_key}"} if args.api_key else {}
    try:
        with image.open("rb") as f:
            response = httpx.post(f"{args.url.rstrip('/')}/v1/cutout", files={"image": (image.name, f)},
                                  data=fields, headers=headers, timeout=args.timeout)
    except httpx.TimeoutException:
        print(f"error: the service at {args.url} did not answer within {args.timeout:g} s; try again, or raise "
              "--timeout", file=sys.stderr)
        return 3
    except httpx.HTTPError as exc:
        print(f"error: cannot reach the service at {args.url} ({exc}); start it with `bgremove serve`",
              file=sys.stderr)
        return 3
    if response.status_code != 200:
        try:
            message = response.json()["error"]["message"]
        except (ValueError, KeyError, TypeError):
            message = response.text[:300]
        print(f"error: the service refused the request ({response.status_code}): {message}", file=sys.stderr)
        return 1
    output.write_bytes(response.content)
    print(f"wrote {output} ({len(response.content)} bytes, mask score {response.headers.get('X-Mask-Score')})")
    return 0


def cmd_batch(args: argparse.Namespace) -> int:
    from . import batch
    from .config import AppArgs

    options = {name: getattr(args, name) for name in batch.OUTPUT_OPTIONS if getattr(args, name) not in (None, False)}
    model = {k: v for k, v in {"model": args.model, "checkpoint": args.checkpoint, "device": args.device}.items() if v}
    job = batch.Job(input=args.input, output=args.output, options=options, args=AppArgs(**model),
                    batch_size=args.batch_size, actors=args.actors, gpus_per_actor=args.gpus_per_actor,
                    cpu_tasks=args.cpu_tasks,
                    retry_failed=args.retry_failed, progress=not args.no_progress)
    if args.address:
        import ray

        ray.init(address=args.address, log_to_driver=False)
    try:
        summary = batch.run(job)
    except batch.JobError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(summary.as_dict() if args.json else {k: v for k, v in summary.as_dict().items() if k != "workers"}))
    print(f"{summary.done} cut out, {summary.skipped} already done, {summary.failed} failed "
          f"(see {args.output.rstrip('/')}/{batch.ERRORS_FILE}), {summary.images_per_second:g} photos/s",
          file=sys.stderr)
    return summary.exit_code


def cmd_weights(args: argparse.Namespace) -> int:
    from deployments import weights

    if args.action == "list":
        for row in weights.list_cached(args.cache_dir):
            mark = "present" if row["present"] else "missing"
            print(f"{row['model']:<10} {mark:<8} {row['size_mb']:>7.1f} MB  {row['file']}")
        return 0
    sizes = weights.MODEL_SIZES if args.model == "all" else (args.model,)
    for size in sizes:
        try:
            resolved = weights.resolve(size, "auto", cache_dir=args.cache_dir, progress=True)
        except weights.WeightsError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 1
        print(f"{size}: {resolved.path} (verified)")
    return 0


def cmd_edge_quality(args: argparse.Namespace) -> int:
    from . import edge_quality

    return edge_quality.main([*(["--quick"] if args.quick else []), *(["--tune"] if args.tune else []),
                              *(["--solvers"] if args.solvers else []), *(["--crop", args.crop] if args.crop else []),
                              *(["--small"] if args.small else []), *(["--timing"] if args.timing else []),
                              *(["--out", args.out] if args.out else [])])
