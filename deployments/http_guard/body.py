"""What a request body may be: at most ``max_body_bytes`` (413), a form (415), each field once (400)."""

from __future__ import annotations

from collections import Counter

from fastapi import Request
from starlette.datastructures import Headers

from .. import errors
from ..http_errors import CURL_HINT, error_response
from .access import API_PREFIXES, SAFE_METHODS, route_path

FORM_TYPES = frozenset({"multipart/form-data", "application/x-www-form-urlencoded"})


class BodyTooLarge(Exception):
    """Raised from ``receive`` once a body without (or with a false) Content-Length passes the limit."""


class BodyLimit:
    """Refuses from the headers alone before a byte of the body is read; counts what arrives all the same (chunked,
    or a Content-Length that lies) and answers 413 once it passes ``max_bytes``, whatever the app made of the cut."""

    def __init__(self, app, max_bytes: int):
        self.app, self.max_bytes = app, max_bytes

    async def __call__(self, scope, receive, send) -> None:
        refusal = _check_headers(scope["method"], route_path(scope), Headers(scope=scope), self.max_bytes)
        if refusal is not None:
            await error_response(refusal)(scope, receive, send)
            return
        received, too_large = 0, False
        started = False  # the app began its response: it can no longer be replaced
        replaced = False  # we answered instead of the app; swallow whatever it still sends

        async def counted_receive():
            nonlocal received, too_large
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    too_large = True
                    raise BodyTooLarge()
            return message

        async def checked_send(message):
            nonlocal started, replaced
            if replaced:
                return
            if message["type"] == "http.response.start":
                if too_large:  # whatever the app made of the cut-off body, the answer is 413
                    replaced = True
                    await error_response(_too_large(self.max_bytes))(scope, receive, send)
                    return
                started = True
            await send(message)

        try:
            await self.app(scope, counted_receive, checked_send)
        except BodyTooLarge:
            pass
        except Exception:
            if not too_large or started:
                raise
        if too_large and not (started or replaced):
            await error_response(_too_large(self.max_bytes))(scope, receive, send)


def _too_large(limit: int) -> errors.ApiError:
    return errors.too_large("request_too_large", f"the request is larger than the {limit / 1e6:.0f} MB limit; "
                            "send a smaller or more compressed image")


def _check_headers(method: str, path: str, headers: Headers, max_bytes: int) -> errors.ApiError | None:
    if method in SAFE_METHODS:
        return None
    length = headers.get("content-length")
    if length is not None:
        if not length.strip().isdigit():
            return errors.bad_request("invalid_content_length", f"Content-Length {length[:20]!r} is not a number")
        if int(length) > max_bytes:
            return _too_large(max_bytes)
    media_type = headers.get("content-type", "").split(";")[0].strip().lower()
    # Only the API's routes take forms; elsewhere (POST /healthz) routing answers 405 with the methods it takes.
    if method == "POST" and path.startswith(API_PREFIXES) and media_type not in FORM_TYPES:
        return errors.ApiError(415, "unsupported_content_type", f"the request is {media_type or 'untyped'}; send "
                               f"the fields as multipart/form-data, {CURL_HINT}")
    return None


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
