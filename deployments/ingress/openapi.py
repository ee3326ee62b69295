"""The OpenAPI document that clients are generated from, telling the truth: FastAPI's own, from the routes, plus
what their plain form fields cannot say: `points`, `labels` and `box` are JSON with a shape, `image` is an image file,
`image` or `image_id` (the photo sent wins over an id), the options' ranges, and every error answer with its body
and `Retry-After`.
What no schema can say (a point inside this photo, one label per point, a box with x0 < x1, an option that does not
fit the photo) is answered 422, which the document lists too. tests/test_openapi.py runs Schemathesis against it."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI, Request

from .. import errors
from ..http_guard.access import route_path
from ..settings import IngressLimits

# The decoders the ingress opens (imaging.FORMATS), as the media types of the `image` part.
IMAGE_MEDIA_TYPES = "image/jpeg, image/png, image/webp, image/gif, image/bmp, image/tiff"
_JSON_PART = {"contentType": "application/json"}
_COORDINATE = {"type": "number", "minimum": 0}

FIELDS: dict[str, dict[str, Any]] = {
    "image": {"type": "string", "format": "binary", "minLength": 1},
    "image_id": {"type": "string", "pattern": "^[0-9a-f]{32}$"},
    "points": {"type": "array", "maxItems": IngressLimits().max_points,
               "items": {"type": "array", "items": _COORDINATE, "minItems": 2, "maxItems": 2}},
    "labels": {"type": "array", "maxItems": IngressLimits().max_points, "items": {"type": "integer", "enum": [0, 1]}},
    "box": {"type": "array", "items": _COORDINATE, "minItems": 4, "maxItems": 4},
    "format": {"type": "string", "enum": ["png", "webp", "jpeg", ""]},  # empty, like absent: from Accept
    "crop_margin": {"type": "integer", "minimum": 0, "maximum": 10_000},
    "feather": {"type": "number", "minimum": 0, "maximum": 100},
    "quality": {"type": "integer", "minimum": 1, "maximum": 100},
}
ENCODING = {"image": {"contentType": IMAGE_MEDIA_TYPES}, "points": _JSON_PART, "labels": _JSON_PART,
            "box": _JSON_PART}

# Per operation: the rules across fields, and the error answers it can give.
RULES: dict[str, dict[str, Any]] = {
    "/background-removal/remove": {"required": ["image", "points"], "minItems": {"points": 1}},
    "/v1/cutout": {"allOf": [{"anyOf": [{"required": ["image"]}, {"required": ["image_id"]}]},
                             {"anyOf": [{"required": ["points"]}, {"required": ["box"]}]}]},
    "/v1/images": {"required": ["image"]},
}
ERRORS = {
    400: "malformed fields: not JSON, a repeated or unknown field, neither `image` nor `image_id`, an `image_id` "
         "that is not 32 hex digits",
    401: "API key missing or wrong (only when keys are configured)",
    404: "unknown or expired `image_id`: upload the photo again",
    413: "too large: the request's bytes or the photo's pixels",
    415: "not an image this service reads, or a body that is not a form",
    422: "points, labels, box or options that do not fit the photo or each other",
    500: "a fault of the server (logged); retry, and report it if it persists",
    503: "overloaded, out of memory, or a stage restarting: retry after Retry-After seconds",
}
OPERATION_ERRORS = {
    "/background-removal/remove": (400, 401, 413, 415, 422, 500, 503),
    "/v1/cutout": (400, 401, 404, 413, 415, 422, 500, 503),
    "/v1/images": (400, 401, 413, 415, 500, 503),
}
_RETRY_AFTER = {"Retry-After": {"description": "seconds to wait before retrying", "required": True,
                                "schema": {"type": "string", "pattern": "^[0-9]+$"}}}
_CUTOUT_HEADERS = {name: {"description": text, "schema": {"type": "string"}} for name, text in [
    ("X-Image-Id", "the photo's id, usable as `image_id` for later clicks"),
    ("X-Mask-Score", "SAM's predicted IoU of the chosen mask"),
    ("X-Embedding-Cache", "hit or miss"),
    ("X-Preview-Scale", "previews: grey = 127.5 + scale x logit"),
    ("Server-Timing", "milliseconds per stage and hop")]}
_BINARY = {"schema": {"type": "string", "format": "binary"}}
_IMAGE_ANSWER = {"description": "the cut-out (or the mask)", "headers": _CUTOUT_HEADERS,
                 "content": {media_type: _BINARY for media_type in ("image/png", "image/webp", "image/jpeg")}}
SCHEMAS = {
    "ErrorBody": {"type": "object", "required": ["error"], "properties": {"error": {
        "type": "object", "required": ["code", "message"],
        "properties": {"code": {"type": "string"}, "message": {"type": "string"}}}}},
    "Health": {"type": "object", "required": ["status", "model", "device", "stages"], "properties": {
        "status": {"const": "ok"}, "model": {"type": "string"}, "device": {"type": "string"},
        "stages": {"type": "object", "additionalProperties": {"const": "ok"}}}},
    "Unavailable": {"type": "object", "required": ["status", "stage", "reason"], "properties": {
        "status": {"const": "unavailable"}, "stage": {"type": "string"}, "reason": {"type": "string"}}},
}


def install(app: FastAPI) -> None:
    """``app.openapi()`` answers the refined document (built once, on the first call, like FastAPI's own)."""
    generate = app.openapi

    def openapi() -> dict:
        if app.openapi_schema is None:
            _refine(generate())  # FastAPI keeps the dict it returns as app.openapi_schema
        return app.openapi_schema

    app.openapi = openapi


def _json(ref: str) -> dict:
    return {"application/json": {"schema": {"$ref": f"#/components/schemas/{ref}"}}}


def _error(status: int) -> dict:
    answer = {"description": ERRORS[status], "content": _json("ErrorBody")}
    return {**answer, "headers": _RETRY_AFTER} if status == 503 else answer


def _refine(document: dict) -> None:
    components = document.setdefault("components", {}).setdefault("schemas", {})
    for path, rules in RULES.items():
        operation = document["paths"][path]["post"]
        form = operation["requestBody"]["content"]["multipart/form-data"]
        generated = components.pop(form["schema"]["$ref"].rsplit("/", 1)[1])
        form["schema"] = _form_schema(generated, rules)
        form["encoding"] = {name: ENCODING[name] for name in ENCODING if name in form["schema"]["properties"]}
        operation["responses"] = {
            **{str(status): _error(status) for status in OPERATION_ERRORS[path]},
            "200": operation["responses"]["200"]}
        if path != "/v1/images":
            operation["responses"]["200"] = _IMAGE_ANSWER
    document["paths"]["/healthz"]["get"]["responses"] = {
        "200": {"description": "every stage answered its probe", "content": _json("Health")},
        "503": {"description": "a stage did not answer: `stage` names it", "content": _json("Unavailable"),
                "headers": _RETRY_AFTER}}
    for generated in ("ErrorDetail", "HTTPValidationError", "ValidationError"):
        components.pop(generated, None)  # FastAPI's 422 body: this service answers ErrorBody instead
    components.update(SCHEMAS)


def _form_schema(generated: dict, rules: dict) -> dict:
    properties = {}
    for name, schema in generated["properties"].items():
        refined = dict(FIELDS.get(name) or _not_null(schema))
        if name in rules.get("minItems", {}):
            refined["minItems"] = rules["minItems"][name]
        properties[name] = {**refined, **{k: schema[k] for k in ("description", "default") if k in schema}}
    schema = {"type": "object", "properties": properties, "additionalProperties": False}
    if "required" in rules:
        schema["required"] = rules["required"]
    if "allOf" in rules:
        schema["allOf"] = rules["allOf"]
    return schema


def _not_null(schema: dict) -> dict:
    """FastAPI's ``anyOf: [X, null]`` for an optional field as X: a form omits the field rather than send null."""
    options = [s for s in schema.get("anyOf", []) if s.get("type") != "null"]
    return dict(options[0]) if len(options) == 1 else {k: v for k, v in schema.items() if k != "title"}


async def reject_unknown_fields(request: Request) -> None:
    """An app-wide FastAPI dependency: a form field the route does not document (a typo such as `point`) would be
    ignored silently; refuse it, naming the fields the route takes."""
    if request.method != "POST":
        return
    operation = request.app.openapi()["paths"].get(route_path(request.scope), {}).get("post", {})
    form_schema = operation.get("requestBody", {}).get("content", {}).get("multipart/form-data", {}).get("schema")
    if not form_schema or "form" not in request.headers.get("content-type", ""):
        return
    known = form_schema["properties"]
    unknown = sorted({key for key in (await request.form()).keys() if key not in known})
    if unknown:
        names = ", ".join(f"`{key[:40]}`" for key in unknown[:5])
        raise errors.bad_request("unknown_field", f"{names} is not a field of this route; it takes "
                                 f"{', '.join(known)} (see /docs)")
