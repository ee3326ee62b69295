"""Hops: how long a message between two replicas spends in transit (Serve's routing and queues, (de)serialisation,
the object store), measured by the sender's and the receiver's wall clocks.

The sender stamps the message with ``now()``; the receiver ``record``s the difference in its timings, which reach
the client in ``Server-Timing``. Exact between processes on one machine; across nodes the figure is off by the
difference of their clocks (NTP keeps that to about a millisecond). A message stamped 0 (in process, no Ray) is
not a hop and records nothing.
"""

from __future__ import annotations

import time

TO_SEGMENTER = "hop_segmenter"  # ingress -> segmenter: the segment call
TO_POSTPROCESS = "hop_postprocess"  # segmenter -> postprocess: the segmenter's answer handed to the render call
BACK = "hop_back"  # the last stage's answer -> ingress
NAMES = (TO_SEGMENTER, TO_POSTPROCESS, BACK)


def now() -> float:
    return time.time()


def record(timings: dict[str, float], name: str, sent_at: float, arrived_at: float | None = None) -> None:
    """``timings[name]``: ms from ``sent_at`` (another process's ``now()``) to ``arrived_at`` (default: now)."""
    if sent_at:
        timings[name] = round(((now() if arrived_at is None else arrived_at) - sent_at) * 1000, 2)
