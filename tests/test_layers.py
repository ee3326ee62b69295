"""The code's shape: layers point one way, no module imports itself back, and no module grows past ~250 lines
without saying why. Read from the source (every import, including those inside functions), not from what runs."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("deployments", "serve_app")
MAX_LINES = 250


def _modules() -> dict[str, Path]:
    found = {}
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            parts = path.relative_to(ROOT).with_suffix("").parts
            name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
            found[name] = path
    return found


def _imports(name: str, path: Path, known: set[str]) -> set[str]:
    """The project modules that ``name`` imports, resolved to modules (``from pkg import mod`` counts as mod)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    targets: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            bases = [(alias.name, []) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([node.module] if node.module else []))
            else:
                base = node.module or ""
            bases = [(base, [alias.name for alias in node.names])]
        else:
            continue
        for base, names in bases:
            hits = [f"{base}.{n}" for n in names if f"{base}.{n}" in known]
            if hits:
                targets.update(hits)
            elif base in known:
                targets.add(base)
            elif base.split(".")[0] in PACKAGES:
                targets.add(base)
    targets.discard(name)
    return targets


def _graph() -> dict[str, set[str]]:
    modules = _modules()
    return {name: _imports(name, path, set(modules)) for name, path in modules.items()}


def test_the_library_never_imports_the_roof():
    graph = _graph()
    upward = {name: sorted(t for t in targets if t.split(".")[0] == "serve_app")
              for name, targets in graph.items() if name.split(".")[0] == "deployments"}
    assert {name: t for name, t in upward.items() if t} == {}


def test_the_layer_check_sees_an_upward_import(tmp_path):
    # The check above can fail: a library module that imports the roof is found, also inside a function.
    path = tmp_path / "bad.py"
    path.write_text("def f():\n    from serve_app.config import AppArgs\n")
    assert _imports("deployments.bad", path, {"serve_app.config"}) == {"serve_app.config"}


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state and (found := visit(nxt)):
                return found
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (found := visit(node)):
            return found
    return None


def test_no_import_cycle():
    graph = _graph()
    # A package's __init__ may re-export its own modules; an edge from a module to its own package is not a cycle.
    graph = {name: {t for t in targets if not name.startswith(t + ".")} for name, targets in graph.items()}
    assert _cycle(graph) is None
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]


def test_modules_stay_short_or_say_why():
    long = []
    for name, path in _modules().items():
        text = path.read_text()
        if len(text.splitlines()) > MAX_LINES and "Longer than" not in text.split('"""')[1 if text.startswith('"""') else 0]:
            long.append(f"{name}: {len(text.splitlines())} lines")
    assert long == []
