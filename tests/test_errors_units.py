"""The one refusal type (deployments/errors.py): each kind's HTTP status and code (DESIGN.md's error table), the JSON
body, and the trip across Ray's process boundary (pickling)."""

import pickle

import pytest

from deployments import errors
from message_style import assert_readable


@pytest.mark.parametrize("make, status, code", [
    (lambda: errors.bad_request("malformed_json", "m"), 400, "malformed_json"),
    (lambda: errors.too_large("file_too_large", "m"), 413, "file_too_large"),
    (lambda: errors.not_an_image("m"), 415, "unsupported_media_type"),
    (lambda: errors.invalid_prompt("point_outside_image", "m"), 422, "point_outside_image"),
    (lambda: errors.invalid_option("invalid_feather", "m"), 422, "invalid_feather"),
])
def test_each_kind_has_its_documented_status(make, status, code):
    error = make()
    assert (error.status, error.code, error.message, error.headers) == (status, code, "m", {})
    assert error.body() == {"error": {"code": code, "message": "m"}}
    assert str(error) == "m"


def test_headers_are_kept_and_never_shared_between_errors():
    first, second = errors.ApiError(400, "a", "m"), errors.ApiError(400, "b", "m")
    first.headers["X-Test"] = "1"
    assert second.headers == {}
    assert errors.ApiError(401, "c", "m", headers={"WWW-Authenticate": "Bearer"}).headers == {"WWW-Authenticate": "Bearer"}


def test_an_error_crosses_a_process_boundary_intact():
    error = errors.ApiError(503, "overloaded", "busy", headers={"Retry-After": "3"})
    copy = pickle.loads(pickle.dumps(error))
    assert type(copy) is errors.ApiError
    assert (copy.status, copy.code, copy.message, copy.headers) == (503, "overloaded", "busy", {"Retry-After": "3"})


def test_repr_shows_status_code_and_message():
    assert repr(errors.ApiError(422, "invalid_box", "bad box")) == "ApiError(422, 'invalid_box', 'bad box')"


def test_an_unknown_image_says_to_upload_again_and_echoes_at_most_64_characters_of_the_id():
    error = errors.unknown_image("f" * 100)
    assert (error.status, error.code) == (404, "unknown_image_id")
    assert repr("f" * 64) in error.message and "f" * 65 not in error.message
    assert "POST /v1/images" in error.message and "`image`" in error.message
    assert_readable(error.message)


def test_overloaded_is_a_503_with_retry_after():
    default, longer = errors.overloaded(), errors.overloaded(7)
    assert (default.status, default.code, default.headers) == (503, "overloaded", {"Retry-After": "1"})
    assert longer.headers == {"Retry-After": "7"}
    assert "Retry-After" in default.message
    assert_readable(default.message)


def test_out_of_memory_is_a_retryable_503_on_our_side():
    default, longer = errors.out_of_memory(), errors.out_of_memory(9)
    assert (default.status, default.code) == (503, "out_of_memory")
    assert int(default.headers["Retry-After"]) >= 1 and longer.headers == {"Retry-After": "9"}
    assert "Retry-After" in default.message and "memory" in default.message
    assert_readable(default.message)
