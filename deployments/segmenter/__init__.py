"""GPU stage: SAM 2.1's image encoder (cached per image) and mask decoder. Returns low-res logits, not masks.

- ``runner.Segmenter``: the model runner, a plain class (encode, predict, check; ``segment`` for synchronous
  callers), tested without Ray.
- ``embeddings.Embeddings``: an image's embedding from the cache, or encoded once however many concurrent
  requests want it (the Ray shell and the in-process library both use it).
- ``deployment.SegmenterDeployment``: the Ray Serve shell (batched encoder passes, the model on one thread).
- ``cuda_graphs``, ``prepared``: optimisations the runner owns; ``faults``: out-of-memory handling;
  ``floor``: sam2's own predictor on the same model, the floor the benchmarks measure against.
"""

from .deployment import SegmenterDeployment
from .embedding import Embedding
from .embeddings import Embeddings
from .faults import encode_in_parts, gpu_out_of_memory, predict_or_error
from .runner import Segmenter

__all__ = ["Embedding", "Embeddings", "Segmenter", "SegmenterDeployment", "encode_in_parts", "gpu_out_of_memory",
           "predict_or_error"]
