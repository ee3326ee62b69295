"""The segmenter against sam2's own SAM2ImagePredictor (same random weights, FP32 on CPU): the same masks, up to
float rounding at the threshold (tests/parity.py). Also the embedding cache: a hit gives the same answer as a miss."""

import numpy as np
import pytest

from deployments.messages import OutputOptions, Prompt
from deployments.edges import upsample_logits
from deployments.postprocess import Postprocessor
from deployments.preview import choose_mask
from deployments.segmenter import Segmenter
from deployments.segmenter.prepared import PreparedImages
from deployments.settings import SegmenterConfig

from images import photo
from parity import LOGIT_NOISE, assert_equal_within_rounding, assert_same_mask


@pytest.fixture(scope="module")
def segmenter():
    return Segmenter(SegmenterConfig(model="tiny", checkpoint="random", device="cpu"), progress=False)


@pytest.fixture(scope="module")
def image():
    return photo(640, 480, seed=3)


@pytest.fixture(scope="module")
def predictor(segmenter, image):
    from sam2.sam2_image_predictor import SAM2ImagePredictor

    predictor = SAM2ImagePredictor(segmenter.model)
    predictor.set_image(image)
    return predictor


PROMPTS = {
    "one click": Prompt(np.array([[320, 240]], np.float32), np.array([1], np.int32)),
    "keep and exclude": Prompt(np.array([[320, 240], [100, 80], [500, 400]], np.float32), np.array([1, 0, 0], np.int32)),
    "box": Prompt(box=np.array([150, 100, 500, 420], np.float32)),
    "box and clicks": Prompt(np.array([[320, 240], [160, 110]], np.float32), np.array([1, 0], np.int32),
                             np.array([150, 100, 500, 420], np.float32)),
}


@pytest.mark.parametrize("name", PROMPTS)
def test_masks_equal_sam2_image_predictor(name, segmenter, predictor, image):
    prompt = PROMPTS[name]
    result = segmenter.segment("parity", image, prompt)
    logits, scores, low_res = predictor.predict(prompt.points, prompt.labels, prompt.box,
                                                multimask_output=prompt.multimask, return_logits=True)
    np.testing.assert_allclose(result.scores, scores, rtol=0, atol=LOGIT_NOISE)
    np.testing.assert_allclose(np.clip(result.logits, -32, 32), low_res, rtol=0, atol=LOGIT_NOISE)
    best = int(np.argmax(scores)) if prompt.multimask else 0
    assert choose_mask(result.scores) == best
    assert_same_mask((upsample_logits(result.logits[best], 480, 640) > 0).numpy(), logits[best], name)
    # And through the whole postprocess: the mask-only output's alpha >= 128 is SAM's mask.
    mask_png = Postprocessor().render(result, image, OutputOptions(mask_only=True))
    from images import decode
    assert_same_mask(np.asarray(decode(mask_png.data)) >= 128, logits[best], name)


def test_exclude_points_and_boxes_change_the_mask(segmenter, image):
    one = segmenter.segment("parity", image, PROMPTS["one click"])
    excl = segmenter.segment("parity", image, PROMPTS["keep and exclude"])
    assert not np.array_equal(one.logits[choose_mask(one.scores)], excl.logits[0])


def test_cache_hit_gives_the_same_answer(image):
    segmenter = Segmenter(SegmenterConfig(model="tiny", checkpoint="random", device="cpu"), progress=False)
    prompt = PROMPTS["keep and exclude"]
    miss = segmenter.segment("img", image, prompt)
    hit = segmenter.segment("img", None, prompt)  # no pixels: must come from the cache
    assert (miss.cache_hit, hit.cache_hit) == (False, True)
    assert "embed" in miss.timings_ms and "embed" not in hit.timings_ms
    assert np.array_equal(miss.logits, hit.logits) and np.array_equal(miss.scores, hit.scores)
    assert segmenter.cache.stats()["hits"] == 1
    with pytest.raises(KeyError):
        segmenter.segment("never-seen", None, prompt)


def test_embedding_cache_evicts_by_bytes(segmenter, image):
    embedding = segmenter.encode([image])[0]
    assert embedding.nbytes > 4_000_000  # FP32 tiny: image embed + two high-res levels
    small = Segmenter(SegmenterConfig(model="tiny", checkpoint="random", device="cpu",
                                      embedding_cache_bytes=int(embedding.nbytes * 1.5)), model=segmenter.model)
    small.segment("a", image, PROMPTS["one click"])
    small.segment("b", photo(640, 480, seed=9), PROMPTS["one click"])
    assert "a" not in small.cache and "b" in small.cache and small.cache.evictions == 1


def test_batched_encoder_matches_single(segmenter, image):
    other = photo(800, 600, seed=5)
    single = segmenter.encode([other])[0]
    batched = segmenter.encode([image, other])
    assert batched[1].image_hw == (600, 800)
    np.testing.assert_allclose(batched[1].image_embed.numpy(), single.image_embed.numpy(), rtol=1e-3, atol=1e-3)


@pytest.mark.parametrize("multimask", [True, False])
def test_prepared_decoder_equals_sam2_mask_decoder_within_rounding(segmenter, multimask):
    """deployments/decoder.py reuses the image-only half of the first attention layer: sam2's numbers up to float
    rounding, the same masks and the same chosen mask."""
    import torch

    from deployments import decoder

    generator = torch.Generator().manual_seed(7)
    image_embed = torch.randn(1, 256, 64, 64, generator=generator)
    high_res = (torch.randn(1, 32, 256, 256, generator=generator), torch.randn(1, 64, 128, 128, generator=generator))
    points = (torch.tensor([[[300.0, 200.0], [800.0, 700.0], [100.0, 900.0]]]), torch.tensor([[1, 0, 1]]))
    model = segmenter.model
    with torch.inference_mode():
        dense_pe = model.sam_prompt_encoder.get_dense_pe()
        pos_src = torch.repeat_interleave(dense_pe, 1, dim=0)
        no_mask_dense = model.sam_prompt_encoder(points=None, boxes=None, masks=None)[1]
        sparse, dense = model.sam_prompt_encoder(points=points, boxes=None, masks=None)
        expected_masks, expected_iou, _, _ = model.sam_mask_decoder(
            image_embeddings=image_embed, image_pe=dense_pe, sparse_prompt_embeddings=sparse,
            dense_prompt_embeddings=dense, multimask_output=multimask, repeat_image=False,
            high_res_features=list(high_res))
        prepared = decoder.prepare(model, image_embed, high_res, decoder.as_tokens(pos_src), no_mask_dense)
        for _ in range(2):  # and again from the same prepared image, as a second click does
            masks, iou = decoder.decode(model, prepared, sparse, multimask)
            assert_equal_within_rounding(masks, expected_masks, "mask logits")
            assert_equal_within_rounding(iou, expected_iou, "predicted IoU")
            assert choose_mask(iou[0].numpy()) == choose_mask(expected_iou[0].numpy())
    kept = (expected_masks > 0).float().mean().item()
    assert 0 < kept < 1, kept  # the masks compared are neither empty nor full


def test_prepared_images_are_kept_for_the_most_recent_live_embeddings_only(image):
    segmenter = Segmenter(SegmenterConfig(model="tiny", checkpoint="random", device="cpu"), progress=False)
    embedding = segmenter.encode([image])[0]
    prompt = PROMPTS["one click"]
    first = segmenter.predict(embedding, prompt)
    prepared = segmenter.prepared.get(embedding)
    assert segmenter.prepared.get(embedding) is prepared  # the second click reuses it
    others = [segmenter._probe_embedding() for _ in range(PreparedImages.MAX_IMAGES)]
    for other in others:
        segmenter.prepared.get(other)
    assert len(segmenter.prepared) == PreparedImages.MAX_IMAGES  # the oldest, ours, made room
    del others, other  # embeddings evicted from the cache: their prepared images go at the next insertion
    again = segmenter.predict(embedding, prompt)  # prepared anew: the same answer
    assert len(segmenter.prepared) == 1
    assert all(np.array_equal(a, b) for a, b in zip(first, again))


def test_upscaling_as_a_matrix_product_equals_the_transposed_convolutions(segmenter):
    """The decoder's 2x2 stride-2 transposed convolutions run as a matrix product and a pixel shuffle
    (deployments/decoder.py, 2-4x faster on the CPU): the modules' own numbers up to float rounding."""
    import torch

    from deployments.decoder import _upscale

    dc1, _, _, dc2, _ = segmenter.model.sam_mask_decoder.output_upscaling
    generator = torch.Generator().manual_seed(11)
    with torch.inference_mode():
        for conv, size in ((dc1, 64), (dc2, 128)):
            x = torch.randn(1, conv.in_channels, size, size, generator=generator)
            assert_equal_within_rounding(_upscale(conv, x), conv(x), f"upscaler {size}")
        odd = torch.nn.ConvTranspose2d(8, 4, 3, 2)  # any other shape falls back to the module: the same call
        x = torch.randn(1, 8, 5, 5, generator=generator)
        assert _upscale(odd, x).shape == (1, 4, 11, 11)
        assert_equal_within_rounding(_upscale(odd, x), odd(x), "fallback")
