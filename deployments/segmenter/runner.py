"""The model runner: SAM 2.1 on one device, with a small public surface.

``encode`` (images -> embeddings), ``predict`` (embedding + prompt -> low-res logits and scores), ``check`` (can
this replica still serve), and ``segment``, the synchronous cache-aware path for callers without an event loop.
"""

from __future__ import annotations

import logging
import os
import time
from typing import Sequence

import numpy as np
import torch

from .. import decoder, errors, host_memory
from ..lru import LRUCache
from ..messages import Prompt, SegmentResult
from ..sam_model import build_model, resolve_device, resolve_precision
from ..settings import SegmenterConfig
from .cuda_graphs import EncoderGraphs
from .embedding import Embedding, elapsed_ms
from .prepared import PreparedImages

logger = logging.getLogger(__name__)


class Segmenter:
    def __init__(self, config: SegmenterConfig, model: torch.nn.Module | None = None, progress: bool = True):
        from sam2.utils.transforms import SAM2Transforms

        self.config = config
        self.device = resolve_device(config.device)
        self.threads = config.torch_threads or os.cpu_count() or 1
        self.use_threads()
        self.model = model if model is not None else build_model(config, self.device, progress=progress)
        self.autocast_dtype = resolve_precision(config.precision, self.device)
        # On CUDA the cache keeps FP16 tensors on the GPU: half the bytes, no host round trip.
        self.cache_dtype = torch.float16 if self.device.type == "cuda" and self.autocast_dtype else None
        self.cache: LRUCache[str, Embedding] = LRUCache(config.embedding_cache_bytes)
        size = self.model.image_size
        # The scripted Resize + Normalize that SAM2ImagePredictor uses, applied to a tensor already on the
        # device: the uint8 image is uploaded once and resized / normalised there.
        self._resize_normalize = SAM2Transforms(resolution=size, mask_threshold=0.0).transforms
        self._feat_sizes = [(size // 4, size // 4), (size // 8, size // 8), (size // 16, size // 16)]
        with torch.inference_mode():  # depends on the weights only: computed once, not on every click
            dense_pe = self.model.sam_prompt_encoder.get_dense_pe()
            # What MaskDecoder makes of it and of "no mask" on every click (the same layouts, so the same sums).
            pos_src = torch.repeat_interleave(dense_pe, 1, dim=0)
            no_mask_dense = self.model.sam_prompt_encoder(points=None, boxes=None, masks=None)[1]
        self.prepared = PreparedImages(self.model, pos_src, no_mask_dense)
        self.graphs = EncoderGraphs(self._encode_tensor, self.autocast, size, self.device)
        if config.cuda_graphs and self.device.type == "cuda":
            self.graphs.capture(config.max_batch_size)
        # Set once the model has produced non-finite numbers: check() then fails and Serve replaces the replica.
        self.fault: str | None = None
        self._probe = self._probe_embedding()

    # -- public surface ---------------------------------------------------------------------------------------

    def encode(self, images: Sequence[np.ndarray]) -> list[Embedding]:
        """One encoder pass over a batch of HxWx3 uint8 images (any sizes)."""
        with torch.inference_mode(), self.autocast():
            batch = torch.stack([self._preprocess(image) for image in images])
            feats = self.graphs.run(batch) or self._encode_tensor(batch)
            if not all(bool(torch.isfinite(level).all()) for level in feats):
                raise self._model_fault("the image encoder returned non-finite values")
            embeddings = []
            for i, image in enumerate(images):
                per_image = [self._for_cache(level[i:i + 1]) for level in feats]
                embeddings.append(Embedding(per_image[-1], tuple(per_image[:-1]), tuple(image.shape[:2])))
        if self.device.type == "cpu":  # the activations were host memory (on CUDA they stay in torch's own pool)
            host_memory.release_free_memory()
        return embeddings

    def predict(self, embedding: Embedding, prompt: Prompt) -> tuple[np.ndarray, np.ndarray]:
        """Prompt encoder + mask decoder: (C, 256, 256) logits and (C,) scores; C = 3 if prompt.multimask."""
        # The decoder is small: FP16 autocast's casts cost more than they save (docs/benchmarks/design-notes.md),
        # so it runs in FP32 on FP32 copies of the (FP16-cached) embedding.
        with torch.inference_mode():
            points = self._prompt_points(prompt, embedding.image_hw)
            sparse, _ = self.model.sam_prompt_encoder(points=points, boxes=None, masks=None)
            logits, scores = decoder.decode(self.model, self.prepared.get(embedding), sparse, prompt.multimask)
            # FP16 on the wire when the model ran in FP16: half the bytes, the same masks.
            out_dtype = torch.float16 if self.autocast_dtype is not None else torch.float32
            logits = logits[0].clamp(-6e4, 6e4).to(out_dtype)  # inside FP16's range, so never infinite
            logits, scores = logits.cpu().numpy(), scores[0].float().cpu().numpy()
        if not (np.isfinite(scores).all() and np.isfinite(logits).all()):
            raise self._model_fault("the mask decoder returned non-finite values")
        return logits, scores

    def segment(self, image_id: str, image: np.ndarray | None, prompt: Prompt) -> SegmentResult:
        """Synchronous and cache-aware, for callers without an event loop (``Embeddings`` is the async path)."""
        start = time.perf_counter()
        embedding, hit, timings = self.embedding(image_id, image)
        decode_start = time.perf_counter()
        logits, scores = self.predict(embedding, prompt)
        timings["mask"] = elapsed_ms(decode_start)
        timings["segment"] = elapsed_ms(start)
        return SegmentResult(image_id, logits, scores, hit, timings)

    def embedding(self, image_id: str, image: np.ndarray | None) -> tuple[Embedding, bool, dict[str, float]]:
        """The cached embedding, or ``image``'s encoded and cached (KeyError without either)."""
        embedding = self.cache.get(image_id)
        if embedding is not None:
            return embedding, True, {}
        if image is None:
            raise KeyError(image_id)
        start = time.perf_counter()
        embedding = self.encode([image])[0]
        self.cache.put(image_id, embedding)
        return embedding, False, {"embed": elapsed_ms(start)}

    def check(self) -> None:
        """Raises if this replica can no longer serve: a broken CUDA context, or a model that cannot run (the
        mask decoder is probed on a fixed embedding: milliseconds, unlike an encoder pass)."""
        if self.fault:
            raise RuntimeError(self.fault)
        probe = torch.ones(8, device=self.device)
        if float((probe * 2).sum().item()) != 16.0:
            raise RuntimeError(f"device {self.device} returned a wrong result")
        try:
            self.predict(self._probe, self._probe_prompt)
        except errors.ApiError:  # the client-facing form of a model fault; Serve's log wants the reason
            raise RuntimeError(self.fault) from None

    def use_threads(self) -> None:
        """Gives the calling thread's torch ops the configured cores. OpenMP settings are per thread and Ray
        sets OMP_NUM_THREADS to the replica's num_cpus, so every thread that runs the model calls this."""
        torch.set_num_threads(self.threads)

    def gpu_memory_bytes(self) -> int:
        return torch.cuda.memory_allocated(self.device) if self.device.type == "cuda" else 0

    def autocast(self):
        # No autocast weight cache: it would hold tensors across CUDA graph capture and replays.
        return torch.autocast(self.device.type, dtype=self.autocast_dtype or torch.float32,
                              enabled=self.autocast_dtype is not None, cache_enabled=False)

    _probe_prompt = Prompt(points=np.array([[512.0, 512.0]], np.float32), labels=np.array([1], np.int32))

    # -- private helpers --------------------------------------------------------------------------------------

    def _encode_tensor(self, batch: torch.Tensor) -> list[torch.Tensor]:
        """Image encoder + the projections SAM2ImagePredictor.set_image applies: [s0, s1, image_embed]."""
        backbone_out = self.model.forward_image(batch)
        _, vision_feats, _, _ = self.model._prepare_backbone_features(backbone_out)
        if self.model.directly_add_no_mem_embed:
            vision_feats[-1] = vision_feats[-1] + self.model.no_mem_embed
        return [feat.permute(1, 2, 0).reshape(batch.shape[0], -1, *hw)
                for feat, hw in zip(vision_feats[::-1], self._feat_sizes[::-1])][::-1]

    def _model_fault(self, reason: str) -> errors.ApiError:
        logger.error("model fault: %s; the health check will now fail so that Serve replaces this replica", reason)
        self.fault = reason
        return errors.ApiError(503, "model_fault", "the model failed on this server; the request was not "
                               "served, retry it", headers={"Retry-After": "2"})

    def _probe_embedding(self) -> Embedding:
        """A constant embedding with the encoder's shapes, for check()'s decoder probe."""
        mask_decoder = self.model.sam_mask_decoder
        dtype = self.cache_dtype or torch.float32
        channels = [mask_decoder.conv_s0.out_channels, mask_decoder.conv_s1.out_channels,
                    mask_decoder.transformer_dim] if mask_decoder.use_high_res_features \
            else [mask_decoder.transformer_dim]
        sizes = self._feat_sizes[-len(channels):]
        levels = [torch.full((1, c, h, w), 0.01, dtype=dtype, device=self.device) for c, (h, w) in zip(channels, sizes)]
        size = self.model.image_size
        return Embedding(levels[-1], tuple(levels[:-1]), (size, size))

    def _preprocess(self, image: np.ndarray) -> torch.Tensor:
        if not image.flags.writeable:  # arrays from Ray's object store are read-only views
            image = image.copy()
        pixels = torch.from_numpy(image).to(self.device, non_blocking=True)
        pixels = pixels.permute(2, 0, 1).contiguous().to(torch.float32).div_(255.0)
        return self._resize_normalize(pixels)

    def _for_cache(self, tensor: torch.Tensor) -> torch.Tensor:
        tensor = tensor.to(self.cache_dtype) if self.cache_dtype is not None else tensor
        return tensor.contiguous()

    def _prompt_points(self, prompt: Prompt, image_hw: tuple[int, int]):
        """SAM's point encoding: pixels normalised by the image size, times the model resolution; a box
        becomes two corner points labelled 2 and 3, placed before the clicks (as SAM2ImagePredictor does)."""
        height, width = image_hw
        size = torch.tensor([width, height], dtype=torch.float32, device=self.device)
        coords, labels = [], []
        if prompt.box is not None:
            coords.append(torch.as_tensor(prompt.box, dtype=torch.float32, device=self.device).reshape(2, 2))
            labels.append(torch.tensor([2, 3], dtype=torch.int32, device=self.device))
        if prompt.points is not None:
            coords.append(torch.as_tensor(prompt.points, dtype=torch.float32, device=self.device))
            labels.append(torch.as_tensor(prompt.labels, dtype=torch.int32, device=self.device))
        if not coords:
            return None
        # Divide, then multiply, in SAM2Transforms.transform_coords' order: FP32 parity is bit-exact.
        return (torch.cat(coords) / size * self.model.image_size)[None], torch.cat(labels)[None]
