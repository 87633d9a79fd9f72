"""uvicorn, configured for untrusted clients: a bound on open connections (limit_concurrency, answered 503), on
idle keep-alive connections, and on how long a request may take to arrive.

uvicorn times out idle keep-alive connections but not a request that is still arriving: a client sending its
headers or its body a byte a second holds a connection for as long as it likes, and a few hundred such clients
hold them all. RequestDeadline closes such a connection, with a 408 where no answer has started, once
`request_timeout_s` has passed since its request began. Written by hand as a mixin on uvicorn's two HTTP/1.1
protocol classes, because no option of uvicorn's sets such a deadline: httptools' (C, about three times faster
to parse a request; the serve extra installs it, with uvloop, as uvicorn[standard]) and h11's (pure Python, the
fallback where httptools is missing). Both keep the newest request as `self.cycle`, with the same flags; h11 parses
a pipelined request only once the one before it is answered, httptools parses it at once and queues it.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import json
import logging

from uvicorn.protocols.http.h11_impl import H11Protocol

try:
    from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
except ImportError:  # httptools is not installed (a bare `pip install uvicorn`): h11 parses
    HttpToolsProtocol = None

TIMEOUT_BODY = json.dumps(
    {"detail": "the request took too long to arrive: send it at once (the server's limits.request_timeout_s)"}
).encode()
TIMEOUT_RESPONSE = (
    b"HTTP/1.1 408 Request Timeout\r\ncontent-type: application/json\r\nconnection: close\r\n"
    + f"content-length: {len(TIMEOUT_BODY)}\r\n\r\n".encode()
    + TIMEOUT_BODY
)


class Deadline:
    """A deadline on each request's arrival, for a uvicorn HTTP protocol class: from the connection's first byte
    (or its opening) to the end of the request's body. The answer's own time is not bounded here (the graceful
    shutdown and the decode budget bound it)."""

    request_timeout_s = 20.0

    def connection_made(self, transport) -> None:
        super().connection_made(transport)
        self._deadline = self.loop.call_later(self.request_timeout_s, self._too_slow)

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        arriving = self.cycle is None or self.cycle.response_complete or self.cycle.more_body
        if arriving and self._deadline is None and not self.transport.is_closing():
            self._deadline = self.loop.call_later(self.request_timeout_s, self._too_slow)
        elif not arriving:
            self._cancel_deadline()

    def on_response_complete(self) -> None:
        self._cancel_deadline()
        super().on_response_complete()  # starts a pipelined request already received, if there is one
        if self.cycle is not None and not self.cycle.response_complete and self.cycle.more_body:
            # that request's body is still arriving: it gets its own deadline (otherwise the connection is idle
            # until the next request, and uvicorn's keep-alive timeout applies)
            self._deadline = self.loop.call_later(self.request_timeout_s, self._too_slow)

    def connection_lost(self, exc) -> None:
        self._cancel_deadline()
        super().connection_lost(exc)

    def _cancel_deadline(self) -> None:
        if getattr(self, "_deadline", None) is not None:
            self._deadline.cancel()
        self._deadline = None

    def _too_slow(self) -> None:
        self._deadline = None
        if self.transport.is_closing():
            return
        if getattr(self, "pipeline", None):
            # httptools: `cycle` is the newest request parsed, queued behind one still being answered (and reading
            # is paused meanwhile); once that answer is complete, on_response_complete gives it its deadline
            return
        answering = self.cycle is not None and not self.cycle.more_body and not self.cycle.response_complete
        if answering:
            return  # the request arrived whole and is being answered
        between = self.cycle is None or self.cycle.response_complete  # the next request's headers are arriving
        if between or not self.cycle.response_started:
            self.transport.write(TIMEOUT_RESPONSE)
        if not between:
            self.cycle.disconnected = True  # the app, reading the body, sees the client gone
            self.cycle.message_event.set()
        self.transport.close()


class H11Deadline(Deadline, H11Protocol):
    pass


if HttpToolsProtocol is not None:

    class HttpToolsDeadline(Deadline, HttpToolsProtocol):
        pass

    RequestDeadline = HttpToolsDeadline
else:
    RequestDeadline = H11Deadline  # the class serve uses, set in each worker process (serving/worker.py)


log = logging.getLogger(__name__)
M_MMAP_THRESHOLD = -3  # glibc's mallopt parameter (malloc.h)


def return_freed_memory() -> None:
    """Make glibc give large freed blocks back to the system at once. By default it raises its mmap threshold after
    the first large free, and then keeps the decoded images' 16 MB blocks in per-thread heaps: measured here, 8
    concurrent large requests left the server 650 MB larger than the decode budget allows, and it stayed so. A
    fixed threshold of 1 MB keeps every image buffer in its own mapping, freed when the image is. Elsewhere than
    glibc (musl, macOS) nothing is changed."""
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name) if name else None
        if libc is not None and hasattr(libc, "mallopt"):
            libc.mallopt(M_MMAP_THRESHOLD, 1 << 20)
    except OSError:
        log.debug("no C library to tune: large freed blocks stay with the allocator")


def protocol(request_timeout_s: float) -> type[Deadline]:
    """The protocol class to give uvicorn's `http=` (httptools' when it is installed), with this deadline."""
    return type("RequestDeadline", (RequestDeadline,), {"request_timeout_s": request_timeout_s})


def uvicorn_options(settings, workers: bool = False) -> dict:
    """uvicorn.run's keyword arguments for these ServeSettings. With `workers`, each worker process gets
    RequestDeadline itself (a class made here could not be sent to a new process); serving/worker.py sets its
    deadline there."""
    return {
        "host": settings.host,
        "port": settings.port,
        "root_path": settings.root_path,
        "timeout_graceful_shutdown": settings.graceful_shutdown_s,
        "limit_concurrency": settings.limits.max_connections,
        "timeout_keep_alive": settings.limits.keep_alive_s,
        "http": RequestDeadline if workers else protocol(settings.limits.request_timeout_s),
        # X-Forwarded-For names the client only when a trusted proxy set it; uvicorn trusts 127.0.0.1 by default,
        # which would let any local client choose the address the per-client limits count
        "proxy_headers": bool(settings.trusted_proxies),
        "forwarded_allow_ips": ",".join(settings.trusted_proxies) or None,
    }
