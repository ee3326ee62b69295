"""CUDA out-of-memory handling: a batch is retried in halves and a request that cannot fit gets a 503, so the
replica lives on. (Model faults, non-finite outputs, are the runner's: they make the health check fail.)"""

from __future__ import annotations

import logging

import numpy as np
import torch

from .. import errors
from ..messages import Prompt
from .embedding import Embedding

logger = logging.getLogger(__name__)


def gpu_out_of_memory() -> errors.ApiError:
    return errors.ApiError(503, "gpu_out_of_memory", "the GPU is out of memory for this image right now; retry "
                           "after the number of seconds in the Retry-After header", headers={"Retry-After": "2"})


def _release_gpu_memory() -> None:
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def encode_in_parts(encode, images: list[np.ndarray]) -> list[Embedding | errors.ApiError]:
    """``encode(images)``; on a CUDA out-of-memory error the batch is retried in halves, down to single images,
    and an image that does not fit even alone gets an error answer: the replica lives on either way."""
    try:
        return encode(images)
    except torch.cuda.OutOfMemoryError:
        logger.warning("CUDA out of memory encoding a batch of %d; retrying smaller", len(images))
    # Outside the except block, so that the failed attempt's tensors (held by its traceback) can be freed.
    _release_gpu_memory()
    if len(images) == 1:
        return [gpu_out_of_memory()]
    half = len(images) // 2
    return encode_in_parts(encode, images[:half]) + encode_in_parts(encode, images[half:])


def predict_or_error(predict, embedding: Embedding, prompt: Prompt) -> tuple[np.ndarray, np.ndarray]:
    try:
        return predict(embedding, prompt)
    except torch.cuda.OutOfMemoryError:
        logger.warning("CUDA out of memory in the mask decoder")
    _release_gpu_memory()
    raise gpu_out_of_memory()
