"""The ingress's front door, in front of the FastAPI routes: small ASGI policies, stacked in one order by ``stack``.

Outermost first, and why there:

1. CORS (only with ``cors_origins``): preflights carry no key, so they are answered before the key check, and every
   answer below, refusals included, carries the CORS headers a browser needs to read it.
2. Open paths: the web page, its static files, /healthz and the docs (safe methods outside the API) go straight to
   the app. They hold nothing a key protects, and a health check must never wait behind the gate or the deadline.
3. API keys (401): a caller without a valid key learns nothing more, not even that the server is busy.
4. Body size (413, 415, 400 for a bad Content-Length): refused from the headers before a byte is read.
5. In-flight gate (503 + Retry-After): only requests that may run take a slot.
6. Deadline (503 + Retry-After): innermost, around the route alone, which it cancels.

``RequestGuard`` holds the stack (tested without Ray). The FastAPI app is frozen when ``@serve.ingress`` runs, before
any config exists, so the Ingress replica hands the guard its settings explicitly (``configure``, from Serve's
``__serve_build_asgi_app__`` hook, before the app serves). A guard without settings fails closed: it answers every
request with 503 rather than serving without API keys.
"""

from __future__ import annotations

import logging

from fastapi import FastAPI
from starlette.middleware import Middleware

from .. import errors
from ..http_errors import error_response
from ..settings import GuardConfig
from .access import ApiKeys, OpenPaths, api_key_of, cors
from .body import BodyLimit, reject_repeated_fields
from .load import Deadline, InflightGate

__all__ = ["RequestGuard", "api_key_of", "configure", "install", "reject_repeated_fields", "stack"]

logger = logging.getLogger(__name__)


def stack(app, config: GuardConfig):
    """``app`` behind the policies, in the order the module's docstring gives."""
    guarded = Deadline(app, config.request_timeout_s)
    guarded = InflightGate(guarded, config.max_inflight)
    guarded = BodyLimit(guarded, config.max_body_bytes)
    guarded = ApiKeys(guarded, config.api_key_sha256)
    front = OpenPaths(guarded, app)
    return cors(front, config.cors_origins) if config.cors_origins else front


class RequestGuard:
    """The stack as one middleware; without settings it refuses every request."""

    def __init__(self, app, config: GuardConfig | None = None):
        self.app = app
        self.config = config  # None: fail closed
        self._stack = None if config is None else stack(app, config)

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
        elif self._stack is None:
            logger.error("request refused: the request guard was never configured (http_guard.configure)")
            await error_response(not_configured())(scope, receive, send)
        else:
            await self._stack(scope, receive, send)


def not_configured() -> errors.ApiError:
    return errors.ApiError(503, "not_configured", "this server is not configured to serve yet (its request guard "
                           "has no settings); retry after the number of seconds in the Retry-After header, and "
                           "tell the operator if it persists", headers={"Retry-After": "5"})


def install(app: FastAPI) -> None:
    """Registers the guard, still without settings (it refuses everything until ``configure``); call before
    ``@serve.ingress`` freezes the app."""
    app.add_middleware(RequestGuard)


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
