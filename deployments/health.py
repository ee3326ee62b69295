"""Health answered from a recent probe: a flood of health checks costs the probed stages at most one call each per
``max_age_s`` (per ingress replica), never one call per check. The probe asks every stage behind the ingress."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from typing import Any, Awaitable, Callable, Mapping


@dataclass(frozen=True)
class ProbeResult:
    value: Any = None
    error: BaseException | None = None
    at: float = 0.0  # clock time when the probe finished


class CachedProbe:
    """Runs ``probe`` at most once at a time; its result (or failure) answers every caller for ``max_age_s``."""

    def __init__(self, probe: Callable[[], Awaitable[Any]], max_age_s: float, clock: Callable[[], float] = time.monotonic):
        self._probe, self.max_age_s, self._clock = probe, max_age_s, clock
        self._last: ProbeResult | None = None
        self._inflight: asyncio.Future | None = None
        self.probes = 0

    async def result(self) -> ProbeResult:
        last = self._last
        if last is not None and self._clock() - last.at < self.max_age_s:
            return last
        if self._inflight is None:
            self._inflight = asyncio.ensure_future(self._run())
        # Shielded: a caller that gives up (client gone) does not cancel the probe the others wait for.
        return await asyncio.shield(self._inflight)

    async def _run(self) -> ProbeResult:
        self.probes += 1
        try:
            try:
                outcome = ProbeResult(value=await self._probe())
            except Exception as exc:  # noqa: BLE001 - any failure means "cannot serve", and is cached as such
                outcome = ProbeResult(error=exc)
            self._last = ProbeResult(outcome.value, outcome.error, self._clock())
            return self._last
        finally:
            self._inflight = None


class StageUnavailable(Exception):
    """A stage of the graph did not answer its probe (in time, or at all)."""

    def __init__(self, stage: str, cause: BaseException):
        super().__init__(f"{stage}: {type(cause).__name__}: {cause}")
        self.stage, self.cause = stage, cause


async def probe_stages(probes: Mapping[str, Callable[[], Awaitable[Any]]], timeout_s: float) -> dict[str, Any]:
    """Every stage's probe at once, each bounded by ``timeout_s``: their answers by stage, or StageUnavailable naming
    the first stage (in ``probes``' order) that failed."""
    names = list(probes)
    answers = await asyncio.gather(*(asyncio.wait_for(probes[name](), timeout_s) for name in names),
                                   return_exceptions=True)
    for name, answer in zip(names, answers):
        if isinstance(answer, BaseException):
            raise StageUnavailable(name, answer) from answer
    return dict(zip(names, answers))
