"""Affinity across replicas: with 2 segmenter replicas, repeat clicks on an image land on the replica that
holds its embedding (Serve's consistent-hash router over the image id as session id, strict: no fallback).
Serve's default router, run in the same test on the same traffic, is the negative control: it must miss."""

import asyncio
import json
from contextlib import contextmanager

import httpx
import pytest

from reliability import report
from serve_app.samples import jpeg

pytestmark = pytest.mark.e2e

CLICKS = 5  # per person: a first click that uploads the photo, then four by image_id
# Sixteen people: the chance that the hash ring puts every photo on one replica (and the "both replicas hold
# embeddings" check fails for no fault of the router) is 2 * 2**-16.
USERS = 16
CONTROL_USERS = 8  # the control only has to miss: fewer people, fewer encoder passes


@contextmanager
def routing_app(serve_instance, name: str, segmenter_options: dict):
    from ray import serve

    from serve_app.app import bind_graph
    from serve_app.config import AppArgs

    from conftest import TEST_ARGS

    # The people's first clicks queue on two CPU replicas (seconds each): allow for it in the deadline.
    args = AppArgs(**{**TEST_ARGS, "embedding_cache_mb": 1024, "request_timeout_s": 600})
    serve.run(bind_graph(args, {"Segmenter": {"num_replicas": 2, **segmenter_options}}), name=name,
              route_prefix=f"/{name}")
    try:
        yield f"{serve_instance}/{name}"
    finally:
        serve.delete(name)


async def user(client: httpx.AsyncClient, url: str, seed: int) -> list[str]:
    """One person: uploads a photo with a first click, then clicks four more times on it by image_id."""
    data = jpeg(320, 240, seed=1000 + seed)
    first = await client.post(url + "/v1/cutout", files={"image": ("p.jpg", data, "image/jpeg")},
                              data={"points": "[[160, 120]]"})
    assert first.status_code == 200, first.text
    assert first.headers["X-Embedding-Cache"] == "miss"  # a new photo: the encoder ran on some replica
    image_id = first.headers["X-Image-Id"]
    outcomes = []
    for click in range(1, CLICKS):
        response = await client.post(url + "/v1/cutout", data={
            "image_id": image_id, "points": json.dumps([[160, 120], [10 * click, 10]]), "labels": "[1, 0]"})
        assert response.status_code == 200, response.text
        outcomes.append(response.headers["X-Embedding-Cache"])
    return outcomes


def repeat_click_outcomes(url: str, users: int) -> list[str]:
    """``users`` people, 8 of them clicking at the same time; every repeat click's X-Embedding-Cache."""
    async def main():
        at_once = asyncio.Semaphore(8)

        async def one(client, seed):
            async with at_once:
                return await user(client, url, seed)

        async with httpx.AsyncClient(timeout=600) as client:
            return await asyncio.gather(*(one(client, seed) for seed in range(users)))

    outcomes = [o for per_user in asyncio.run(main()) for o in per_user]
    assert len(outcomes) == users * (CLICKS - 1)
    return outcomes


def embeddings_per_replica(app: str) -> dict[str, int]:
    """Each segmenter replica's embedding-cache entries, from the replicas themselves: stats calls under many
    session ids, which the hash ring spreads over both replicas (each answer names its replica)."""
    from ray import serve

    handle = serve.get_deployment_handle("Segmenter", app_name=app)
    held = {}
    for probe in range(48):
        stats = handle.options(session_id=f"stats-probe-{probe}").stats.remote().result(timeout_s=120)
        held[stats["replica"]] = stats["entries"]
    return held


def test_repeat_clicks_hit_the_replica_holding_the_embedding(serve_instance):
    from ray.serve.config import RequestRouterConfig

    with routing_app(serve_instance, "routing", {}) as url:  # the graph's own router (serve_app/app.py)
        outcomes = repeat_click_outcomes(url, USERS)
        rate = outcomes.count("hit") / len(outcomes)
        held = embeddings_per_replica("routing")
    with routing_app(serve_instance, "routing_control", {"request_router_config": RequestRouterConfig()}) as url:
        control = repeat_click_outcomes(url, CONTROL_USERS)  # Serve's default router: power of two choices
        control_rate = control.count("hit") / len(control)
    report("routing", f"consistent hash (strict): {outcomes.count('hit')}/{len(outcomes)} repeat clicks hit the "
                      f"cache; embeddings per replica {sorted(held.values())}; Serve's default router (control): "
                      f"{control.count('hit')}/{len(control)} ({control_rate:.2f})")
    assert rate == 1.0, outcomes
    # Every photo encoded once, on one replica, and both replicas hold some.
    assert sum(held.values()) == USERS and len(held) == 2 and all(held.values()), held
    assert control_rate < 1.0, "the control did not miss: this traffic cannot tell a router that keeps affinity"
