"""Reading and checking clicks and boxes. Accepts JSON text (HTTP form fields) or Python lists (handle API)."""

from __future__ import annotations

import json
import math
from typing import Any

import numpy as np

from . import errors

from .messages import Prompt


def _load(field: str, value: Any) -> Any:
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    if isinstance(value, (str, bytes)):
        try:
            return json.loads(value)
        except (ValueError, RecursionError) as exc:  # also "[[[[..." nested too deep, an int of 4300+ digits
            reason = exc.msg if isinstance(exc, json.JSONDecodeError) else str(exc)[:80]
            if isinstance(exc, RecursionError):
                reason = "nested too deeply"
            raise errors.bad_request("malformed_json", f"`{field}` is not valid JSON ({reason}); "
                                     f"send e.g. {_EXAMPLES[field]}") from exc
    if isinstance(value, np.ndarray):
        return value.tolist()
    return value


_EXAMPLES = {"points": "[[100, 200], [300, 400]]", "labels": "[1, 0]", "box": "[10, 20, 300, 400]"}


def _number(field: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise errors.invalid_prompt(f"invalid_{field}", f"`{field}` must hold numbers only, got {repr(value)[:40]}; "
                                    f"send e.g. {_EXAMPLES[field]}")
    try:
        number = float(value)
    except OverflowError:  # an integer of hundreds of digits: beyond any image, and beyond a float
        number = math.inf
    if not math.isfinite(number):
        raise errors.invalid_prompt(f"invalid_{field}", f"`{field}` holds {str(value)[:40]!r}; coordinates must be "
                                    "finite numbers of pixels")
    return number


def parse_prompt(points: Any, labels: Any, box: Any, width: int, height: int, max_points: int) -> Prompt:
    """Checks a prompt against the image it refers to; coordinates stay in that image's pixels."""
    points, labels, box = _load("points", points), _load("labels", labels), _load("box", box)

    point_array = None
    if points is not None:
        if not isinstance(points, list) or not all(isinstance(p, list) and len(p) == 2 for p in points):
            raise errors.invalid_prompt("invalid_points", "`points` must be a list of [x, y] pairs, e.g. "
                                        f"{_EXAMPLES['points']}")
        if len(points) > max_points:
            raise errors.invalid_prompt("too_many_points", f"{len(points)} points sent; at most {max_points} "
                                        "are allowed per request")
        point_array = np.array([[_number("points", x), _number("points", y)] for x, y in points], np.float32)
        for x, y in point_array:
            if not (0 <= x < width and 0 <= y < height):
                raise errors.invalid_prompt("point_outside_image", f"point [{x:g}, {y:g}] is outside the "
                                            f"{width}x{height} image; x must be in [0, {width}) and y in [0, {height})")
        if len(point_array) == 0:
            point_array = None

    label_array = None
    if labels is not None:
        if not isinstance(labels, list) or not all(
                not isinstance(v, bool) and isinstance(v, (int, float)) and v in (0, 1) for v in labels):
            raise errors.invalid_prompt("invalid_labels", "`labels` must be a list of 1 (keep) and 0 (exclude), "
                                        f"one per point, e.g. {_EXAMPLES['labels']}")
        n_points = 0 if point_array is None else len(point_array)
        if len(labels) != n_points:
            raise errors.invalid_prompt("labels_length_mismatch", f"{len(labels)} labels for {n_points} points; "
                                        "send exactly one label per point")
        label_array = np.array(labels, dtype=np.int32) if labels else None
    elif point_array is not None:
        label_array = np.ones(len(point_array), dtype=np.int32)

    box_array = None
    if box is not None:
        if not isinstance(box, list) or len(box) != 4:
            raise errors.invalid_prompt("invalid_box", f"`box` must be [x0, y0, x1, y1], e.g. {_EXAMPLES['box']}")
        x0, y0, x1, y1 = (_number("box", v) for v in box)
        if not (0 <= x0 < x1 <= width and 0 <= y0 < y1 <= height):
            raise errors.invalid_prompt("box_outside_image", f"box [{x0:g}, {y0:g}, {x1:g}, {y1:g}] must satisfy "
                                        f"0 <= x0 < x1 <= {width} and 0 <= y0 < y1 <= {height}")
        box_array = np.array([x0, y0, x1, y1], dtype=np.float32)

    if point_array is None and box_array is None:
        raise errors.invalid_prompt("no_prompt", "send at least one point (`points`) or a `box` to say which "
                                    "object to cut out")
    if label_array is not None and point_array is not None and not (label_array == 1).any() and box_array is None:
        raise errors.invalid_prompt("no_keep_point", "every point is an exclude point (label 0); add at least "
                                    "one keep point (label 1) or a box")
    return Prompt(points=point_array, labels=label_array, box=box_array)


def parse_model_prompt(points: Any, labels: Any, box: Any, width: int, height: int, model_shape: tuple[int, ...],
                       max_points: int) -> Prompt:
    """Checks a prompt against the full-size photo and maps it onto the model copy (``model_shape``, H x W),
    the pixels the segmenter sees. The ingress and the batch job both cut out what this returns."""
    prompt = parse_prompt(points, labels, box, width, height, max_points)
    model_height, model_width = model_shape[:2]
    return prompt.scaled(model_width / width, model_height / height)
