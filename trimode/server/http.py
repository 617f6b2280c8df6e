"""The HTTP server around the app: uvicorn's h11 protocol with read timeouts it lacks.

uvicorn closes an idle kept-alive connection, but a client that opens a socket and sends nothing,
or half a request, or stops in the middle of a body, holds the connection (and a file descriptor)
forever: 61 such sockets were still open after 180 s. Here the request headers must arrive within
``header_timeout`` seconds of the connection opening (or of the previous response on it), and a
body must not pause for more than ``body_timeout`` seconds; otherwise the connection is closed
(a body cut off this way reaches the app as a client disconnect).
"""

from __future__ import annotations

import asyncio

import h11
import uvicorn
from uvicorn.protocols.http.h11_impl import H11Protocol

from .limits import BODY_TIMEOUT, HEADER_TIMEOUT


class TimedH11Protocol(H11Protocol):
    header_timeout = HEADER_TIMEOUT
    body_timeout = BODY_TIMEOUT

    def connection_made(self, transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._read_timer: asyncio.TimerHandle | None = None
        self._cycle_seen = None
        self._arm(self.header_timeout)

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        if self.transport.is_closing():
            return self._disarm()
        if self.cycle is not self._cycle_seen:  # a new request's headers are in
            self._cycle_seen = self.cycle
            self._disarm()
        if self.cycle is not None and not self.cycle.response_complete:
            # A request in flight: a body still coming must keep coming; a finished one needs no timer.
            # (Between requests the header timer set at the last response keeps running.)
            if self.conn.their_state is h11.SEND_BODY:
                self._arm(self.body_timeout)
            else:
                self._disarm()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if not self.transport.is_closing():
            self._arm(self.header_timeout)  # the next request on this connection gets the same bound

    def connection_lost(self, exc) -> None:
        self._disarm()
        super().connection_lost(exc)

    def _arm(self, seconds: float) -> None:
        self._disarm()
        self._read_timer = self.loop.call_later(seconds, self._read_timed_out)

    def _disarm(self) -> None:
        if getattr(self, "_read_timer", None) is not None:
            self._read_timer.cancel()
            self._read_timer = None

    def _read_timed_out(self) -> None:
        self._read_timer = None
        if self.transport.is_closing():
            return
        # Waiting for a response to finish is not a stalled read: only close when we are waiting on the client.
        if self.flow.read_paused:  # we stopped reading (the app has not taken the last chunk): not stalled
            return self._arm(self.body_timeout)
        waiting_on_client = self.cycle is None or self.cycle.response_complete or self.conn.their_state is h11.SEND_BODY
        if waiting_on_client:
            self.transport.close()


def protocol(header_timeout: float = HEADER_TIMEOUT, body_timeout: float = BODY_TIMEOUT) -> type[TimedH11Protocol]:
    """The protocol class with these timeouts (uvicorn takes a class, and builds one per connection)."""
    return type("TimedH11Protocol", (TimedH11Protocol,), {"header_timeout": header_timeout, "body_timeout": body_timeout})


def uvicorn_config(app, host: str, port: int, *, header_timeout: float = HEADER_TIMEOUT,
                   body_timeout: float = BODY_TIMEOUT, log_level: str = "info") -> uvicorn.Config:
    return uvicorn.Config(app, host=host, port=port, log_level=log_level, http=protocol(header_timeout, body_timeout),
                          timeout_keep_alive=5, timeout_graceful_shutdown=5)
