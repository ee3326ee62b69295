"""The HTTP layer: the FastAPI app (which also gives ``/docs``), its schemas, and ``IngressRoutes``, whose methods are
the routes and the Python handle's ``remove``, each a thin adapter over an ``IngressCore``."""

from pathlib import Path
from typing import Any, Awaitable, Callable, Literal

from fastapi import Depends, File, Form, Header, Request, UploadFile
from fastapi.responses import FileResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from fastapi_offline import FastAPIOffline
from pydantic import BaseModel
from starlette.formparsers import MultiPartParser

from .. import errors, http_errors, http_guard
from ..health import CachedProbe, StageUnavailable
from ..messages import Cutout
from ..metrics import IngressMetrics
from ..output_options import parse_output_options
from ..settings import MiB, GuardConfig
from . import openapi
from .core import IngressCore

# /docs (Swagger UI) and /redoc (ReDoc) with their scripts and styles served by this app (fastapi-offline ships them,
# under /static-offline-docs): an air-gapped cluster gets working pages, not blank ones waiting on a CDN.
http_app = FastAPIOffline(
    title="background-remover",
    version="0.1.0",
    description="Click on an object in a photo, get it back on a transparent background (SAM 2.1 on Ray Serve).",
    dependencies=[Depends(http_guard.reject_repeated_fields), Depends(openapi.reject_unknown_fields)],
    swagger_ui_parameters={"validatorUrl": None},  # Swagger UI would ask validator.swagger.io for a badge
)
http_guard.install(http_app)  # API keys, CORS, size limits, overload gate, deadline
http_errors.install(http_app)  # every refusal, ours or Starlette's, as DESIGN.md's JSON error
openapi.install(http_app)  # the fields' real shapes and every error answer, for generated clients


class ImageInfo(BaseModel):
    image_id: str
    width: int
    height: int


# The click-to-cut web page: plain files, no build step.
STATIC_DIR = Path(__file__).resolve().parent.parent / "static"
http_app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")


# How old the stages' probe behind GET /healthz may be: at most one probe per this many seconds per ingress replica.
HEALTH_MAX_AGE_S = 2.0


def as_api_error(exc: BaseException, uploaded: bool = False) -> errors.ApiError | None:
    """Maps what a downstream call can raise onto the client-facing error, or None if it is a real fault.
    `uploaded`: the request brought its photo, so a lost object is not a stored image but a result lost with
    the node that held it (the segmenter's answer on its way to postprocess): a retry works."""
    from ray.exceptions import ObjectLostError, RayActorError, RayTaskError
    from ray.serve.exceptions import BackPressureError, DeploymentUnavailableError

    if isinstance(exc, errors.ApiError):
        return exc
    if isinstance(exc, MemoryError):  # ours, for now: a retry may find the memory
        return errors.out_of_memory()
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


def server_timing(timings_ms: dict[str, float]) -> str:
    """A ``Server-Timing`` header's entries: ``name;dur=ms`` each."""
    return ", ".join(f"{name};dur={value}" for name, value in timings_ms.items())


def cutout_response(cutout: Cutout) -> Response:
    timing = server_timing(cutout.timings_ms)
    cache = f'cache;desc="{"hit" if cutout.cache_hit else "miss"}"'
    headers = {"X-Image-Id": cutout.image_id} if cutout.image_id else {}  # none when the store did not keep it
    if cutout.preview_scale:
        headers["X-Preview-Scale"] = f"{cutout.preview_scale:g}"
    return Response(cutout.data, media_type=cutout.media_type, headers={
        **headers,
        "X-Mask-Score": f"{cutout.score:.4f}",
        "X-Embedding-Cache": "hit" if cutout.cache_hit else "miss",
        "Server-Timing": f"{timing}, {cache}" if timing else cache,
    })


# Starlette writes an uploaded part larger than spool_max_size (1 MB by default) to a temporary file, which the route
# then reads back: ~6 ms more for a 6 MB photo, ~8 ms for 20 MB (measured on Starlette 1.10). Photos up to this size
# stay in memory; _read_upload frees that copy as soon as it has read it. Set on this process's parser (the ingress
# replica's).
MultiPartParser.spool_max_size = UPLOAD_SPOOL_BYTES = 16 * MiB


async def _read_upload(upload: UploadFile | None, max_bytes: int) -> bytes | None:
    """At most one byte past the limit: decoding refuses a file over it (imaging.decode_image). The part's own
    buffer is closed at once, so a request holds one copy of its photo while it waits to be decoded."""
    if upload is None:
        return None
    data = await upload.read(max_bytes + 1)
    await upload.close()
    return data


class IngressRoutes:
    """``probe``: the health check of the graph behind GET /healthz (answered from a result at most
    HEALTH_MAX_AGE_S old, and outside the keys and the overload gate: it never costs a slot per call)."""

    def __init__(self, core: IngressCore, guard: GuardConfig, probe: Callable[[], Awaitable[Any]]):
        self.core, self.guard_config = core, guard
        self.metrics = IngressMetrics()
        self.health = CachedProbe(probe, max_age_s=HEALTH_MAX_AGE_S)

    def __serve_build_asgi_app__(self):
        # Serve calls this after __init__, before the first request: the guard gets its settings passed in, not
        # looked up (a guard without them refuses every request).
        return http_guard.configure(self.app, self.guard_config)

    async def _guarded(self, work: Awaitable, uploaded: bool):
        try:
            return await work
        except Exception as exc:
            api_error = as_api_error(exc, uploaded)
            if api_error is None:  # the 500 handler (http_errors.unexpected_error) logs its traceback
                self.metrics.internal_errors.inc(tags={"error": type(exc).__name__})
                raise
            self.metrics.refused.inc(tags={"code": str(api_error.status)})
            raise api_error from exc

    async def _cutout(self, route: str, request: Request, upload: UploadFile | None, options: dict | None = None,
                      **prompt) -> Response:
        async def work():
            parsed = parse_output_options(**(options or {}))
            data = await _read_upload(upload, self.core.limits.max_upload_bytes)
            return data, await self.core.cutout(image=data, options=parsed, owner=http_guard.api_key_of(request),
                                                **prompt)

        data, cutout = await self._guarded(work(), uploaded=upload is not None)
        if data:  # image_id clicks upload nothing (and Ray counters refuse a zero increment)
            self.metrics.bytes_in.inc(len(data), tags={"route": route})
        self.metrics.bytes_out.inc(len(cutout.data), tags={"route": route})
        self.metrics.megapixels.observe(cutout.source_megapixels)
        self.metrics.timings(cutout.timings_ms, ("read", "total"))
        return cutout_response(cutout)

    @http_app.post("/background-removal/remove", response_class=Response,
                   summary="Cut out the clicked object (the replaced service's route)")
    async def remove_legacy(self, request: Request, image: UploadFile = File(..., description="the photo"),
                            points: str = Form(..., description="JSON [[x, y], ...] in pixels of the photo")) -> Response:
        return await self._cutout("legacy", request, image, points=points)

    @http_app.post("/v1/cutout", response_class=Response,
                   summary="Cut out an object: clicks, exclude clicks and/or a box; output options")
    async def cutout(
        self,
        request: Request,
        image: UploadFile | None = File(None, description="the photo (or send image_id instead)"),
        image_id: str | None = Form(None, description="id from POST /v1/images, instead of image (a photo sent as "
                                    "image wins)"),
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
        preview: bool = Form(False, description="the mask at SAM's own 256x256 over the whole photo, for showing "
                             "a click at once: a greyscale PNG, 127.5 + X-Preview-Scale * logit; upsample the "
                             "logits over the photo (bilinear) and > 0 is the mask. No background, crop, feather or "
                             "refine"),
        accept: str | None = Header(None, include_in_schema=False),
    ) -> Response:
        options = dict(format=format, accept=accept, mask_only=mask_only, background=background, crop=crop,
                       crop_margin=crop_margin, feather=feather, quality=quality, refine=refine, preview=preview)
        return await self._cutout("cutout", request, image, options, image_id=image_id, points=points, labels=labels,
                                  box=box)

    @http_app.post("/v1/images", response_model=ImageInfo,
                   summary="Upload once, click many: store the photo and warm its embedding")
    async def upload(self, request: Request, image: UploadFile = File(..., description="the photo")) -> ImageInfo:
        async def work():
            data = await _read_upload(image, self.core.limits.max_upload_bytes)
            return data, await self.core.upload(data, owner=http_guard.api_key_of(request))

        data, stored = await self._guarded(work(), uploaded=True)
        self.metrics.bytes_in.inc(len(data), tags={"route": "images"})
        return ImageInfo(image_id=stored.image_id, width=stored.width, height=stored.height)

    @http_app.get("/", include_in_schema=False)
    async def page(self) -> FileResponse:
        return FileResponse(STATIC_DIR / "index.html")

    @http_app.get("/healthz", summary="200 when every stage behind the ingress answered a probe at most 2 s old")
    async def healthz(self) -> JSONResponse:
        probe = await self.health.result()
        if probe.error is not None:
            error = probe.error
            stage, cause = (error.stage, error.cause) if isinstance(error, StageUnavailable) else ("", error)
            return JSONResponse({"status": "unavailable", "stage": stage, "reason": type(cause).__name__},
                                status_code=503, headers={"Retry-After": str(round(HEALTH_MAX_AGE_S))})
        segmenter = probe.value["segmenter"]
        return JSONResponse({"status": "ok", "model": segmenter["model"], "device": segmenter["device"],
                             "stages": {name: "ok" for name in probe.value}})

    async def remove(self, image_bytes: bytes, points: Any = None, labels: Any = None, box: Any = None,
                     **options: Any) -> bytes:
        """Python API: ``await handle.remove.remote(image_bytes, points=[[x, y]])`` returns the PNG bytes."""
        cutout = await self._guarded(self.core.cutout(image=image_bytes, points=points, labels=labels, box=box,
                                                      options=parse_output_options(**options)), uploaded=True)
        return cutout.data
