"""GPU stage: SAM 2.1 image encoder (cached per image) and mask decoder. Returns low-res logits, not masks.

``Segmenter`` is the plain class (runs and is tested without Ray); ``SegmenterDeployment`` is its Ray shell:
embedding-cache lookups, coalescing of concurrent misses for one image, batched encoder passes, and model
calls kept off the event loop on one dedicated thread.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
import weakref
from collections import OrderedDict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch
from ray import serve

from . import errors
from .settings import SegmenterConfig

from . import decoder
from .embedding_cache import EmbeddingCache
from .messages import ImageRef, Prompt, SegmentRequest, SegmentResult
from .metrics import SegmenterMetrics
from .sam_model import build_model, resolve_device, resolve_precision

logger = logging.getLogger(__name__)


@dataclass(frozen=True, eq=False)  # compared by identity: keys the decoder's prepared images
class Embedding:
    """Everything the mask decoder needs from one image's encoder pass."""

    image_embed: torch.Tensor  # (1, 256, 64, 64)
    high_res_feats: tuple[torch.Tensor, ...]  # (1, 32, 256, 256), (1, 64, 128, 128)
    image_hw: tuple[int, int]  # size of the image the prompt coordinates refer to

    @property
    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in (self.image_embed, *self.high_res_feats))


def _elapsed_ms(start: float) -> float:
    return round((time.perf_counter() - start) * 1000.0, 2)


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
        self.cache: EmbeddingCache[Embedding] = EmbeddingCache(config.embedding_cache_bytes)
        size = self.model.image_size
        # The scripted Resize + Normalize that SAM2ImagePredictor uses, applied to a tensor already on the
        # device: the uint8 image is uploaded once and resized / normalised there.
        self._resize_normalize = SAM2Transforms(resolution=size, mask_threshold=0.0).transforms
        self._feat_sizes = [(size // 4, size // 4), (size // 8, size // 8), (size // 16, size // 16)]
        with torch.inference_mode():  # depends on the weights only: computed once, not on every click
            self._dense_pe = self.model.sam_prompt_encoder.get_dense_pe()
            # What MaskDecoder makes of it and of "no mask" on every click (the same layouts, so the same sums).
            self._pos_src = torch.repeat_interleave(self._dense_pe, 1, dim=0)
            self._no_mask_dense = self.model.sam_prompt_encoder(points=None, boxes=None, masks=None)[1]
        # The decoder's image-only terms (deployments/decoder.py) for the images clicked most recently.
        self._prepared: OrderedDict[int, tuple[weakref.ref, decoder.PreparedImage]] = OrderedDict()
        # CUDA graphs of the encoder, one per batch size up to 2 (what max_ongoing_requests=2 lets a batch hold).
        self._graphs: dict[int, tuple] = {}
        self.graph_capture_ms = 0.0
        if config.cuda_graphs and self.device.type == "cuda":
            for batch_size in range(1, min(2, config.max_batch_size) + 1):
                self._capture_encoder_graph(batch_size)
        # Set once the model has produced non-finite numbers: check() then fails and Serve replaces the replica.
        self.fault: str | None = None
        self._probe = self._probe_embedding()

    # -- public surface ---------------------------------------------------------------------------------------

    def encode(self, images: Sequence[np.ndarray]) -> list[Embedding]:
        """One encoder pass over a batch of HxWx3 uint8 images (any sizes)."""
        with torch.inference_mode(), self._autocast():
            batch = torch.stack([self._preprocess(image) for image in images])
            if len(images) in self._graphs:
                graph, static_input, static_output = self._graphs[len(images)]
                static_input.copy_(batch)
                graph.replay()
                feats = [t.clone() for t in static_output]  # the next replay overwrites them
            else:
                feats = self._encode_tensor(batch)
            if not all(bool(torch.isfinite(level).all()) for level in feats):
                raise self._model_fault("the image encoder returned non-finite values")
            embeddings = []
            for i, image in enumerate(images):
                per_image = [self._for_cache(level[i:i + 1]) for level in feats]
                embeddings.append(Embedding(per_image[-1], tuple(per_image[:-1]), tuple(image.shape[:2])))
            return embeddings

    def predict(self, embedding: Embedding, prompt: Prompt) -> tuple[np.ndarray, np.ndarray]:
        """Prompt encoder + mask decoder: (C, 256, 256) logits and (C,) scores; C = 3 if prompt.multimask."""
        # The decoder is small: on an H100 it ran in 3.5 ms in FP32 and 5.0 ms under FP16 autocast, whose casts
        # cost more than they save. So it runs in FP32 on FP32 copies of the (FP16-cached) embedding.
        with torch.inference_mode():
            points = self._prompt_points(prompt, embedding.image_hw)
            mask_input = None
            if prompt.mask_input is not None:
                mask_input = torch.as_tensor(prompt.mask_input, dtype=torch.float32, device=self.device)[None]
            sparse, dense = self.model.sam_prompt_encoder(points=points, boxes=None, masks=mask_input)
            if mask_input is None:
                logits, scores = decoder.decode(self.model, self._prepared_image(embedding), self._pos_src, sparse,
                                                prompt.multimask)
            else:  # a mask prompt changes the dense embedding: sam2's own decoder does it all
                logits, scores, _, _ = self.model.sam_mask_decoder(
                    image_embeddings=embedding.image_embed.float(),
                    image_pe=self._dense_pe,
                    sparse_prompt_embeddings=sparse,
                    dense_prompt_embeddings=dense,
                    multimask_output=prompt.multimask,
                    repeat_image=False,
                    high_res_features=[feat.float() for feat in embedding.high_res_feats],
                )
            # FP16 on the wire when the model ran in FP16: half the bytes, the same masks.
            out_dtype = torch.float16 if self.autocast_dtype is not None else torch.float32
            logits = logits[0].clamp(-6e4, 6e4).to(out_dtype)  # inside FP16's range, so never infinite
            logits, scores = logits.cpu().numpy(), scores[0].float().cpu().numpy()
        if not (np.isfinite(scores).all() and np.isfinite(logits).all()):
            raise self._model_fault("the mask decoder returned non-finite values")
        return logits, scores

    def segment(self, image_id: str, image: np.ndarray | None, prompt: Prompt) -> SegmentResult:
        """Synchronous cache-aware path for in-process use; the Ray shell splits it to batch and coalesce."""
        start = time.perf_counter()
        embedding = self.cache.get(image_id)
        hit = embedding is not None
        timings = {}
        if not hit:
            if image is None:
                raise KeyError(image_id)
            encode_start = time.perf_counter()
            embedding = self.encode([image])[0]
            self.cache.put(image_id, embedding)
            timings["embed"] = _elapsed_ms(encode_start)
        decode_start = time.perf_counter()
        logits, scores = self.predict(embedding, prompt)
        timings["mask"] = _elapsed_ms(decode_start)
        timings["segment"] = _elapsed_ms(start)
        return SegmentResult(image_id, logits, scores, hit, timings)

    def use_threads(self) -> None:
        """Gives the calling thread's torch ops the configured cores. OpenMP settings are per thread and Ray
        sets OMP_NUM_THREADS to the replica's num_cpus, so every thread that runs the model calls this."""
        torch.set_num_threads(self.threads)

    def reference_timings(self, image: np.ndarray, point: tuple[float, float], repeats: int = 10) -> list[float]:
        """Milliseconds of set_image + predict with sam2's own SAM2ImagePredictor on this very model and device:
        the model floor that the graph's overhead is measured against (benchmarks only)."""
        from sam2.sam2_image_predictor import SAM2ImagePredictor

        predictor = SAM2ImagePredictor(self.model)
        times = []
        for _ in range(repeats + 1):  # the first pass warms up kernels and clocks
            start = time.perf_counter()
            with torch.inference_mode(), self._autocast():
                predictor.set_image(image)
                predictor.predict(np.array([point]), np.array([1]), multimask_output=True)
            self._synchronize()
            times.append((time.perf_counter() - start) * 1000)
        return times[1:]

    def _synchronize(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    def gpu_memory_bytes(self) -> int:
        return torch.cuda.memory_allocated(self.device) if self.device.type == "cuda" else 0

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

    def _capture_encoder_graph(self, batch_size: int) -> None:
        """Records the encoder pass for one batch size as a CUDA graph: one launch replaces hundreds of small
        kernel launches. Verified against the eager pass; on any failure the replica stays eager."""
        size = self.model.image_size
        start = time.perf_counter()
        try:
            static_input = torch.randn(batch_size, 3, size, size, device=self.device)
            side = torch.cuda.Stream(self.device)
            side.wait_stream(torch.cuda.current_stream(self.device))
            with torch.cuda.stream(side), torch.inference_mode(), self._autocast():
                for _ in range(3):  # warm-up outside the capture, as CUDA graphs require
                    eager = self._encode_tensor(static_input)
            torch.cuda.current_stream(self.device).wait_stream(side)
            graph = torch.cuda.CUDAGraph()
            with torch.inference_mode(), self._autocast(), torch.cuda.graph(graph):
                static_output = self._encode_tensor(static_input)
            graph.replay()
            torch.cuda.synchronize(self.device)
            for a, b in zip(static_output, eager):
                if not torch.allclose(a.float(), b.float(), atol=5e-2, rtol=5e-2):
                    raise RuntimeError("the captured encoder disagrees with the eager one")
        except Exception:  # noqa: BLE001 - an optimisation; the eager path is always right
            logger.warning("CUDA graph capture of the image encoder failed; staying eager", exc_info=True)
            return
        self._graphs[batch_size] = (graph, static_input, static_output)
        self.graph_capture_ms += _elapsed_ms(start)
        logger.info("image encoder (batch %d) captured as a CUDA graph; %.0f ms of capture in all",
                    batch_size, self.graph_capture_ms)

    PREPARED_IMAGES = 8  # a few images' worth (14 MB each in FP32): the ones people are clicking on right now

    def _prepared_image(self, embedding: Embedding) -> decoder.PreparedImage:
        key = id(embedding)
        entry = self._prepared.get(key)
        if entry is not None and entry[0]() is embedding:
            self._prepared.move_to_end(key)
            return entry[1]
        prepared = decoder.prepare(self.model, embedding.image_embed.float(),
                                   tuple(feat.float() for feat in embedding.high_res_feats),
                                   self._pos_src, self._no_mask_dense)
        for dead in [k for k, (ref, _) in self._prepared.items() if ref() is None]:  # evicted from the cache
            del self._prepared[dead]
        self._prepared[key] = (weakref.ref(embedding), prepared)
        while len(self._prepared) > self.PREPARED_IMAGES:
            self._prepared.popitem(last=False)
        return prepared

    def _model_fault(self, reason: str) -> errors.ApiError:
        logger.error("model fault: %s; the health check will now fail so that Serve replaces this replica", reason)
        self.fault = reason
        return errors.ApiError(503, "model_fault", "the model failed on this server; the request was not "
                               "served, retry it", headers={"Retry-After": "2"})

    def _probe_embedding(self) -> Embedding:
        """A constant embedding with the encoder's shapes, for check()'s decoder probe."""
        decoder = self.model.sam_mask_decoder
        dtype = self.cache_dtype or torch.float32
        channels = [decoder.conv_s0.out_channels, decoder.conv_s1.out_channels, decoder.transformer_dim] \
            if decoder.use_high_res_features else [decoder.transformer_dim]
        sizes = self._feat_sizes[-len(channels):]
        levels = [torch.full((1, c, h, w), 0.01, dtype=dtype, device=self.device) for c, (h, w) in zip(channels, sizes)]
        size = self.model.image_size
        return Embedding(levels[-1], tuple(levels[:-1]), (size, size))

    def _autocast(self):
        # No autocast weight cache: it would hold tensors across CUDA graph capture and replays.
        return torch.autocast(self.device.type, dtype=self.autocast_dtype or torch.float32,
                              enabled=self.autocast_dtype is not None, cache_enabled=False)

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


# max_queued_requests: per caller (each ingress replica); past it the caller gets BackPressureError -> 503.
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


@serve.deployment(name="Segmenter", max_ongoing_requests=2, max_queued_requests=32, ray_actor_options={"num_cpus": 1},
                  health_check_period_s=10, health_check_timeout_s=30)
class SegmenterDeployment:
    def __init__(self, config: SegmenterConfig):
        self.segmenter = Segmenter(config, progress=False)
        self._model_thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="sam2",
                                                initializer=self.segmenter.use_threads)
        self._pending: dict[str, asyncio.Future] = {}
        self._encode_batch.set_max_batch_size(config.max_batch_size)
        self._encode_batch.set_batch_wait_timeout_s(config.batch_wait_timeout_s)
        self.metrics = SegmenterMetrics()

    async def segment(self, request: SegmentRequest) -> SegmentResult:
        start = time.perf_counter()
        embedding, hit, timings = await self._embedding(request.image_id, request.image)
        decode_start = time.perf_counter()
        logits, scores = await self._on_model_thread(predict_or_error, self.segmenter.predict, embedding,
                                                     request.prompt)
        timings["mask"] = _elapsed_ms(decode_start)
        timings["segment"] = _elapsed_ms(start)
        self.metrics.request(hit, timings, self.segmenter.cache.stats(), self.segmenter.gpu_memory_bytes())
        return SegmentResult(request.image_id, logits, scores, hit, timings)

    async def warm(self, image_id: str, image: ImageRef) -> bool:
        """Computes and caches an image's embedding ahead of its first click; returns whether it was cached."""
        _, hit, _ = await self._embedding(image_id, image)
        return hit

    async def reference_timings(self, image: np.ndarray, point: tuple[float, float], repeats: int = 10) -> list[float]:
        return await self._on_model_thread(self.segmenter.reference_timings, image, point, repeats)

    def stats(self) -> dict:
        return {**self.segmenter.cache.stats(), "replica": serve.get_replica_context().replica_id.unique_id,
                "device": str(self.segmenter.device),
                "model": self.segmenter.config.model, "cuda_graphs": sorted(self.segmenter._graphs),
                "graph_capture_ms": self.segmenter.graph_capture_ms}

    async def check_health(self) -> None:
        # On the model thread: a probe queued behind a long batch is fine (health_check_timeout_s), a hung
        # device fails it by timing out, and the model is never used by two threads at once.
        await self._on_model_thread(self.segmenter.check)

    async def _embedding(self, image_id: str, image: ImageRef) -> tuple[Embedding, bool, dict]:
        embedding = self.segmenter.cache.get(image_id)
        if embedding is not None:
            return embedding, True, {}
        if image_id in self._pending:  # another request is already encoding this image
            return await asyncio.shield(self._pending[image_id]), False, {"coalesced": 1.0}
        future = asyncio.get_running_loop().create_future()
        future.add_done_callback(lambda f: f.cancelled() or f.exception())  # never "exception never retrieved"
        self._pending[image_id] = future
        try:
            fetch_start = time.perf_counter()
            pixels = await image.resolve()  # only now do the pixels travel to this replica
            fetch_ms = _elapsed_ms(fetch_start)
            encode_start = time.perf_counter()
            embedding = await self._encode_batch(pixels)
            if isinstance(embedding, BaseException):  # this image alone did not fit in GPU memory
                raise embedding
            self.segmenter.cache.put(image_id, embedding)
            future.set_result(embedding)
            return embedding, False, {"fetch": fetch_ms, "embed": _elapsed_ms(encode_start)}
        except BaseException as exc:
            if not future.done():
                future.set_exception(exc)
            raise
        finally:
            self._pending.pop(image_id, None)

    @serve.batch(max_batch_size=4, batch_wait_timeout_s=0.0)
    async def _encode_batch(self, images: list[np.ndarray]) -> list[Embedding | errors.ApiError]:
        self.metrics.batch_size.observe(len(images))
        return await self._on_model_thread(encode_in_parts, self.segmenter.encode, images)

    async def _on_model_thread(self, fn, *args):
        return await asyncio.get_running_loop().run_in_executor(self._model_thread, fn, *args)
