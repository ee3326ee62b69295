"""Uploads belong to the API key that sent them, over HTTP on the real graph (tiny SAM 2.1, random weights): with
keys on, the image id is scoped to the key, another key's id answers 404, and nothing in an answer says that
another key sent the same photo; without keys the id is the content hash, as before."""

from __future__ import annotations

import json

import httpx
import pytest

from conftest import API_KEYS
from deployments.imaging import image_id_of
from images import jpeg

pytestmark = pytest.mark.e2e

A, B = ({"Authorization": f"Bearer {key}"} for key in API_KEYS)


def upload(url: str, data: bytes, headers: dict) -> str:
    response = httpx.post(url + "/v1/images", files={"image": ("p.jpg", data, "image/jpeg")}, headers=headers,
                          timeout=120)
    assert response.status_code == 200, response.text
    return response.json()["image_id"]


def click(url: str, headers: dict, **fields) -> httpx.Response:
    files = {"image": ("p.jpg", fields.pop("image"), "image/jpeg")} if "image" in fields else None
    return httpx.post(url + "/v1/cutout", data={"points": json.dumps([[40, 30]]), **fields}, files=files,
                      headers=headers, timeout=120)


def test_an_upload_is_only_reachable_with_the_key_that_sent_it(keyed_app_url):
    url = keyed_app_url
    data = jpeg(160, 120, seed=123)
    id_a = upload(url, data, A)
    id_b = upload(url, data, B)
    assert len({id_a, id_b, image_id_of(data)}) == 3  # one photo, an id per key, neither the content hash

    own = click(url, A, image_id=id_a)
    assert own.status_code == 200 and own.headers["x-image-id"] == id_a
    assert own.headers["x-embedding-cache"] == "hit"  # A's own upload warmed it: telling A says nothing new
    for headers, other in ((B, id_a), (A, id_b)):
        refused = click(url, headers, image_id=other)
        assert refused.status_code == 404 and refused.json()["error"]["code"] == "unknown_image_id", refused.text

    # B sends the photo itself: its embedding is cached (A uploaded it), and no header says so.
    sent = click(url, B, image=data)
    assert sent.status_code == 200 and sent.headers["x-image-id"] == id_b
    assert sent.headers["x-embedding-cache"] == "miss"
    timing = sent.headers["server-timing"]
    assert 'cache;desc="miss"' in timing and "embed;" not in timing and "fetch;" not in timing


def test_without_keys_the_image_id_is_the_content_hash(app_url):
    data = jpeg(160, 120, seed=124)
    assert upload(app_url, data, {}) == image_id_of(data)
    response = click(app_url, {}, image=data)
    assert response.status_code == 200 and response.headers["x-image-id"] == image_id_of(data)
    assert response.headers["x-embedding-cache"] == "hit"  # the upload above warmed it, and it is said
