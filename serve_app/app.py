"""The whole graph, composed once: Ingress -> Segmenter (session-routed) -> Postprocess, plus the ImageStore.

``serve run configs/local.yaml`` and ``serve.run(build_app({...}))`` both land here; the Serve application
is named ``background_remover`` in the configs.
"""

from __future__ import annotations

from ray.serve import Application, Deployment
from ray.serve.config import RequestRouterConfig

from deployments.image_store import ImageStoreDeployment
from deployments.ingress import Ingress
from deployments.postprocess import PostprocessDeployment
from deployments.segmenter import SegmenterDeployment

from .config import AppArgs

APP_NAME = "background_remover"

# Every click on one image goes to the replica that holds its embedding: Serve's consistent-hash router over
# the session id (the image id). With no fallback the affinity is strict: a busy owner queues the click
# rather than sending it to a replica that would recompute the embedding (see docs/performance.md, "Routing").
SESSION_ROUTER = RequestRouterConfig(
    request_router_class="ray.serve.experimental.consistent_hash_router.ConsistentHashRouter",
    request_router_kwargs={"num_virtual_nodes": 100, "num_fallback_replicas": 0},
)


# Serve's own settings for the graph's replicas, read from the environment when a replica's process starts: user
# code and the handles' router on the replica's main event loop, which saves two thread hops per call. Safe because
# no async method of a stage blocks its loop (heavy work runs on the stages' own threads). A Serve config's
# `deployments:` entry with ray_actor_options replaces the ones given here, so configs/*.yaml also set these in the
# application's runtime_env (tests/test_transport_graph.py checks both).
REPLICA_ENV = {"RAY_SERVE_RUN_USER_CODE_IN_SEPARATE_THREAD": "0", "RAY_SERVE_RUN_ROUTER_IN_SEPARATE_LOOP": "0"}


def with_replica_env(deployment: Deployment, options: dict) -> Deployment:
    """``deployment.options(**options)`` with REPLICA_ENV added to its runtime_env (variables given in
    ``options`` win). ray_actor_options in ``options`` replace the deployment's own, as in a Serve config."""
    actor = dict(options["ray_actor_options"] if "ray_actor_options" in options else deployment.ray_actor_options or {})
    runtime_env = actor.get("runtime_env") or {}
    actor["runtime_env"] = {**runtime_env, "env_vars": {**REPLICA_ENV, **runtime_env.get("env_vars", {})}}
    return deployment.options(**{**options, "ray_actor_options": actor})


def build_app(args: AppArgs) -> Application:
    """The builder a Serve config's ``import_path`` names; deployment options come from that config."""
    return bind_graph(args)


def bind_graph(args: AppArgs | dict, deployment_options: dict[str, dict] | None = None) -> Application:
    """Wires the graph. ``deployment_options`` ({"Segmenter": {"num_replicas": 2}, ...}) lets Python callers
    such as tests and the benchmark set what a YAML config's ``deployments:`` list would."""
    if isinstance(args, dict):
        args = AppArgs.model_validate(args)
    args = args.with_env()
    extra = deployment_options or {}
    segmenter = with_replica_env(SegmenterDeployment, {"request_router_config": SESSION_ROUTER,
                                                       **extra.get("Segmenter", {})})
    postprocess = with_replica_env(PostprocessDeployment, extra.get("Postprocess", {}))
    image_store = with_replica_env(ImageStoreDeployment, extra.get("ImageStore", {}))
    ingress = with_replica_env(Ingress, extra.get("Ingress", {}))
    return ingress.bind(segmenter.bind(args.segmenter()), postprocess.bind(args.postprocess()),
                        image_store.bind(args.image_store()), args.limits(), args.guard())
