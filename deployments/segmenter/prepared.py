"""The mask decoder's image-only terms (``deployments/decoder.py``) for the images clicked most recently."""

from __future__ import annotations

import weakref

import torch

from .. import decoder
from ..lru import LRUCache
from .embedding import Embedding


class PreparedImages:
    """Keyed by the embedding object itself (weakly): an embedding evicted from the cache cannot be matched by a
    new one that reuses its ``id``."""

    # A few images' worth, the ones people are clicking on right now: 22 MB each in FP32, whatever the model size
    # (SAM 2.1's mask decoders are all alike).
    MAX_IMAGES = 8

    def __init__(self, model: torch.nn.Module, pos_src: torch.Tensor, no_mask_dense: torch.Tensor):
        self._model, self._key_pe, self._no_mask_dense = model, decoder.as_tokens(pos_src), no_mask_dense
        self._entries: LRUCache[int, tuple[weakref.ref, decoder.PreparedImage]] = LRUCache(
            max_entries=self.MAX_IMAGES, size=lambda _: 0)

    def get(self, embedding: Embedding) -> decoder.PreparedImage:
        entry = self._entries.get(id(embedding))
        if entry is not None and entry[0]() is embedding:
            return entry[1]
        prepared = decoder.prepare(self._model, embedding.image_embed.float(),
                                   tuple(feat.float() for feat in embedding.high_res_feats),
                                   self._key_pe, self._no_mask_dense)
        for dead, _ in [item for item in self._entries.items() if item[1][0]() is None]:  # evicted from the cache
            self._entries.pop(dead)
        self._entries.put(id(embedding), (weakref.ref(embedding), prepared))
        return prepared

    def __len__(self) -> int:
        return len(self._entries)
