"""Who may call: which requests the guard leaves open, API keys, CORS. Each an ASGI app around the next one."""

from __future__ import annotations

import hashlib
import hmac

from fastapi import Request
from starlette.datastructures import Headers
from starlette.middleware.cors import CORSMiddleware

from .. import errors
from ..http_errors import error_response

# What needs a key when keys are configured: the API itself and anything that changes state. The web page, its
# static files, /healthz and the API docs stay open (they hold nothing a key protects).
API_PREFIXES = ("/v1/", "/background-removal/")
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
API_KEY_STATE = "api_key_sha256"  # request.state field: the digest of the key a request carried
EXPOSED_HEADERS = ["X-Image-Id", "X-Mask-Score", "X-Preview-Scale", "X-Embedding-Cache", "Server-Timing", "Retry-After"]


def cors(app, origins: tuple[str, ...]) -> CORSMiddleware:
    """Answers preflights itself and adds the CORS headers to every answer from ``app``, refusals included."""
    return CORSMiddleware(app, allow_origins=list(origins), allow_methods=["GET", "POST"],
                          allow_headers=["Authorization", "Content-Type", "Accept"], expose_headers=EXPOSED_HEADERS,
                          max_age=600)


class OpenPaths:
    """Sends what is open (a safe method outside the API) straight to ``app``, the rest through ``guarded``."""

    def __init__(self, guarded, app):
        self.guarded, self.app = guarded, app

    async def __call__(self, scope, receive, send) -> None:
        is_open = not route_path(scope).startswith(API_PREFIXES) and scope["method"] in SAFE_METHODS
        await (self.app if is_open else self.guarded)(scope, receive, send)


class ApiKeys:
    """401 without one of the configured keys; lets the key's digest through to the routes (``api_key_of``).
    Without configured keys every request passes, with no owner."""

    def __init__(self, app, key_sha256: tuple[str, ...]):
        self.app, self.key_sha256 = app, key_sha256

    async def __call__(self, scope, receive, send) -> None:
        if not self.key_sha256:
            await self.app(scope, receive, send)
            return
        headers = Headers(scope=scope)
        refusal = self._check(headers)
        if refusal is not None:
            await error_response(refusal)(scope, receive, send)
            return
        # A new dict: the server may share the one it passes in between requests.
        scope["state"] = {**scope.get("state", {}), API_KEY_STATE: _key_digest(headers)}
        await self.app(scope, receive, send)

    def _check(self, headers: Headers) -> errors.ApiError | None:
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
        for expected in self.key_sha256:
            matched |= hmac.compare_digest(digest, expected)
        if not matched:
            return errors.ApiError(401, "invalid_api_key", "the API key is not valid; check it, or ask the "
                                   "operator for one", headers=challenge)
        return None


def api_key_of(request: Request) -> str:
    """The SHA-256 digest of the API key the request was let in with; "" when the service has no keys."""
    return getattr(request.state, API_KEY_STATE, "")


def _key_digest(headers: Headers) -> str:
    token = headers.get("authorization", "").partition(" ")[2].strip()
    return hashlib.sha256(token.encode("utf-8", "surrogateescape")).hexdigest()


def route_path(scope) -> str:
    path, root = scope.get("path", "/"), scope.get("root_path", "")
    if root and path.startswith(root):
        path = path[len(root):]
    return path or "/"
