"""The image encoder replayed as recorded CUDA graphs: one launch instead of hundreds of small kernel launches.

One graph per batch size up to 2 (what ``max_ongoing_requests=2`` lets a batch hold). Each capture is checked
against the eager pass; on any failure that batch size stays eager.
"""

from __future__ import annotations

import logging
import time
from typing import Callable

import torch

from .embedding import elapsed_ms

logger = logging.getLogger(__name__)


class EncoderGraphs:
    def __init__(self, encode: Callable[[torch.Tensor], list[torch.Tensor]], autocast: Callable, image_size: int,
                 device: torch.device):
        self._encode, self._autocast, self._size, self._device = encode, autocast, image_size, device
        self._graphs: dict[int, tuple] = {}
        self.capture_ms = 0.0

    def capture(self, max_batch_size: int) -> None:
        for batch_size in range(1, min(2, max_batch_size) + 1):
            self._capture(batch_size)

    @property
    def batch_sizes(self) -> list[int]:
        return sorted(self._graphs)

    def run(self, batch: torch.Tensor) -> list[torch.Tensor] | None:
        """The encoder's outputs for ``batch`` from its graph; None when no graph has that batch size."""
        if len(batch) not in self._graphs:
            return None
        graph, static_input, static_output = self._graphs[len(batch)]
        static_input.copy_(batch)
        graph.replay()
        return [t.clone() for t in static_output]  # the next replay overwrites them

    def _capture(self, batch_size: int) -> None:
        start = time.perf_counter()
        try:
            static_input = torch.randn(batch_size, 3, self._size, self._size, device=self._device)
            side = torch.cuda.Stream(self._device)
            side.wait_stream(torch.cuda.current_stream(self._device))
            with torch.cuda.stream(side), torch.inference_mode(), self._autocast():
                for _ in range(3):  # warm-up outside the capture, as CUDA graphs require
                    eager = self._encode(static_input)
            torch.cuda.current_stream(self._device).wait_stream(side)
            graph = torch.cuda.CUDAGraph()
            with torch.inference_mode(), self._autocast(), torch.cuda.graph(graph):
                static_output = self._encode(static_input)
            graph.replay()
            torch.cuda.synchronize(self._device)
            for a, b in zip(static_output, eager):
                if not torch.allclose(a.float(), b.float(), atol=5e-2, rtol=5e-2):
                    raise RuntimeError("the captured encoder disagrees with the eager one")
        except Exception:  # noqa: BLE001 - an optimisation; the eager path is always right
            logger.warning("CUDA graph capture of the image encoder failed; staying eager", exc_info=True)
            return
        self._graphs[batch_size] = (graph, static_input, static_output)
        self.capture_ms += elapsed_ms(start)
        logger.info("image encoder (batch %d) captured as a CUDA graph; %.0f ms of capture in all",
                    batch_size, self.capture_ms)
