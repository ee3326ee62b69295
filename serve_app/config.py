"""The application's arguments (``AppArgs``) and the per-stage settings derived from them (``deployments.settings``).

``AppArgs`` is what a Serve config's ``args:`` block (or ``build_app({...})``) holds. Environment variables
``BGREMOVE_MODEL``, ``BGREMOVE_CHECKPOINT``, ``BGREMOVE_CHECKPOINT_SHA256`` and ``BGREMOVE_DEVICE`` override it.
"""

from __future__ import annotations

import hashlib
import os
import secrets

from pydantic import BaseModel, ConfigDict, Field

from deployments.settings import (MiB, Device, GuardConfig, ImageStoreConfig, IngressLimits, ModelSize,
                                  PngCompression, PostprocessConfig, Precision, SegmenterConfig)

ENV_OVERRIDES = {"BGREMOVE_MODEL": "model", "BGREMOVE_CHECKPOINT": "checkpoint", "BGREMOVE_DEVICE": "device",
                 "BGREMOVE_CHECKPOINT_SHA256": "checkpoint_sha256"}
# Comma-separated lists. Secrets belong in the environment rather than in a config file that `serve config` shows.
ENV_LIST_OVERRIDES = {"BGREMOVE_API_KEYS": "api_keys", "BGREMOVE_CORS_ORIGINS": "cors_origins"}
ENV_SECRETS = {"BGREMOVE_IMAGE_ID_SECRET": "image_id_secret"}


class AppArgs(BaseModel):
    """Arguments of ``build_app``; flat so that a YAML ``args:`` block reads naturally."""

    model_config = ConfigDict(extra="forbid")

    model: ModelSize = "base_plus"
    checkpoint: str = Field("auto", description="auto | random | local path | https URL")
    checkpoint_sha256: str | None = None
    allow_unverified_checkpoint: bool = Field(False, description="load a local checkpoint that is neither official "
                                              "nor given a checkpoint_sha256 (logged as unverified)")
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
    png_compression: PngCompression = Field("fast", description="fast (fpng: least CPU per click) | small "
                                            "(zlib-ng: cut-outs ~15-25% smaller, several times the CPU)")
    max_upload_mb: float = 30.0
    max_megapixels: float = 25.0
    max_points: int = 64
    max_concurrent_decodes: int = Field(2, ge=1, description="uploads decoded at once per ingress replica (each "
                                        "holds ~12 bytes per pixel while it decodes); the rest wait their turn")
    image_ttl_s: float = 30 * 60
    image_store_mb: int = 2048
    image_store_key_mb: int = Field(512, ge=0, description="with API keys: stored-image bytes per key (its own "
                                    "oldest uploads are evicted past it); 0: no per-key limit")
    api_keys: list[str] = Field(default_factory=list, description="accepted `Authorization: Bearer` keys; "
                                "empty: open (also BGREMOVE_API_KEYS, comma-separated)")
    cors_origins: list[str] = Field(default_factory=list, description="origins allowed to call the API from a "
                                    "browser; empty: CORS off (also BGREMOVE_CORS_ORIGINS)")
    request_timeout_s: float = Field(50.0, gt=0, description="an API request still unanswered then gets 503")
    max_inflight_requests: int = Field(48, ge=1, description="API requests per ingress replica before 503")
    image_id_secret: str | None = Field(None, repr=False, description="HMAC key that scopes image ids per API key "
                                        "(also BGREMOVE_IMAGE_ID_SECRET); unset: generated once per deploy")

    def with_env(self, environ: dict[str, str] | None = None) -> "AppArgs":
        environ = os.environ if environ is None else environ
        updates = {field: environ[var] for var, field in {**ENV_OVERRIDES, **ENV_SECRETS}.items() if environ.get(var)}
        updates.update({field: [item.strip() for item in environ[var].split(",") if item.strip()]
                        for var, field in ENV_LIST_OVERRIDES.items() if environ.get(var, "").strip()})
        return self.model_validate({**self.model_dump(), **updates}) if updates else self

    def segmenter(self) -> SegmenterConfig:
        return SegmenterConfig(
            model=self.model, checkpoint=self.checkpoint, checkpoint_sha256=self.checkpoint_sha256,
            allow_unverified_checkpoint=self.allow_unverified_checkpoint, cache_dir=self.cache_dir, seed=self.seed,
            device=self.device, precision=self.precision,
            embedding_cache_bytes=self.embedding_cache_mb * MiB, torch_threads=self.segmenter_threads,
            max_batch_size=self.max_batch_size, batch_wait_timeout_s=self.batch_wait_timeout_s,
            cuda_graphs=self.cuda_graphs,
        )

    def limits(self) -> IngressLimits:
        return IngressLimits(max_upload_bytes=int(self.max_upload_mb * 1000 * 1000),
                             max_pixels=int(self.max_megapixels * 1_000_000), max_points=self.max_points,
                             recent_image_s=min(10.0, self.image_ttl_s / 4),
                             max_concurrent_decodes=self.max_concurrent_decodes)

    def image_store(self) -> ImageStoreConfig:
        return ImageStoreConfig(ttl_s=self.image_ttl_s, max_bytes=self.image_store_mb * MiB,
                                max_bytes_per_owner=self.image_store_key_mb * MiB)

    def postprocess(self) -> PostprocessConfig:
        return PostprocessConfig(threads=self.postprocess_threads, png_level=self.png_level,
                                 png_compression=self.png_compression)

    def guard(self) -> GuardConfig:
        keys = [key.strip() for key in self.api_keys if key.strip()]
        return GuardConfig(
            api_key_sha256=tuple(hashlib.sha256(key.encode()).hexdigest() for key in keys),
            cors_origins=tuple(origin.strip() for origin in self.cors_origins if origin.strip()),
            max_body_bytes=int(self.max_upload_mb * 1000 * 1000) + 1_000_000,
            request_timeout_s=self.request_timeout_s, max_inflight=self.max_inflight_requests,
            # Generated here, in the one build of a deploy, it reaches every ingress replica (on every node) through
            # the deployment's arguments; a new deploy draws a new one unless it is configured.
            image_id_secret=self.image_id_secret or secrets.token_hex(32),
        )
