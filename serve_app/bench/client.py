"""The HTTP driver: the graph's routes as a client calls them, timed from the client, with the stage times the
service reports in ``Server-Timing``."""

from __future__ import annotations

import asyncio
import json
import time

from .stats import server_timing


class GraphClient:
    def __init__(self, url: str, timeout_s: float = 300.0):
        import httpx

        self.url = url.rstrip("/")
        self.client = httpx.AsyncClient(timeout=timeout_s, limits=httpx.Limits(max_connections=256))

    async def first_click(self, data: bytes, point, mask_only: bool = False) -> tuple[float, dict]:
        """The old service's route (a cut-out), or with mask_only the web page's first click (/v1/cutout)."""
        start = time.perf_counter()
        fields = {"points": json.dumps([point])}
        if mask_only:
            fields["mask_only"] = "true"
        route = "/v1/cutout" if mask_only else "/background-removal/remove"
        response = await self.client.post(f"{self.url}{route}", files={"image": ("photo.jpg", data, "image/jpeg")},
                                          data=fields)
        return self._result(response, start)

    async def upload(self, data: bytes) -> str:
        response = await self.client.post(f"{self.url}/v1/images", files={"image": ("photo.jpg", data, "image/jpeg")})
        response.raise_for_status()
        return response.json()["image_id"]

    async def repeat_click(self, image_id: str, points, labels, mask_only: bool = False,
                           preview: bool = False) -> tuple[float, dict]:
        start = time.perf_counter()
        return self._result(await self._post_click(image_id, points, labels, mask_only, preview), start)

    async def repeat_answer(self, image_id: str, points, labels) -> bytes:
        """The body a repeat click is answered with (what an echo of it should send back)."""
        response = await self._post_click(image_id, points, labels, False)
        response.raise_for_status()
        return response.content

    async def _post_click(self, image_id: str, points, labels, mask_only: bool, preview: bool = False):
        fields = {"image_id": image_id, "points": json.dumps(points), "labels": json.dumps(labels)}
        if mask_only:
            fields["mask_only"] = "true"
        if preview:  # the web page's click
            fields["preview"] = "true"
        return await self.client.post(f"{self.url}/v1/cutout", data=fields)

    @staticmethod
    def _result(response, start: float) -> tuple[float, dict]:
        elapsed = (time.perf_counter() - start) * 1000
        if response.status_code != 200:
            raise RuntimeError(f"{response.status_code}: {response.text[:300]}")
        timings = server_timing(response.headers.get("Server-Timing", ""))
        timings["cache_hit"] = response.headers.get("X-Embedding-Cache") == "hit"
        timings["image_id"] = response.headers.get("X-Image-Id", "")
        return elapsed, timings

    async def close(self):
        await self.client.aclose()


async def run_concurrently(jobs, concurrency: int) -> tuple[list[tuple[float, dict]], float]:
    """Runs coroutine factories with at most `concurrency` in flight; returns results and wall seconds."""
    semaphore = asyncio.Semaphore(concurrency)

    async def one(job):
        async with semaphore:
            return await job()

    start = time.perf_counter()
    results = await asyncio.gather(*(one(job) for job in jobs))
    return list(results), time.perf_counter() - start
