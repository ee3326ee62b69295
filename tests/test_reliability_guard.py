"""The ingress's front door (deployments/http_guard/) without Ray: an ASGI app in front of which it stands,
driven over httpx's ASGI transport. API keys, CORS, request-size limits, the overload gate, the deadline, and
the JSON error body for what Starlette refuses by itself."""

from __future__ import annotations

import asyncio
import hashlib

import httpx
import pytest
from fastapi import Depends, FastAPI, File, Form, Request, UploadFile
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from deployments import http_errors, http_guard
from deployments import errors
from serve_app.config import AppArgs
from deployments.settings import GuardConfig

KEY = "s3cret-key"
pytestmark = pytest.mark.anyio  # async tests through anyio's pytest plugin (anyio comes with Starlette)


@pytest.fixture
def anyio_backend():
    return "asyncio"


def make_app(config: GuardConfig, state: dict | None = None) -> FastAPI:
    state = state if state is not None else {}
    app = FastAPI(dependencies=[Depends(http_guard.reject_repeated_fields)])
    app.add_middleware(http_guard.RequestGuard, config=config)
    app.add_exception_handler(errors.ApiError, lambda _, exc: http_errors.error_response(exc))
    app.add_exception_handler(StarletteHTTPException, http_errors.http_error)
    app.add_exception_handler(Exception, http_errors.unexpected_error)

    @app.post("/v1/cutout")
    async def cutout(image: UploadFile = File(...), points: str = Form(...)):
        state["called"] = state.get("called", 0) + 1
        return {"bytes": len(await image.read()), "points": points}

    @app.post("/v1/slow")
    async def slow(points: str = Form("")):
        state["started"] = True
        try:
            await asyncio.sleep(float(points or 5))
        except asyncio.CancelledError:
            state["cancelled"] = True
            raise
        state["finished"] = True
        return {"ok": True}

    @app.post("/v1/broken")
    async def broken(points: str = Form("")):
        raise RuntimeError("secret internals")

    @app.get("/healthz")
    async def healthz():
        return {"status": "ok"}

    @app.get("/")
    async def page():
        return JSONResponse({"page": True})

    return app


def client(app) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app, raise_app_exceptions=False),
                             base_url="http://test")


def keyed(**kw) -> GuardConfig:
    return GuardConfig(api_key_sha256=(hashlib.sha256(KEY.encode()).hexdigest(),), **kw)


FORM = {"files": {"image": ("p.jpg", b"\xff\xd8 pixels", "image/jpeg")}, "data": {"points": "[[1, 2]]"}}


def assert_error(response, status: int, code: str):
    assert response.status_code == status, response.text
    body = response.json()
    assert body["error"]["code"] == code and len(body["error"]["message"]) > 10, body
    return body["error"]["message"]


async def test_api_keys_protect_the_api_only():
    async with client(make_app(keyed())) as c:
        assert_error(await c.post("/v1/cutout", **FORM), 401, "missing_api_key")
        assert_error(await c.post("/v1/cutout", **FORM, headers={"Authorization": "Bearer nope"}), 401,
                     "invalid_api_key")
        assert_error(await c.post("/v1/cutout", **FORM, headers={"Authorization": KEY}), 401, "invalid_authorization")
        response = await c.post("/v1/cutout", **FORM, headers={"Authorization": f"Bearer {KEY}"})
        assert response.status_code == 200 and response.json()["points"] == "[[1, 2]]"
        assert (await c.post("/v1/cutout", **FORM, headers={"Authorization": f"bearer  {KEY} "})).status_code == 200
        # Health, the web page and the docs stay open.
        for path in ("/healthz", "/", "/docs", "/openapi.json"):
            assert (await c.get(path)).status_code == 200, path
        # A state-changing method on any other path needs the key too.
        assert_error(await c.post("/", data={"a": "b"}), 401, "missing_api_key")
    async with client(make_app(GuardConfig())) as c:  # no keys configured: open
        assert (await c.post("/v1/cutout", **FORM)).status_code == 200


def test_keys_come_from_config_or_environment_and_travel_as_digests():
    args = AppArgs(api_keys=["from-config"]).with_env({"BGREMOVE_API_KEYS": " k1, k2 ,,", "BGREMOVE_CORS_ORIGINS": ""})
    assert args.api_keys == ["k1", "k2"] and args.cors_origins == []
    guard = args.guard()
    assert guard.api_key_sha256 == tuple(hashlib.sha256(k.encode()).hexdigest() for k in ("k1", "k2"))
    assert "k1" not in repr(guard)
    assert AppArgs(api_keys=["a"]).with_env({}).api_keys == ["a"]
    assert AppArgs().guard().api_key_sha256 == ()


async def test_declared_size_over_the_limit_is_refused_before_reading():
    called, received = [], []

    async def inner(scope, receive, send):  # would read the body
        called.append(scope["path"])
        received.append(await receive())

    guard = http_guard.RequestGuard(inner, config=GuardConfig(max_body_bytes=1000))
    async with client(guard) as c:
        response = await c.post("/v1/cutout", content=b"x" * 1001,
                                headers={"content-type": "multipart/form-data; boundary=b"})
    assert_error(response, 413, "request_too_large")
    assert not called and not received  # refused on the declared length alone: the app never ran


async def test_chunked_body_over_the_limit_is_cut_off_with_413():
    state = {}

    async def chunks():
        yield b"--b\r\nContent-Disposition: form-data; name=\"image\"; filename=\"p.jpg\"\r\n\r\n"
        for _ in range(50):
            yield b"\0" * 1000

    async with client(make_app(GuardConfig(max_body_bytes=10_000), state)) as c:
        response = await c.post("/v1/cutout", content=chunks(),
                                headers={"content-type": "multipart/form-data; boundary=b"})
        assert "content-length" not in response.request.headers
    assert_error(response, 413, "request_too_large")
    assert "called" not in state  # the route never ran


async def test_content_length_that_lies_is_still_counted():
    async def inner(scope, receive, send):
        while (await receive()).get("more_body"):
            pass
        await JSONResponse({"read": "all"})(scope, receive, send)

    guard = http_guard.RequestGuard(inner, config=GuardConfig(max_body_bytes=100))

    async def receive_lying():  # claims 10 bytes, sends 1000
        return {"type": "http.request", "body": b"x" * 1000, "more_body": False}

    sent = []

    async def send(message):
        sent.append(message)

    scope = {"type": "http", "method": "POST", "path": "/v1/cutout", "root_path": "", "query_string": b"",
             "headers": [(b"content-length", b"10"), (b"content-type", b"multipart/form-data; boundary=b")]}
    await guard(scope, receive_lying, send)
    assert sent[0]["status"] == 413


async def test_wrong_content_type_method_and_path_get_json_errors():
    async with client(make_app(GuardConfig())) as c:
        message = assert_error(await c.post("/v1/cutout", json={"points": [[1, 2]]}), 415,
                               "unsupported_content_type")
        assert "multipart/form-data" in message and "curl -F" in message
        assert_error(await c.post("/v1/cutout", content=b"x", headers={"content-length": "abc",
                                                                         "content-type": "multipart/form-data"}),
                     400, "invalid_content_length")
        assert_error(await c.delete("/v1/cutout"), 405, "method_not_allowed")
        assert_error(await c.get("/v2/nothing"), 404, "not_found")
        assert_error(await c.post("/v1/cutout", content=b"--x\r\n", headers={"content-type": "multipart/form-data"}),
                     400, "malformed_request")
        big_field = {"files": FORM["files"], "data": {"points": "[" * 2_000_000}}
        assert_error(await c.post("/v1/cutout", **big_field), 413, "field_too_large")
        two_images = [("image", ("a.jpg", b"a", "image/jpeg")), ("image", ("b.jpg", b"b", "image/jpeg"))]
        assert_error(await c.post("/v1/cutout", files=two_images, data={"points": "[]"}), 400, "repeated_field")
        assert_error(await c.post("/v1/cutout", files=FORM["files"], data={"points": ["[[1, 1]]", "[[2, 2]]"]}),
                     400, "repeated_field")
        message = assert_error(await c.post("/v1/broken", data={"points": "1"}), 500, "internal_error")
        assert "secret internals" not in message  # no internals leak


async def test_overload_gate_answers_503_with_retry_after():
    state = {}
    async with client(make_app(GuardConfig(max_inflight=1), state)) as c:
        slow = asyncio.create_task(c.post("/v1/slow", data={"points": "1.0"}))
        while not state.get("started"):
            await asyncio.sleep(0.01)
        rejected = await c.post("/v1/cutout", **FORM)
        assert_error(rejected, 503, "overloaded")
        assert rejected.headers["retry-after"] == "1"
        assert (await c.get("/healthz")).status_code == 200  # health is never gated
        assert (await slow).status_code == 200
        assert (await c.post("/v1/cutout", **FORM)).status_code == 200  # the slot was given back


async def test_deadline_answers_503_and_cancels_the_work():
    state = {}
    async with client(make_app(GuardConfig(request_timeout_s=0.2), state)) as c:
        response = await c.post("/v1/slow", data={"points": "30"})
    assert_error(response, 503, "timeout")
    assert response.headers["retry-after"] == "2"
    assert state.get("cancelled") and not state.get("finished"), state  # the work was stopped, not left running


@pytest.mark.parametrize("origins", [(), ("https://editor.example",)])
async def test_cors_is_off_unless_configured(origins):
    preflight = {"Origin": "https://editor.example", "Access-Control-Request-Method": "POST",
                 "Access-Control-Request-Headers": "authorization"}
    async with client(make_app(keyed(cors_origins=origins))) as c:
        answer = await c.options("/v1/cutout", headers=preflight)
        simple = await c.post("/v1/cutout", **FORM, headers={"Origin": "https://editor.example",
                                                              "Authorization": f"Bearer {KEY}"})
        other = await c.options("/v1/cutout", headers={**preflight, "Origin": "https://evil.example"})
    if origins:
        assert answer.status_code == 200 and answer.headers["access-control-allow-origin"] == origins[0]
        assert simple.headers["access-control-allow-origin"] == origins[0]
        assert "x-image-id" in simple.headers["access-control-expose-headers"].lower()
    else:
        assert "access-control-allow-origin" not in answer.headers  # and a preflight needs the key like any call
        assert "access-control-allow-origin" not in simple.headers
    assert "access-control-allow-origin" not in other.headers


async def test_a_guard_without_settings_fails_closed_until_configured():
    """The Ingress's app as ``install`` leaves it: the guard has no settings yet and refuses everything (a replica
    that lost its configuration must not serve without keys); ``configure`` (what the Ingress replica calls from
    Serve's ``__serve_build_asgi_app__``) gives it the replica's settings."""
    def fresh_app() -> FastAPI:
        app = FastAPI()
        http_guard.install(app)

        @app.post("/v1/cutout")
        async def cutout(points: str = Form("")):
            return {"ok": True}

        @app.get("/healthz")
        async def healthz():
            return {"status": "ok"}

        return app

    app = fresh_app()
    async with client(app) as c:
        for response in (await c.post("/v1/cutout", data={"points": "1"}, headers={"Authorization": f"Bearer {KEY}"}),
                         await c.get("/healthz")):
            assert_error(response, 503, "not_configured")
            assert response.headers["retry-after"]
    with pytest.raises(RuntimeError):  # too late once it has served: its middleware stack is built
        http_guard.configure(app, keyed())

    configured = http_guard.configure(fresh_app(), keyed())
    async with client(configured) as c:
        assert_error(await c.post("/v1/cutout", data={"points": "1"}), 401, "missing_api_key")
        assert (await c.post("/v1/cutout", data={"points": "1"},
                             headers={"Authorization": f"Bearer {KEY}"})).status_code == 200
        assert (await c.get("/healthz")).status_code == 200


async def test_the_ingress_replica_hands_its_settings_to_the_guard():
    """The hook Serve calls after the Ingress's __init__ (ray.serve._private.replica, __serve_build_asgi_app__)
    returns the app with this replica's guard settings in place."""
    from types import SimpleNamespace

    from deployments.ingress import Ingress

    app = FastAPI()
    http_guard.install(app)
    replica = SimpleNamespace(app=app, guard_config=keyed())
    served = Ingress.func_or_class.__serve_build_asgi_app__(replica)
    async with client(served) as c:
        assert_error(await c.post("/v1/cutout", data={"points": "1"}), 401, "missing_api_key")


def test_downstream_failures_map_to_retryable_503s():
    """What the ingress can get back from a stage: its refusals pass through; a dead or overloaded replica is a
    503 with Retry-After (also when Serve wraps an upstream death); anything else stays a fault (500)."""
    from ray.exceptions import ActorDiedError, RayTaskError
    from ray.serve.exceptions import BackPressureError, RayServeException

    from deployments.ingress import as_api_error

    refusal = errors.invalid_prompt("point_outside_image", "x")
    assert as_api_error(refusal) is refusal
    wrapped = RayTaskError("segment", "traceback", refusal)
    assert as_api_error(wrapped) is refusal
    upstream = RayServeException("Request to deployment 'Postprocess' failed because an upstream actor died")
    upstream.__cause__ = ActorDiedError()
    for exc in (ActorDiedError(), upstream, BackPressureError(num_queued_requests=3, max_queued_requests=2)):
        error = as_api_error(exc)
        assert error is not None and error.status == 503 and error.headers["Retry-After"], exc
    assert as_api_error(ValueError("a bug")) is None
    assert as_api_error(RayServeException("something else")) is None


async def test_the_guard_tells_the_routes_which_key_a_request_carried():
    def app_with(config: GuardConfig) -> FastAPI:
        app = FastAPI()
        app.add_middleware(http_guard.RequestGuard, config=config)

        @app.post("/v1/whoami")
        async def whoami(request: Request, points: str = Form("")):
            return {"key": http_guard.api_key_of(request)}

        return app

    async with client(app_with(keyed())) as c:
        answer = await c.post("/v1/whoami", data={"points": "1"}, headers={"Authorization": f"Bearer {KEY}"})
    assert answer.json()["key"] == hashlib.sha256(KEY.encode()).hexdigest()
    async with client(app_with(GuardConfig())) as c:  # no keys: no owner, uploads stay unscoped
        assert (await c.post("/v1/whoami", data={"points": "1"})).json()["key"] == ""


async def test_the_policies_refuse_in_their_stated_order():
    """CORS outermost (a refusal still carries its headers), then keys, body size, the in-flight gate."""
    state = {}
    origin = "https://editor.example"
    config = keyed(cors_origins=(origin,), max_body_bytes=100, max_inflight=1)
    async with client(make_app(config, state)) as c:
        authorized = {"Authorization": f"Bearer {KEY}"}
        slow = asyncio.create_task(c.post("/v1/slow", data={"points": "1.0"}, headers=authorized))
        while not state.get("started"):
            await asyncio.sleep(0.01)
        big = {"files": {"image": ("p.jpg", b"x" * 1000, "image/jpeg")}}
        no_key = await c.post("/v1/cutout", **big, headers={"Origin": origin})
        assert_error(no_key, 401, "missing_api_key")
        assert no_key.headers["access-control-allow-origin"] == origin
        assert_error(await c.post("/v1/cutout", **big, headers=authorized), 413, "request_too_large")
        assert_error(await c.post("/v1/cutout", data={"points": "1"}, headers=authorized), 503, "overloaded")
        assert (await slow).status_code == 200
