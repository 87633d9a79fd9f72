"""A limit on the size of a request body, applied before the body is read into memory.

Written by hand: uvicorn does not limit body size, and FastAPI only does in recent releases (max_body_size), not
in every version this package supports. A declared Content-Length over the limit is refused at once; a body
without one (chunked) is counted as it streams in and refused when it passes the limit.
"""

from __future__ import annotations

import json


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
