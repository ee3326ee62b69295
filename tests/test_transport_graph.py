"""Serve's settings for the graph's replicas (serve_app/app.py REPLICA_ENV: user code and router on the replica's
main loop) through the real graph: in effect inside every replica, in every Serve config, and large messages
(an upload and a cut-out over gRPC's 4 MiB default message limit) still go through."""

import io
import json
from pathlib import Path

import httpx
import numpy as np
import pytest
import yaml
from PIL import Image

from images import decode
from serve_app.app import REPLICA_ENV

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parent.parent
STAGES = ("Ingress", "Segmenter", "Postprocess", "ImageStore")


def _replica_environ(app: str, deployment: str) -> list[dict[str, str]]:
    """The process environment of each live replica of ``deployment`` (same machine: /proc). The actor table comes
    from the GCS (the state API would need the dashboard, which the test session does not start)."""
    from ray._private.state import actors

    actors = [actor for actor in actors().values() if actor["State"] == "ALIVE"
              and actor["ActorClassName"] == f"ServeReplica:{app}:{deployment}"]
    environs = []
    for actor in actors:
        raw = Path(f"/proc/{actor['Pid']}/environ").read_bytes()
        environs.append(dict(item.split("=", 1) for item in raw.decode(errors="replace").split("\0") if "=" in item))
    return environs


def test_every_replica_runs_with_the_replica_env(app_url):
    from serve_app.app import APP_NAME

    assert REPLICA_ENV == {"RAY_SERVE_RUN_USER_CODE_IN_SEPARATE_THREAD": "0", "RAY_SERVE_RUN_ROUTER_IN_SEPARATE_LOOP": "0"}
    for deployment in STAGES:
        environs = _replica_environ(APP_NAME, deployment)
        assert environs, deployment
        for environ in environs:
            assert {key: environ.get(key) for key in REPLICA_ENV} == REPLICA_ENV, deployment


@pytest.mark.parametrize("path", ["configs/local.yaml", "configs/gpu.yaml", "configs/cluster.yaml",
                                  "cluster/rayservice.yaml"])
def test_every_serve_config_sets_the_replica_env(path):
    """A config's deployments: entries replace the code's ray_actor_options (runtime_env included), so the
    application's own runtime_env must carry the variables (Serve merges its env_vars into every deployment's)."""
    config = next(doc for doc in yaml.safe_load_all((ROOT / path).read_text()) if doc)
    if "spec" in config:  # the KubeRay RayService embeds the Serve config as a string
        config = yaml.safe_load(config["spec"]["serveConfigV2"])
    app = next(app for app in config["applications"] if app["name"] == "background_remover")
    assert app["runtime_env"]["env_vars"] == REPLICA_ENV


def test_the_builder_keeps_the_env_when_options_replace_ray_actor_options():
    from serve_app.app import with_replica_env
    from deployments.segmenter import SegmenterDeployment

    options = {"ray_actor_options": {"num_cpus": 1, "num_gpus": 1,
                                     "runtime_env": {"env_vars": {"OTHER": "1", "RAY_SERVE_RUN_ROUTER_IN_SEPARATE_LOOP": "1"}}}}
    actor = with_replica_env(SegmenterDeployment, options).ray_actor_options
    assert (actor["num_cpus"], actor["num_gpus"]) == (1, 1)
    assert actor["runtime_env"]["env_vars"] == {**REPLICA_ENV, "OTHER": "1", "RAY_SERVE_RUN_ROUTER_IN_SEPARATE_LOOP": "1"}


def _noisy_png(width: int, height: int, seed: int) -> bytes:
    """Noise does not compress: a PNG of about width * height * 3 bytes."""
    pixels = np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG", compress_level=1)
    return buffer.getvalue()


def test_an_upload_and_a_cut_out_over_4_mib_go_through_the_graph(app_url):
    data = _noisy_png(1400, 1400, seed=5)
    assert len(data) > 5 << 20
    form = {"points": json.dumps([[700, 700]]), "background": "#ffffff"}  # opaque: the whole noisy photo comes back
    response = httpx.post(app_url + "/v1/cutout", files={"image": ("noise.png", data, "image/png")}, data=form,
                          timeout=300)
    assert response.status_code == 200, response.text
    assert len(response.content) > 5 << 20 and decode(response.content).size == (1400, 1400)
    # A repeat click by id: the same large answer, now with the embedding cached.
    again = httpx.post(app_url + "/v1/cutout", data={**form, "image_id": response.headers["X-Image-Id"]}, timeout=300)
    assert again.status_code == 200, again.text
    assert again.headers["X-Embedding-Cache"] == "hit" and len(again.content) > 5 << 20
