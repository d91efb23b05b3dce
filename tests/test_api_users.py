"""/v1/user over real HTTP: the contract's InternalUserEntity operations and who may do what."""

from __future__ import annotations

import time
from typing import Any

import pytest

from conftest import Account, RunningGateway, create_account
from crmgate.settings import Settings


@pytest.fixture
def admin(settings: Settings) -> Account:
    return create_account(settings)


def add_member(
    gateway: RunningGateway, admin: Account, email: str = "mo@acme.example", **extra: Any
) -> tuple[str, str]:
    with gateway.client(admin.key) as client:
        response = client.post("/v1/user", json={"name": "Mo", "email": email, **extra})
    assert response.status_code == 201, response.text
    body = response.json()
    assert response.headers["cache-control"] == "no-store"
    return body["key"], body["user_key"]


def test_admin_creates_a_member_whose_key_works_once_shown(
    gateway: RunningGateway, admin: Account
) -> None:
    member_id, member_key = add_member(gateway, admin, phone="(817) 569-8900")
    assert member_id.startswith("usr_") and member_key.startswith("cgu_")
    with gateway.client(member_key) as client:
        me = client.get(f"/v1/user/{member_id}").json()
    assert me["roles"] == ["member"]
    assert me["email"] == "mo@acme.example"
    assert me["phone"] == "(817) 569-8900"
    assert me["organization"] == "Acme"
    assert me["status"] == "active"
    assert me["user_key_hint"] == member_key[:10]
    assert "user_key" not in me and member_key not in str(me)


def test_list_count_fields_filter_sort_and_paging(gateway: RunningGateway, admin: Account) -> None:
    for index in range(4):
        add_member(gateway, admin, email=f"m{index}@acme.example")
    with gateway.client(admin.key) as client:
        assert client.get("/v1/user/count").json() == {"total": 5}
        first = client.get("/v1/user/list", params={"page_size": 2, "sort": "email"}).json()
        second = client.get(
            "/v1/user/list", params={"page_size": 2, "page": 2, "sort": "email"}
        ).json()
        past = client.get("/v1/user/list", params={"page_size": 2, "page": 9})
        assert [u["email"] for u in first + second] == [
            "admin@acme.example",
            "m0@acme.example",
            "m1@acme.example",
            "m2@acme.example",
        ]
        assert past.status_code == 200 and past.json() == []
        only = client.get("/v1/user/list", params={"fields": "email", "page_size": 1}).json()
        assert set(only[0]) == {"key", "email"}
        matched = client.get(
            "/v1/user/list", params={"filter": "email startswith 'm' and roles eq 'member'"}
        ).json()
        assert len(matched) == 4
        counted = client.get("/v1/user/count", params={"filter": "email eq 'M2@acme.example'"})
        assert counted.json() == {"total": 1}
        descending = client.get("/v1/user/list", params={"sort": "-email", "page_size": 1})
        assert descending.json()[0]["email"] == "m3@acme.example"


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"filter": "email eq"}, "filter"),
        ({"filter": "password eq 'x'"}, "filter"),
        ({"sort": "password"}, "sort"),
        ({"fields": "password"}, "fields"),
    ],
)
def test_bad_query_parameters_get_400_naming_the_parameter(
    gateway: RunningGateway, admin: Account, params: dict[str, str], field: str
) -> None:
    with gateway.client(admin.key) as client:
        response = client.get("/v1/user/list", params=params)
    assert response.status_code == 400
    body = response.json()
    assert body["detail"]["code"] == "NOT_VALID"
    assert body["detail"]["errors"][0]["field"] == field


@pytest.mark.parametrize(
    ("params", "field"),
    [({"page_size": 0}, "page_size"), ({"page_size": 101}, "page_size"), ({"page": "x"}, "page")],
)
def test_paging_limits(
    gateway: RunningGateway, admin: Account, params: dict[str, Any], field: str
) -> None:
    with gateway.client(admin.key) as client:
        response = client.get("/v1/user/list", params=params)
    assert response.status_code == 422
    assert response.json()["detail"]["errors"][0]["field"] == field


def test_update_and_delete(gateway: RunningGateway, admin: Account) -> None:
    member_id, member_key = add_member(gateway, admin)
    with gateway.client(admin.key) as client:
        response = client.put(f"/v1/user/{member_id}", json={"name": "Maureen", "roles": ["admin"]})
        assert response.status_code == 200 and response.json()["key"] == member_id
        assert "user_key" not in response.json()
        user = client.get(f"/v1/user/{member_id}").json()
        assert (user["name"], user["roles"]) == ("Maureen", ["admin"])
        # A GET-modify-PUT round trip works: read-only fields are accepted and ignored.
        user["phone"] = "555"
        user["created_at"] = "1999-01-01T00:00:00+00:00"
        assert client.put(f"/v1/user/{member_id}", json=user).status_code == 200
        again = client.get(f"/v1/user/{member_id}").json()
        assert again["phone"] == "555"
        assert again["created_at"] != "1999-01-01T00:00:00+00:00"
        assert client.delete(f"/v1/user/{member_id}").status_code == 204
        assert client.get(f"/v1/user/{member_id}").status_code == 404
        assert client.delete(f"/v1/user/{member_id}").status_code == 404
    with gateway.client(member_key) as client:
        assert client.get("/v1/user/list").status_code == 401  # deleted with its user


def test_mass_assignment_of_unknown_fields_is_refused(
    gateway: RunningGateway, admin: Account
) -> None:
    with gateway.client(admin.key) as client:
        response = client.put(
            f"/v1/user/{admin.user_id}", json={"name": "X", "organisation_id": "org_other"}
        )
        assert response.status_code == 422
        assert response.json()["detail"]["errors"][0]["field"] == "organisation_id"
        assert client.get(f"/v1/user/{admin.user_id}").json()["name"] == "Admin"


def test_members_see_and_edit_only_themselves(gateway: RunningGateway, admin: Account) -> None:
    member_id, member_key = add_member(gateway, admin)
    other_id, _ = add_member(gateway, admin, email="other@acme.example")
    with gateway.client(member_key) as client:
        assert [u["key"] for u in client.get("/v1/user/list").json()] == [member_id]
        assert client.get("/v1/user/count").json() == {"total": 1}
        assert client.get(f"/v1/user/{other_id}").status_code == 404
        assert client.put(f"/v1/user/{member_id}", json={"phone": "1"}).status_code == 200
        for change in ({"roles": ["admin"]}, {"status": "disabled"}):
            refused = client.put(f"/v1/user/{member_id}", json=change)
            assert refused.status_code == 403
            assert refused.json()["detail"]["code"] == "NOT_ALLOWED"
        assert client.put(f"/v1/user/{other_id}", json={"phone": "1"}).status_code == 404
        created = client.post("/v1/user", json={"name": "X", "email": "x@acme.example"})
        assert created.status_code == 403 and created.json()["detail"]["code"] == "NOT_ALLOWED"
        assert client.delete(f"/v1/user/{other_id}").status_code == 403
        assert client.post(f"/v1/user/{other_id}/key").status_code == 404
    with gateway.client(admin.key) as client:
        assert client.get("/v1/user/count").json() == {"total": 3}  # nothing was created


def test_other_organisations_are_invisible(
    settings: Settings, gateway: RunningGateway, admin: Account
) -> None:
    stranger = create_account(settings, name="Globex", email="boss@globex.example")
    with gateway.client(stranger.key) as client:
        assert [u["key"] for u in client.get("/v1/user/list").json()] == [stranger.user_id]
        for method in ("GET", "PUT", "DELETE"):
            response = client.request(method, f"/v1/user/{admin.user_id}", json={"name": "pwned"})
            assert response.status_code == 404, method
            assert response.json()["detail"]["code"] == "ENTITY_NOT_FOUND"
        assert client.post(f"/v1/user/{admin.user_id}/key").status_code == 404
    with gateway.client(admin.key) as client:
        assert client.get(f"/v1/user/{admin.user_id}").json()["name"] == "Admin"


def test_key_rotation_through_the_api(gateway: RunningGateway, admin: Account) -> None:
    member_id, member_key = add_member(gateway, admin)
    with gateway.client(member_key) as client:
        response = client.post(f"/v1/user/{member_id}/key")
    assert response.status_code == 201
    assert response.headers["cache-control"] == "no-store"
    new_key = response.json()["user_key"]
    with gateway.client(member_key) as client:
        assert client.get("/v1/user/list").status_code == 401
    with gateway.client(new_key) as client:
        assert client.get("/v1/user/list").status_code == 200


def test_duplicate_e_mail_is_a_validation_error(gateway: RunningGateway, admin: Account) -> None:
    with gateway.client(admin.key) as client:
        response = client.post("/v1/user", json={"name": "A", "email": "ADMIN@acme.example"})
    assert response.status_code == 422
    assert response.json()["detail"]["errors"] == [
        {"field": "email", "message": "email: a user with this e-mail already exists"}
    ]


def test_internal_request_count_grows_with_use(gateway: RunningGateway, admin: Account) -> None:
    with gateway.client(admin.key) as client:
        for _ in range(3):
            client.get("/v1/user/count")
        deadline = time.monotonic() + 10
        while True:
            me = client.get(f"/v1/user/{admin.user_id}").json()
            if me["internal_request_count"] >= 3 or time.monotonic() > deadline:
                break
            time.sleep(0.1)
        assert me["internal_request_count"] >= 3
        assert me["request_count"] == 0
        future = client.get(
            f"/v1/user/{admin.user_id}",
            params={
                "application_request_start": "2999-01-01",
                "application_request_end": "2999-01-02",
            },
        ).json()
        assert future["internal_request_count"] == 0
        backwards = client.get(
            "/v1/user/list",
            params={
                "application_request_start": "2020-01-02",
                "application_request_end": "2020-01-01",
            },
        )
        assert backwards.status_code == 400
        for odd in ("0", "1700000000", "2020-1-2", "2020-01-02T00:00:00"):  # days as YYYY-MM-DD
            refused = client.get("/v1/user/list", params={"application_request_start": odd})
            assert refused.status_code == 422, odd
            assert refused.json()["detail"]["errors"][0]["field"] == "application_request_start"
