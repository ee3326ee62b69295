"""GET /healthz from a cached probe (deployments/health.py): a flood of health checks costs the segmenter one call
per probe age, not one per check. Unit tests with a counting fake probe, then the real graph over HTTP, where the
segmenter's own request counter (Ray Serve's metric) is what is counted."""

from __future__ import annotations

import asyncio
import json
import time

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from deployments.health import CachedProbe, StageUnavailable, probe_stages
from images import jpeg
from reliability import report


class Clock:
    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now


class CountingProbe:
    def __init__(self, fail: bool = False):
        self.calls, self.fail = 0, fail
        self.release = asyncio.Event()

    async def __call__(self):
        self.calls += 1
        await self.release.wait()  # every caller arrives while this probe is in flight
        if self.fail:
            raise TimeoutError("segmenter did not answer")
        return {"model": "tiny", "device": "cpu"}


def test_500_concurrent_checks_share_one_probe_and_its_result_ages_out():
    async def scenario():
        clock, probe = Clock(), CountingProbe()
        cached = CachedProbe(probe, max_age_s=2.0, clock=clock)
        waiting = [asyncio.ensure_future(cached.result()) for _ in range(500)]
        await asyncio.sleep(0)
        probe.release.set()
        results = await asyncio.gather(*waiting)
        assert probe.calls == 1 and all(r.value == {"model": "tiny", "device": "cpu"} for r in results)
        clock.now = 1.9  # still fresh: no new probe
        assert (await cached.result()).error is None and probe.calls == 1
        clock.now = 2.0  # too old: probed again
        await cached.result()
        assert probe.calls == 2

    asyncio.run(scenario())


def test_a_failed_probe_is_cached_too_and_a_caller_that_gives_up_does_not_cancel_it():
    async def scenario():
        clock, probe = Clock(), CountingProbe(fail=True)
        cached = CachedProbe(probe, max_age_s=2.0, clock=clock)
        impatient = asyncio.ensure_future(cached.result())
        patient = asyncio.ensure_future(cached.result())
        await asyncio.sleep(0)
        impatient.cancel()  # a client that hung up
        probe.release.set()
        result = await patient
        assert isinstance(result.error, TimeoutError) and probe.calls == 1
        for _ in range(100):  # a flood while the segmenter is down costs it nothing more
            assert (await cached.result()).error is not None
        assert probe.calls == 1

    asyncio.run(scenario())


def test_the_probe_asks_every_stage_at_once_and_names_the_one_that_fails_or_hangs():
    async def answer(value):
        return value

    async def broken():
        raise ConnectionError("replica died")

    async def scenario():
        calls = []

        def stage(name, probe):
            def call():
                calls.append(name)
                return probe()
            return call

        healthy = {"segmenter": stage("segmenter", lambda: answer({"model": "tiny"})),
                   "postprocess": stage("postprocess", lambda: answer({})),
                   "image_store": stage("image_store", lambda: answer({"images": 0}))}
        assert await probe_stages(healthy, timeout_s=1.0) == {"segmenter": {"model": "tiny"}, "postprocess": {},
                                                              "image_store": {"images": 0}}
        assert sorted(calls) == ["image_store", "postprocess", "segmenter"]
        with pytest.raises(StageUnavailable) as failed:
            await probe_stages({**healthy, "postprocess": broken}, timeout_s=1.0)
        assert failed.value.stage == "postprocess" and isinstance(failed.value.cause, ConnectionError)
        hung = asyncio.Event()  # never set: an image store that does not answer
        with pytest.raises(StageUnavailable) as failed:
            await probe_stages({**healthy, "image_store": hung.wait}, timeout_s=0.05)
        assert failed.value.stage == "image_store" and isinstance(failed.value.cause, asyncio.TimeoutError)
        # Asked at once, not one after another: a hung stage costs one timeout, whatever the others do.
        started = asyncio.Event()

        async def slow_segmenter():
            started.set()
            await hung.wait()

        async def postprocess_sees_the_segmenter_asked():
            await asyncio.wait_for(started.wait(), 1.0)
            return {}

        with pytest.raises(StageUnavailable) as failed:
            await probe_stages({"segmenter": slow_segmenter, "postprocess": postprocess_sees_the_segmenter_asked},
                               timeout_s=0.2)
        assert failed.value.stage == "segmenter"  # the postprocess probe answered while the segmenter hung

    asyncio.run(scenario())


def segmenter_requests(metrics_url: str, app: str = "background_remover") -> float:
    """Requests the Segmenter replicas of ``app`` processed, from Ray Serve's own counter."""
    total = 0.0
    for family in text_string_to_metric_families(httpx.get(metrics_url, timeout=10).text):
        for sample in family.samples:
            if (sample.name == "ray_serve_deployment_request_counter_total"
                    and sample.labels.get("deployment") == "Segmenter" and sample.labels.get("application") == app):
                total += sample.value
    return total


def settled(metrics_url: str, at_least: float = 0.0) -> float:
    """The counter once it has stopped moving (replicas report it every few seconds)."""
    last, stable_since = segmenter_requests(metrics_url), time.monotonic()
    while time.monotonic() - stable_since < 6.0 or last < at_least:
        time.sleep(1.0)
        now = segmenter_requests(metrics_url)
        if now != last:
            last, stable_since = now, time.monotonic()
    return last


@pytest.mark.e2e
def test_a_flood_of_health_checks_costs_the_segmenter_a_few_probes(app_url, metrics_url):
    from deployments.ingress import HEALTH_MAX_AGE_S

    data = jpeg(160, 120, seed=91)
    upload = httpx.post(app_url + "/v1/images", files={"image": ("p.jpg", data, "image/jpeg")}, timeout=120)
    assert upload.status_code == 200, upload.text
    image_id = upload.json()["image_id"]
    before = settled(metrics_url, at_least=1)  # the warm-up call has been counted

    async def flood():
        limits = httpx.Limits(max_connections=600, max_keepalive_connections=600)
        async with httpx.AsyncClient(base_url=app_url, timeout=120, limits=limits) as client:
            checks = [client.get("/healthz") for _ in range(500)]
            click = client.post("/v1/cutout", data={"image_id": image_id, "points": json.dumps([[80, 60]])})
            started = time.monotonic()
            answers = await asyncio.gather(click, *checks)
            return answers[0], answers[1:], time.monotonic() - started

    click, checks, elapsed = asyncio.run(flood())
    assert click.status_code == 200, click.text  # the paying click is served during the flood
    statuses = [r.status_code for r in checks]
    # Past the Ingress's queue bound Serve's proxy sheds some of them with its own 503 + Retry-After.
    assert set(statuses) <= {200, 503} and statuses.count(200) >= 250, {s: statuses.count(s) for s in set(statuses)}
    assert all("retry-after" in r.headers for r in checks if r.status_code == 503)
    healthy = next(r for r in checks if r.status_code == 200).json()
    assert healthy["stages"] == {"segmenter": "ok", "postprocess": "ok", "image_store": "ok"}, healthy
    after = settled(metrics_url, at_least=before + 1)
    # Each ingress replica probes at most once per HEALTH_MAX_AGE_S (plus one at each end); the click is one call.
    ingress_replicas = 2
    bound = 1 + ingress_replicas * (elapsed / HEALTH_MAX_AGE_S + 2)
    spent = after - before
    report("health", f"500 concurrent /healthz + 1 click in {elapsed:.1f} s: {statuses.count(200)} x 200, "
                     f"{statuses.count(503)} x 503 (proxy queue full); {spent:.0f} segmenter calls (bound {bound:.0f})")
    assert 1 <= spent <= bound
