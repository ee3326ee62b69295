"""Affinity across replicas: with 2 segmenter replicas, repeat clicks on an image land on the replica that
holds its embedding (Serve's consistent-hash router over the image id as session id)."""

import asyncio
import json

import httpx
import pytest

from serve_app.samples import jpeg

pytestmark = pytest.mark.e2e

USERS, CLICKS = 20, 5


@pytest.fixture(scope="module")
def routing_url(serve_instance):
    from ray import serve

    from serve_app.app import compose
    from serve_app.config import AppArgs

    from conftest import TEST_ARGS

    # Twenty people's first clicks queue on two CPU replicas (seconds each): allow for it in the deadline.
    args = AppArgs(**{**TEST_ARGS, "embedding_cache_mb": 1024, "request_timeout_s": 600})
    serve.run(compose(args, {"Segmenter": {"num_replicas": 2}}), name="routing", route_prefix="/routing")
    yield serve_instance + "/routing"
    serve.delete("routing")


async def user(client: httpx.AsyncClient, url: str, seed: int) -> list[str]:
    """One person: uploads a photo with a first click, then clicks four more times on it by image_id."""
    data = jpeg(320, 240, seed=1000 + seed)
    first = await client.post(url + "/v1/cutout", files={"image": ("p.jpg", data, "image/jpeg")},
                              data={"points": "[[160, 120]]"})
    assert first.status_code == 200, first.text
    image_id = first.headers["X-Image-Id"]
    outcomes = []
    for click in range(1, CLICKS):
        response = await client.post(url + "/v1/cutout", data={
            "image_id": image_id, "points": json.dumps([[160, 120], [10 * click, 10]]), "labels": "[1, 0]"})
        assert response.status_code == 200, response.text
        outcomes.append(response.headers["X-Embedding-Cache"])
    return outcomes


def test_repeat_clicks_hit_the_replica_holding_the_embedding(routing_url):
    async def main():
        at_once = asyncio.Semaphore(8)  # 8 people clicking at the same time, 20 in all

        async def one(client, seed):
            async with at_once:
                return await user(client, routing_url, seed)

        async with httpx.AsyncClient(timeout=600) as client:
            return await asyncio.gather(*(one(client, seed) for seed in range(USERS)))

    outcomes = [o for per_user in asyncio.run(main()) for o in per_user]
    rate = outcomes.count("hit") / len(outcomes)
    print(f"\nrepeat clicks: {len(outcomes)}, cache hits: {outcomes.count('hit')}, hit rate: {rate:.3f}")
    assert len(outcomes) == USERS * (CLICKS - 1)
    assert rate >= 0.95
