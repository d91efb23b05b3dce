"""One fault-injection API for every simulator: a queue of scripted misbehaviours (an answer of
the test's choosing, a slow answer, a connection reset) that the guard plays before a call
reaches its handler, so a test can make the next call, or the next call to one path, fail.

    sim.faults.add(Fault(503, "upstream failure"), times=2)
    sim.faults.add(Fault(200, "<html>maintenance</html>", "text/html", path="/api/v2/*"))
    sim.faults.add(Fault(delay=5))          # the real answer, 5 seconds late
    sim.faults.add(Fault(reset=True))       # TCP RST once the request came
    sim.faults.add(Fault(503), times=None)  # every call, until sim.faults.clear()
"""

from __future__ import annotations

import asyncio
import socket
import struct
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field
from fnmatch import fnmatchcase

from aiohttp import web


@dataclass(frozen=True)
class Fault:
    status: int | None = None  # None: no answer of its own (only a delay, or a reset)
    body: bytes | str = b""
    content_type: str = "text/plain"
    headers: Mapping[str, str] = field(default_factory=dict)
    delay: float = 0.0  # seconds to wait first; with no status, the handler then answers
    reset: bool = False  # the connection is reset (TCP RST) instead of answered
    path: str | None = None  # a glob over the request path (fnmatch); None: any guarded call

    def matches(self, request: web.Request) -> bool:
        return self.path is None or fnmatchcase(request.path, self.path)


class Faults:
    """The queue; each fault is played once, in order. A fault for a path waits for a call to
    that path; calls to other paths pass it by. Standing faults (``times=None``) come after the
    queue and stay until cleared, for a test whose calls are retried an unknown number of times."""

    def __init__(self) -> None:
        self._queue: deque[Fault] = deque()
        self._standing: list[Fault] = []

    def add(self, fault: Fault, times: int | None = 1) -> None:
        if times is None:
            self._standing.append(fault)
        else:
            self._queue.extend([fault] * times)

    def clear(self) -> None:
        self._queue.clear()
        self._standing.clear()

    def __len__(self) -> int:
        return len(self._queue) + len(self._standing)

    def take(self, request: web.Request) -> Fault | None:
        """The first queued fault for this request, removed from the queue; else a standing one."""
        for fault in self._queue:
            if fault.matches(request):
                self._queue.remove(fault)
                return fault
        return next((fault for fault in self._standing if fault.matches(request)), None)

    async def play(self, request: web.Request) -> web.StreamResponse | None:
        """The answer the next fault for this request makes, or None for the handler's own
        (no fault queued, or one that only delays)."""
        fault = self.take(request)
        if fault is None:
            return None
        if fault.delay:
            await asyncio.sleep(fault.delay)
        if fault.reset:
            _reset(request)
            # nothing reaches the client; aiohttp gives up writing to the closed transport
            return web.Response(status=500)
        if fault.status is None:
            return None
        body = fault.body.encode() if isinstance(fault.body, str) else fault.body
        return web.Response(
            status=fault.status,
            body=body,
            content_type=fault.content_type,
            headers=fault.headers,  # as given: a CIMultiDict keeps repeated headers
        )


def _reset(request: web.Request) -> None:
    """Close the connection with a TCP RST (SO_LINGER 0), as a crashed proxy would."""
    transport = request.transport
    if transport is None:
        return
    sock = transport.get_extra_info("socket")
    if sock is not None:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    transport.abort()
