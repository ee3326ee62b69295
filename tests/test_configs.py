"""The Serve config files parse as Ray's schema, their args as AppArgs, and they name our deployments."""

from pathlib import Path

import pytest
import yaml
from ray.serve.schema import ServeDeploySchema

from serve_app.app import APP_NAME
from serve_app.config import AppArgs

CONFIGS = sorted((Path(__file__).parent.parent / "configs").glob("*.yaml"))
DEPLOYMENTS = {"Ingress", "Segmenter", "Postprocess", "ImageStore"}


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_config_is_valid(path):
    config = yaml.safe_load(path.read_text())
    ServeDeploySchema.model_validate(config)
    (app,) = config["applications"]
    assert app["name"] == APP_NAME and app["import_path"] == "serve_app.app:build_app"
    AppArgs(**app["args"])  # extra="forbid": a typo in args fails here
    deployments = {d["name"]: d for d in app["deployments"]}
    assert set(deployments) == DEPLOYMENTS
    assert deployments["Segmenter"]["max_ongoing_requests"] == 2


def test_local_config_fits_two_cores():
    app = yaml.safe_load((Path(__file__).parent.parent / "configs" / "local.yaml").read_text())["applications"][0]
    reserved = sum(d.get("num_replicas", 1) * d["ray_actor_options"]["num_cpus"] for d in app["deployments"])
    assert reserved <= 2.0  # otherwise Serve waits forever for CPUs a laptop does not have
    assert all("num_gpus" not in d["ray_actor_options"] for d in app["deployments"])


def test_gpu_config_asks_for_a_gpu_and_sheds_load():
    app = yaml.safe_load((Path(__file__).parent.parent / "configs" / "gpu.yaml").read_text())["applications"][0]
    deployments = {d["name"]: d for d in app["deployments"]}
    assert deployments["Segmenter"]["ray_actor_options"]["num_gpus"] == 1
    assert app["args"]["precision"] == "fp16" and app["args"]["device"] == "cuda"
    for name in ("Ingress", "Postprocess"):
        assert "autoscaling_config" in deployments[name]
    for name in ("Ingress", "Segmenter", "Postprocess"):
        assert deployments[name]["max_queued_requests"] > 0
