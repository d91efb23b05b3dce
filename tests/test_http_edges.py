"""The edges of a request: JSON bodies bounded in depth and items, request heads bounded in size
(431 from `crmgate serve`), the API version table (deprecated: headers, log, stricter limit;
retired: 410), and the access log (one line per request, its fields, no secret)."""

from __future__ import annotations

import json
import logging
import re
import secrets
import socket
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from pydantic import ValidationError

from conftest import (
    Account,
    RunningGateway,
    Served,
    create_account,
    make_settings,
    migrate_database,
    serve_process,
)
from crmgate.api.app import create_app
from crmgate.api.bounds import json_shape
from crmgate.settings import Settings


def _gateway(tmp_path: Path, **extra: Any) -> tuple[Settings, Account]:
    settings = make_settings(tmp_path / "data", **extra)
    migrate_database(settings)
    return settings, create_account(settings)


def _error(response: httpx.Response, status: int, code: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    body: dict[str, Any] = response.json()
    assert body["status"] == status and body["detail"]["code"] == code, body
    assert body["request_id"] == response.headers["x-request-id"]
    return body


def _nested(depth: int) -> Any:
    value: Any = "x"
    for _ in range(depth - 1):
        value = [value]
    return {"name": value, "email": "deep@acme.example"}  # the object is one level


def _users(client: httpx.Client) -> int:
    return len(client.get("/v1/user/list").json())


# ---- JSON bodies ---------------------------------------------------------------------------------


def test_json_shape_counts_depth_and_items_and_ignores_strings() -> None:
    assert json_shape(b"[]") == (1, 0)
    assert json_shape(b'{"a": [1, 2]}') == (2, 3)
    assert json_shape(b'{"a": "[[[{,,,}]]] \\" [[ ,"}') == (1, 1)  # brackets inside a string
    assert json_shape(b'"just a string"') == (0, 0)
    assert json_shape(b"[" * 40 + b"]" * 40) == (40, 39)


@pytest.fixture
def bounded(tmp_path: Path) -> Iterator[tuple[RunningGateway, Account]]:
    settings, admin = _gateway(tmp_path, max_json_items=100)
    with RunningGateway(create_app(settings)) as running:
        yield running, admin


def test_a_body_nested_deeper_than_the_limit_is_400_and_changes_nothing(
    bounded: tuple[RunningGateway, Account],
) -> None:
    gateway, admin = bounded
    with gateway.client(admin.key) as client:
        before = _users(client)
        body = _error(client.post("/v1/user", json=_nested(33)), 400, "MALFORMED_REQUEST")
        assert "deeper than 32 levels" in body["detail"]["message"]
        # at the limit the body is read, and the route judges it (a name is no list)
        assert client.post("/v1/user", json=_nested(32)).status_code == 422
        assert _users(client) == before


def test_a_deep_body_sent_in_chunks_without_length_is_refused_too(
    bounded: tuple[RunningGateway, Account],
) -> None:
    gateway, admin = bounded
    text = b'{"name": ' + b"[" * 40 + b"]" * 40 + b', "email": "deep@acme.example"}'
    chunks = iter([text[i : i + 16] for i in range(0, len(text), 16)])
    with gateway.client(admin.key) as client:
        response = client.post(
            "/v1/user", content=chunks, headers={"content-type": "application/json"}
        )
        body = _error(response, 400, "MALFORMED_REQUEST")
        assert "deeper than 32 levels" in body["detail"]["message"]


def test_a_body_with_more_items_than_the_limit_is_413(
    bounded: tuple[RunningGateway, Account],
) -> None:
    gateway, admin = bounded
    with gateway.client(admin.key) as client:
        before = _users(client)
        many = {"name": "Many", "email": "many@acme.example", "x": list(range(100))}
        body = _error(client.post("/v1/user", json=many), 413, "REQUEST_TOO_LARGE")
        assert "more than 100 items" in body["detail"]["message"]
        # brackets and commas inside a string are one item
        one = {"name": "[" * 100 + "," * 99, "email": "one@acme.example"}
        assert client.post("/v1/user", json=one).status_code == 201
        assert _users(client) == before + 1


# ---- the request head: crmgate serve's own HTTP protocol ----------------------------------------


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    """`crmgate serve` as an operator runs it (SQLite, a free loopback port, debug logs)."""
    with serve_process(
        tmp_path_factory.mktemp("serve"),
        CRMGATE_LOG_LEVEL="debug",
        CRMGATE_MAX_HEADER_BYTES="8192",
        CRMGATE_MAX_HEADER_FIELDS="50",
    ) as served:
        yield served


def _raw(port: int, *parts: bytes, pause: float = 0.0) -> bytes:
    """Sends the parts one after the other on one connection; returns all that came back."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as connection:
        for part in parts:
            connection.sendall(part)
            time.sleep(pause)
        answer = b""
        while chunk := connection.recv(65536):
            answer += chunk
    return answer


def _answer(raw: bytes) -> tuple[int, dict[str, Any]]:
    head, _, body = raw.partition(b"\r\n\r\n")
    return int(head.split(b" ", 2)[1]), json.loads(body)


def test_a_header_field_longer_than_the_limit_is_431(served: Served) -> None:
    with httpx.Client(base_url=served.base_url, trust_env=False) as client:
        response = client.get("/v1/user/list", headers={"X-Filler": "a" * 9000})
        assert response.status_code == 431
        assert response.json()["detail"]["code"] == "HEADERS_TOO_LARGE"
        assert "8192 bytes" in response.json()["detail"]["message"]
        # the server lives on, and a normal head is served
        fine = client.get("/v1/user/list", headers={"X-API2CRM-USER-KEY": served.key})
        assert fine.status_code == 200


def test_too_many_header_fields_are_431(served: Served) -> None:
    headers = {f"X-Field-{n}": "1" for n in range(60)}
    response = httpx.get(f"{served.base_url}/v1/user/list", headers=headers, trust_env=False)
    assert response.status_code == 431


def test_a_header_still_arriving_is_refused_once_it_passes_the_limit(served: Served) -> None:
    start = b"GET /v1/user/list HTTP/1.1\r\nHost: x\r\nX-Filler: "
    # one field that never ends, in pieces: refused once the pieces pass 8192 bytes, without
    # waiting for the end of the field (a client could send gigabytes of it)
    answer = _raw(served.port, start, b"a" * 6000, b"a" * 6000, pause=0.3)
    status, body = _answer(answer)
    assert status == 431 and body["detail"]["code"] == "HEADERS_TOO_LARGE"


# ---- the version table ---------------------------------------------------------------------------

DEPRECATED = {
    "v1": {
        "status": "deprecated",
        "deprecated": "2026-11-01",
        "sunset": "2027-06-30T00:00:00Z",
        "limits": "3/minute",
        "link": "https://docs.example/migrate-to-v2",
    }
}


def test_a_current_version_answers_without_deprecation_headers(
    tmp_path: Path,
) -> None:
    settings, admin = _gateway(tmp_path)
    with RunningGateway(create_app(settings)) as gateway, gateway.client(admin.key) as client:
        response = client.get("/v1/user/list")
        assert response.status_code == 200
        for name in ("deprecation", "sunset", "link"):
            assert name not in response.headers


def test_a_deprecated_version_says_so_logs_every_call_and_has_its_own_limit(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    # exact counting: the approximate default may let a fourth call of a minute through
    settings, admin = _gateway(
        tmp_path, api_versions=DEPRECATED, rate_limit_strategy="moving-window"
    )
    other = create_account(settings, "Other", "admin@other.example")
    with RunningGateway(create_app(settings)) as gateway, gateway.client(admin.key) as client:
        answers = [client.get(f"/v1/user/{admin.user_id}") for _ in range(3)]
        for response in answers:
            assert response.status_code == 200
            assert response.headers["deprecation"] == "@" + str(
                int(datetime(2026, 11, 1, tzinfo=UTC).timestamp())
            )
            sunset = parsedate_to_datetime(response.headers["sunset"])
            assert sunset == datetime(2027, 6, 30, tzinfo=UTC)
            assert response.headers["sunset"].endswith("GMT")
            assert response.headers["link"] == (
                '<https://docs.example/migrate-to-v2>; rel="deprecation"; type="text/html"'
            )
        # the fourth call of this key in a minute is over the version's limit
        refused = client.get("/v1/user/list")
        body = _error(refused, 429, "RATE_LIMITED")
        assert "deprecated API v1" in body["detail"]["message"]
        assert 1 <= int(refused.headers["retry-after"]) <= 60
        assert refused.headers["deprecation"] and refused.headers["ratelimit-limit"] == "3"
        # another key has a count of its own; a wrong key is refused as always, never counted
        with gateway.client(other.key) as second:
            assert second.get("/v1/user/list").status_code == 200
        with gateway.client("cgu_" + "A" * 38) as stranger:
            for _ in range(5):
                assert stranger.get("/v1/user/list").status_code == 401

    calls = [r.getMessage() for r in caplog.records if r.name == "crmgate.versions"]
    assert all(r.levelno == logging.WARNING for r in caplog.records if r.name == "crmgate.versions")
    assert len(calls) == 3 + 1 + 1 + 5
    assert calls[0].startswith("deprecated API v1 called: GET /v1/user/{internal_user_id} 200")
    assert f"org={admin.organisation_id}" in calls[0]
    assert admin.user_id not in "".join(calls)  # the route template, not the path


def test_a_retired_version_answers_410_on_every_route(tmp_path: Path) -> None:
    retired = {"v1": {"status": "retired", "sunset": "2026-11-01"}, "v2": {}}
    settings, admin = _gateway(tmp_path, api_versions=retired)
    with RunningGateway(create_app(settings)) as gateway, gateway.client(admin.key) as client:
        for method, path in [
            ("GET", "/v1/user/list"),
            ("POST", "/v1/user"),
            ("DELETE", f"/v1/user/{admin.user_id}"),
            ("GET", "/v1/application/entity/contact/list"),
            ("GET", "/v1/openapi.json"),
            ("GET", "/v1/no/such/route"),
        ]:
            response = client.request(method, path, json={"name": "x"})
            body = _error(response, 410, "GONE")
            assert body["title"] == "Gone"
            assert body["detail"]["message"].startswith("API v1 was retired on 2026-11-01")
            assert "use /v2" in body["detail"]["message"]
            assert parsedate_to_datetime(response.headers["sunset"]).year == 2026
            assert "/docs>" in response.headers["link"]
        assert client.get("/health").status_code == 200
    # nothing was changed (the DELETE above): back on a current v1, the admin is still there
    current = make_settings(tmp_path / "data")
    with RunningGateway(create_app(current)) as again, again.client(admin.key) as client:
        assert client.get(f"/v1/user/{admin.user_id}").status_code == 200


@pytest.mark.parametrize(
    ("table", "complaint"),
    [
        ({"v1": {"status": "deprecated"}}, "needs `deprecated`"),
        (
            {"v1": {"status": "deprecated", "deprecated": "2027-01-01", "sunset": "2026-01-01"}},
            "`sunset` comes before",
        ),
        ({"1": {}}, "not an API version"),
        ({"v1": {"status": "old"}}, "status"),
        ({"v1": {"limits": "lots"}}, "not a list of rate limits"),
        ({"v1": {"sunset": "next year"}}, "sunset"),
    ],
)
def test_a_wrong_version_table_is_refused_with_a_clear_message(
    tmp_path: Path, table: dict[str, Any], complaint: str
) -> None:
    with pytest.raises(ValidationError, match=re.escape(complaint)):
        make_settings(tmp_path, api_versions=table)


# ---- the access log ------------------------------------------------------------------------------

ACCESS = re.compile(
    r"^(?P<method>[A-Z]+) (?P<route>\S+) (?P<status>\d{3}) (?P<ms>\d+\.\d\d)ms "
    r"org=(?P<org>\S+) key=(?P<key>\S+) app=(?P<app>\S+) rid=(?P<rid>\S+)$"
)


def _canaries() -> dict[str, str]:
    return {
        "token": "canary-token-" + secrets.token_hex(12),
        "password": "canary-pass-" + secrets.token_hex(12),
        "secret": "canarysecret" + secrets.token_hex(12),
    }


def _send_canaries(
    client: httpx.Client, user_key: str, app_key: str, user_id: str, canary: dict[str, str]
) -> None:
    """Canary secrets in headers, query strings, bodies and an unmatched path."""
    headers = {
        "Authorization": f"Bearer {canary['token']}",
        "X-API2CRM-APPLICATION-KEY": app_key,
        "Cookie": f"session={canary['secret']}",
    }
    query = {"access_token": canary["token"], "password": canary["password"]}
    client.get(f"/v1/user/{user_id}", headers=headers, params=query)
    client.get("/v1/application/entity/contact/list", headers=headers, params=query)
    client.post(
        "/v1/application",
        headers=headers,
        json={
            "type": "Salesforce",
            "authorization": "user",
            "credential": {"username": "u", "password": canary["password"]},
            "description": canary["secret"],
        },
    )
    client.post("/v1/user", content=b'{"name": "' + canary["password"].encode() + b'"[[[')
    client.get(f"/v1/{canary['secret']}/{canary['token']}", params=query)
    # a secret pasted into the application key header
    client.get("/v1/application/list", headers={"X-API2CRM-APPLICATION-KEY": canary["password"]})
    # a user key sent as a wrong user key
    with httpx.Client(base_url=client.base_url, trust_env=False) as stranger:
        stranger.get("/v1/user/list", headers={"X-API2CRM-USER-KEY": canary["secret"]})
        stranger.get("/v1/user/list", headers={"X-API2CRM-USER-KEY": user_key[:-1] + "x"})


def test_the_access_log_has_one_line_per_request_with_its_fields(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="crmgate.access")
    settings, admin = _gateway(tmp_path)
    app_key = secrets.token_hex(20)
    with RunningGateway(create_app(settings)) as gateway, gateway.client(admin.key) as client:
        client.get(
            f"/v1/user/{admin.user_id}",
            headers={"X-Request-ID": "edge-1", "X-API2CRM-APPLICATION-KEY": app_key},
        )
        client.get("/v1/user/list", headers={"X-Request-ID": "edge-2"})
        client.get(f"/v1/user/{admin.user_id}/nothing-here", headers={"X-Request-ID": "edge-3"})
    lines = [r.getMessage() for r in caplog.records if r.name == "crmgate.access"]
    assert len(lines) == 3
    found = [ACCESS.match(line) for line in lines]
    assert all(found), lines
    one, two, three = (match.groupdict() for match in found if match)
    assert one["method"] == "GET" and one["route"] == "/v1/user/{internal_user_id}"
    assert one["status"] == "200" and float(one["ms"]) > 0
    assert one["org"] == admin.organisation_id
    assert one["key"] == admin.key[:10] and one["app"] == app_key[:8] and one["rid"] == "edge-1"
    assert two["route"] == "/v1/user/list" and two["app"] == "-" and two["rid"] == "edge-2"
    # an unmatched path keeps only the words of crmgate's routes
    assert three["route"] == "/v1/user/*/*" and three["status"] == "404"
    assert admin.user_id not in "\n".join(lines)


def test_no_secret_reaches_any_log_line(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    settings, admin = _gateway(tmp_path, api_versions=DEPRECATED)
    canary = _canaries()
    app_key = secrets.token_hex(20)
    with RunningGateway(create_app(settings)) as gateway, gateway.client(admin.key) as client:
        _send_canaries(client, admin.key, app_key, admin.user_id, canary)
    text = "\n".join(
        f"{record.getMessage()} {record.exc_text or ''} {record.stack_info or ''}"
        for record in caplog.records
        if not record.name.startswith(("httpx", "httpcore"))  # the test's own client
    )
    assert "crmgate.access" in {record.name for record in caplog.records}
    for secret in [admin.key, app_key, *canary.values()]:
        assert secret not in text


def test_no_secret_reaches_the_stderr_of_crmgate_serve(served: Served) -> None:
    canary = _canaries()
    app_key = secrets.token_hex(20)
    with httpx.Client(
        base_url=served.base_url, headers={"X-API2CRM-USER-KEY": served.key}, trust_env=False
    ) as client:
        _send_canaries(client, served.key, app_key, served.user_id, canary)
    deadline = time.monotonic() + 5
    while "rid=" not in served.stderr.read_text() and time.monotonic() < deadline:
        time.sleep(0.1)
    time.sleep(0.3)  # the last lines
    logged = served.stderr.read_text()
    assert "crmgate.access" in logged and "/v1/user/{internal_user_id}" in logged
    for secret in [served.key, app_key, *canary.values()]:
        assert secret not in logged
