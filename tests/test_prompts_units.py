"""Prompt parsing at its edges: the bounds of the image, the limits, the message that says what to fix, and the
mapping onto the model copy (deployments/prompts.py)."""

import json

import numpy as np
import pytest

from deployments.errors import ApiError
from deployments.prompts import parse_model_prompt, parse_prompt
from message_style import assert_readable

W, H = 640, 480


def parse(points=None, labels=None, box=None, max_points=8):
    return parse_prompt(points, labels, box, W, H, max_points)


def refusal(**kwargs) -> ApiError:
    with pytest.raises(ApiError) as info:
        parse(**kwargs)
    assert_readable(info.value.message)
    return info.value


def test_the_parsed_prompt_has_the_message_types_dtypes():
    """deployments.messages.Prompt: points (N, 2) float32, labels (N,) int32, box (4,) float32."""
    given = parse([[1, 2], [3, 4]], [1, 0], [0, 0, 10, 10])
    defaulted = parse([[1, 2]])
    assert given.points.dtype == np.float32 and given.box.dtype == np.float32
    assert given.labels.dtype == np.int32 and defaulted.labels.dtype == np.int32
    assert defaulted.labels.tolist() == [1]


def test_a_box_alone_has_no_points_and_no_labels():
    for labels in (None, "[]", []):
        prompt = parse(box=[0, 0, 10, 10], labels=labels)
        assert prompt.points is None and prompt.labels is None


@pytest.mark.parametrize("blank", ["", "   ", "\n"])
def test_a_blank_form_field_counts_as_not_sent(blank):
    prompt = parse(points=blank, labels=blank, box="[0, 0, 10, 10]")
    assert prompt.points is None and prompt.box.tolist() == [0, 0, 10, 10]


def test_numpy_arrays_are_accepted_from_the_handle_api():
    prompt = parse(np.array([[5, 6]]), np.array([1]), np.array([1, 2, 30, 40]))
    assert prompt.points.tolist() == [[5, 6]] and prompt.box.tolist() == [1, 2, 30, 40]


def test_the_image_bounds_are_half_open():
    """x in [0, width), y in [0, height): the first pixel is a valid click, one past the last is not."""
    assert parse([[0, 0]]).points.tolist() == [[0, 0]]
    assert parse([[W - 0.5, H - 0.5]]).points.tolist() == [[W - 0.5, H - 0.5]]
    for point in ([W, 0], [0, H], [-0.5, 0], [0, -0.5]):
        error = refusal(points=[point])
        assert (error.status, error.code) == (422, "point_outside_image")
        assert f"{W}x{H}" in error.message


def test_a_box_may_span_the_whole_image_but_not_be_empty():
    assert parse(box=[0, 0, W, H]).box.tolist() == [0, 0, W, H]
    for box in ([5, 0, 5, 10], [0, 5, 10, 5], [0, 0, 10, H + 1], [-1, 0, 10, 10], [0, -1, 10, 10]):
        assert refusal(box=box).code == "box_outside_image", box


def test_max_points_is_the_largest_number_of_points_accepted():
    assert parse([[1, 1]] * 8, max_points=8).num_points == 8
    error = refusal(points=[[1, 1]] * 9, max_points=8)
    assert error.code == "too_many_points" and "9" in error.message and "8" in error.message


@pytest.mark.parametrize("field", ["points", "labels", "box"])
def test_malformed_json_names_the_field_and_gives_an_example_that_works(field):
    error = refusal(**{"points": "[[1, 1]]", field: "[1,"})
    assert (error.status, error.code) == (400, "malformed_json")
    assert f"`{field}`" in error.message
    example = error.message.rpartition("send e.g. ")[2]
    fixed = {"points": "[[1, 1]]", field: example}
    if field == "labels":
        fixed["points"] = "[[1, 1], [2, 2]]"
    parse(**fixed)  # the example is itself accepted


def test_malformed_json_says_what_the_parser_found():
    with pytest.raises(json.JSONDecodeError) as parser:
        json.loads("[[1, 2]")
    assert parser.value.msg in refusal(points="[[1, 2]").message


def test_json_nested_too_deeply_is_a_400_not_a_crash():
    error = refusal(points="[" * 100_000)
    assert (error.status, error.code) == (400, "malformed_json")
    assert "nested too deeply" in error.message


def test_an_integer_too_long_to_read_is_a_400_that_says_why():
    text = "[[" + "9" * 5000 + ", 1]]"
    with pytest.raises(ValueError) as parser:
        json.loads(text)
    error = refusal(points=text)
    assert (error.status, error.code) == (400, "malformed_json")
    assert str(parser.value)[:40] in error.message


def test_a_coordinate_beyond_any_float_is_refused_as_not_finite():
    error = refusal(points=[[10 ** 400, 1]])
    assert (error.status, error.code) == (422, "invalid_points")
    assert "finite" in error.message


@pytest.mark.parametrize("kwargs, code, shown", [
    ({"points": [[1, "a"]]}, "invalid_points", "'a'"),
    ({"points": [["b", 1]]}, "invalid_points", "'b'"),
    ({"points": [[float("nan"), 1]]}, "invalid_points", "nan"),
    ({"box": [0, 0, "c", 10]}, "invalid_box", "'c'"),
    ({"box": [0, 0, float("inf"), 10]}, "invalid_box", "inf"),
])
def test_a_value_that_is_not_a_coordinate_is_named_in_the_refusal(kwargs, code, shown):
    error = refusal(**kwargs)
    field = code.removeprefix("invalid_")
    assert (error.status, error.code) == (422, code)
    assert f"`{field}`" in error.message and shown in error.message


@pytest.mark.parametrize("kwargs, code, field", [
    ({"points": "[[1, 2, 3]]"}, "invalid_points", "`points`"),
    ({"points": "[[1, 1]]", "labels": "[2]"}, "invalid_labels", "`labels`"),
    ({"points": "[[1, 1]]", "labels": "[1, 1]"}, "labels_length_mismatch", "label"),
    ({"box": "[1, 2]"}, "invalid_box", "`box`"),
    ({}, "no_prompt", "`points`"),
    ({"points": "[[1, 1]]", "labels": "[0]"}, "no_keep_point", "keep point"),
])
def test_each_refusal_names_what_to_send(kwargs, code, field):
    error = refusal(**kwargs)
    assert error.code == code and field in error.message


def test_labels_without_points_are_a_length_mismatch():
    for labels in ("[1]", [0, 1]):
        error = refusal(box=[0, 0, 10, 10], labels=labels)
        assert (error.status, error.code) == (422, "labels_length_mismatch")
        assert "0 points" in error.message


def test_exclude_points_alone_are_fine_with_a_box():
    prompt = parse([[1, 1]], [0], [0, 0, 10, 10])
    assert prompt.labels.tolist() == [0]


def test_a_model_prompt_is_checked_on_the_photo_and_scaled_to_the_model_copy():
    """A 2000x1000 photo whose model copy is 1024x500 (x scale 0.512, y scale 0.5)."""
    prompt = parse_model_prompt([[1000, 500], [1999, 999]], [1, 0], [100, 200, 1100, 800], 2000, 1000, (500, 1024, 3),
                                max_points=8)
    assert np.allclose(prompt.points, [[512, 250], [1999 * 0.512, 999 * 0.5]])
    assert np.allclose(prompt.box, [51.2, 100, 563.2, 400])
    assert prompt.labels.tolist() == [1, 0]
    # the photo's bounds, not the copy's, decide what is inside
    with pytest.raises(ApiError) as info:
        parse_model_prompt([[2000, 10]], None, None, 2000, 1000, (500, 1024, 3), max_points=8)
    assert info.value.code == "point_outside_image"
    with pytest.raises(ApiError) as info:
        parse_model_prompt([[1, 1]] * 3, None, None, 2000, 1000, (500, 1024, 3), max_points=2)
    assert info.value.code == "too_many_points"
