"""Starting Ray on this machine (``bgremove serve``, ``bgremove bench``)."""

from __future__ import annotations

import os
from typing import Any

# Ray runs its workers, and so every replica of this graph, at nice 15 so that its daemons stay responsive. On a
# machine that also runs clients (the web page's browser, the benchmark) or is small, nice 15 lets any of them
# preempt the mask decoder between two of its ~300 operations (docs/benchmarks/design-notes.md). Equal priority is
# what a plain service would get. Clusters set the same with RAY_worker_niceness=0 in the Ray containers' environment.
WORKER_NICENESS = 0


# Serve kills its HTTP proxy when the proxy is not ready within 5 s of starting, or misses a 10 s health check, and
# `serve.start` then fails: on a small or busy machine (2 cores, other work running) starting takes longer. A minute
# for each still finds a proxy that hangs. Set before Ray starts, so that its processes inherit them; the image sets
# the same for clusters (docker/Dockerfile).
SERVE_PROXY_TIMEOUTS = {"RAY_SERVE_PROXY_READY_CHECK_TIMEOUT_S": "60", "RAY_SERVE_PROXY_HEALTH_CHECK_TIMEOUT_S": "60"}


def init_local_ray(**kwargs: Any) -> None:
    import ray

    for name, value in SERVE_PROXY_TIMEOUTS.items():
        os.environ.setdefault(name, value)
    system_config = {"worker_niceness": WORKER_NICENESS, **kwargs.pop("_system_config", {})}
    ray.init(_system_config=system_config, **kwargs)


# Below the kernel's ephemeral range (32768-60999 by default), where outgoing connections and every port a starting
# Ray asks the kernel for take theirs, so that none of them takes the port between this pick and the server's bind
# (a test's Serve proxy once failed to bind one so); above Ray's worker ports (10002-19999).
PORT_RANGE = (20000, 32767)


_handed_out: set[int] = set()  # two picks before either is bound must not be the same port


def free_port() -> int:
    """A loopback port that nothing listens on now and that this process has not handed out before, from
    PORT_RANGE (the kernel's pick where those are all taken)."""
    import random
    import socket

    low, high = PORT_RANGE
    ports = [port for port in range(low, high + 1) if port not in _handed_out]
    # Its own generator: a test that seeds the module's random must not make two processes pick alike.
    for port in random.SystemRandom().sample(ports, min(64, len(ports))):
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
        _handed_out.add(port)
        return port
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
