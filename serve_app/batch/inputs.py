"""A catalogue job's inputs: the Job and Photo types, and listing a folder, a glob or a JSONL manifest as photos
with their prompts, output options and output names."""

from __future__ import annotations

import glob
import json
import os
import posixpath
from dataclasses import dataclass, field
from typing import Any, Iterable

from deployments import errors
from deployments.messages import OutputOptions
from deployments.output_options import parse_output_options

from ..config import AppArgs

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp", ".gif", ".bmp", ".tif", ".tiff", ".mpo")
SUFFIX_BY_FORMAT = {"png": ".png", "webp": ".webp", "jpeg": ".jpg"}
OUTPUT_OPTIONS = ("format", "mask_only", "background", "crop", "crop_margin", "feather", "quality", "refine")
ROW_KEYS = {"path", "points", "labels", "box", *OUTPUT_OPTIONS}
# The default prompt of a photo without one: a box over the frame less this share of each side. SAM then cuts
# the object that fills the box, the product of a centred product photo (a heuristic; see docs/bulk-jobs.md).
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
    fmt = output_options(options).format
    return [Photo(rel, posixpath.join(root, rel), output_name(rel, fmt), options=options) for rel in rels], []


def output_options(options: dict) -> OutputOptions:
    """The output options among a job's or a row's keys, checked (an ApiError names a bad one)."""
    return parse_output_options(**{k: v for k, v in options.items() if k in OUTPUT_OPTIONS})


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
            fmt = output_options(options).format
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
