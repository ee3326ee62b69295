"""The project's metrics reach Ray's Prometheus endpoint and move when requests are served."""

import json
import time

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from images import jpeg

pytestmark = pytest.mark.e2e


def scrape(url: str) -> dict[str, float]:
    """Sum of each sample name's values across series (replicas, tags)."""
    totals: dict[str, float] = {}
    for family in text_string_to_metric_families(httpx.get(url, timeout=10).text):
        for sample in family.samples:
            if sample.name.startswith("ray_bgremove_"):
                totals[sample.name] = totals.get(sample.name, 0.0) + sample.value
    return totals


def wait_for(url: str, condition, deadline_s: float = 90.0) -> dict[str, float]:
    """Scrapes until `condition` holds for the largest value each name has had in any scrape so far. Ray's agent
    forgets a gauge not reported again within two export intervals (2 s here), and on a loaded machine a replica's
    report can come late: a gauge may be missing from one scrape and back in the next. Counters only grow, so their
    largest value is their last."""
    end = time.monotonic() + deadline_s
    seen = scrape(url)
    while not condition(seen) and time.monotonic() < end:
        time.sleep(1.0)
        for name, value in scrape(url).items():
            seen[name] = max(value, seen.get(name, value))
    return seen


def test_project_metrics_move(app_url, metrics_url):
    before = scrape(metrics_url)
    data = jpeg(320, 240, seed=77)
    upload = httpx.post(app_url + "/v1/images", files={"image": ("p.jpg", data, "image/jpeg")}, timeout=120)
    assert upload.status_code == 200
    image_id = upload.json()["image_id"]
    for clicks in ([[10, 10]], [[100, 100], [20, 20]]):
        response = httpx.post(app_url + "/v1/cutout", data={"image_id": image_id, "points": json.dumps(clicks)},
                              timeout=120)
        assert response.status_code == 200
    refused = httpx.post(app_url + "/v1/cutout", data={"image_id": image_id, "points": "[[9999, 1]]"}, timeout=60)
    assert refused.status_code == 422

    def moved(now):
        grew = lambda name, by=1: now.get(name, 0) >= before.get(name, 0) + by
        return (grew("ray_bgremove_embedding_cache_hits_total", 2) and grew("ray_bgremove_stage_ms_count", 4)
                and grew("ray_bgremove_bytes_out_total", 1) and grew("ray_bgremove_image_megapixels_count", 2)
                and grew("ray_bgremove_refused_requests_total", 1) and now.get("ray_bgremove_image_store_images", 0) >= 1
                and now.get("ray_bgremove_embedding_cache_bytes", 0) > 0
                and "ray_bgremove_gpu_memory_bytes" in now and "ray_bgremove_encoder_batch_size_count" in now)

    after = wait_for(metrics_url, moved)
    print({name: value for name, value in sorted(after.items()) if not name.endswith("_bucket")})
    assert moved(after), after
