"""Helpers of the reliability suite (tests/test_reliability_*.py): its printed report, load generation over HTTP,
the replica processes of this test session's own Ray cluster and their resident memory."""

from __future__ import annotations

import asyncio
import os
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import httpx

# Lines printed at the end of the pytest run (conftest.py's pytest_terminal_summary), whatever the capture mode.
REPORT: list[str] = []


def report(section: str, text: str) -> None:
    line = f"[{section}] {text}"
    REPORT.append(line)
    print(line)


@dataclass
class LoadResult:
    sent: int = 0
    statuses: Counter = field(default_factory=Counter)
    failed: list[str] = field(default_factory=list)  # answered with something other than 200 / 503
    lost: list[str] = field(default_factory=list)  # no answer at all: connection error or client timeout
    missing_retry_after: int = 0  # 503s without the header
    not_json_503: int = 0  # 503s without the DESIGN.md JSON body (e.g. the HTTP proxy's own)
    latencies: dict[int, list[float]] = field(default_factory=dict)

    @property
    def answered(self) -> int:
        return sum(self.statuses.values())

    def summary(self) -> str:
        def p(status, q):
            values = sorted(self.latencies.get(status, []))
            return f"{values[min(len(values) - 1, int(q * len(values)))]:.2f}s" if values else "-"

        return (f"sent={self.sent} answered={self.answered} 200={self.statuses.get(200, 0)} "
                f"503={self.statuses.get(503, 0)} failed_otherwise={len(self.failed)} never_answered={len(self.lost)} "
                f"503_without_retry_after={self.missing_retry_after} 503_not_json={self.not_json_503} "
                f"latency_200_p50={p(200, 0.5)} latency_503_p50={p(503, 0.5)} latency_503_max={p(503, 1.0)}")


async def run_load(url: str, make_request, clients: int, per_client: int, timeout_s: float = 120.0,
                   headers: dict | None = None, ok_statuses=(200, 503)) -> LoadResult:
    """``clients`` concurrent clients, each sending ``per_client`` requests one after another; every request is
    counted as answered (by status), failed otherwise, or lost."""
    result = LoadResult()
    limits = httpx.Limits(max_connections=clients + 8, max_keepalive_connections=clients + 8)
    async with httpx.AsyncClient(base_url=url, timeout=timeout_s, limits=limits, headers=headers or {}) as client:
        async def one_client(index: int) -> None:
            for i in range(per_client):
                method, path, kwargs = make_request(index, i)
                result.sent += 1
                start = time.perf_counter()
                try:
                    response = await client.request(method, path, **kwargs)
                except (httpx.TimeoutException, httpx.TransportError) as exc:
                    result.lost.append(f"{type(exc).__name__}: {exc}")
                    continue
                elapsed = time.perf_counter() - start
                result.statuses[response.status_code] += 1
                result.latencies.setdefault(response.status_code, []).append(elapsed)
                if response.status_code == 503:
                    result.missing_retry_after += "retry-after" not in response.headers
                    try:
                        response.json()["error"]["code"]
                    except Exception:  # noqa: BLE001
                        result.not_json_503 += 1
                if response.status_code not in ok_statuses:
                    result.failed.append(f"{response.status_code}: {response.text[:3000]}")

        await asyncio.gather(*(one_client(i) for i in range(clients)))
    return result


def replica_processes(app_name: str, deployment: str):
    """psutil processes of one deployment's replicas in *this* session's Ray cluster: descendants of this
    process only, so that a same-named app of another Ray instance on the machine is never touched."""
    import psutil

    title = f"ServeReplica:{app_name}:{deployment}"
    found = []
    for process in psutil.Process(os.getpid()).children(recursive=True):
        try:
            if any(title in part for part in process.cmdline()):
                found.append(process)
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            continue
    return found


def resident_kib(pid: int, *kinds: str) -> int:
    """The sum of ``kinds`` ("RssAnon", "RssFile", "RssShmem") of /proc/PID/status, in KiB."""
    fields = dict(line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines() if ":" in line)
    return sum(int(fields[kind].split()[0]) for kind in kinds)


def anonymous_bytes(pid: int) -> int:
    """What the allocator holds: resident memory less the file-backed pages (library code, which pages in as it is
    first run) and the shared ones (Ray's object store). What a leak grows."""
    return resident_kib(pid, "RssAnon") * 1024


def wait_until(predicate, timeout_s: float, interval_s: float = 0.5, what: str = "condition"):
    deadline = time.monotonic() + timeout_s
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s:.0f} s waiting for {what}")
        time.sleep(interval_s)


def metric_samples(metrics_url: str, name: str, **labels: str) -> list[tuple[dict[str, str], float]]:
    """Samples of one metric on Ray's Prometheus endpoint whose labels include ``labels`` (e.g.
    application="routing"): [(labels, value), ...], one per series (Serve tags each with its replica)."""
    from prometheus_client.parser import text_string_to_metric_families

    found = []
    for family in text_string_to_metric_families(httpx.get(metrics_url, timeout=10).text):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                found.append((sample.labels, sample.value))
    return found
