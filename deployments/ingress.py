"""CPU front door: the HTTP API and the Python handle API, upload checks and decoding, request fan-out.

``IngressCore`` is the plain class: it decodes and validates, then drives the other stages through a small
``Stages`` interface (Ray handles in the graph, direct calls in process). ``Ingress`` is the Ray shell whose
methods are the HTTP routes (FastAPI through ``serve.ingress``, which also gives ``/docs``).
"""


import asyncio
import logging
import secrets
import time
from collections import OrderedDict
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Awaitable, Literal, Protocol

from fastapi import Depends, FastAPI, File, Form, Header, Request, UploadFile
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel
from ray import serve
from ray.serve.handle import DeploymentHandle

from . import errors
from .settings import GuardConfig, IngressLimits

from . import http_guard
from .health import CachedProbe
from .imaging import DecodedImage, check_image_id, decode, scoped_image_id
from .messages import Cutout, ImageRef, OutputOptions, SegmentRequest, SegmentResult, StoredImage
from .metrics import IngressMetrics
from .output_options import check_output_size, parse_output_options
from .prompts import parse_model_prompt

logger = logging.getLogger(__name__)


class Stages(Protocol):
    """What the ingress needs from the rest of the graph."""

    def share(self, array) -> ImageRef: ...
    def segment(self, request: SegmentRequest) -> Awaitable[SegmentResult]: ...
    def render(self, seg: Awaitable[SegmentResult], image: ImageRef, options: OutputOptions,
               source_alpha: ImageRef | None) -> Awaitable[Cutout]: ...
    def warm(self, image_id: str, image: ImageRef) -> Awaitable[bool]: ...
    def remember(self, record: StoredImage) -> Awaitable[bool]: ...
    def recall(self, image_id: str) -> Awaitable[StoredImage | None]: ...


def _ms(start: float) -> float:
    return round((time.perf_counter() - start) * 1000.0, 2)


class RecentImages:
    """This replica's short memory of image records, so that a burst of clicks on one photo skips the round
    trip to the image store. Bounded in entries, pinned bytes and age: after ``fresh_s`` the store is asked
    again, so its TTL and evictions stay the truth."""

    def __init__(self, max_entries: int = 128, max_bytes: int = 512 << 20, fresh_s: float = 10.0,
                 clock=time.monotonic):
        self.max_entries, self.max_bytes, self.fresh_s, self._clock = max_entries, max_bytes, fresh_s, clock
        self._records: OrderedDict[str, tuple[StoredImage, float]] = OrderedDict()

    def get(self, image_id: str) -> StoredImage | None:
        self._prune()
        entry = self._records.get(image_id)
        if entry is None:
            return None
        self._records.move_to_end(image_id)
        return entry[0]

    def add(self, record: StoredImage) -> None:
        self._records.pop(record.image_id, None)
        self._records[record.image_id] = (record, self._clock() + self.fresh_s)
        self._prune()

    def _prune(self) -> None:
        now = self._clock()
        for image_id in [k for k, (_, until) in self._records.items() if until <= now]:
            del self._records[image_id]
        while self._records and (len(self._records) > self.max_entries or
                                 sum(r.nbytes for r, _ in self._records.values()) > self.max_bytes):
            self._records.popitem(last=False)


# Server-Timing entries that exist only when the embedding was computed for this request: with API keys they would
# tell a key that another key had uploaded the same photo, so they are left out of answers to requests with a photo.
CACHE_REVEALING_TIMINGS = frozenset({"fetch", "embed", "coalesced"})


class IngressCore:
    """``owner`` below: the API key's SHA-256 digest the request came with ("" without keys). Stored images (and
    their ids) belong to it; the embedding cache underneath is shared, keyed by content hash."""

    def __init__(self, stages: Stages, limits: IngressLimits, id_secret: str = ""):
        self.stages = stages
        self.limits = limits
        self._id_secret = (id_secret or secrets.token_hex(32)).encode()
        self.recent = RecentImages(fresh_s=limits.recent_image_s)
        # The decode threads are the bound (a semaphore would be released by a request that timed out while its
        # thread, which cannot be stopped, still decodes); the other uploads wait in the pool's queue.
        self._decoders = ThreadPoolExecutor(limits.max_concurrent_decodes, thread_name_prefix="decode")

    async def _decode_and_share(self, data: bytes, owner: str) -> StoredImage:
        """Decoded pixels live here only until they are shared (in Ray: copied to the object store), so a burst of
        large uploads holds at most max_concurrent_decodes images' worth of decoding memory in this replica."""
        decoded = await asyncio.get_running_loop().run_in_executor(self._decoders, decode, data, self.limits)
        return self._share(decoded, owner)

    async def upload(self, data: bytes, owner: str = "") -> StoredImage:
        """Stores an image for later clicks and warms its embedding (POST /v1/images)."""
        start = time.perf_counter()
        stored = await self._decode_and_share(data, owner)
        kept, _ = await asyncio.gather(self.stages.remember(stored),
                                       self.stages.warm(stored.embedding_id, stored.model))
        if not kept:
            raise errors.too_large("image_store_full", "the image is larger than the image store keeps for one "
                                   f"{'API key' if owner else 'server'}; send it with each /v1/cutout request instead")
        await self._renew_if_slow(stored.image_id, start)
        return stored

    async def cutout(self, *, image: bytes | None = None, image_id: str | None = None, points: Any = None,
                     labels: Any = None, box: Any = None, options: OutputOptions = OutputOptions(),
                     owner: str = "") -> Cutout:
        start = time.perf_counter()
        timings: dict[str, float] = {}
        remembering = None
        if image is not None:
            source = await self._decode_and_share(image, owner)
            timings["read"] = _ms(start)
            # Later clicks may name this photo by its id alone, on any ingress replica: the image store keeps
            # it while the model works, and the answer waits for that so the id is good once the client has it.
            remembering = self._in_background(self.stages.remember(source))
        elif image_id:
            source = await self._recall(check_image_id(image_id), owner)
        else:
            raise errors.bad_request("missing_image", "send the photo as `image`, or the `image_id` that "
                                     "POST /v1/images returned")

        model_prompt = parse_model_prompt(points, labels, box, source.width, source.height, source.model.shape,
                                          self.limits.max_points)
        check_output_size(options, source.width, source.height)
        seg = self.stages.segment(SegmentRequest(source.embedding_id, source.model, model_prompt))
        cutout = await self.stages.render(seg, source.full, options, source.alpha)
        image_id = source.image_id
        if remembering is not None:
            if await remembering:
                await self._renew_if_slow(image_id, start)
            else:  # not kept (larger than the store takes for this key, or the store failed): promise no id
                image_id = ""
        timings["total"] = _ms(start)
        cache_hit, stage_timings = cutout.cache_hit, cutout.timings_ms
        if owner and image is not None:
            # The cache is shared by all keys: a hit on a photo sent now may come from another key's upload. Say
            # only what this key's own uploads tell it (a hit on its image_id); the response time still differs.
            cache_hit = False
            stage_timings = {k: v for k, v in stage_timings.items() if k not in CACHE_REVEALING_TIMINGS}
        return Cutout(**{**cutout.__dict__, "image_id": image_id, "cache_hit": cache_hit,
                         "timings_ms": {**stage_timings, **timings},
                         "source_megapixels": source.width * source.height / 1e6})

    def _share(self, decoded: DecodedImage, owner: str) -> StoredImage:
        full = self.stages.share(decoded.rgb)
        model = full if decoded.model_rgb is decoded.rgb else self.stages.share(decoded.model_rgb)
        alpha = self.stages.share(decoded.alpha) if decoded.alpha is not None else None
        nbytes = decoded.rgb.nbytes + (0 if model is full else decoded.model_rgb.nbytes) + (
            decoded.alpha.nbytes if decoded.alpha is not None else 0)
        image_id = scoped_image_id(decoded.image_id, owner, self._id_secret)
        stored = StoredImage(image_id, decoded.width, decoded.height, full, model, alpha, nbytes,
                             content_id=decoded.image_id, owner=owner)
        self.recent.add(stored)  # the next click on this photo may come here before the store has it
        return stored

    async def _renew_if_slow(self, image_id: str, start: float) -> None:
        """The store's TTL counts from when the record went in, at the start of the request: after a slow answer
        (longer than recent_image_s, a quarter of the TTL at most) one read renews it, so the id the client now
        holds is good for a whole TTL, however long the model took."""
        if time.perf_counter() - start > self.limits.recent_image_s:
            await self.stages.recall(image_id)

    async def _recall(self, image_id: str, owner: str) -> StoredImage:
        # A record this replica fetched (and so renewed in the store) less than fresh_s ago needs no store call:
        # the store's TTL (at least 4x fresh_s) then counts from at most fresh_s before the latest click.
        stored = self.recent.get(image_id)
        if stored is None:
            stored = await self.stages.recall(image_id)
            if stored is not None:
                self.recent.add(stored)
        if stored is None or stored.owner != owner:  # another key's id (unguessable anyway) is unknown to this one
            raise errors.unknown_image(image_id)
        return stored

    @staticmethod
    def _in_background(work: Awaitable) -> asyncio.Task:
        """Runs bookkeeping concurrently; its failure is logged (the task's result is then None), never the
        request's failure."""
        async def run():
            try:
                return await work
            except Exception:
                logger.warning("background call failed", exc_info=True)
                return None
        task = asyncio.get_running_loop().create_task(run())
        _background_tasks.add(task)  # a reference, so the task is not garbage-collected mid-flight
        task.add_done_callback(_background_tasks.discard)
        return task


_background_tasks: set[asyncio.Task] = set()


class RayStages:
    """Stages reached through Serve handles. Segmenter calls carry the image id as session id, so the
    consistent-hash router sends every click on one image to the replica that holds its embedding."""

    def __init__(self, segmenter: DeploymentHandle, postprocess: DeploymentHandle, image_store: DeploymentHandle):
        self.segmenter, self.postprocess, self.image_store = segmenter, postprocess, image_store

    def share(self, array) -> ImageRef:
        return ImageRef.put(array)

    def segment(self, request: SegmentRequest):
        return self.segmenter.options(session_id=request.image_id).segment.remote(request)

    def render(self, seg, image, options, source_alpha):
        # The segmenter's response goes straight into the postprocess call: Serve hands over the result
        # without a round trip through this replica.
        return self.postprocess.render.remote(seg, image, options, source_alpha)

    def warm(self, image_id, image):
        return self.segmenter.options(session_id=image_id).warm.remote(image_id, image)

    def remember(self, record):
        alpha = record.alpha._ref if record.alpha is not None else None
        return self.image_store.put.remote(record.image_id, record.full._ref, record.model._ref, alpha,
                                           content_id=record.embedding_id, owner=record.owner)

    def recall(self, image_id):
        return self.image_store.get.remote(image_id)


# -- HTTP -------------------------------------------------------------------------------------------------------

http_app = FastAPI(
    title="background-remover",
    version="0.1.0",
    description="Click on an object in a photo, get it back on a transparent background (SAM 2.1 on Ray Serve).",
    dependencies=[Depends(http_guard.reject_repeated_fields)],
)
http_guard.install(http_app)  # API keys, CORS, size limits, overload gate, deadline; JSON for Starlette's errors


class ErrorDetail(BaseModel):
    code: str
    message: str


class ErrorBody(BaseModel):
    error: ErrorDetail


class ImageInfo(BaseModel):
    image_id: str
    width: int
    height: int


# The click-to-cut web page: plain files, no build step.
STATIC_DIR = Path(__file__).resolve().parent / "static"
http_app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")


_ERRORS = {status: {"model": ErrorBody, "description": text} for status, text in [
    (400, "malformed fields"), (401, "API key missing or wrong (when keys are configured)"),
    (404, "unknown or expired image_id"), (413, "too large (bytes or pixels)"), (415, "not an image"),
    (422, "points, labels, box or options invalid"), (503, "overloaded; see Retry-After")]}
_IMAGE_RESPONSE = {200: {"content": {"image/png": {}, "image/webp": {}, "image/jpeg": {}},
                         "description": "the cut-out"}}


def error_response(error: errors.ApiError) -> JSONResponse:
    return JSONResponse(error.body(), status_code=error.status, headers=error.headers)


@http_app.exception_handler(errors.ApiError)
async def _api_error(_: Request, error: errors.ApiError) -> JSONResponse:
    return error_response(error)


@http_app.exception_handler(RequestValidationError)
async def _validation_error(_: Request, exc: RequestValidationError) -> JSONResponse:
    problems = "; ".join(f"{'.'.join(str(p) for p in e.get('loc', ())[1:]) or 'body'}: {e.get('msg')}"
                         for e in exc.errors())
    return error_response(errors.bad_request("malformed_request", f"the request's fields are malformed ({problems}); "
                                             "send multipart/form-data with an `image` file and `points`"))


def as_api_error(exc: BaseException, uploaded: bool = False) -> errors.ApiError | None:
    """Maps what a downstream call can raise onto the client-facing error, or None if it is a real fault.
    `uploaded`: the request brought its photo, so a lost object is not a stored image but a result lost with
    the node that held it (the segmenter's answer on its way to postprocess): a retry works."""
    from ray.exceptions import ObjectLostError, RayActorError, RayTaskError
    from ray.serve.exceptions import BackPressureError, DeploymentUnavailableError

    if isinstance(exc, errors.ApiError):
        return exc
    if isinstance(exc, RayTaskError) and isinstance(exc.cause, errors.ApiError):
        return exc.cause
    if isinstance(exc, RayTaskError) and isinstance(exc.cause, BaseException) and exc.cause is not exc:
        return as_api_error(exc.cause, uploaded)  # e.g. a replica that died while this one waited on it
    if isinstance(exc, BackPressureError):
        return errors.overloaded()
    if isinstance(exc, (RayActorError, DeploymentUnavailableError)) or (uploaded and isinstance(exc, ObjectLostError)):
        return errors.ApiError(503, "replica_unavailable", "a worker of the service restarted while handling "
                               "this request; retry it", headers={"Retry-After": "1"})
    if isinstance(exc, ObjectLostError):  # OwnerDiedError among them
        return errors.ApiError(404, "unknown_image_id", "the stored image is no longer available (it expired, "
                               "was evicted, or was lost in a restart); upload it again")
    if exc.__cause__ is not None and exc.__cause__ is not exc:
        # Serve wraps an upstream replica's death in a RayServeException whose cause is the ActorDiedError.
        return as_api_error(exc.__cause__, uploaded)
    return None


def cutout_response(cutout: Cutout) -> Response:
    timing = ", ".join(f"{name};dur={value}" for name, value in cutout.timings_ms.items())
    cache = f'cache;desc="{"hit" if cutout.cache_hit else "miss"}"'
    headers = {"X-Image-Id": cutout.image_id} if cutout.image_id else {}  # none when the store did not keep it
    return Response(cutout.data, media_type=cutout.media_type, headers={
        **headers,
        "X-Mask-Score": f"{cutout.score:.4f}",
        "X-Embedding-Cache": "hit" if cutout.cache_hit else "miss",
        "Server-Timing": f"{timing}, {cache}" if timing else cache,
    })


async def _read_upload(upload: UploadFile | None, limits: IngressLimits) -> bytes | None:
    if upload is None:
        return None
    data = await upload.read(limits.max_upload_bytes + 1)
    if len(data) > limits.max_upload_bytes:
        raise errors.too_large("file_too_large", f"the image is larger than the {limits.max_upload_bytes / 1e6:.0f} "
                               "MB limit; send a smaller or more compressed file")
    return data


# How old the segmenter probe behind GET /healthz may be: at most one probe per this many seconds per ingress replica.
HEALTH_MAX_AGE_S = 2.0


# max_queued_requests: past it the HTTP proxy itself answers 503 + Retry-After (the guard's own JSON 503 at
# max_inflight usually comes first).
@serve.deployment(name="Ingress", max_ongoing_requests=64, max_queued_requests=256,
                  backpressure_config={"retry_after_s": 1}, ray_actor_options={"num_cpus": 0.25})
@serve.ingress(http_app)
class Ingress:
    def __init__(self, segmenter: DeploymentHandle, postprocess: DeploymentHandle, image_store: DeploymentHandle,
                 limits: IngressLimits, guard: GuardConfig = GuardConfig()):
        self.guard_config = guard
        self.core = IngressCore(RayStages(segmenter, postprocess, image_store), limits, guard.image_id_secret)
        self.metrics = IngressMetrics()
        # /healthz is outside the keys and the overload gate: it must never cost the segmenter a slot per call.
        self.health = CachedProbe(lambda: asyncio.wait_for(segmenter.stats.remote(), timeout=5.0),
                                  max_age_s=HEALTH_MAX_AGE_S)

    def __serve_build_asgi_app__(self):
        # Serve calls this after __init__, before the first request: the guard gets its settings passed in, not
        # looked up (a guard without them refuses every request).
        return http_guard.configure(self.app, self.guard_config)

    async def _guarded(self, work: Awaitable, uploaded: bool):
        try:
            return await work
        except Exception as exc:
            api_error = as_api_error(exc, uploaded)
            if api_error is None:
                raise
            self.metrics.refused.inc(tags={"code": str(api_error.status)})
            raise api_error from exc

    async def _cutout(self, route: str, request: Request, upload: UploadFile | None, options: dict | None = None,
                      **prompt) -> Response:
        async def work():
            parsed = parse_output_options(**(options or {}))
            data = await _read_upload(upload, self.core.limits)
            return data, await self.core.cutout(image=data, options=parsed, owner=http_guard.api_key_of(request),
                                                **prompt)

        data, cutout = await self._guarded(work(), uploaded=upload is not None)
        if data:  # image_id clicks upload nothing (and Ray counters refuse a zero increment)
            self.metrics.bytes_in.inc(len(data), tags={"route": route})
        self.metrics.bytes_out.inc(len(cutout.data), tags={"route": route})
        self.metrics.megapixels.observe(cutout.source_megapixels)
        self.metrics.timings(cutout.timings_ms, ("read", "total"))
        return cutout_response(cutout)

    @http_app.post("/background-removal/remove", response_class=Response, responses={**_IMAGE_RESPONSE, **_ERRORS},
                   summary="Cut out the clicked object (the replaced service's route)")
    async def remove_legacy(self, request: Request, image: UploadFile = File(..., description="the photo"),
                            points: str = Form(..., description="JSON [[x, y], ...] in pixels of the photo")) -> Response:
        return await self._cutout("legacy", request, image, points=points)

    @http_app.post("/v1/cutout", response_class=Response, responses={**_IMAGE_RESPONSE, **_ERRORS},
                   summary="Cut out an object: clicks, exclude clicks and/or a box; output options")
    async def cutout(
        self,
        request: Request,
        image: UploadFile | None = File(None, description="the photo (or send image_id instead)"),
        image_id: str | None = Form(None, description="id from POST /v1/images, instead of image"),
        points: str | None = Form(None, description="JSON [[x, y], ...] in pixels"),
        labels: str | None = Form(None, description="JSON [1, 0, ...]: 1 keep, 0 exclude; default all 1"),
        box: str | None = Form(None, description="JSON [x0, y0, x1, y1] in pixels"),
        format: Literal["png", "webp", "jpeg"] | None = Form(None, description="default: from Accept, else png"),
        mask_only: bool = Form(False, description="return the single-channel mask"),
        background: str | None = Form(None, description="fill colour instead of transparency, e.g. #ffffff"),
        crop: bool = Form(False, description="crop to the subject"),
        crop_margin: int = Form(0, description="pixels kept around the subject when cropping"),
        feather: float = Form(0.0, description="extra edge softening (Gaussian sigma, pixels)"),
        quality: int = Form(90, description="WebP / JPEG quality"),
        refine: bool = Form(False, description="refine the edge with the full-resolution photo (closed-form "
                            "matting; slower, see README)"),
        accept: str | None = Header(None, include_in_schema=False),
    ) -> Response:
        options = dict(format=format, accept=accept, mask_only=mask_only, background=background, crop=crop,
                       crop_margin=crop_margin, feather=feather, quality=quality, refine=refine)
        return await self._cutout("cutout", request, image, options, image_id=image_id, points=points, labels=labels,
                                  box=box)

    @http_app.post("/v1/images", response_model=ImageInfo, responses=_ERRORS,
                   summary="Upload once, click many: store the photo and warm its embedding")
    async def upload(self, request: Request, image: UploadFile = File(..., description="the photo")) -> ImageInfo:
        async def work():
            data = await _read_upload(image, self.core.limits)
            return data, await self.core.upload(data, owner=http_guard.api_key_of(request))

        data, stored = await self._guarded(work(), uploaded=True)
        self.metrics.bytes_in.inc(len(data), tags={"route": "images"})
        return ImageInfo(image_id=stored.image_id, width=stored.width, height=stored.height)

    @http_app.get("/", include_in_schema=False)
    async def page(self) -> FileResponse:
        return FileResponse(STATIC_DIR / "index.html")

    @http_app.get("/healthz", summary="200 when the graph can serve")
    async def healthz(self) -> JSONResponse:
        probe = await self.health.result()
        if probe.error is not None:
            return JSONResponse({"status": "unavailable", "reason": type(probe.error).__name__}, status_code=503,
                                headers={"Retry-After": str(round(HEALTH_MAX_AGE_S))})
        return JSONResponse({"status": "ok", "model": probe.value["model"], "device": probe.value["device"]})

    async def remove(self, image_bytes: bytes, points: Any = None, labels: Any = None, box: Any = None,
                     **options: Any) -> bytes:
        """Python API: ``await handle.remove.remote(image_bytes, points=[[x, y]])`` returns the PNG bytes."""
        cutout = await self._guarded(self.core.cutout(image=image_bytes, points=points, labels=labels, box=box,
                                                      options=parse_output_options(**options)), uploaded=True)
        return cutout.data
