"""The one factory that builds SAM 2.1: architecture from sam2's own configs, weights verified, then loaded."""

from __future__ import annotations

import io
import logging

import torch

from . import weights
from .settings import SegmenterConfig

logger = logging.getLogger(__name__)


def resolve_device(requested: str) -> torch.device:
    if requested == "cuda" or (requested == "auto" and torch.cuda.is_available()):
        if not torch.cuda.is_available():
            raise RuntimeError("device 'cuda' was requested but no CUDA GPU is visible; use device 'cpu' or 'auto'")
        return torch.device("cuda")
    return torch.device("cpu")


def resolve_precision(requested: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype, or None for plain FP32."""
    if requested == "auto":
        return torch.float16 if device.type == "cuda" else None
    return {"fp32": None, "fp16": torch.float16, "bf16": torch.bfloat16}[requested]


def build_model(config: SegmenterConfig, device: torch.device, progress: bool = True) -> torch.nn.Module:
    from sam2.build_sam import build_sam2  # importing sam2 registers its Hydra configs

    checkpoint = weights.resolve(config.model, config.checkpoint, config.checkpoint_sha256,
                                 cache_dir=config.cache_dir, progress=progress, seed=config.seed,
                                 allow_unverified=config.allow_unverified_checkpoint)
    architecture = weights.OFFICIAL_CHECKPOINTS[config.model].config
    # The seed fixes the random initialisation, which *is* the weights when checkpoint is 'random'.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.seed)
        model = build_sam2(architecture, ckpt_path=None, device="cpu", mode="eval")
    if checkpoint.is_random:
        logger.warning("=" * 78)
        logger.warning("checkpoint 'random': SAM 2.1 %s with SEEDED RANDOM WEIGHTS (seed %d). The masks are "
                       "MEANINGLESS; this mode exists for tests and load tests only.", config.model, config.seed)
        logger.warning("=" * 78)
        # Round-trip through the same safe loader a real checkpoint takes.
        buffer = io.BytesIO()
        torch.save({"model": model.state_dict()}, buffer)
        state = weights.load_state_dict(buffer.getvalue())
    else:
        state = weights.load_state_dict(checkpoint.path)
    model.load_state_dict(state, strict=True)
    logger.info("SAM 2.1 %s loaded from %s onto %s", config.model,
                "random weights" if checkpoint.is_random else checkpoint.path, device)
    return model.to(device).eval()
