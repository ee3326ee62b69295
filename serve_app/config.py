"""Configuration kept as data: the application's arguments and the per-stage settings derived from them.

``AppArgs`` is what a Serve config's ``args:`` block (or ``build_app({...})``) holds. Environment variables
``BGREMOVE_MODEL``, ``BGREMOVE_CHECKPOINT`` and ``BGREMOVE_DEVICE`` override it.
"""

from __future__ import annotations

import os
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

ModelSize = Literal["tiny", "small", "base_plus", "large"]
Device = Literal["auto", "cuda", "cpu"]
Precision = Literal["auto", "fp32", "fp16", "bf16"]

MiB = 1 << 20
ENV_OVERRIDES = {"BGREMOVE_MODEL": "model", "BGREMOVE_CHECKPOINT": "checkpoint", "BGREMOVE_DEVICE": "device"}


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class SegmenterConfig(_Frozen):
    model: ModelSize = "base_plus"
    checkpoint: str = "auto"
    checkpoint_sha256: str | None = None
    cache_dir: str | None = None
    seed: int = 0
    device: Device = "auto"
    # auto: FP16 autocast on CUDA, FP32 on CPU (CPU half precision is slower and less exact).
    precision: Precision = "auto"
    embedding_cache_bytes: int = 1024 * MiB
    # 0 means every core the machine has; Ray would otherwise pin torch to num_cpus threads.
    torch_threads: int = 0
    max_batch_size: int = 4
    # 0 s: a lone request never waits for company; concurrent misses still share one encoder pass.
    batch_wait_timeout_s: float = 0.0
    # CUDA only: replay the single-image encoder pass as a recorded CUDA graph (captured at start).
    cuda_graphs: bool = False


class IngressLimits(_Frozen):
    max_upload_bytes: int = 30 * 1000 * 1000
    max_pixels: int = 25_000_000
    max_points: int = 64
    # SAM 2 squashes every image to 1024x1024; a copy whose long side is <= this is all it needs.
    model_side: int = 1024
    # How long an ingress replica trusts its own memory of an image record before asking the store again.
    recent_image_s: float = 10.0


class ImageStoreConfig(_Frozen):
    ttl_s: float = 30 * 60
    max_bytes: int = 2048 * MiB


class PostprocessConfig(_Frozen):
    threads: int = 0  # 0: all cores
    png_level: int = 2  # zlib-ng level with the RLE strategy (deployments/png.py): 1 and 2 cost about the same


class AppArgs(BaseModel):
    """Arguments of ``build_app``; flat so that a YAML ``args:`` block reads naturally."""

    model_config = ConfigDict(extra="forbid")

    model: ModelSize = "base_plus"
    checkpoint: str = Field("auto", description="auto | random | local path | https URL")
    checkpoint_sha256: str | None = None
    cache_dir: str | None = None
    device: Device = "auto"
    precision: Precision = "auto"
    seed: int = 0
    embedding_cache_mb: int = 1024
    segmenter_threads: int = 0
    max_batch_size: int = 4
    batch_wait_timeout_s: float = 0.0
    cuda_graphs: bool = False
    postprocess_threads: int = 0
    png_level: int = Field(2, ge=0, le=9)
    max_upload_mb: float = 30.0
    max_megapixels: float = 25.0
    max_points: int = 64
    image_ttl_s: float = 30 * 60
    image_store_mb: int = 2048

    def with_env(self, environ: dict[str, str] | None = None) -> "AppArgs":
        environ = os.environ if environ is None else environ
        updates = {field: environ[var] for var, field in ENV_OVERRIDES.items() if environ.get(var)}
        return self.model_validate({**self.model_dump(), **updates}) if updates else self

    def segmenter(self) -> SegmenterConfig:
        return SegmenterConfig(
            model=self.model, checkpoint=self.checkpoint, checkpoint_sha256=self.checkpoint_sha256,
            cache_dir=self.cache_dir, seed=self.seed, device=self.device, precision=self.precision,
            embedding_cache_bytes=self.embedding_cache_mb * MiB, torch_threads=self.segmenter_threads,
            max_batch_size=self.max_batch_size, batch_wait_timeout_s=self.batch_wait_timeout_s,
            cuda_graphs=self.cuda_graphs,
        )

    def limits(self) -> IngressLimits:
        return IngressLimits(max_upload_bytes=int(self.max_upload_mb * 1000 * 1000),
                             max_pixels=int(self.max_megapixels * 1_000_000), max_points=self.max_points,
                             recent_image_s=min(10.0, self.image_ttl_s / 4))

    def image_store(self) -> ImageStoreConfig:
        return ImageStoreConfig(ttl_s=self.image_ttl_s, max_bytes=self.image_store_mb * MiB)

    def postprocess(self) -> PostprocessConfig:
        return PostprocessConfig(threads=self.postprocess_threads, png_level=self.png_level)
