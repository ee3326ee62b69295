"""MkDocs hook: the configuration reference, generated from the code's own models so that it cannot drift.

    {{ settings_table("serve_app.config:AppArgs") }}              every field: name, type, default, meaning
    {{ settings_table("deployments.edge_settings:EdgeSettings") }}
    {{ env_overrides() }}                                           the BGREMOVE_* variables and the field each sets

Names, types and defaults come from the class (pydantic model or dataclass). The meaning comes from the field's
entry in docs/hooks/app_args.yaml (under the class's name: ``AppArgs``'s fields mostly carry no comment), else from
the pydantic ``description``, else from the comment beside it in the source. The build fails when a field has no meaning anywhere, or when
app_args.yaml describes a field that no longer exists.
"""

from __future__ import annotations

import dataclasses
import importlib
import inspect
import re
import sys
import typing
from pathlib import Path

import yaml
from mkdocs.exceptions import PluginError

ROOT = Path(__file__).resolve().parents[2]
DESCRIPTIONS = Path(__file__).with_name("app_args.yaml")
MARKER = re.compile(r"\{\{\s*(settings_table|env_overrides)\((.*?)\)\s*\}\}")


def _import(target: str):
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    module, _, name = target.partition(":")
    return getattr(importlib.import_module(module), name)


def source_comments(cls) -> dict[str, str]:
    """Each field's comment: the one beside it (with the comment lines under it, unless the next field has no comment
    of its own, which then owns them) or the comment lines just above it."""
    field = re.compile(r"^\s{4}(\w+)\s*:\s*[^=#]+(?:=[^#]*)?(?:#\s?(.*))?$")
    items: list[tuple[str, str, str | None]] = []  # ("field", name, trailing) or ("comment", text, None)
    for line in inspect.getsource(cls).splitlines()[1:]:
        stripped = line.strip()
        match = field.match(line)
        if stripped.startswith("#"):
            items.append(("comment", stripped.lstrip("#").strip(), None))
        elif match and not stripped.startswith(("def ", "model_config", '"""')):
            items.append(("field", match.group(1), match.group(2)))
        else:
            items.append(("other", "", None))
    comments: dict[str, list[str]] = {}
    block: list[str] = []
    last: str | None = None
    for kind, text, trailing in items:
        if kind == "comment":
            block.append(text)
            continue
        if kind == "field":
            if trailing:
                if last and block:
                    comments[last].extend(block)
                comments[text] = [trailing]
                last = text
            else:
                comments[text] = block
                last = None
        else:
            if last and block:
                comments[last].extend(block)
            last = None
        block = []
    return {name: " ".join(parts).strip() for name, parts in comments.items() if parts}


def _type_name(annotation) -> str:
    if typing.get_origin(annotation) is typing.Literal:
        return " or ".join(f"`{arg}`" for arg in typing.get_args(annotation))
    if typing.get_origin(annotation) in (typing.Union, getattr(__import__("types"), "UnionType", ())):
        return " or ".join(_type_name(arg) for arg in typing.get_args(annotation))
    if annotation is type(None):
        return "none"
    if typing.get_origin(annotation) is list:
        return f"list of {_type_name(typing.get_args(annotation)[0])}"
    if typing.get_origin(annotation) is tuple:
        return f"tuple of {_type_name(typing.get_args(annotation)[0])}"
    return getattr(annotation, "__name__", str(annotation))


def _default(value) -> str:
    if value is None:
        return "none"
    if value == [] or value == ():
        return "empty"
    if isinstance(value, str):
        return f"`{value}`" if value else "empty"
    return f"`{value!r}`" if isinstance(value, bool) else f"`{value:g}`" if isinstance(value, float) else f"`{value}`"


def fields(cls) -> list[tuple[str, str, str, str | None]]:
    """(name, type, default, description or None) for a pydantic model or a dataclass."""
    hints = typing.get_type_hints(cls)
    rows = []
    if dataclasses.is_dataclass(cls):
        for item in dataclasses.fields(cls):
            default = item.default if item.default is not dataclasses.MISSING else item.default_factory()
            rows.append((item.name, _type_name(hints[item.name]), _default(default), None))
    else:
        for name, info in cls.model_fields.items():
            default = info.get_default(call_default_factory=True)
            rows.append((name, _type_name(hints[name]), _default(default), info.description))
    return rows


def settings_table(target: str) -> str:
    cls = _import(target)
    comments = source_comments(cls)
    extra = (yaml.safe_load(DESCRIPTIONS.read_text()) or {}).get(cls.__name__, {})
    names = {name for name, *_ in fields(cls)}
    stale = sorted(set(extra) - names)
    if stale:
        raise PluginError(f"{DESCRIPTIONS.name} describes fields {target} no longer has: {stale}")
    out = ["| name | type | default | meaning |", "|---|---|---|---|"]
    for name, type_name, default, description in fields(cls):
        meaning = extra.get(name) or description or comments.get(name)
        if not meaning:
            raise PluginError(f"{target}.{name} has no description: give it a pydantic description, a comment "
                              f"beside it, or an entry under {cls.__name__} in docs/hooks/{DESCRIPTIONS.name}")
        meaning = " ".join(str(meaning).split()).replace("|", "\\|")
        out.append(f"| `{name}` | {type_name} | {default} | {meaning} |")
    return "\n".join(out)


def env_overrides() -> str:
    _import("serve_app.config:AppArgs")
    config = sys.modules["serve_app.config"]
    out = ["| variable | sets | how |", "|---|---|---|"]
    for kind, table in (("the value", config.ENV_OVERRIDES), ("a comma-separated list", config.ENV_LIST_OVERRIDES),
                        ("the value (a secret: keep it out of config files)", config.ENV_SECRETS)):
        for variable, field in table.items():
            out.append(f"| `{variable}` | `{field}` | {kind} |")
    return "\n".join(out)


def on_page_markdown(markdown: str, page, config, files) -> str:
    def replace(match: re.Match) -> str:
        if match.group(1) == "env_overrides":
            return env_overrides()
        target = match.group(2).strip().strip("\"'")
        try:
            return settings_table(target)
        except (ImportError, AttributeError) as error:
            raise PluginError(f"{page.file.src_uri}: settings_table({target!r}): {error}") from None

    return MARKER.sub(replace, markdown)
