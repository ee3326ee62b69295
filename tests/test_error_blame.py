"""Errors blamed on the right side: a file that is not an image or is damaged is the client's (4xx); running out of
memory is ours and worth a retry (503 + Retry-After); any other exception is ours too, a 500 whose traceback is logged
and counted, never a 4xx that blames the photo. The same rule over HTTP (the ingress) and in `bgremove batch` rows,
where a 5xx row is tried again on a rerun."""

from __future__ import annotations

import asyncio
import io
import json
import logging
import pickle
import struct
import zlib

import pytest
from PIL import Image, ImageFile

from deployments import errors, http_errors, imaging
from deployments.imaging import decode_image
from deployments.ingress.routes import IngressRoutes, as_api_error
from deployments.settings import GuardConfig, IngressLimits
from images import encode, jpeg, photo

LIMITS = IngressLimits()


def failing(exc: BaseException):
    def fail(*_args, **_kwargs):
        raise exc
    return fail


# -- imaging: what a decoder raises for a bad file is a 4xx; nothing else is ----------------------------------------


@pytest.mark.parametrize("exc", [OSError("broken data stream"), SyntaxError("not a PNG file"), ValueError("bad tag"),
                                 EOFError(), struct.error("unpack"), zlib.error("incorrect header check")])
def test_decoder_errors_while_loading_are_the_files_fault(monkeypatch, exc):
    data = encode(photo(64, 48), "PNG")
    monkeypatch.setattr(ImageFile.ImageFile, "load", failing(exc))
    with pytest.raises(errors.ApiError) as refused:
        decode_image(data, LIMITS)
    assert (refused.value.status, refused.value.code) == (400, "corrupt_image")


@pytest.mark.parametrize("exc", [SyntaxError("broken header"), ValueError("bad size"), OSError("cannot identify")])
def test_decoder_errors_while_opening_answer_not_an_image(monkeypatch, exc):
    data = encode(photo(64, 48), "PNG")
    monkeypatch.setattr(imaging.Image, "open", failing(exc))
    with pytest.raises(errors.ApiError) as refused:
        decode_image(data, LIMITS)
    assert refused.value.status == 415


def test_real_bad_files_are_still_refused_with_4xx():
    whole = jpeg(200, 150, seed=1)
    truncated = whole[:len(whole) // 2]  # the header reads, the pixels do not
    png = encode(photo(200, 150), "PNG")
    for data, status in ((truncated, 400), (png[:len(png) // 2], 400), (b"not an image at all", 415)):
        with pytest.raises(errors.ApiError) as refused:
            decode_image(data, LIMITS)
        assert refused.value.status == status, (data[:12], refused.value)


@pytest.mark.parametrize("where", ["open", "load"])
def test_memory_error_is_not_blamed_on_the_file(monkeypatch, where):
    data = encode(photo(64, 48), "PNG")
    if where == "open":
        monkeypatch.setattr(imaging.Image, "open", failing(MemoryError()))
    else:
        monkeypatch.setattr(ImageFile.ImageFile, "load", failing(MemoryError()))
    with pytest.raises(MemoryError):
        decode_image(data, LIMITS)


def test_a_bug_in_conversion_is_not_blamed_on_the_file(monkeypatch):
    data = encode(photo(64, 48), "PNG")
    monkeypatch.setattr(imaging, "_to_rgb8", failing(KeyError("mode")))
    with pytest.raises(KeyError):
        decode_image(data, LIMITS)


# -- the ingress: MemoryError a 503 with Retry-After, anything else a 500, logged and counted ------------------------


def test_memory_error_answers_503_with_retry_after():
    answer = as_api_error(MemoryError())
    assert answer.status == 503 and answer.code == "out_of_memory" and int(answer.headers["Retry-After"]) >= 1
    assert as_api_error(KeyError("bug")) is None  # not ours to map: the 500 handler answers it


class CountingCounter:
    def __init__(self):
        self.tags = []

    def inc(self, value=1, tags=None):
        self.tags.append(tags)


def test_an_unexpected_error_is_counted_and_passed_on_to_the_500_handler():
    routes = IngressRoutes(core=None, guard=GuardConfig(), probe=None)
    routes.metrics.internal_errors, routes.metrics.refused = CountingCounter(), CountingCounter()

    async def work(exc):
        raise exc

    with pytest.raises(KeyError):
        asyncio.run(routes._guarded(work(KeyError("bug")), uploaded=True))
    assert routes.metrics.internal_errors.tags == [{"error": "KeyError"}] and routes.metrics.refused.tags == []
    with pytest.raises(errors.ApiError) as answered:
        asyncio.run(routes._guarded(work(MemoryError()), uploaded=True))
    assert answered.value.status == 503 and routes.metrics.refused.tags == [{"code": "503"}]
    assert len(routes.metrics.internal_errors.tags) == 1  # a 503 is not an internal error


def test_the_500_handler_logs_the_traceback_and_answers_json(caplog):
    from starlette.requests import Request

    request = Request({"type": "http", "method": "POST", "path": "/v1/cutout", "headers": [], "query_string": b""})
    try:
        raise KeyError("a bug of ours")
    except KeyError as exc:
        error = exc
    with caplog.at_level(logging.ERROR, logger="deployments.http_errors"):
        response = asyncio.run(http_errors.unexpected_error(request, error))
    assert response.status_code == 500
    assert json.loads(response.body)["error"]["code"] == "internal_error"
    logged = [r for r in caplog.records if r.exc_info and r.exc_info[1] is error]
    assert logged and "/v1/cutout" in logged[0].getMessage()


# -- batch rows: the same rule, and a rerun retries the 5xx rows --------------------------------------------------


def batch_rows(tmp_path, monkeypatch, exc):
    from serve_app.batch import stages
    from serve_app.batch.inputs import Photo

    (tmp_path / "a.png").write_bytes(encode(photo(64, 48), "PNG"))
    if exc is not None:
        monkeypatch.setattr(stages, "decode_image", failing(exc))
    rows = {"photo": [json.dumps({"path": "a.png", "source": str(tmp_path / "a.png"), "output": "a.png"})]}
    return [pickle.loads(row) for row in stages.prepare_batch(rows, LIMITS)["model"]]


def test_batch_rows_blame_bugs_and_memory_on_the_server(tmp_path, monkeypatch, caplog):
    with caplog.at_level(logging.ERROR, logger="serve_app.batch.stages"):
        [bug] = batch_rows(tmp_path, monkeypatch, KeyError("a bug of ours"))
    assert (bug["status"], bug["code"]) == (500, "internal_error") and "KeyError" in bug["message"]
    assert any(r.exc_info and isinstance(r.exc_info[1], KeyError) for r in caplog.records)  # traceback logged
    [memory] = batch_rows(tmp_path, monkeypatch, MemoryError())
    assert (memory["status"], memory["code"]) == (503, "out_of_memory")
    [damaged] = batch_rows(tmp_path, monkeypatch, errors.bad_request("corrupt_image", "damaged"))
    assert damaged["status"] == 400


def test_a_rerun_retries_rows_that_failed_on_our_side_and_keeps_the_files_faults(tmp_path):
    from serve_app import batch

    source, out = tmp_path / "in", tmp_path / "out"
    source.mkdir()
    out.mkdir()
    for name in ("bug", "memory", "damaged"):
        (source / f"{name}.jpg").write_bytes(jpeg(32, 24, seed=len(name)))
    rows = [{"path": "bug.jpg", "status": 500, "code": "internal_error", "message": "KeyError"},
            {"path": "memory.jpg", "status": 503, "code": "out_of_memory", "message": "m"},
            {"path": "damaged.jpg", "status": 400, "code": "corrupt_image", "message": "m"}]
    (out / "errors.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows))
    todo, kept, skipped = batch.plan(batch.Job(str(source), str(out)))
    assert sorted(p.path for p in todo) == ["bug.jpg", "memory.jpg"] and list(kept) == ["damaged.jpg"]
    assert skipped == 0


def test_a_real_damaged_file_in_a_batch_is_a_final_4xx_row(tmp_path, monkeypatch):
    from serve_app.batch import stages

    (tmp_path / "a.png").write_bytes(encode(photo(64, 48), "PNG")[:200])  # cut short
    rows = {"photo": [json.dumps({"path": "a.png", "source": str(tmp_path / "a.png"), "output": "a.png"})]}
    [row] = [pickle.loads(r) for r in stages.prepare_batch(rows, LIMITS)["model"]]
    assert 400 <= row["status"] < 500, row


def test_image_loads_are_not_patched_between_tests():
    # The monkeypatches above are undone: a real photo decodes.
    decoded = decode_image(encode(photo(64, 48), "PNG"), LIMITS)
    assert decoded.rgb.shape == (48, 64, 3)
    assert isinstance(Image.open(io.BytesIO(encode(photo(8, 8), "PNG"))), Image.Image)
