"""The outbound client tries a read again when the CRM could not serve it for now, and a write
never: real HTTP on loopback, a small server that answers from a script and counts."""

from __future__ import annotations

import asyncio
import logging
import socket
import struct
import time
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

import pytest
from aiohttp import web
from yarl import URL

from crmgate.outbound import Outbound, OutboundFailed, OutboundResponse, Retrying, retry_after
from crmgate.settings import Settings

# small waits, so the tests are fast; a budget wide enough that only the count bounds the tries
FAST = Retrying(retries=2, budget=3.0, base=0.05)

Answer = tuple[int, Mapping[str, str]]


class Script:
    """A CRM that gives ``answers`` in order (the last one again and again) and counts calls."""

    def __init__(self, answers: Sequence[Answer], slowness: float = 0.0) -> None:
        self.answers = list(answers)
        self.slowness = slowness
        self.calls: list[float] = []

    async def handle(self, request: web.Request) -> web.Response:
        status, headers = self.answers[min(len(self.calls), len(self.answers) - 1)]
        self.calls.append(time.monotonic())
        await asyncio.sleep(self.slowness)
        return web.Response(status=status, headers=dict(headers), text=f"answer {status}")


@asynccontextmanager
async def crm(script: Script) -> AsyncIterator[str]:
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", script.handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        yield f"127.0.0.1:{port}"
    finally:
        await runner.cleanup()


def outbound(host: str, retrying: Retrying = FAST) -> Outbound:
    # every try passes the guard: the loopback is allowed, plain http to this host:port only
    return Outbound(allowed_networks=["127.0.0.0/8"], plain_http_hosts=[host], retrying=retrying)


def call(
    answers: Sequence[Answer],
    method: str = "GET",
    retrying: Retrying = FAST,
    slowness: float = 0.0,
    once: bool = False,
) -> tuple[OutboundResponse, Script, float]:
    """The answer the client gets, the script (its calls), and the seconds it took."""
    script = Script(answers, slowness)

    async def run() -> tuple[OutboundResponse, float]:
        async with crm(script) as host:
            client = outbound(host, retrying)
            try:
                started = time.monotonic()
                url = URL(f"http://{host}/records?q=1")
                answer = await client.request(method, url, once=once)
                return answer, time.monotonic() - started
            finally:
                await client.close()

    answer, took = asyncio.run(run())
    return answer, script, took


OK: Answer = (200, {})
UNAVAILABLE: Answer = (503, {})


def test_a_read_answered_503_is_tried_again_and_succeeds() -> None:
    answer, script, _ = call([UNAVAILABLE, OK])
    assert answer.status == 200 and len(script.calls) == 2


@pytest.mark.parametrize("status", [429, 500, 502, 503, 504])
def test_each_not_now_status_is_tried_again(status: int) -> None:
    answer, script, _ = call([(status, {}), OK])
    assert answer.status == 200 and len(script.calls) == 2


@pytest.mark.parametrize("status", [501, 505, 400, 401, 404])
def test_a_permanent_answer_is_given_back_at_once(status: int) -> None:
    answer, script, _ = call([(status, {}), OK])
    assert answer.status == status and len(script.calls) == 1


@pytest.mark.parametrize("method", ["HEAD", "OPTIONS"])
def test_the_other_safe_methods_are_tried_again(method: str) -> None:
    answer, script, _ = call([UNAVAILABLE, OK], method=method)
    assert answer.status == 200 and len(script.calls) == 2


def test_a_429_with_retry_after_is_waited_for() -> None:
    answer, script, took = call([(429, {"Retry-After": "1"}), OK])
    assert answer.status == 200 and len(script.calls) == 2
    assert script.calls[1] - script.calls[0] >= 0.95 and took >= 0.95


@pytest.mark.parametrize("method", ["POST", "PUT", "PATCH", "DELETE"])
def test_a_write_answered_503_is_not_tried_again(method: str) -> None:
    answer, script, _ = call([UNAVAILABLE, OK], method=method)
    assert answer.status == 503 and len(script.calls) == 1


def test_a_read_that_spends_something_is_never_tried_again() -> None:
    """A token request by GET (Bitrix24's) spends a code or a rotating refresh token."""
    answer, script, _ = call([UNAVAILABLE, OK], once=True)
    assert answer.status == 503 and len(script.calls) == 1


def test_a_retry_after_beyond_the_budget_is_answered_at_once() -> None:
    """The client gets the 429 and its Retry-After (the error ladder's 429 RATE_LIMITED)."""
    answer, script, took = call(
        [(429, {"Retry-After": "30"}), OK], retrying=Retrying(retries=2, budget=2.0, base=0.05)
    )
    assert answer.status == 429 and answer.headers["Retry-After"] == "30"
    assert len(script.calls) == 1 and took < 1.0


def test_tries_are_bounded_by_their_count() -> None:
    answer, script, _ = call([UNAVAILABLE])
    assert answer.status == 503 and len(script.calls) == 1 + FAST.retries


def test_no_try_starts_after_the_budget() -> None:
    """A CRM that takes 0.2 s to say 503 (Retry-After 0: no wait asked): the budget (0.5 s)
    ends the tries, not their count (50)."""
    many = Retrying(retries=50, budget=0.5, base=0.05)
    answer, script, _ = call([(503, {"Retry-After": "0"})], retrying=many, slowness=0.2)
    assert answer.status == 503 and 2 <= len(script.calls) <= 4
    assert script.calls[-1] - script.calls[0] <= 0.5


def test_zero_retries_is_one_try() -> None:
    answer, script, _ = call([UNAVAILABLE, OK], retrying=Retrying(retries=0))
    assert answer.status == 503 and len(script.calls) == 1


@asynccontextmanager
async def resetting(resets: int) -> AsyncIterator[tuple[str, list[int]]]:
    """A CRM whose first ``resets`` connections are reset (TCP RST) once the request came; the
    others are answered 200. The list counts the connections."""
    connections: list[int] = []

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        connections.append(1)
        await reader.readuntil(b"\r\n\r\n")
        if len(connections) <= resets:
            sock = writer.get_extra_info("socket")
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            writer.transport.abort()
            return
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok")
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        yield f"127.0.0.1:{port}", connections
    finally:
        server.close()
        await server.wait_closed()


def reset_then_ok(method: str, resets: int) -> tuple[int | str, int]:
    async def run() -> tuple[int | str, int]:
        async with resetting(resets) as (host, connections):
            client = outbound(host)
            try:
                answer = await client.request(method, URL(f"http://{host}/records"))
                return answer.status, len(connections)
            except OutboundFailed:
                return "failed", len(connections)
            finally:
                await client.close()

    return asyncio.run(run())


def test_a_read_whose_connection_is_reset_is_tried_again() -> None:
    # aiohttp itself sends a GET once more on a new connection (RFC 9112 section 9.3.1); two
    # resets get past that, and the third connection is crmgate's own retry
    assert reset_then_ok("GET", resets=2) == (200, 3)


def test_a_write_whose_connection_is_reset_is_not_tried_again() -> None:
    assert reset_then_ok("POST", resets=1) == ("failed", 1)


def test_a_read_that_never_connects_fails_after_its_tries() -> None:
    async def run() -> None:
        with socket.socket() as closed:  # a port nothing listens on
            closed.bind(("127.0.0.1", 0))
            port = closed.getsockname()[1]
        client = outbound(f"127.0.0.1:{port}")
        try:
            await client.request("GET", URL(f"http://127.0.0.1:{port}/"))
        finally:
            await client.close()

    with pytest.raises(OutboundFailed, match="could not be reached"):
        asyncio.run(run())


def test_a_retry_is_logged_with_the_host_and_never_the_path_or_query(
    caplog: pytest.LogCaptureFixture,
) -> None:
    script = Script([UNAVAILABLE, OK])

    async def run() -> None:
        async with crm(script) as host:
            client = outbound(host)
            try:
                await client.request("GET", URL(f"http://{host}/persons/ann?api_token=s3cr3t"))
            finally:
                await client.close()

    with caplog.at_level(logging.INFO, logger="crmgate.outbound"):
        asyncio.run(run())
    retries = [r.getMessage() for r in caplog.records if r.name == "crmgate.outbound"]
    assert len(retries) == 1 and "127.0.0.1" in retries[0] and "HTTP 503" in retries[0]
    assert not any(word in retries[0] for word in ("s3cr3t", "api_token", "persons", "ann"))


def test_retry_after_is_delay_seconds_or_an_http_date() -> None:
    now = datetime(2026, 1, 1, 12, 0, 0, tzinfo=UTC)
    later = format_datetime(now + timedelta(seconds=7), usegmt=True)
    earlier = format_datetime(now - timedelta(seconds=7), usegmt=True)
    assert retry_after({"Retry-After": "120"}) == 120.0
    assert retry_after({"Retry-After": later}, now=now.timestamp()) == 7.0
    assert retry_after({"Retry-After": earlier}, now=now.timestamp()) == 0.0
    for unsaid in ({}, {"Retry-After": "soon"}, {"Retry-After": "-5"}, {"Retry-After": "1.5"}):
        assert retry_after(unsaid) is None


def test_full_jitter_waits_from_zero_to_the_doubling_cap() -> None:
    policy = Retrying(base=0.5)
    waits = [policy.backoff(2) for _ in range(200)]
    assert all(0.0 <= w <= 2.0 for w in waits) and max(waits) > 1.0 and min(waits) < 1.0


def test_the_retry_settings_are_read_from_the_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    defaults = Settings(_env_file=None)  # type: ignore[call-arg]
    assert (defaults.outbound_retries, defaults.outbound_retry_budget) == (2, 5.0)
    monkeypatch.setenv("CRMGATE_OUTBOUND_RETRIES", "0")
    monkeypatch.setenv("CRMGATE_OUTBOUND_RETRY_BUDGET", "1.5")
    chosen = Settings(_env_file=None)  # type: ignore[call-arg]
    assert (chosen.outbound_retries, chosen.outbound_retry_budget) == (0, 1.5)
