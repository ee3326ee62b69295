"""The model floor the graph's overhead is measured against: sam2's own SAM2ImagePredictor on the very model and
device a replica serves with (benchmarks only)."""

from __future__ import annotations

import time

import numpy as np
import torch


def reference_timings(segmenter, image: np.ndarray, point: tuple[float, float], repeats: int = 10) -> list[float]:
    """Milliseconds of set_image + predict, ``repeats`` times after one warm-up pass."""
    from sam2.sam2_image_predictor import SAM2ImagePredictor

    predictor = SAM2ImagePredictor(segmenter.model)
    times = []
    for _ in range(repeats + 1):  # the first pass warms up kernels and clocks
        start = time.perf_counter()
        with torch.inference_mode(), segmenter.autocast():
            predictor.set_image(image)
            predictor.predict(np.array([point]), np.array([1]), multimask_output=True)
        if segmenter.device.type == "cuda":
            torch.cuda.synchronize(segmenter.device)
        times.append((time.perf_counter() - start) * 1000)
    return times[1:]
