"""A local Ray with Serve's HTTP proxy on a free port, and the graph deployed on it, for the scenarios that
measure over HTTP."""

from __future__ import annotations

import argparse

from ..local_ray import free_port, init_local_ray


def start_serve(num_cpus: int, env_vars: dict[str, str] | None = None) -> str:
    """Starts Ray and Serve's proxy on 127.0.0.1; returns the proxy's URL."""
    from ray import serve

    port = free_port()
    init_local_ray(num_cpus=num_cpus, include_dashboard=False, log_to_driver=False,
                   runtime_env={"env_vars": env_vars} if env_vars else None)
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    return f"http://127.0.0.1:{port}"


def start_graph(args: argparse.Namespace) -> str:
    """The graph as ``bgremove serve`` runs it, under its application name at route '/'; returns its URL."""
    import os

    from ray import serve

    from ..app import APP_NAME, bind_graph
    from ..config import AppArgs

    env_vars = dict(item.split("=", 1) for item in args.serve_env)  # e.g. Serve's latency flags, replicas only
    url = start_serve(max(8, os.cpu_count() or 1), env_vars)
    options: dict[str, dict] = {"Segmenter": {"num_replicas": args.segmenter_replicas}}
    if args.device != "cpu" and _cuda_available():
        options["Segmenter"]["ray_actor_options"] = {"num_cpus": 1, "num_gpus": 1}
    app_args = AppArgs(model=args.model, checkpoint=args.checkpoint, device=args.device, cuda_graphs=args.cuda_graphs,
                       postprocess_threads=args.postprocess_threads)
    serve.run(bind_graph(app_args, options), name=APP_NAME, route_prefix="/")
    return url


def _cuda_available() -> bool:
    import torch

    return torch.cuda.is_available()
