"""The ingress as a Ray Serve deployment: ``IngressRoutes`` over an ``IngressCore`` whose stages are Serve handles."""

from ray import serve
from ray.serve.handle import DeploymentHandle

from ..health import probe_stages
from ..messages import ImageRef, SegmentRequest
from ..settings import GuardConfig, IngressLimits
from .core import IngressCore
from .routes import IngressRoutes, http_app


class RayStages:
    """Stages reached through Serve handles. Segmenter calls carry the image id as session id, so the
    consistent-hash router sends every click on one image to the replica that holds its embedding."""

    def __init__(self, segmenter: DeploymentHandle, postprocess: DeploymentHandle, image_store: DeploymentHandle):
        self.segmenter, self.postprocess, self.image_store = segmenter, postprocess, image_store

    def put_pixels(self, array) -> ImageRef:
        return ImageRef.put(array)

    def segment(self, request: SegmentRequest):
        return self.segmenter.options(session_id=request.image_id).segment.remote(request)

    def render(self, seg, image, options, source_alpha):
        # The segmenter's response goes straight into the postprocess call: Serve hands over the result
        # without a round trip through this replica.
        return self.postprocess.render.remote(seg, image, options, source_alpha)

    def cache_embedding(self, image_id, image):
        return self.segmenter.options(session_id=image_id).cache_embedding.remote(image_id, image)

    def store_image(self, record):
        alpha = record.alpha.object_ref if record.alpha is not None else None
        return self.image_store.put.remote(record.image_id, record.full.object_ref, record.model_image.object_ref,
                                           alpha, content_id=record.embedding_id, owner=record.owner)

    def fetch_image(self, image_id):
        return self.image_store.get.remote(image_id)


# max_queued_requests: past it the HTTP proxy itself answers 503 + Retry-After (the guard's own JSON 503 at
# max_inflight usually comes first).
@serve.deployment(name="Ingress", max_ongoing_requests=64, max_queued_requests=256,
                  backpressure_config={"retry_after_s": 1}, ray_actor_options={"num_cpus": 0.25})
@serve.ingress(http_app)
class Ingress(IngressRoutes):
    def __init__(self, segmenter: DeploymentHandle, postprocess: DeploymentHandle, image_store: DeploymentHandle,
                 limits: IngressLimits, guard: GuardConfig = GuardConfig()):
        core = IngressCore(RayStages(segmenter, postprocess, image_store), limits, guard.image_id_secret)
        stages = {"segmenter": segmenter.stats.remote, "postprocess": postprocess.stats.remote,
                  "image_store": image_store.stats.remote}
        super().__init__(core, guard, probe=lambda: probe_stages(stages, timeout_s=5.0))
