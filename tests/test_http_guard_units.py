"""The HTTP front door's policies one by one, through plain ASGI calls (deployments/http_guard/, http_errors.py):
what each lets through, what it refuses with which status, code and headers, and the JSON shape of every refusal."""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
from urllib.parse import urlencode

import pytest
from fastapi import FastAPI, Form, Request
from fastapi.testclient import TestClient
from starlette.exceptions import HTTPException as StarletteHTTPException

from deployments import errors, http_errors, http_guard
from deployments.http_guard.access import ApiKeys, OpenPaths, api_key_of, cors
from deployments.http_guard.body import BodyLimit
from deployments.http_guard.load import Deadline, InflightGate
from deployments.settings import GuardConfig
from message_style import assert_readable

KEY = "the-key-0123456789"
DIGEST = hashlib.sha256(KEY.encode()).hexdigest()


class Recorder:
    """An ASGI app that answers 200 with what it saw (and reads the whole body first)."""

    def __init__(self, delay: float = 0.0):
        self.calls, self.delay = [], delay

    async def __call__(self, scope, receive, send):
        body = b""
        if scope["type"] == "http":
            while True:
                message = await receive()
                body += message.get("body", b"")
                if not message.get("more_body"):
                    break
        self.calls.append((scope, body))
        if self.delay:
            await asyncio.sleep(self.delay)
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]})
        await send({"type": "http.response.body", "body": b"ok"})


def call(app, method="GET", path="/", headers=(), chunks=(b"",), root_path="", scope_type="http"):
    """(status, headers dict, body bytes) of one request."""
    scope = {"type": scope_type, "method": method, "path": path, "root_path": root_path, "query_string": b"",
             "headers": [(k.lower().encode(), v.encode()) for k, v in headers], "state": {"shared": 1}}
    pending = [{"type": "http.request", "body": c, "more_body": i < len(chunks) - 1} for i, c in enumerate(chunks)]
    sent = []

    async def receive():
        return pending.pop(0) if pending else {"type": "http.disconnect"}

    async def send(message):
        sent.append(message)

    asyncio.run(app(scope, receive, send))
    start = next((m for m in sent if m["type"] == "http.response.start"), None)
    if start is None:
        return None, {}, b""
    body = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
    return start["status"], {k.decode().lower(): v.decode() for k, v in start["headers"]}, body


def refused(answer, status, code):
    got_status, headers, body = answer
    assert got_status == status, body
    error = json.loads(body)["error"]
    assert error["code"] == code and headers["content-type"] == "application/json"
    assert_readable(error["message"])
    return error["message"], headers


FORM = ("content-type", "multipart/form-data; boundary=x")


# -- open paths and API keys -----------------------------------------------------------------------------------------

@pytest.mark.parametrize("method, path, root, open_", [
    ("GET", "/", "", True), ("HEAD", "/healthz", "", True), ("OPTIONS", "/docs", "", True),
    ("GET", "/v1/images", "", False), ("GET", "/background-removal/remove", "", False), ("POST", "/", "", False),
    ("GET", "/keyed/v1/cutout", "/keyed", False), ("GET", "/keyed/", "/keyed", True), ("GET", "/keyed", "/keyed", True),
    ("GET", "/abcdef/v1/x", "/keyed", True),  # a path outside the root path is taken as it is,
    ("GET", "/other/v1/x", "/keyed", True),  # not cut by the root path's length (that would leave /v1/x)
])
def test_only_safe_methods_outside_the_api_are_open(method, path, root, open_):
    app, guarded = Recorder(), Recorder()
    call(OpenPaths(guarded, app), method, path, root_path=root)
    assert (len(app.calls), len(guarded.calls)) == ((1, 0) if open_ else (0, 1))


def test_without_keys_everyone_passes_with_no_owner():
    app = Recorder()
    assert call(ApiKeys(app, ()), "POST", "/v1/cutout")[0] == 200
    assert "api_key_sha256" not in app.calls[0][0]["state"]


@pytest.mark.parametrize("authorization, code", [
    (None, "missing_api_key"), ("Basic abc", "invalid_authorization"), ("Bearer ", "invalid_authorization"),
    ("Bearer   ", "invalid_authorization"), ("Bearer wrong", "invalid_api_key"), (KEY, "invalid_authorization"),
])
def test_a_request_without_a_valid_key_gets_401_with_a_challenge(authorization, code):
    app = Recorder()
    headers = [] if authorization is None else [("authorization", authorization)]
    message, answer_headers = refused(call(ApiKeys(app, (DIGEST,)), "POST", "/v1/cutout", headers), 401, code)
    assert answer_headers["www-authenticate"] == 'Bearer realm="background-remover"'
    assert "Bearer <key>" in message or "operator" in message
    assert app.calls == []


@pytest.mark.parametrize("authorization", [f"Bearer {KEY}", f"bearer {KEY}", f"BEARER   {KEY}  "])
@pytest.mark.parametrize("first", [True, False])
def test_a_valid_key_passes_with_its_digest_and_the_servers_state_kept(authorization, first):
    app = Recorder()
    other = hashlib.sha256(b"another").hexdigest()
    keys = (DIGEST, other) if first else (other, DIGEST)  # any configured key, wherever it is in the list
    assert call(ApiKeys(app, keys), "POST", "/v1/x", [("authorization", authorization)])[0] == 200
    state = app.calls[0][0]["state"]
    assert state == {"shared": 1, "api_key_sha256": DIGEST}


def test_the_routes_read_the_key_digest_or_nothing():
    seen = []
    api = FastAPI()

    @api.get("/v1/who")
    async def who(request: Request):
        seen.append(api_key_of(request))
        return {}

    for config, headers in ((GuardConfig(api_key_sha256=(DIGEST,)), {"Authorization": f"Bearer {KEY}"}),
                            (GuardConfig(), {})):
        client = TestClient(http_guard.configure(_installed(api_copy(who)), config))
        assert client.get("/v1/who", headers=headers).status_code == 200
    assert seen == [DIGEST, ""]


def api_copy(route):
    api = FastAPI()
    api.get("/v1/who")(route)
    return api


def _installed(api: FastAPI) -> FastAPI:
    http_guard.install(api)
    return api


def test_cors_answers_preflights_and_exposes_the_documented_headers():
    app = Recorder()
    front = cors(app, ("https://a.example",))
    status, headers, _ = call(front, "OPTIONS", "/v1/cutout", [("origin", "https://a.example"),
                                                              ("access-control-request-method", "POST"),
                                                              ("access-control-request-headers", "authorization")])
    assert status == 200 and app.calls == []
    assert headers["access-control-allow-origin"] == "https://a.example"
    assert set(headers["access-control-allow-methods"].replace(" ", "").split(",")) >= {"GET", "POST"}
    assert "authorization" in headers["access-control-allow-headers"].lower()
    assert headers["access-control-max-age"] == "600"
    status, headers, _ = call(front, "GET", "/v1/x", [("origin", "https://a.example")])
    exposed = {h.strip() for h in headers["access-control-expose-headers"].split(",")}
    assert {"X-Image-Id", "X-Mask-Score", "X-Preview-Scale", "Server-Timing", "Retry-After"} <= exposed


# -- body --------------------------------------------------------------------------------------------------------------

def test_a_declared_length_up_to_the_limit_passes_and_over_it_is_413():
    app = Recorder()
    assert call(BodyLimit(app, 100), "POST", "/v1/cutout", [FORM, ("content-length", "100")], [b"x" * 100])[0] == 200
    message, _ = refused(call(BodyLimit(app, 2_000_000), "POST", "/v1/cutout", [FORM, ("content-length", "2000001")]),
                         413, "request_too_large")
    assert "2 MB" in message and len(app.calls) == 1


@pytest.mark.parametrize("length", ["abc", "-5", "1e3", ""])
def test_a_content_length_that_is_not_a_number_is_400(length):
    message, _ = refused(call(BodyLimit(Recorder(), 100), "POST", "/v1/cutout", [FORM, ("content-length", length)]),
                         400, "invalid_content_length")
    assert repr(length[:20]) in message


def test_a_body_longer_than_declared_or_chunked_is_cut_at_the_limit():
    app = Recorder()
    refused(call(BodyLimit(app, 10), "POST", "/v1/cutout", [FORM], [b"x" * 6, b"y" * 5]), 413, "request_too_large")
    assert app.calls == []
    assert call(BodyLimit(app, 10), "POST", "/v1/cutout", [FORM], [b"x" * 6, b"y" * 4])[0] == 200
    assert app.calls[0][1] == b"x" * 6 + b"y" * 4


@pytest.mark.parametrize("content_type", ["application/json", "text/plain", None])
def test_a_post_to_the_api_must_be_a_form(content_type):
    headers = [] if content_type is None else [("content-type", content_type)]
    message, _ = refused(call(BodyLimit(Recorder(), 100), "POST", "/v1/cutout", headers), 415,
                         "unsupported_content_type")
    assert (content_type or "untyped") in message and "multipart/form-data" in message


@pytest.mark.parametrize("content_type", ["multipart/form-data; boundary=x", "Application/X-WWW-Form-Urlencoded",
                                          " multipart/form-data ;boundary=y"])
def test_both_form_encodings_pass(content_type):
    assert call(BodyLimit(Recorder(), 100), "POST", "/v1/cutout", [("content-type", content_type)])[0] == 200


def test_safe_methods_are_not_checked():
    app = Recorder()
    assert call(BodyLimit(app, 10), "GET", "/v1/x", [("content-length", "999")])[0] == 200


def test_an_app_that_answered_before_the_cut_keeps_its_answer():
    async def early(scope, receive, send):
        await send({"type": "http.response.start", "status": 201, "headers": []})
        await receive()
        await receive()  # the cut raises here
        await send({"type": "http.response.body", "body": b"late"})

    status, _, body = call(BodyLimit(early, 5), "POST", "/v1/cutout", [FORM], [b"123", b"456"])
    assert (status, body) == (201, b"")  # not replaced by a 413 half-way


def test_an_app_that_swallows_the_cut_is_answered_413_all_the_same():
    async def swallowing(scope, receive, send):
        try:
            while (await receive()).get("more_body"):
                pass
        except Exception:  # noqa: BLE001 - a careless app
            pass
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})

    refused(call(BodyLimit(swallowing, 5), "POST", "/v1/cutout", [FORM], [b"123", b"456"]), 413, "request_too_large")

    async def failing(scope, receive, send):
        while (await receive()).get("more_body"):
            pass

    refused(call(BodyLimit(failing, 5), "POST", "/v1/cutout", [FORM], [b"123", b"456"]), 413, "request_too_large")

    async def broken(scope, receive, send):
        raise RuntimeError("not about the body")

    with pytest.raises(RuntimeError):
        call(BodyLimit(broken, 5), "POST", "/v1/cutout", [FORM], [b"1"])


def test_repeated_fields_are_named_sorted_and_at_most_five():
    from fastapi import Depends

    api = FastAPI(dependencies=[Depends(http_guard.reject_repeated_fields)])
    api.add_exception_handler(errors.ApiError, http_errors.api_error)

    @api.post("/v1/echo")
    async def echo(points: str = Form("")):
        return {"points": points}

    @api.get("/v1/echo")
    async def read():
        return {}

    client = TestClient(api)
    fields = [(name, "1") for name in "gfedcba"] + [(name, "2") for name in "gfedcba"] + [("x" * 50, "1")] * 2
    response = client.post("/v1/echo", content=urlencode(fields),
                           headers={"content-type": "application/x-www-form-urlencoded"})
    assert response.status_code == 400 and response.json()["error"]["code"] == "repeated_field"
    message = response.json()["error"]["message"]
    assert message.startswith("`a`, `b`, `c`, `d`, `e` sent more than once") and "`f`" not in message
    assert_readable(message)
    response = client.post("/v1/echo", content=urlencode([("k" * 50, "1")] * 2),
                           headers={"content-type": "application/x-www-form-urlencoded"})
    assert f"`{'k' * 40}`" in response.json()["error"]["message"]  # a long name is cut at 40 characters
    assert client.post("/v1/echo").status_code == 200  # no content type at all: not a form, nothing to check
    assert client.post("/v1/echo", data={"points": "1", "image": "2"}).status_code == 200
    assert client.get("/v1/echo").status_code == 200
    assert client.post("/v1/echo", content=b"{}", headers={"content-type": "application/json"}).status_code == 200


# -- load ------------------------------------------------------------------------------------------------------------

def test_the_gate_lets_exactly_limit_requests_run_and_frees_their_slots():
    async def scenario():
        app = Recorder(delay=0.2)
        gate = InflightGate(app, 2)
        answers = []

        async def one():
            answers.append(await _acall(gate))

        await asyncio.gather(one(), one(), one())
        return gate, app, answers

    gate, app, answers = asyncio.run(scenario())
    statuses = sorted(status for status, _, _ in answers)
    assert statuses == [200, 200, 503] and gate.inflight == 0 and len(app.calls) == 2
    refused = [a for a in answers if a[0] == 503][0]
    assert refused[1]["retry-after"] == "1" and json.loads(refused[2])["error"]["code"] == "overloaded"


def test_the_gate_frees_the_slot_of_a_request_that_failed():
    async def broken(scope, receive, send):
        raise RuntimeError("x")

    gate = InflightGate(broken, 1)
    for _ in range(2):
        with pytest.raises(RuntimeError):
            call(gate, "POST", "/v1/x")
    assert gate.inflight == 0


async def _acall(app, method="POST", path="/v1/x"):
    scope = {"type": "http", "method": method, "path": path, "root_path": "", "query_string": b"", "headers": []}
    sent = []

    async def receive():
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message):
        sent.append(message)

    await app(scope, receive, send)
    start = next(m for m in sent if m["type"] == "http.response.start")
    return (start["status"], {k.decode().lower(): v.decode() for k, v in start["headers"]},
            b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body"))


def test_the_deadline_answers_503_and_an_answer_in_time_passes():
    message, headers = refused(call(Deadline(Recorder(delay=5), 0.05), "POST", "/v1/x"), 503, "timeout")
    assert headers["retry-after"] == "2" and "0.05 s" in message and "Retry-After" in message
    assert call(Deadline(Recorder(), 5), "POST", "/v1/x")[0] == 200

    async def silent(scope, receive, send):  # returns in time without answering: nothing is made up for it
        return None

    assert call(Deadline(silent, 5), "POST", "/v1/x")[0] is None


def test_an_answer_that_has_begun_is_never_cut():
    async def slow_body(scope, receive, send):
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await asyncio.sleep(0.2)
        await send({"type": "http.response.body", "body": b"whole"})

    status, _, body = call(Deadline(slow_body, 0.05), "GET", "/v1/x")
    assert (status, body) == (200, b"whole")


def test_an_app_that_answers_its_own_cancellation_is_not_answered_twice():
    """An app that still answers when the deadline cancels it (a last word of its own) keeps that answer: the guard
    adds no 503 after it, which would be a second response start on the same request."""
    async def last_word(scope, receive, send):
        try:
            await asyncio.sleep(5)
        except asyncio.CancelledError:
            await send({"type": "http.response.start", "status": 504, "headers": []})
            await send({"type": "http.response.body", "body": b"gave up"})
            raise

    sent = []

    async def send(message):
        sent.append(message)

    async def receive():
        return {"type": "http.request", "body": b"", "more_body": False}

    scope = {"type": "http", "method": "GET", "path": "/v1/x", "root_path": "", "query_string": b"", "headers": []}
    asyncio.run(Deadline(last_word, 0.05)(scope, receive, send))
    assert [m["type"] for m in sent] == ["http.response.start", "http.response.body"] and sent[0]["status"] == 504


# -- the guard as a whole ----------------------------------------------------------------------------------------------

def test_a_guard_without_settings_refuses_http_but_passes_other_scopes():
    app = Recorder()
    guard = http_guard.RequestGuard(app)
    message, headers = refused(call(guard, "GET", "/"), 503, "not_configured")
    assert headers["retry-after"] == "5" and app.calls == []
    assert "Retry-After" in message and "Retry-After" in http_guard.not_configured().headers

    async def lifespan(scope, receive, send):
        app.calls.append((scope["type"], (await receive())["type"]))
        await send({"type": "http.response.start", "status": 204, "headers": []})

    assert call(http_guard.RequestGuard(lifespan), scope_type="lifespan")[0] == 204  # receive and send handed on
    assert app.calls == [("lifespan", "http.request")]


def test_the_stack_applies_every_setting():
    app = Recorder(delay=0.3)
    config = GuardConfig(api_key_sha256=(DIGEST,), max_body_bytes=10, request_timeout_s=0.05, max_inflight=1,
                         cors_origins=("https://a.example",))
    guard = http_guard.RequestGuard(app, config)
    auth = ("authorization", f"Bearer {KEY}")
    refused(call(guard, "POST", "/v1/x", [FORM]), 401, "missing_api_key")
    refused(call(guard, "POST", "/v1/x", [FORM, auth, ("content-length", "11")]), 413, "request_too_large")
    status, headers, _ = call(guard, "POST", "/v1/x", [FORM, auth, ("origin", "https://a.example")])
    assert status == 503 and headers["access-control-allow-origin"] == "https://a.example"
    assert call(guard, "GET", "/")[0] == 200  # the open page reaches the (slow) app past the gate and the deadline
    plain = http_guard.stack(Recorder(), GuardConfig())
    status, headers, _ = call(plain, "POST", "/v1/x", [FORM, ("origin", "https://a.example")])
    assert status == 200 and "access-control-allow-origin" not in headers
    preflight = [("origin", "https://a.example"), ("access-control-request-method", "POST")]
    status, headers, _ = call(plain, "OPTIONS", "/v1/x", preflight)  # without CORS no one answers preflights
    assert status == 200 and "access-control-allow-origin" not in headers


def test_configure_only_an_installed_guard_before_it_serves():
    with pytest.raises(RuntimeError, match="install") as info:
        http_guard.configure(FastAPI(), GuardConfig())
    assert_readable(str(info.value))
    api = _installed(FastAPI())
    api.add_middleware(_Marker)
    configured = http_guard.configure(api, GuardConfig())
    assert [entry.cls for entry in configured.user_middleware].count(http_guard.RequestGuard) == 1
    assert any(entry.cls is _Marker for entry in configured.user_middleware)
    assert TestClient(configured).get("/healthz").status_code == 404  # served: the guard let it through
    with pytest.raises(RuntimeError, match="before") as info:
        http_guard.configure(configured, GuardConfig())
    assert_readable(str(info.value))


class _Marker:
    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        await self.app(scope, receive, send)


# -- http_errors -------------------------------------------------------------------------------------------------------

def _errors_app() -> FastAPI:
    api = FastAPI()
    http_errors.install(api)

    @api.get("/api-error")
    async def api_error():
        raise errors.ApiError(409, "conflict", "it clashes", headers={"X-A": "from-error"})

    @api.get("/number")
    async def number(n: int):
        return {"n": n}

    @api.get("/raise/{status}")
    async def raise_status(status: int, detail: str = "plain"):
        raise StarletteHTTPException(status, detail=detail if detail != "dict" else {"k": "v"},
                                     headers={"X-Extra": "1"})

    @api.get("/broken")
    async def broken():
        raise RuntimeError("secret internals")

    return api


def test_error_response_merges_headers_with_the_errors_own_winning():
    response = http_errors.error_response(errors.ApiError(418, "teapot", "m", headers={"X-A": "mine"}),
                                          headers={"X-A": "other", "X-B": "b"})
    assert response.status_code == 418 and json.loads(response.body) == {"error": {"code": "teapot", "message": "m"}}
    assert response.headers["x-a"] == "mine" and response.headers["x-b"] == "b"


def test_our_refusals_keep_their_status_and_headers():
    response = TestClient(_errors_app()).get("/api-error")
    assert response.status_code == 409 and response.headers["x-a"] == "from-error"
    assert response.json() == {"error": {"code": "conflict", "message": "it clashes"}}


def test_a_malformed_field_is_a_400_that_names_it():
    response = TestClient(_errors_app()).get("/number", params={"n": "many"})
    assert response.status_code == 400 and response.json()["error"]["code"] == "malformed_request"
    message = response.json()["error"]["message"]
    assert message.startswith("the request's fields are malformed (n: ") and "`image`" in message
    assert_readable(message)


@pytest.mark.parametrize("path, status, code, mentions", [
    ("/nowhere", 404, "not_found", ["GET /nowhere", "/docs"]),
    ("/raise/400?detail=Part exceeded maximum size of 1024KB.", 413, "field_too_large", ["maximum size", "`image`"]),
    ("/raise/400?detail=garbled", 400, "malformed_request", ["(garbled)", "multipart/form-data", "curl"]),
    ("/raise/418?detail=short and stout", 418, "http_418", ["short and stout"]),
    ("/raise/409?detail=dict", 409, "http_409", ["{'k': 'v'}"]),
])
def test_starlettes_own_refusals_get_our_json_shape(path, status, code, mentions):
    response = TestClient(_errors_app()).get(path)
    assert response.status_code == status and response.json()["error"]["code"] == code
    message = response.json()["error"]["message"]
    assert all(m in message for m in mentions), message
    assert_readable(message.replace(path.partition("?")[0], ""))
    if status != 404:
        assert response.headers["x-extra"] == "1"


def test_a_wrong_method_is_a_405_that_says_so():
    response = TestClient(_errors_app()).post("/number")
    assert response.status_code == 405 and response.json()["error"]["code"] == "method_not_allowed"
    assert "POST is not allowed on /number" in response.json()["error"]["message"]


def test_a_long_path_is_not_echoed_in_full():
    response = TestClient(_errors_app()).get("/" + "p" * 500)
    assert response.status_code == 404 and "p" * 199 in response.text and "p" * 200 not in response.text


def test_an_unexpected_error_is_a_500_without_internals_and_is_logged(caplog):
    with caplog.at_level(logging.ERROR, logger="deployments.http_errors"):
        response = TestClient(_errors_app(), raise_server_exceptions=False).get("/broken")
    assert response.status_code == 500 and response.json()["error"]["code"] == "internal_error"
    message = response.json()["error"]["message"]
    assert "RuntimeError" in message and "secret" not in message
    assert_readable(message)
    assert any("GET /broken" in record.getMessage() and record.exc_info for record in caplog.records)


def test_every_validation_problem_is_listed_with_where_it_is():
    import asyncio as _asyncio

    from fastapi.exceptions import RequestValidationError

    problems = [{"loc": ("body", "points"), "msg": "Field required", "type": "missing"},
                {"loc": ("query", "box", 2), "msg": "Input should be a number", "type": "x"},
                {"loc": ("body",), "msg": "Body is empty", "type": "y"},
                {"msg": "no location", "type": "z"}]
    response = _asyncio.run(http_errors.validation_error(None, RequestValidationError(problems)))
    body = json.loads(response.body)
    assert response.status_code == 400 and body["error"]["code"] == "malformed_request"
    assert ("(points: Field required; box.2: Input should be a number; body: Body is empty; body: no location)"
            in body["error"]["message"])
