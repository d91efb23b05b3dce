"""Open-loop load: requests leave at a fixed rate whether or not earlier ones were answered.

A closed-loop client (wrk) waits for each answer before sending the next request on a
connection, so a slow server slows the client down and its queueing hides. Here request ``i`` is
due at ``start + i / rate``; when it is due it takes an idle keep-alive connection or opens a new
one (up to ``max_connections``; beyond that it waits for one, and the wait counts). Latency runs
from the moment the request was dispatched to the end of its answer. The timer wakes up to about
a millisecond late (the event loop's timers are millisecond ones): that lag is reported apart
(``lag_*``), as is the client's own CPU per request, so a reader can tell the client's share.

Run by bench/run.py as ``python bench/openloop.py SPEC_JSON``; prints one JSON line. SPEC keys:
host, port, tls (bool), ca_file, request (the raw request, latin-1), status (expected), rate,
warmup, duration (seconds), max_connections. Bounded: rate x (warmup + duration) requests, and
at most ``drain`` seconds (default 5) waiting for the last answers (those count as timeouts).
"""

from __future__ import annotations

import asyncio
import json
import resource
import ssl
import sys
import time
from typing import Any

import uvloop


def _cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _percentile(values: list[float], p: float) -> float:
    """Nearest-rank percentile of sorted ``values`` (seconds), in milliseconds."""
    if not values:
        return 0.0
    return values[min(len(values) - 1, max(0, round(p / 100 * len(values)) - 1))] * 1e3


async def _read_answer(reader: asyncio.StreamReader) -> int:
    """Read one HTTP/1.1 answer (Content-Length or chunked); return its status."""
    head = await reader.readuntil(b"\r\n\r\n")
    status = int(head[9:12])
    lines = head.lower().split(b"\r\n")
    length = next((int(ln[15:]) for ln in lines if ln.startswith(b"content-length:")), None)
    if length is not None:
        await reader.readexactly(length)
    elif b"transfer-encoding: chunked" in lines:
        while size := int((await reader.readuntil(b"\r\n")).split(b";")[0], 16):
            await reader.readexactly(size + 2)
        await reader.readuntil(b"\r\n")
    return status


class Client:
    def __init__(self, spec: dict[str, Any]) -> None:
        self.spec = spec
        self.request = spec["request"].encode("latin-1")
        self.context: ssl.SSLContext | None = None
        if spec["tls"]:
            self.context = ssl.create_default_context(cafile=spec["ca_file"])
        self.idle: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = []
        self.opened = 0
        self.freed = asyncio.Condition()
        self.latencies: list[float] = []
        self.lags: list[float] = []
        self.errors = 0

    async def _connection(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        while not self.idle and self.opened >= self.spec["max_connections"]:
            async with self.freed:
                await self.freed.wait()
        if self.idle:
            return self.idle.pop()
        self.opened += 1
        return await asyncio.open_connection(
            self.spec["host"],
            self.spec["port"],
            ssl=self.context,
            server_hostname="localhost" if self.context else None,
        )

    async def one(self, due: float, measured: bool) -> None:
        dispatched = time.perf_counter()
        try:
            reader, writer = await self._connection()
            writer.write(self.request)
            status = await _read_answer(reader)
        except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ValueError):
            self.errors += measured
            self.opened -= 1
            async with self.freed:
                self.freed.notify()
            return
        done = time.perf_counter()
        self.idle.append((reader, writer))
        async with self.freed:
            self.freed.notify()
        if measured:
            self.latencies.append(done - dispatched)
            self.lags.append(dispatched - due)
            self.errors += status != self.spec["status"]

    async def run(self) -> dict[str, Any]:
        rate, warmup, duration = self.spec["rate"], self.spec["warmup"], self.spec["duration"]
        warm, total = int(rate * warmup), int(rate * (warmup + duration))
        tasks: set[asyncio.Task[None]] = set()
        start = time.perf_counter() + 0.05
        cpu0 = cpu1 = 0.0
        for i in range(total):
            if i == warm:
                cpu0 = _cpu()
            due = start + i / rate
            delay = due - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            task = asyncio.create_task(self.one(due, i >= warm))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
        if tasks:
            _, pending = await asyncio.wait(tasks, timeout=self.spec.get("drain", 5.0))
            for task in pending:
                task.cancel()
            self.errors += len(pending)
        cpu1 = _cpu()
        elapsed = time.perf_counter() - start - warmup
        for _, writer in self.idle:
            writer.close()
        lat, lag = sorted(self.latencies), sorted(self.lags)
        return {
            "requests": len(lat),
            "sent": total - warm,
            "seconds": round(elapsed, 3),
            "errors": self.errors,
            "connections_opened": self.opened,
            "p50_ms": round(_percentile(lat, 50), 3),
            "p95_ms": round(_percentile(lat, 95), 3),
            "p99_ms": round(_percentile(lat, 99), 3),
            "max_ms": round(lat[-1] * 1e3, 3) if lat else None,
            "lag_p50_ms": round(_percentile(lag, 50), 3),
            "lag_p99_ms": round(_percentile(lag, 99), 3),
            "client_cpu_ms_per_req": round((cpu1 - cpu0) * 1e3 / len(lat), 4) if lat else None,
        }


def main() -> None:
    spec = json.loads(sys.argv[1])
    print(json.dumps(uvloop.run(Client(spec).run())))


if __name__ == "__main__":
    main()
