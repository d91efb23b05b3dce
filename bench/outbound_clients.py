#!/usr/bin/env python3
"""Benchmark of async HTTP clients for the gateway's outbound (gateway -> CRM) calls.

What it measures
----------------
For each client under test (aiohttp, httpx without and with ``sniffio`` importable -- see
``ALL_CLIENTS`` for why that matters -- and niquests; whichever are importable) the script
runs a *bare forwarding proxy*: a raw ASGI app on uvicorn (uvloop + httptools, access log off,
one worker, one process) that, for every incoming request, makes one GET to an upstream through
a single shared, pooled, keep-alive client created at startup, adds ``Authorization: Bearer x``,
and returns the upstream's status and body. The proxy is then driven by a closed-loop load
(fixed concurrency, fixed duration after a warm-up) and we record:

* requests/s seen by the load generator;
* the proxy process's CPU time per request (utime + stime from ``/proc/<pid>/stat``, read right
  before and right after the measured window; all threads of the process are included);
* latency p50/p90/p99 as reported by the load generator;
* the upstream's CPU per request (a sanity check that the upstream is not the bottleneck), the
  number of new upstream connections the proxy opened in the window (pool reuse check),
  hypervisor steal on the proxy's CPU and machine CPU used by anything else (interference).

A "floor" row drives the upstream directly, i.e. what the machine does with no proxy at all.

The upstream is a raw uvloop ``asyncio.Protocol`` server in its own process that answers every
GET with the same ~6 KB JSON body (a Salesforce-shaped query page of 25 contacts). It does no
HTTP parsing beyond counting request terminators, so it costs a few microseconds per request.
Two side paths serve the sanity checks (never hit under load): ``GET /__echo`` echoes the
request head, so the script checks that each proxy really adds the Authorization header, and
``GET /__stats`` reports how many connections the upstream has accepted, so the script checks
that each client really reuses its pooled connections during the measured window.

Load generator: Debian's ``wrk`` (``apt-get install -y wrk``) with a small Lua script that
caps the request count and prints a JSON summary; if ``wrk`` is missing, a small asyncio load
client in a separate process is used instead (same connection count, duration and cap). All
traffic stays on 127.0.0.1 and every load loop is bounded in both time and request count.

CPU placement: on a machine with >= 2 cores the process under test (proxy, or the upstream for
the floor row) is pinned to CPU 0 and the helpers (upstream, load generator) to CPU 1, so that
requests/s reflects what one core of the server under test can do and the helpers do not steal
its cycles. ``--no-pin`` lets the scheduler place everything.

Usage (the clients under test must be importable by the Python that runs the script)::

    python3 -m venv /tmp/benchenv
    /tmp/benchenv/bin/pip install aiohttp==3.14.5 httpx==0.28.1 uvicorn==0.54.0 \\
        uvloop==0.23.0 httptools==0.9.0 niquests==3.21.2
    /tmp/benchenv/bin/pip install --target /tmp/sniffio-site sniffio   # for httpx+sniffio only
    /tmp/benchenv/bin/python bench/outbound_clients.py --sniffio-dir /tmp/sniffio-site
    /tmp/benchenv/bin/python bench/outbound_clients.py --rounds 3 --clients aiohttp,httpx

Results: a table on stdout and JSON in ``bench/results/outbound_clients.json`` (``--out``).
The script re-executes itself for the child roles (``_upstream``, ``_proxy``, ``_load``);
those are internal.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.metadata
import importlib.util
import json
import math
import os
import platform
import resource
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
DEFAULT_OUT = HERE / "results" / "outbound_clients.json"
HOST = "127.0.0.1"
UPSTREAM_PATH = "/services/data/v60.0/query?q=SELECT+Id+FROM+Contact"
AUTH_HEADER = ("Authorization", "Bearer x")
# "httpx+sniffio" is httpx with the ``sniffio`` package importable. httpcore 1.0.x does
# ``import sniffio`` inside ``current_async_library()`` on every lock/event setup; anyio >= 4.11
# no longer depends on sniffio, so without it each of those calls is a *failed* import (Python
# does not cache failures, so each one searches sys.path again; encode/httpcore PR #1103). Plain
# "httpx" runs with whatever the interpreter has; "httpx+sniffio" needs sniffio importable or
# ``--sniffio-dir DIR`` (made with ``pip install --target DIR sniffio``).
ALL_CLIENTS = ("aiohttp", "httpx", "httpx+sniffio", "niquests")
# Module that must be importable for each client to be benchmarked.
CLIENT_MODULES = {
    "aiohttp": "aiohttp",
    "httpx": "httpx",
    "httpx+sniffio": "httpx",
    "niquests": "niquests",
}
CLK_TCK = os.sysconf("SC_CLK_TCK")
SNIFFIO_IN_ENV = importlib.util.find_spec("sniffio") is not None


def label(client: str) -> str:
    """Row label: says whether plain httpx ran with or without sniffio."""
    if client == "httpx":
        return "httpx (sniffio)" if SNIFFIO_IN_ENV else "httpx (no sniffio)"
    return client


# --------------------------------------------------------------------------------------------
# The fixed upstream payload
# --------------------------------------------------------------------------------------------
def salesforce_page() -> bytes:
    """A deterministic, Salesforce-shaped SOQL query page of 25 contacts (~6 KB of JSON)."""
    records = []
    for i in range(25):
        cid = f"0035g00000Ab{i:03d}XYZ"
        records.append(
            {
                "attributes": {
                    "type": "Contact",
                    "url": f"/services/data/v60.0/sobjects/Contact/{cid}",
                },
                "Id": cid,
                "FirstName": f"First{i}",
                "LastName": f"Last{i}",
                "Email": f"first{i}.last{i}@example.com",
                "AccountId": f"0015g00000Cd{i:03d}XYZ",
            }
        )
    page = {
        "totalSize": 2500,
        "done": False,
        "nextRecordsUrl": "/services/data/v60.0/query/01gxx0000000001-25",
        "records": records,
    }
    return json.dumps(page, separators=(",", ":")).encode()


# --------------------------------------------------------------------------------------------
# Child role: upstream (raw uvloop protocol server)
# --------------------------------------------------------------------------------------------
def run_upstream(port: int) -> None:
    import uvloop

    body = salesforce_page()
    response = (
        b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
        b"Content-Length: %d\r\n\r\n" % len(body)
    ) + body
    accepted = 0  # connections accepted so far, reported by GET /__stats

    class Upstream(asyncio.Protocol):
        """Answers each request head (terminated by CRLFCRLF) with the fixed response."""

        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            nonlocal accepted
            accepted += 1
            self.transport = transport  # type: ignore[assignment]
            self.buf = b""

        def data_received(self, data: bytes) -> None:
            buf = self.buf + data if self.buf else data
            if b"/__" in buf:  # slow path, only for the sanity checks around a load run
                self._slow(buf)
                return
            n = buf.count(b"\r\n\r\n")
            if n:
                self.transport.write(response * n)  # type: ignore[attr-defined]
                buf = buf[buf.rfind(b"\r\n\r\n") + 4 :]
            if len(buf) > 65536:  # garbage: refuse to buffer without bound
                self.transport.close()
                return
            self.buf = buf

        def _slow(self, buf: bytes) -> None:
            while (end := buf.find(b"\r\n\r\n")) >= 0:
                head, buf = buf[: end + 4], buf[end + 4 :]
                path = head.split(b" ", 2)[1]
                extra = None
                if path.startswith(b"/__echo"):  # the request head, as received
                    extra = head
                elif path.startswith(b"/__stats"):
                    extra = b'{"accepted":%d}' % accepted
                out = response
                if extra is not None:
                    out = (
                        b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n"
                        b"Content-Length: %d\r\n\r\n" % len(extra)
                    ) + extra
                self.transport.write(out)  # type: ignore[attr-defined]
            self.buf = buf

    async def main() -> None:
        loop = asyncio.get_running_loop()
        server = await loop.create_server(Upstream, HOST, port, backlog=1024)
        stop = asyncio.Event()
        loop.add_signal_handler(signal.SIGTERM, stop.set)
        loop.add_signal_handler(signal.SIGINT, stop.set)
        async with server:
            await stop.wait()

    uvloop.run(main())


# --------------------------------------------------------------------------------------------
# Child role: forwarding proxy (raw ASGI app on uvicorn), one per client under test
# --------------------------------------------------------------------------------------------
class Fetcher:
    """One shared, pooled, keep-alive client; ``get`` returns (status, content_type, body)."""

    def __init__(self, client: str, pool: int) -> None:
        self.client = client.split("+")[0]  # "httpx+sniffio" uses the httpx code path
        self.pool = pool
        self.headers = dict([AUTH_HEADER])
        self.session: Any = None

    async def start(self) -> None:
        if self.client == "aiohttp":
            import aiohttp

            connector = aiohttp.TCPConnector(limit=self.pool, limit_per_host=self.pool)
            self.session = aiohttp.ClientSession(
                connector=connector, timeout=aiohttp.ClientTimeout(total=10)
            )
        elif self.client == "httpx":
            import httpx

            limits = httpx.Limits(max_connections=self.pool, max_keepalive_connections=self.pool)
            # trust_env=False: no proxy/netrc lookups from the environment (aiohttp's default).
            self.session = httpx.AsyncClient(limits=limits, timeout=10.0, trust_env=False)
        elif self.client == "niquests":
            import niquests

            self.session = niquests.AsyncSession(
                pool_connections=1, pool_maxsize=self.pool, timeout=10
            )
            # Like httpx above: skip the per-request environment (proxy, netrc) merge.
            self.session.trust_env = False
        else:
            raise ValueError(f"unknown client {self.client!r}")

    async def get(self, url: str) -> tuple[int, bytes, bytes]:
        if self.client == "aiohttp":
            async with self.session.get(url, headers=self.headers) as r:
                body = await r.read()
                return r.status, r.headers.get("Content-Type", "").encode(), body
        # httpx and niquests share the requests-style API.
        r = await self.session.get(url, headers=self.headers)
        return r.status_code, r.headers.get("content-type", "").encode(), r.content

    async def close(self) -> None:
        if self.client == "aiohttp":
            await self.session.close()
        elif self.client == "httpx":
            await self.session.aclose()
        else:
            await self.session.close()


def make_proxy_app(fetcher: Fetcher, upstream: str) -> Any:
    """Raw ASGI app: forward every HTTP request as a GET to ``upstream`` + path + query."""

    async def app(scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            while True:
                msg = await receive()
                if msg["type"] == "lifespan.startup":
                    await fetcher.start()
                    await send({"type": "lifespan.startup.complete"})
                elif msg["type"] == "lifespan.shutdown":
                    await fetcher.close()
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        if scope["type"] != "http":
            return
        url = upstream + scope["path"]
        if scope["query_string"]:
            url += "?" + scope["query_string"].decode("latin-1")
        try:
            status, ctype, body = await fetcher.get(url)
        except Exception as exc:  # upstream failure -> 502 (wrk counts it as an error)
            status, ctype, body = 502, b"text/plain", repr(exc).encode()
        headers = [(b"content-length", str(len(body)).encode())]
        if ctype:
            headers.append((b"content-type", ctype))
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})

    return app


def run_proxy(client: str, port: int, upstream_port: int, pool: int, sniffio_dir: str) -> None:
    if client == "httpx+sniffio":
        if sniffio_dir:
            sys.path.append(sniffio_dir)
        import sniffio  # noqa: F401  (fail loudly if the variant cannot be honoured)
    serve_proxy(make_proxy_app(Fetcher(client, pool), f"http://{HOST}:{upstream_port}"), port)


def serve_proxy(app: Any, port: int) -> None:
    """The bare forwarding proxy under uvicorn at its fastest: uvloop, httptools, no access log."""
    import uvicorn

    config = uvicorn.Config(
        app,
        host=HOST,
        port=port,
        loop="uvloop",
        http="httptools",
        lifespan="on",
        access_log=False,
        log_level="warning",
        backlog=1024,
    )
    uvicorn.Server(config).run()


# --------------------------------------------------------------------------------------------
# Child role: fallback asyncio load generator (only when wrk is not installed)
# --------------------------------------------------------------------------------------------
def run_load(port: int, path: str, connections: int, duration: float, max_requests: int) -> None:
    """Closed loop: ``connections`` keep-alive connections, each sends the next GET when the
    previous response is complete. Stops at ``duration`` seconds or ``max_requests`` requests.
    Prints one JSON line shaped like the wrk summary."""
    try:
        import uvloop

        runner: Any = uvloop.run
    except ImportError:
        runner = asyncio.run
    req = f"GET {path} HTTP/1.1\r\nHost: {HOST}:{port}\r\n\r\n".encode()
    lat: list[float] = []
    errors = {"connect": 0, "read": 0, "status": 0}
    nbytes = 0

    async def conn(deadline: float) -> None:
        nonlocal nbytes
        try:
            reader, writer = await asyncio.open_connection(HOST, port)
        except OSError:
            errors["connect"] += 1
            return
        try:
            while time.perf_counter() < deadline and len(lat) < max_requests:
                t0 = time.perf_counter()
                writer.write(req)
                head = await reader.readuntil(b"\r\n\r\n")
                length = 0
                for line in head.split(b"\r\n")[1:]:
                    if line[:15].lower() == b"content-length:":
                        length = int(line[15:])
                body = await reader.readexactly(length)
                lat.append(time.perf_counter() - t0)
                nbytes += len(head) + len(body)
                if not head.startswith(b"HTTP/1.1 2"):
                    errors["status"] += 1
        except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
            errors["read"] += 1
        finally:
            writer.close()

    async def main() -> float:
        start = time.perf_counter()
        await asyncio.gather(*(conn(start + duration) for _ in range(connections)))
        return time.perf_counter() - start

    elapsed = runner(main())
    lat.sort()

    def pct(p: float) -> float:
        return lat[min(len(lat) - 1, int(p / 100 * len(lat)))] * 1e6 if lat else 0.0

    print(
        json.dumps(
            {
                "requests": len(lat),
                "duration_us": elapsed * 1e6,
                "bytes": nbytes,
                "err_connect": errors["connect"],
                "err_read": errors["read"],
                "err_write": 0,
                "err_status": errors["status"],
                "err_timeout": 0,
                "lat_mean_us": statistics.fmean(lat) * 1e6 if lat else 0.0,
                "lat_max_us": lat[-1] * 1e6 if lat else 0.0,
                "p50_us": pct(50),
                "p90_us": pct(90),
                "p99_us": pct(99),
                "capped": int(len(lat) >= max_requests),
            }
        )
    )


# --------------------------------------------------------------------------------------------
# Orchestrator helpers
# --------------------------------------------------------------------------------------------
# wrk script: pre-formats the request once, caps the per-thread request count (args[1]) and
# prints a one-line JSON summary prefixed with WRKJSON. A thread that reaches the cap stops
# early, but wrk still reports the full -d duration, so a capped run's req/s is only a lower
# bound ("capped" tells); the default cap is far above what the box can do in the window.
WRK_LUA = r"""
local threads = {}
function setup(thread) table.insert(threads, thread) end
local cap, count, req = 0, 0, nil
function init(args)
  cap = tonumber(args[1]) or 0
  req = wrk.format()
  capped = 0
end
function request()
  count = count + 1
  if cap > 0 and count >= cap then
    capped = 1
    wrk.thread:stop()
  end
  return req
end
function done(summary, latency, requests)
  local e, c = summary.errors, 0
  for _, t in ipairs(threads) do c = math.max(c, t:get("capped") or 0) end
  io.write(string.format(
    'WRKJSON {"requests":%d,"duration_us":%d,"bytes":%d,"err_connect":%d,"err_read":%d,' ..
    '"err_write":%d,"err_status":%d,"err_timeout":%d,"lat_mean_us":%f,"lat_max_us":%d,' ..
    '"p50_us":%d,"p90_us":%d,"p99_us":%d,"capped":%d}\n',
    summary.requests, summary.duration, summary.bytes, e.connect, e.read, e.write, e.status,
    e.timeout, latency.mean, latency.max, latency:percentile(50), latency:percentile(90),
    latency:percentile(99), c))
end
"""


class Bench:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.procs: list[subprocess.Popen] = []
        self.tmp = tempfile.TemporaryDirectory(prefix="outbound-bench-")
        self.lua = Path(self.tmp.name) / "summary.lua"
        self.lua.write_text(WRK_LUA)
        ncpu = len(os.sched_getaffinity(0))
        pin = not args.no_pin and ncpu >= 2
        cpus = sorted(os.sched_getaffinity(0))
        # CPU sets: the server under test gets the first CPU, helpers get the second.
        self.cpu_sut = {cpus[0]} if pin else set(cpus)
        self.cpu_helpers = {cpus[1]} if pin else set(cpus)
        self.pinned = pin
        self.wrk = shutil.which("wrk") if args.load in ("auto", "wrk") else None
        if args.load == "wrk" and not self.wrk:
            sys.exit("wrk not found (apt-get install -y wrk)")

    # -- processes ---------------------------------------------------------------------------
    def spawn(self, argv: list[str], cpus: set[int], **kw: Any) -> subprocess.Popen:
        # argv is built by this script (sys.executable + this file, or the wrk binary).
        proc = subprocess.Popen(  # noqa: S603
            argv, preexec_fn=lambda: os.sched_setaffinity(0, cpus), **kw
        )
        self.procs.append(proc)
        return proc

    def stop(self, proc: subprocess.Popen) -> None:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)
        if proc in self.procs:
            self.procs.remove(proc)

    def stop_all(self) -> None:
        for proc in list(self.procs):
            self.stop(proc)
        self.tmp.cleanup()

    def self_cmd(self, *role: str) -> list[str]:
        return [sys.executable, str(Path(__file__).resolve()), *role]

    @staticmethod
    def free_port() -> int:
        with socket.socket() as s:
            s.bind((HOST, 0))
            return s.getsockname()[1]

    @staticmethod
    def http_get(port: int, path: str, timeout: float = 2.0) -> tuple[int, bytes]:
        with urllib.request.urlopen(f"http://{HOST}:{port}{path}", timeout=timeout) as r:
            return r.status, r.read()

    def wait_ready(self, proc: subprocess.Popen, port: int, expect: bytes) -> None:
        """Poll until the server answers ``expect`` (bounded: 20 s)."""
        deadline = time.monotonic() + 20
        last: Exception | None = None
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise RuntimeError(f"process exited early with code {proc.returncode}")
            try:
                status, body = self.http_get(port, UPSTREAM_PATH)
                if status == 200 and body == expect:
                    return
                last = RuntimeError(f"unexpected answer: {status} {body[:80]!r}")
            except OSError as exc:
                last = exc
            time.sleep(0.1)
        raise RuntimeError(f"server on port {port} not ready: {last}")

    @staticmethod
    def cpu_seconds(pid: int) -> float:
        """utime + stime of the whole process (all threads), in seconds."""
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / CLK_TCK

    @staticmethod
    def steal_seconds(cpus: set[int]) -> float:
        """Hypervisor steal time of the given CPUs (from /proc/stat), in seconds. Steal is
        time the VM's vCPU wanted to run but the host ran something else; it is not counted
        in a process's CPU time but does lower its requests/s."""
        total = 0
        with open("/proc/stat") as f:
            for line in f:
                name, *vals = line.split()
                if name.startswith("cpu") and name[3:].isdigit() and int(name[3:]) in cpus:
                    total += int(vals[7])  # user nice system idle iowait irq softirq steal
        return total / CLK_TCK

    @staticmethod
    def busy_seconds() -> float:
        """Non-idle CPU time of the whole machine (user nice system irq softirq), seconds."""
        with open("/proc/stat") as f:
            vals = [int(v) for v in f.readline().split()[1:]]
        return (vals[0] + vals[1] + vals[2] + vals[5] + vals[6]) / CLK_TCK

    @staticmethod
    def children_cpu_seconds() -> float:
        """CPU of reaped children (here: the load generator once it has exited)."""
        ru = resource.getrusage(resource.RUSAGE_CHILDREN)
        return ru.ru_utime + ru.ru_stime

    @staticmethod
    def rss_mib(pid: int) -> float:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
        return 0.0

    # -- load --------------------------------------------------------------------------------
    def load(self, port: int, duration: int) -> dict[str, Any]:
        """One bounded closed-loop load run against 127.0.0.1:port; returns the summary.
        ``duration`` is whole seconds (wrk accepts no fractions)."""
        a = self.args
        if self.wrk:
            per_thread_cap = math.ceil(a.max_requests / a.wrk_threads)
            argv = [
                self.wrk,
                f"-t{a.wrk_threads}",
                f"-c{a.connections}",
                f"-d{duration}s",
                "--timeout",
                "5s",
                "-s",
                str(self.lua),
                f"http://{HOST}:{port}{UPSTREAM_PATH}",
                "--",
                str(per_thread_cap),
            ]
        else:
            argv = self.self_cmd(
                "_load",
                str(port),
                UPSTREAM_PATH,
                str(a.connections),
                str(duration),
                str(a.max_requests),
            )
        proc = self.spawn(argv, self.cpu_helpers, stdout=subprocess.PIPE, text=True)
        try:
            out, _ = proc.communicate(timeout=duration + 30)  # hard bound on the run
        finally:  # timeout, or we are being interrupted: never leave it running
            if proc.poll() is None:
                proc.kill()
                proc.wait(timeout=10)
            self.procs.remove(proc)
        if proc.returncode != 0:
            raise RuntimeError(f"load generator failed ({proc.returncode}): {out[-500:]}")
        line = next(ln for ln in out.splitlines() if ln.startswith(("WRKJSON ", "{")))
        return json.loads(line.removeprefix("WRKJSON "))

    def upstream_accepted(self, up_port: int) -> int:
        """Connections the upstream has accepted so far (this query's own included)."""
        return json.loads(self.http_get(up_port, "/__stats")[1])["accepted"]

    def measure(
        self, port: int, sut_pid: int, upstream_pid: int | None = None, up_port: int = 0
    ) -> dict[str, Any]:
        """Warm up, then one measured window bracketed by CPU readings of the processes.
        With ``upstream_pid``/``up_port`` (proxy runs) also the upstream's CPU and the number
        of upstream connections the proxy opened during the window (0 = perfect reuse)."""
        a = self.args
        self.load(port, a.warmup)
        time.sleep(0.2)
        acc0 = self.upstream_accepted(up_port) if up_port else 0
        steal0 = self.steal_seconds(self.cpu_sut)
        busy0, gen0 = self.busy_seconds(), self.children_cpu_seconds()
        sut0 = self.cpu_seconds(sut_pid)
        up0 = self.cpu_seconds(upstream_pid) if upstream_pid else 0.0
        res = self.load(port, a.duration)
        sut1 = self.cpu_seconds(sut_pid)
        up1 = self.cpu_seconds(upstream_pid) if upstream_pid else 0.0
        busy1, gen1 = self.busy_seconds(), self.children_cpu_seconds()
        steal1 = self.steal_seconds(self.cpu_sut)
        # Machine CPU not spent by the server under test, the upstream or the load generator:
        # kernel softirq work for the loopback traffic plus anything else running on the box
        # (a high value means interference and a less trustworthy req/s).
        other = (busy1 - busy0) - (sut1 - sut0) - (up1 - up0) - (gen1 - gen0)
        # -1: the second /__stats query's own connection.
        new_conns = self.upstream_accepted(up_port) - acc0 - 1 if up_port else None
        n = res["requests"]
        secs = res["duration_us"] / 1e6
        errors = sum(res[k] for k in res if k.startswith("err_"))
        return {
            "requests": n,
            "seconds": round(secs, 3),
            "rps": round(n / secs, 1),
            "server_cpu_s": round(sut1 - sut0, 2),
            "server_cpu_ms_per_req": round((sut1 - sut0) * 1e3 / n, 4) if n else None,
            "server_cpu_util_pct": round((sut1 - sut0) / secs * 100, 1),
            # Steal on the server-under-test CPU(s), as % of one CPU over the window.
            "sut_cpu_steal_pct": round((steal1 - steal0) / secs * 100, 1),
            "loadgen_cpu_s": round(gen1 - gen0, 2),
            "other_cpu_pct": round(other / secs * 100, 1),
            "upstream_cpu_us_per_req": (
                round((up1 - up0) * 1e6 / n, 1) if upstream_pid and n else None
            ),
            "p50_ms": round(res["p50_us"] / 1e3, 3),
            "p90_ms": round(res["p90_us"] / 1e3, 3),
            "p99_ms": round(res["p99_us"] / 1e3, 3),
            "mean_ms": round(res["lat_mean_us"] / 1e3, 3),
            "max_ms": round(res["lat_max_us"] / 1e3, 3),
            "errors": errors,
            "error_detail": {k: res[k] for k in res if k.startswith("err_") and res[k]},
            "upstream_new_connections": new_conns,
            "hit_request_cap": bool(res["capped"]),
            "server_rss_mib": round(self.rss_mib(sut_pid), 1),
        }

    # -- main flow ---------------------------------------------------------------------------
    def run(self, clients: list[str]) -> dict[str, Any]:
        a = self.args
        body = salesforce_page()
        up_port = self.free_port()
        upstream = self.spawn(self.self_cmd("_upstream", str(up_port)), self.cpu_helpers)
        self.wait_ready(upstream, up_port, body)
        runs: list[dict[str, Any]] = []
        for rnd in range(1, a.rounds + 1):
            # Floor: the load generator straight at the upstream, upstream on the SUT CPU.
            os.sched_setaffinity(upstream.pid, self.cpu_sut)
            res = self.measure(up_port, upstream.pid)
            os.sched_setaffinity(upstream.pid, self.cpu_helpers)
            runs.append({"round": rnd, "target": "floor (no proxy)", "client": None, **res})
            self.report_line(runs[-1])
            for client in clients:
                port = self.free_port()
                proxy = self.spawn(
                    self.self_cmd(
                        "_proxy", client, str(port), str(up_port), str(a.pool), a.sniffio_dir
                    ),
                    self.cpu_sut,
                )
                try:
                    self.wait_ready(proxy, port, body)
                    status, echo = self.http_get(port, "/__echo")
                    if status != 200 or b"authorization: bearer x" not in echo.lower():
                        raise RuntimeError(f"{client}: proxy did not forward auth: {echo!r}")
                    res = self.measure(port, proxy.pid, upstream.pid, up_port)
                finally:
                    self.stop(proxy)
                runs.append({"round": rnd, "target": label(client), "client": client, **res})
                self.report_line(runs[-1])
        self.stop(upstream)
        return {
            "finished_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "machine": machine_info(self.wrk),
            "config": {
                "connections": a.connections,
                "duration_s": a.duration,
                "warmup_s": a.warmup,
                "rounds": a.rounds,
                "max_requests": a.max_requests,
                "pool_size": a.pool,
                "load_generator": "wrk" if self.wrk else "python-asyncio",
                "wrk_threads": a.wrk_threads if self.wrk else None,
                "pinned": self.pinned,
                "cpu_server_under_test": sorted(self.cpu_sut),
                "cpu_helpers": sorted(self.cpu_helpers),
                "upstream_body_bytes": len(body),
                "clients": clients,
                "sniffio_in_env": SNIFFIO_IN_ENV,
                "sniffio_dir": a.sniffio_dir or None,
            },
            "runs": runs,
            "summary": summarize(runs),
        }

    @staticmethod
    def report_line(r: dict[str, Any]) -> None:
        print(
            f"  round {r['round']} {r['target']:<19} {r['rps']:>9.1f} req/s  "
            f"{r['server_cpu_ms_per_req']} ms CPU/req  {r['server_cpu_util_pct']}% busy  "
            f"steal {r['sut_cpu_steal_pct']}%  other {r['other_cpu_pct']}%  p99 {r['p99_ms']} ms  "
            f"errors {r['errors']}"
            + ("  REQUEST CAP HIT: window cut short, raise --max-requests" * r["hit_request_cap"]),
            file=sys.stderr,
            flush=True,
        )


def summarize(runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Median over rounds per target (plus req/s min/max), in first-seen order."""
    keys = [
        "rps",
        "server_cpu_ms_per_req",
        "server_cpu_util_pct",
        "sut_cpu_steal_pct",
        "other_cpu_pct",
        "upstream_cpu_us_per_req",
        "p50_ms",
        "p99_ms",
    ]
    out = []
    for target in dict.fromkeys(r["target"] for r in runs):
        rs = [r for r in runs if r["target"] == target]
        row: dict[str, Any] = {"target": target, "rounds": len(rs)}
        for k in keys:
            vals = [r[k] for r in rs if r[k] is not None]
            row[k] = round(statistics.median(vals), 4) if vals else None
        row["rps_min"] = min(r["rps"] for r in rs)
        row["rps_max"] = max(r["rps"] for r in rs)
        conns = [r["upstream_new_connections"] for r in rs]
        row["upstream_new_connections"] = None if None in conns else sum(conns)
        row["errors"] = sum(r["errors"] for r in rs)
        row["hit_request_cap"] = any(r["hit_request_cap"] for r in rs)
        out.append(row)
    return out


def print_table(summary: list[dict[str, Any]]) -> None:
    proxies = [r for r in summary if not r["target"].startswith("floor")]
    best_rps = max((r["rps"] for r in proxies), default=0) or 1
    best_cpu = min((r["server_cpu_ms_per_req"] or 1 for r in proxies), default=1)
    hdr = (
        f"{'target':<19} {'req/s':>7} {'rel':>5} {'CPU ms/req':>10} {'rel':>5} "
        f"{'CPU%':>4} {'st%':>3} {'oth%':>4} {'p50 ms':>7} {'p99 ms':>7} {'upstr us/req':>12} "
        f"{'new conns':>9} {'errors':>6}"
    )
    print(hdr)
    print("-" * len(hdr))
    for r in summary:
        floor = r["target"].startswith("floor")
        cpu = r["server_cpu_ms_per_req"]
        rel_rps = "" if floor else f"{r['rps'] / best_rps:.2f}"
        if r["hit_request_cap"]:  # see WRK_LUA: req/s of a capped run is not valid
            rel_rps = "CAP!"
        rel_cpu = "" if floor or not cpu else f"{cpu / best_cpu:.1f}x"
        up = "" if r["upstream_cpu_us_per_req"] is None else f"{r['upstream_cpu_us_per_req']:.1f}"
        nc = "" if r["upstream_new_connections"] is None else str(r["upstream_new_connections"])
        print(
            f"{r['target']:<19} {r['rps']:>7.0f} {rel_rps:>5} {cpu:>10.4f} {rel_cpu:>5} "
            f"{r['server_cpu_util_pct']:>4.0f} {r['sut_cpu_steal_pct']:>3.0f} "
            f"{r['other_cpu_pct']:>4.0f} "
            f"{r['p50_ms']:>7.2f} {r['p99_ms']:>7.2f} {up:>12} {nc:>9} {r['errors']:>6}"
        )
    print(
        "Medians over rounds. req/s 'rel' = share of the best proxy; CPU 'rel' = multiple of\n"
        "the cheapest proxy. CPU ms/req and CPU% are for the server under test (the proxy, or\n"
        "the upstream on the floor row); st% = hypervisor steal on its CPU (% of one CPU);\n"
        "oth% = machine CPU used by neither the SUT, the upstream nor the load generator\n"
        "(loopback softirq + other processes; approximate: per-process and per-CPU kernel\n"
        "accounting differ, so values within about +-10 are noise and may be negative; a\n"
        "large value means interference). 'upstr us/req' = upstream CPU per proxied request;\n"
        "'new conns' = upstream connections the proxy opened in the measured window."
    )


def pkg_version(name: str) -> str | None:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


def machine_info(wrk: str | None) -> dict[str, Any]:
    model = ""
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    pkgs = [
        "aiohttp",
        "httpx",
        "httpcore",
        "h11",
        "anyio",
        "sniffio",
        "niquests",
        "urllib3-future",
        "uvicorn",
        "uvloop",
        "httptools",
    ]
    info: dict[str, Any] = {
        "nproc": os.cpu_count(),
        "cpu_model": model,
        "kernel": platform.release(),
        "python": sys.version.split()[0],
        "python_executable": sys.executable,
        "packages": {p: pkg_version(p) for p in pkgs},
    }
    if importlib.util.find_spec("aiohttp"):
        from aiohttp import http_parser

        # "aiohttp._http_parser" is the C parser; "aiohttp.http_parser" the pure-Python one.
        info["aiohttp_response_parser"] = http_parser.HttpResponseParser.__module__
    if wrk:
        out = subprocess.run([wrk, "-v"], capture_output=True, text=True, timeout=10)  # noqa: S603
        info["wrk"] = (out.stdout or out.stderr).splitlines()[0].strip()
    return info


def main() -> None:
    # Internal child roles (the script re-executes itself for these).
    if len(sys.argv) > 1 and sys.argv[1].startswith("_"):
        role, rest = sys.argv[1], sys.argv[2:]
        if role == "_upstream":
            run_upstream(int(rest[0]))
        elif role == "_proxy":
            run_proxy(rest[0], int(rest[1]), int(rest[2]), int(rest[3]), rest[4])
        elif role == "_load":
            run_load(int(rest[0]), rest[1], int(rest[2]), float(rest[3]), int(rest[4]))
        else:
            sys.exit(f"unknown role {role}")
        return

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--clients", default=",".join(ALL_CLIENTS), help="comma-separated list")
    p.add_argument("--connections", type=int, default=32, help="closed-loop concurrency")
    p.add_argument("--duration", type=int, default=10, help="measured seconds per target")
    p.add_argument("--warmup", type=int, default=2, help="unmeasured seconds before")
    p.add_argument("--rounds", type=int, default=1, help="repeat all targets N times")
    p.add_argument("--max-requests", type=int, default=2_000_000, help="cap per load run")
    p.add_argument("--pool", type=int, default=256, help="client connection-pool size")
    p.add_argument(
        "--sniffio-dir",
        default="",
        help="directory holding sniffio (pip install --target DIR sniffio) for httpx+sniffio",
    )
    p.add_argument("--wrk-threads", type=int, default=1)
    p.add_argument("--load", choices=("auto", "wrk", "python"), default="auto")
    p.add_argument("--no-pin", action="store_true", help="do not pin processes to CPUs")
    p.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = p.parse_args()

    clients = []
    for c in (c.strip() for c in args.clients.split(",") if c.strip()):
        if c not in CLIENT_MODULES:
            sys.exit(f"unknown client {c!r}; choose from {', '.join(ALL_CLIENTS)}")
        if importlib.util.find_spec(CLIENT_MODULES[c]) is None:
            print(f"skipping {c}: not importable by {sys.executable}", file=sys.stderr)
            continue
        if c == "httpx+sniffio":
            if SNIFFIO_IN_ENV:
                print("skipping httpx+sniffio: plain httpx already has sniffio", file=sys.stderr)
                continue
            if not (args.sniffio_dir and (Path(args.sniffio_dir) / "sniffio").is_dir()):
                print(
                    "skipping httpx+sniffio: sniffio is not installed; pass --sniffio-dir DIR "
                    "after `pip install --target DIR sniffio`",
                    file=sys.stderr,
                )
                continue
        clients.append(c)

    bench = Bench(args)
    # Make sure SIGTERM/SIGINT still tear the children down.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(130))
    try:
        results = bench.run(clients)
    finally:
        bench.stop_all()

    m = results["machine"]
    print(f"\nmachine: {m['nproc']} CPUs, {m['cpu_model']}, kernel {m['kernel']}")
    print(f"python {m['python']} ({m['python_executable']})")
    print("packages: " + ", ".join(f"{k} {v}" for k, v in m["packages"].items() if v))
    print(f"not installed: {', '.join(k for k, v in m['packages'].items() if not v) or '-'}")
    if "aiohttp_response_parser" in m:
        print(f"aiohttp response parser: {m['aiohttp_response_parser']}")
    cfg = results["config"]
    print(
        f"load: {m['wrk'].split(' [')[0] if 'wrk' in m else cfg['load_generator']}, "
        f"{cfg['connections']} connections, "
        f"{cfg['warmup_s']} s warm-up + {cfg['duration_s']} s measured, {cfg['rounds']} round(s), "
        f"pinned={cfg['pinned']} (SUT cpu {cfg['cpu_server_under_test']}, helpers "
        f"{cfg['cpu_helpers']}), body {cfg['upstream_body_bytes']} B\n"
    )
    print_table(results["summary"])
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    print(f"\nwrote {args.out}")


if __name__ == "__main__":
    main()
