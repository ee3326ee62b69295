"""``bgremove bench segmenter``: the segmenter class alone (first click, repeat click, batch of 8) and sam2's
predictor on the same model (the floor); with ``--precision fp32,fp16,bf16``: latency and mask IoU against the
first precision listed."""

from __future__ import annotations

import statistics
import time
from typing import Any

import numpy as np

from ..samples import photo
from .stats import centre, percentiles


def bench_segmenter(model: str, checkpoint: str, device: str, size: tuple[int, int], repeats: int,
                    precisions: list[str]) -> dict[str, Any]:
    from deployments.edges import upsample_logits
    from deployments.messages import Prompt
    from deployments.preview import choose_mask
    from deployments.segmenter import Segmenter
    from deployments.segmenter.floor import reference_timings
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
        _synchronize(segmenter.device)
        batch8 = (time.perf_counter() - start) * 1000 / 8
        entry = {"first_click_ms": percentiles(first), "repeat_click_ms": percentiles(repeat),
                 "encoder_per_image_batch8_ms": round(batch8, 2)}
        if extra == "graph":
            entry["cuda_graphs"] = segmenter.graphs.batch_sizes
            entry["graph_capture_ms"] = segmenter.graphs.capture_ms
        if not reference_masks:
            reference_masks = masks
            entry["floor_set_image_predict_ms"] = percentiles(
                reference_timings(segmenter, images[0], tuple(centre(width, height)), repeats))
        else:
            ious = [float((a & b).sum() / max(1, (a | b).sum())) for a, b in zip(masks, reference_masks)]
            entry["mask_iou_vs_first"] = {"min": round(min(ious), 4), "mean": round(statistics.fmean(ious), 4)}
        report["precisions"][variant] = entry
    report["gpu_memory_peak_mb"] = _gpu_peak_mb()
    return report


def _synchronize(device) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _gpu_peak_mb() -> float:
    import torch

    return round(torch.cuda.max_memory_allocated() / 2**20, 1) if torch.cuda.is_available() else 0.0
