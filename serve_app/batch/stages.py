"""The job's stages as Ray Data runs them: decode and prompt checks (CPU tasks), the segmenter (an actor per
model), render and write (CPU tasks). Rows cross stages pickled; a failed photo becomes an error row."""

from __future__ import annotations

import json
import logging
import pickle
import posixpath
import threading
from dataclasses import dataclass
from typing import Any

import numpy as np

from deployments import errors
from deployments.imaging import decode_image
from deployments.messages import OutputOptions, Prompt, SegmentResult
from deployments.prompts import parse_model_prompt
from deployments.settings import IngressLimits, PostprocessConfig, SegmenterConfig

from .inputs import Photo, default_box, error_row, filesystem, output_options
from .memory import worker_stats
from .outputs import write_atomically

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Prepared:
    photo: Photo
    image_id: str
    options: OutputOptions
    model_rgb: np.ndarray
    model_prompt: Prompt


def _read(photo: Photo, limits: IngressLimits) -> bytes:
    filesys, path = filesystem(photo.source)
    try:
        with filesys.open_input_stream(path) as stream:
            return stream.read(limits.max_upload_bytes + 1)  # decode_image() refuses more; never read an unbounded file
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
    options = output_options(photo.options)
    return Prepared(photo, decoded.image_id, options, decoded.model_rgb, prompt), decoded.rgb, decoded.alpha


def _failed(path: str, exc: Exception) -> dict:
    """The photo's error row, blamed as the HTTP API blames it: the photo's (4xx, final) or ours (5xx: MemoryError a
    503, anything else a 500 with its traceback logged), which a rerun tries again."""
    if isinstance(exc, errors.ApiError):
        return error_row(path, exc)
    if isinstance(exc, MemoryError):
        return error_row(path, errors.out_of_memory())
    logger.error("internal error on %s", path, exc_info=exc)
    return error_row(path, errors.ApiError(500, "internal_error", f"{type(exc).__name__}: {str(exc)[:300]}"))


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
            model.append(pickle.dumps(_failed(photo.path, exc)))
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
                    results[i] = _failed(items[i].photo.path, exc)
            else:
                for i, embedding in zip(good, embeddings):
                    item = items[i]
                    try:
                        logits, scores = self.segmenter.predict(embedding, item.model_prompt)
                        seg = SegmentResult(item.image_id, logits, scores, False)
                        results[i] = (item.photo, item.options, seg)
                    except Exception as exc:  # noqa: BLE001
                        results[i] = _failed(item.photo.path, exc)
        worker = worker_stats("segment")
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
            row = {**_failed(photo.path, exc), "output": "", "bytes": 0}
        rows.append({**row, "workers": json.dumps([segment_worker, worker_stats("render")])})
    return {key: [row[key] for row in rows] for key in rows[0]} if rows else {}
