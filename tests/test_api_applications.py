"""/v1/platform and /v1/application over real HTTP, with Salesforce played by the simulator."""

from __future__ import annotations

import re
from typing import Any

import pytest

from conftest import Account, RunningGateway, SalesforceSim, create_account, with_services
from crmgate.settings import Settings


@pytest.fixture
def admin(crm_settings: Settings) -> Account:
    return create_account(crm_settings)


def oauth_credential(sim: SalesforceSim, *, refresh: bool = True) -> dict[str, str]:
    user = sim.simulator.add_user(
        f"u{len(sim.simulator.users)}@acme.example", "pw", name="Ada King"
    )
    credential = {"instance_url": sim.base_url, "access_token": sim.simulator.issue_session(user)}
    if refresh:
        credential["refresh_token"] = sim.simulator.issue_refresh_token(user)
    return credential


def connect(gateway: RunningGateway, key: str, body: dict[str, Any]) -> Any:
    with gateway.client(key) as client:
        return client.post("/v1/application", json=body)


def connect_external(
    gateway: RunningGateway, key: str, sim: SalesforceSim, credential: dict[str, str] | None = None
) -> Any:
    """Connect an oAuth-external-refresh Salesforce application (a fresh user unless given)."""
    body = {
        "type": "Salesforce",
        "authorization": "oAuth-external-refresh",
        "credential": credential or oauth_credential(sim, refresh=False),
    }
    return connect(gateway, key, body)


# ---- platforms ----------------------------------------------------------------------------------


def test_platforms_list_their_authorization_types_and_fields(
    crm_gateway: RunningGateway, admin: Account
) -> None:
    with crm_gateway.client(admin.key) as client:
        listed = client.get("/v1/platform/list").json()
        one = client.get("/v1/platform/Salesforce").json()
        second = client.get("/v1/platform/list", params={"page_size": 1, "page": 2}).json()
        names = client.get("/v1/platform/list", params={"fields": "name", "sort": "-type"}).json()
        assert client.get("/v1/platform/SugarCRM").status_code == 404  # no connector yet
        assert client.get("/v1/platform/Nope").status_code == 404
    assert [p["type"] for p in listed] == [
        "AmoCRM",
        "Bitrix24",
        "CloseIO",
        "GSuite",
        "HubSpot",
        "Infusionsoft",
        "MicrosoftDynamics",
        "Pipedrive",
        "Salesforce",
        "SalesforceSandbox",
        "ZohoCRM",
    ]
    assert [p["type"] for p in second] == ["Bitrix24"]
    assert names[:3] == [
        {"type": "ZohoCRM", "name": "Zoho CRM"},
        {"type": "SalesforceSandbox", "name": "Salesforce Sandbox"},
        {"type": "Salesforce", "name": "Salesforce"},
    ]
    kinds = {a["type"]: a for a in one["authorization"]}
    assert set(kinds) == {"oAuth-internal", "oAuth-external-refresh", "user"}
    fields = {f["name"]: f for f in kinds["user"]["platform_credential"]}
    assert fields["login"] == {
        "name": "login",
        "label": "User name",
        "type": "email",
        "required": True,
        "secret": False,
    }
    assert fields["password"]["secret"] is True and fields["security_token"]["required"] is False


# ---- create, read, update, delete -------------------------------------------------------------


@pytest.mark.parametrize("authorization", ["oAuth-internal", "oAuth-external-refresh", "user"])
def test_every_authorization_type_connects(
    crm_gateway: RunningGateway, admin: Account, salesforce: SalesforceSim, authorization: str
) -> None:
    if authorization == "user":
        user = salesforce.simulator.add_user("bo@acme.example", "pw", security_token="TKN")
        credential = {"login": user.username, "password": "pw", "security_token": "TKN"}
        expected_user = user
    else:
        credential = oauth_credential(salesforce, refresh=authorization == "oAuth-internal")
        expected_user = next(iter(salesforce.simulator.users.values()))
    response = connect(
        crm_gateway,
        admin.key,
        {
            "type": "Salesforce",
            "authorization": authorization,
            "credential": credential,
            "description": "EMEA sales",
        },
    )
    assert response.status_code == 201, response.text
    key = response.json()["key"]
    assert re.fullmatch(r"[0-9a-f]{40}", key)
    with crm_gateway.client(admin.key) as client:
        app = client.get(f"/v1/application/{key}").json()
        listed = client.get("/v1/application/list").json()
        counted = client.get("/v1/application/count").json()
    assert app["type"] == "Salesforce" and app["authorization"] == authorization
    assert app["is_authorized"] is True and app["description"] == "EMEA sales"
    assert app["me"]["id"] == expected_user.id
    assert app["company"] == {"id": salesforce.simulator.org_id}
    assert app["url"] == salesforce.base_url
    assert app["user_key"] == admin.user_id
    assert app["requests_limit"]["is_exceeded"] is False
    public = (
        {"login": user.username}
        if authorization == "user"
        else {"instance_url": salesforce.base_url}
    )
    if authorization == "user":
        public["instance_url"] = salesforce.base_url
    assert app["credential"] == public
    assert [a["key"] for a in listed] == [key] and counted == {"total": 1}
    for secret in (v for k, v in credential.items() if k not in ("instance_url", "login")):
        assert secret not in str(app) + str(listed)


@pytest.mark.parametrize(
    ("body", "status", "code", "field"),
    [
        ({"authorization": "key"}, 422, "NOT_VALID", "authorization"),
        ({"authorization": "magic"}, 422, "NOT_VALID", "authorization"),
        ({"type": "Nope"}, 422, "NOT_VALID", "type"),
        ({"type": "SugarCRM"}, 403, "NOT_SUPPORTED", None),
        ({"credential": {"access_token": "t"}}, 422, "NOT_VALID", "credential.instance_url"),
        (
            {"credential": {"instance_url": "https://x.example", "access_token": "t"}},
            422,
            "NOT_VALID",
            "credential.instance_url",
        ),
        ({"extra": {"credential": {"api_key": "k"}}}, 422, "NOT_VALID", "credential.api_key"),
        (
            {"credential": {"instance_url": 5, "access_token": "t"}},
            422,
            "NOT_VALID",
            "credential.instance_url",
        ),
        ({"organisation_id": "org_other"}, 422, "NOT_VALID", "organisation_id"),
    ],
)
def test_bad_applications_are_refused_and_nothing_is_stored(
    crm_gateway: RunningGateway,
    admin: Account,
    salesforce: SalesforceSim,
    body: dict[str, Any],
    status: int,
    code: str,
    field: str | None,
) -> None:
    good = {
        "type": "Salesforce",
        "authorization": "oAuth-external-refresh",
        "credential": oauth_credential(salesforce, refresh=False),
    }
    body = dict(body)  # parametrize shares the dict between backends
    extra = body.pop("extra", None)
    request = {**good, **body}
    if extra:
        request["credential"] = {**good["credential"], **extra["credential"]}
    response = connect(crm_gateway, admin.key, request)
    assert response.status_code == status, response.text
    detail = response.json()["detail"]
    assert detail["code"] == code
    if field:
        assert detail["errors"][0]["field"] == field
    with crm_gateway.client(admin.key) as client:
        assert client.get("/v1/application/count").json() == {"total": 0}
    assert ("GET", "/services/oauth2/userinfo") not in salesforce.simulator.calls


def test_credentials_the_crm_refuses_are_401_and_not_stored(
    crm_gateway: RunningGateway, admin: Account, salesforce: SalesforceSim
) -> None:
    salesforce.simulator.add_user("bo@acme.example", "pw", security_token="TKN")
    refused = connect(
        crm_gateway,
        admin.key,
        {
            "type": "Salesforce",
            "authorization": "user",
            "credential": {"login": "bo@acme.example", "password": "wrong"},
        },
    )
    assert refused.status_code == 401
    assert refused.json()["detail"]["code"] == "UNAUTHORIZED"
    assert "Invalid username" in refused.json()["detail"]["message"]
    bad_token = connect(
        crm_gateway,
        admin.key,
        {
            "type": "Salesforce",
            "authorization": "oAuth-external-refresh",
            "credential": {"instance_url": salesforce.base_url, "access_token": "00Dexpired"},
        },
    )
    assert bad_token.status_code == 401 and "Bad_OAuth_Token" in bad_token.text
    with crm_gateway.client(admin.key) as client:
        assert client.get("/v1/application/count").json() == {"total": 0}


def test_put_replaces_the_access_token_after_checking_it(
    crm_settings: Settings, crm_gateway: RunningGateway, admin: Account, salesforce: SalesforceSim
) -> None:
    credential = oauth_credential(salesforce, refresh=False)
    key = connect_external(crm_gateway, admin.key, salesforce, credential).json()["key"]
    user = next(iter(salesforce.simulator.users.values()))
    fresh = salesforce.simulator.issue_session(user)
    with crm_gateway.client(admin.key) as client:
        refused = client.put(f"/v1/application/{key}", json={"credential": {"access_token": "bad"}})
        assert refused.status_code == 401
        stored = with_services(
            crm_settings, lambda s: s.applications.store.credentials(admin.organisation_id, key)
        )
        assert stored[1].fields["access_token"] == credential["access_token"]  # unchanged
        accepted = client.put(
            f"/v1/application/{key}", json={"credential": {"access_token": fresh}}
        )
        assert accepted.status_code == 200 and accepted.json() == {"key": key}
        stored = with_services(
            crm_settings, lambda s: s.applications.store.credentials(admin.organisation_id, key)
        )
        assert stored[1].fields == {"instance_url": salesforce.base_url, "access_token": fresh}
        calls = len(salesforce.simulator.calls)
        assert (
            client.put(f"/v1/application/{key}", json={"description": "renamed"}).status_code == 200
        )
        assert len(salesforce.simulator.calls) == calls  # a description needs no CRM call
        assert client.get(f"/v1/application/{key}").json()["description"] == "renamed"
        moved = client.put(f"/v1/application/{key}", json={"type": "SalesforceSandbox"})
        assert moved.status_code == 422


def test_delete_revokes_the_refresh_token_at_the_crm(
    crm_gateway: RunningGateway, admin: Account, salesforce: SalesforceSim
) -> None:
    credential = oauth_credential(salesforce)
    key = connect(
        crm_gateway,
        admin.key,
        {
            "type": "Salesforce",
            "authorization": "oAuth-internal",
            "credential": credential,
        },
    ).json()["key"]
    assert credential["refresh_token"] in salesforce.simulator.refresh_tokens
    with crm_gateway.client(admin.key) as client:
        assert client.delete(f"/v1/application/{key}").status_code == 204
        assert client.get(f"/v1/application/{key}").status_code == 404
        assert client.delete(f"/v1/application/{key}").status_code == 404
    assert credential["refresh_token"] not in salesforce.simulator.refresh_tokens
    assert ("POST", "/services/oauth2/revoke") in salesforce.simulator.calls


def test_another_organisation_gets_404_on_every_route(
    crm_settings: Settings, crm_gateway: RunningGateway, admin: Account, salesforce: SalesforceSim
) -> None:
    key = connect_external(crm_gateway, admin.key, salesforce).json()["key"]
    stranger = create_account(crm_settings, name="Globex", email="boss@globex.example")
    with crm_gateway.client(stranger.key) as client:
        assert client.get("/v1/application/list").json() == []
        assert client.get("/v1/application/count").json() == {"total": 0}
        for method, body in (("GET", None), ("PUT", {"description": "x"}), ("DELETE", None)):
            response = client.request(method, f"/v1/application/{key}", json=body)
            assert response.status_code == 404, method
            assert response.json()["detail"]["code"] == "ENTITY_NOT_FOUND"
        unknown = client.get("/v1/application/" + "0" * 40)
        assert unknown.json()["detail"] == client.get(f"/v1/application/{key}").json()["detail"]
    with crm_gateway.client(admin.key) as client:
        assert client.get(f"/v1/application/{key}").json()["description"] == ""


def test_members_read_but_only_admins_manage(
    crm_gateway: RunningGateway, admin: Account, salesforce: SalesforceSim
) -> None:
    body = {
        "type": "Salesforce",
        "authorization": "oAuth-external-refresh",
        "credential": oauth_credential(salesforce, refresh=False),
    }
    key = connect(crm_gateway, admin.key, body).json()["key"]
    with crm_gateway.client(admin.key) as client:
        member_key = client.post("/v1/user", json={"name": "M", "email": "m@acme.example"}).json()[
            "user_key"
        ]
    with crm_gateway.client(member_key) as client:
        assert client.get(f"/v1/application/{key}").status_code == 200
        assert client.get("/v1/application/list").status_code == 200
        assert client.post("/v1/application", json=body).status_code == 403
        assert client.put(f"/v1/application/{key}", json={"description": "x"}).status_code == 403
        assert client.delete(f"/v1/application/{key}").status_code == 403


def test_the_application_limit(tmp_path: Any, database: Any, salesforce: SalesforceSim) -> None:
    from conftest import make_settings, migrate_database
    from crmgate.api.app import create_app

    settings = make_settings(
        tmp_path / "limited",
        database.url,
        platform_overrides=salesforce.overrides(),
        outbound_ca_file=salesforce.ca_file,
        max_applications=2,
    )
    migrate_database(settings)
    owner = create_account(settings)
    with RunningGateway(create_app(settings)) as gateway:
        statuses = []
        for _ in range(3):
            body = {
                "type": "Salesforce",
                "authorization": "oAuth-external-refresh",
                "credential": oauth_credential(salesforce, refresh=False),
            }
            response = connect(gateway, owner.key, body)
            statuses.append((response.status_code, response.json().get("detail", {}).get("code")))
    assert statuses == [(201, None), (201, None), (403, "SERVICE_CONNECTED_APPLICATIONS_LIMIT")]


def test_filters_and_sorts_on_applications(
    crm_gateway: RunningGateway, admin: Account, salesforce: SalesforceSim
) -> None:
    for description in ("b-team", "a-team"):
        connect(
            crm_gateway,
            admin.key,
            {
                "type": "Salesforce",
                "authorization": "oAuth-external-refresh",
                "credential": oauth_credential(salesforce, refresh=False),
                "description": description,
            },
        )
    with crm_gateway.client(admin.key) as client:
        ordered = client.get("/v1/application/list", params={"sort": "description"}).json()
        found = client.get(
            "/v1/application/count",
            params={"filter": "description eq 'a-team' and is_authorized eq true"},
        )
        bad = client.get("/v1/application/list", params={"filter": "is_authorized eq 'yes'"})
    assert [a["description"] for a in ordered] == ["a-team", "b-team"]
    assert found.json() == {"total": 1}
    assert bad.status_code == 400


def test_stored_secrets_never_follow_a_new_instance_url(
    crm_settings: Settings, crm_gateway: RunningGateway, admin: Account, salesforce: SalesforceSim
) -> None:
    credential = oauth_credential(salesforce, refresh=False)
    key = connect_external(crm_gateway, admin.key, salesforce, credential).json()["key"]
    calls = len(salesforce.simulator.calls)
    with crm_gateway.client(admin.key) as client:
        moved = client.put(
            f"/v1/application/{key}",
            json={
                "credential": {
                    "instance_url": salesforce.base_url.replace("127.0.0.1", "localhost")
                }
            },
        )
        assert moved.status_code == 422, moved.text
        assert moved.json()["detail"]["errors"][0]["field"] == "credential.access_token"
        with_path = client.put(
            f"/v1/application/{key}",
            json={
                "credential": {
                    "instance_url": salesforce.base_url + "/services/apexrest/x",
                    "access_token": "t",
                }
            },
        )
        assert with_path.status_code == 422
    assert len(salesforce.simulator.calls) == calls  # the stored token went nowhere


def test_switching_away_from_oauth_internal_revokes_the_old_refresh_token(
    crm_gateway: RunningGateway, admin: Account, salesforce: SalesforceSim
) -> None:
    credential = oauth_credential(salesforce)
    key = connect(
        crm_gateway,
        admin.key,
        {
            "type": "Salesforce",
            "authorization": "oAuth-internal",
            "credential": credential,
        },
    ).json()["key"]
    user = next(iter(salesforce.simulator.users.values()))
    with crm_gateway.client(admin.key) as client:
        response = client.put(
            f"/v1/application/{key}",
            json={
                "authorization": "oAuth-external-refresh",
                "credential": {
                    "instance_url": salesforce.base_url,
                    "access_token": salesforce.simulator.issue_session(user),
                },
            },
        )
        assert response.status_code == 200, response.text
        assert (
            client.get(f"/v1/application/{key}").json()["authorization"] == "oAuth-external-refresh"
        )
    assert credential["refresh_token"] not in salesforce.simulator.refresh_tokens
