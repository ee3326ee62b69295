"""Each stage's settings, kept as data: frozen, validated, and small enough to travel to every replica.

The application's arguments (built by the roof, ``serve_app``) are turned into these; a stage reads only its own.
"""

from __future__ import annotations

from typing import Literal, get_args

from pydantic import BaseModel, ConfigDict, Field

ModelSize = Literal["tiny", "small", "base_plus", "large"]
MODEL_SIZES: tuple[str, ...] = get_args(ModelSize)
Device = Literal["auto", "cuda", "cpu"]
Precision = Literal["auto", "fp32", "fp16", "bf16"]
PngCompression = Literal["fast", "small"]

MiB = 1 << 20


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class SegmenterConfig(_Frozen):
    model: ModelSize = "base_plus"
    checkpoint: str = "auto"
    checkpoint_sha256: str | None = None
    # A local file that is not an official one and has no checkpoint_sha256 loads only with this set.
    allow_unverified_checkpoint: bool = False
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
    # Uploads decoded at once per ingress replica; each holds a few copies of its pixels while it decodes.
    max_concurrent_decodes: int = 2


class GuardConfig(_Frozen):
    """The HTTP front door's access and overload rules (deployments/http_guard/)."""

    # SHA-256 hex digests of the accepted API keys; empty: no key needed. Only digests travel to the replicas.
    api_key_sha256: tuple[str, ...] = ()
    cors_origins: tuple[str, ...] = ()  # empty: no CORS headers, browsers keep other sites' pages out
    max_body_bytes: int = 31 * 1000 * 1000  # the whole request: the image limit plus room for the form fields
    request_timeout_s: float = 50.0  # then 503 + Retry-After; keep below the proxy's request_timeout_s
    max_inflight: int = 48  # API requests per ingress replica; keep below the Ingress max_ongoing_requests
    # Key of the HMAC that scopes image ids per API key; every ingress replica must hold the same one.
    image_id_secret: str = Field("", repr=False)


class ImageStoreConfig(_Frozen):
    ttl_s: float = 30 * 60
    max_bytes: int = 2048 * MiB
    # Per API key (records with an owner): past it a key's own oldest uploads go first. 0: no per-key limit.
    max_bytes_per_owner: int = 0


class PostprocessConfig(_Frozen):
    threads: int = 0  # 0: all cores
    png_level: int = 2  # zlib-ng level with the RLE strategy (deployments/png.py): 1 and 2 cost about the same
    # fast: fpng (one SIMD pass, 5-10x less CPU, files ~15-25% larger); small: the zlib-ng writer.
    png_compression: PngCompression = "fast"
