"""The OpenAPI document tells the truth (deployments/ingress/openapi.py): Schemathesis, run as an outside client with
every check (`st run .../openapi.json --checks all`, reading ./schemathesis.toml), finds no failure against the real
graph; the fields' shapes and every error answer are declared; a method a route does not take gets 405 with Allow;
a field a route does not take is refused rather than ignored."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from deployments.ingress.openapi import ERRORS, OPERATION_ERRORS
from images import jpeg

ROOT = Path(__file__).resolve().parents[1]
ST = Path(sys.executable).with_name("st")


@pytest.fixture(scope="module")
def document(app_url):
    return httpx.get(app_url + "/openapi.json", timeout=30).json()


def form_of(document: dict, path: str) -> dict:
    return document["paths"][path]["post"]["requestBody"]["content"]["multipart/form-data"]


@pytest.mark.e2e
def test_the_document_declares_the_fields_real_shapes(document):
    cutout = form_of(document, "/v1/cutout")
    fields = cutout["schema"]["properties"]
    assert fields["points"]["type"] == "array" and fields["points"]["items"]["maxItems"] == 2
    assert fields["labels"]["items"]["enum"] == [0, 1] and fields["box"]["minItems"] == 4
    assert fields["image"]["format"] == "binary" and fields["image"]["minLength"] == 1
    assert set(fields["format"]["enum"]) >= {"png", "webp", "jpeg"} and fields["quality"]["maximum"] == 100
    assert cutout["encoding"]["points"]["contentType"] == "application/json"
    assert "image/jpeg" in cutout["encoding"]["image"]["contentType"]
    assert cutout["schema"]["additionalProperties"] is False
    rules = cutout["schema"]["allOf"]
    assert {"required": ["image"]} in rules[0]["anyOf"] and {"required": ["image_id"]} in rules[0]["anyOf"]
    legacy = form_of(document, "/background-removal/remove")["schema"]
    assert legacy["required"] == ["image", "points"] and legacy["properties"]["points"]["minItems"] == 1


@pytest.mark.e2e
def test_every_error_answer_is_declared_with_its_body_and_retry_after(document):
    for path, statuses in OPERATION_ERRORS.items():
        responses = document["paths"][path]["post"]["responses"]
        for status in statuses:
            answer = responses[str(status)]
            assert answer["description"] == ERRORS[status]
            assert answer["content"]["application/json"]["schema"]["$ref"].endswith("/ErrorBody"), (path, status)
        assert responses["503"]["headers"]["Retry-After"]["required"] is True, path
    health = document["paths"]["/healthz"]["get"]["responses"]
    assert health["503"]["headers"]["Retry-After"]["required"] is True
    assert health["200"]["content"]["application/json"]["schema"]["$ref"].endswith("/Health")


@pytest.mark.e2e
@pytest.mark.parametrize("method,path,allowed", [("POST", "/healthz", "GET"), ("GET", "/v1/cutout", "POST"),
                                                  ("DELETE", "/v1/images", "POST"), ("PUT", "/", "GET")])
def test_a_method_a_route_does_not_take_answers_405_with_allow(app_url, method, path, allowed):
    response = httpx.request(method, app_url + path, content=b"{}", timeout=30)
    assert response.status_code == 405, response.text
    assert response.headers["allow"] == allowed and response.json()["error"]["code"] == "method_not_allowed"


@pytest.mark.e2e
def test_a_field_the_route_does_not_take_is_refused_not_ignored(app_url):
    files = {"image": ("p.jpg", jpeg(64, 48, seed=4), "image/jpeg")}
    typo = httpx.post(app_url + "/v1/cutout", files=files, data={"point": "[[10, 10]]"}, timeout=60)
    assert typo.status_code == 400 and typo.json()["error"]["code"] == "unknown_field", typo.text
    assert "`point`" in typo.json()["error"]["message"] and "points" in typo.json()["error"]["message"]
    fine = httpx.post(app_url + "/v1/cutout", files=files, data={"points": "[[10, 10]]"}, timeout=120)
    assert fine.status_code == 200, fine.text


@pytest.mark.e2e
def test_schemathesis_with_every_check_finds_no_failure(app_url):
    """The command docs/http-api.md gives, from the repository root so that schemathesis.toml applies; a fixed seed,
    so a failure reproduces."""
    run = subprocess.run([str(ST), "run", app_url + "/openapi.json", "--checks", "all", "--seed", "1",
                          "--max-examples", "25", "--no-color"],
                         cwd=ROOT, capture_output=True, text=True, timeout=900)
    output = run.stdout + run.stderr
    tested = re.search(r"(\d+) generated, (\d+) passed", output)
    assert run.returncode == 0 and tested, output[-6000:]
    assert int(tested.group(1)) == int(tested.group(2)) >= 200 and "errored" not in output, tested.group(0)
