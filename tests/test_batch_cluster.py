"""`bgremove batch` on a multi-node Ray cluster simulated on this machine (``ray.cluster_utils.Cluster``, logical
GPUs): the segmenter actors spread over the GPU nodes, and a GPU node removed midway still leaves every photo
cut out exactly once (one output each, no error rows). Few, small photos: CI runs this on two cores."""

from __future__ import annotations

import os
import shutil
import tempfile
import threading
import time

import pytest

from conftest import TEST_ARGS
from images import jpeg
from serve_app import batch
from serve_app.config import AppArgs

pytestmark = [pytest.mark.e2e, pytest.mark.cluster]

# The head runs the CPU tasks (decode, render); each GPU node holds one segmenter actor and nothing else (its
# only CPU goes to the actor). Three GPU nodes for two actors: one to move to when a node goes.
HEAD = {"num_cpus": 2}
GPU_NODE = {"num_cpus": 1, "num_gpus": 1}
PHOTOS = 8
# A private Ray temp dir keeps other ray.init()s on this machine out of this cluster; a raylet waits for its
# agents' ports this long (default 30 s, too short when other test runs share the two cores).
ENV = {"RAY_TMPDIR": "", "RAY_agent_register_timeout_ms": "120000"}


def start(make, attempts: int = 3):
    """A raylet gets 30 s to register; on two shared cores that is sometimes not enough: try again."""
    for attempt in range(1, attempts + 1):
        try:
            return make()
        except Exception as exc:  # noqa: BLE001 - Ray raises a bare Exception for this timeout
            if attempt == attempts or "timed out during startup" not in str(exc):
                raise
            time.sleep(5)


def segment_actor_nodes() -> dict[str, str]:
    """{actor id: node id} of the live segmenter actors, from the GCS (the state API would need a dashboard)."""
    from ray._private.state import actors

    return {actor_id: info["Address"]["NodeID"] for actor_id, info in actors(actor_state_name="ALIVE").items()
            if "SegmentStage" in info["ActorClassName"]}


def test_job_spreads_over_gpu_nodes_and_survives_losing_one(tmp_path):
    import ray
    from ray.cluster_utils import Cluster

    if ray.is_initialized():  # the session's one-node Ray (conftest); cluster tests are collected last
        from ray import serve

        serve.shutdown()
        ray.shutdown()
    source, out = tmp_path / "in", tmp_path / "out"
    source.mkdir()
    for i in range(PHOTOS):
        (source / f"p{i}.jpg").write_bytes(jpeg(160, 120, seed=i))

    previous = {name: os.environ.get(name) for name in ENV}
    os.environ.update(ENV, RAY_TMPDIR=tempfile.mkdtemp(prefix="bgc"))
    cluster = None
    try:
        cluster = start(lambda: Cluster(initialize_head=True, head_node_args={**HEAD, "include_dashboard": False}))
        gpu_nodes = {start(lambda: cluster.add_node(**GPU_NODE)) for _ in range(3)}
        cluster.wait_for_nodes()
        ray.init(address=cluster.address, log_to_driver=False)
        job = batch.Job(str(source), str(out), args=AppArgs(**TEST_ARGS), actors=2, gpus_per_actor=1,
                        batch_size=1, progress=False)
        result: dict = {}

        def run_job():
            try:
                result["summary"] = batch.run(job)
            except BaseException as exc:  # noqa: BLE001 - reported by the assertion below, with its traceback
                result["error"] = exc
                raise

        runner = threading.Thread(target=run_job, daemon=True)
        runner.start()

        deadline = time.monotonic() + 900
        while len(list(out.glob("*.png"))) < 2 and runner.is_alive() and time.monotonic() < deadline:
            time.sleep(0.5)
        placed = segment_actor_nodes()
        assert len(set(placed.values())) == 2, f"two actors on two GPU nodes: {placed}"
        victim = next(node for node in gpu_nodes if node.node_id in placed.values())
        done_before = len(list(out.glob("*.png")))
        assert done_before < PHOTOS, "the job ended before a node could be removed"
        cluster.remove_node(victim)
        print(f"\n[batch cluster] removed GPU node {victim.node_id[:8]} after {done_before} of {PHOTOS} photos")

        runner.join(timeout=900)
        assert not runner.is_alive(), "the job did not finish after the node was removed"
        assert "error" not in result, f"the job raised: {result.get('error')!r}"
        summary = result["summary"]
        print(f"[batch cluster] {summary.as_dict()}")
        assert (summary.done, summary.failed) == (PHOTOS, 0)
        assert sorted(p.name for p in out.iterdir()) == sorted(f"p{i}.png" for i in range(PHOTOS))
        segment_nodes = {w["node"] for w in summary.workers if w["stage"] == "segment"}
        assert len(segment_nodes) >= 2 and segment_nodes <= {n.node_id for n in gpu_nodes}
    finally:
        ray.shutdown()
        if cluster is not None:
            cluster.shutdown()
        shutil.rmtree(os.environ["RAY_TMPDIR"], ignore_errors=True)
        for name, value in previous.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
