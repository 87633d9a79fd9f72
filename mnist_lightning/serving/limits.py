"""The service's limits on what one request, one client and all of them together may cost.

BodySizeLimit: the size of a request body, applied before the body is read into memory. Written by hand: uvicorn
does not limit body size, and FastAPI only does in recent releases (max_body_size), not in every version this
package supports. A declared Content-Length over the limit is refused at once; a body without one (chunked) is
counted as it streams in and refused when it passes the limit.
DecodeBudget: the memory all requests together may hold in decoding images.
ClientLimits: requests and labels per client address, with the `limits` package.
(How long a slow client may take to send its request is bounded in serving/server.py, at the connection.)
"""

from __future__ import annotations

import contextlib
import json
import threading
import time


class BodyTooLarge(Exception):
    pass


class BodySizeLimit:
    """ASGI middleware: 413 with a JSON `detail` for a body over `max_bytes`; the app never sees the rest."""

    def __init__(self, app, max_bytes: int) -> None:
        self.app, self.max_bytes = app, max_bytes

    def _detail(self, size: str) -> bytes:
        limit = f"{self.max_bytes:,} bytes"
        return json.dumps(
            {
                "detail": f"request body of {size} is over the limit of {limit}: send smaller "
                f"or fewer images (the server's limits.max_body_bytes)"
            }
        ).encode()

    async def _refuse(self, send, size: str) -> None:
        body = self._detail(size)
        await send(
            {
                "type": "http.response.start",
                "status": 413,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode()),
                    (b"connection", b"close"),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            await self._refuse(send, f"{int(declared):,} bytes")
            return
        received, refused = 0, False

        async def counted_receive():
            nonlocal received, refused
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes and not refused:
                    refused = True
                    await self._refuse(send, f"more than {self.max_bytes:,} bytes")
                    raise BodyTooLarge
            return message

        async def send_unless_refused(message) -> None:
            if not refused:  # the app's own answer to the aborted body is dropped: the 413 was sent
                await send(message)

        try:
            await self.app(scope, counted_receive, send_unless_refused)
        except BodyTooLarge:
            pass


class Busy(Exception):
    """The server is at one of its limits for now; the request may be sent again later (503)."""


class DecodeBudget:
    """The bytes that all requests together may hold in decoding at once (limits.decode_budget_bytes): a request
    whose image needs more than is free waits for it, up to `wait_s`, then is answered 503. Small images (a 28x28
    PNG takes a few kilobytes) pass at once; only several large ones at the same time wait."""

    def __init__(self, total: int, wait_s: float) -> None:
        self.total, self.wait_s, self.free = total, wait_s, total
        self._changed = threading.Condition()

    @contextlib.contextmanager
    def reserve(self, cost: int, wait: bool = True):
        """Hold `cost` bytes of the budget; without `wait`, Busy at once when they are not free now."""
        with self._changed:
            if not self._changed.wait_for(lambda: self.free >= cost, timeout=self.wait_s if wait else 0):
                raise Busy(
                    f"the server is decoding other large images and has no room for one of {cost / 1e6:,.0f} MB "
                    f"for now: send it again in a few seconds, or scale it down"
                )
            self.free -= cost
        try:
            yield
        finally:
            with self._changed:
                self.free += cost
                self._changed.notify_all()


class ClientLimits:
    """Requests per minute and labels per hour of each client address (limits.requests_per_minute,
    limits.feedback_per_hour), counted by the `limits` package in this process's memory: with several worker
    processes each counts its own share (docs/security.md)."""

    def __init__(self, requests_per_minute: int, feedback_per_hour: int) -> None:
        from limits import RateLimitItemPerHour, RateLimitItemPerMinute
        from limits.storage import MemoryStorage
        from limits.strategies import SlidingWindowCounterRateLimiter

        self._limiter = SlidingWindowCounterRateLimiter(MemoryStorage())
        self._items = {
            "requests": RateLimitItemPerMinute(requests_per_minute) if requests_per_minute else None,
            "feedback": RateLimitItemPerHour(feedback_per_hour) if feedback_per_hour else None,
        }

    def hit(self, kind: str, client: str) -> float | None:
        """Count one `kind` from `client`: None when allowed, else the seconds until it would be."""
        item = self._items[kind]
        if item is None or self._limiter.hit(item, kind, client):
            return None
        stats = self._limiter.get_window_stats(item, kind, client)
        return max(1.0, stats.reset_time - time.time())
