"""Attacks and odd input found in review: concurrency, odd values, redirects, log masking."""

from __future__ import annotations

import io
import logging
from concurrent.futures import ThreadPoolExecutor

import pytest

from conftest import Account, RunningGateway, create_account
from crmgate.logs import RedactingFilter
from crmgate.security import keys
from crmgate.settings import Settings


@pytest.fixture
def admin(settings: Settings) -> Account:
    return create_account(settings)


def test_parallel_user_creation_all_succeed(gateway: RunningGateway, admin: Account) -> None:
    def create(index: int) -> int:
        with gateway.client(admin.key) as client:
            body = {"name": f"U{index}", "email": f"u{index}@acme.example"}
            return client.post("/v1/user", json=body).status_code

    with ThreadPoolExecutor(max_workers=12) as pool:
        statuses = list(pool.map(create, range(24)))
    assert statuses == [201] * 24
    with gateway.client(admin.key) as client:
        assert client.get("/v1/user/count").json() == {"total": 25}


def test_parallel_rotations_leave_exactly_one_live_key(
    gateway: RunningGateway, admin: Account
) -> None:
    def rotate(_: int) -> tuple[int, str | None]:
        with gateway.client(admin.key) as client:
            response = client.post(f"/v1/user/{admin.user_id}/key")
            return response.status_code, response.json().get("user_key")

    with ThreadPoolExecutor(max_workers=8) as pool:
        results = list(pool.map(rotate, range(8)))
    issued = [key for status, key in results if status == 201 and key]
    assert issued, results
    assert all(status in (201, 401) for status, _ in results)  # 401: its key was rotated away
    live = []
    for key in issued:
        with gateway.client(key) as client:
            if client.get("/v1/user/count").status_code == 200:
                live.append(key)
    assert len(live) == 1


@pytest.mark.parametrize(
    "bad_filter",
    [
        "name eq 5",
        "status eq true",
        "email gt 1.5",
        "name eq 99999999999999999999999999",
        "created_at ge 'yesterday'",
        "created_at contains '2026'",
        "name eq 'a\x01b'",  # NUL is refused before, with 422 (tests/test_text_rule.py)
    ],
)
def test_filter_values_of_the_wrong_type_are_400(
    gateway: RunningGateway, admin: Account, bad_filter: str
) -> None:
    with gateway.client(admin.key) as client:
        response = client.get("/v1/user/list", params={"filter": bad_filter})
    assert response.status_code == 400, response.text
    assert response.json()["detail"]["code"] == "NOT_VALID"


def test_odd_values_never_cause_a_500(gateway: RunningGateway, admin: Account) -> None:
    with gateway.client(admin.key) as client:
        assert client.get("/v1/user/list", params={"page": 2**62}).status_code == 422
        assert client.get("/v1/user/%00").status_code == 422  # no NUL in text (docs/errors.md)
        assert client.get("/v1/user/" + "x" * 5000).status_code == 404
        created = client.post("/v1/user", json={"name": "a\u0000b", "email": "n@acme.example"})
        assert created.status_code == 422
        assert created.json()["detail"]["errors"][0]["field"] == "name"
        bad_utf8 = client.post(
            "/v1/user",
            content=b'{"name": "\xff\xfe"}',
            headers={"content-type": "application/json"},
        )
        assert bad_utf8.status_code == 400
        assert bad_utf8.json()["detail"]["code"] == "MALFORMED_REQUEST"
        deep = b"[" * 100_000 + b"]" * 100_000
        nested = client.post("/v1/user", content=deep, headers={"content-type": "application/json"})
        assert nested.status_code in (400, 422)
        assert client.get("/v1/user/count").json() == {"total": 1}


def test_contains_ignores_case_beyond_ascii(gateway: RunningGateway, admin: Account) -> None:
    with gateway.client(admin.key) as client:
        client.post("/v1/user", json={"name": "Émile Zoë", "email": "emile@acme.example"})
        found = client.get("/v1/user/list", params={"filter": "name contains 'émile zo'"}).json()
    assert [user["name"] for user in found] == ["Émile Zoë"]


def test_a_timestamp_read_back_filters_exactly(gateway: RunningGateway, admin: Account) -> None:
    with gateway.client(admin.key) as client:
        created_at = client.get(f"/v1/user/{admin.user_id}").json()["created_at"]
        for op, expected in (("eq", 1), ("le", 1), ("ge", 1), ("gt", 0), ("lt", 0)):
            params = {"filter": f"created_at {op} '{created_at}'"}
            assert client.get("/v1/user/count", params=params).json() == {"total": expected}, op


def test_no_redirect_built_from_the_host_header(gateway: RunningGateway, admin: Account) -> None:
    with gateway.client(admin.key) as client:
        response = client.get("/v1/user/list/", headers={"Host": "evil.example"})
    assert response.status_code == 404
    assert "location" not in response.headers


def test_no_cross_origin_access_is_granted(gateway: RunningGateway, admin: Account) -> None:
    """No CORS: a page on another origin can neither read an answer nor pass a preflight."""
    origin = {"Origin": "https://evil.example"}
    with gateway.client(admin.key) as client:
        read = client.get("/v1/user/list", headers=origin)
        preflight = client.options(
            "/v1/user/list",
            headers={
                **origin,
                "Access-Control-Request-Method": "GET",
                "Access-Control-Request-Headers": "x-api2crm-user-key",
            },
        )
    assert read.status_code == 200
    for answer in (read, preflight):
        assert not any(name.startswith("access-control-") for name in answer.headers)
    assert preflight.status_code >= 400


def test_a_disabled_user_is_suspended_and_re_enabled_with_the_same_key(
    gateway: RunningGateway, admin: Account
) -> None:
    with gateway.client(admin.key) as client:
        made = client.post("/v1/user", json={"name": "Mo", "email": "mo@acme.example"}).json()
        member_id, member_key = made["key"], made["user_key"]
        client.put(f"/v1/user/{member_id}", json={"status": "disabled"})
        with gateway.client(member_key) as member:
            assert member.get("/v1/user/count").status_code == 401
        client.put(f"/v1/user/{member_id}", json={"status": "active"})
        with gateway.client(member_key) as member:
            assert member.get("/v1/user/count").status_code == 200


def _formatted(record: logging.LogRecord) -> str:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.addFilter(RedactingFilter())
    handler.handle(record)
    return stream.getvalue()


def test_the_log_handler_masks_keys_in_messages_and_exception_chains() -> None:
    key = keys.generate()
    message = logging.LogRecord(
        "t", logging.INFO, __file__, 1, "got %s and user_%s", (key, key), None
    )
    assert key not in _formatted(message) and "cgu_<redacted>" in _formatted(message)
    try:
        try:
            raise ValueError(f"inner {key}")
        except ValueError as inner:
            raise RuntimeError("outer, no key here") from inner
    except RuntimeError:
        import sys

        chained = logging.LogRecord("t", logging.ERROR, __file__, 1, "failed", None, sys.exc_info())
    text = _formatted(chained)
    assert "inner" in text and key not in text
