"""Authentication over real HTTP: every bad key gets the contract's 401 SERVICE_UNAUTHORIZED."""

from __future__ import annotations

import time
from typing import Any

import pytest

from conftest import RunningGateway, create_account, with_services
from crmgate.security import keys
from crmgate.settings import Settings
from crmgate.store.accounts import UserStatus

ERROR_TYPE = "http://www.w3.org/Protocols/rfc2616/rfc2616-sec10.html"


def assert_unauthorized(response: Any) -> None:
    assert response.status_code == 401
    body = response.json()
    assert body["type"] == ERROR_TYPE
    assert body["title"] == "Unauthorized"
    assert body["status"] == 401
    assert body["detail"]["code"] == "SERVICE_UNAUTHORIZED"
    assert body["detail"]["message"]
    assert body["request_id"] == response.headers["x-request-id"]


def test_a_valid_key_is_accepted(settings: Settings, gateway: RunningGateway) -> None:
    account = create_account(settings)
    with gateway.client(account.key) as client:
        response = client.get("/v1/user/list")
    assert response.status_code == 200
    assert [user["key"] for user in response.json()] == [account.user_id]


def test_missing_key(settings: Settings, gateway: RunningGateway) -> None:
    create_account(settings)
    with gateway.client() as client:
        for path in ("/v1/user/list", "/v1/user/count", "/v1/user/usr_x"):
            assert_unauthorized(client.get(path))
        assert_unauthorized(client.post("/v1/user", json={"name": "x", "email": "x@x.example"}))


def test_wrong_key(settings: Settings, gateway: RunningGateway) -> None:
    create_account(settings)
    with gateway.client(keys.generate()) as client:  # well formed, but never issued
        assert_unauthorized(client.get("/v1/user/list"))


@pytest.mark.parametrize(
    "bad",
    ["nonsense", "e2a6379ab878ae7e58119d4ec842bf9c", "cgu_" + "A" * 38, "x" * 5000, "cgu_\u00e9"],
)
def test_malformed_key(settings: Settings, gateway: RunningGateway, bad: str) -> None:
    account = create_account(settings)
    with gateway.client() as client:
        response = client.get("/v1/user/list", headers={"X-API2CRM-USER-KEY": bad.encode("utf-8")})
        assert_unauthorized(response)
        # A typo in a real key is refused too (its checksum no longer matches).
        typo = account.key[:-1] + ("A" if account.key[-1] != "A" else "B")
        assert_unauthorized(client.get("/v1/user/list", headers={"X-API2CRM-USER-KEY": typo}))


def test_revoked_key(settings: Settings, gateway: RunningGateway) -> None:
    account = create_account(settings)
    with gateway.client(account.key) as client:
        assert client.get("/v1/user/list").status_code == 200
        # revoked by another process (the operator's): the gateway's cache hears of it by its
        # poll of the invalidations (crmgate/cache.py), within one second
        with_services(settings, lambda s: s.accounts.revoke_keys(account.user_id))
        deadline = time.monotonic() + 1.0
        while (response := client.get("/v1/user/list")).status_code == 200:
            assert time.monotonic() < deadline, "still accepted a second after its revocation"
            time.sleep(0.02)
        assert_unauthorized(response)


def test_rotated_key_replaces_the_old_one(settings: Settings, gateway: RunningGateway) -> None:
    account = create_account(settings)
    issued = with_services(settings, lambda s: s.accounts.rotate_key(account.user_id))
    with gateway.client(account.key) as client:
        assert_unauthorized(client.get("/v1/user/list"))
    with gateway.client(issued.secret) as client:
        assert client.get("/v1/user/list").status_code == 200


def test_disabled_user_key(settings: Settings, gateway: RunningGateway) -> None:
    account = create_account(settings)

    async def add_and_disable(services: Any) -> str:
        view, key = await services.accounts.create_user(
            account.organisation_id, name="Mo", email="mo@acme.example"
        )
        await services.accounts.update_user(
            account.organisation_id, view.id, {"status": UserStatus.DISABLED}
        )
        return str(key.secret)

    member_key = with_services(settings, add_and_disable)
    with gateway.client(member_key) as client:
        assert_unauthorized(client.get("/v1/user/list"))


def test_key_in_the_query_string_is_not_accepted(
    settings: Settings, gateway: RunningGateway
) -> None:
    account = create_account(settings)
    with gateway.client() as client:
        assert_unauthorized(client.get("/v1/user/list", params={"X-API2CRM-USER-KEY": account.key}))


def test_last_used_at_is_recorded(settings: Settings, gateway: RunningGateway) -> None:
    account = create_account(settings)
    with gateway.client(account.key) as client:
        me = client.get(f"/v1/user/{account.user_id}").json()
    assert me["last_used_at"] is not None
    assert me["last_used_at"].endswith("+00:00")
