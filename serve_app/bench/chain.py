"""The chain app: the graph's shape with no work in it, Serve's own cost for a repeat cut-out.

An ingress like the echo's (same form, same answer) that makes the graph's two chained calls: a session-routed call
to an empty segmenter that answers logits of the graph's size, handed straight to an empty postprocess that answers
the graph's answer bytes. Its replicas run with the graph's Serve settings (``serve_app.app``) and time their hops
as the graph's stages do (``deployments/hops.py``). ``bgremove bench overhead`` runs it behind the same HTTP proxy,
in the same rounds as the graph and the echo: the graph's overhead over the chain's time is what the graph adds to
Serve's floor for its shape, and each hop can be set against the same hop with nothing else running.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from fastapi import FastAPI, Form
from fastapi.responses import Response
from ray import serve
from ray.serve.handle import DeploymentHandle

from deployments import hops
from deployments.ingress.routes import server_timing

from ..app import SESSION_ROUTER, with_replica_env

ROUTE_PREFIX = "/chain"
LOGITS_SHAPE = (3, 256, 256)  # SAM's three candidate masks for one click, FP32 (a GPU graph sends FP16: half)

chain_http = FastAPI()


@dataclass(frozen=True)
class _Answer:
    payload: np.ndarray | bytes
    timings_ms: dict[str, float] = field(default_factory=dict)
    done_at: float = 0.0


@serve.deployment(name="ChainSegmenter", max_ongoing_requests=2, ray_actor_options={"num_cpus": 0.25})
class ChainSegmenter:
    def __init__(self):
        self.logits = np.zeros(LOGITS_SHAPE, np.float32)

    async def segment(self, sent_at: float) -> _Answer:
        timings: dict[str, float] = {}
        hops.record(timings, hops.TO_SEGMENTER, sent_at)
        return _Answer(self.logits, timings, hops.now())


@serve.deployment(name="ChainPostprocess", max_ongoing_requests=4, ray_actor_options={"num_cpus": 0.25})
class ChainPostprocess:
    def __init__(self, answer: bytes):
        self.answer = answer

    async def render(self, seg: _Answer) -> _Answer:
        timings = dict(seg.timings_ms)
        hops.record(timings, hops.TO_POSTPROCESS, seg.done_at)
        return _Answer(self.answer, timings, hops.now())


@serve.deployment(name="Chain", max_ongoing_requests=64, ray_actor_options={"num_cpus": 0.25})
@serve.ingress(chain_http)
class Chain:
    def __init__(self, segmenter: DeploymentHandle, postprocess: DeploymentHandle):
        self.segmenter, self.postprocess = segmenter, postprocess

    @chain_http.post("/v1/cutout")
    async def cutout(self, image_id: str = Form(...), points: str | None = Form(None),
                     labels: str | None = Form(None)) -> Response:
        seg = self.segmenter.options(session_id=image_id).segment.remote(hops.now())
        answer = await self.postprocess.render.remote(seg)
        timings = dict(answer.timings_ms)
        hops.record(timings, hops.BACK, answer.done_at)
        return Response(answer.payload, media_type="image/png", headers={"Server-Timing": server_timing(timings)})


def deploy_chain(answer: bytes) -> None:
    """Runs the chain app next to the graph, as a third Serve application under ROUTE_PREFIX."""
    segmenter = with_replica_env(ChainSegmenter, {"request_router_config": SESSION_ROUTER})
    app = with_replica_env(Chain, {}).bind(segmenter.bind(), with_replica_env(ChainPostprocess, {}).bind(answer))
    serve.run(app, name="bench_chain", route_prefix=ROUTE_PREFIX)
