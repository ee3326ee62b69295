"""``bgremove bench``: latency, throughput and overhead of the graph against the old single-process design.

Everything is measured in one run on the same images and model and printed as one JSON object:

* the graph over HTTP (started here, or ``--url``): first clicks (each on a new photo, so the encoder runs),
  repeat clicks (``image_id`` of an uploaded photo, so only the mask decoder runs), per photo size and
  concurrency, with the stage times the service reports in ``Server-Timing``;
* the baseline, the replaced service's design in this process: PIL decode, ``SAM2ImagePredictor.set_image``
  + ``predict`` per request, mask to RGBA PNG at Pillow's default compression;
* ``--segmenter``: the segmenter class alone (first click, repeat click, batch of 8) and sam2's predictor
  on the same model (the floor); ``--precision fp32,fp16,bf16``: latency and mask IoU against FP32.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import os
import platform
import statistics
import sys
import time
from typing import Any

import numpy as np

from .samples import jpeg, photo

PRIMARY_SIZE = "1024x768"


def percentiles(values: list[float]) -> dict[str, float]:
    if not values:
        return {}
    ordered = sorted(values)
    pick = lambda q: ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]
    return {"p50": round(statistics.median(ordered), 2), "p90": round(pick(0.9), 2), "p99": round(pick(0.99), 2),
            "mean": round(statistics.fmean(ordered), 2), "n": len(ordered)}


def parse_size(text: str) -> tuple[int, int]:
    width, height = (int(v) for v in text.lower().split("x"))
    return width, height


def server_timing(header: str) -> dict[str, float]:
    timings = {}
    for part in header.split(","):
        name, _, rest = part.strip().partition(";")
        if rest.startswith("dur="):
            timings[name] = float(rest[4:])
    return timings


def device_name(device: str) -> str:
    import torch

    if device != "cpu" and torch.cuda.is_available():
        return torch.cuda.get_device_name(0)
    return f"cpu ({platform.processor() or platform.machine()}, {os.cpu_count()} cores)"


# -- the old design -----------------------------------------------------------------------------------------------

class Baseline:
    """The replaced single-process service: decode, set_image + predict, RGBA PNG with Pillow's defaults."""

    def __init__(self, model: str, checkpoint: str, device: str, seed: int = 0):
        import torch
        from sam2.sam2_image_predictor import SAM2ImagePredictor

        from deployments.sam_model import build_model, resolve_device, resolve_precision
        from deployments.settings import SegmenterConfig

        config = SegmenterConfig(model=model, checkpoint=checkpoint, device=device, seed=seed)
        self.device = resolve_device(device)
        self.dtype = resolve_precision("auto", self.device)
        self.predictor = SAM2ImagePredictor(build_model(config, self.device, progress=False))
        torch.set_num_threads(os.cpu_count() or 1)

    def __call__(self, data: bytes, point: tuple[float, float]) -> bytes:
        import torch
        from PIL import Image

        rgb = np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))
        with torch.autocast(self.device.type, dtype=self.dtype or torch.float32, enabled=self.dtype is not None):
            self.predictor.set_image(rgb)
            masks, scores, _ = self.predictor.predict(np.array([point]), np.array([1]), multimask_output=True)
        alpha = (masks[int(np.argmax(scores))] > 0).astype(np.uint8) * 255
        buffer = io.BytesIO()
        Image.fromarray(np.dstack([rgb, alpha])).save(buffer, format="PNG")
        return buffer.getvalue()

    def time_first_clicks(self, photos: list[bytes], point_of) -> list[float]:
        self(photos[0], point_of(photos[0]))  # warm-up, not counted
        times = []
        for data in photos:
            start = time.perf_counter()
            self(data, point_of(data))
            times.append((time.perf_counter() - start) * 1000)
        return times


# -- the graph over HTTP ------------------------------------------------------------------------------------------

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

    async def repeat_click(self, image_id: str, points, labels, mask_only: bool = False) -> tuple[float, dict]:
        start = time.perf_counter()
        fields = {"image_id": image_id, "points": json.dumps(points), "labels": json.dumps(labels)}
        if mask_only:
            fields["mask_only"] = "true"
        response = await self.client.post(f"{self.url}/v1/cutout", data=fields)
        return self._result(response, start)

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


def stage_medians(results: list[tuple[float, dict]]) -> dict[str, float]:
    names = {name for _, timings in results for name in timings if name not in ("cache_hit", "image_id")}
    return {name: round(statistics.median(t[name] for _, t in results if name in t), 2) for name in sorted(names)}


def centre(width: int, height: int) -> list[float]:
    return [width / 2, height / 2]


async def bench_graph(url: str, sizes: list[tuple[int, int]], first_clicks: int, repeat_clicks: int,
                      concurrency: list[int], seed: int) -> dict[str, Any]:
    client = GraphClient(url)
    report: dict[str, Any] = {"sizes": {}, "concurrency": {}}
    try:
        # Warm every stage (model kernels, connections) on a photo that is not measured.
        await client.first_click(jpeg(*sizes[0], seed=seed + 999), centre(*sizes[0]))
        width, height = sizes[0]
        image_id = await client.upload(jpeg(width, height, seed=seed + 77))
        # A keep click and an exclude click, the exclude point moving a pixel each time (so no two are alike).
        clicks = [([centre(width, height), [width * 0.1 + i, height * 0.1]], [1, 0]) for i in range(repeat_clicks)]
        # The primary size in rounds: a first click on a new photo, then a share of the repeat clicks on the
        # uploaded one; the same again with mask-only answers (what the web page asks for on each click). The
        # medians come from the same minutes, so their ratios hold on a machine whose speed drifts (this shared
        # 2-core VM drifted by 20% between runs).
        photos = [jpeg(width, height, seed=seed + i) for i in range(first_clicks)]
        mask_photos = [jpeg(width, height, seed=seed + 500 + i) for i in range(first_clicks)]
        firsts: dict[bool, list[tuple[float, dict]]] = {False: [], True: []}
        repeats: dict[bool, list[tuple[float, dict]]] = {False: [], True: []}
        for index, photo_pair in enumerate(zip(photos, mask_photos)):
            share = clicks[index * len(clicks) // len(photos):(index + 1) * len(clicks) // len(photos)]
            for mask_only, data in zip((False, True), photo_pair):
                firsts[mask_only].append(await client.first_click(data, centre(width, height), mask_only))
                for points, labels in share:
                    repeats[mask_only].append(await client.repeat_click(image_id, points, labels, mask_only))
        report["sizes"][f"{width}x{height}"] = {"first_click_ms": percentiles([r[0] for r in firsts[False]]),
                                                "stages_ms": stage_medians(firsts[False])}
        report["first_click_mask_only_ms"] = percentiles([r[0] for r in firsts[True]])
        for mask_only, key in ((False, "repeat_click"), (True, "repeat_click_mask_only")):
            results = repeats[mask_only]
            report[key + "_ms"] = percentiles([r[0] for r in results])
            report[key + "_stages_ms"] = stage_medians(results)
            report[key + "_cache_hit_rate"] = round(sum(r[1]["cache_hit"] for r in results) / len(results), 3)

        for index, (width, height) in enumerate(sizes[1:], start=1):
            photos = [jpeg(width, height, seed=seed + 1000 * index + i) for i in range(first_clicks)]
            results, _ = await run_concurrently(
                [lambda d=d: client.first_click(d, centre(width, height)) for d in photos], 1)
            report["sizes"][f"{width}x{height}"] = {
                "first_click_ms": percentiles([r[0] for r in results]), "stages_ms": stage_medians(results)}

        width, height = sizes[0]
        for level in concurrency:
            photos = [jpeg(width, height, seed=seed + 5000 + 100 * level + i) for i in range(max(2 * level, 4))]
            results, wall = await run_concurrently(
                [lambda d=d: client.first_click(d, centre(width, height)) for d in photos], level)
            repeat_ids = await asyncio.gather(*(client.upload(jpeg(width, height, seed=seed + 9000 + 100 * level + i))
                                                for i in range(level)))
            repeats, repeat_wall = await run_concurrently(
                [lambda i=i: client.repeat_click(repeat_ids[i % level], *clicks[i % len(clicks)])
                 for i in range(max(8 * level, 8))], level)
            report["concurrency"][str(level)] = {
                "first_click_ms": percentiles([r[0] for r in results]),
                "first_click_rps": round(len(results) / wall, 3),
                "repeat_click_ms": percentiles([r[0] for r in repeats]),
                "repeat_click_rps": round(len(repeats) / repeat_wall, 3),
            }
    finally:
        await client.close()
    return report


# -- affinity routing ---------------------------------------------------------------------------------------------

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

    from .app import compose
    from .cli import free_port
    from .local_ray import init_local_ray
    from .config import AppArgs

    port = free_port()
    init_local_ray(num_cpus=max(16, os.cpu_count() or 1), include_dashboard=False, log_to_driver=False)
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    app_args = AppArgs(model=args.model, checkpoint=args.checkpoint, device=args.device, embedding_cache_mb=2048)
    report = {"users": users, "clicks_per_user": clicks, "segmenter_replicas": replicas, "routers": {}}
    size = parse_size(args.sizes.split(",")[0])
    for name, router in ROUTERS.items():
        options = {"Segmenter": {"num_replicas": replicas, "request_router_config": RequestRouterConfig(**router)}}
        serve.run(compose(app_args, options), name=name, route_prefix=f"/{name}")

        async def main():
            client = GraphClient(f"http://127.0.0.1:{port}/{name}")
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


# -- segmenter alone ----------------------------------------------------------------------------------------------

def bench_segmenter(model: str, checkpoint: str, device: str, size: tuple[int, int], repeats: int,
                    precisions: list[str]) -> dict[str, Any]:
    from deployments.messages import Prompt
    from deployments.postprocess import choose_mask, upsample_logits
    from deployments.segmenter import Segmenter
    from deployments.settings import SegmenterConfig

    width, height = size
    images = [photo(width, height, seed=100 + i) for i in range(max(repeats, 8))]
    click = Prompt(np.array([centre(width, height)], np.float32), np.array([1], np.int32))
    report: dict[str, Any] = {"size": f"{width}x{height}", "precisions": {}}
    reference_masks: list[np.ndarray] = []
    shared_model = None
    for variant in precisions:
        precision, _, extra = variant.partition("+")  # "fp16+graph": FP16 with the CUDA-graph encoder
        segmenter = Segmenter(SegmenterConfig(model=model, checkpoint=checkpoint, device=device, precision=precision,
                                              cuda_graphs=extra == "graph"), model=shared_model, progress=False)
        shared_model = segmenter.model
        segmenter.segment("warm-up", images[-1], click)

        first, repeat, masks = [], [], []
        for i in range(repeats):
            start = time.perf_counter()
            result = segmenter.segment(f"{variant}-{i}", images[i], click)  # encoder + decoder, synced
            first.append((time.perf_counter() - start) * 1000)
            start = time.perf_counter()
            segmenter.segment(f"{variant}-{i}", None, click)  # cached embedding: decoder only
            repeat.append((time.perf_counter() - start) * 1000)
            masks.append((upsample_logits(result.logits[choose_mask(result.scores)], height, width) > 0).numpy())
        start = time.perf_counter()
        segmenter.encode(images[:8])
        segmenter._synchronize()
        batch8 = (time.perf_counter() - start) * 1000 / 8
        entry = {"first_click_ms": percentiles(first), "repeat_click_ms": percentiles(repeat),
                 "encoder_per_image_batch8_ms": round(batch8, 2)}
        if extra == "graph":
            entry["cuda_graphs"] = sorted(segmenter._graphs)
            entry["graph_capture_ms"] = segmenter.graph_capture_ms
        if not reference_masks:
            reference_masks = masks
            entry["floor_set_image_predict_ms"] = percentiles(
                segmenter.reference_timings(images[0], tuple(centre(width, height)), repeats))
        else:
            ious = [float((a & b).sum() / max(1, (a | b).sum())) for a, b in zip(masks, reference_masks)]
            entry["mask_iou_vs_first"] = {"min": round(min(ious), 4), "mean": round(statistics.fmean(ious), 4)}
        report["precisions"][variant] = entry
    report["gpu_memory_peak_mb"] = _gpu_peak_mb()
    return report


def _gpu_peak_mb() -> float:
    import torch

    return round(torch.cuda.max_memory_allocated() / 2**20, 1) if torch.cuda.is_available() else 0.0


# -- running the graph here ---------------------------------------------------------------------------------------

def start_graph(args: argparse.Namespace) -> str:
    from ray import serve

    from .app import APP_NAME, compose
    from .config import AppArgs
    from .cli import free_port
    from .local_ray import init_local_ray

    port = free_port()
    env_vars = dict(item.split("=", 1) for item in args.serve_env)  # e.g. Serve's latency flags, replicas only
    init_local_ray(num_cpus=max(8, os.cpu_count() or 1), include_dashboard=False, log_to_driver=False,
                   runtime_env={"env_vars": env_vars} if env_vars else None)
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    options: dict[str, dict] = {"Segmenter": {"num_replicas": args.segmenter_replicas}}
    gpu = args.device != "cpu" and _cuda_available()
    if gpu:
        options["Segmenter"]["ray_actor_options"] = {"num_cpus": 1, "num_gpus": 1}
    app_args = AppArgs(model=args.model, checkpoint=args.checkpoint, device=args.device, cuda_graphs=args.cuda_graphs,
                       postprocess_threads=args.postprocess_threads)
    serve.run(compose(app_args, options), name=APP_NAME, route_prefix="/")
    return f"http://127.0.0.1:{port}"


def _cuda_available() -> bool:
    import torch

    return torch.cuda.is_available()


def plot(report: dict[str, Any], path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    levels = sorted(report["concurrency"], key=int)
    fig, ax = plt.subplots(figsize=(6, 4))
    for kind in ("first_click_ms", "repeat_click_ms"):
        for q, style in (("p50", "-o"), ("p90", "--")):
            ax.plot([int(c) for c in levels], [report["concurrency"][c][kind][q] for c in levels], style,
                    label=f"{kind.replace('_ms', '')} {q}")
    ax.set_xlabel("concurrent clients")
    ax.set_ylabel("latency (ms)")
    ax.set_yscale("log")
    ax.set_title(f"{report['model']} on {report['device']}")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def run(args: argparse.Namespace) -> dict[str, Any]:
    sizes = [parse_size(s) for s in args.sizes.split(",")]
    report: dict[str, Any] = {"device": device_name(args.device), "model": args.model,
                              "checkpoint": args.checkpoint, "python": sys.version.split()[0]}
    if args.routing:
        users, clicks = (int(v) for v in args.routing.split("x"))
        report["routing"] = bench_routing(args, users, clicks)
        return report
    if args.batch or args.batch_memory:
        from . import bench_batch

        report["batch" if args.batch else "batch_memory"] = (
            bench_batch.bench_batch(args) if args.batch else bench_batch.bench_memory(args))
        return report
    if args.segmenter:
        precisions = args.precision.split(",") if args.precision else ["auto"]
        report["segmenter"] = bench_segmenter(args.model, args.checkpoint, args.device, sizes[0],
                                              args.first_clicks, precisions)
        return report

    url = args.url or start_graph(args)
    graph = asyncio.run(bench_graph(url, sizes, args.first_clicks, args.repeat_clicks,
                                    [int(c) for c in args.concurrency.split(",")], args.seed))
    report.update(graph)
    primary = f"{sizes[0][0]}x{sizes[0][1]}"
    report["first_click_ms"] = graph["sizes"][primary]["first_click_ms"]
    report["repeat_click_ms"] = graph["repeat_click_ms"]
    top = str(max(int(c) for c in graph["concurrency"]))
    report["throughput_rps"] = {"concurrency": int(top), "first_click": graph["concurrency"][top]["first_click_rps"],
                                "repeat_click": graph["concurrency"][top]["repeat_click_rps"]}
    report["repeat_speedup"] = round(report["first_click_ms"]["p50"] / report["repeat_click_ms"]["p50"], 2)
    report["repeat_speedup_mask_only"] = round(graph["first_click_mask_only_ms"]["p50"]
                                               / graph["repeat_click_mask_only_ms"]["p50"], 2)

    if not args.no_baseline:
        baseline = Baseline(args.model, args.checkpoint, args.device)
        for size in sizes:
            key = f"{size[0]}x{size[1]}"
            photos = [jpeg(*size, seed=args.seed + 1000 * sizes.index(size) + i) for i in range(args.first_clicks)]
            times = baseline.time_first_clicks(photos, lambda _d, s=size: centre(*s))
            ours = graph["sizes"][key]["first_click_ms"]["p50"]
            graph["sizes"][key]["baseline_first_click_ms"] = percentiles(times)
            graph["sizes"][key]["ratio_to_baseline"] = round(ours / statistics.median(times), 3)
        report["baseline_first_click_ms"] = graph["sizes"][primary]["baseline_first_click_ms"]
        report["overhead_ratio"] = graph["sizes"][primary]["ratio_to_baseline"]
    if args.floor and not args.url:
        from ray import serve

        from .app import APP_NAME

        segmenter = serve.get_deployment_handle("Segmenter", APP_NAME)
        times = segmenter.reference_timings.remote(photo(*sizes[0], seed=4242), tuple(centre(*sizes[0])),
                                                   args.first_clicks).result()
        report["floor_in_replica_ms"] = percentiles(times)
        report["first_click_over_floor"] = round(report["first_click_ms"]["p50"] / percentiles(times)["p50"], 3)
    if args.plot:
        plot(report, args.plot)
        report["plot"] = args.plot
    return report


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--url", default=None, help="benchmark a running service instead of starting one here")
    parser.add_argument("--model", default="tiny", choices=["tiny", "small", "base_plus", "large"])
    parser.add_argument("--checkpoint", default="random", help="weights do not change the cost; default random")
    parser.add_argument("--device", default="auto", choices=["auto", "cuda", "cpu"])
    parser.add_argument("--sizes", default="1024x768,4032x3024", help="photo sizes; the first is the primary one")
    parser.add_argument("--first-clicks", type=int, default=7, help="first clicks per size (each a new photo)")
    parser.add_argument("--repeat-clicks", type=int, default=42)
    parser.add_argument("--concurrency", default="1,4", help="client concurrency levels")
    parser.add_argument("--segmenter-replicas", type=int, default=1)
    parser.add_argument("--cuda-graphs", action="store_true", help="capture the encoder as a CUDA graph")
    parser.add_argument("--postprocess-threads", type=int, default=0)
    parser.add_argument("--serve-env", action="append", default=[], metavar="KEY=VALUE",
                        help="environment for the graph's replicas, e.g. RAY_SERVE_RUN_ROUTER_IN_SEPARATE_LOOP=0")
    parser.add_argument("--no-baseline", action="store_true", help="skip the old single-process design")
    parser.add_argument("--floor", action="store_true", help="also time sam2's predictor inside the replica")
    parser.add_argument("--segmenter", action="store_true", help="benchmark the segmenter class alone")
    parser.add_argument("--routing", default=None, metavar="USERSxCLICKS",
                        help="compare routers on 2 segmenter replicas, e.g. 20x5")
    parser.add_argument("--precision", default=None,
                        help="with --segmenter: e.g. fp32,fp16,bf16,fp16+graph (the first is the IoU reference)")
    parser.add_argument("--plot", default=None, help="write a latency-vs-concurrency PNG here")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--output", default=None, help="also write the JSON here")
    from .bench_batch import add_arguments as add_batch_arguments

    add_batch_arguments(parser)


def main(args: argparse.Namespace) -> int:
    report = run(args)
    text = json.dumps(report, indent=2)
    print(text)
    if args.output:
        with open(args.output, "w") as f:
            f.write(text + "\n")
    return 0
