"""One error shape everywhere, a request id on every response, nothing internal leaks."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import pytest
from fastapi import FastAPI

from conftest import Account, RunningGateway, create_account, make_settings, migrate_database
from crmgate.api.app import create_app, create_fastapi
from crmgate.api.middleware import RequestContextMiddleware

ERROR_KEYS = {"type", "title", "status", "detail", "request_id"}


def assert_error(response, status: int, code: str) -> dict:  # type: ignore[no-untyped-def]
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/json"
    body = response.json()
    assert set(body) == ERROR_KEYS
    assert body["status"] == status
    assert body["detail"]["code"] == code
    assert body["request_id"] == response.headers["x-request-id"]
    return body  # type: ignore[no-any-return]


@pytest.fixture
def admin(sqlite_settings) -> Account:  # type: ignore[no-untyped-def]
    return create_account(sqlite_settings)


def test_malformed_json_is_400(sqlite_gateway: RunningGateway, admin: Account) -> None:
    with sqlite_gateway.client(admin.key) as client:
        response = client.post(
            "/v1/user", content=b'{"name": "x",', headers={"content-type": "application/json"}
        )
    assert_error(response, 400, "MALFORMED_REQUEST")


def test_a_body_that_is_not_json_is_415(sqlite_gateway: RunningGateway, admin: Account) -> None:
    with sqlite_gateway.client(admin.key) as client:
        response = client.post("/v1/user", data={"name": "x", "email": "x@acme.example"})
    body = assert_error(response, 415, "UNSUPPORTED_MEDIA_TYPE")
    assert "application/json" in body["detail"]["message"]


def test_validation_failure_is_422_naming_the_field(
    sqlite_gateway: RunningGateway, admin: Account
) -> None:
    with sqlite_gateway.client(admin.key) as client:
        response = client.post("/v1/user", json={"name": "x", "email": "not-an-address"})
        missing = client.post("/v1/user", json={"email": "x@acme.example"})
    body = assert_error(response, 422, "NOT_VALID")
    assert body["detail"]["errors"][0]["field"] == "email"
    assert "email" in body["detail"]["message"]
    assert assert_error(missing, 422, "NOT_VALID")["detail"]["errors"][0]["field"] == "name"
    with sqlite_gateway.client(admin.key) as client:
        assert client.get("/v1/user/count").json() == {"total": 1}  # nothing was created


def test_unknown_route_is_404(sqlite_gateway: RunningGateway, admin: Account) -> None:
    with sqlite_gateway.client(admin.key) as client:
        assert_error(client.get("/v1/no/such/route"), 404, "NOT_FOUND")
        assert_error(client.get("/nothing"), 404, "NOT_FOUND")


def test_wrong_method_is_405_with_allow(sqlite_gateway: RunningGateway, admin: Account) -> None:
    with sqlite_gateway.client(admin.key) as client:
        response = client.patch("/v1/user/list")
    assert_error(response, 405, "METHOD_NOT_ALLOWED")
    assert "GET" in response.headers["allow"]
    with sqlite_gateway.client(admin.key) as client:  # every method of the path, not one
        several = client.options(f"/v1/user/{admin.user_id}")
    assert several.status_code == 405 and several.headers["allow"] == "DELETE, GET, PUT"
    with sqlite_gateway.client(admin.key) as client:  # the literal path, not /user/{id}
        literal = client.options("/v1/user/count")
    assert literal.headers["allow"] == "GET"


def test_a_405_is_answered_without_building_the_api_document(sqlite_settings) -> None:  # type: ignore[no-untyped-def]
    """Allow comes from the route table: building the document takes seconds of the event loop,
    which no caller's wrong method may make a process spend."""
    app = create_app(sqlite_settings)
    inner = app
    while not isinstance(inner, FastAPI):
        inner = inner.app  # type: ignore[attr-defined]
    with RunningGateway(app) as gateway, gateway.client() as client:
        refused = client.delete("/v1/platform/list")
    assert refused.status_code == 405 and refused.headers["allow"] == "GET"
    assert inner.openapi_schema is None


def test_request_id_is_generated_or_echoed(sqlite_gateway: RunningGateway, admin: Account) -> None:
    with sqlite_gateway.client(admin.key) as client:
        generated = client.get("/v1/user/list").headers["x-request-id"]
        echoed = client.get("/v1/user/list", headers={"X-Request-ID": "trace-42.a"})
        hostile = client.get("/v1/user/list", headers={"X-Request-ID": "<script>" + "x" * 100})
        docs = client.get("/docs")
    assert len(generated) == 32
    assert echoed.headers["x-request-id"] == "trace-42.a"
    assert "<" not in hostile.headers["x-request-id"] and len(hostile.headers["x-request-id"]) == 32
    assert docs.headers["x-request-id"]


def test_security_headers(sqlite_gateway: RunningGateway, admin: Account) -> None:
    with sqlite_gateway.client(admin.key) as client:
        response = client.get("/v1/user/list")
    assert response.headers["x-content-type-options"] == "nosniff"
    assert response.headers["cache-control"] == "no-store"
    assert "server" not in response.headers
    assert "access-control-allow-origin" not in response.headers


@pytest.fixture
def failing_gateway(tmp_path) -> Iterator[RunningGateway]:  # type: ignore[no-untyped-def]
    settings = make_settings(tmp_path / "data")
    migrate_database(settings)
    app = create_fastapi(settings)

    @app.get("/v1/explode")
    async def explode() -> None:
        raise RuntimeError("internal detail: SELECT secret FROM vault")

    with RunningGateway(RequestContextMiddleware(app)) as running:
        yield running


def test_unexpected_failure_is_500_without_internals(
    failing_gateway: RunningGateway, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.ERROR, logger="crmgate.error"):
        with failing_gateway.client() as client:
            response = client.get("/v1/explode")
    body = assert_error(response, 500, "INTERNAL_ERROR")
    assert body["request_id"] in body["detail"]["message"]
    assert "internal detail" not in response.text and "Traceback" not in response.text
    # The operator gets the traceback, tagged with the same request id.
    logged = [r for r in caplog.records if r.name == "crmgate.error"]
    assert logged and body["request_id"] in logged[0].getMessage()
    assert logged[0].exc_info is not None


def test_an_oversized_body_is_413(sqlite_gateway: RunningGateway, admin: Account) -> None:
    with sqlite_gateway.client(admin.key) as client:
        response = client.post(
            "/v1/user", json={"name": "x" * 1_100_000, "email": "big@acme.example"}
        )
        assert_error(response, 413, "REQUEST_TOO_LARGE")
        assert client.get("/v1/user/count").json() == {"total": 1}


def test_a_chunked_body_over_the_limit_is_413(
    sqlite_gateway: RunningGateway, admin: Account
) -> None:
    def chunks() -> Iterator[bytes]:
        yield b'{"name": "'
        for _ in range(300):
            yield b"x" * 4096
        yield b'", "email": "big@acme.example"}'

    with sqlite_gateway.client(admin.key) as client:
        response = client.post(
            "/v1/user", content=chunks(), headers={"content-type": "application/json"}
        )
    assert_error(response, 413, "REQUEST_TOO_LARGE")
