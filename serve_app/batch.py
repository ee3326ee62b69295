"""Catalogue jobs: a folder, a glob or a JSONL manifest of photos cut out as one Ray Data job.

``run(Job(...))`` (and ``bgremove batch INPUT -o OUTPUT``) streams the photos through the service's own stage
code: ``imaging.decode`` and ``prompts.parse_model_prompt`` on CPU tasks, ``Segmenter.encode`` / ``predict`` in
an actor pool (the model loaded once per actor, batches of ``batch_size``), ``Postprocessor.render`` on CPU
tasks that write each cut-out as it comes (temp name, then rename: a killed job leaves no half file). Every
input ends as one output file or one row of ``OUTPUT/errors.jsonl`` (``path``, ``status``, ``code``,
``message``: the HTTP API's codes); a rerun skips both. Outputs and inputs may be any filesystem pyarrow
reaches (a local folder, ``s3://...``); a glob is local.
"""

from __future__ import annotations

import glob
import json
import os
import pickle
import posixpath
import resource
import threading
import time
import uuid
from dataclasses import dataclass, field
from typing import Any, Iterable

import numpy as np

from deployments.imaging import decode_image
from deployments.messages import OutputOptions, Prompt, SegmentResult
from deployments.output_options import parse_output_options
from deployments.prompts import parse_model_prompt

from deployments import errors
from .config import AppArgs
from deployments.settings import IngressLimits, PostprocessConfig, SegmenterConfig

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp", ".gif", ".bmp", ".tif", ".tiff", ".mpo")
SUFFIX_BY_FORMAT = {"png": ".png", "webp": ".webp", "jpeg": ".jpg"}
OUTPUT_OPTIONS = ("format", "mask_only", "background", "crop", "crop_margin", "feather", "quality", "refine")
ROW_KEYS = {"path", "points", "labels", "box", *OUTPUT_OPTIONS}
ERRORS_FILE = "errors.jsonl"
PARTIAL = ".partial-"  # in the names of outputs being written; a rerun deletes what a killed job left
# The default prompt of a photo without one: a box over the frame less this share of each side. SAM then cuts
# the object that fills the box, the product of a centred product photo (a heuristic; see the README).
DEFAULT_BOX_MARGIN = 0.02


class JobError(Exception):
    """Arguments that make the whole job impossible (exit code 2)."""


@dataclass(frozen=True)
class Job:
    input: str  # a folder, a glob, or a manifest (*.jsonl)
    output: str  # a folder or a filesystem URI
    options: dict = field(default_factory=dict)  # output options for every photo (a manifest row may override)
    args: AppArgs = field(default_factory=AppArgs)  # model, checkpoint, device, limits, PNG writer
    batch_size: int = 0  # photos per encoder pass; 0: 8 on GPUs, 1 on CPUs
    actors: int = 0  # segmenter actors; 0: one per GPU in the cluster, else 1
    gpus_per_actor: float | None = None  # None: 1 when the cluster has GPUs, else 0
    cpus_per_actor: float = 1.0
    cpu_tasks: int = 0  # decode and render tasks at once, each; 0: two per segmenter actor
    retry_failed: bool = False  # also redo the photos errors.jsonl lists
    progress: bool = True


@dataclass(frozen=True)
class Photo:
    """One input: where to read it, where its cut-out goes (both relative to their roots), its prompt."""

    path: str  # relative to the input's root: the name errors.jsonl and the output use
    source: str  # absolute path (or URI path) to read
    output: str  # relative to OUTPUT
    points: Any = None
    labels: Any = None
    box: Any = None
    options: dict = field(default_factory=dict)


@dataclass(frozen=True)
class Prepared:
    photo: Photo
    image_id: str
    options: OutputOptions
    model_rgb: np.ndarray
    model_prompt: Prompt


def error_row(path: str, error: errors.ApiError) -> dict:
    return {"path": path, "status": error.status, "code": error.code, "message": error.message}


# -- listing the inputs ------------------------------------------------------------------------------------------


def filesystem(uri: str):
    """(pyarrow filesystem, path inside it) of a local path or a URI such as s3://bucket/prefix."""
    from pyarrow import fs

    if "://" not in uri:
        return fs.LocalFileSystem(), os.path.abspath(uri)
    return fs.FileSystem.from_uri(uri)


def default_box(width: int, height: int) -> list[float]:
    return [width * DEFAULT_BOX_MARGIN, height * DEFAULT_BOX_MARGIN,
            width * (1 - DEFAULT_BOX_MARGIN), height * (1 - DEFAULT_BOX_MARGIN)]


def output_name(path: str, fmt: str) -> str:
    return posixpath.splitext(path)[0] + SUFFIX_BY_FORMAT[fmt]


def list_inputs(job: Job) -> tuple[list[Photo], list[dict]]:
    """The job's photos, and an error row for each manifest row that names no usable photo."""
    from pyarrow import fs as pafs

    job_options = {**job.options}
    if job.input.endswith(".jsonl"):
        return _manifest(job.input, job_options)
    if "://" not in job.input and glob.has_magic(job.input):
        root = _glob_root(job.input)
        paths = sorted(p for p in glob.glob(job.input, recursive=True) if os.path.isfile(p))
        return _photos(root, [os.path.relpath(p, root).replace(os.sep, "/") for p in paths], job_options)
    filesys, root = filesystem(job.input)
    info = filesys.get_file_info(root)
    if info.type != pafs.FileType.Directory:
        raise JobError(f"{job.input} is not a folder, a glob or a .jsonl manifest")
    files = filesys.get_file_info(pafs.FileSelector(root, recursive=True))
    rels = sorted(posixpath.relpath(f.path, root) for f in files if f.type == pafs.FileType.File)
    return _photos(job.input, [r for r in rels if r.lower().endswith(IMAGE_SUFFIXES)], job_options)


def _glob_root(pattern: str) -> str:
    parts = []
    for part in os.path.normpath(pattern).split(os.sep):
        if glob.has_magic(part):
            break
        parts.append(part)
    return os.sep.join(parts) or "."


def _photos(root: str, rels: Iterable[str], options: dict) -> tuple[list[Photo], list[dict]]:
    fmt = _format_of(options)
    return [Photo(rel, posixpath.join(root, rel), output_name(rel, fmt), options=options) for rel in rels], []


def _format_of(options: dict) -> str:
    return parse_output_options(**{k: v for k, v in options.items() if k in OUTPUT_OPTIONS}).format


def _manifest(manifest: str, job_options: dict) -> tuple[list[Photo], list[dict]]:
    filesys, path = filesystem(manifest)
    try:
        with filesys.open_input_stream(path) as stream:
            text = stream.read().decode("utf-8")
    except (FileNotFoundError, OSError, UnicodeDecodeError) as exc:
        raise JobError(f"cannot read the manifest {manifest}: {exc}") from exc
    base = posixpath.dirname(manifest) or "."
    photos, failed = [], []
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        name = f"{posixpath.basename(path)}:{number}"  # a row without a usable path is named by its line
        try:
            row = json.loads(line)
        except ValueError as exc:
            failed.append(error_row(name, errors.bad_request("invalid_manifest_row", f"line {number} is not JSON "
                                                             f"({exc}); write one JSON object per line")))
            continue
        if not isinstance(row, dict) or not isinstance(row.get("path"), str) or not row["path"].strip():
            failed.append(error_row(name, errors.bad_request("invalid_manifest_row", f"line {number} needs a "
                                                             "`path` string, e.g. {\"path\": \"shoes/a.jpg\"}")))
            continue
        rel = posixpath.normpath(row["path"].strip().replace("\\", "/"))
        if rel.startswith(("/", "../")) or rel == "..":
            failed.append(error_row(row["path"], errors.bad_request(
                "invalid_manifest_row", f"`path` {row['path']!r} leaves the manifest's folder; give a path "
                "relative to it")))
            continue
        unknown = sorted(set(row) - ROW_KEYS)
        options = {**job_options, **{k: v for k, v in row.items() if k in OUTPUT_OPTIONS}}
        try:
            if unknown:
                raise errors.bad_request("invalid_manifest_row", f"unknown keys {unknown}; a row may hold "
                                         f"{sorted(ROW_KEYS)}")
            fmt = _format_of(options)
        except errors.ApiError as error:
            failed.append(error_row(rel, error))
            continue
        except (TypeError, ValueError) as exc:
            failed.append(error_row(rel, errors.invalid_prompt("invalid_options", f"output options of line "
                                                                f"{number} are malformed ({exc})")))
            continue
        photos.append(Photo(rel, posixpath.join(base, rel), output_name(rel, fmt), row.get("points"),
                            row.get("labels"), row.get("box"), options))
    return photos, failed


# -- the stages, as Ray Data runs them -------------------------------------------------------------------------


def _read(photo: Photo, limits: IngressLimits) -> bytes:
    filesys, path = filesystem(photo.source)
    try:
        with filesys.open_input_stream(path) as stream:
            return stream.read(limits.max_upload_bytes + 1)  # decode() refuses more; never read an unbounded file
    except FileNotFoundError as exc:
        raise errors.bad_request("file_not_found", f"{photo.path} does not exist") from exc


def prepare(photo: Photo, limits: IngressLimits) -> tuple[Prepared, np.ndarray, np.ndarray | None]:
    """What the ingress does with an upload: decode (EXIF-oriented, any mode to RGB, limits), check the prompt
    against the photo and map it onto the model copy. No prompt: the default box."""
    decoded = decode_image(_read(photo, limits), limits)
    box = photo.box
    if not photo.points and photo.box is None:
        box = default_box(decoded.width, decoded.height)
    prompt = parse_model_prompt(photo.points, photo.labels, box, decoded.width, decoded.height,
                                decoded.model_rgb.shape, limits.max_points)
    options = parse_output_options(**{k: v for k, v in photo.options.items() if k in OUTPUT_OPTIONS})
    return Prepared(photo, decoded.image_id, options, decoded.model_rgb, prompt), decoded.rgb, decoded.alpha


def _as_api_error(exc: Exception) -> errors.ApiError:
    if isinstance(exc, errors.ApiError):
        return exc
    return errors.ApiError(500, "internal_error", f"{type(exc).__name__}: {str(exc)[:300]}")


def prepare_batch(batch: dict, limits: IngressLimits, postprocess: PostprocessConfig | None = None) -> dict:
    """CPU task: photo rows in, two pickled columns out: what the segmenter needs (small) and the full-size
    pixels (which pass through the segmenter stage without being unpickled there)."""
    if postprocess is not None:
        _warm_postprocessor(postprocess)
    model, pixels = [], []
    for text in batch["photo"]:
        photo = Photo(**json.loads(text))
        try:
            prepared, rgb, alpha = prepare(photo, limits)
            model.append(pickle.dumps(prepared, protocol=5))
            pixels.append(pickle.dumps((rgb, alpha), protocol=5))
        except Exception as exc:  # noqa: BLE001 - one bad photo is one error row, never the job's end
            model.append(pickle.dumps(error_row(photo.path, _as_api_error(exc))))
            pixels.append(b"")
    return {"model": model, "pixels": pixels}


class SegmentStage:
    """Actor: one Segmenter (the model loaded once), one encoder pass per batch, the mask decoder per photo."""

    def __init__(self, config: SegmenterConfig):
        from deployments.segmenter import Segmenter  # torch and sam2: imported where the model runs only

        self.segmenter = Segmenter(config, progress=False)

    def __call__(self, batch):
        import pyarrow as pa

        items = [pickle.loads(value.as_py()) for value in batch.column("model")]
        good = [i for i, item in enumerate(items) if isinstance(item, Prepared)]
        self.segmenter.use_threads()
        results: list[Any] = list(items)
        if good:
            try:
                embeddings = self.segmenter.encode([items[i].model_rgb for i in good])
            except Exception as exc:  # noqa: BLE001 - e.g. a model fault: every photo of the batch is told
                for i in good:
                    results[i] = error_row(items[i].photo.path, _as_api_error(exc))
            else:
                for i, embedding in zip(good, embeddings):
                    item = items[i]
                    try:
                        logits, scores = self.segmenter.predict(embedding, item.model_prompt)
                        seg = SegmentResult(item.image_id, logits, scores, False)
                        results[i] = (item.photo, item.options, seg)
                    except Exception as exc:  # noqa: BLE001
                        results[i] = error_row(item.photo.path, _as_api_error(exc))
        worker = _worker_stats("segment")
        column = pa.array([pickle.dumps((r, worker), protocol=5) for r in results], pa.large_binary())
        return pa.table({"segment": column, "pixels": batch.column("pixels")})


_postprocessors: dict[PostprocessConfig, Any] = {}
_postprocessors_lock = threading.Lock()


def _postprocessor(config: PostprocessConfig):
    """This worker process's Postprocessor, built once (also when a warm-up thread is building it now)."""
    with _postprocessors_lock:
        if config not in _postprocessors:
            from deployments.postprocess import Postprocessor

            _postprocessors[config] = Postprocessor(config)
        return _postprocessors[config]


def _warm_postprocessor(config: PostprocessConfig) -> None:
    """Starts building the Postprocessor (its imports and kernel warm-up take seconds) in the background of a
    decode task, while the segmenter actor loads its model: Ray runs the render tasks in the same pool of worker
    processes, so the first cut-out does not wait for it."""
    if config not in _postprocessors and not _postprocessors_lock.locked():
        threading.Thread(target=_postprocessor, args=(config,), daemon=True, name="warm-postprocessor").start()


def render_batch(batch: dict, config: PostprocessConfig, output: str) -> dict:
    """CPU task: ``Postprocessor.render`` and the atomic write of each cut-out; a small result row per photo."""
    rows = []
    filesys, base = filesystem(output)
    for segment, pixels in zip(batch["segment"], batch["pixels"]):
        result, segment_worker = pickle.loads(segment)
        if isinstance(result, dict):  # refused before or in the segmenter
            rows.append({**result, "output": "", "bytes": 0, "workers": json.dumps([segment_worker])})
            continue
        photo, options, seg = result
        try:
            rgb, alpha = pickle.loads(pixels)
            postprocessor = _postprocessor(config)
            postprocessor.use_threads()
            cutout = postprocessor.render(seg, rgb, options, alpha)
            write_atomically(filesys, posixpath.join(base, photo.output), cutout.data)
            row = {"path": photo.path, "status": 200, "code": "", "message": "", "output": photo.output,
                   "bytes": len(cutout.data)}
        except Exception as exc:  # noqa: BLE001
            row = {**error_row(photo.path, _as_api_error(exc)), "output": "", "bytes": 0}
        rows.append({**row, "workers": json.dumps([segment_worker, _worker_stats("render")])})
    return {key: [row[key] for row in rows] for key in rows[0]} if rows else {}


def write_atomically(filesys, path: str, data: bytes) -> None:
    """A temp name in the same folder, then a rename: readers (and a rerun) see the whole file or none."""
    filesys.create_dir(posixpath.dirname(path), recursive=True)
    head, name = posixpath.split(path)
    temp = posixpath.join(head, f".{name}{PARTIAL}{uuid.uuid4().hex[:12]}")
    with filesys.open_output_stream(temp) as stream:
        stream.write(data)
    filesys.move(temp, path)


def _worker_stats(stage: str) -> dict:
    import ray

    node = ray.get_runtime_context().get_node_id() if ray.is_initialized() else ""
    return {"stage": stage, "pid": os.getpid(), "node": node, "rss_mb": _rss_mb(), "max_rss_mb": _max_rss_mb()}


def _rss_mb() -> float:
    """This process's resident memory now (Linux), else its peak so far."""
    try:
        with open("/proc/self/statm") as statm:
            return round(int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20, 1)
    except (OSError, ValueError, IndexError):
        return _max_rss_mb()


def _max_rss_mb() -> float:
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)  # kilobytes on Linux


# -- the driver ---------------------------------------------------------------------------------------------------


def existing_outputs(output: str) -> set[str]:
    """Finished outputs, relative to OUTPUT; deletes the partial files that a killed job left."""
    from pyarrow import fs as pafs

    filesys, base = filesystem(output)
    found = set()
    for info in filesys.get_file_info(pafs.FileSelector(base, recursive=True, allow_not_found=True)):
        if info.type != pafs.FileType.File:
            continue
        if PARTIAL in info.base_name:
            filesys.delete_file(info.path)
        else:
            found.add(posixpath.relpath(info.path, base))
    return found


def read_errors(output: str) -> dict[str, dict]:
    """errors.jsonl of an earlier run, by path; a line cut short by a kill is ignored (that photo is redone)."""
    filesys, base = filesystem(output)
    try:
        with filesys.open_input_stream(posixpath.join(base, ERRORS_FILE)) as stream:
            text = stream.read().decode("utf-8", "replace")
    except (FileNotFoundError, OSError):
        return {}
    rows = {}
    for line in text.splitlines():
        try:
            row = json.loads(line)
            rows[row["path"]] = row
        except (ValueError, KeyError, TypeError):
            continue
    return rows


class ErrorLog:
    """OUTPUT/errors.jsonl, one row per failed input, rewritten atomically (at most every few seconds, and at
    the end) so that the file is always whole: a kill loses at most the last rows, whose photos are redone."""

    def __init__(self, output: str, rows: dict[str, dict], every_s: float = 2.0):
        self.filesys, base = filesystem(output)
        self.path = posixpath.join(base, ERRORS_FILE)
        self.rows, self.every_s, self._written = rows, every_s, 0.0
        self.flush(force=True)

    def add(self, row: dict) -> None:
        self.rows[row["path"]] = {k: row[k] for k in ("path", "status", "code", "message")}
        self.flush()

    def flush(self, force: bool = False) -> None:
        if not force and time.monotonic() - self._written < self.every_s:
            return
        text = "".join(json.dumps(row) + "\n" for row in self.rows.values())
        if text or self.filesys.get_file_info(self.path).type.name != "NotFound":
            write_atomically(self.filesys, self.path, text.encode())
        self._written = time.monotonic()


@dataclass
class Summary:
    total: int = 0
    done: int = 0  # cut out by this run
    skipped: int = 0  # already done by an earlier run
    failed: int = 0  # rows in errors.jsonl (this run's and kept earlier ones)
    seconds: float = 0.0
    images_per_second: float = 0.0
    first_result_s: float = 0.0  # from the start to the first photo done: actors started, model loaded
    steady_images_per_second: float = 0.0  # after the first photo: the pipeline's rate once it runs
    driver_rss_mb: dict = field(default_factory=dict)  # start, first_result, end (resident now), max (peak)
    workers: list = field(default_factory=list)  # per worker process: stage, node, pid, RSS at its first and
    # last photo, peak, photos

    @property
    def exit_code(self) -> int:
        return 0 if self.failed == 0 else 1

    def as_dict(self) -> dict:
        return {**self.__dict__, "worker_max_rss_mb": max((w["max_rss_mb"] for w in self.workers), default=0.0)}


class WorkerMemory:
    """RSS per worker process, from the stats each result row carries."""

    def __init__(self):
        self.by_process: dict[tuple, dict] = {}

    def add(self, stats: dict) -> None:
        key = (stats["node"], stats["pid"], stats["stage"])
        seen = self.by_process.get(key)
        if seen is None:
            self.by_process[key] = {"stage": stats["stage"], "node": stats["node"], "pid": stats["pid"],
                                    "first_rss_mb": stats["rss_mb"], "last_rss_mb": stats["rss_mb"],
                                    "max_rss_mb": stats["max_rss_mb"], "photos": 1}
        else:
            seen.update(last_rss_mb=stats["rss_mb"], max_rss_mb=max(seen["max_rss_mb"], stats["max_rss_mb"]),
                        photos=seen["photos"] + 1)

    def rows(self) -> list[dict]:
        return sorted(self.by_process.values(), key=lambda w: (w["stage"], w["node"], w["pid"]))


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
    driver_start_rss = _rss_mb()
    try:
        parse_output_options(**{k: v for k, v in job.options.items() if k in OUTPUT_OPTIONS})
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
            _start_local_ray()
        summary.workers = _execute(job, todo, log, summary, start)
    log.flush(force=True)
    summary.failed = len(log.rows)
    summary.seconds = round(time.perf_counter() - start, 2)
    summary.images_per_second = round(summary.done / summary.seconds, 3) if summary.seconds else 0.0
    if summary.done > 1 and summary.seconds > summary.first_result_s:
        summary.steady_images_per_second = round((summary.done - 1) / (summary.seconds - summary.first_result_s), 3)
    summary.driver_rss_mb = {"start": driver_start_rss, **summary.driver_rss_mb, "end": _rss_mb(),
                             "max": _max_rss_mb()}
    return summary


def _start_local_ray(attempts: int = 3) -> None:
    """The cluster RAY_ADDRESS names, else a local Ray (started again if its raylet missed Ray's fixed 30 s to
    register, as on a machine busy with other work)."""
    import ray

    from .local_ray import init_local_ray

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


def _execute(job: Job, todo: list[Photo], log: ErrorLog, summary: Summary, start: float) -> list[dict]:
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
    memory = WorkerMemory()
    with tqdm(total=len(todo), unit="photo", disable=not job.progress, desc="bgremove batch") as bar:
        for batch in dataset.iter_batches(batch_size=None, batch_format="numpy"):
            for i in range(len(batch["path"])):
                row = {key: batch[key][i] for key in batch}
                if row["status"] == 200:
                    summary.done += 1
                    log.rows.pop(str(row["path"]), None)
                else:
                    log.add({"path": str(row["path"]), "status": int(row["status"]), "code": str(row["code"]),
                             "message": str(row["message"])})
                for stats in json.loads(str(row["workers"])):
                    memory.add(stats)
                if "first_result" not in summary.driver_rss_mb:
                    summary.driver_rss_mb["first_result"] = _rss_mb()
                    summary.first_result_s = round(time.perf_counter() - start, 2)
                bar.update(1)
    return memory.rows()
