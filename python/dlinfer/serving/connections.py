"""Every connection of `dlinfer serve` bounded: a deadline for a request's head, and a cap
on open connections that closes idle ones first.

uvicorn's keep-alive timeout runs only between requests, and nothing bounds how long a
client may take to send a request's head, so connections that send nothing (or half a
request line) would stay open for ever, and about a thousand of them exhaust the
process's file descriptors: then every new client is refused.  :class:`BoundedHTTPProtocol`
is uvicorn's own HTTP protocol (httptools, or h11 without it) with two additions:

- **head deadline** (``head_timeout_s``): from the moment a connection opens, or the first
  byte of a later request on a kept-alive connection, its head (request line and headers)
  must be complete within the deadline; otherwise the connection is closed, after a
  plain ``408`` when part of a head had arrived.  The body has its own deadline in the
  app (:class:`~.uploads.BodyReader`).
- **connection cap** (``max_connections``, by default what the descriptor limit leaves):
  past it, connections waiting for a request (never sent one, or idle between requests,
  or still sending a head) are closed, the longest-waiting first, so that a client that
  does send a request is served.  Connections with a request in progress are never
  closed for this.

uvicorn builds protocols from a class it imports (again in each worker process), so the
settings are per process: :func:`configure` sets them before the server starts.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

__all__ = ["PROTOCOL", "BoundedHTTPProtocol", "ConnectionLimits", "configure",
           "default_max_connections"]

log = logging.getLogger("dlinfer.serving")

#: Where uvicorn imports the protocol from (``uvicorn.Config(http=PROTOCOL)``).
PROTOCOL = "dlinfer.serving.connections:BoundedHTTPProtocol"
# Descriptors kept free beyond those open at startup, for what a request opens while it
# runs (multipart uploads over 1 MiB spool to temporary files) and for connections
# accepted in one event-loop turn before the cap closes older ones.
RESERVED_FDS = 64
# Never more than this many connections by default, whatever the descriptor limit says.
MAX_DEFAULT_CONNECTIONS = 1_000_000
# Evictions are logged at most this often (a flood would otherwise flood the log too).
_LOG_EVERY_S = 10.0


@dataclass(frozen=True)
class ConnectionLimits:
    """``head_timeout_s``: seconds to receive a request's head; ``max_connections``: open
    connections past which idle ones are closed."""

    head_timeout_s: float = 10.0
    max_connections: int = 1024


def open_descriptors() -> int:
    """How many file descriptors this process has open (Linux and macOS; 0 elsewhere)."""
    for folder in ("/proc/self/fd", "/dev/fd"):
        try:
            return len(os.listdir(folder))
        except OSError:
            continue
    return 0


def default_max_connections() -> int:
    """What the descriptor limit (``ulimit -n``) leaves for connections: the soft limit,
    less the descriptors open now and :data:`RESERVED_FDS`."""
    try:
        import resource
    except ImportError:  # Windows: no descriptor limit to read
        return MAX_DEFAULT_CONNECTIONS
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY or soft > MAX_DEFAULT_CONNECTIONS:
        return MAX_DEFAULT_CONNECTIONS
    return max(1, soft - open_descriptors() - RESERVED_FDS)


class _Registry:
    """This process's open connections, and those waiting for a request in the order they
    began to wait."""

    def __init__(self, limits: ConnectionLimits) -> None:
        self.limits = limits
        self.open: set[Any] = set()
        self.waiting: OrderedDict[Any, None] = OrderedDict()
        self.evicted = 0
        self._logged_at = -_LOG_EVERY_S
        self._logged_count = 0

    def opened(self, conn: Any) -> None:
        self.open.add(conn)
        self.waiting[conn] = None
        while len(self.open) > self.limits.max_connections and self.waiting:
            oldest, _ = self.waiting.popitem(last=False)
            self.open.discard(oldest)
            oldest.close_idle()
            self.evicted += 1
        self._log_evictions()

    def closed(self, conn: Any) -> None:
        self.open.discard(conn)
        self.waiting.pop(conn, None)

    def busy(self, conn: Any) -> None:
        self.waiting.pop(conn, None)

    def idle(self, conn: Any) -> None:
        if conn in self.open:
            self.waiting[conn] = None
            self.waiting.move_to_end(conn)

    def _log_evictions(self) -> None:
        now = time.monotonic()
        if self.evicted == self._logged_count or now - self._logged_at < _LOG_EVERY_S:
            return
        if not self._logged_count:
            log.warning("over %d open connections (--max-connections): closing those waiting "
                        "for a request, longest-waiting first", self.limits.max_connections)
        else:
            log.warning("closed %d more connections waiting for a request (%d open, "
                        "--max-connections)", self.evicted - self._logged_count, len(self.open))
        self._logged_at, self._logged_count = now, self.evicted


_registry = _Registry(ConnectionLimits())


def configure(head_timeout_s: float, max_connections: int | None) -> ConnectionLimits:
    """Set this process's limits (``None``: :func:`default_max_connections`); call before
    the server accepts connections."""
    global _registry
    limits = ConnectionLimits(head_timeout_s, max_connections or default_max_connections())
    _registry = _Registry(limits)
    return limits


def _base_protocol() -> type[asyncio.Protocol]:
    # The protocol uvicorn's "auto" picks.
    try:
        import httptools  # noqa: F401
    except ImportError:
        from uvicorn.protocols.http.h11_impl import H11Protocol

        return H11Protocol
    from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

    return HttpToolsProtocol


class BoundedHTTPProtocol(_base_protocol()):  # type: ignore[misc]
    """uvicorn's HTTP protocol with a head deadline and the connection cap."""

    _head_timer: asyncio.TimerHandle | None = None
    _head_started = False  # some bytes of a head have arrived
    _registered: _Registry | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._registered = _registry
        self._start_head_timer()
        _registry.opened(self)

    def connection_lost(self, exc: Exception | None) -> None:
        self._stop_head_timer()
        if self._registered is not None:
            self._registered.closed(self)
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        before = self.cycle
        if self._waiting():
            self._head_started = True
            if self._head_timer is None:  # the first byte of a later request's head
                self._start_head_timer()
        super().data_received(data)
        if self.cycle is not before:
            self._request_began()

    def on_response_complete(self) -> None:
        before = self.cycle
        super().on_response_complete()
        if self.cycle is not before:  # h11 starts a pipelined request here
            self._request_began()
        elif self._waiting() and not self.transport.is_closing() and self._registered:
            self._head_started = False
            self._registered.idle(self)

    # -- internals -----------------------------------------------------------------------

    def _waiting(self) -> bool:
        return self.cycle is None or self.cycle.response_complete

    def _request_began(self) -> None:
        self._stop_head_timer()
        self._head_started = False
        if self._registered is not None:
            self._registered.busy(self)

    def _start_head_timer(self) -> None:
        self._stop_head_timer()
        seconds = self._registered.limits.head_timeout_s if self._registered else 10.0
        self._head_timer = self.loop.call_later(seconds, self._head_timed_out)

    def _stop_head_timer(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _head_timed_out(self) -> None:
        self._head_timer = None
        if self.transport.is_closing() or not self._waiting():
            return
        if self._head_started:
            seconds = self._registered.limits.head_timeout_s if self._registered else 10.0
            message = f"request head not received within {seconds:g} s (--head-timeout-s)"
            self.transport.write(
                b"HTTP/1.1 408 Request Timeout\r\ncontent-type: text/plain; charset=utf-8\r\n"
                b"connection: close\r\ncontent-length: " + str(len(message)).encode()
                + b"\r\n\r\n" + message.encode())
        self.transport.close()

    def close_idle(self) -> None:
        """Closed by the cap: nothing was asked on it, so nothing is answered."""
        self._stop_head_timer()
        if not self.transport.is_closing():
            self.transport.close()
