"""Reliability on a running graph (real Ray Serve, real SAM 2.1 code, tiny model, seeded random weights):
API keys and CORS end to end, a memory soak, overload, and faults (replica processes killed mid-traffic, a
model that breaks in place). Every test prints its counts (the "reliability report" at the end of the run).

The graph is this module's own application (production defaults, one replica per stage, API keys on), so that
killing its replicas never disturbs the contract application that other tests share.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import threading
import time
from collections import Counter

import httpx
import pytest

import fault_injection
from images import jpeg
from reliability import replica_processes, report, run_load, wait_until

pytestmark = pytest.mark.e2e

APP = "bgremove_reliability"
PREFIX = "/reliability"
KEY = "test-key-0123456789abcdef"
AUTH = {"Authorization": f"Bearer {KEY}"}
ORIGIN = "https://editor.example"
SIZES = [(200, 150), (160, 120), (240, 180), (180, 135)]  # small: the soak measures leaks, not the model
BIG: list = []


@pytest.fixture(scope="module")
def rel(serve_instance):
    """(base url, image ids) of this module's graph; deleted afterwards to give its memory back."""
    import ray.cloudpickle
    from ray import serve

    from conftest import TEST_ARGS
    from serve_app.app import compose
    from serve_app.config import AppArgs

    ray.cloudpickle.register_pickle_by_value(fault_injection)
    args = AppArgs(**TEST_ARGS, api_keys=[KEY], cors_origins=[ORIGIN])
    options = {"Segmenter": {"func_or_class": fault_injection.FaultInjectableSegmenter,
                             "health_check_period_s": 1, "health_check_timeout_s": 20}}
    serve.run(compose(args, options), name=APP, route_prefix=PREFIX)
    url = serve_instance + PREFIX
    ids = []
    for i, (w, h) in enumerate(SIZES):
        response = httpx.post(url + "/v1/images", files={"image": ("p.jpg", jpeg(w, h, seed=40 + i), "image/jpeg")},
                              headers=AUTH, timeout=120)
        assert response.status_code == 200, response.text
        ids.append((response.json()["image_id"], w, h))
    # A 7 MP photo keeps the postprocess replica busy for a while per click (upsampling, PNG), so that killing it
    # mid-traffic is likely to catch a render in flight.
    big = httpx.post(url + "/v1/images", files={"image": ("big.jpg", jpeg(3072, 2304, seed=49), "image/jpeg")},
                     headers=AUTH, timeout=120)
    assert big.status_code == 200, big.text
    BIG.append((big.json()["image_id"], 3072, 2304))
    yield url, ids
    serve.delete(APP)


def click(ids, index: int, i: int, headers=AUTH):
    image_id, w, h = ids[(index + i) % len(ids)]
    x, y = (17 * index + 31 * i) % w, (13 * index + 7 * i) % h
    return "POST", "/v1/cutout", {"data": {"image_id": image_id, "points": json.dumps([[x, y]])}, "headers": headers}


# -- security ---------------------------------------------------------------------------------------------------

def test_api_keys_guard_the_api_and_leave_health_and_docs_open(rel):
    url, ids = rel
    image_id = ids[0][0]
    form = {"image_id": image_id, "points": "[[10, 10]]"}
    cases = {
        "no key": ({}, 401, "missing_api_key"),
        "wrong key": ({"Authorization": "Bearer not-the-key"}, 401, "invalid_api_key"),
        "basic auth": ({"Authorization": "Basic dXNlcjpwYXNz"}, 401, "invalid_authorization"),
        "right key": (AUTH, 200, None),
    }
    seen = Counter()
    for name, (headers, status, code) in cases.items():
        response = httpx.post(url + "/v1/cutout", data=form, headers=headers, timeout=60)
        assert response.status_code == status, (name, response.text[:300])
        if code:
            assert response.json()["error"]["code"] == code and "key" in response.json()["error"]["message"]
            assert response.headers["www-authenticate"].startswith("Bearer")
        seen[status] += 1
    # The legacy route and uploads need the key too; health and docs do not.
    legacy = httpx.post(url + "/background-removal/remove", files={"image": ("p.jpg", jpeg(64, 48), "image/jpeg")},
                        data={"points": "[[1, 1]]"}, timeout=60)
    assert legacy.status_code == 401
    for path in ("/healthz", "/docs", "/openapi.json"):
        assert httpx.get(url + path, timeout=60).status_code == 200, path
    report("security", f"API keys: {dict(seen)} for no/wrong/basic/right key; legacy route without key -> "
                       f"{legacy.status_code}; /healthz, /docs, /openapi.json open without key")


def test_cors_answers_only_the_configured_origin(rel):
    url, _ = rel
    preflight = {"Access-Control-Request-Method": "POST", "Access-Control-Request-Headers": "authorization"}
    allowed = httpx.options(url + "/v1/cutout", headers={"Origin": ORIGIN, **preflight}, timeout=60)
    assert allowed.status_code == 200 and allowed.headers["access-control-allow-origin"] == ORIGIN
    other = httpx.options(url + "/v1/cutout", headers={"Origin": "https://evil.example", **preflight}, timeout=60)
    assert "access-control-allow-origin" not in other.headers
    report("security", f"CORS preflight from the configured origin -> {allowed.status_code} with allow-origin; "
                       f"from another origin -> {other.status_code} without it")


# -- memory -----------------------------------------------------------------------------------------------------

SOAK_REQUESTS = 1000
RSS_GROWTH_LIMIT_MB = 64  # a leak of 64 KB per request (one small image, a mask's logits) would pass it


def rss_by_replica() -> dict[str, int]:
    rss = {}
    for deployment in ("Ingress", "Segmenter", "Postprocess", "ImageStore"):
        processes = replica_processes(APP, deployment)
        assert len(processes) == 1, (deployment, processes)
        rss[deployment] = processes[0].memory_info().rss
    return rss


def test_memory_soak_stays_flat(rel):
    url, ids = rel
    uploads = [jpeg(w, h, seed=40 + i) for i, (w, h) in enumerate(SIZES)]

    def mixed(index, i):
        if (index + i) % 10 == 0:  # one in ten sends the photo itself: decode, object store, image store
            k = (index + i) % len(uploads)
            w, h = SIZES[k]
            return "POST", "/v1/cutout", {"files": {"image": ("p.jpg", uploads[k], "image/jpeg")},
                                          "data": {"points": json.dumps([[w // 2, h // 2]])}}
        return click(ids, index, i, headers={})

    warm = asyncio.run(run_load(url, mixed, clients=8, per_client=25, headers=AUTH))  # allocator pools settle
    assert warm.statuses == Counter({200: 200}), warm.summary()
    before = rss_by_replica()
    start = time.perf_counter()
    soak = asyncio.run(run_load(url, mixed, clients=8, per_client=SOAK_REQUESTS // 8, headers=AUTH))
    elapsed = time.perf_counter() - start
    after = rss_by_replica()
    growth = {name: (after[name] - before[name]) / 2**20 for name in before}
    report("memory", f"soak: {soak.summary()} in {elapsed:.0f} s")
    for name in before:
        report("memory", f"{name:12s} RSS before {before[name] / 2**20:7.1f} MB  after {after[name] / 2**20:7.1f} MB"
                         f"  growth {growth[name]:+6.1f} MB (limit {RSS_GROWTH_LIMIT_MB} MB)")
    assert soak.sent >= SOAK_REQUESTS and soak.statuses == Counter({200: soak.sent}), soak.summary()
    assert all(value < RSS_GROWTH_LIMIT_MB for value in growth.values()), growth


# -- overload ---------------------------------------------------------------------------------------------------

def test_overload_answers_503_with_retry_after_and_loses_nothing(rel):
    """Far more clients than the graph takes at once (48 in the ingress guard, 2 running + 32 queued at the
    segmenter): the rest must get a prompt 503 with Retry-After, and no request may go unanswered."""
    url, ids = rel
    clients, per_client = 160, 2
    result = asyncio.run(run_load(url, lambda index, i: click(ids, index, i), clients, per_client, timeout_s=120))
    report("overload", f"{clients} concurrent clients x {per_client}: {result.summary()}")
    assert result.sent == clients * per_client
    assert not result.failed and not result.lost, (result.failed[:3], result.lost[:3])
    assert result.statuses[200] > 0 and result.statuses[503] > 0, result.summary()
    assert result.missing_retry_after == 0
    assert result.not_json_503 == 0  # the guard and the segmenter queue shed load before the proxy has to
    # The service is fine afterwards.
    method, path, kwargs = click(ids, 0, 0)
    assert httpx.request(method, url + path, timeout=60, **kwargs).status_code == 200


def test_http_proxy_backpressure_sends_retry_after(serve_instance):
    """Past the Ingress's max_queued_requests the HTTP proxy answers by itself; with the Ingress's own
    backpressure_config (Ray 2.60) that answer carries Retry-After. Shown on a tiny app with a queue of one."""
    from ray import serve

    from deployments.ingress import Ingress

    config = Ingress._deployment_config
    assert config.max_queued_requests > 0 and config.backpressure_config.retry_after_s == 1

    @serve.deployment(max_ongoing_requests=1, max_queued_requests=1, backpressure_config=config.backpressure_config)
    class Slow:
        async def __call__(self, request) -> str:
            await asyncio.sleep(3)
            return "done"

    serve.run(Slow.bind(), name="bgremove_backpressure", route_prefix="/backpressure")
    try:
        result = asyncio.run(run_load(serve_instance, lambda i, j: ("GET", "/backpressure", {}), 6, 1, timeout_s=60))
    finally:
        serve.delete("bgremove_backpressure")
    report("overload", f"HTTP proxy with a full queue: {result.summary()}")
    assert not result.failed and not result.lost and result.statuses[503] >= 1 and result.missing_retry_after == 0


# -- faults -----------------------------------------------------------------------------------------------------

class BackgroundLoad:
    """Clients clicking in a loop on another thread, each outcome kept with its start and end time."""

    def __init__(self, url, ids, clients: int = 4):
        self.url, self.ids, self.clients = url, ids, clients
        self.outcomes: list[tuple[float, float, int | str]] = []
        self.unexpected: list[str] = []  # bodies of answers other than 200 and 503
        self._stop = threading.Event()
        self._thread = threading.Thread(target=lambda: asyncio.run(self._run()), daemon=True)

    async def _run(self):
        async with httpx.AsyncClient(base_url=self.url, timeout=120) as client:
            async def loop(index):
                i = 0
                while not self._stop.is_set():
                    method, path, kwargs = click(self.ids, index, i)
                    i += 1
                    start = time.monotonic()
                    try:
                        response = await client.request(method, path, **kwargs)
                        status: int | str = response.status_code
                        if status not in (200, 503):
                            self.unexpected.append(f"{status} {response.text[:300]}")
                    except (httpx.TimeoutException, httpx.TransportError) as exc:
                        status = f"lost: {type(exc).__name__}"
                    self.outcomes.append((start, time.monotonic(), status))

            await asyncio.gather(*(loop(i) for i in range(self.clients)))

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join(timeout=180)
        assert not self._thread.is_alive(), "a client never got an answer"

    def first_ok_after(self, t: float) -> float | None:
        ends = [end for start, end, status in self.outcomes if start > t and status == 200]
        return min(ends) if ends else None


def kill_replica_mid_traffic(rel, deployment: str, ids=None) -> None:
    url, small = rel
    ids = ids or small
    [victim] = replica_processes(APP, deployment)
    with BackgroundLoad(url, ids) as load:
        wait_until(lambda: sum(1 for *_, s in load.outcomes if s == 200) >= 8, 120, what="traffic to flow")
        killed_at = time.monotonic()
        os.kill(victim.pid, signal.SIGKILL)
        wait_until(lambda: load.first_ok_after(killed_at), 180, what=f"an answer after killing {deployment}")
        recovered_at = load.first_ok_after(killed_at)
        time.sleep(1)  # a little traffic on the new replica
    restarted = wait_until(lambda: [p for p in replica_processes(APP, deployment) if p.pid != victim.pid], 120,
                           what=f"a new {deployment} replica")
    statuses = Counter(status for *_, status in load.outcomes)
    in_flight = Counter(status for start, end, status in load.outcomes if start <= killed_at <= end)
    report("faults", f"killed {deployment} pid {victim.pid} (SIGKILL) mid-traffic: answering again "
                     f"{recovered_at - killed_at:.1f} s later; new pid {restarted[0].pid}; requests in flight at the "
                     f"kill: {dict(in_flight)}; all requests: {dict(statuses)}")
    assert set(statuses) <= {200, 503}, (statuses, load.unexpected[:3])  # no 500, nothing lost: an answer or a 503
    assert recovered_at - killed_at < 180


def test_killed_postprocess_replica_is_replaced_and_requests_get_answers(rel):
    kill_replica_mid_traffic(rel, "Postprocess", ids=BIG)


def test_killed_segmenter_replica_is_replaced_and_requests_get_answers(rel):
    kill_replica_mid_traffic(rel, "Segmenter")


def test_health_check_replaces_a_replica_whose_model_broke(rel):
    from ray import serve

    url, ids = rel
    [before] = replica_processes(APP, "Segmenter")
    handle = serve.get_deployment_handle("Segmenter", app_name=APP)
    poisoned_pid = handle.poison_model.remote().result(timeout_s=60)
    assert poisoned_pid == before.pid
    broken_at = time.monotonic()
    statuses = Counter()
    codes = Counter()

    def answered_again():
        method, path, kwargs = click(ids, len(statuses), sum(statuses.values()))
        response = httpx.request(method, url + path, timeout=120, **kwargs)
        statuses[response.status_code] += 1
        if response.status_code != 200:
            codes[response.json()["error"]["code"]] += 1
        return response.status_code == 200 and time.monotonic()

    recovered_at = wait_until(answered_again, 180, interval_s=0.2, what="a healthy segmenter")
    [after] = replica_processes(APP, "Segmenter")
    report("faults", f"segmenter model broken in place (NaN weights, pid {before.pid}): health check failed and Serve "
                     f"replaced the replica (new pid {after.pid}) {recovered_at - broken_at:.1f} s later; answers "
                     f"meanwhile: {dict(statuses)} {dict(codes)}")
    assert after.pid != before.pid
    assert set(statuses) <= {200, 503} and set(codes) <= {"model_fault", "replica_unavailable", "overloaded"}
