"""Prompt parsing: JSON form fields and Python lists, checked against the image they refer to."""

import numpy as np
import pytest

from deployments.messages import Prompt
from deployments.prompts import parse_prompt
from deployments.errors import ApiError


def parse(points=None, labels=None, box=None, width=640, height=480, max_points=8):
    return parse_prompt(points, labels, box, width, height, max_points)


def test_json_points_default_to_keep_labels():
    prompt = parse("[[100, 200], [300, 400]]")
    assert prompt.points.tolist() == [[100, 200], [300, 400]]
    assert prompt.labels.tolist() == [1, 1]
    assert not prompt.multimask  # several clicks: a single mask


def test_single_click_asks_for_multimask():
    assert parse([[10, 20]]).multimask
    assert not parse([[10, 20]], box=[0, 0, 50, 50]).multimask


def test_labels_and_box():
    prompt = parse([[10, 20], [30, 40]], "[1, 0]", "[5, 6, 100, 120]")
    assert prompt.labels.tolist() == [1, 0]
    assert prompt.box.tolist() == [5, 6, 100, 120]


def test_box_alone_is_a_prompt():
    prompt = parse(box=[0, 0, 640, 480])
    assert prompt.points is None and prompt.box is not None


@pytest.mark.parametrize("kwargs, status, code", [
    ({"points": "[[1, 2]"}, 400, "malformed_json"),
    ({"points": "[[1, 2, 3]]"}, 422, "invalid_points"),
    ({"points": '[["a", 2]]'}, 422, "invalid_points"),
    ({"points": "[[NaN, 2]]"}, 422, "invalid_points"),
    ({"points": "[[Infinity, 2]]"}, 422, "invalid_points"),
    ({"points": "[[true, 2]]"}, 422, "invalid_points"),
    ({"points": "[[640, 10]]"}, 422, "point_outside_image"),
    ({"points": "[[-1, 10]]"}, 422, "point_outside_image"),
    ({"points": "[[1, 1]]", "labels": "[1, 0]"}, 422, "labels_length_mismatch"),
    ({"points": "[[1, 1]]", "labels": "[2]"}, 422, "invalid_labels"),
    ({"points": "[[1, 1]]", "labels": "[0]"}, 422, "no_keep_point"),
    ({"points": [[1, 1]] * 9}, 422, "too_many_points"),
    ({"box": "[10, 10, 5, 20]"}, 422, "box_outside_image"),
    ({"box": "[0, 0, 641, 20]"}, 422, "box_outside_image"),
    ({"box": "[0, 0, 10]"}, 422, "invalid_box"),
    ({}, 422, "no_prompt"),
    ({"points": "[]"}, 422, "no_prompt"),
])
def test_refusals(kwargs, status, code):
    with pytest.raises(ApiError) as info:
        parse(**kwargs)
    assert (info.value.status, info.value.code) == (status, code)
    assert info.value.message  # says what to fix


def test_scaling_to_the_model_copy():
    prompt = parse([[100, 200]], box=[10, 20, 300, 400])
    scaled = prompt.scaled(0.5, 0.25)
    assert scaled.points.tolist() == [[50, 50]]
    assert scaled.box.tolist() == [5, 5, 150, 100]
    assert prompt.scaled(1.0, 1.0) is prompt
    assert Prompt(points=np.zeros((1, 2), np.float32)).num_points == 1
