"""The one error type every stage raises for a request it refuses, and its JSON body."""

from __future__ import annotations


class ApiError(Exception):
    """A refused request: HTTP status, a stable machine-readable code, and a message that says how to fix it."""

    def __init__(self, status: int, code: str, message: str, headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.headers = headers or {}

    def body(self) -> dict:
        return {"error": {"code": self.code, "message": self.message}}

    def __reduce__(self):  # crosses Ray process boundaries intact
        return (type(self), (self.status, self.code, self.message, self.headers))

    def __repr__(self) -> str:
        return f"ApiError({self.status}, {self.code!r}, {self.message!r})"


def bad_request(code: str, message: str) -> ApiError:
    return ApiError(400, code, message)


def too_large(code: str, message: str) -> ApiError:
    return ApiError(413, code, message)


def not_an_image(message: str) -> ApiError:
    return ApiError(415, "unsupported_media_type", message)


def invalid_prompt(code: str, message: str) -> ApiError:
    return ApiError(422, code, message)


def invalid_option(code: str, message: str) -> ApiError:
    """An output option (format, background, crop, feather, quality) that cannot be honoured."""
    return ApiError(422, code, message)


def unknown_image(image_id: str) -> ApiError:
    return ApiError(404, "unknown_image_id",
                    f"image_id {image_id[:64]!r} is unknown or has expired; upload the image again "
                    "(POST /v1/images, or send it as `image` with this request)")


def out_of_memory(retry_after_s: int = 2) -> ApiError:
    """The server had no memory for this request right now: our side, not the request's, and worth a retry."""
    return ApiError(503, "out_of_memory", "the server ran out of memory for this image right now; retry after the "
                    "number of seconds in the Retry-After header", headers={"Retry-After": str(retry_after_s)})


def overloaded(retry_after_s: int = 1) -> ApiError:
    return ApiError(503, "overloaded", "the service is at capacity; retry after the number of seconds "
                    "in the Retry-After header", headers={"Retry-After": str(retry_after_s)})
