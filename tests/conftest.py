"""Shared fixtures. The Ray fixtures start one local Ray + Serve for the whole session (real graph, real
SAM 2.1 code with seeded random weights, tiny model), on a free port."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from serve_app.local_ray import free_port  # noqa: E402  (the tests' import: one port picker)

TEST_ARGS = {"model": "tiny", "checkpoint": "random", "device": "cpu", "embedding_cache_mb": 256,
             "image_store_mb": 256}
# For tests of what a mask holds: the test checkpoint whose masks have real 0 and 255 pixels, a blob around the keep
# clicks (deployments/sam_model.py, sharpen). Seeded random weights give alpha 114..140 everywhere.
SHARP_ARGS = {**TEST_ARGS, "checkpoint": "random-sharp"}


ray_serve_urls: dict[str, str] = {}


def pytest_collection_modifyitems(items):
    """Cluster tests last: they need this process's Ray connection for a multi-node cluster of their own."""
    items.sort(key=lambda item: item.get_closest_marker("cluster") is not None)


@pytest.fixture(scope="session")
def serve_instance():
    import ray
    from ray import serve

    from serve_app.local_ray import init_local_ray

    port = free_port()
    metrics_port = free_port()
    # The product's start (Serve's proxy timeouts, worker niceness). Logical CPUs: replicas reserve fractions, and
    # several test apps share these 2 real cores. Metrics are exported every second (default 10 s) so the metrics
    # test need not wait long.
    init_local_ray(num_cpus=16, include_dashboard=False, log_to_driver=False, _metrics_export_port=metrics_port,
                   _system_config={"metrics_report_interval_ms": 1000},
                   runtime_env={"env_vars": {"RAY_SERVE_LOG_TO_STDERR": "0"}})
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    ray_serve_urls["metrics"] = f"http://127.0.0.1:{metrics_port}/metrics"
    yield f"http://127.0.0.1:{port}"
    if ray.is_initialized():  # the cluster tests (run last) may have shut it down already
        serve.shutdown()
        ray.shutdown()


@pytest.fixture(scope="session")
def app_url(serve_instance):
    """The real application, two ingress replicas, under its contract name at route '/'."""
    from ray import serve

    from serve_app.app import APP_NAME, bind_graph
    from serve_app.config import AppArgs

    serve.run(bind_graph(AppArgs(**TEST_ARGS), {"Ingress": {"num_replicas": 2}}), name=APP_NAME, route_prefix="/")
    return serve_instance


@pytest.fixture(scope="session")
def sharp_app_url(serve_instance):
    """The real application on the test checkpoint random-sharp (SHARP_ARGS), one replica per stage, under the
    route prefix /sharp: for the tests that assert what a mask holds."""
    from ray import serve

    from serve_app.app import bind_graph
    from serve_app.config import AppArgs

    serve.run(bind_graph(AppArgs(**SHARP_ARGS)), name="bgremove_sharp", route_prefix="/sharp")
    return serve_instance + "/sharp"


API_KEYS = ("key-a-0123456789abcdef", "key-b-0123456789abcdef")


@pytest.fixture(scope="session")
def keyed_app_url(serve_instance):
    """The real application with two API keys (API_KEYS), one replica per stage, under the route prefix /keyed
    (the web page is then at /keyed/)."""
    from ray import serve

    from serve_app.app import bind_graph
    from serve_app.config import AppArgs

    serve.run(bind_graph(AppArgs(**TEST_ARGS, api_keys=list(API_KEYS))), name="bgremove_keyed", route_prefix="/keyed")
    return serve_instance + "/keyed"


@pytest.fixture(scope="session")
def metrics_url(serve_instance) -> str:
    """Ray's Prometheus endpoint on this node."""
    return ray_serve_urls["metrics"]


def pytest_terminal_summary(terminalreporter):
    """The reliability suite's counts (tests/reliability.py), shown even when pytest captures output."""
    from reliability import REPORT

    if REPORT:
        terminalreporter.section("reliability report")
        for line in REPORT:
            terminalreporter.write_line(line)
