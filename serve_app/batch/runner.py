"""Running a job: the plan (what to cut now, what is done or finally refused), the Ray Data pipeline, a local
Ray when none is running, and the progress bar."""

from __future__ import annotations

import json
import os
import sys
import time

from deployments import errors

from .inputs import Job, JobError, Photo, error_row, filesystem, list_inputs, output_options
from .memory import WorkerMemory, max_rss_mb, rss_mb
from .outputs import ErrorLog, Summary, existing_outputs, read_errors
from .stages import SegmentStage, prepare_batch, render_batch

# How many times a job starts again on its remaining photos after the cluster failed under it.
RESUMES = 2


def plan(job: Job) -> tuple[list[Photo], dict[str, dict], int]:
    """(photos to cut now, error rows to keep, photos already done)."""
    photos, failed = list_inputs(job)
    done = existing_outputs(job.output)
    earlier = read_errors(job.output)
    keep = {row["path"]: row for row in failed}
    todo, skipped, outputs = [], 0, set()
    for photo in photos:
        if photo.output in outputs:
            keep[photo.path] = error_row(photo.path, errors.bad_request(
                "duplicate_output", f"another input is also written to {photo.output}; rename one of them"))
            continue
        outputs.add(photo.output)
        if photo.output in done:
            skipped += 1
        elif photo.path in earlier and not job.retry_failed and 400 <= int(earlier[photo.path].get("status", 0)) < 500:
            keep[photo.path] = earlier[photo.path]  # refused for what the photo or its row is: the same again
        else:
            todo.append(photo)
    return todo, keep, skipped


def run(job: Job) -> Summary:
    """Runs the job on the Ray cluster this process is connected to (or starts a local one) and returns its
    summary. Raises JobError for arguments that make the job impossible."""
    import ray
    import ray.data

    start = time.perf_counter()
    driver_start_rss = rss_mb()
    try:
        output_options(job.options)
    except errors.ApiError as error:
        raise JobError(error.message) from error
    from pyarrow import fs as pafs

    filesys, base = filesystem(job.output)
    if filesys.get_file_info(base).type == pafs.FileType.File:
        raise JobError(f"{job.output} is a file; give a folder (or a URI) for the outputs")
    todo, kept, skipped = plan(job)
    log = ErrorLog(job.output, kept)
    summary = Summary(total=len(todo) + len(kept) + skipped, skipped=skipped)
    if todo:
        if not ray.is_initialized():
            start_local_ray()
        summary.workers = _execute_resuming(job, todo, log, summary, start)
    log.flush(force=True)
    summary.failed = len(log.rows)
    summary.seconds = round(time.perf_counter() - start, 2)
    summary.images_per_second = round(summary.done / summary.seconds, 3) if summary.seconds else 0.0
    if summary.done > 1 and summary.seconds > summary.first_result_s:
        summary.steady_images_per_second = round((summary.done - 1) / (summary.seconds - summary.first_result_s), 3)
    summary.driver_rss_mb = {"start": driver_start_rss, **summary.driver_rss_mb, "end": rss_mb(),
                             "max": max_rss_mb()}
    return summary


def start_local_ray(attempts: int = 3) -> None:
    """The cluster RAY_ADDRESS names, else a local Ray (started again if its raylet missed Ray's fixed 30 s to
    register, as on a machine busy with other work)."""
    import ray

    from ..local_ray import init_local_ray

    if os.environ.get("RAY_ADDRESS"):  # inside `ray job submit`, or pointed at a cluster
        ray.init(log_to_driver=False)
        return
    for attempt in range(1, attempts + 1):
        try:
            return init_local_ray(include_dashboard=False, log_to_driver=False)
        except ValueError as exc:  # ray.init() found a running local cluster: use it as it is
            if "existing cluster" not in str(exc):
                raise
            return ray.init(log_to_driver=False)
        except Exception as exc:  # noqa: BLE001 - Ray raises a bare Exception for this timeout
            if attempt == attempts or "timed out during startup" not in str(exc):
                raise
            ray.shutdown()


def _execute_resuming(job: Job, todo: list[Photo], log: ErrorLog, summary: Summary, start: float) -> list[dict]:
    """`_execute`, started again on the photos without an output when the cluster under it fails (a node lost
    with the only copy of a block, an actor that cannot be restarted), at most RESUMES times. The stages catch
    every error of a photo and return it as a row, so what escapes the pipeline is the cluster's, not the
    photo's. Outputs are written atomically: a photo written before the failure but never reported to this
    driver is counted done, not cut again."""
    import ray

    memory = WorkerMemory()
    reported: set[str] = set()
    resumes = 0
    while True:
        try:
            _execute(job, todo, log, summary, start, memory, reported)
            return memory.rows()
        except ray.exceptions.RayError as exc:
            if resumes == RESUMES:
                raise
            resumes += 1
            written = existing_outputs(job.output)
            for photo in todo:
                if photo.output in written and photo.path not in reported:
                    reported.add(photo.path)
                    summary.done += 1
                    log.rows.pop(photo.path, None)
            todo = [photo for photo in todo if photo.path not in reported]
            print(f"bgremove batch: the cluster failed under the job ({type(exc).__name__}: {exc}); "
                  f"resuming {len(todo)} photo(s) ({resumes} of {RESUMES})", file=sys.stderr)
            if not todo:
                return memory.rows()


def _execute(job: Job, todo: list[Photo], log: ErrorLog, summary: Summary, start: float, memory: WorkerMemory,
             reported: set[str]) -> None:
    import ray
    import ray.data
    from tqdm import tqdm

    args = job.args.with_env()
    cluster_gpus = int(ray.cluster_resources().get("GPU", 0))
    gpus = job.gpus_per_actor if job.gpus_per_actor is not None else (1 if cluster_gpus else 0)
    actors = job.actors or (max(1, int(cluster_gpus / gpus)) if gpus else 1)
    # On CPUs a batch saves nothing (the encoder fills the cores either way) and delays the first cut-out.
    batch_size = job.batch_size or (8 if gpus else 1)
    # Bounded so that a cluster with many CPUs does not start a worker process (and its imports) per CPU for
    # stages that only need to keep the segmenter fed.
    cpu_tasks = job.cpu_tasks or 2 * actors
    context = ray.data.DataContext.get_current()
    context.enable_progress_bars = False  # one bar below, over photos, instead of one per operator

    rows = [{"photo": json.dumps(photo.__dict__)} for photo in todo]
    dataset = (
        ray.data.from_items(rows, override_num_blocks=max(1, min(len(rows), len(rows) // 2 or 1)))
        .map_batches(prepare_batch, fn_kwargs={"limits": args.limits(), "postprocess": args.postprocess()},
                     batch_size=1, num_cpus=1,
                     compute=ray.data.TaskPoolStrategy(size=cpu_tasks))
        .map_batches(SegmentStage, fn_constructor_kwargs={"config": args.segmenter()}, batch_size=batch_size,
                     batch_format="pyarrow", compute=ray.data.ActorPoolStrategy(size=actors), num_gpus=gpus,
                     num_cpus=job.cpus_per_actor)
        .map_batches(render_batch, fn_kwargs={"config": args.postprocess(), "output": job.output}, batch_size=1,
                     num_cpus=1, compute=ray.data.TaskPoolStrategy(size=cpu_tasks))
    )
    with tqdm(total=len(todo), unit="photo", disable=not job.progress, desc="bgremove batch") as bar:
        for batch in dataset.iter_batches(batch_size=None, batch_format="numpy"):
            for i in range(len(batch["path"])):
                row = {key: batch[key][i] for key in batch}
                if str(row["path"]) in reported:  # a block recomputed after a lost node: already counted
                    continue
                reported.add(str(row["path"]))
                if row["status"] == 200:
                    summary.done += 1
                    log.rows.pop(str(row["path"]), None)
                else:
                    log.add({"path": str(row["path"]), "status": int(row["status"]), "code": str(row["code"]),
                             "message": str(row["message"])})
                for stats in json.loads(str(row["workers"])):
                    memory.add(stats)
                if "first_result" not in summary.driver_rss_mb:
                    summary.driver_rss_mb["first_result"] = rss_mb()
                    summary.first_result_s = round(time.perf_counter() - start, 2)
                bar.update(1)
