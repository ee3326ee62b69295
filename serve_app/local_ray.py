"""Starting Ray on this machine (``bgremove serve``, ``bgremove bench``)."""

from __future__ import annotations

from typing import Any

# Ray runs its workers, and so every replica of this graph, at nice 15 so that its daemons stay responsive. On a
# machine that also runs clients (the web page's browser, the benchmark) or is small, nice 15 lets any of them
# preempt the mask decoder between two of its ~300 operations (docs/benchmarks/design-notes.md). Equal priority is
# what a plain service would get. Clusters set the same with RAY_worker_niceness=0 in the Ray containers' environment.
WORKER_NICENESS = 0


def init_local_ray(**kwargs: Any) -> None:
    import ray

    system_config = {"worker_niceness": WORKER_NICENESS, **kwargs.pop("_system_config", {})}
    ray.init(_system_config=system_config, **kwargs)


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
