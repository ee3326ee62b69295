"""A catalogue job's outputs: atomic writes, what an earlier run finished or refused, the errors.jsonl log,
and the job's Summary."""

from __future__ import annotations

import json
import posixpath
import time
import uuid
from dataclasses import dataclass, field

from .inputs import filesystem

ERRORS_FILE = "errors.jsonl"
PARTIAL = ".partial-"  # in the names of outputs being written; a rerun deletes what a killed job left


def write_atomically(filesys, path: str, data: bytes) -> None:
    """A temp name in the same folder, then a rename: readers (and a rerun) see the whole file or none."""
    filesys.create_dir(posixpath.dirname(path), recursive=True)
    head, name = posixpath.split(path)
    temp = posixpath.join(head, f".{name}{PARTIAL}{uuid.uuid4().hex[:12]}")
    with filesys.open_output_stream(temp) as stream:
        stream.write(data)
    filesys.move(temp, path)


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
