"""`crmgate serve`'s connections on loopback: a head or a body that takes too long is cut off
(slowloris), connections beyond the bound are refused at once, and a request that is not HTTP is
answered in the contract's error shape."""

from __future__ import annotations

import contextlib
import json
import resource
import selectors
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from conftest import Served, serve_process

HEADER_TIMEOUT = 1.0
BODY_TIMEOUT = 1.0
MAX_CONNECTIONS = 16
# how late a cut may come on a busy two-core test machine
SLACK = 2.0


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    """`crmgate serve` with small timeouts and a small connection bound."""
    with serve_process(
        tmp_path_factory.mktemp("connections"),
        CRMGATE_HEADER_TIMEOUT=str(HEADER_TIMEOUT),
        CRMGATE_BODY_TIMEOUT=str(BODY_TIMEOUT),
        CRMGATE_MAX_CONNECTIONS=str(MAX_CONNECTIONS),
    ) as served:
        yield served


def _connect(port: int, *parts: bytes) -> socket.socket:
    connection = socket.create_connection(("127.0.0.1", port), timeout=10)
    for part in parts:
        connection.sendall(part)
    return connection


def _until_closed(connections: list[socket.socket], started: float) -> list[tuple[float, bytes]]:
    """For each connection, when the server closed it (seconds after ``started``) and what it
    sent before; all are watched at once, so each time is the time of its own close."""
    results: dict[socket.socket, tuple[float, bytes]] = {}
    received = {connection: b"" for connection in connections}
    with selectors.DefaultSelector() as selector:
        for connection in connections:
            selector.register(connection, selectors.EVENT_READ)
        deadline = started + HEADER_TIMEOUT + BODY_TIMEOUT + 2 * SLACK
        while len(results) < len(connections) and time.monotonic() < deadline:
            for key, _ in selector.select(timeout=0.1):
                connection = key.fileobj
                assert isinstance(connection, socket.socket)
                try:
                    chunk = connection.recv(65536)
                except ConnectionResetError:
                    chunk = b""
                if chunk:
                    received[connection] += chunk
                else:
                    results[connection] = (time.monotonic() - started, received[connection])
                    selector.unregister(connection)
    for connection in connections:
        connection.close()
    assert len(results) == len(connections), "a connection was still open"
    return [results[connection] for connection in connections]


def _answer(raw: bytes) -> tuple[int, dict[str, str], dict[str, Any]]:
    head, _, body = raw.partition(b"\r\n\r\n")
    status_line, *fields = head.decode().split("\r\n")
    headers = {k.lower(): v.strip() for k, _, v in (f.partition(":") for f in fields)}
    return int(status_line.split(" ", 2)[1]), headers, json.loads(body)


def _contract_error(raw: bytes, status: int, code: str) -> dict[str, Any]:
    got, headers, body = _answer(raw)
    assert got == status, raw
    assert headers["content-type"] == "application/json"
    assert headers["connection"] == "close"
    assert body["status"] == status and body["detail"]["code"] == code, body
    assert set(body) >= {"type", "title", "status", "detail"} and body["detail"]["message"]
    return body


# ---- slow clients --------------------------------------------------------------------------------

HEAD = b"GET /v1/user/list HTTP/1.1\r\nHost: gateway\r\n"


def test_half_open_requests_are_cut_off_on_time_while_others_are_served(served: Served) -> None:
    started = time.monotonic()
    silent = [_connect(served.port) for _ in range(3)]  # connected, nothing sent
    heads = [_connect(served.port, HEAD, b"X-Half: wa") for _ in range(3)]
    body = (
        b"POST /v1/user HTTP/1.1\r\nHost: gateway\r\nContent-Type: application/json\r\n"
        b"Content-Length: 100\r\nX-API2CRM-USER-KEY: " + served.key.encode() + b"\r\n\r\n{"
    )
    bodies = [_connect(served.port, body) for _ in range(3)]  # 1 of 100 bytes
    # while they hang, the gateway answers everyone else
    with httpx.Client(base_url=served.base_url, timeout=5, trust_env=False) as client:
        assert client.get("/health").status_code == 200
        listed = client.get("/v1/user/list", headers={"X-API2CRM-USER-KEY": served.key})
        assert listed.status_code == 200, listed.text
    closed = _until_closed(silent + heads + bodies, started)
    for elapsed, _ in closed:
        assert HEADER_TIMEOUT * 0.8 <= elapsed <= HEADER_TIMEOUT + SLACK, closed
    assert all(raw == b"" for _, raw in closed[:3])  # nothing was asked: closed without a word
    for _, raw in closed[3:]:
        answer = _contract_error(raw, 408, "REQUEST_TIMEOUT")
        assert answer["title"] == "Request Timeout"


def test_a_head_trickling_in_is_cut_off_when_its_time_is_up(served: Served) -> None:
    # classic slowloris: one more header field now and then, each long before any idle timeout
    started = time.monotonic()
    raw = b""
    with _connect(served.port, HEAD) as connection, selectors.DefaultSelector() as answered:
        answered.register(connection, selectors.EVENT_READ)
        # (a field sent as the gateway closes is refused with a reset, after its answer)
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            while time.monotonic() - started < HEADER_TIMEOUT + SLACK:
                if answered.select(timeout=0.2):
                    break
                connection.sendall(b"X-Still-Here: 1\r\n")
            while chunk := connection.recv(65536):
                raw += chunk
    elapsed = time.monotonic() - started
    assert HEADER_TIMEOUT * 0.8 <= elapsed <= HEADER_TIMEOUT + SLACK
    _contract_error(raw, 408, "REQUEST_TIMEOUT")


def test_a_slow_but_steady_body_is_served(served: Served) -> None:
    # the body's clock is the time between two pieces, not the whole body
    body = json.dumps({"name": "Slow Sender", "email": "slow@acme.example"}).encode()
    size = len(body) // 4 + 1
    pieces = [body[i : i + size] for i in range(0, len(body), size)]  # 4 pieces, 2 s
    head = (
        b"POST /v1/user HTTP/1.1\r\nHost: gateway\r\nContent-Type: application/json\r\n"
        b"Content-Length: " + str(len(body)).encode() + b"\r\n"
        b"X-API2CRM-USER-KEY: " + served.key.encode() + b"\r\nConnection: close\r\n\r\n"
    )
    started = time.monotonic()
    with _connect(served.port, head) as connection:
        for piece in pieces:
            time.sleep(BODY_TIMEOUT / 2)
            connection.sendall(piece)
        raw = b""
        while chunk := connection.recv(65536):
            raw += chunk
    assert time.monotonic() - started > BODY_TIMEOUT * 1.5  # longer than one body timeout
    status, _, created = _answer(raw)
    assert status == 201, raw
    assert created["user_key"]


def test_an_idle_keep_alive_connection_is_not_cut_by_the_head_timeout(served: Served) -> None:
    # between two requests the keep-alive timeout (5 s) applies, not the head timeout
    request = HEAD + b"X-API2CRM-USER-KEY: " + served.key.encode() + b"\r\n\r\n"
    with _connect(served.port) as connection:
        for pause in (0, HEADER_TIMEOUT * 1.5):
            time.sleep(pause)
            connection.sendall(request)
            answer = connection.makefile("rb")
            assert answer.readline().startswith(b"HTTP/1.1 200")
            length = 0
            while (line := answer.readline()) != b"\r\n":
                name, _, value = line.partition(b":")
                if name.lower() == b"content-length":
                    length = int(value)
            assert len(answer.read(length)) == length
            answer.close()


# ---- the connection bound ------------------------------------------------------------------------


def test_connections_beyond_the_bound_are_refused_at_once(served: Served) -> None:
    held = [_connect(served.port) for _ in range(MAX_CONNECTIONS - 1)]
    try:
        # the last one within the bound is served ...
        with _connect(served.port, b"GET /health HTTP/1.1\r\nHost: gateway\r\n\r\n") as last:
            assert last.recv(65536).startswith(b"HTTP/1.1 200")
            # ... and one more is refused before the head timeout could have freed anything
            started = time.monotonic()
            with _connect(served.port) as refused:
                raw = b""
                while chunk := refused.recv(65536):
                    raw += chunk
            assert time.monotonic() - started < HEADER_TIMEOUT / 2
            _contract_error(raw, 503, "SERVICE_UNAVAILABLE")
    finally:
        for connection in held:
            connection.close()
    # once they are gone, new connections are served again
    deadline = time.monotonic() + 5
    while True:
        try:
            if httpx.get(f"{served.base_url}/health", timeout=2, trust_env=False).is_success:
                break
        except httpx.TransportError:
            pass
        assert time.monotonic() < deadline, "no connection was served after the others closed"
        time.sleep(0.05)


# ---- requests that are not HTTP ------------------------------------------------------------------


@pytest.mark.parametrize(
    "request_bytes",
    [
        pytest.param(b"THIS IS NOT HTTP\r\n\r\n", id="request-line"),
        pytest.param(b"GET /health HTTP/1.1\r\nHost gateway\r\n\r\n", id="header-without-colon"),
        pytest.param(
            b"POST /v1/user HTTP/1.1\r\nHost: gateway\r\nTransfer-Encoding: chunked\r\n\r\n"
            b"zz\r\nnot a chunk\r\n0\r\n\r\n",
            id="chunk-size",
        ),
    ],
)
def test_a_malformed_request_is_answered_400_in_the_contract_shape(
    served: Served, request_bytes: bytes
) -> None:
    with _connect(served.port, request_bytes) as connection:
        raw = b""
        while chunk := connection.recv(65536):
            raw += chunk
    body = _contract_error(raw, 400, "MALFORMED_REQUEST")
    assert body["title"] == "Bad Request"


@pytest.mark.parametrize(
    ("soft", "hard", "expected"),
    [
        pytest.param(256, resource.getrlimit(resource.RLIMIT_NOFILE)[1], 1256, id="raised"),
        pytest.param(256, 512, 512, id="hard-limit-too-low"),
    ],
)
def test_the_open_file_limit_is_raised_to_fit_the_connection_bound(
    soft: int, hard: int, expected: int
) -> None:
    if hard != resource.RLIM_INFINITY and hard < expected:
        pytest.skip(f"this machine's hard limit of open files is {hard}")
    code = (
        "import resource\n"
        f"resource.setrlimit(resource.RLIMIT_NOFILE, ({soft}, {hard}))\n"
        "from crmgate.api.connections import fit_open_files\n"
        "fit_open_files(1000)\n"
        "print(resource.getrlimit(resource.RLIMIT_NOFILE)[0])\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert int(result.stdout) == expected
    assert ("CRMGATE_MAX_CONNECTIONS=1000 needs about 1256" in result.stderr) == (expected < 1256)
