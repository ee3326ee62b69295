"""``bgremove bench`` (``graph``, the default): the graph over HTTP, started here or at ``--url``.

First clicks (each on a new photo, so the encoder runs) and repeat clicks (``image_id`` of an uploaded photo, so
only the mask decoder runs), per photo size and concurrency, with the stage times the service reports in
``Server-Timing``; the baseline (``baseline.py``) on the same photos; with ``--overhead`` also the echo app
(``echo.py``) in the same rounds and each click's overhead (``overhead.py``).
"""

from __future__ import annotations

import argparse
import asyncio
from typing import Any

from ..samples import jpeg, photo
from .client import GraphClient, run_concurrently
from .stats import centre, parse_size, percentiles, stage_medians


async def bench_graph(url: str, sizes: list[tuple[int, int]], first_clicks: int, repeat_clicks: int,
                      concurrency: list[int], seed: int, echo_url: str | None = None,
                      chain_url: str | None = None) -> dict[str, Any]:
    client = GraphClient(url)
    echo = GraphClient(echo_url) if echo_url else None
    chain = GraphClient(chain_url) if chain_url else None
    report: dict[str, Any] = {"sizes": {}, "concurrency": {}}
    try:
        # Warm every stage (model kernels, connections) on a photo that is not measured.
        await client.first_click(jpeg(*sizes[0], seed=seed + 999), centre(*sizes[0]))
        width, height = sizes[0]
        image_id = await client.upload(jpeg(width, height, seed=seed + 77))
        # A keep click and an exclude click, the exclude point moving a pixel each time (so no two are alike).
        clicks = [([centre(width, height), [width * 0.1 + i, height * 0.1]], [1, 0]) for i in range(repeat_clicks)]
        # The primary size in rounds: a first click on a new photo, then a share of the repeat clicks on the
        # uploaded one; the same again with mask-only answers, repeat clicks asking for the preview (what the web
        # page asks for on each click), then the echo app and the chain app on the same requests. The medians come
        # from the same minutes, so their ratios hold on a machine whose speed drifts.
        photos = [jpeg(width, height, seed=seed + i) for i in range(first_clicks)]
        mask_photos = [jpeg(width, height, seed=seed + 500 + i) for i in range(first_clicks)]
        firsts: dict[bool, list[tuple[float, dict]]] = {False: [], True: []}
        repeats: dict[bool, list[tuple[float, dict]]] = {False: [], True: []}
        previews: list[tuple[float, dict]] = []
        echoes: list[tuple[float, dict]] = []
        chained: list[tuple[float, dict]] = []
        for index, photo_pair in enumerate(zip(photos, mask_photos)):
            share = clicks[index * len(clicks) // len(photos):(index + 1) * len(clicks) // len(photos)]
            for mask_only, data in zip((False, True), photo_pair):
                firsts[mask_only].append(await client.first_click(data, centre(width, height), mask_only))
                for points, labels in share:
                    repeats[mask_only].append(await client.repeat_click(image_id, points, labels, mask_only))
            for points, labels in share:
                previews.append(await client.repeat_click(image_id, points, labels, preview=True))
            for points, labels in share if echo else ():
                echoes.append(await echo.repeat_click(image_id, points, labels))
            for points, labels in share if chain else ():
                chained.append(await chain.repeat_click(image_id, points, labels))
        report["sizes"][f"{width}x{height}"] = {"first_click_ms": percentiles([r[0] for r in firsts[False]]),
                                                "stages_ms": stage_medians(firsts[False])}
        report["first_click_mask_only_ms"] = percentiles([r[0] for r in firsts[True]])
        for results, key in ((repeats[False], "repeat_click"), (repeats[True], "repeat_click_mask_only"),
                             (previews, "repeat_click_preview")):
            report[key + "_ms"] = percentiles([r[0] for r in results])
            report[key + "_stages_ms"] = stage_medians(results)
            report[key + "_cache_hit_rate"] = round(sum(r[1]["cache_hit"] for r in results) / len(results), 3)
        if echo:
            from .overhead import overhead_fields

            report.update(overhead_fields({"repeat_click": repeats[False], "repeat_click_mask_only": repeats[True],
                                           "repeat_click_preview": previews, "first_click": firsts[False],
                                           "first_click_mask_only": firsts[True]},
                                          echoes, chained))

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
            repeats_at, repeat_wall = await run_concurrently(
                [lambda i=i: client.repeat_click(repeat_ids[i % level], *clicks[i % len(clicks)])
                 for i in range(max(8 * level, 8))], level)
            report["concurrency"][str(level)] = {
                "first_click_ms": percentiles([r[0] for r in results]),
                "first_click_rps": round(len(results) / wall, 3),
                "repeat_click_ms": percentiles([r[0] for r in repeats_at]),
                "repeat_click_rps": round(len(repeats_at) / repeat_wall, 3),
            }
    finally:
        await client.close()
        for other in (echo, chain):
            if other:
                await other.close()
    return report


async def _repeat_answer(url: str, size: tuple[int, int], seed: int) -> bytes:
    """A repeat click's answer at the primary size: what the echo and chain apps send back."""
    client = GraphClient(url)
    try:
        image_id = await client.upload(jpeg(*size, seed=seed + 78))
        return await client.repeat_answer(image_id, [centre(*size)], [1])
    finally:
        await client.close()


def run_graph(args: argparse.Namespace, report: dict[str, Any]) -> None:
    """The graph scenario at ``--url``, or on a graph started here."""
    from .local_graph import start_graph

    if args.overhead and args.url:
        raise SystemExit("bench overhead starts the graph here (its echo and chain apps run behind the same proxy): "
                         "drop --url")
    measure_graph(args.url or start_graph(args), args, report)


def measure_graph(url: str, args: argparse.Namespace, report: dict[str, Any]) -> None:
    """The graph at ``url``, its summary fields and, as the flags ask, the baseline, the floor (a graph started
    here) and the echo and chain apps (deployed on the Serve instance this process is connected to)."""
    sizes = [parse_size(s) for s in args.sizes.split(",")]
    echo_url = chain_url = None
    if args.overhead:
        from . import chain, echo

        answer = asyncio.run(_repeat_answer(url, sizes[0], args.seed))
        echo.deploy_echo(answer)
        chain.deploy_chain(answer)
        echo_url, chain_url = url + echo.ROUTE_PREFIX, url + chain.ROUTE_PREFIX
    graph = asyncio.run(bench_graph(url, sizes, args.first_clicks, args.repeat_clicks,
                                    [int(c) for c in args.concurrency.split(",")], args.seed, echo_url, chain_url))
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
    report["repeat_speedup_preview"] = round(graph["first_click_mask_only_ms"]["p50"]
                                             / graph["repeat_click_preview_ms"]["p50"], 2)
    if not args.no_baseline:
        from .baseline import compare

        compare(report, sizes, args.model, args.checkpoint, args.device, args.first_clicks, args.seed)
    if args.floor and not args.url:
        _floor(report, sizes[0], args.first_clicks)
    if args.plot:
        from .plot import plot

        plot(report, args.plot)
        report["plot"] = args.plot


def _floor(report: dict[str, Any], size: tuple[int, int], repeats: int) -> None:
    """sam2's predictor timed inside the segmenter replica: the model's floor under the graph's first click."""
    from ray import serve

    from ..app import APP_NAME

    segmenter = serve.get_deployment_handle("Segmenter", APP_NAME)
    times = segmenter.reference_timings.remote(photo(*size, seed=4242), tuple(centre(*size)), repeats).result()
    report["floor_in_replica_ms"] = percentiles(times)
    report["first_click_over_floor"] = round(report["first_click_ms"]["p50"] / percentiles(times)["p50"], 3)
