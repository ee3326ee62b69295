"""End to end through Ray Serve over HTTP: the real graph, the real SAM 2.1 code (tiny, seeded random weights; the
old route's answer on the test checkpoint random-sharp, whose masks have real 0 and 255 pixels)."""

import json
import math
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import numpy as np
import pytest
import torch

from images import decode, jpeg, photo, png, real_mask
from parity import LOGIT_NOISE, PREVIEW_MIN_IOU, assert_same_mask, iou, preview_mask
from reliability import metric_samples, wait_until

pytestmark = pytest.mark.e2e


def post(url, path, files=None, data=None, **kw):
    return httpx.post(url + path, files=files, data=data, timeout=120, **kw)


# -- parity with sam2's own predictor ---------------------------------------------------------------------------

@pytest.fixture(scope="module")
def predictor():
    """sam2's SAM2ImagePredictor on the graph's weights (tiny, seeded random), in this process."""
    from sam2.sam2_image_predictor import SAM2ImagePredictor

    from deployments.sam_model import build_model
    from deployments.settings import SegmenterConfig

    return SAM2ImagePredictor(build_model(SegmenterConfig(model="tiny", checkpoint="random"), torch.device("cpu"),
                                          progress=False))


def sam2_logits(predictor, rgb: np.ndarray, points, labels=None, box=None) -> tuple[np.ndarray, float]:
    """sam2's full-size logits (mask: > 0) and score for a photo as the graph is documented to treat it:
    SAM2ImagePredictor on the model-size copy (long side <= 1024) with the prompt scaled onto that copy (float32,
    as the ingress does), the chosen mask's low-res logits brought to the photo's size by sam2's own
    postprocess_masks. For a photo of at most 1024 px this is plain set_image + predict on the photo."""
    from deployments.imaging import model_copy

    height, width = rgb.shape[:2]
    model = model_copy(rgb, 1024)
    scale = np.array([model.shape[1] / width, model.shape[0] / height], np.float32)
    points = None if points is None else np.array(points, np.float32) * scale
    box = None if box is None else np.array(box, np.float32) * np.tile(scale, 2)
    labels = None if points is None else np.array(labels if labels is not None else [1] * len(points))
    multimask = points is not None and len(points) == 1 and box is None  # one click: SAM's best of three
    predictor.set_image(model)
    _, scores, low_res = predictor.predict(points, labels, box, multimask_output=multimask)
    best = int(np.argmax(scores)) if multimask else 0
    logits = torch.from_numpy(low_res[best:best + 1][None])
    return predictor._transforms.postprocess_masks(logits, (height, width))[0, 0].numpy(), float(scores[best])


def served_mask(response: httpx.Response, size: tuple[int, int]) -> np.ndarray:
    """The mask-only answer as booleans: alpha >= 128 is SAM's mask."""
    assert response.status_code == 200, response.text
    image = decode(response.content)
    assert image.size == size
    return np.asarray(image) >= 128


def test_old_service_curl_form(sharp_app_url):
    # curl -F image=@photo.jpg -F 'points=[[100, 200], [300, 400]]' .../background-removal/remove
    response = post(sharp_app_url, "/background-removal/remove", files={"image": ("photo.jpg", jpeg(640, 480),
                    "image/jpeg")}, data={"points": "[[100, 200], [300, 400]]"})
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "image/png"
    image = decode(response.content)
    assert (image.mode, image.size) == ("RGBA", (640, 480))
    alpha = np.asarray(image)[..., 3]
    real_mask(alpha)  # some of the photo kept, the rest transparent
    assert alpha[200, 100] == alpha[400, 300] == 255, "a clicked point is not opaque"
    assert response.headers["X-Image-Id"] and math.isfinite(float(response.headers["X-Mask-Score"]))
    assert "segment;dur=" in response.headers["Server-Timing"] and "cache;desc=" in response.headers["Server-Timing"]


def test_v1_cutout_labels_box_and_masks_equal_sam2_predictor(app_url, predictor):
    """Parity through the whole graph: the mask-only output equals SAM2ImagePredictor's mask (and the score
    header its score) for the same seeded random weights, computed here in the test process (tests/parity.py)."""
    rgb = photo(640, 480, seed=11)
    data = png(640, 480, seed=11)  # lossless, so both sides see the same pixels
    points, labels, box = [[320, 240], [100, 100]], [1, 0], [120, 80, 520, 440]
    response = post(app_url, "/v1/cutout", files={"image": ("p.png", data, "image/png")},
                    data={"points": json.dumps(points), "labels": json.dumps(labels), "box": json.dumps(box),
                          "mask_only": "true"})
    logits, score = sam2_logits(predictor, rgb, points, labels, box)
    assert_same_mask(served_mask(response, (640, 480)), logits)
    assert abs(float(response.headers["X-Mask-Score"]) - score) <= 5e-5 + LOGIT_NOISE  # 4 decimals


def test_photo_larger_than_1024_px_masks_equal_sam2_through_the_resize(app_url, predictor):
    """A 2000x1500 photo: the segmenter sees the ingress's 1024x768 copy, the mask comes back at 2000x1500:
    what sam2 gives on that copy, its logits upsampled to full size by sam2 itself (up to LOGIT_NOISE)."""
    rgb = photo(2000, 1500, seed=12)
    for points, labels in (([[1000, 750], [300, 200]], [1, 0]), ([[1401, 333]], [1])):
        response = post(app_url, "/v1/cutout", files={"image": ("big.png", png(2000, 1500, seed=12), "image/png")},
                        data={"points": json.dumps(points), "labels": json.dumps(labels), "mask_only": "true"})
        logits, score = sam2_logits(predictor, rgb, points, labels)
        assert_same_mask(served_mask(response, (2000, 1500)), logits, points)
        assert abs(float(response.headers["X-Mask-Score"]) - score) <= 5e-5 + LOGIT_NOISE  # 4 decimals


@pytest.fixture(scope="module")
def batching_url(serve_instance):
    """The graph with a segmenter that takes 4 requests at once and waits up to 10 s to fill a batch of 4
    (production: 2 at once, no wait), so that four photos sent together share one encoder pass."""
    from ray import serve

    from serve_app.app import bind_graph
    from serve_app.config import AppArgs

    from conftest import TEST_ARGS

    args = AppArgs(**{**TEST_ARGS, "max_batch_size": 4, "batch_wait_timeout_s": 10.0})
    serve.run(bind_graph(args, {"Segmenter": {"max_ongoing_requests": 4}}), name="parity_batch",
              route_prefix="/parity-batch")
    yield serve_instance + "/parity-batch"
    serve.delete("parity_batch")


def test_four_photos_sent_at_once_share_an_encoder_batch_and_match_sam2(batching_url, predictor, metrics_url):
    shapes = [(640, 480, 21), (480, 640, 22), (800, 600, 23), (512, 512, 24)]

    def send(shape):
        width, height, seed = shape
        return post(batching_url, "/v1/cutout", files={"image": ("p.png", png(width, height, seed), "image/png")},
                    data={"points": json.dumps([[width // 2, height // 3]]), "mask_only": "true"})

    with ThreadPoolExecutor(len(shapes)) as pool:
        responses = list(pool.map(send, shapes))
    for (width, height, seed), response in zip(shapes, responses):
        assert response.status_code == 200, response.text
        assert response.headers["X-Embedding-Cache"] == "miss"
        logits, _ = sam2_logits(predictor, photo(width, height, seed), [[width // 2, height // 3]])
        assert_same_mask(served_mask(response, (width, height)), logits, (width, height))

    def batches_of_four():  # the segmenter's histogram: batches larger than 3 images
        samples = metric_samples(metrics_url, "ray_bgremove_encoder_batch_size_bucket", application="parity_batch")
        total = sum(v for labels, v in samples if labels["le"] == "+Inf")
        return total - sum(v for labels, v in samples if labels["le"] == "3.0")

    assert wait_until(batches_of_four, 60, what="the encoder batch in the metrics") == 1


def test_python_handle_returns_png_bytes(app_url):
    from ray import serve

    handle = serve.get_app_handle("background_remover")
    data = jpeg(320, 240, seed=2)
    result = handle.remove.remote(data, points=[[160, 120]]).result(timeout_s=120)
    image = decode(result)
    assert (image.format, image.mode, image.size) == ("PNG", "RGBA", (320, 240))


def test_handle_refusal_is_an_api_error(app_url):
    from ray import serve

    from deployments.errors import ApiError

    handle = serve.get_app_handle("background_remover")
    with pytest.raises(Exception) as info:
        handle.remove.remote(jpeg(320, 240, seed=2), points=[[999, 1]]).result(timeout_s=60)
    error = info.value if isinstance(info.value, ApiError) else getattr(info.value, "cause", info.value)
    assert isinstance(error, ApiError) and error.status == 422


@pytest.mark.parametrize("files, data, status, code", [
    ({"image": ("doc.jpg", b"%PDF-1.4 not an image", "image/jpeg")}, {"points": "[[1, 1]]"}, 415, "unsupported_media_type"),
    ({"image": ("p.jpg", jpeg(64, 48), "image/jpeg")}, {"points": "[[100, 10]]"}, 422, "point_outside_image"),
    ({"image": ("p.jpg", jpeg(64, 48), "image/jpeg")}, {"points": "[[1, 1]]", "labels": "[1, 0]"}, 422,
     "labels_length_mismatch"),
    ({"image": ("p.jpg", jpeg(64, 48), "image/jpeg")}, {"points": "[[1, 1"}, 400, "malformed_json"),
    ({"image": ("p.jpg", jpeg(64, 48), "image/jpeg")}, {"box": "[1, 1, 500, 500]"}, 422, "box_outside_image"),
    (None, {"points": "[[1, 1]]"}, 400, "missing_image"),
])
def test_v1_cutout_errors(app_url, files, data, status, code):
    response = post(app_url, "/v1/cutout", files=files, data=data)
    assert response.status_code == status, response.text
    assert response.json()["error"]["code"] == code and response.json()["error"]["message"]


def test_legacy_route_missing_points_is_400(app_url):
    response = post(app_url, "/background-removal/remove", files={"image": ("p.jpg", jpeg(64, 48), "image/jpeg")})
    assert response.status_code == 400 and response.json()["error"]["code"] == "malformed_request"


def test_too_many_pixels_is_413(app_url):
    import io

    from PIL import Image

    buffer = io.BytesIO()
    Image.new("L", (6000, 5000)).save(buffer, format="PNG")  # 30 MP > 25 MP default
    response = post(app_url, "/v1/cutout", files={"image": ("big.png", buffer.getvalue(), "image/png")},
                    data={"points": "[[1, 1]]"})
    assert response.status_code == 413 and response.json()["error"]["code"] == "too_many_pixels"


def test_upload_once_click_many(app_url):
    data = jpeg(400, 300, seed=21)
    info = post(app_url, "/v1/images", files={"image": ("p.jpg", data, "image/jpeg")})
    assert info.status_code == 200, info.text
    body = info.json()
    assert (body["width"], body["height"]) == (400, 300) and len(body["image_id"]) == 32
    for clicks in ([[200, 150]], [[200, 150], [50, 50]]):
        response = post(app_url, "/v1/cutout", data={"image_id": body["image_id"], "points": json.dumps(clicks),
                                                     "labels": json.dumps([1] + [0] * (len(clicks) - 1))})
        assert response.status_code == 200, response.text
        assert response.headers["X-Image-Id"] == body["image_id"]
        assert response.headers["X-Embedding-Cache"] == "hit"  # warmed by the upload, on the routed replica
        assert decode(response.content).size == (400, 300)


def test_preview_is_the_mask_at_sams_resolution_answered_without_the_postprocess(app_url):
    """The web page's click: the 256x256 preview, upsampled as the page does, is the full-size mask-only answer
    (IoU >= 0.99), with the same score; the ingress answers it from the logits (no postprocess timing)."""
    width, height = 640, 480
    info = post(app_url, "/v1/images", files={"image": ("p.jpg", jpeg(width, height, seed=31), "image/jpeg")}).json()
    fields = {"image_id": info["image_id"], "points": json.dumps([[320, 240], [60, 50]]), "labels": "[1, 0]"}
    full = post(app_url, "/v1/cutout", data={**fields, "mask_only": "true"})
    preview = post(app_url, "/v1/cutout", data={**fields, "preview": "true"})
    assert preview.status_code == 200, preview.text
    image = decode(preview.content)
    assert (image.format, image.mode, image.size) == ("PNG", "L", (256, 256))
    assert preview.headers["X-Mask-Score"] == full.headers["X-Mask-Score"]
    assert float(preview.headers["X-Preview-Scale"]) > 0 and "X-Preview-Scale" not in full.headers
    timings = preview.headers["Server-Timing"]
    assert "preview;dur=" in timings and "postprocess" not in timings and "postprocess" in full.headers["Server-Timing"]
    mask = served_mask(full, (width, height))
    assert 0 < mask.sum() < mask.size
    score = iou(preview_mask(np.asarray(image), float(preview.headers["X-Preview-Scale"]), height, width), mask)
    assert score >= PREVIEW_MIN_IOU, f"IoU {score:.4f}"
    refused = post(app_url, "/v1/cutout", data={**fields, "preview": "true", "crop": "true"})
    assert (refused.status_code, refused.json()["error"]["code"]) == (422, "preview_options")


def _timings(response: httpx.Response) -> dict[str, float]:
    from serve_app.bench.stats import server_timing

    assert response.status_code == 200, response.text
    return server_timing(response.headers["Server-Timing"])


def test_each_hop_between_replicas_is_timed_and_fits_inside_the_ingress_total(app_url):
    """A cut-out crosses three hops (ingress -> segmenter -> postprocess -> ingress), a preview two; each is timed
    by the two replicas' wall clocks (one machine here), and the hops and the stages' own time never add up to more
    than the ingress's total, which spans them all."""
    from deployments import hops

    info = post(app_url, "/v1/images", files={"image": ("p.jpg", jpeg(320, 240, seed=33), "image/jpeg")}).json()
    fields = {"image_id": info["image_id"], "points": "[[160, 120]]"}
    cutout = _timings(post(app_url, "/v1/cutout", data=fields))
    preview = _timings(post(app_url, "/v1/cutout", data={**fields, "preview": "true"}))
    assert set(hops.NAMES) <= set(cutout)
    assert {hops.TO_SEGMENTER, hops.BACK} <= set(preview) and hops.TO_POSTPROCESS not in preview
    for timings, stages in ((cutout, ("segment", "postprocess")), (preview, ("segment", "preview"))):
        spent = [timings[name] for name in hops.NAMES if name in timings]
        assert all(hop > 0 for hop in spent), timings
        assert sum(spent) + sum(timings[stage] for stage in stages) <= timings["total"] + 0.1, timings


def test_unknown_image_id_is_404_telling_to_upload_again(app_url):
    response = post(app_url, "/v1/cutout", data={"image_id": "0" * 32, "points": "[[1, 1]]"})
    assert response.status_code == 404
    assert "upload" in response.json()["error"]["message"]


def test_healthz_and_docs(app_url):
    health = httpx.get(app_url + "/healthz", timeout=30)
    assert health.status_code == 200 and health.json()["status"] == "ok"
    assert httpx.get(app_url + "/docs", timeout=30).status_code == 200
    spec = httpx.get(app_url + "/openapi.json", timeout=30).json()
    assert {"/background-removal/remove", "/v1/cutout", "/v1/images", "/healthz"} <= set(spec["paths"])


def ingress_requests(metrics_url: str, app: str) -> dict[str, float]:
    """Requests each Ingress replica of ``app`` answered, from Ray Serve's own per-replica counter."""
    counts: dict[str, float] = {}
    for labels, value in metric_samples(metrics_url, "ray_serve_deployment_request_counter_total", application=app,
                                        deployment="Ingress"):
        counts[labels["replica"]] = counts.get(labels["replica"], 0.0) + value
    return counts


@pytest.fixture(scope="module")
def short_ttl(serve_instance, app_url):
    """A second app, two ingress replicas, whose image store forgets photos ttl_s after their last use. ttl_s is ten
    times what a first cut-out of a new photo took on the session's app just now (8 s at least): the clicks made
    right after an upload must not outlast it on a slow or busy machine."""
    from ray import serve

    from serve_app.app import bind_graph
    from serve_app.config import AppArgs

    from conftest import TEST_ARGS

    start = time.monotonic()
    measured = post(app_url, "/v1/cutout", files={"image": ("p.jpg", jpeg(320, 240, seed=4100), "image/jpeg")},
                    data={"points": "[[160, 120]]"})
    elapsed = time.monotonic() - start
    assert measured.status_code == 200 and measured.headers["X-Embedding-Cache"] == "miss", measured.text
    ttl_s = max(8.0, 10 * elapsed)
    serve.run(bind_graph(AppArgs(**{**TEST_ARGS, "image_ttl_s": ttl_s}), {"Ingress": {"num_replicas": 2}}),
              name="short_ttl", route_prefix="/short-ttl")
    yield serve_instance + "/short-ttl", ttl_s
    serve.delete("short_ttl")


def test_image_id_works_from_every_ingress_replica_then_expires(short_ttl, metrics_url):
    url, ttl_s = short_ttl
    data = jpeg(320, 240, seed=41)
    first = post(url, "/v1/cutout", files={"image": ("p.jpg", data, "image/jpeg")}, data={"points": "[[160, 120]]"})
    assert first.status_code == 200, first.text
    image_id = first.headers["X-Image-Id"]
    # Separate connections spread over both ingress replicas; every click right away finds the photo.
    clicks = 16
    for click in range(clicks):
        with httpx.Client(timeout=120) as fresh_connection:
            response = fresh_connection.post(url + "/v1/cutout",
                                             data={"image_id": image_id, "points": f"[[{100 + click}, 100]]"})
        assert response.status_code == 200, response.text
    # Which replica answered each: Serve's per-replica counters, once they hold all 1 + clicks requests (this app's
    # only ones). Each replica answered at least two, so at least one click.
    def all_counted():
        counts = ingress_requests(metrics_url, "short_ttl")
        return counts if sum(counts.values()) >= 1 + clicks else None

    counts = wait_until(all_counted, 60, what="the ingress replicas' request counters")
    assert sum(counts.values()) == 1 + clicks and len(counts) == 2 and min(counts.values()) >= 2, counts
    # Past the TTL since the last click, and past the ingress replicas' own memory of the record (a quarter of it).
    time.sleep(1.25 * ttl_s + 1.0)
    expired = post(url, "/v1/cutout", data={"image_id": image_id, "points": "[[100, 100]]"})
    assert expired.status_code == 404
    assert expired.json()["error"]["code"] == "unknown_image_id" and "upload" in expired.json()["error"]["message"]
