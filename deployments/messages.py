"""What travels between the stages. Small on purpose: ids, prompts, low-res logits and references to pixels."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np


@dataclass(frozen=True)
class Prompt:
    """Clicks and a box, in pixels of the image that the receiving stage holds."""

    points: np.ndarray | None = None  # (N, 2) float32, x then y
    labels: np.ndarray | None = None  # (N,) int32: 1 keep, 0 exclude
    box: np.ndarray | None = None  # (4,) float32: x0, y0, x1, y1

    @property
    def num_points(self) -> int:
        return 0 if self.points is None else len(self.points)

    @property
    def multimask(self) -> bool:
        # One click is ambiguous (part, object, group): ask SAM for three masks and keep the best.
        # More clicks or a box are not, and SAM's docs advise a single mask then.
        return self.num_points == 1 and self.box is None

    def scaled(self, sx: float, sy: float) -> "Prompt":
        if sx == 1.0 and sy == 1.0:
            return self
        scale = np.array([sx, sy], dtype=np.float32)
        return Prompt(
            points=None if self.points is None else (self.points * scale).astype(np.float32),
            labels=self.labels,
            box=None if self.box is None else (self.box * np.tile(scale, 2)).astype(np.float32),
        )


class ImageRef:
    """Pixels that a stage fetches only when it needs them.

    In a Ray graph it wraps an ObjectRef: Ray resolves only top-level arguments, so a ref nested here
    travels as a few bytes and the segmenter awaits it only on an embedding-cache miss. In process it
    simply holds the array.
    """

    __slots__ = ("_ref", "_array", "shape")

    def __init__(self, ref: Any = None, array: np.ndarray | None = None, shape: tuple[int, ...] = ()):
        self._ref, self._array = ref, array
        self.shape = tuple(array.shape) if array is not None else tuple(shape)

    @classmethod
    def local(cls, array: np.ndarray) -> "ImageRef":
        return cls(array=array)

    @classmethod
    def put(cls, array: np.ndarray) -> "ImageRef":
        import ray

        return cls(ref=ray.put(array), shape=array.shape)

    async def resolve(self) -> np.ndarray:
        if self._array is not None:
            return self._array
        return await self._ref

    @property
    def object_ref(self):
        """The ObjectRef in a Ray graph (a top-level argument to a handle call makes Ray hand over the array)."""
        return self._ref

    def get(self) -> np.ndarray:
        if self._array is not None:
            return self._array
        import ray

        return ray.get(self._ref)

    @property
    def nbytes(self) -> int:
        return int(np.prod(self.shape)) if self.shape else 0

    def __getstate__(self):
        return (self._ref, self._array, self.shape)

    def __setstate__(self, state):
        self._ref, self._array, self.shape = state


@dataclass(frozen=True)
class SegmentRequest:
    image_id: str
    image: ImageRef  # the model-size copy (long side <= 1024), fetched only on a cache miss
    prompt: Prompt  # in pixels of that copy
    sent_at: float = 0.0  # the ingress's hops.now() when it sent this (0: in process)


@dataclass(frozen=True)
class SegmentResult:
    image_id: str
    logits: np.ndarray  # (C, 256, 256) low-res mask logits, C = 3 for one click, else 1
    scores: np.ndarray  # (C,) SAM's predicted IoU per mask
    cache_hit: bool
    timings_ms: dict[str, float] = field(default_factory=dict)
    done_at: float = 0.0  # the segmenter replica's hops.now() when it answered (0: in process)


OutputFormat = Literal["png", "webp", "jpeg"]
MEDIA_TYPES_BY_FORMAT = {"png": "image/png", "webp": "image/webp", "jpeg": "image/jpeg"}


@dataclass(frozen=True)
class OutputOptions:
    format: OutputFormat = "png"
    mask_only: bool = False  # single-channel alpha instead of the cut-out
    background: tuple[int, int, int] | None = None  # fill colour instead of transparency
    crop: bool = False  # crop to the subject's bounding box
    crop_margin: int = 0  # pixels kept around the subject when cropping
    feather: float = 0.0  # extra softening of the edge, Gaussian sigma in pixels
    quality: int = 90  # WebP / JPEG quality
    refine: bool = False  # matting on SAM's uncertain band (deployments/edges.py)
    preview: bool = False  # the mask at SAM's own 256x256, for the client to stretch (deployments/preview.py)


@dataclass(frozen=True)
class Cutout:
    data: bytes
    media_type: str
    width: int
    height: int
    score: float
    image_id: str = ""
    cache_hit: bool = False
    timings_ms: dict[str, float] = field(default_factory=dict)
    source_megapixels: float = 0.0
    preview_scale: float = 0.0  # a preview's grey levels per logit (deployments/preview.py); 0 otherwise
    done_at: float = 0.0  # the postprocess replica's hops.now() when it answered (0: in process)


@dataclass(frozen=True)
class StoredImage:
    """An uploaded image kept for later clicks: references to its pixels plus what validation needs."""

    image_id: str
    width: int
    height: int
    full: ImageRef  # (H, W, 3) uint8, EXIF-oriented
    model_image: ImageRef  # the model-size copy (the same ref as full when the photo is small)
    alpha: ImageRef | None = None  # the upload's own transparency, if it had any
    nbytes: int = 0
    # The content hash the segmenter caches the embedding under (shared by every key); "" means image_id itself,
    # which it is without API keys. With keys, image_id is scoped to the key that uploaded (imaging.scoped_image_id).
    content_id: str = ""
    owner: str = ""  # the uploading API key's SHA-256 digest; "" without keys

    @property
    def embedding_id(self) -> str:
        return self.content_id or self.image_id

    @staticmethod
    def size_of(full: np.ndarray, model_image: np.ndarray, alpha: np.ndarray | None) -> int:
        """Bytes a record pins: a small image is its own model copy, so that copy is counted once."""
        return full.nbytes + (0 if model_image is full else model_image.nbytes) + (0 if alpha is None else alpha.nbytes)
