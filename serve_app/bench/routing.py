"""``bgremove bench routing``: repeat-click cache hit rate and latency of each router on 2 segmenter replicas,
USERS people clicking at once, CLICKS clicks each."""

from __future__ import annotations

import argparse
import asyncio
import os
import time
from typing import Any

from ..samples import jpeg
from .client import GraphClient
from .local_graph import start_serve
from .stats import centre, parse_size, percentiles

ROUTERS = {
    # Serve's default router: power of two choices by queue length, no notion of sessions.
    "pow2": {},
    # Consistent hashing on the session id (the image id); a busy owner's clicks may spill to 2 other replicas.
    "hash_fallback2": {"request_router_class": "ray.serve.experimental.consistent_hash_router.ConsistentHashRouter",
                       "request_router_kwargs": {"num_virtual_nodes": 100, "num_fallback_replicas": 2}},
    # Strict: a busy owner's clicks wait for it (what serve_app.app.SESSION_ROUTER uses).
    "hash_strict": {"request_router_class": "ray.serve.experimental.consistent_hash_router.ConsistentHashRouter",
                    "request_router_kwargs": {"num_virtual_nodes": 100, "num_fallback_replicas": 0}},
}


async def _routing_user(client: GraphClient, seed: int, clicks: int, size: tuple[int, int]) -> list[tuple[float, dict]]:
    """One person: a first click that uploads the photo, then more clicks on it by the id it answered."""
    width, height = size
    _, first = await client.first_click(jpeg(width, height, seed=seed), centre(width, height))
    image_id = first["image_id"]
    results = []
    for click in range(1, clicks):
        results.append(await client.repeat_click(image_id, [centre(width, height), [5.0 * click, 5.0]], [1, 0]))
    return results


def bench_routing(args: argparse.Namespace, users: int, clicks: int, replicas: int = 2) -> dict[str, Any]:
    """Repeat-click cache hit rate and latency of each router, `users` people clicking at once."""
    from ray import serve
    from ray.serve.config import RequestRouterConfig

    from ..app import bind_graph
    from ..config import AppArgs

    url = start_serve(max(16, os.cpu_count() or 1))
    app_args = AppArgs(model=args.model, checkpoint=args.checkpoint, device=args.device, embedding_cache_mb=2048)
    report = {"users": users, "clicks_per_user": clicks, "segmenter_replicas": replicas, "routers": {}}
    size = parse_size(args.sizes.split(",")[0])
    for name, router in ROUTERS.items():
        options = {"Segmenter": {"num_replicas": replicas, "request_router_config": RequestRouterConfig(**router)}}
        serve.run(bind_graph(app_args, options), name=name, route_prefix=f"/{name}")

        async def main():
            client = GraphClient(f"{url}/{name}")
            try:
                start = time.perf_counter()
                per_user = await asyncio.gather(*(_routing_user(client, 7000 + i, clicks, size) for i in range(users)))
                return per_user, time.perf_counter() - start
            finally:
                await client.close()

        per_user, wall = asyncio.run(main())
        repeats = [r for user in per_user for r in user]
        report["routers"][name] = {
            "repeat_cache_hit_rate": round(sum(r[1]["cache_hit"] for r in repeats) / len(repeats), 3),
            "repeat_click_ms": percentiles([r[0] for r in repeats]), "wall_s": round(wall, 1)}
        serve.delete(name)
    return report
