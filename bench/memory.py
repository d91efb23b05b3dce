"""`make bench`'s memory part: a gateway's RSS with 10,000 applications, and while it reads
100,000 records page by page (issue 8: under 150 MB with 10,000 applications; flat while reading).

Run by bench/run.py with its rig (the same upstream, certificates, CPU pinning and process
handling): ``make bench BENCH_ARGS=--memory`` after the five paths, ``--memory-only`` alone.
Not in a plain ``make bench``: creating 10,000 applications the way the API does takes one to
three minutes on the 2-core machine, and the calls as long again.

1. **Many applications.** A gateway of its own (one ``crmgate serve`` worker, SQLite in the
   rig's temporary directory, the rate limits on) gets ``--memory-apps`` applications: created
   before it starts by a set-up child through crmgate's own service layer
   (``ApplicationService.create``, exactly what ``POST /v1/application`` runs: credentials
   verified with the upstream, sealed by the vault, audited), each with its own access token.
   Then each of ``--memory-sweep`` of them (default: all) is called once on the unified list
   (which keeps all the passthrough keeps per application, and the CRM's describe), 8 at a
   time, against the fixed upstream. The gateway's RSS is read every 40th of them (250 of
   10,000): what it keeps per application shows as growth with the applications
   touched, and a bounded cache as a plateau. Then the peak (VmHWM) and the RSS after
   ``--memory-idle`` seconds of rest.
2. **100,000 records.** The gateway is restarted (a fresh process on the same store, so memory
   freed by part 1 cannot hide growth), an application is created through the API pointing at a
   generator upstream (``_records`` below: Salesforce's query protocol, LIMIT/OFFSET and query
   locators, ``nextRecordsUrl``), and ``/v1/application/entity/contact/list?page_size=100&page=N``
   is read from page 1 to the empty page after the last, in order, the RSS read every
   ``SAMPLE_PAGES`` pages. Every record is checked (all ids, once each, in order). Flat means
   the fitted growth over the read (least squares after the first tenth) is under
   ``FLAT_MIB``.

The figures: a summary on stdout, ``memory`` in the results JSON and, with ``--write-doc``, the
block between ``bench:memory`` markers in docs/performance.md.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import secrets
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from run import Rig

HOST = "127.0.0.1"
DOC_START, DOC_END = "<!-- bench:memory:start -->", "<!-- bench:memory:end -->"
TARGET_MB = 150  # the "under 150 MB RSS" (MB: 10^6 bytes)
SAMPLE_PAGES = 10
FLAT_MIB = 5.0  # fitted growth over the whole read that still counts as flat
SWEEP_CONCURRENCY = 8
RECORDS_PAGE_SIZE = 100  # the largest page crmgate allows (api/params.py MAX_PAGE_SIZE)
# Operator settings for a gateway serving 10,000 applications to one client: the limits stay
# on (their per-key state is part of what is measured), the defaults raised where one benchmark
# client driving every application, or reading 1,000 pages in a row, would otherwise hit them.
OPERATOR_ENV = {
    "CRMGATE_RATE_LIMIT_USER_KEY": "2000/second;10000000/day",
    "CRMGATE_RATE_LIMIT_APPLICATION": "200/second;1000000/day",
}


def add_arguments(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("memory (bench/memory.py)")
    g.add_argument("--memory", action="store_true", help="after paths A-E: 3-6 minutes more")
    g.add_argument("--memory-only", action="store_true", help="this part alone")
    g.add_argument("--memory-apps", type=int, default=10_000, help="applications in the store")
    g.add_argument("--memory-sweep", type=int, help="applications called (default: all)")
    g.add_argument("--memory-records", type=int, default=100_000, help="records read in pages")
    g.add_argument("--memory-idle", type=float, default=5.0, help="rest before 'after' RSS, s")


# --------------------------------------------------------------------------------------------
# /proc probes
# --------------------------------------------------------------------------------------------
def status_mib(pid: int) -> dict[str, float]:
    """VmRSS, VmHWM (peak), RssAnon of ``pid``, in MiB."""
    wanted = {"VmRSS:": "rss", "VmHWM:": "peak", "RssAnon:": "anon"}
    out = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            name = line.split(None, 1)[0]
            if name in wanted:
                out[wanted[name]] = round(int(line.split()[1]) / 1024, 1)
    return out


def fitted_growth(samples: list[tuple[int, float]], skip: float = 0.1) -> float:
    """Least-squares slope of RSS (MiB) against x, over the samples past the first ``skip``
    of x, times x's whole range: the growth a straight line through them puts on the run."""
    last = samples[-1][0] if samples else 0
    tail = [(x, y) for x, y in samples if x >= skip * last]
    if len(tail) < 3:
        return 0.0
    n = len(tail)
    mx, my = sum(x for x, _ in tail) / n, sum(y for _, y in tail) / n
    var = sum((x - mx) ** 2 for x, _ in tail)
    slope = sum((x - mx) * (y - my) for x, y in tail) / var if var else 0.0
    return round(slope * last, 1)


# --------------------------------------------------------------------------------------------
# Child roles: the set-up that creates the applications, and the records upstream
# --------------------------------------------------------------------------------------------
async def _populate(user_key: str, count: int, instance_url: str) -> list[str]:
    """Create ``count`` applications through crmgate's service layer, as the API does."""
    from crmgate.runtime import Services
    from crmgate.settings import Settings

    async with Services.open(Settings()) as services:
        principal = await services.accounts.authenticate(user_key)
        assert principal is not None, "the benchmark's user key was refused"
        # two at a time: one verifies with the CRM while the other writes; more only queue
        # for SQLite's write lock, whose busy handler sleeps in steps of up to 100 ms
        gate = asyncio.Semaphore(2)

        async def one(i: int) -> str:
            async with gate:
                view = await services.applications.create(
                    principal,
                    platform_type="Salesforce",
                    authorization="oAuth-external-refresh",
                    credential={
                        "instance_url": instance_url,
                        "access_token": "00Dbench!" + secrets.token_urlsafe(24),
                    },
                    description=f"memory benchmark {i}",
                )
                return view.key

        return await asyncio.gather(*(one(i) for i in range(count)))


def _record(template: dict[str, Any], i: int) -> dict[str, Any]:
    record = dict(template)
    record["Id"] = f"003{i:015d}"
    record["attributes"] = {
        "type": "Contact",
        "url": f"{template['attributes']['url'].rsplit('/', 1)[0]}/{record['Id']}",
    }
    record.update(FirstName=f"First{i}", LastName=f"Last{i}", Email=f"first{i}.last{i}@example.com")
    if "Name" in record:
        record["Name"] = f"First{i} Last{i}"
    return record


def _run_records(port: int, www: str, cert: str, key: str, total: int) -> None:
    """The records upstream: ``total`` Salesforce contacts, generated on demand, answering
    what crmgate's Salesforce connector calls: SOQL with LIMIT/OFFSET (shallow pages), SOQL
    without LIMIT and ``Sforce-Query-Options: batchSize=`` (deep pages), then each batch's
    ``nextRecordsUrl``; the userinfo and the Contact describe are the recorded files."""
    import ssl

    from aiohttp import web
    from upstream import DESCRIBE, QUERY, USERINFO

    files = Path(www)
    template = json.loads((files / "query.json").read_bytes())["records"][0]
    locator = QUERY + "/01gBENCH000000001-"

    def batch(start: int, size: int, paged: bool) -> web.Response:
        end = min(total, start + size)
        body: dict[str, Any] = {
            "totalSize": total,
            "done": paged or end >= total,
            "records": [_record(template, i) for i in range(start, end)],
        }
        if not body["done"]:
            body["nextRecordsUrl"] = f"{locator}{end}"
        return web.json_response(body)

    async def query(request: web.Request) -> web.Response:
        statement = request.query.get("q", "")
        limit = re.search(r"\bLIMIT (\d+)(?: OFFSET (\d+))?", statement)
        if limit:
            return batch(int(limit[2] or 0), int(limit[1]), paged=True)
        options = request.headers.get("Sforce-Query-Options", "")
        size = re.search(r"batchSize=(\d+)", options)
        return batch(0, int(size[1]) if size else 2000, paged=False)

    async def more(request: web.Request) -> web.Response:
        return batch(int(request.match_info["start"]), 2000, paged=False)

    def recorded(name: str) -> Any:
        async def answer(_: web.Request) -> web.Response:
            return web.Response(body=(files / name).read_bytes(), content_type="application/json")

        return answer

    app = web.Application()
    app.router.add_get(QUERY, query)
    app.router.add_get(QUERY + "/01gBENCH000000001-{start:\\d+}", more)
    app.router.add_get(USERINFO, recorded("userinfo.json"))
    app.router.add_get(DESCRIBE, recorded("describe.json"))
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    web.run_app(app, host=HOST, port=port, ssl_context=context, print=None, access_log=None)


# --------------------------------------------------------------------------------------------
# The two measurements
# --------------------------------------------------------------------------------------------
async def _sweep(port: int, user_key: str, keys: list[str], pid: int) -> dict[str, Any]:
    """Each application once on the unified list (everything the passthrough keeps per
    application, and the describe); RSS 40 times along."""
    import aiohttp

    url = f"http://{HOST}:{port}/v1/application/entity/contact/list?page_size=25"
    errors: dict[str, int] = {}
    samples = [(0, status_mib(pid)["rss"])]
    done, every = 0, max(1, len(keys) // 40)
    gate = asyncio.Semaphore(SWEEP_CONCURRENCY)
    connector = aiohttp.TCPConnector(limit=SWEEP_CONCURRENCY)
    timeout = aiohttp.ClientTimeout(total=60)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:

        async def one(key: str) -> None:
            nonlocal done
            headers = {"X-API2CRM-USER-KEY": user_key, "X-API2CRM-APPLICATION-KEY": key}
            async with gate, session.get(url, headers=headers) as answer:
                body = await answer.read()
            if answer.status != 200 or len(json.loads(body)) != 25:
                errors[str(answer.status)] = errors.get(str(answer.status), 0) + 1
            done += 1
            if done % every == 0:
                samples.append((done, status_mib(pid)["rss"]))

        await asyncio.gather(*(one(key) for key in keys))
    return {"samples": samples, "errors": errors}


async def _read_records(port: int, headers: dict[str, str], pid: int, total: int) -> dict[str, Any]:
    """Pages 1, 2, ... of the contacts until the empty page, RSS every SAMPLE_PAGES pages;
    every record checked. The first page warms the process: RSS is reckoned from after it."""
    import aiohttp
    from run import reset_peak

    url = f"http://{HOST}:{port}/v1/application/entity/contact/list"
    seen, page, samples = 0, 0, []
    problems: list[str] = []
    started = time.monotonic()
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=60)) as session:
        while True:
            page += 1
            query = {"page_size": str(RECORDS_PAGE_SIZE), "page": str(page)}
            async with session.get(url, headers=headers, params=query) as answer:
                body = await answer.read()
                if answer.status != 200:
                    problems.append(f"page {page}: {answer.status} {body[:200]!r}")
                    break
            records = json.loads(body)
            for record in records:
                if record.get("id") != f"003{seen:015d}":
                    problems.append(f"page {page}: record {record.get('id')!r}, not {seen}")
                    break
                seen += 1
            if problems or not records:
                break
            if page == 1:
                reset_peak(pid)  # the peak from here on
            if page % SAMPLE_PAGES == 0 or page == 1:
                samples.append((seen, status_mib(pid)["rss"]))
    if seen != total and not problems:
        problems.append(f"read {seen:,} records, not {total:,}")
    return {
        "pages": page,
        "records": seen,
        "seconds": round(time.monotonic() - started, 1),
        "samples": samples,
        "problems": problems,
    }


def measure(rig: Rig, args: argparse.Namespace) -> dict[str, Any]:
    """Both parts on a gateway of their own; returns the figures (the JSON's ``memory``)."""
    from run import Route, fetch

    apps = args.memory_apps
    sweep = min(apps, args.memory_sweep or apps)
    records_port = rig.free_port()
    instance_url = f"https://{HOST}:{rig.upstream_port}"
    port = rig.free_port()
    # Salesforce's instance hosts: the fixed upstream's (set by the rig) and the records one's.
    overrides = json.loads(rig.gateway_env["CRMGATE_PLATFORM_OVERRIDES"])
    for entry in overrides.values():
        entry["instance_hosts"] = [*entry["instance_hosts"], f"{HOST}:{records_port}"]
    env = rig.gateway_env | OPERATOR_ENV
    env |= {
        "CRMGATE_DATA_DIR": str(rig.dir / "crmgate-memory"),
        "CRMGATE_PORT": str(port),
        "CRMGATE_MAX_APPLICATIONS": str(apps + 1),
        "CRMGATE_PLATFORM_OVERRIDES": json.dumps(overrides),
    }
    result: dict[str, Any] = {
        "applications": apps,
        "swept": sweep,
        "records_total": args.memory_records,
        "settings": OPERATOR_ENV | {"CRMGATE_MAX_APPLICATIONS": str(apps + 1)},
        "target_mb": TARGET_MB,
        # RSS does not depend on CPU contention; the durations do (the machine is shared)
        "loadavg_start": os.getloadavg(),
    }
    rig.crmgate("migrate", env=env)
    account = json.loads(
        rig.crmgate(
            "account",
            "create",
            "--name",
            "Memory",
            "--email",
            "memory@example.com",
            "--json",
            env=env,
        ).stdout
    )
    user_key = account["user_key"]

    # -- 1. many applications --------------------------------------------------------------
    print(f"  memory: creating {apps:,} applications...", file=sys.stderr, flush=True)
    started = time.monotonic()
    keys_file = rig.dir / "memory-keys.txt"
    child = rig.spawn(
        [sys.executable, __file__, "_populate", str(apps), instance_url, str(keys_file)],
        rig.cpu_sut | rig.cpu_helpers,  # set-up, not measured
        env=env | {"BENCH_USER_KEY": user_key},
        cwd=rig.dir,
    )
    if child.wait(timeout=1800) != 0:
        raise RuntimeError(f"creating the applications failed ({child.returncode})")
    rig.procs.remove(child)
    keys = keys_file.read_text().split()
    result["create_seconds"] = round(time.monotonic() - started, 1)

    gateway = rig.serve(env, "crmgate-memory.log")
    idle = status_mib(gateway.pid)
    print(f"  memory: calling {sweep:,} of them...", file=sys.stderr, flush=True)
    os.sched_setaffinity(0, rig.cpu_helpers)
    try:
        started = time.monotonic()
        swept = asyncio.run(_sweep(port, user_key, keys[:sweep], gateway.pid))
        seconds = time.monotonic() - started
    finally:
        os.sched_setaffinity(0, rig.cpu_sut | rig.cpu_helpers)
    right_after = status_mib(gateway.pid)
    time.sleep(args.memory_idle)
    rested = status_mib(gateway.pid)
    result["many"] = {
        "idle_mib": idle["rss"],
        "peak_mib": rested["peak"],
        "after_mib": right_after["rss"],
        "rested_mib": rested["rss"],
        "rested_anon_mib": rested["anon"],
        "requests": sweep,
        "seconds": round(seconds, 1),
        "errors": swept["errors"],
        "samples": swept["samples"],
        "first_half_growth_mib": _growth_between(swept["samples"], 0, sweep // 2),
        "second_half_growth_mib": _growth_between(swept["samples"], sweep // 2, sweep),
    }
    rig.stop(gateway)

    # -- 2. 100,000 records ----------------------------------------------------------------
    print(f"  memory: reading {args.memory_records:,} records...", file=sys.stderr, flush=True)
    records = rig.spawn(
        [
            sys.executable,
            __file__,
            "_records",
            str(records_port),
            str(rig.dir / "www"),
            str(rig.certificates.cert_file),
            str(rig.certificates.key_file),
            str(args.memory_records),
        ],
        rig.cpu_helpers,
    )
    probe = Route("", "", records_port, "/services/oauth2/userinfo", tls=True)
    rig.wait(records, lambda: fetch(probe, ca_file=rig.ca_file)[0] == 200, "records upstream")
    gateway = rig.serve(env, "crmgate-memory-records.log")
    result["records"] = {"fresh_idle_mib": status_mib(gateway.pid)["rss"]}
    create = Route(
        "",
        "",
        port,
        "/v1/application",
        "POST",
        {"X-API2CRM-USER-KEY": user_key, "Content-Type": "application/json"},
    )
    create.body = json.dumps(
        {
            "type": "Salesforce",
            "authorization": "oAuth-external-refresh",
            "credential": {
                "instance_url": f"https://{HOST}:{records_port}",
                "access_token": "00Dbench!" + secrets.token_urlsafe(24),
            },
            "description": "memory benchmark: 100,000 records",
        }
    ).encode()
    status, answer = fetch(create)
    if status != 201:
        raise RuntimeError(f"creating the records application: {status} {answer[:300]!r}")
    headers = {
        "X-API2CRM-USER-KEY": user_key,
        "X-API2CRM-APPLICATION-KEY": json.loads(answer)["key"],
    }
    os.sched_setaffinity(0, rig.cpu_helpers)
    try:
        read = asyncio.run(_read_records(port, headers, gateway.pid, args.memory_records))
    finally:
        os.sched_setaffinity(0, rig.cpu_sut | rig.cpu_helpers)
    end = status_mib(gateway.pid)
    samples = read.pop("samples")
    result["records"] |= read | {
        "page_size": RECORDS_PAGE_SIZE,
        "start_mib": samples[0][1] if samples else None,
        "peak_mib": end["peak"],
        "end_mib": end["rss"],
        "fitted_growth_mib": fitted_growth(samples),
        "samples": samples,
    }
    result["records"]["flat"] = (
        not read["problems"] and abs(result["records"]["fitted_growth_mib"]) < FLAT_MIB
    )
    rig.stop(gateway)
    rig.stop(records)
    result["loadavg_end"] = os.getloadavg()
    return result


def _growth_between(samples: list[tuple[int, float]], start: int, end: int) -> float | None:
    """RSS at the sample nearest ``end`` minus at the one nearest ``start`` (MiB)."""
    if len(samples) < 2:
        return None

    def near(x: int) -> float:
        return min(samples, key=lambda s: abs(s[0] - x))[1]

    return round(near(end) - near(start), 1)


# --------------------------------------------------------------------------------------------
# Reporting
# --------------------------------------------------------------------------------------------
def _some(samples: list[tuple[int, float]], n: int = 10) -> str:
    """About ``n`` of the samples, the last always: "x: MiB, ..."."""
    step = max(1, len(samples) // n)
    kept = samples[::step] + ([samples[-1]] if (len(samples) - 1) % step else [])
    return ", ".join(f"{x:,}: {y}" for x, y in kept)


def summary(results: dict[str, Any]) -> str:
    m = results["memory"]
    many, rec = m["many"], m["records"]
    limit_mib = TARGET_MB * 1e6 / 2**20
    sweep_samples, record_samples = _some(many["samples"]), _some(rec["samples"])
    lines = [
        "| figure | MiB |",
        "|---|---:|",
        f"| {m['applications']:,} applications in the store, gateway idle | {many['idle_mib']} |",
        f"| peak while calling {m['swept']:,} of them (a unified list each) | {many['peak_mib']} |",
        f"| right after | {many['after_mib']} |",
        f"| after {results['config'].get('memory_idle', 5):g} s of rest | {many['rested_mib']} |",
        f"| fresh gateway, same store, before reading records | {rec['fresh_idle_mib']} |",
        f"| reading {rec['records']:,} records: after page 1 | {rec['start_mib']} |",
        f"| reading: peak | {rec['peak_mib']} |",
        f"| reading: after the last page | {rec['end_mib']} |",
        "",
        f"- {m['applications']:,} applications: peak {many['peak_mib']} MiB "
        f"({many['peak_mib'] * 2**20 / 1e6:.0f} MB; target < {TARGET_MB} MB = {limit_mib:.0f} "
        f"MiB) {'met' if many['peak_mib'] < limit_mib else 'MISSED'}; "
        f"{many['requests']:,} requests in {many['seconds']} s, errors {many['errors'] or 0}",
        f"- RSS (MiB) by applications called: {sweep_samples}; growth over the first half "
        f"{many['first_half_growth_mib']} MiB, over the second half "
        f"{many['second_half_growth_mib']} MiB",
        f"- {rec['records']:,} records in {rec['pages']:,} pages of {rec['page_size']} "
        f"({rec['seconds']} s): RSS (MiB) by records read: {record_samples}; fitted growth "
        f"over the read {rec['fitted_growth_mib']} MiB (flat: < {FLAT_MIB:g}) "
        f"{'flat' if rec['flat'] else 'NOT FLAT'}"
        + (f"; problems: {'; '.join(rec['problems'])}" if rec["problems"] else ""),
    ]
    return "\n".join(lines)


def write_doc(doc: Path, results: dict[str, Any], source: str) -> None:
    mach = results["machine"]
    block = "\n".join(
        [
            DOC_START,
            f"Run on {results['finished_utc'][:10]}, {mach['nproc']}-core machine "
            f'("{mach["cpu_model"]}"), kernel {mach["kernel"]}, Python {mach["python"]} '
            f"(`{source}`):",
            "",
            summary(results),
            DOC_END,
        ]
    )
    from run import replace_block

    replace_block(doc, DOC_START, DOC_END, block)


def main() -> None:
    role = sys.argv[1] if len(sys.argv) > 1 else ""
    if role == "_populate":
        count, instance_url, out = int(sys.argv[2]), sys.argv[3], Path(sys.argv[4])
        # the keys (credentials) go to a file in the rig's private temporary directory
        out.write_text(
            "\n".join(asyncio.run(_populate(os.environ["BENCH_USER_KEY"], count, instance_url)))
        )
    elif role == "_records":
        port, www, cert, key, total = sys.argv[2:7]
        _run_records(int(port), www, cert, key, int(total))
    else:
        sys.exit("bench/memory.py is run by bench/run.py: make bench BENCH_ARGS=--memory-only")


if __name__ == "__main__":
    main()
