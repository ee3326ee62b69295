"""GPU-only checks of the segmenter on the real device, skipped without CUDA; `scripts/gpu_check.sh` runs them on a
GPU machine. base_plus (the default model) with seeded random weights: no download, and masks that cover part of
each photo (27-32% of the pixels in FP32 for centre clicks on three of these photos, measured on a CPU). Only
torch, sam2 and Ray are imported, what the GPU machine's carried wheels hold.

- the CUDA-graph encoder gives what the eager encoder gives, within FP16 noise, for batches of 1 and 2;
- FP16 autocast masks have IoU >= 0.99 against FP32 masks on several photos (DESIGN.md's parity rule for FP16);
- a real CUDA out-of-memory (the device's caching allocator capped just above what is already allocated) is
  answered with 503 + Retry-After for every image of the batch, and the same segmenter serves again afterwards.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from deployments.messages import Prompt
from deployments.sam_model import build_model
from deployments.segmenter import Embedding, Segmenter, encode_in_parts
from deployments import errors
from deployments.settings import SegmenterConfig
from serve_app.samples import photo

pytestmark = [pytest.mark.skipif(not torch.cuda.is_available(),
                                 reason="needs a CUDA GPU; run scripts/gpu_check.sh on a GPU machine"),
              pytest.mark.timeout(600)]

MODEL = "base_plus"
# Several sizes and shapes, one larger than the model's 1024 px (it goes through the resize).
PHOTOS = [photo(w, h, seed) for w, h, seed in [(1024, 768, 1), (640, 480, 2), (2000, 1500, 3), (768, 1024, 4)]]


@pytest.fixture(scope="module")
def model() -> torch.nn.Module:
    config = SegmenterConfig(model=MODEL, checkpoint="random", device="cuda")
    return build_model(config, torch.device("cuda"), progress=False)


def segmenter(model: torch.nn.Module, **options) -> Segmenter:
    return Segmenter(SegmenterConfig(model=MODEL, checkpoint="random", device="cuda", **options), model=model,
                     progress=False)


def click(image: np.ndarray) -> Prompt:
    height, width = image.shape[:2]
    return Prompt(np.array([[width / 2, height / 2]], np.float32), np.array([1], np.int32))


def mask(seg: Segmenter, embedding: Embedding, image: np.ndarray) -> np.ndarray:
    """The 256x256 mask SAM scores best for a click at the photo's centre (what the postprocess upsamples)."""
    logits, scores = seg.predict(embedding, click(image))
    return logits[int(np.argmax(scores))].astype(np.float32) > 0


def iou(a: np.ndarray, b: np.ndarray) -> float:
    return float((a & b).sum() / max(1, (a | b).sum()))


def levels(embedding: Embedding) -> list[torch.Tensor]:
    return [embedding.image_embed, *embedding.high_res_feats]


def test_cuda_graph_encoder_matches_the_eager_encoder(model):
    eager = segmenter(model, precision="fp16")
    graphed = segmenter(model, precision="fp16", cuda_graphs=True)
    assert graphed.graphs.batch_sizes == [1, 2], "capture failed and the segmenter fell back to eager"
    for batch in (1, 2):
        for start in range(0, len(PHOTOS), batch):
            images = PHOTOS[start:start + batch]
            for a, b, image in zip(eager.encode(images), graphed.encode(images), images):
                for level_a, level_b in zip(levels(a), levels(b)):
                    torch.testing.assert_close(level_b.float(), level_a.float(), atol=2e-2, rtol=2e-2)
                assert iou(mask(graphed, b, image), mask(eager, a, image)) >= 0.99


def test_fp16_masks_match_fp32_masks(model):
    fp32 = segmenter(model, precision="fp32")
    fp16 = segmenter(model, precision="fp16")
    for image in PHOTOS:
        reference = mask(fp32, fp32.encode([image])[0], image)
        assert 0.0 < reference.mean() < 1.0, "the FP32 mask is empty or full: nothing to compare"
        assert iou(mask(fp16, fp16.encode([image])[0], image), reference) >= 0.99


def test_a_real_out_of_memory_answers_503_and_the_segmenter_recovers(model):
    seg = segmenter(model, precision="fp16")
    torch.cuda.synchronize()
    torch.cuda.empty_cache()
    total = torch.cuda.get_device_properties(0).total_memory
    # The allocator now refuses to grow past what is already allocated: the next encoder pass fails for real.
    torch.cuda.set_per_process_memory_fraction(torch.cuda.memory_reserved() / total)
    try:
        with pytest.raises(torch.cuda.OutOfMemoryError):
            seg.encode(PHOTOS)
        answers = encode_in_parts(seg.encode, PHOTOS)  # the batch, then halves, then single images
        assert len(answers) == len(PHOTOS)
        for answer in answers:
            assert isinstance(answer, errors.ApiError), answer
            assert answer.status == 503 and answer.headers.get("Retry-After")
    finally:
        torch.cuda.set_per_process_memory_fraction(1.0)
    assert seg.fault is None  # out of memory is not a broken model: the health check still passes
    seg.check()
    answers = encode_in_parts(seg.encode, PHOTOS)
    assert all(isinstance(answer, Embedding) for answer in answers)
    assert 0.0 < mask(seg, answers[0], PHOTOS[0]).mean() < 1.0
