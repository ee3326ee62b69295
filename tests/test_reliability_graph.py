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
import statistics
import threading
import time
from collections import Counter

import httpx
import pytest

import fault_injection
from images import jpeg
from reliability import anonymous_bytes, replica_processes, report, run_load, wait_until

pytestmark = pytest.mark.e2e

APP = "bgremove_reliability"
PREFIX = "/reliability"
KEY = "test-key-0123456789abcdef"
AUTH = {"Authorization": f"Bearer {KEY}"}
ORIGIN = "https://editor.example"
SIZES = [(200, 150), (160, 120), (240, 180), (180, 135)]  # small: cheap clicks
BIG: list = []


@pytest.fixture(scope="module")
def rel(serve_instance):
    """(base url, image ids) of this module's graph; deleted afterwards to give its memory back."""
    import ray.cloudpickle
    from ray import serve

    from conftest import TEST_ARGS
    from serve_app.app import bind_graph
    from serve_app.config import AppArgs

    ray.cloudpickle.register_pickle_by_value(fault_injection)
    args = AppArgs(**TEST_ARGS, api_keys=[KEY], cors_origins=[ORIGIN])
    options = {"Segmenter": {"func_or_class": fault_injection.FaultInjectableSegmenter,
                             "health_check_period_s": 1, "health_check_timeout_s": 20}}
    serve.run(bind_graph(args, options), name=APP, route_prefix=PREFIX)
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

SOAK_APP = "bgremove_soak"
MiB = 2**20
# Budgets small enough that new photos cycle both stores: a tiny FP32 embedding is 16 MiB (40 MB hold two), a
# 400x300 photo 360,000 bytes of pixels (1 MB holds two).
CACHE_MB, STORE_MB, SOAK_PHOTO = 40, 1, (400, 300)
# Every new photo costs a full encoder pass (~3 s on a 2-core CPU), so their number is sized to the budgets:
# one before the first round and one per round, 11 in all, each store cycled 5 times over.
ROUNDS = 10
CLIENTS, CLICKS = 8, 10  # repeat clicks per round: 80, on the photo uploaded the round before


@pytest.fixture(scope="module")
def soak_url(serve_instance):
    """A graph of its own (one replica per stage, no keys) with small cache and store budgets."""
    from ray import serve

    from conftest import TEST_ARGS
    from serve_app.app import bind_graph
    from serve_app.config import AppArgs

    # Every answer is checked to be a 200: no deadline for clicks queued behind an encoder pass on a slow runner.
    args = AppArgs(**{**TEST_ARGS, "embedding_cache_mb": CACHE_MB, "image_store_mb": STORE_MB,
                      "request_timeout_s": 600})
    serve.run(bind_graph(args), name=SOAK_APP, route_prefix="/soak")
    yield serve_instance + "/soak"
    serve.delete(SOAK_APP)


def anonymous_memory_by_replica(app: str) -> dict[str, int]:
    """Each replica's anonymous memory. Not its RSS: the file-backed part grows by itself as the shared libraries'
    code pages in (observed +12 to +30 MB per replica over 16 rounds while the anonymous part stayed flat)."""
    anonymous = {}
    for deployment in ("Ingress", "Segmenter", "Postprocess", "ImageStore"):
        processes = replica_processes(app, deployment)
        assert len(processes) == 1, (deployment, processes)
        anonymous[deployment] = anonymous_bytes(processes[0].pid)
    return anonymous


def stage_stats(app: str) -> tuple[dict, dict]:
    """The embedding cache's and the image store's own accounting (entries, bytes, max_bytes, evictions)."""
    from ray import serve

    segmenter = serve.get_deployment_handle("Segmenter", app_name=app).stats.remote().result(timeout_s=60)
    store = serve.get_deployment_handle("ImageStore", app_name=app).stats.remote().result(timeout_s=60)
    return segmenter, store


def test_memory_soak_cycles_the_cache_and_store_within_budget_and_levels_off(soak_url):
    """New photos mixed with repeat clicks: each round eight clients click on the previous photo by image_id,
    then a new photo is uploaded (alternately by /v1/images and by /v1/cutout with the file). The
    embedding cache and the image store must evict and stay within their budgets; the segmenter's heap in use (the
    allocator's own account) and each replica's anonymous memory must level off: the lowest value over the last half
    of the rounds (after both stores have cycled twice) stays near the median over the first half."""
    width, height = SOAK_PHOTO

    async def new_photo(client: httpx.AsyncClient, seed: int) -> str:
        files = {"image": ("p.jpg", jpeg(width, height, seed=5000 + seed), "image/jpeg")}
        if seed % 2:
            response = await client.post("/v1/cutout", files=files, data={"points": f"[[{width // 2}, {height // 2}]]"})
            assert response.status_code == 200, response.text
            image_id = response.headers["X-Image-Id"]
        else:
            response = await client.post("/v1/images", files=files)
            assert response.status_code == 200, response.text
            image_id = response.json()["image_id"]
        return image_id

    async def one_round(image_id: str, seed: int):
        def repeat_click(index, i):
            x, y = (37 * index + 11 * i) % width, (23 * index + 7 * i) % height
            return "POST", "/v1/cutout", {"data": {"image_id": image_id, "points": json.dumps([[x, y]])}}

        # The new photo comes after the round's clicks: the store evicts the least recently used, and an ingress
        # replica answers a burst of clicks from its own recent records without touching the store, so a photo
        # uploaded in the middle of the clicks could look older to the store than the one being clicked.
        load = await run_load(soak_url, repeat_click, CLIENTS, CLICKS)
        async with httpx.AsyncClient(base_url=soak_url, timeout=120) as client:
            image_id = await new_photo(client, seed)
            # Every round ends with a click on its new photo, so memory is sampled after the same work whichever way
            # the photo came (after an upload by /v1/images alone, the segmenter sat up to ~120 MB above the level
            # seen after a click, and back at it a round later: allocator state, not a leak).
            response = await client.post("/v1/cutout", data={"image_id": image_id, "points": "[[1, 1]]"})
            assert response.status_code == 200, response.text
            return image_id, load

    async def first_photo():
        async with httpx.AsyncClient(base_url=soak_url, timeout=120) as client:
            return await new_photo(client, 0)

    image_ids = [asyncio.run(first_photo())]
    memory: list[dict[str, int]] = []
    stats = []
    clicks = Counter()
    start = time.perf_counter()
    for r in range(1, ROUNDS + 1):
        image_id, load = asyncio.run(one_round(image_ids[-1], r))
        assert load.statuses == Counter({200: CLIENTS * CLICKS}), (r, image_ids, load.summary(), load.failed[:1],
                                                                   stage_stats(SOAK_APP))
        clicks += load.statuses
        image_ids.append(image_id)
        memory.append(anonymous_memory_by_replica(SOAK_APP))
        stats.append(stage_stats(SOAK_APP))
    elapsed = time.perf_counter() - start
    # The first photo was evicted long ago: its id now gets the documented 404, not someone else's photo.
    gone = httpx.post(soak_url + "/v1/cutout", data={"image_id": image_ids[0], "points": "[[1, 1]]"}, timeout=60)

    segmenter, store = stats[-1]
    embedding_bytes = segmenter["bytes"] // segmenter["entries"]
    # Memory levels off: the lowest value of the last half of the rounds stays near the median of the first half (a
    # floor, not peaks or a fitted slope: a round can sit high and come back, which never lifts the floor; a leak
    # always does). The leak detector is the segmenter's heap in use (the allocator's own account of blocks handed
    # out and not freed; 606-607 MB in most rounds, a single round up to 25 MB higher, observed): within two
    # embeddings (32 MiB for tiny) it catches a leak of 160 KB per click (the floor is at least three rounds, 240
    # clicks, past the median: 37 MB; a mask's logits are 256 KB) or of 13 MiB per new photo (39 MB). Resident
    # anonymous memory also counts the freed blocks the allocator keeps, and the segmenter's moves in steps of tens
    # of MB with the encoder passes (a CI run: 920-976 MB over the first five rounds, 959-990 over the last five,
    # floor +34.5 MB): its bound is eight embeddings (128 MiB), against runaway retention or growth outside the C
    # heap. The other replicas rose at most 5 MB over a run (observed) and keep two embeddings. The caches' and
    # store's own accounting (below) catches an embedding or a photo kept past its budget.
    limit_mb = 2 * embedding_bytes / MiB
    anonymous_limit_mb = {name: limit_mb for name in memory[0]} | {"Segmenter": 8 * embedding_bytes / MiB}
    half = ROUNDS // 2
    report("memory", f"soak: {len(image_ids)} new photos and {clicks[200]} repeat clicks in {elapsed:.0f} s, all 200; "
                     f"embedding cache {segmenter} (budget {CACHE_MB} MB); image store {store} (budget {STORE_MB} MB)")

    def growth_mb(what: str, samples: list[int], limit: float) -> float:
        """The floor of the last half over the median of the first, reported with its curve."""
        growth = (min(samples[half:]) - statistics.median(samples[:half])) / MiB
        report("memory", f"{what} per round (MB): {' '.join(f'{b / MiB:.0f}' for b in samples)}; lowest of the last "
                         f"{ROUNDS - half} rounds over the median of the first {half}: {growth:+.1f} MB "
                         f"(limit {limit:.0f})")
        return growth

    heap_in_use = [seg["host_heap"]["in_use_bytes"] for seg, _ in stats]
    heap_growth = growth_mb("Segmenter    heap in use", heap_in_use, limit_mb)
    growth = {name: growth_mb(f"{name:12s} anonymous memory", [sample[name] for sample in memory],
                              anonymous_limit_mb[name]) for name in memory[0]}

    assert gone.status_code == 404 and gone.json()["error"]["code"] == "unknown_image_id", gone.text
    for seg, st in stats:  # at the end of every round, by the stages' own accounting
        assert seg["max_bytes"] == CACHE_MB * MiB and seg["bytes"] <= seg["max_bytes"], seg
        assert st["max_bytes"] == STORE_MB * MiB and st["bytes"] <= st["max_bytes"], st
    # Each new photo was encoded and stored once and pushed out by later ones: the stores cycled 4+ times over.
    assert segmenter["evictions"] == len(image_ids) - segmenter["entries"] >= 4 * segmenter["entries"], segmenter
    assert store["evictions"] == len(image_ids) - store["images"] >= 4 * store["images"], store
    assert heap_growth < limit_mb, (heap_in_use, limit_mb)
    assert all(growth[name] < anonymous_limit_mb[name] for name in growth), (growth, anonymous_limit_mb)


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

def outcome(response: httpx.Response) -> int | str:
    """200, '503+retry-after', or the status and the start of the body: the last two are never acceptable."""
    if response.status_code == 200:
        return 200
    if response.status_code == 503 and "retry-after" in response.headers:
        return "503+retry-after"
    return f"{response.status_code} {response.text[:300]}"


ANSWERS = {200, "503+retry-after"}  # what a request may end as when a replica dies under it


class BackgroundLoad:
    """Clients clicking in a loop on another thread, each outcome kept with its start and end time."""

    def __init__(self, url, ids, clients: int = 4):
        self.url, self.ids, self.clients = url, ids, clients
        self.outcomes: list[tuple[float, float, int | str]] = []
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
                        status = outcome(await client.request(method, path, **kwargs))
                    except (httpx.TimeoutException, httpx.TransportError) as exc:  # no answer: never acceptable
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
    in_flight = [status for start, end, status in load.outcomes if start <= killed_at <= end]
    report("faults", f"killed {deployment} pid {victim.pid} (SIGKILL) mid-traffic: answering again "
                     f"{recovered_at - killed_at:.1f} s later; new pid {restarted[0].pid}; requests in flight at the "
                     f"kill: {dict(Counter(in_flight))}; all requests: {dict(statuses)}")
    assert in_flight, "no request was in flight at the kill: the test proved nothing"
    # Each request caught by the kill, and every other one, ends as a cut-out or a 503 with Retry-After: no 500,
    # no dropped connection, no hang (a hung request would end as 'lost: ReadTimeout' after 120 s).
    assert set(in_flight) <= ANSWERS and set(statuses) <= ANSWERS, statuses


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
