"""The whole graph, composed once: Ingress -> Segmenter (session-routed) -> Postprocess, plus the ImageStore.

``serve run configs/local.yaml`` and ``serve.run(build_app({...}))`` both land here; the Serve application
is named ``background_remover`` in the configs.
"""

from __future__ import annotations

from ray.serve import Application
from ray.serve.config import RequestRouterConfig

from deployments.image_store import ImageStoreDeployment
from deployments.ingress import Ingress
from deployments.postprocess import PostprocessDeployment
from deployments.segmenter import SegmenterDeployment

from .config import AppArgs

APP_NAME = "background_remover"

# Every click on one image goes to the replica that holds its embedding: Serve's consistent-hash router over
# the session id (the image id). With no fallback the affinity is strict: a busy owner queues the click
# rather than sending it to a replica that would recompute the embedding (see README, "Routing").
SESSION_ROUTER = RequestRouterConfig(
    request_router_class="ray.serve.experimental.consistent_hash_router.ConsistentHashRouter",
    request_router_kwargs={"num_virtual_nodes": 100, "num_fallback_replicas": 0},
)


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
    segmenter = SegmenterDeployment.options(**{"request_router_config": SESSION_ROUTER, **extra.get("Segmenter", {})})
    postprocess = PostprocessDeployment.options(**extra.get("Postprocess", {}))
    image_store = ImageStoreDeployment.options(**extra.get("ImageStore", {}))
    ingress = Ingress.options(**extra.get("Ingress", {}))
    return ingress.bind(segmenter.bind(args.segmenter()), postprocess.bind(args.postprocess()),
                        image_store.bind(args.image_store()), args.limits(), args.guard())
