"""The ingress's front door, in front of the FastAPI routes: API keys, CORS, request-size limits, an overload gate
and a deadline; plus DESIGN.md's JSON error body for what Starlette and FastAPI refuse on their own.

``RequestGuard`` is a plain ASGI middleware (tested without Ray). The FastAPI app is frozen when ``@serve.ingress``
runs, before any config exists, so the Ingress replica hands the guard its settings explicitly (``configure``, from
Serve's ``__serve_build_asgi_app__`` hook, before the app serves). A guard without settings fails closed: it answers
every request with 503 rather than serving without API keys.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import math
from collections import Counter
from dataclasses import dataclass

import anyio
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from starlette.datastructures import Headers
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware

from . import errors
from .settings import GuardConfig

logger = logging.getLogger(__name__)

# What needs a key when keys are configured: the API itself and anything that changes state. The web page, its
# static files, /healthz and the API docs stay open (they hold nothing a key protects).
API_PREFIXES = ("/v1/", "/background-removal/")
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
FORM_TYPES = frozenset({"multipart/form-data", "application/x-www-form-urlencoded"})
CURL_HINT = "e.g. curl -F image=@photo.jpg -F 'points=[[100, 200]]' .../v1/cutout"
API_KEY_STATE = "api_key_sha256"  # request.state field: the digest of the key a request carried
EXPOSED_HEADERS = ["X-Image-Id", "X-Mask-Score", "X-Embedding-Cache", "Server-Timing", "Retry-After"]


def install(app: FastAPI) -> None:
    """Registers the guard (still without settings: it refuses everything until ``configure``) and the JSON error
    handlers; call before ``@serve.ingress`` freezes the app."""
    app.add_middleware(RequestGuard)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(Exception, _unexpected_error)


def configure(app: FastAPI, config: GuardConfig) -> FastAPI:
    """Gives the guard that ``install`` registered its settings; only before the app has served a request (its
    middleware stack is built then, from these entries)."""
    if app.middleware_stack is not None:
        raise RuntimeError("the guard must be configured before the app starts serving")
    if not any(entry.cls is RequestGuard for entry in app.user_middleware):
        raise RuntimeError("http_guard.install(app) was not called")
    app.user_middleware = [Middleware(RequestGuard, config=config) if entry.cls is RequestGuard else entry
                           for entry in app.user_middleware]
    return app


def error_response(error: errors.ApiError) -> JSONResponse:
    return JSONResponse(error.body(), status_code=error.status, headers=error.headers)


class BodyTooLarge(Exception):
    """Raised from ``receive`` once a body without (or with a false) Content-Length passes the limit."""


@dataclass
class _Exchange:
    received: int = 0
    too_large: bool = False
    started: bool = False  # the app began its response: it can no longer be replaced
    replaced: bool = False  # we answered instead of the app; swallow whatever it still sends
    deadline: anyio.CancelScope | None = None


def not_configured() -> errors.ApiError:
    return errors.ApiError(503, "not_configured", "this server is not configured to serve yet (its request guard "
                           "has no settings); retry after the number of seconds in the Retry-After header, and "
                           "tell the operator if it persists", headers={"Retry-After": "5"})


class RequestGuard:
    def __init__(self, app, config: GuardConfig | None = None):
        self.app = app
        self.config = config  # None: fail closed
        self._cors: CORSMiddleware | None = None
        self.inflight = 0

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        config = self.config
        if config is None:
            logger.error("request refused: the request guard was never configured (http_guard.configure)")
            await error_response(not_configured())(scope, receive, send)
            return
        if config.cors_origins:  # outermost, so that preflights (which carry no key) get their answer
            if self._cors is None:
                self._cors = CORSMiddleware(
                    self._guard, allow_origins=list(config.cors_origins), allow_methods=["GET", "POST"],
                    allow_headers=["Authorization", "Content-Type", "Accept"], expose_headers=EXPOSED_HEADERS,
                    max_age=600)
            await self._cors(scope, receive, send)
        else:
            await self._guard(scope, receive, send)

    async def _guard(self, scope, receive, send) -> None:
        config = self.config
        method = scope["method"]
        if not (_route_path(scope).startswith(API_PREFIXES) or method not in SAFE_METHODS):
            await self.app(scope, receive, send)
            return
        headers = Headers(scope=scope)
        refusal = self._check_key(headers, config) or _check_body_headers(method, headers, config)
        if refusal is None and self.inflight >= config.max_inflight:
            refusal = errors.overloaded()
        if refusal is not None:
            await error_response(refusal)(scope, receive, send)
            return
        if config.api_key_sha256:  # the (checked) key, where the routes find it: api_key_of(request)
            # A new dict: the server may share the one it passes in between requests.
            scope["state"] = {**scope.get("state", {}), API_KEY_STATE: _key_digest(headers)}
        self.inflight += 1
        try:
            await self._run(scope, receive, send, config)
        finally:
            self.inflight -= 1

    @staticmethod
    def _check_key(headers: Headers, config: GuardConfig) -> errors.ApiError | None:
        if not config.api_key_sha256:
            return None
        challenge = {"WWW-Authenticate": 'Bearer realm="background-remover"'}
        value = headers.get("authorization", "")
        scheme, _, token = value.partition(" ")
        token = token.strip()
        if not value:
            return errors.ApiError(401, "missing_api_key", "this service needs an API key; send it as the header "
                                   "`Authorization: Bearer <key>`", headers=challenge)
        if scheme.lower() != "bearer" or not token:
            return errors.ApiError(401, "invalid_authorization", "the Authorization header must read "
                                   "`Bearer <key>`", headers=challenge)
        # Digests have one length, so the comparison time says nothing about the key; every key is compared.
        digest = _key_digest(headers)
        matched = False
        for expected in config.api_key_sha256:
            matched |= hmac.compare_digest(digest, expected)
        if not matched:
            return errors.ApiError(401, "invalid_api_key", "the API key is not valid; check it, or ask the "
                                   "operator for one", headers=challenge)
        return None


    async def _run(self, scope, receive, send, config: GuardConfig) -> None:
        exchange = _Exchange()
        limit = config.max_body_bytes

        async def counted_receive():
            message = await receive()
            if message["type"] == "http.request":
                exchange.received += len(message.get("body", b""))
                if exchange.received > limit:
                    exchange.too_large = True
                    raise BodyTooLarge()
            return message

        async def guarded_send(message):
            if exchange.replaced:
                return
            if message["type"] == "http.response.start":
                if exchange.too_large:  # whatever the app made of the cut-off body, the answer is 413
                    exchange.replaced = True
                    await error_response(_too_large(limit))(scope, receive, send)
                    return
                exchange.started = True
                if exchange.deadline is not None:
                    exchange.deadline.deadline = math.inf  # answering now; never cut a response in half
            await send(message)

        try:
            with anyio.move_on_after(config.request_timeout_s) as deadline:
                exchange.deadline = deadline
                await self.app(scope, counted_receive, guarded_send)
        except BodyTooLarge:
            pass
        except Exception:
            if not exchange.too_large or exchange.started:
                raise
        if exchange.started or exchange.replaced:
            return
        if exchange.too_large:
            await error_response(_too_large(limit))(scope, receive, send)
        elif deadline.cancelled_caught:
            await error_response(errors.ApiError(
                503, "timeout", f"the service could not answer within {config.request_timeout_s:g} s because it "
                "is busy; retry after the number of seconds in the Retry-After header",
                headers={"Retry-After": "2"}))(scope, receive, send)


def _key_digest(headers: Headers) -> str:
    token = headers.get("authorization", "").partition(" ")[2].strip()
    return hashlib.sha256(token.encode("utf-8", "surrogateescape")).hexdigest()


def _route_path(scope) -> str:
    path, root = scope.get("path", "/"), scope.get("root_path", "")
    if root and path.startswith(root):
        path = path[len(root):]
    return path or "/"


def _too_large(limit: int) -> errors.ApiError:
    return errors.too_large("request_too_large", f"the request is larger than the {limit / 1e6:.0f} MB limit; "
                            "send a smaller or more compressed image")


def _check_body_headers(method: str, headers: Headers, config: GuardConfig) -> errors.ApiError | None:
    """What the headers alone tell: refused before a byte of the body is read."""
    if method in SAFE_METHODS:
        return None
    length = headers.get("content-length")
    if length is not None:
        if not length.strip().isdigit():
            return errors.bad_request("invalid_content_length", f"Content-Length {length[:20]!r} is not a number")
        if int(length) > config.max_body_bytes:
            return _too_large(config.max_body_bytes)
    media_type = headers.get("content-type", "").split(";")[0].strip().lower()
    if method == "POST" and media_type not in FORM_TYPES:  # other methods: routing answers 405
        return errors.ApiError(415, "unsupported_content_type", f"the request is {media_type or 'untyped'}; send "
                               f"the fields as multipart/form-data, {CURL_HINT}")
    return None


def api_key_of(request: Request) -> str:
    """The SHA-256 digest of the API key the request was let in with; "" when the service has no keys."""
    return getattr(request.state, API_KEY_STATE, "")


async def reject_repeated_fields(request: Request) -> None:
    """An app-wide FastAPI dependency: two `image` parts (or two `points`) would leave the parser to pick one
    silently; refuse instead."""
    if request.method in SAFE_METHODS:
        return
    if request.headers.get("content-type", "").split(";")[0].strip().lower() not in FORM_TYPES:
        return
    form = await request.form()  # already parsed for the route, and cached on the request
    counts = Counter(key for key, _ in form.multi_items())
    repeated = sorted(key for key, count in counts.items() if count > 1)
    if repeated:
        names = ", ".join(f"`{key[:40]}`" for key in repeated[:5])
        raise errors.bad_request("repeated_field", f"{names} sent more than once; send each field once "
                                 "(one image per request)")


async def _http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
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
    return JSONResponse(error.body(), status_code=error.status, headers={**(exc.headers or {}), **error.headers})


async def _unexpected_error(request: Request, exc: Exception) -> JSONResponse:
    # A fault of ours, not of the request: say so in the same JSON shape, without internals.
    logger.error("unexpected error on %s %s", request.method, request.url.path, exc_info=exc)
    return JSONResponse(errors.ApiError(500, "internal_error", f"the server failed on this request "
                                        f"({type(exc).__name__}); retry, and report it if it persists").body(),
                        status_code=500)
