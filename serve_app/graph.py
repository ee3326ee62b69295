"""The graph with default arguments as a module-level Application, for tools that want an object rather than a
builder: ``serve build serve_app.graph:app -o my-config.yaml`` writes every deployment option the code sets.
Serve configs use the builder instead (``import_path: serve_app.app:build_app`` plus an ``args:`` block)."""

from .app import build_app
from .config import AppArgs

app = build_app(AppArgs())
