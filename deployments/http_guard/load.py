"""How much work one replica takes on: an in-flight gate and a deadline, both 503 + Retry-After."""

from __future__ import annotations

import math

import anyio

from .. import errors
from ..http_errors import error_response


class InflightGate:
    """Refuses a request once ``limit`` are running in this replica, rather than letting it queue behind them."""

    def __init__(self, app, limit: int):
        self.app, self.limit = app, limit
        self.inflight = 0

    async def __call__(self, scope, receive, send) -> None:
        if self.inflight >= self.limit:
            await error_response(errors.overloaded())(scope, receive, send)
            return
        self.inflight += 1
        try:
            await self.app(scope, receive, send)
        finally:
            self.inflight -= 1


class Deadline:
    """Cancels the work when the app has not begun its answer within ``timeout_s``, and answers 503 instead. An
    answer that has begun is never cut in half."""

    def __init__(self, app, timeout_s: float):
        self.app, self.timeout_s = app, timeout_s

    async def __call__(self, scope, receive, send) -> None:
        started = False

        async def disarming_send(message):
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
                deadline.deadline = math.inf  # answering now
            await send(message)

        with anyio.move_on_after(self.timeout_s) as deadline:
            await self.app(scope, receive, disarming_send)
        if deadline.cancelled_caught and not started:
            await error_response(errors.ApiError(
                503, "timeout", f"the service could not answer within {self.timeout_s:g} s because it is busy; "
                "retry after the number of seconds in the Retry-After header",
                headers={"Retry-After": "2"}))(scope, receive, send)
