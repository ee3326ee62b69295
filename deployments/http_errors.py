"""Every HTTP refusal in DESIGN.md's JSON shape, ``{"error": {"code": ..., "message": ...}}``: the one
``error_response`` (the request guard answers with it too) and all the app's exception handlers, which ``install``
registers: our own refusals, FastAPI's validation errors, Starlette's own refusals and anything unexpected."""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from . import errors

logger = logging.getLogger(__name__)

CURL_HINT = "e.g. curl -F image=@photo.jpg -F 'points=[[100, 200]]' .../v1/cutout"


def error_response(error: errors.ApiError, headers: dict[str, str] | None = None) -> JSONResponse:
    """``headers``: sent as well, under the error's own."""
    return JSONResponse(error.body(), status_code=error.status, headers={**(headers or {}), **error.headers})


def install(app: FastAPI) -> None:
    """Registers every handler below; call before ``@serve.ingress`` freezes the app."""
    app.add_exception_handler(errors.ApiError, api_error)
    app.add_exception_handler(RequestValidationError, validation_error)
    app.add_exception_handler(StarletteHTTPException, http_error)
    app.add_exception_handler(Exception, unexpected_error)


async def api_error(_: Request, error: errors.ApiError) -> JSONResponse:
    return error_response(error)


async def validation_error(_: Request, exc: RequestValidationError) -> JSONResponse:
    problems = "; ".join(f"{'.'.join(str(p) for p in e.get('loc', ())[1:]) or 'body'}: {e.get('msg')}"
                         for e in exc.errors())
    return error_response(errors.bad_request("malformed_request", f"the request's fields are malformed ({problems}); "
                                             "send multipart/form-data with an `image` file and `points`"))


async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
    """Starlette's and FastAPI's own refusals (unknown route, wrong method, unparsable body) in our JSON shape."""
    status, detail = exc.status_code, exc.detail if isinstance(exc.detail, str) else str(exc.detail)
    path = request.url.path[:200]
    if status == 404:
        error = errors.ApiError(404, "not_found", f"there is no {request.method} {path}; the API is described "
                                "at /docs")
    elif status == 405:
        error = errors.ApiError(405, "method_not_allowed", f"{request.method} is not allowed on {path}; see /docs")
    elif status == 400 and "maximum size" in detail:
        error = errors.too_large("field_too_large", f"a form field is too large ({detail}); only `image` may be "
                                 "large, and it must be sent as a file part")
    elif status == 400:
        error = errors.bad_request("malformed_request", f"the request body could not be read ({detail}); send "
                                   f"multipart/form-data with an `image` file and `points`, {CURL_HINT}")
    else:
        error = errors.ApiError(status, f"http_{status}", detail)
    return error_response(error, headers=exc.headers)


async def unexpected_error(request: Request, exc: Exception) -> JSONResponse:
    # A fault of ours, not of the request: say so in the same JSON shape, without internals.
    logger.error("unexpected error on %s %s", request.method, request.url.path, exc_info=exc)
    return error_response(errors.ApiError(500, "internal_error", f"the server failed on this request "
                                          f"({type(exc).__name__}); retry, and report it if it persists"))
