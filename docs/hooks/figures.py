"""MkDocs hook: every measured figure on the site is read from its JSON file under docs/benchmarks/ at build time.

Markers, anywhere in a page (tables and code blocks included):

    {{ figure("cpu/click-path-run1.json", "first_click_ms.p50") }}             -> 2807.51
    {{ figure("cpu/click-path-run1.json", "first_click_ms.p50", ".0f") }}      -> 2808
    {{ figure("gpu/h100-graph-run2.json", "sizes.4032x3024.first_click_ms.p50", ".2f", scale=0.001) }}   (ms -> s)
    {{ figure("f.json", "a + b + c", ".1f") }}      sum; also "a - b", "a / b" (one operator kind per key)
    {{ figure("f.json", "max: a, b, c", ".0%") }}   the largest of several keys ("min: ..." the smallest); a key
                                                    may hold one "*" for every item of a list: "max: runs.*.ms"
    {{ runs(["f1.json", "f2.json"], "key", ".0f") }}  -> "v1 / v2"   (sep="..." to change " / ")
    {{ span(["f1.json", "f2.json"], "key", ".1f") }}  -> "lo-hi", or one value when all runs agree
    {{ observed("~610 MiB", "seen in tests/test_decode_memory.py's output") }}  -> a figure with no file, said so

A backslash before a marker (\\{{ figure(...) }}) shows it as written. A key is a dotted path into the JSON (list items by index); a key segment with a dot in it goes in brackets,
e.g. "budgets.[0.25].sad". The format is a Python format spec (".1f", ".0%", "+.1%", ",.0f"); without one a
number is written as the JSON holds it. The build fails on a missing file, a missing key or a malformed marker.
"""

from __future__ import annotations

import ast
import decimal
import json
import re
from pathlib import Path

try:
    from mkdocs.exceptions import PluginError
except ImportError:  # tests/test_docs.py renders markers without mkdocs installed
    PluginError = Exception

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"
MARKER = re.compile(r"(\\?)\{\{\s*(figure|runs|span|observed)\((.*?)\)\s*\}\}", re.S)
_cache: dict[str, object] = {}


class FigureError(PluginError):
    pass


def load(name: str) -> object:
    if name not in _cache:
        path = BENCHMARKS / name
        if not path.is_file():
            raise FigureError(f"figure file docs/benchmarks/{name} does not exist")
        _cache[name] = json.loads(path.read_text())
    return _cache[name]


def _segments(key: str) -> list[str]:
    return [part[1:-1] if part.startswith("[") else part for part in re.findall(r"\[[^\]]*\]|[^.]+", key)]


def lookup(name: str, key: str) -> float | str:
    node = load(name)
    for part in _segments(key):
        if isinstance(node, dict) and part in node:
            node = node[part]
        elif isinstance(node, list) and part.lstrip("-").isdigit() and -len(node) <= int(part) < len(node):
            node = node[int(part)]
        else:
            raise FigureError(f"docs/benchmarks/{name} has no key {key!r} (stopped at {part!r})")
    if isinstance(node, (dict, list)) or node is None:
        raise FigureError(f"docs/benchmarks/{name}: {key!r} is not a figure ({type(node).__name__})")
    return node


def expand(name: str, key: str) -> list:
    """A key with one "*" segment (every item of a list, e.g. "guard.per_photo.*.residual"), else the key alone."""
    if ".*." not in key:
        return [lookup(name, key)]
    head, tail = key.split(".*.", 1)
    node = load(name)
    for part in _segments(head):
        node = node.get(part) if isinstance(node, dict) else None
    if not isinstance(node, list):
        raise FigureError(f"docs/benchmarks/{name}: {head!r} is not a list")
    return [lookup(name, f"{head}.{index}.{tail}") for index in range(len(node))]


def value(name: str, key: str) -> float | str:
    if key.startswith(("max:", "min:")):  # "max: a, b, c": the largest (smallest) of several keys
        numbers = [float(number) for part in key[4:].split(",") for number in expand(name, part.strip())]
        return max(numbers) if key.startswith("max:") else min(numbers)
    for op in (" + ", " - ", " / "):
        if op in key:
            parts = [float(lookup(name, part.strip())) for part in key.split(op)]
            result = parts[0]
            for part in parts[1:]:
                result = result + part if op == " + " else result - part if op == " - " else result / part
            return result
    return lookup(name, key)


def fmt(number: float | str, spec: str | None, scale: float | None) -> str:
    if isinstance(number, str):
        return number
    if scale is not None:
        number = number * scale
    if spec:
        # Half up, as a reader rounds (60.5 -> 61), not Python's half to even; from the JSON's own decimal digits.
        with decimal.localcontext() as context:
            context.rounding = decimal.ROUND_HALF_UP
            exact = decimal.Decimal(repr(float(number))) if spec[-1] in "f%" else number
            text = format(exact, spec)
        return "0" if re.fullmatch(r"-0(\.0*)?", text) and not spec.startswith("+") else text
    return format(number, "g") if isinstance(number, float) else str(number)


def _call(kind: str, arguments: str) -> tuple[list, dict]:
    try:
        node = ast.parse(f"f({arguments})", mode="eval").body
        args = [ast.literal_eval(arg) for arg in node.args]
        kwargs = {kw.arg: ast.literal_eval(kw.value) for kw in node.keywords}
    except (SyntaxError, ValueError) as error:
        raise FigureError(f"malformed marker {kind}({arguments}): {error}") from None
    return args, kwargs


def render(kind: str, arguments: str) -> str:
    args, kwargs = _call(kind, arguments)
    try:
        if kind == "observed":
            text, where = args
            return f"{text} (observed: {where})"
        files, key, *rest = args
        spec = rest[0] if rest else kwargs.get("fmt")
        scale = kwargs.get("scale")
        if kind == "figure":
            return fmt(value(files, key), spec, scale)
        texts = [fmt(value(name, key), spec, scale) for name in files]
        if kind == "runs":
            return kwargs.get("sep", " / ").join(texts)
        numbers = [float(value(name, key)) * (scale or 1) for name in files]
        low, high = fmt(min(numbers), spec, None), fmt(max(numbers), spec, None)
        return low if low == high else f"{low}-{high}"
    except (TypeError, ValueError) as error:
        raise FigureError(f"malformed marker {kind}({arguments}): {error}") from None


def render_text(markdown: str, where: str = "") -> str:
    def replace(match: re.Match) -> str:
        if match.group(1):  # \{{ ... }}: the marker itself, shown as text
            return match.group(0)[1:]
        try:
            return render(match.group(2), match.group(3))
        except FigureError as error:
            raise FigureError(f"{where}: {error}") from None

    return MARKER.sub(replace, markdown)


def on_page_markdown(markdown: str, page, config, files) -> str:
    return render_text(markdown, page.file.src_uri)
