"""The segmenter under faults, without Ray: the health check notices a model that cannot run, and a CUDA
out-of-memory error in an encoder batch becomes a smaller batch or an error answer, never a dead replica.
(torch.cuda.OutOfMemoryError can be raised on a CPU, which is how the tests fake it.)"""

from __future__ import annotations

import asyncio

import numpy as np
import pytest
import torch

from deployments.messages import ImageRef, Prompt, SegmentRequest
from deployments.segmenter import SegmenterDeployment, encode_in_parts, predict_or_error
from deployments.settings import SegmenterConfig
from deployments.errors import ApiError

from images import photo
from reliability import report

CONFIG = SegmenterConfig(model="tiny", checkpoint="random", device="cpu", max_batch_size=4)
CLICK = Prompt(np.array([[40, 30]], np.float32), np.array([1], np.int32))


@pytest.fixture(scope="module")
def run():
    """One event loop for the module: serve.batch keeps its queue (and the task draining it) per class, bound to
    the loop of its first call, as in a replica, where one loop runs for the replica's life."""
    loop = asyncio.new_event_loop()
    yield loop.run_until_complete
    loop.close()
    # Drop that queue again: the class is pickled by value when a later test deploys it, and a queue holding
    # futures of a closed loop cannot be pickled.
    SegmenterDeployment.func_or_class._encode_batch._get_max_batch_size.__self__._queue = None


@pytest.fixture
def shell(monkeypatch):
    """The Serve deployment's class itself, built without Ray (the model: tiny, seeded random weights)."""
    from ray.serve import batching

    # serve.batch's queue only reads the replica context for a warning about max_ongoing_requests.
    monkeypatch.setattr(batching._BatchQueue, "_warn_if_max_batch_size_exceeds_max_ongoing_requests", lambda self: None)
    return SegmenterDeployment.func_or_class(CONFIG)


def fake_oom_encoder(real_encode, fits: int, never: set[int] = frozenset()):
    """An encoder that runs out of GPU memory for batches larger than ``fits`` and for the images in ``never``."""
    calls = []

    def encode(images):
        calls.append(len(images))
        if len(images) > fits or any(int(image[0, 0, 0]) in never for image in images):
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB (fake)")
        return real_encode(images)

    return encode, calls


def marked(n: int, size=(60, 80)) -> list[np.ndarray]:
    images = [photo(size[1], size[0], seed=i) for i in range(n)]
    for i, image in enumerate(images):
        image[0, 0, 0] = i  # tells the fake encoder which image it sees
    return images


def test_out_of_memory_batch_is_retried_in_halves(shell):
    encode, calls = fake_oom_encoder(lambda images: [f"embedding {int(i[0, 0, 0])}" for i in images], fits=1)
    results = encode_in_parts(encode, marked(4))
    assert results == ["embedding 0", "embedding 1", "embedding 2", "embedding 3"]
    assert calls == [4, 2, 1, 1, 2, 1, 1]


def test_an_image_too_large_even_alone_gets_a_503_and_the_others_their_embeddings():
    encode, _ = fake_oom_encoder(lambda images: [f"embedding {int(i[0, 0, 0])}" for i in images], fits=4, never={2})
    results = encode_in_parts(encode, marked(4))
    assert results[:2] == ["embedding 0", "embedding 1"] and results[3] == "embedding 3"
    assert isinstance(results[2], ApiError) and (results[2].status, results[2].code) == (503, "gpu_out_of_memory")
    assert results[2].headers["Retry-After"]


def test_out_of_memory_in_the_mask_decoder_is_a_503():
    def predict(*_):
        raise torch.cuda.OutOfMemoryError("fake")

    with pytest.raises(ApiError) as info:
        predict_or_error(predict, None, CLICK)
    assert (info.value.status, info.value.code) == (503, "gpu_out_of_memory")


def test_the_deployment_survives_an_out_of_memory_batch(shell, run):
    """Concurrent cache misses share an encoder batch; the batch runs out of memory, one image never fits.
    Every request gets its own answer, and the replica keeps serving."""
    encode, calls = fake_oom_encoder(shell.segmenter.encode, fits=1, never={1})
    shell.segmenter.encode = encode
    images = marked(3)

    async def scenario():
        requests = [shell.segment(SegmentRequest(f"img{i}", ImageRef.local(image), CLICK))
                    for i, image in enumerate(images)]
        results = await asyncio.gather(*requests, return_exceptions=True)
        again = await shell.segment(SegmentRequest("img0", ImageRef.local(images[0]), CLICK))
        await shell.check_health()
        return results, again

    results, again = run(scenario())
    assert isinstance(results[1], ApiError) and results[1].code == "gpu_out_of_memory"
    assert results[0].logits.shape == (3, 256, 256) and results[2].logits.shape == (3, 256, 256)
    assert max(calls) > 1  # the misses were batched, and that batch was the one that failed
    assert again.cache_hit
    report("faults", f"fake CUDA OOM in an encoder batch: encoder calls by batch size {calls}; answers: "
                     f"{['ok' if not isinstance(r, Exception) else r.code for r in results]}; replica still serves")


def test_health_check_fails_when_the_model_cannot_run(shell, run):
    run(shell.check_health())  # healthy
    with torch.no_grad():
        for parameter in shell.segmenter.model.sam_mask_decoder.parameters():
            parameter.fill_(float("nan"))
    with pytest.raises(Exception, match="non-finite"):
        run(shell.check_health())


def test_a_broken_encoder_fails_its_request_with_503_and_then_the_health_check(shell, run):
    with torch.no_grad():
        shell.segmenter.model.image_encoder.trunk.patch_embed.proj.weight.fill_(float("nan"))
    run(shell.check_health())  # the decoder probe alone cannot see it ...
    with pytest.raises(ApiError) as info:
        run(shell.segment(SegmentRequest("x", ImageRef.local(photo(80, 60)), CLICK)))
    assert (info.value.status, info.value.code) == (503, "model_fault")
    with pytest.raises(Exception, match="image encoder"):  # ... but the failed request marks the replica
        run(shell.check_health())


def test_health_check_fails_on_a_device_that_returns_wrong_results(shell, monkeypatch):
    real_ones = torch.ones
    monkeypatch.setattr(torch, "ones", lambda *a, **kw: real_ones(*a, **kw) * 0)  # a device computing garbage
    with pytest.raises(RuntimeError, match="wrong result"):
        shell.segmenter.check()
