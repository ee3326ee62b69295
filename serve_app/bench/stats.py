"""What every scenario computes from its timings: percentiles, stage medians from ``Server-Timing``, sizes."""

from __future__ import annotations

import os
import platform
import statistics


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


def centre(width: int, height: int) -> list[float]:
    return [width / 2, height / 2]


def server_timing(header: str) -> dict[str, float]:
    timings = {}
    for part in header.split(","):
        name, _, rest = part.strip().partition(";")
        if rest.startswith("dur="):
            timings[name] = float(rest[4:])
    return timings


def stage_medians(results: list[tuple[float, dict]]) -> dict[str, float]:
    names = {name for _, timings in results for name in timings if name not in ("cache_hit", "image_id")}
    return {name: round(statistics.median(t[name] for _, t in results if name in t), 2) for name in sorted(names)}


def device_name(device: str) -> str:
    import torch

    if device != "cpu" and torch.cuda.is_available():
        return torch.cuda.get_device_name(0)
    return f"cpu ({platform.processor() or platform.machine()}, {os.cpu_count()} cores)"
