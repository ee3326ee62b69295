"""The baseline: the replaced single-process service's design, run in this process on the same photos and model
as the graph (PIL decode, ``SAM2ImagePredictor.set_image`` + ``predict`` per request, mask to RGBA PNG at Pillow's
default compression)."""

from __future__ import annotations

import io
import os
import statistics
import time
from typing import Any

import numpy as np

from ..samples import jpeg
from .stats import centre, percentiles


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


def compare(report: dict[str, Any], sizes: list[tuple[int, int]], model: str, checkpoint: str, device: str,
            first_clicks: int, seed: int) -> None:
    """Adds the baseline's first clicks, on the photos the graph had, to the graph's report at each size."""
    baseline = Baseline(model, checkpoint, device)
    for index, size in enumerate(sizes):
        key = f"{size[0]}x{size[1]}"
        photos = [jpeg(*size, seed=seed + 1000 * index + i) for i in range(first_clicks)]
        times = baseline.time_first_clicks(photos, lambda _d, s=size: centre(*s))
        ours = report["sizes"][key]["first_click_ms"]["p50"]
        report["sizes"][key]["baseline_first_click_ms"] = percentiles(times)
        report["sizes"][key]["ratio_to_baseline"] = round(ours / statistics.median(times), 3)
    primary = f"{sizes[0][0]}x{sizes[0][1]}"
    report["baseline_first_click_ms"] = report["sizes"][primary]["baseline_first_click_ms"]
    report["overhead_ratio"] = report["sizes"][primary]["ratio_to_baseline"]
