"""Memory accounting: each worker process's resident memory, reported with every result row and gathered per
process by the driver."""

from __future__ import annotations

import os
import resource


def worker_stats(stage: str) -> dict:
    import ray

    node = ray.get_runtime_context().get_node_id() if ray.is_initialized() else ""
    return {"stage": stage, "pid": os.getpid(), "node": node, "rss_mb": rss_mb(), "max_rss_mb": max_rss_mb()}


def rss_mb() -> float:
    """This process's resident memory now (Linux), else its peak so far."""
    try:
        with open("/proc/self/statm") as statm:
            return round(int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20, 1)
    except (OSError, ValueError, IndexError):
        return max_rss_mb()


def max_rss_mb() -> float:
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)  # kilobytes on Linux


class WorkerMemory:
    """RSS per worker process, from the stats each result row carries."""

    def __init__(self):
        self.by_process: dict[tuple, dict] = {}

    def add(self, stats: dict) -> None:
        key = (stats["node"], stats["pid"], stats["stage"])
        seen = self.by_process.get(key)
        if seen is None:
            self.by_process[key] = {"stage": stats["stage"], "node": stats["node"], "pid": stats["pid"],
                                    "first_rss_mb": stats["rss_mb"], "last_rss_mb": stats["rss_mb"],
                                    "max_rss_mb": stats["max_rss_mb"], "photos": 1}
        else:
            seen.update(last_rss_mb=stats["rss_mb"], max_rss_mb=max(seen["max_rss_mb"], stats["max_rss_mb"]),
                        photos=seen["photos"] + 1)

    def rows(self) -> list[dict]:
        return sorted(self.by_process.values(), key=lambda w: (w["stage"], w["node"], w["pid"]))
