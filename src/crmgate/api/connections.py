"""`crmgate serve`'s connections: slow clients cut off, their number bounded, and requests that
are not HTTP answered in the contract's error shape (OWASP API4:2023, slowloris).

uvicorn's httptools protocol waits for a request's head and body as long as the client likes
(its keep-alive timeout only runs between two requests), and accepts connections without bound,
so a few thousand half-open requests hold as many file descriptors. ``GuardedHttpToolsProtocol``:

- gives a request's head ``header_timeout`` seconds, counted from the connection or from the
  first byte after the previous request: a head that trickles in a field at a time is cut off
  as surely as one that stops;
- gives a body ``body_timeout`` seconds between two of its pieces (a slow but steady upload
  goes on);
- past either, answers ``408 Request Timeout`` (RFC 9110 §15.5.9) when no answer is under way
  on the connection, and closes it. A connection that has sent nothing is closed without a word;
- refuses a connection beyond ``max_connections`` of the process with ``503`` at once, before
  reading anything from it;
- answers a request the parser refuses with ``400 MALFORMED_REQUEST`` rather than uvicorn's
  plain text, unless an answer has begun on the connection (then it can only close it).

Time the gateway makes a client wait (reading paused while a previous answer is written, an
``Expect: 100-continue`` not yet answered) is not held against the client.
"""

from __future__ import annotations

import asyncio
import json
import logging
import resource
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from http import HTTPStatus
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from crmgate.api.bounds import BoundedHttpToolsProtocol
from crmgate.api.errors import error_body
from crmgate.settings import Settings

log = logging.getLogger("crmgate.connections")

_IDLE, _HEAD, _BODY = "idle", "head", "body"  # what the connection waits for from the client
_REPORT_EVERY = 10.0  # seconds: cut connections are logged as one summary line per interval
_ABORT_AFTER = 5.0  # seconds a closed connection is given to deliver its last answer
# Files a process holds beside its clients' connections: database, CRM and Redis connections
# (the outbound pool alone may hold 100), logs, its own files.
_SPARE_FILES = 256


class _Tally:
    """Connections cut off in this process, logged as one line per interval: one line each
    would let an attacker flood the log."""

    def __init__(self) -> None:
        self.counts: Counter[str] = Counter()
        self.reporting_on: asyncio.AbstractEventLoop | None = None  # where the report is due

    def add(self, loop: asyncio.AbstractEventLoop, reason: str) -> None:
        self.counts[reason] += 1
        if self.reporting_on is not loop:  # (not on a loop that has ended since)
            self.reporting_on = loop
            loop.call_later(_REPORT_EVERY, self.report)

    def report(self) -> None:
        self.reporting_on = None
        counts, self.counts = self.counts, Counter()
        if not counts:
            return
        log.warning(
            "closed %d connections in %.0f s: %s",
            counts.total(),
            _REPORT_EVERY,
            ", ".join(f"{count} {reason}" for reason, count in counts.most_common()),
        )


_tally = _Tally()


class GuardedHttpToolsProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with read timeouts, a connection bound and contract-shaped
    refusals (see the module's docstring)."""

    # set by ServeLimits.protocol(), from the settings
    header_timeout: float
    body_timeout: float
    max_connections: int

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._waiting = _IDLE
        self._begun = False  # a byte of the request awaited was received
        self._deadline: float | None = None  # loop time the client's current wait ends
        self._timer: asyncio.TimerHandle | None = None  # fires at or before the deadline
        self._timer_at = 0.0
        self._refused = False
        self._lost = False

    # ---- the connection bound

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        if len(self.connections) > self.max_connections:
            self._refused = True
            _tally.add(self.loop, f"refused beyond CRMGATE_MAX_CONNECTIONS={self.max_connections}")
            self._answer(
                503,
                "SERVICE_UNAVAILABLE",
                "the gateway holds as many connections as it may; try again shortly",
                [(b"retry-after", b"1")],
            )
            return
        self._wait(_HEAD)

    # ---- the clock: the head from its start, the body from its last piece

    def data_received(self, data: bytes) -> None:
        if self._refused:
            return
        if self._waiting == _IDLE:  # the first bytes of a next request
            self._wait(_HEAD)
        super().data_received(data)
        if self._waiting == _BODY:
            self._wait(_BODY)  # a piece arrived: the body's clock starts again

    def on_message_begin(self) -> None:
        super().on_message_begin()
        if self._waiting != _HEAD:  # a pipelined request, in the data of the previous one
            self._wait(_HEAD)
        self._begun = True

    def on_headers_complete(self) -> None:
        super().on_headers_complete()
        self._wait(_BODY)

    def on_message_complete(self) -> None:
        super().on_message_complete()
        self._wait(_IDLE)

    def connection_lost(self, exc: Exception | None) -> None:
        self._lost = True
        self._wait(_IDLE)
        super().connection_lost(exc)

    def handle_websocket_upgrade(self) -> None:
        self._wait(_IDLE)  # the connection is another protocol's from now on
        super().handle_websocket_upgrade()

    def _wait(self, what: str) -> None:
        self._waiting = what
        if what == _IDLE:
            self._begun = False
            self._deadline = None
            if self._timer is not None:
                self._timer.cancel()
                self._timer = None
            return
        timeout = self.header_timeout if what == _HEAD else self.body_timeout
        self._deadline = self.loop.time() + timeout
        # A later deadline leaves the timer as it is, to be moved on when it fires early: a
        # body's pieces each move the deadline, and a timer for each would cost more than it.
        if self._timer is None or self._deadline < self._timer_at:
            self._set_timer(self._deadline)

    def _set_timer(self, at: float) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self._timer = self.loop.call_at(at, self._check_deadline)
        self._timer_at = at

    def _check_deadline(self) -> None:
        self._timer = None
        if self._deadline is None or self.transport.is_closing():
            return
        if self.loop.time() < self._deadline:
            self._set_timer(self._deadline)
        elif self._held_up_by_us():
            self._wait(self._waiting)
        else:
            self._expire()

    def _held_up_by_us(self) -> bool:
        # reading paused (a previous answer is being written, or the application has not taken
        # the body so far), or a client that asked for 100 Continue and was not answered yet
        waiting_for_continue = self.cycle is not None and self.cycle.waiting_for_100_continue
        return self.flow.read_paused or (self._waiting == _BODY and waiting_for_continue)

    def _expire(self) -> None:
        waiting, begun = self._waiting, self._begun
        self._wait(_IDLE)
        if waiting == _HEAD and not begun:
            _tally.add(self.loop, "idle before a request")
            self._close()
            return
        if waiting == _BODY and self.cycle.response_started:
            # answered before its body was read (401, 413, ...): a 408 would answer nothing
            _tally.add(self.loop, "too slow (body after the answer)")
            self._close()
            return
        if waiting == _HEAD:
            limit = f"{self.header_timeout:g} s for the request's header fields"
        else:
            limit = f"{self.body_timeout:g} s between two pieces of the request's body"
        _tally.add(self.loop, f"too slow ({waiting})")
        self._answer(408, "REQUEST_TIMEOUT", f"the request took too long: {limit}")

    # ---- answers the application never sees

    def send_400_response(self, msg: str) -> None:
        self._wait(_IDLE)
        self._answer(
            400,
            "MALFORMED_REQUEST",
            "the request is not valid HTTP/1.1 (its request line, a header field or its chunked "
            "body cannot be parsed)",
        )

    def _answer(
        self,
        status: int,
        code: str,
        message: str,
        headers: Sequence[tuple[bytes, bytes]] = (),
    ) -> None:
        """The contract's error answer written straight to the connection, which is then
        closed; only closed if an answer of the application has begun on it already."""
        cycle = self.cycle
        if cycle is not None and not cycle.response_complete:
            if cycle.response_started:
                self._close()
                return
            # The application's answer to come would follow ours: it is told the client left.
            cycle.disconnected = True
            cycle.message_event.set()
        body = json.dumps(error_body(status, code, message, None)).encode()
        head = [
            f"HTTP/1.1 {status} {HTTPStatus(status).phrase}".encode(),
            *(name + b": " + value for name, value in self.server_state.default_headers),
            b"content-type: application/json",
            b"content-length: " + str(len(body)).encode(),
            *(name + b": " + value for name, value in headers),
            b"connection: close",
        ]
        self.transport.write(b"\r\n".join(head) + b"\r\n\r\n" + body)
        self._close()

    def _close(self) -> None:
        # close() waits for what is written to leave; a client that reads nothing would keep the
        # connection that way, so it is cut after a while.
        self.transport.close()
        if self.transport.get_write_buffer_size():
            self.loop.call_later(_ABORT_AFTER, self._abort)

    def _abort(self) -> None:
        if not self._lost:
            self.transport.abort()


@dataclass(frozen=True)
class ServeLimits:
    """What ``crmgate serve``'s HTTP protocol bounds, from the settings; picklable, so that each
    worker process makes its protocol class from it (a class made at run time cannot be
    pickled)."""

    max_header_bytes: int
    max_header_fields: int
    header_timeout: float
    body_timeout: float
    max_connections: int

    @classmethod
    def from_settings(cls, settings: Settings) -> ServeLimits:
        return cls(
            max_header_bytes=settings.max_header_bytes,
            max_header_fields=settings.max_header_fields,
            header_timeout=settings.header_timeout,
            body_timeout=settings.body_timeout,
            max_connections=settings.max_connections,
        )

    def protocol(self) -> type[HttpToolsProtocol]:
        """The protocol class for ``uvicorn.Config(http=...)``: the head bounds of api/bounds.py
        over this module's guard (a head too large is 431 there, any other refusal 400 here)."""
        return type(
            "ServedHttpToolsProtocol",
            (BoundedHttpToolsProtocol, GuardedHttpToolsProtocol),
            {
                "max_head_bytes": self.max_header_bytes,
                "max_header_fields": self.max_header_fields,
                "header_timeout": self.header_timeout,
                "body_timeout": self.body_timeout,
                "max_connections": self.max_connections,
            },
        )


def fit_open_files(max_connections: int) -> None:
    """Raise this process's soft limit of open files, up to its hard limit, so that
    ``max_connections`` clients leave room for the rest, as Go's runtime does at start; warn
    when the hard limit is too low. Otherwise a flood of connections would take the last file
    descriptors first, and the database and CRM calls of every request would fail with them."""
    need = max_connections + _SPARE_FILES
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY or soft >= need:
        return
    raised = need if hard == resource.RLIM_INFINITY else min(hard, need)
    if raised > soft:
        resource.setrlimit(resource.RLIMIT_NOFILE, (raised, hard))
    if raised < need:
        log.warning(
            "CRMGATE_MAX_CONNECTIONS=%d needs about %d open files and this process may open %d "
            "(ulimit -n): connections beyond that fail, and the database and CRM calls with "
            "them; lower CRMGATE_MAX_CONNECTIONS or raise the limit",
            max_connections,
            need,
            raised,
        )
