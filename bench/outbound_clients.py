#!/usr/bin/env python3
"""Benchmark of async HTTP clients for the gateway's outbound (gateway -> CRM) calls.

What it measures
----------------
For each client under test (aiohttp, httpx, niquests -- whichever are importable) the script
runs a *bare forwarding proxy*: a raw ASGI app on uvicorn (uvloop + httptools, access log off,
one worker, one process) that, for every incoming request, makes one GET to an upstream through
a single shared, pooled, keep-alive client created at startup, adds ``Authorization: Bearer x``,
and returns the upstream's status and body. The proxy is then driven by a closed-loop load
(fixed concurrency, fixed duration after a warm-up) and we record:

* requests/s seen by the load generator;
* the proxy process's CPU time per request (utime + stime from ``/proc/<pid>/stat``, read right
  before and right after the measured window; all threads of the process are included);
* latency p50/p90/p99 as reported by the load generator;
* the upstream's CPU per request (a sanity check that the upstream is not the bottleneck).

A "floor" row drives the upstream directly, i.e. what the machine does with no proxy at all.

The upstream is a raw uvloop ``asyncio.Protocol`` server in its own process that answers every
GET with the same ~6 KB JSON body (a Salesforce-shaped query page of 25 contacts). It does no
HTTP parsing beyond counting request terminators, so it costs a few microseconds per request.
``GET /__echo`` (only used once per proxy, before the load) echoes the request head so the
script can check that the proxy really adds the Authorization header.

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
        uvloop==0.23.0 httptools==0.9.0 niquests
    /tmp/benchenv/bin/python bench/outbound_clients.py            # all clients, 1 round
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
ALL_CLIENTS = ("aiohttp", "httpx", "niquests")
# Module that must be importable for each client to be benchmarked.
CLIENT_MODULES = {"aiohttp": "aiohttp", "httpx": "httpx", "niquests": "niquests"}
CLK_TCK = os.sysconf("SC_CLK_TCK")


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
                "Phone": f"+1 415 555 {i:04d}",
                "Title": "VP Sales",
                "AccountId": f"0015g00000Cd{i:03d}XYZ",
                "MailingCity": "San Francisco",
                "LastModifiedDate": "2026-10-01T12:00:00.000+0000",
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

    class Upstream(asyncio.Protocol):
        """Answers each request head (terminated by CRLFCRLF) with the fixed response."""

        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            self.transport = transport  # type: ignore[assignment]
            self.buf = b""

        def data_received(self, data: bytes) -> None:
            buf = self.buf + data if self.buf else data
            if b"/__echo" in buf:  # slow path, only used by the pre-load sanity check
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
                if head.split(b" ", 2)[1].startswith(b"/__echo"):
                    out = (
                        b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n"
                        b"Content-Length: %d\r\n\r\n" % len(head)
                    ) + head
                else:
                    out = response
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
        self.client = client
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


def run_proxy(client: str, port: int, upstream_port: int, pool: int) -> None:
    import uvicorn

    app = make_proxy_app(Fetcher(client, pool), f"http://{HOST}:{upstream_port}")
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
            }
        )
    )


# --------------------------------------------------------------------------------------------
# Orchestrator helpers
# --------------------------------------------------------------------------------------------
# wrk script: pre-formats the request once, caps the per-thread request count (args[1]) and
# prints a one-line JSON summary prefixed with WRKJSON.
WRK_LUA = r"""
local cap, count, req = 0, 0, nil
function init(args)
  cap = tonumber(args[1]) or 0
  req = wrk.format()
end
function request()
  count = count + 1
  if cap > 0 and count >= cap then wrk.thread:stop() end
  return req
end
function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'WRKJSON {"requests":%d,"duration_us":%d,"bytes":%d,"err_connect":%d,"err_read":%d,' ..
    '"err_write":%d,"err_status":%d,"err_timeout":%d,"lat_mean_us":%f,"lat_max_us":%d,' ..
    '"p50_us":%d,"p90_us":%d,"p99_us":%d}\n',
    summary.requests, summary.duration, summary.bytes, e.connect, e.read, e.write, e.status,
    e.timeout, latency.mean, latency.max, latency:percentile(50), latency:percentile(90),
    latency:percentile(99)))
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
            out, _ = proc.communicate(timeout=duration + 30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.communicate()
            raise
        finally:
            self.procs.remove(proc)
        if proc.returncode != 0:
            raise RuntimeError(f"load generator failed ({proc.returncode}): {out[-500:]}")
        line = next(ln for ln in out.splitlines() if ln.startswith(("WRKJSON ", "{")))
        return json.loads(line.removeprefix("WRKJSON "))

    def measure(self, port: int, sut_pid: int, upstream_pid: int | None) -> dict[str, Any]:
        """Warm up, then one measured window bracketed by CPU readings of the processes."""
        a = self.args
        self.load(port, a.warmup)
        time.sleep(0.2)
        sut0 = self.cpu_seconds(sut_pid)
        up0 = self.cpu_seconds(upstream_pid) if upstream_pid else 0.0
        res = self.load(port, a.duration)
        sut1 = self.cpu_seconds(sut_pid)
        up1 = self.cpu_seconds(upstream_pid) if upstream_pid else 0.0
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
            "hit_request_cap": n >= a.max_requests,
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
            res = self.measure(up_port, upstream.pid, None)
            os.sched_setaffinity(upstream.pid, self.cpu_helpers)
            runs.append({"round": rnd, "target": "floor (no proxy)", **res})
            self.report_line(runs[-1])
            for client in clients:
                port = self.free_port()
                proxy = self.spawn(
                    self.self_cmd("_proxy", client, str(port), str(up_port), str(a.pool)),
                    self.cpu_sut,
                )
                try:
                    self.wait_ready(proxy, port, body)
                    status, echo = self.http_get(port, "/__echo")
                    if status != 200 or b"authorization: bearer x" not in echo.lower():
                        raise RuntimeError(f"{client}: proxy did not forward auth: {echo!r}")
                    res = self.measure(port, proxy.pid, upstream.pid)
                finally:
                    self.stop(proxy)
                runs.append({"round": rnd, "target": client, **res})
                self.report_line(runs[-1])
        self.stop(upstream)
        return {
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
            },
            "runs": runs,
            "summary": summarize(runs),
        }

    @staticmethod
    def report_line(r: dict[str, Any]) -> None:
        print(
            f"  round {r['round']} {r['target']:<17} {r['rps']:>9.1f} req/s  "
            f"{r['server_cpu_ms_per_req']} ms CPU/req  p99 {r['p99_ms']} ms  "
            f"errors {r['errors']}",
            file=sys.stderr,
            flush=True,
        )


def summarize(runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Median over rounds per target, in first-seen order."""
    keys = [
        "rps",
        "server_cpu_ms_per_req",
        "server_cpu_util_pct",
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
        row["errors"] = sum(r["errors"] for r in rs)
        out.append(row)
    return out


def print_table(summary: list[dict[str, Any]]) -> None:
    proxies = [r for r in summary if not r["target"].startswith("floor")]
    best = max((r["rps"] for r in proxies), default=0) or 1
    hdr = (
        f"{'target':<17} {'req/s':>9} {'vs best':>8} {'CPU ms/req':>10} {'CPU %':>6} "
        f"{'p50 ms':>7} {'p99 ms':>7} {'upstr us/req':>12} {'errors':>6}"
    )
    print(hdr)
    print("-" * len(hdr))
    for r in summary:
        vs = "" if r["target"].startswith("floor") else f"{r['rps'] / best * 100:.0f}%"
        up = "" if r["upstream_cpu_us_per_req"] is None else f"{r['upstream_cpu_us_per_req']:.1f}"
        print(
            f"{r['target']:<17} {r['rps']:>9.0f} {vs:>8} {r['server_cpu_ms_per_req']:>10.4f} "
            f"{r['server_cpu_util_pct']:>6.0f} {r['p50_ms']:>7.2f} {r['p99_ms']:>7.2f} "
            f"{up:>12} {r['errors']:>6}"
        )
    print("CPU ms/req and CPU % are for the server under test: the proxy, or the upstream")
    print("for the floor row. 'upstr us/req' is the upstream's CPU per proxied request.")


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
            run_proxy(rest[0], int(rest[1]), int(rest[2]), int(rest[3]))
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
        f"load: {cfg['load_generator']} {m.get('wrk', '')}, {cfg['connections']} connections, "
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
