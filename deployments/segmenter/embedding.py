"""What the mask decoder needs from one image's encoder pass."""

from __future__ import annotations

import time
from dataclasses import dataclass

import torch


@dataclass(frozen=True, eq=False)  # compared by identity: keys the decoder's prepared images
class Embedding:
    image_embed: torch.Tensor  # (1, 256, 64, 64)
    high_res_feats: tuple[torch.Tensor, ...]  # (1, 32, 256, 256), (1, 64, 128, 128)
    image_hw: tuple[int, int]  # size of the image the prompt coordinates refer to

    @property
    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in (self.image_embed, *self.high_res_feats))


def elapsed_ms(start: float) -> float:
    return round((time.perf_counter() - start) * 1000.0, 2)
