"""Serve config files (configs/*.yaml) as data, and as an application that Python can deploy.

A config's ``deployments:`` entries are exactly the keyword arguments of ``Deployment.options()``, so
``bind_graph(args, options)`` builds the same graph that ``serve deploy <file>`` builds from the file.
"""

from __future__ import annotations

import copy
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
CONFIGS = ROOT / "configs"


def load(name: str) -> dict:
    """A config file, validated by Serve's own schema (what `serve deploy` checks)."""
    from ray.serve.schema import ServeDeploySchema

    config = yaml.safe_load((CONFIGS / name).read_text())
    ServeDeploySchema.model_validate(config)
    return config


def application(config: dict, name: str = "background_remover") -> dict:
    return next(app for app in config["applications"] if app["name"] == name)


def deployment_options(app: dict) -> dict[str, dict]:
    """{"Segmenter": {"max_ongoing_requests": 2, ...}, ...}: a config's deployments as `.options()` kwargs."""
    return {entry["name"]: {k: v for k, v in entry.items() if k != "name"} for entry in app["deployments"]}


def build(app: dict):
    """The application a config entry describes, through the same builder its import_path names."""
    from serve_app.app import bind_graph

    assert app["import_path"] == "serve_app.app:build_app"
    return bind_graph(app.get("args", {}), deployment_options(app))


def shrunk(config: dict, args: dict, max_replicas: int, timing: dict) -> dict:
    """A copy of a config for a small simulated cluster: other args (tiny model...), max_replicas capped
    to what the simulated nodes hold, autoscaling delays shortened. Everything else stays as written."""
    config = copy.deepcopy(config)
    for app in config["applications"]:
        app["args"] = {**app.get("args", {}), **args}
        for entry in app["deployments"]:
            autoscaling = entry.get("autoscaling_config")
            if autoscaling:
                autoscaling.update(timing)
                autoscaling["max_replicas"] = min(autoscaling["max_replicas"], max_replicas)
    return config
