"""``bgremove bench batch`` (``--batch``): the Ray Data job (serve_app/batch/) against a plain serial loop
over ``serve_app.local.remove`` on the same photos, in the same run; and ``bgremove bench batch-memory N``
(``--batch-memory N``): one job over N small photos that reports the driver's and every worker's resident memory
at the end.

The loop runs before and after the job (the machine may be shared: the job is compared with both). Both are
timed from nothing loaded in them: the loop's time includes building its model (its first call; the libraries are
imported before), the job's counts from ``batch.run`` (Ray already started, as on a cluster) and so includes
starting its actors and loading their model. ``job_steady_over_loop`` compares the job's rate after its first
photo.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path
from typing import Any

from ..samples import jpeg


def _write_set(folder: Path, spec: str, seed: int) -> list[dict]:
    """Photos of the given sizes and a manifest row for each, with a click at the centre."""
    rows = []
    for part in spec.split(","):
        size, count = part.split(":")
        width, height = (int(v) for v in size.lower().split("x"))
        for i in range(int(count)):
            name = f"{width}x{height}-{i}.jpg"
            (folder / name).write_bytes(jpeg(width, height, seed=seed + len(rows)))
            rows.append({"path": name, "points": [[width / 2, height / 2]]})
    (folder / "set.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows))
    return rows


def _loop(folder: Path, rows: list[dict], model_args: dict) -> dict[str, Any]:
    from ..local import pipeline, remove

    # Timed like the job, from nothing loaded: the loop's first call builds its model (the job's actors load
    # theirs), and no embedding is left from an earlier loop.
    pipeline.cache_clear()
    start = time.perf_counter()
    for row in rows:
        remove(folder / row["path"], points=row["points"], **model_args)
    seconds = time.perf_counter() - start
    return {"seconds": round(seconds, 2), "images_per_second": round(len(rows) / seconds, 3)}


def bench_batch(args: argparse.Namespace) -> dict[str, Any]:
    import ray

    from .. import batch as batch_job
    from ..config import AppArgs

    model_args = {"model": args.model, "checkpoint": args.checkpoint, "device": args.device}
    report: dict[str, Any] = {"set": args.batch_set}
    with tempfile.TemporaryDirectory(prefix="bgremove-bench-") as tmp:
        folder = Path(tmp) / "in"
        folder.mkdir()
        rows = _write_set(folder, args.batch_set, args.seed)
        from ..local import remove

        remove(jpeg(640, 480, seed=args.seed + 10_000), points=[[320, 240]], **model_args)  # imports, kernels
        report["loop_before"] = _loop(folder, rows, model_args)
        if not ray.is_initialized():
            batch_job.start_local_ray()
        job = batch_job.Job(str(folder / "set.jsonl"), str(Path(tmp) / "out"), args=AppArgs(**model_args),
                        batch_size=args.batch_size, progress=False)
        summary = batch_job.run(job)
        report["job"] = summary.as_dict()
        report["loop_after"] = _loop(folder, rows, model_args)
    loop_ips = [report[k]["images_per_second"] for k in ("loop_before", "loop_after")]
    report["job_over_loop"] = round(summary.images_per_second / (sum(loop_ips) / 2), 3)
    report["job_over_faster_loop"] = round(summary.images_per_second / max(loop_ips), 3)
    # Once running: the job's rate after its first photo (its actors started, its model loaded).
    report["job_steady_over_loop"] = round(summary.steady_images_per_second / (sum(loop_ips) / 2), 3)
    return report


def bench_memory(args: argparse.Namespace) -> dict[str, Any]:
    import ray

    from .. import batch as batch_job
    from ..config import AppArgs

    model_args = {"model": args.model, "checkpoint": args.checkpoint, "device": args.device}
    with tempfile.TemporaryDirectory(prefix="bgremove-bench-") as tmp:
        folder = Path(tmp) / "in"
        folder.mkdir()
        _write_set(folder, f"320x240:{args.batch_memory}", args.seed)
        if not ray.is_initialized():
            batch_job.start_local_ray()
        job = batch_job.Job(str(folder / "set.jsonl"), str(Path(tmp) / "out"), args=AppArgs(**model_args),
                        batch_size=args.batch_size, progress=False)
        summary = batch_job.run(job)
    return {"photos": args.batch_memory, "size": "320x240", "job": summary.as_dict()}
