#!/usr/bin/env python3
"""`make bench`: what crmgate adds to a call, side by side with the floor and two other proxies.

The same Salesforce query page (25 contacts, answered by nginx from files recorded from crmsim:
bench/upstream.py) is fetched five ways:

  A  straight from the upstream (the floor; over HTTPS, as a client would call the CRM);
  B  through nginx as a reverse proxy that adds the Authorization header;
  C  through the fastest bare Python forwarding proxy (raw ASGI on uvicorn, aiohttp client:
     bench/outbound_clients.py's, here over HTTPS);
  D  through crmgate's passthrough route, POST /v1/application/request;
  E  through crmgate's unified list, GET /v1/application/entity/contact/list?page_size=25.

B, C, D and E are plain HTTP on loopback and reach the upstream over HTTPS with verified
certificates and pooled keep-alive connections, as crmgate must (it calls https only). crmgate
is one `crmgate serve` worker on SQLite in a temporary directory, with an application created
through its API and the rate limits off; nothing of the set-up is timed.

For each path: throughput at a fixed concurrency (wrk, closed loop), latency p50/p95/p99 at a
fixed rate (bench/openloop.py, open loop), the server's CPU time per request (closed loop) and
its peak RSS. The server under test is pinned to one CPU, the upstream and the load generators
to the other. Then the open-loop client's own cost against A, and (with py-spy) a profile of D
and E. Results: a table on stdout, JSON in bench/results/gateway.json, and with --write-doc the
table in docs/performance.md. Every phase is bounded in time and request count.
"""

from __future__ import annotations

import argparse
import base64
import collections
import dataclasses
import http.client
import json
import os
import secrets
import shutil
import ssl
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import memory
import upstream
from outbound_clients import (
    WRK_LUA,
    Bench,
    Fetcher,
    machine_info,
    make_proxy_app,
    serve_proxy,
)

HERE = Path(__file__).resolve().parent
HOST = "127.0.0.1"
DOC_START, DOC_END = "<!-- bench:gateway:start -->", "<!-- bench:gateway:end -->"
# The targets (docs/performance.md): added median latency, throughput against C.
TARGET_ADDED_P50_MS = {"D": 0.5, "E": 1.0}
TARGET_P99_WITHIN_MS = 2.0
TARGET_SHARE_OF_C = {"D": 0.60, "E": 0.45}


@dataclass
class Route:
    """One path to the page: where to send what, and who serves it (the server under test)."""

    name: str
    label: str
    port: int
    target: str
    method: str = "GET"
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b""
    tls: bool = False
    status: int = 200
    pid: int = 0

    def raw_request(self) -> str:
        lines = [f"{self.method} {self.target} HTTP/1.1", f"Host: {HOST}:{self.port}"]
        lines += [f"{k}: {v}" for k, v in self.headers.items()]
        if self.body:
            lines.append(f"Content-Length: {len(self.body)}")
        return "\r\n".join(lines) + "\r\n\r\n" + self.body.decode("latin-1")


# --------------------------------------------------------------------------------------------
# Path C: the bare Python forwarding proxy (a child process)
# --------------------------------------------------------------------------------------------
class TlsFetcher(Fetcher):
    """outbound_clients' aiohttp fetcher, verifying the upstream's certificate."""

    def __init__(self, ca_file: str, token: str) -> None:
        super().__init__("aiohttp", pool=256)
        self.context = ssl.create_default_context(cafile=ca_file)
        self.headers = {"Authorization": f"Bearer {token}"}

    async def start(self) -> None:
        import aiohttp

        connector = aiohttp.TCPConnector(limit=self.pool, ssl=self.context)
        self.session = aiohttp.ClientSession(
            connector=connector, timeout=aiohttp.ClientTimeout(total=10)
        )


def run_pyproxy(port: int, upstream_url: str, ca_file: str) -> None:
    fetcher = TlsFetcher(ca_file, os.environ["BENCH_TOKEN"])
    serve_proxy(make_proxy_app(fetcher, upstream_url), port)


# --------------------------------------------------------------------------------------------
# The rig: processes, set-up, measurements
# --------------------------------------------------------------------------------------------
def fetch(path: Route, target: str | None = None, ca_file: str = "") -> tuple[int, bytes]:
    """One request of ``path`` (or GET ``target`` with its headers), for the set-up checks."""
    if path.tls:
        context = ssl.create_default_context(cafile=ca_file)
        conn: http.client.HTTPConnection = http.client.HTTPSConnection(
            HOST, path.port, context=context, timeout=10
        )
    else:
        conn = http.client.HTTPConnection(HOST, path.port, timeout=10)
    try:
        if target is None:
            conn.request(path.method, path.target, body=path.body or None, headers=path.headers)
        else:
            conn.request("GET", target, headers=path.headers)
        answer = conn.getresponse()
        return answer.status, answer.read()
    finally:
        conn.close()


def peak_mib(pid: int) -> float:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return round(int(line.split()[1]) / 1024, 1)
    return 0.0


def reset_peak(pid: int) -> None:
    """Start the process's peak RSS (VmHWM) afresh (Linux: clear_refs 5), where allowed."""
    try:
        Path(f"/proc/{pid}/clear_refs").write_text("5")
    except OSError:
        pass


def only_child(pid: int) -> int:
    """nginx's worker: the master's one child."""
    children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    if len(children) != 1:
        raise RuntimeError(f"expected one nginx worker under {pid}, found {children}")
    return int(children[0])


class Rig(Bench):
    """outbound_clients.Bench's process handling and /proc probes, with this benchmark's paths."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.procs = []
        self.tmp = tempfile.TemporaryDirectory(prefix="crmgate-bench-")
        self.dir = Path(self.tmp.name)
        self.dir.chmod(0o755)  # nginx's worker (nobody) reads the page files below it
        cpus = sorted(os.sched_getaffinity(0))
        self.pinned = not args.no_pin and len(cpus) >= 2
        self.cpu_sut = {cpus[0]} if self.pinned else set(cpus)
        self.cpu_helpers = {cpus[1]} if self.pinned else set(cpus)
        self.wrk = shutil.which("wrk")
        self.nginx = shutil.which("nginx") or "/usr/sbin/nginx"
        self.token = "00Dbench!" + secrets.token_urlsafe(24)  # the upstream never checks it
        self.paths: dict[str, Route] = {}
        self.page = b""
        self.ca_file = ""

    # -- set-up ---------------------------------------------------------------------------
    def wait(self, proc: subprocess.Popen, probe: Any, what: str) -> None:
        # 90 s: on a machine loaded by others, crmgate's import alone has taken 30 s
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise RuntimeError(f"{what} exited with code {proc.returncode}")
            try:
                if probe():
                    return
            except OSError:
                pass
            time.sleep(0.1)
        raise RuntimeError(f"{what} did not become ready in 90 s")

    def start_nginx(self, name: str, conf: str, port: int, tls: bool) -> int:
        conf_file = self.dir / f"{name}.conf"
        conf_file.write_text(conf)
        argv = [self.nginx, "-p", str(self.dir), "-c", str(conf_file), "-e", "stderr"]
        master = self.spawn(argv, self.cpu_helpers if name == "upstream" else self.cpu_sut)
        probe = Route("", "", port, upstream.LIST_QUERY, tls=tls)
        self.wait(master, lambda: fetch(probe, ca_file=self.ca_file)[0] == 200, f"nginx {name}")
        return only_child(master.pid)

    def crmgate(
        self, *argv: str, env: dict[str, str] | None = None
    ) -> subprocess.CompletedProcess[str]:
        return subprocess.run(  # noqa: S603 - our own venv's crmgate
            [str(Path(sys.executable).parent / "crmgate"), *argv],
            env=env or self.gateway_env,
            cwd=self.dir,
            capture_output=True,
            text=True,
            timeout=120,
            check=True,
        )

    def serve(self, env: dict[str, str], log_name: str) -> subprocess.Popen:
        """`crmgate serve` with ``env``, on the server-under-test CPU, once /health answers."""
        log = (self.dir / log_name).open("w")
        gateway = self.spawn(
            [str(Path(sys.executable).parent / "crmgate"), "serve"],
            self.cpu_sut,
            env=env,
            cwd=self.dir,
            stdout=log,
            stderr=log,
        )
        health = Route("", "", int(env["CRMGATE_PORT"]), "/health")
        try:
            self.wait(gateway, lambda: fetch(health)[0] == 200, "crmgate serve")
        except RuntimeError as failed:
            tail = (self.dir / log_name).read_text()[-2000:]
            raise RuntimeError(f"{failed}; its log ends:\n{tail}") from None
        return gateway

    def set_up(self) -> None:
        from crmsim.salesforce import platform_overrides
        from crmsim.tls import make_certificates

        certificates = self.certificates = make_certificates(self.dir / "tls")
        self.ca_file = str(certificates.ca_file)
        www = self.dir / "www"
        self.page = upstream.record_answers(certificates, www)["query.json"]

        up_port = self.upstream_port = self.free_port()
        conf = upstream.upstream_conf(self.dir, up_port, certificates, www)
        up_worker = self.start_nginx("upstream", conf, up_port, tls=True)
        self.upstream_worker = up_worker
        upstream_url = f"https://{HOST}:{up_port}"
        auth = {"Authorization": f"Bearer {self.token}"}
        self.paths["A"] = Route(
            "A", "upstream direct", up_port, upstream.LIST_QUERY, headers=auth, tls=True
        )
        self.paths["A"].pid = up_worker

        port = self.free_port()
        conf = upstream.proxy_conf(self.dir, port, up_port, certificates.ca_file, self.token)
        b = Route("B", "nginx proxy", port, upstream.LIST_QUERY)
        b.pid = self.start_nginx("proxy", conf, port, tls=False)
        self.paths["B"] = b

        port = self.free_port()
        c = Route("C", "bare Python proxy", port, upstream.LIST_QUERY)
        proxy = self.spawn(
            [sys.executable, __file__, "_pyproxy", str(port), upstream_url, self.ca_file],
            self.cpu_sut,
            env=os.environ | {"BENCH_TOKEN": self.token},
        )
        self.wait(proxy, lambda: fetch(c)[0] == 200, "the Python proxy")
        c.pid = proxy.pid
        self.paths["C"] = c

        port = self.free_port()
        self.gateway_env = os.environ | {
            "CRMGATE_DATA_DIR": str(self.dir / "crmgate"),
            "CRMGATE_HOST": HOST,
            "CRMGATE_PORT": str(port),
            "CRMGATE_PLATFORM_OVERRIDES": json.dumps(platform_overrides(upstream_url)),
            "CRMGATE_OUTBOUND_ALLOWED_NETWORKS": '["127.0.0.0/8"]',
            "CRMGATE_OUTBOUND_CA_FILE": self.ca_file,
            # The gateway's own cost, not its limits: no per-key or per-application limit.
            "CRMGATE_RATE_LIMIT_USER_KEY": "",
            "CRMGATE_RATE_LIMIT_APPLICATION": "",
        }
        self.crmgate("migrate")
        account = json.loads(
            self.crmgate(
                "account", "create", "--name", "Benchmark", "--email", "bench@example.com", "--json"
            ).stdout
        )
        gateway = self.serve(self.gateway_env, "crmgate.log")
        keys = {"X-API2CRM-USER-KEY": account["user_key"]}
        new_app = json.dumps(
            {
                "type": "Salesforce",
                "authorization": "oAuth-external-refresh",
                "credential": {"instance_url": upstream_url, "access_token": self.token},
                "description": "benchmark",
            }
        ).encode()
        create = Route(
            "", "", port, "/v1/application", "POST", keys | {"Content-Type": "application/json"}
        )
        create.body = new_app
        status, answer = fetch(create)
        if status != 201:
            raise RuntimeError(f"creating the application: {status} {answer[:300]!r}")
        keys["X-API2CRM-APPLICATION-KEY"] = json.loads(answer)["key"]
        passthrough = {"method": "GET", "path": upstream.LIST_QUERY}
        self.paths["D"] = Route(
            "D",
            "crmgate passthrough",
            port,
            "/v1/application/request",
            "POST",
            keys | {"Content-Type": "application/json"},
            json.dumps(passthrough).encode(),
            status=201,
            pid=gateway.pid,
        )
        self.paths["E"] = Route(
            "E",
            "crmgate unified list",
            port,
            "/v1/application/entity/contact/list?page_size=25",
            headers=keys,
            pid=gateway.pid,
        )
        self.check()

    def check(self) -> None:
        """Every path answers the page (E: the 25 contacts, mapped), and B, C, D reach the
        upstream with the Authorization header. Fails the run if not."""
        for name, path in self.paths.items():
            status, body = fetch(path, ca_file=self.ca_file)
            ok = status == path.status
            if name in "ABC":
                ok = ok and body == self.page
            elif name == "D":
                answer = json.loads(body)
                ok = ok and base64.b64decode(answer["content"]) == self.page
            else:
                contacts = json.loads(body)
                ok = ok and len(contacts) == 25 and contacts[0].get("first_name") == "First0"
            if not ok:
                raise RuntimeError(f"path {name} answered {status}: {body[:300]!r}")
        wanted = f"Bearer {self.token}".encode()
        for name in "BC":
            if fetch(self.paths[name], upstream.ECHO)[1] != wanted:
                raise RuntimeError(f"path {name} did not add the Authorization header")
        d = self.paths["D"]
        echo = dataclasses.replace(d, body=b'{"method": "GET", "path": "/services/__echo"}')
        if base64.b64decode(json.loads(fetch(echo)[1])["content"]) != wanted:
            raise RuntimeError("path D did not add the Authorization header")

    def settle(self, pid: int, limit: float = 15.0) -> None:
        """Wait (at most ``limit`` s) until the server has worked off what an earlier phase
        left queued: its CPU time stops growing."""
        deadline, last = time.monotonic() + limit, self.cpu_seconds(pid)
        while time.monotonic() < deadline:
            time.sleep(0.25)
            now = self.cpu_seconds(pid)
            if now - last <= 0.01:
                return
            last = now

    # -- load -----------------------------------------------------------------------------
    def wrk_run(self, path: Route, seconds: int, connections: int) -> dict[str, Any]:
        assert self.wrk, "wrk is not installed"
        body = path.body.decode()
        script = self.dir / f"wrk-{path.name}.lua"
        script.write_text(
            f'wrk.method = "{path.method}"\n'
            + (f"wrk.body = [==[{body}]==]\n" if body else "")
            + WRK_LUA
        )
        scheme = "https" if path.tls else "http"
        headers = [f"-H{k}: {v}" for k, v in path.headers.items()]
        argv = [
            self.wrk,
            "-t1",
            f"-c{connections}",
            f"-d{seconds}s",
            "--timeout",
            "5s",
            *headers,
            "-s",
            str(script),
            f"{scheme}://{HOST}:{path.port}{path.target}",
            "--",
            str(self.args.max_requests),
        ]
        proc = self.spawn(argv, self.cpu_helpers, stdout=subprocess.PIPE, text=True)
        try:
            out, _ = proc.communicate(timeout=seconds + 30)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait(timeout=10)
            self.procs.remove(proc)
        line = next(ln for ln in out.splitlines() if ln.startswith("WRKJSON "))
        return json.loads(line.removeprefix("WRKJSON "))

    def closed_loop(self, path: Route) -> dict[str, Any]:
        a = self.args
        self.wrk_run(path, a.warmup, a.connections)
        self.settle(path.pid)
        pids = {path.pid, self.upstream_worker}
        cpu0 = {pid: self.cpu_seconds(pid) for pid in pids}
        steal0, busy0, gen0 = (
            self.steal_seconds(self.cpu_sut),
            self.busy_seconds(),
            self.children_cpu_seconds(),
        )
        res = self.wrk_run(path, a.duration, a.connections)
        cpu1 = {pid: self.cpu_seconds(pid) for pid in pids}
        steal1, busy1, gen1 = (
            self.steal_seconds(self.cpu_sut),
            self.busy_seconds(),
            self.children_cpu_seconds(),
        )
        n, secs = res["requests"], res["duration_us"] / 1e6
        used = sum(cpu1[p] - cpu0[p] for p in pids)
        return {
            "requests": n,
            "rps": round(n / secs, 1),
            "cpu_ms_per_req": round((cpu1[path.pid] - cpu0[path.pid]) * 1e3 / n, 4),
            "cpu_util_pct": round((cpu1[path.pid] - cpu0[path.pid]) / secs * 100, 1),
            "wrk_p50_ms": round(res["p50_us"] / 1e3, 3),
            "wrk_p99_ms": round(res["p99_us"] / 1e3, 3),
            "errors": sum(res[k] for k in res if k.startswith("err_")),
            "hit_request_cap": bool(res["capped"]),
            "steal_pct": round((steal1 - steal0) / secs * 100, 1),
            # Machine CPU used by neither the server, the upstream nor wrk: interference.
            "other_cpu_pct": round(((busy1 - busy0) - used - (gen1 - gen0)) / secs * 100, 1),
        }

    def open_loop(self, path: Route) -> dict[str, Any]:
        a = self.args
        spec = {
            "host": HOST,
            "port": path.port,
            "tls": path.tls,
            "ca_file": self.ca_file,
            "request": path.raw_request(),
            "status": path.status,
            "rate": a.rate,
            "warmup": a.open_warmup,
            "duration": a.open_duration,
            "max_connections": 256,
        }
        argv = [sys.executable, str(HERE / "openloop.py"), json.dumps(spec)]
        self.settle(path.pid)
        proc = self.spawn(argv, self.cpu_helpers, stdout=subprocess.PIPE, text=True)
        try:
            out, _ = proc.communicate(timeout=a.open_warmup + a.open_duration + 30)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait(timeout=10)
            self.procs.remove(proc)
        return json.loads(out.splitlines()[-1])

    def measure(self, path: Route) -> dict[str, Any]:  # type: ignore[override]
        """Open loop first (the process as a client at 200/s sees it), then closed loop; peak
        RSS over both. Path A puts the upstream on the server-under-test CPU meanwhile."""
        if path.name == "A":
            os.sched_setaffinity(path.pid, self.cpu_sut)
        reset_peak(path.pid)
        try:
            row = {"path": path.name, "label": path.label}
            row |= {"open": self.open_loop(path), "closed": self.closed_loop(path)}
            row["peak_rss_mib"] = peak_mib(path.pid)
        finally:
            if path.name == "A":
                os.sched_setaffinity(path.pid, self.cpu_helpers)
        return row

    def client_cost(self) -> dict[str, Any]:
        """The open-loop client's share: A's latency seen by wrk (C, one connection, closed
        loop, so never queued) against the Python client's at 200/s."""
        a = self.paths["A"]
        os.sched_setaffinity(a.pid, self.cpu_sut)
        try:
            res = self.wrk_run(a, 5, 1)
        finally:
            os.sched_setaffinity(a.pid, self.cpu_helpers)
        return {
            "wrk_c1_p50_ms": round(res["p50_us"] / 1e3, 3),
            "wrk_c1_p99_ms": round(res["p99_us"] / 1e3, 3),
        }

    def profile(self, name: str, seconds: int) -> dict[str, Any] | None:
        """py-spy samples crmgate under closed-loop load on path ``name``."""
        py_spy = self.args.py_spy or shutil.which("py-spy")
        if not py_spy or not Path(py_spy).exists():
            print("py-spy not found (--py-spy): no profile", file=sys.stderr)
            return None
        path = self.paths[name]
        out = self.dir / f"profile-{name}.txt"
        # --gil: the thread holding the GIL, i.e. Python at work (aiosqlite's idle threads would
        # otherwise be counted: py-spy takes their blocking queue wait for activity).
        argv = [py_spy, "record", "-p", str(path.pid), "-d", str(seconds), "-r", "200", "--gil"]
        argv += ["-f", "raw", "-o", str(out)]
        self.settle(path.pid)
        spy = self.spawn(argv, self.cpu_helpers, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        time.sleep(1)
        self.wrk_run(path, seconds - 1, self.args.connections)
        _, err = spy.communicate(timeout=60)
        self.procs.remove(spy)
        if not out.exists():
            print(f"py-spy failed: {err.decode()[-300:]}", file=sys.stderr)
            return None
        raw = out.read_text()
        if self.args.profile_dir:
            self.args.profile_dir.mkdir(parents=True, exist_ok=True)
            (self.args.profile_dir / f"profile-{name}.txt").write_text(raw)
        return summarize_profile(raw)


# --------------------------------------------------------------------------------------------
# Reading the results
# --------------------------------------------------------------------------------------------
def _frame(frame: str) -> tuple[str, str]:
    """py-spy's "function (path/to/file.py:line)" -> (function, package)."""
    function, _, where = frame.partition(" (")
    file = where.rsplit(":", 1)[0]
    parts = file.replace("\\", "/").split("/")
    package = next(
        (p for p in parts if p in _PACKAGES), "python" if "python3" in file else parts[0]
    )
    return f"{function} ({'/'.join(parts[-2:])})", package


_PACKAGES = (
    "crmgate",
    "fastapi",
    "starlette",
    "pydantic",
    "pydantic_core",
    "uvicorn",
    "aiohttp",
    "sqlalchemy",
    "aiosqlite",
    "yarl",
    "multidict",
    "limits",
    "asyncio",
    "json",
    "logging",
    "ssl",
)


# Where a sample's time goes: the first of these whose marker is in its stack. Database work
# runs in SQLAlchemy's greenlets, whose stacks py-spy shows without the request's frames.
CATEGORIES = (
    ("database (SQLAlchemy, aiosqlite)", ("(sqlalchemy/", "(aiosqlite/", "sqlalchemy generated")),
    ("route matching (FastAPI)", ("_IncludedRouter._match", "APIRoute.matches")),
    ("rate limits (limits)", ("(limits/", "(aio/strategies.py")),
    ("mapping to the unified model", ("EntityService.render", "(model/mapping.py")),
    ("JSON encoding and decoding", ("(json/",)),
    ("outbound call (aiohttp, TLS)", ("(aiohttp/", "(ssl.py", "Outbound.request")),
    ("access log (logging)", ("(logging/", "_log_access")),
    ("FastAPI, Starlette, pydantic (dependencies, validation, responses)", ("(fastapi/",)),
    ("uvicorn, event loop, the rest", ("",)),
)


def summarize_profile(raw: str, top: int = 12) -> dict[str, Any]:
    """Self time per function and per package, and inclusive time per crmgate function, as
    shares of all samples (py-spy raw format: "frame;frame;... count")."""
    own: collections.Counter[str] = collections.Counter()
    packages: collections.Counter[str] = collections.Counter()
    inclusive: collections.Counter[str] = collections.Counter()
    within: collections.Counter[str] = collections.Counter()
    where: collections.Counter[str] = collections.Counter()
    total = 0
    for line in raw.splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack:
            continue
        n = int(count)
        total += n
        frames = [_frame(f) for f in stack.split(";")]
        where[next(label for label, marks in CATEGORIES if any(m in stack for m in marks))] += n
        own[frames[-1][0]] += n
        packages[frames[-1][1]] += n
        for function in {f for f, package in frames if package == "crmgate"}:
            inclusive[function] += n
        for package in {package for _, package in frames}:
            within[package] += n

    def share(counter: collections.Counter[str], n: int = top) -> list[list[Any]]:
        return [[k, round(v * 100 / total, 1)] for k, v in counter.most_common(n)]

    return {
        "samples": total,
        "where_pct": share(where, len(CATEGORIES)),
        "self_by_package_pct": share(packages),
        "inclusive_by_package_pct": share(within),
        "self_by_function_pct": share(own, 20),
        "inclusive_crmgate_pct": share(inclusive, 30),
    }


def ratios(rows: dict[str, dict[str, Any]]) -> dict[str, Any]:
    o = {k: r["open"] for k, r in rows.items()}
    rps = {k: r["closed"]["rps"] for k, r in rows.items()}
    cpu = {k: r["closed"]["cpu_ms_per_req"] for k, r in rows.items()}
    out: dict[str, Any] = {}
    for k in "DE":
        if k in o and "A" in o:
            out[f"{k}/A"] = {
                f"{p}_ratio": round(o[k][f"{p}_ms"] / o["A"][f"{p}_ms"], 2)
                for p in ("p50", "p95", "p99")
            } | {
                f"{p}_added_ms": round(o[k][f"{p}_ms"] - o["A"][f"{p}_ms"], 3)
                for p in ("p50", "p95", "p99")
            }
    for k, base in (("D", "B"), ("D", "C"), ("E", "C")):
        if k in rps and base in rps:
            # capacity: requests a second one core could serve, from CPU per request; on a
            # shared machine it holds where req/s is set by whoever else runs.
            out[f"{k}/{base}"] = {
                "throughput_ratio": round(rps[k] / rps[base], 3),
                "capacity_ratio": round(cpu[base] / cpu[k], 3),
            }
    return out


def targets(r: dict[str, Any]) -> list[str]:
    lines = []
    for k, limit in TARGET_ADDED_P50_MS.items():
        if f"{k}/A" in r:
            added, p99 = r[f"{k}/A"]["p50_added_ms"], r[f"{k}/A"]["p99_added_ms"]
            lines.append(
                f"{k}: median added {added:.3f} ms (target <= {limit}) "
                f"{'met' if added <= limit else 'MISSED'}; p99 added {p99:.3f} ms "
                f"(target <= {TARGET_P99_WITHIN_MS}) "
                f"{'met' if p99 <= TARGET_P99_WITHIN_MS else 'MISSED'}"
            )
    for k, share in TARGET_SHARE_OF_C.items():
        if f"{k}/C" in r:
            got, capacity = r[f"{k}/C"]["throughput_ratio"], r[f"{k}/C"]["capacity_ratio"]
            lines.append(
                f"{k}: throughput {got:.0%} of C, capacity (CPU per request) {capacity:.0%} of "
                f"C (target >= {share:.0%}) {'met' if min(got, capacity) >= share else 'MISSED'}"
            )
    return lines


def table(results: dict[str, Any]) -> str:
    """The markdown table (printed as is, and written into docs/performance.md)."""
    head = (
        "| path | req/s (closed, {c} conns) | server busy % | CPU ms/req | capacity req/s "
        "| peak RSS MiB | p50 ms | p95 ms | p99 ms (open, {rate}/s) | errors |"
    ).format(c=results["config"]["connections"], rate=results["config"]["rate"])
    lines = [head, "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for row in results["paths"].values():
        o, c = row["open"], row["closed"]
        lines.append(
            f"| {row['path']} {row['label']} | {c['rps']:,.0f} | {c['cpu_util_pct']:.0f} "
            f"| {c['cpu_ms_per_req']:.3f} | {1000 / c['cpu_ms_per_req']:,.0f} "
            f"| {row['peak_rss_mib']:.1f} | {o['p50_ms']:.2f} | {o['p95_ms']:.2f} "
            f"| {o['p99_ms']:.2f} | {o['errors'] + c['errors']} |"
        )
    lines.append("")
    starved = [k for k, r in results["paths"].items() if r["closed"]["cpu_util_pct"] < 90]
    if starved:
        lines.append(
            f"- {', '.join(starved)}: the server was under 90% busy in the closed loop, so "
            "something else (load generator, upstream, other work on the machine) set its "
            "req/s: a floor, not its capacity; compare capacities (1000 / CPU ms per request)"
        )
    rate = results["config"]["rate"]
    overloaded = [
        k for k, r in results["paths"].items() if 1000 / r["closed"]["cpu_ms_per_req"] < rate
    ]
    if overloaded:
        lines.append(
            f"- {', '.join(overloaded)}: capacity below the open-loop rate ({rate}/s): their "
            "open-loop latency is a queue growing for the whole window, not a service time"
        )
    for name, values in results["ratios"].items():
        text = ", ".join(f"{k} {v}" for k, v in values.items())
        lines.append(f"- {name}: {text}")
    cost = results.get("client_cost")
    if cost:
        lines.append(
            f"- open-loop client on A: {cost['client_cpu_ms_per_req']} ms CPU/request, timer "
            f"lag p50/p99 {cost['lag_p50_ms']}/{cost['lag_p99_ms']} ms; A seen by wrk "
            f"(1 connection) p50/p99 {cost['wrk_c1_p50_ms']}/{cost['wrk_c1_p99_ms']} ms, by "
            f"the Python client {cost['p50_ms']}/{cost['p99_ms']} ms"
        )
    noise = [
        f"{k} steal {r['closed']['steal_pct']}% other {r['closed']['other_cpu_pct']}%"
        for k, r in results["paths"].items()
    ]
    lines.append("- interference during the closed loops (% of one CPU): " + "; ".join(noise))
    return "\n".join(lines)


def write_doc(doc: Path, results: dict[str, Any]) -> None:
    m = results["machine"]
    block = "\n".join(
        [
            DOC_START,
            f"Run on {results['finished_utc'][:10]}, {m['nproc']}-core machine "
            f'("{m["cpu_model"]}"), kernel {m["kernel"]}, Python {m["python"]}, '
            f"{m.get('wrk', 'wrk').split(' [')[0]}, {results['nginx']} "
            f"(`bench/results/gateway.json`):",
            "",
            table(results),
            "- " + "\n- ".join(targets(results["ratios"])),
            DOC_END,
        ]
    )
    replace_block(doc, DOC_START, DOC_END, block)


def replace_block(doc: Path, start_marker: str, end_marker: str, block: str) -> None:
    """``block`` (markers included) in place of the text between the markers in ``doc``."""
    text = doc.read_text()
    start, end = text.find(start_marker), text.find(end_marker)
    if start < 0 or end < 0:
        raise SystemExit(f"{doc}: no {start_marker} ... {end_marker} block to replace")
    doc.write_text(text[:start] + block + text[end + len(end_marker) :])


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "_pyproxy":
        run_pyproxy(int(sys.argv[2]), sys.argv[3], sys.argv[4])
        return
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--connections", type=int, default=32, help="closed-loop concurrency")
    p.add_argument("--duration", type=int, default=10, help="closed-loop measured seconds")
    p.add_argument("--warmup", type=int, default=2, help="closed-loop unmeasured seconds")
    p.add_argument("--rate", type=int, default=200, help="open-loop requests per second")
    p.add_argument("--open-duration", type=int, default=15, help="open-loop measured seconds")
    p.add_argument("--open-warmup", type=int, default=2, help="open-loop unmeasured seconds")
    p.add_argument("--max-requests", type=int, default=2_000_000, help="cap per wrk run")
    p.add_argument("--paths", default="ABCDE", help="which paths, e.g. ACD")
    p.add_argument("--profile-seconds", type=int, default=10, help="0: no profile")
    p.add_argument("--py-spy", default="", help="py-spy binary (default: on PATH)")
    p.add_argument("--profile-dir", type=Path, help="keep py-spy's raw profiles here")
    p.add_argument("--no-pin", action="store_true", help="do not pin processes to CPUs")
    p.add_argument("--out", type=Path, help="default: bench/results/gateway.json (memory.json)")
    p.add_argument("--write-doc", type=Path, help="replace the table in this markdown file")
    memory.add_arguments(p)
    args = p.parse_args()
    if args.memory_only:
        args.paths, args.memory = "", True
    results_file = "memory.json" if args.memory_only else "gateway.json"
    args.out = args.out or HERE / "results" / results_file
    for tool in ("wrk", "nginx"):
        if not shutil.which(tool) and not Path(f"/usr/sbin/{tool}").exists():
            sys.exit(f"{tool} is not installed: apt-get install -y nginx-light wrk")

    rig = Rig(args)
    try:
        print("setting up (not timed)...", file=sys.stderr, flush=True)
        rig.set_up()
        rows = {}
        for name in args.paths:
            path = rig.paths[name]
            rows[name] = rig.measure(path)
            o, c = rows[name]["open"], rows[name]["closed"]
            print(
                f"  {name} {path.label:<22} {c['rps']:>9.1f} req/s  {c['cpu_ms_per_req']} ms "
                f"CPU/req  p50/p99 {o['p50_ms']}/{o['p99_ms']} ms  errors "
                f"{o['errors'] + c['errors']}  steal {c['steal_pct']}%",
                file=sys.stderr,
                flush=True,
            )
        cost = None
        if "A" in rows:
            client = {k: rows["A"]["open"][k] for k in ("p50_ms", "p99_ms", "lag_p50_ms")}
            client |= {k: rows["A"]["open"][k] for k in ("lag_p99_ms", "client_cpu_ms_per_req")}
            cost = client | rig.client_cost()
        profiles = {}
        if args.profile_seconds:
            for name in "DE":
                if name in rows and (found := rig.profile(name, args.profile_seconds)):
                    profiles[name] = found
        figures = memory.measure(rig, args) if args.memory else None
        nginx_version = subprocess.run(  # noqa: S603
            [rig.nginx, "-v"], capture_output=True, text=True, timeout=10
        ).stderr.strip()
    finally:
        rig.stop_all()

    results = {
        "finished_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "machine": machine_info(rig.wrk),
        "nginx": nginx_version.removeprefix("nginx version: "),
        "config": {
            k: v for k, v in vars(args).items() if k not in ("out", "write_doc", "profile_dir")
        }
        | {"pinned": rig.pinned, "page_bytes": len(rig.page)},
        "paths": rows,
        "ratios": ratios(rows),
        "client_cost": cost,
        "profiles": profiles,
        "memory": figures,
    }
    if rows:
        print()
        print(table(results))
        print("\n".join(targets(results["ratios"])))
    for name, prof in profiles.items():
        print(f"\nprofile of {name} ({prof['samples']} samples), where the time goes:")
        print("  " + ", ".join(f"{k} {v}%" for k, v in prof["where_pct"]))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2, default=str) + "\n")
    print(f"\nwrote {args.out}")
    if figures:
        print(f"\nmemory:\n{memory.summary(results)}")
    if args.write_doc:
        if rows:
            write_doc(args.write_doc, results)
        if figures:
            memory.write_doc(args.write_doc, results, f"bench/results/{args.out.name}")
        print(f"wrote the figures into {args.write_doc}")


if __name__ == "__main__":
    main()
