"""Zoho CRM through crmgate's unified entity API, with Zoho played by crmsim over HTTPS: the same
requests as for Salesforce, translated into Zoho's COQL, records and bulk APIs."""

from __future__ import annotations

import asyncio
import json
import time
from collections import deque
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from conftest import (
    AppClient,
    Database,
    RunningGateway,
    Simulated,
    check_life_cycle,
    check_refresh,
    create_account,
    loopback_socket,
    oauth_connect,
    on_both_stores,
    run_simulated,
    sqlite_only,
)
from crmgate.api.app import create_app
from crmgate.connectors.catalogue import load_descriptors
from crmsim.faults import Fault
from crmsim.server import RunningSimulator
from crmsim.tls import Certificates
from crmsim.zoho import ALL_SCOPES, ZohoSimulator, platform_overrides, seed_zoho

APP = "X-API2CRM-APPLICATION-KEY"


pytestmark = sqlite_only


class Zoho(Simulated[ZohoSimulator]):
    """The simulator of this module's tests."""


@pytest.fixture
def zoho(certificates: Certificates) -> Iterator[Zoho]:
    yield from run_simulated(Zoho, ZohoSimulator(), certificates, platform_overrides)


class Org(AppClient):
    """A client of one connected Zoho CRM application, and the org behind it."""

    def __init__(self, client: httpx.Client, key: str, sim: ZohoSimulator) -> None:
        super().__init__(client, key)
        self.sim = sim

    def calls(self, method: str, path: str) -> int:
        return sum(1 for m, p, _ in self.sim.queries if m == method and p == path)


@pytest.fixture
def org(tmp_path: Path, database: Database, zoho: Zoho) -> Iterator[Org]:
    settings = zoho.settings(tmp_path / "data", database)
    admin = create_account(settings)
    credential = {
        "instance_url": zoho.base_url,
        "access_token": zoho.simulator.issue_access_token(),
    }
    with RunningGateway(create_app(settings)) as gateway, gateway.client(admin.key) as client:
        created = client.post(
            "/v1/application",
            json={
                "type": "ZohoCRM",
                "authorization": "oAuth-external-refresh",
                "credential": credential,
            },
        )
        assert created.status_code == 201, created.text
        yield Org(client, created.json()["key"], zoho.simulator)


def test_a_token_connects_and_shows_the_user_and_org(org: Org) -> None:
    app = org.client.get(f"/v1/application/{org.key}").json()
    assert app["type"] == "ZohoCRM" and app["company"]["id"] == org.sim.org_id
    assert (
        org.sim.queries[0][1] == "/crm/v8/users" and org.sim.queries[0][2]["type"] == "CurrentUser"
    )
    wrong = org.client.post(
        "/v1/application",
        json={
            "type": "ZohoCRM",
            "authorization": "oAuth-external-refresh",
            "credential": {"instance_url": org.sim.base_url, "access_token": "1000.nope"},
        },
    )
    assert wrong.status_code == 401 and wrong.json()["detail"]["code"] == "UNAUTHORIZED"
    elsewhere = org.client.post(
        "/v1/application",
        json={
            "type": "ZohoCRM",
            "authorization": "oAuth-external-refresh",
            "credential": {"instance_url": "https://evil.example", "access_token": "x"},
        },
    )
    assert elsewhere.status_code in (400, 422)


def _account(org: Org, name: str = "Acme") -> str:
    return str(org.ok("POST", "/entity/account", 201, json={"name": name})["id"])


ENTITIES: dict[str, tuple[str, dict[str, Any], dict[str, Any]]] = {
    "contact": ("last_name", {"first_name": "Ann"}, {"position": "CFO"}),
    "lead": ("last_name", {"company": "Initech"}, {"status": "Contacted"}),
    "account": ("name", {"employees": "120"}, {"description": "Key account"}),
    "opportunity": (
        "name",
        {"pipeline_with_stage": "Qualification", "expected_end_at": "2027-03-31T00:00:00+00:00"},
        {"amount": 2500.5},
    ),
    "task": ("subject", {"due_at": "2027-01-15T00:00:00+00:00"}, {"priority": "High"}),
    "call": (
        "subject",
        {"direction": "Outbound", "started_at": "2027-01-10T09:00:00+00:00"},
        {"purpose": "Demo"},
    ),
    "meeting": (
        "subject",
        {"started_at": "2027-01-11T09:00:00+00:00", "ended_at": "2027-01-11T10:00:00+00:00"},
        {"location": "Room 1"},
    ),
    "event": (
        "subject",
        {"started_at": "2027-01-12T09:00:00+00:00", "ended_at": "2027-01-12T10:00:00+00:00"},
        {"is_all_day": True},
    ),
    "note": ("subject", {"body": "Met at the fair"}, {"body": "Edited"}),
}


def test_every_entity_has_the_whole_life_cycle(org: Org) -> None:
    # one org for all entities (a gateway per entity and backend would cost a minute)
    for entity in sorted(ENTITIES):
        links = None
        if entity == "note":  # a note belongs to a record (Parent_Id is required)
            account = _account(org)
            links = {"relation": {"account": [{"type": "account", "entity": {"id": account}}]}}
        if entity in ("account", "meeting", "event"):  # counts start from an empty module
            org.sim.records["Accounts" if entity == "account" else "Events"].clear()
        check_life_cycle(org, entity, ENTITIES[entity], ("{native}/{id}", "data.0.id"), links)


def test_deals_link_accounts_and_contacts_and_filter_by_them(org: Org) -> None:
    acme, globex = _account(org, "Acme"), _account(org, "Globex")
    ann = org.ok("POST", "/entity/contact", 201, json={"last_name": "Ann"})["id"]
    link = {"type": "account", "entity": {"id": acme}}
    deal = org.ok(
        "POST",
        "/entity/opportunity",
        201,
        json={
            "name": "Big",
            "pipeline_with_stage": "Qualification",
            "expected_end_at": "2027-03-31T00:00:00+00:00",
            "amount": 1500,
            "relation": {
                "account": [link],
                "contact": [{"type": "contact", "entity": {"id": ann}}],
            },
        },
    )["id"]
    stored = org.sim.records["Deals"][deal]
    assert stored["Account_Name"] == {"id": acme, "name": "Acme"}
    read = org.ok("GET", f"/entity/opportunity/{deal}")
    assert read["relation"]["account"] == [link]
    assert read["relation"]["contact"][0]["entity"]["id"] == ann
    assert read["expected_end_at"] == "2027-03-31" or read["expected_end_at"].startswith(
        "2027-03-31"
    )
    assert read["amount"] == 1500.0
    org.ok(
        "PUT",
        f"/entity/opportunity/{deal}",
        json={"relation": {"account": [{"type": "account", "entity": {"id": globex}}]}},
    )
    moved = org.ok("GET", f"/entity/opportunity/{deal}", params={"expand": "account"})
    assert moved["relation"]["account"][0]["entity"]["name"] == "Globex"
    org.ok(
        "POST",
        "/entity/opportunity",
        201,
        json={
            "name": "Small",
            "pipeline_with_stage": "Closed Lost",
            "expected_end_at": "2027-01-01",
        },
    )
    by_account = org.ok(
        "GET", "/entity/opportunity/list", params={"filter": f"relation.account eq '{globex}'"}
    )
    assert [d["id"] for d in by_account] == [deal]
    big = org.ok("GET", "/entity/opportunity/list", params={"filter": "amount gt 100"})
    assert [d["id"] for d in big] == [deal]
    unlinked = org.ok("PUT", f"/entity/opportunity/{deal}", json={"relation": {"account": []}})
    assert unlinked == {"id": deal}
    assert org.sim.records["Deals"][deal]["Account_Name"] is None


def test_activities_link_what_id_with_its_module(org: Org) -> None:
    acme = _account(org)
    lead = org.ok("POST", "/entity/lead", 201, json={"last_name": "Lee", "company": "X"})["id"]
    task = org.ok(
        "POST",
        "/entity/task",
        201,
        json={
            "subject": "Call back",
            "relation": {"lead": [{"type": "lead", "entity": {"id": lead}}]},
        },
    )["id"]
    stored = org.sim.records["Tasks"][task]
    assert stored["What_Id"]["id"] == lead and stored["$se_module"] == "Leads"
    read = org.ok("GET", f"/entity/task/{task}")
    assert read["relation"] == {"lead": [{"type": "lead", "entity": {"id": lead}}]}
    org.ok(
        "PUT",
        f"/entity/task/{task}",
        json={"relation": {"lead": [], "account": [{"type": "account", "entity": {"id": acme}}]}},
    )
    assert org.sim.records["Tasks"][task]["$se_module"] == "Accounts"
    assert org.ok("GET", f"/entity/task/{task}")["relation"]["account"][0]["entity"]["id"] == acme
    found = org.ok("GET", "/entity/task/list", params={"filter": f"relation.account eq '{acme}'"})
    assert [t["id"] for t in found] == [task]
    note = org.ok(
        "POST",
        "/entity/note",
        201,
        json={"body": "Hello", "relation": {"lead": [{"type": "lead", "entity": {"id": lead}}]}},
    )["id"]
    assert org.sim.records["Notes"][note]["Parent_Id"]["module"]["api_name"] == "Leads"
    assert org.ok("GET", f"/entity/note/{note}")["relation"]["lead"][0]["entity"]["id"] == lead
    # null filters on one module of What_Id say which module ($se_module), not just "linked"
    on_lead = org.ok(
        "POST",
        "/entity/task",
        201,
        json={"subject": "Lead", "relation": {"lead": [{"type": "lead", "entity": {"id": lead}}]}},
    )["id"]
    alone = org.ok("POST", "/entity/task", 201, json={"subject": "Alone"})["id"]

    def tasks(filter_: str) -> list[str]:
        return [t["id"] for t in org.ok("GET", "/entity/task/list", params={"filter": filter_})]

    assert tasks("relation.account ne null") == [task]
    assert tasks("relation.account eq null") == [on_lead, alone]
    assert tasks("relation.lead ne null and subject eq 'Lead'") == [on_lead]
    refused = org.call("GET", "/entity/note/list", params={"filter": "relation.lead eq null"})
    assert refused.status_code == 400


def test_contacts_map_typed_lists_and_filters_become_coql(org: Org) -> None:
    body = {
        "first_name": "Grace",
        "last_name": "Hopper",
        "email": [{"type": "work", "address": "grace@navy.example"}],
        "phone": [{"type": "mobile", "number": "+1 555 0100"}],
        "address": [{"type": "mailing", "city": "Arlington", "country": "US"}],
        "birth_date": "1906-12-09",
    }
    grace = org.ok("POST", "/entity/contact", 201, json=body)["id"]
    org.ok("POST", "/entity/contact", 201, json={"last_name": "O'Brien"})
    stored = org.sim.records["Contacts"][grace]
    assert stored["Email"] == "grace@navy.example" and stored["Mobile"] == "+1 555 0100"
    read = org.ok("GET", f"/entity/contact/{grace}")
    assert read["email"] == [{"type": "work", "address": "grace@navy.example"}]
    assert read["address"][0]["city"] == "Arlington" and read["birth_date"] == "1906-12-09"
    found = org.ok("GET", "/entity/contact/list", params={"filter": "email contains 'navy'"})
    assert [c["id"] for c in found] == [grace]
    quoted = org.ok("GET", "/entity/contact/list", params={"filter": "last_name eq 'O''Brien'"})
    assert [c["last_name"] for c in quoted] == ["O'Brien"]
    starts = org.ok("GET", "/entity/contact/list", params={"filter": "last_name startswith 'O'"})
    assert [c["last_name"] for c in starts] == ["O'Brien"]
    none = org.ok("GET", "/entity/contact/list", params={"filter": "first_name eq null"})
    assert [c["last_name"] for c in none] == ["O'Brien"]
    three = "last_name ne 'x' and first_name eq 'Grace' and email contains 'navy'"
    assert [c["id"] for c in org.ok("GET", "/entity/contact/list", params={"filter": three})] == [
        grace
    ]
    # values that would end a literal read with backslash escapes, or with doubled quotes
    hostile = ["x' or id is not null or Last_Name = '", "x'') or (id is not null"]
    for value in hostile:
        text = value.replace("'", "''")
        assert (
            org.ok("GET", "/entity/contact/list", params={"filter": f"last_name eq '{text}'"}) == []
        )
    sent = [c[2].get("select_query", "") for c in org.sim.queries if c[1] == "/crm/v8/coql"]
    assert any("Last_Name = 'O''Brien'" in s for s in sent)  # Zoho's escape: the quote doubled
    assert any("Last_Name = 'x'' or id is not null or Last_Name = '''" in s for s in sent)
    for value in ("\\", "x\\'' or id is not null or Last_Name = \\''"):
        refused = org.call(
            "GET", "/entity/contact/list", params={"filter": f"last_name eq '{value}'"}
        )
        assert refused.status_code == 400 and "backslash" in refused.text, value
    wildcard = org.call("GET", "/entity/contact/list", params={"filter": "last_name contains '%'"})
    assert wildcard.status_code == 400
    bad_id = org.call("GET", "/entity/contact/list", params={"filter": "id eq '1 or 1=1'"})
    assert bad_id.status_code == 400


def test_zoho_errors_become_the_contracts(org: Org) -> None:
    missing = org.call("POST", "/entity/opportunity", json={"name": "No stage"})
    assert missing.status_code == 422
    assert missing.json()["detail"]["code"] == "NOT_VALID"
    assert "Stage" in missing.json()["detail"]["message"]
    wrong = org.call(
        "POST",
        "/entity/opportunity",
        json={"name": "X", "pipeline_with_stage": "nope", "expected_end_at": "2027-01-01"},
    )
    assert wrong.status_code == 422 and "Stage" in wrong.text
    assert org.call("GET", "/entity/contact/5725767999999999999").status_code == 404
    assert org.call("GET", "/entity/contact/not-a-number").status_code == 404
    assert org.call("DELETE", "/entity/contact/5725767999999999999").status_code == 404
    assert (
        org.call("PUT", "/entity/contact/5725767999999999999", json={"position": "X"}).status_code
        == 404
    )
    org.sim.quota.used = org.sim.quota.limit  # no API credits left
    limited = org.call("GET", "/entity/contact/count")
    assert limited.status_code == 429
    assert 3600 <= int(limited.headers["Retry-After"]) <= 6 * 3600 + 5
    assert "TOO_MANY_REQUESTS" in limited.json()["detail"]["message"]
    org.sim.quota.used = 0
    for status, body in (
        (500, b'{"code":"INTERNAL_ERROR","details":{},"message":"oops","status":"error"}'),
        (200, b"<html>maintenance</html>"),
        (503, b""),
        (200, b'{"data": "not a list"}'),
    ):
        org.sim.faults.add(Fault(status, body, "application/json"))
        odd = org.call("GET", "/entity/contact/count")
        assert odd.status_code == 502, (status, body, odd.text)
        assert odd.json()["detail"]["code"] == "CRM_UNAVAILABLE"
    denied = b'{"code":"NO_PERMISSION","details":{},"message":"permission denied","status":"error"}'
    org.sim.faults.add(Fault(403, denied, "application/json"))
    assert org.call("GET", "/entity/contact/count").status_code == 403
    # a delete Zoho refuses for another reason than the id is not a 404
    kept = org.ok("POST", "/entity/contact", 201, json={"last_name": "Locked"})["id"]
    locked = b'{"data":[{"code":"RECORD_LOCKED","details":{},"message":"locked","status":"error"}]}'
    org.sim.faults.add(Fault(400, locked, "application/json"))
    refused = org.call("DELETE", f"/entity/contact/{kept}")
    assert refused.status_code == 422 and "RECORD_LOCKED" in refused.text
    org.sim.faults.add(Fault(400, locked, "application/json"))
    (item,) = org.ok("DELETE", "/entity/contact/bulk", json={"item": [{"id": kept}]})["item"]
    assert item["status"] == 422
    # odd answers are the CRM's failure (502), never a crash
    user = org.sim.owner.render()
    for path, answer in (
        ("/entity/contact/describe", {"fields": [{"api_name": "X", "lookup": {"module": "Ac"}}]}),
        (
            "/entity/task/describe",
            {"fields": [{"api_name": "What_Id", "multi_module_lookup": [{"api_name": "Leads"}]}]},
        ),
        ("/entity/contact/describe", {"fields": [{"api_name": "X", "pick_list_values": 3}]}),
        (f"/entity/user/{org.sim.admin}", {"users": {"0": user}}),
        (f"/entity/user/{org.sim.admin}", {"users": ["not a user"]}),
    ):
        org.sim.faults.add(Fault(200, json.dumps(answer), "application/json"))
        odd = org.call("GET", path, headers={"X-API2CRM-DESCRIBE-LIFETIME": "0"})
        assert odd.status_code == 502, (path, answer, odd.text)


@on_both_stores
def test_a_token_without_the_scope_is_not_allowed_and_an_expired_one_asks_for_a_new(
    tmp_path: Path, database: Database, zoho: Zoho
) -> None:
    settings = zoho.settings(tmp_path / "scoped", database)
    admin = create_account(settings)
    sim = zoho.simulator
    token = sim.tokens.issue_access(
        sim.admin,
        (
            "ZohoCRM.modules.contacts.READ",
            "ZohoCRM.users.READ",
            "ZohoCRM.org.READ",
            "ZohoCRM.settings.ALL",
            "ZohoCRM.coql.READ",
        ),
    )
    with RunningGateway(create_app(settings)) as gateway, gateway.client(admin.key) as client:
        key = client.post(
            "/v1/application",
            json={
                "type": "ZohoCRM",
                "authorization": "oAuth-external-refresh",
                "credential": {"instance_url": zoho.base_url, "access_token": token},
            },
        ).json()["key"]
        headers = {APP: key}
        assert (
            client.get("/v1/application/entity/contact/count", headers=headers).status_code == 200
        )
        refused = client.post(
            "/v1/application/entity/contact", headers=headers, json={"last_name": "X"}
        )
        assert refused.status_code == 403 and refused.json()["detail"]["code"] == "NOT_ALLOWED"
        assert "OAUTH_SCOPE_MISMATCH" in refused.json()["detail"]["message"]
        sim.expire_tokens()
        expired = client.get("/v1/application/entity/contact/count", headers=headers)
        assert expired.status_code == 401 and expired.json()["detail"]["code"] == "UNAUTHORIZED"


@on_both_stores
def test_oauth_tokens_are_refreshed_with_zohos_accounts_server(
    tmp_path: Path, database: Database, zoho: Zoho
) -> None:
    sim = zoho.simulator
    sim.add_app("1000.CLIENT", "zoho-secret")
    settings = zoho.settings(
        tmp_path / "oauth",
        database,
        oauth_clients={"ZohoCRM": {"client_id": "1000.CLIENT", "client_secret": "zoho-secret"}},
    )
    admin = create_account(settings)
    credential = {
        "instance_url": zoho.base_url,
        "access_token": sim.issue_access_token(),
        "refresh_token": sim.issue_refresh_token("1000.CLIENT"),
    }

    def token_calls() -> int:
        return sum(1 for c in sim.queries if c[1] == "/oauth/v2/token")

    with RunningGateway(create_app(settings)) as gateway, gateway.client(admin.key) as client:
        key = client.post(
            "/v1/application",
            json={"type": "ZohoCRM", "authorization": "oAuth-internal", "credential": credential},
        ).json()["key"]
        check_refresh(AppClient(client, key), sim, token_calls, "invalid_code")
    for seen in sim.queries:  # tokens never travel in a URL the gateway sends, but revoke's
        assert credential["access_token"] not in json.dumps(seen)


def test_a_refresh_goes_to_the_data_centre_of_the_org() -> None:
    from crmgate.connectors.zoho import ZohoConnector
    from crmgate.outbound import Outbound

    (zoho,) = [p for p in load_descriptors() if p.type == "ZohoCRM"]
    connector = ZohoConnector(zoho, Outbound())

    def accounts_server(instance_url: str) -> str | None:
        found = connector.refresh_url({"instance_url": instance_url})
        revoke = connector.revocation_url({"instance_url": instance_url})
        assert found is None or str(revoke) == f"{found}/revoke"
        return str(found).removesuffix("/oauth/v2/token") if found else None

    def callback_accounts_server(callback: dict[str, str]) -> str | None:
        found = connector.code_token_url(callback)
        return str(found).removesuffix("/oauth/v2/token") if found else None

    assert accounts_server("https://www.zohoapis.eu") == "https://accounts.zoho.eu"
    assert accounts_server("https://www.zohoapis.com.au") == "https://accounts.zoho.com.au"
    assert accounts_server("https://www.zohoapis.ca") == "https://accounts.zohocloud.ca"
    assert accounts_server("https://www.zohoapis.in:443") == "https://accounts.zoho.in"
    assert accounts_server("https://www.zohoapis.uk") == "https://accounts.zoho.uk"
    assert accounts_server("https://sandbox.zohoapis.sa") == "https://accounts.zoho.sa"
    assert accounts_server("https://zohoapis.eu.evil.example") is None
    assert accounts_server("https://127.0.0.1:8443") is None  # the descriptor's token_url
    assert all(r.login_url.startswith("https://accounts.zoho") for r in zoho.regions)
    # one table: the descriptor allows exactly the API hosts of its data centres
    assert sorted(zoho.instance_hosts) == sorted(h for r in zoho.regions for h in r.hosts)
    assert len(zoho.instance_hosts) == 27
    # an OAuth callback's accounts server counts only if it is one of them
    eu = {"location": "eu", "accounts-server": "https://accounts.zoho.eu"}
    assert callback_accounts_server(eu) == "https://accounts.zoho.eu"
    assert callback_accounts_server({"location": "uk"}) == "https://accounts.zoho.uk"
    for hostile in (
        {"accounts-server": "https://accounts.zoho.eu.evil.example"},
        {"accounts-server": "https://evil.example", "location": "eu"},
        {"accounts-server": "http://accounts.zoho.eu"},
        {"accounts-server": "https://user@accounts.zoho.eu"},
        {"accounts-server": "https://accounts.zoho.eu:8443"},
        {"accounts-server": "https://accounts.zoho.eu", "location": "us"},
        {"location": "mars"},
        {},
    ):
        assert callback_accounts_server(hostile) is None, hostile


@on_both_stores
def test_the_oauth_flow_connects_orgs_of_any_data_centre(
    tmp_path: Path,
    database: Database,
    zoho: Zoho,
    certificates: Certificates,
) -> None:
    """Application mode through Zoho's authorize page (access_type=offline, comma-joined
    scopes): a US org, then an org of the EU data centre, whose code is exchanged at the EU
    accounts server the callback names (here a second address of the simulator)."""
    sim = zoho.simulator
    bound = loopback_socket()
    base = f"http://127.0.0.1:{bound.getsockname()[1]}"
    done = "https://app.example/connected"
    sim.add_app("1000.FLOW", "flow-secret", f"{base}/authorization/oauth/ZohoCRM/callback")
    settings = zoho.settings(
        tmp_path / "flow",
        database,
        public_url=base,
        oauth_clients={
            "ZohoCRM": {
                "client_id": "1000.FLOW",
                "client_secret": "flow-secret",
                "redirects": [done],
            }
        },
    )
    admin = create_account(settings)

    def connect(gateway: RunningGateway) -> str:
        key = oauth_connect(gateway, admin.key, "ZohoCRM", done, zoho.ca_file)
        with gateway.client(admin.key) as client:
            app = client.get(f"/v1/application/{key}").json()
            assert app["authorization"] == "oAuth-internal" and app["is_authorized"] is True
            counted = client.get("/v1/application/entity/contact/count", headers={APP: key})
            assert counted.status_code == 200, counted.text
        return key

    def exchanged_at() -> list[str]:
        return [q["host"] for m, p, q in sim.queries if p == "/oauth/v2/token"]

    us_host = zoho.base_url.removeprefix("https://")
    with RunningSimulator(sim.app(), certificates) as eu:
        # the EU data centre, reached (for this test) at the simulator's second address: an
        # operator's override of the descriptor's regions
        (platform,) = [p for p in load_descriptors() if p.type == "ZohoCRM"]
        regions = [
            {**region.model_dump(), "login_url": eu.base_url}
            if region.name == "eu"
            else region.model_dump()
            for region in platform.regions
        ]
        overrides = {"ZohoCRM": {**zoho.overrides(zoho.base_url)["ZohoCRM"], "regions": regions}}
        settings = settings.model_copy(update={"platform_overrides": overrides})
        eu_host = eu.base_url.removeprefix("https://")
        with RunningGateway(create_app(settings), bound) as gateway:
            connect(gateway)
            authorize = next(q for m, p, q in sim.queries if p == "/oauth/v2/auth")
            assert authorize["access_type"] == "offline" and authorize["prompt"] == "consent"
            assert authorize["scope"] == ",".join(ALL_SCOPES)
            assert exchanged_at() == [us_host]
            sim.location, sim.accounts_server = "eu", eu.base_url
            connect(gateway)
            assert exchanged_at() == [us_host, eu_host]
    assert sim.codes == {}  # each code exchanged, once


@on_both_stores
def test_a_throttled_refresh_is_a_rate_limit(
    tmp_path: Path, database: Database, zoho: Zoho
) -> None:
    """Zoho gives at most 10 access tokens per refresh token in 10 minutes; past that its
    accounts server answers Access Denied: 429 with Retry-After, the grant intact."""
    sim = zoho.simulator
    sim.add_app("1000.CLIENT", "zoho-secret")
    settings = zoho.settings(
        tmp_path / "throttle",
        database,
        oauth_clients={"ZohoCRM": {"client_id": "1000.CLIENT", "client_secret": "zoho-secret"}},
    )
    admin = create_account(settings)
    refresh = sim.issue_refresh_token("1000.CLIENT")
    credential = {
        "instance_url": zoho.base_url,
        "access_token": sim.issue_access_token(),
        "refresh_token": refresh,
    }
    sim.oauth.refreshed[refresh] = deque([time.time()] * 10)  # ten tokens in the last minutes
    with RunningGateway(create_app(settings)) as gateway, gateway.client(admin.key) as client:
        key = client.post(
            "/v1/application",
            json={"type": "ZohoCRM", "authorization": "oAuth-internal", "credential": credential},
        ).json()["key"]
        sim.expire_tokens()
        limited = client.get("/v1/application/entity/contact/count", headers={APP: key})
        assert limited.status_code == 429, limited.text
        assert 500 <= int(limited.headers["Retry-After"]) <= 600
        assert limited.json()["detail"]["code"] == "RATE_LIMITED"
        assert client.get(f"/v1/application/{key}").json()["is_authorized"] is True


def test_zohos_token_answer_names_the_instance_and_refusals_are_grants_revoked() -> None:
    from crmgate.connectors.catalogue import Catalogue
    from crmgate.connectors.zoho import ZohoConnector
    from crmgate.outbound import Outbound

    platform = Catalogue.load(["zoho"]).get("ZohoCRM")
    assert platform is not None
    connector = ZohoConnector(platform, Outbound())
    answer = {"access_token": "a", "api_domain": "https://www.zohoapis.eu", "expires_in": 3600}
    assert connector.token_fields(answer) == {"instance_url": "https://www.zohoapis.eu"}
    from crmgate.connectors.errors import CrmUnavailable

    with pytest.raises(CrmUnavailable):
        connector.token_fields({"api_domain": "https://attacker.example"})
    assert connector.token_error({"error": "invalid_code"}, 200)[0] == "invalid_grant"
    assert connector.token_error({"error": "invalid_client_secret"}, 200)[0] == "invalid_client"
    asyncio.run(connector.outbound.close())


def test_pages_read_in_order_cost_one_call_per_200_records(org: Org) -> None:
    for n in range(2150):
        org.sim.insert("Contacts", {"Last_Name": f"C{n:05d}"})

    def lists() -> int:
        return org.calls("GET", "/crm/v8/Contacts")

    seen: list[str] = []
    before = lists()
    for page in range(1, 24):  # 100 a page, past the 2,000 records `page` reaches
        rows = org.ok("GET", "/entity/contact/list", params={"page": page, "page_size": 100})
        seen += [r["last_name"] for r in rows]
    assert seen == [f"C{n:05d}" for n in range(2150)]
    assert lists() - before == 11  # 200 records a call, page_token past 2,000
    tokens = [q for m, p, q in org.sim.queries if p == "/crm/v8/Contacts" and "page_token" in q]
    assert len(tokens) == 10
    # a far jump is one call: the records API's page within 2,000, COQL beyond
    before, coql = lists(), org.calls("POST", "/crm/v8/coql")
    jump = org.ok(
        "GET", "/entity/contact/list", params={"page": 8, "page_size": 100, "fields": "email"}
    )
    assert len(jump) == 100 and lists() - before == 1
    far = org.ok(
        "GET", "/entity/contact/list", params={"page": 21, "page_size": 100, "fields": "email"}
    )
    assert len(far) == 100 and org.calls("POST", "/crm/v8/coql") - coql == 1
    assert org.ok("GET", f"/entity/contact/{far[0]['id']}")["last_name"] == "C02000"
    too_far = org.call("GET", "/entity/contact/list", params={"page": 1001, "page_size": 100})
    assert too_far.status_code == 400 and "page by page" in too_far.text


def test_bulk_reports_each_record(org: Org) -> None:
    items = [{"last_name": f"B{n:03d}"} for n in range(150)] + [{"first_name": "no last name"}]
    made = org.ok("POST", "/entity/contact/bulk", 201, json={"item": items})["item"]
    assert [i["status"] for i in made] == [201] * 150 + [422]
    assert made[-1]["error"]["fields"] == ["last_name"]  # the unified name of Zoho's Last_Name
    for item, sent in zip(made[:150], items, strict=False):
        assert org.sim.records["Contacts"][item["id"]]["Last_Name"] == sent["last_name"]
    assert org.calls("POST", "/crm/v8/Contacts") == 2  # 100 a call
    removed = org.ok(
        "DELETE",
        "/entity/contact/bulk",
        json={"item": [{"id": made[0]["id"]}, {"id": "5725767999999999999"}, {"id": "x"}]},
    )["item"]
    assert [i["status"] for i in removed] == [204, 404, 404]


def test_users_are_read_only(org: Org) -> None:
    org.sim.add_user("Steven", "Buchanan", "steven@zylker.example")
    users = org.ok("GET", "/entity/user/list")
    assert [u["last_name"] for u in users] == ["Boyle", "Buchanan"]
    assert users[0]["email"] == [{"type": "work", "address": "patricia.boyle@zylker.example"}]
    assert users[0]["position"] == "CEO"
    assert org.ok("GET", "/entity/user/count") == {"total": 2}
    one = org.ok("GET", f"/entity/user/{users[1]['id']}")
    assert one["first_name"] == "Steven"
    assert org.call("POST", "/entity/user", json={"last_name": "X"}).status_code == 403
    assert org.call("GET", "/entity/user/5725767999999999999").status_code == 404
    # Zoho's users API neither filters nor sorts: crmgate reads them whole and does it
    for n in range(250):  # two pages of the users API
        org.sim.add_user(f"U{n:03d}", "Rep" if n % 2 else "Ops", f"u{n:03d}@zylker.example")
    reps = org.ok(
        "GET",
        "/entity/user/list",
        params={"filter": "last_name eq 'Rep'", "sort": "-first_name", "page_size": 3},
    )
    assert [u["first_name"] for u in reps] == ["U249", "U247", "U245"]
    assert org.ok("GET", "/entity/user/count", params={"filter": "last_name eq 'rep'"}) == {
        "total": 125
    }


def test_describe_and_custom_fields_come_from_zohos_fields_api(org: Org) -> None:
    from crmsim.zoho_schema import ZField

    module = org.sim.modules["Contacts"]
    module.fields["Loyalty_Tier"] = ZField(
        "Loyalty_Tier", "picklist", "Loyalty Tier", custom=True, options=("Gold", "Silver")
    )
    described = org.ok(
        "GET", "/entity/contact/describe", headers={"X-API2CRM-DESCRIBE-LIFETIME": "0"}
    )
    fields = described["schema"]["create"]["fields"]
    assert fields["last_name"]["required"] is True and fields["last_name"]["native"] == [
        "Last_Name"
    ]
    assert fields["Loyalty_Tier"]["enum"] == ["Gold", "Silver"] and fields["Loyalty_Tier"]["custom"]
    assert "relation.account" in fields
    assert "created_at" not in fields  # read only
    made = org.ok(
        "POST", "/entity/contact", 201, json={"last_name": "Tier", "Loyalty_Tier": "Gold"}
    )
    gold = org.ok("GET", "/entity/contact/list", params={"filter": "Loyalty_Tier eq 'Gold'"})
    assert [c["id"] for c in gold] == [made["id"]] and gold[0]["Loyalty_Tier"] == "Gold"
    modules = org.ok("GET", "/entity/list")
    assert {"Contacts", "Deals", "Notes"} <= {m["id"] for m in modules}
    acme = _account(org, "Acme")
    generic = org.ok("GET", "/entity/Accounts/list", params={"filter": "Account_Name eq 'Acme'"})
    assert [a["id"] for a in generic] == [acme] and generic[0]["Account_Name"] == "Acme"
    assert org.ok("GET", f"/entity/Accounts/{acme}")["Account_Name"] == "Acme"


def test_the_demo_seed_and_overrides() -> None:
    sim = ZohoSimulator()
    seed_zoho(sim)
    assert len(sim.records["Accounts"]) == 3 and len(sim.records["Deals"]) == 3
    deal = next(iter(sim.records["Deals"].values()))
    assert deal["Account_Name"]["name"] == "Northwind Traders"
    overrides = platform_overrides("https://127.0.0.1:9999")
    assert overrides["ZohoCRM"]["instance_hosts"] == ["127.0.0.1:9999"]
    assert overrides["ZohoCRM"]["oauth"]["token_url"] == "https://127.0.0.1:9999/oauth/v2/token"


def test_more_fields_than_one_call_takes_are_read_in_parts(org: Org) -> None:
    """Zoho takes at most 50 fields in a COQL select and in the records API's `fields`: an org
    whose Contacts have 40 custom fields more is read 50 fields a call, merged by id."""
    from crmsim.zoho_schema import ZField

    module = org.sim.modules["Contacts"]
    for n in range(40):
        module.fields[f"Extra_{n:02d}"] = ZField(f"Extra_{n:02d}", custom=True)
    assert len(module.fields) > 60
    made = [
        org.sim.insert(
            "Contacts",
            {"Last_Name": f"Wide{k}", "Extra_00": f"first{k}", "Extra_39": f"last{k}"},
        )
        for k in range(3)
    ]
    headers = {"X-API2CRM-DESCRIBE-LIFETIME": "0"}

    def check(rows: list[dict[str, Any]]) -> None:
        assert [r["id"] for r in rows] == made
        assert [(r["Extra_00"], r["Extra_39"]) for r in rows] == [
            (f"first{k}", f"last{k}") for k in range(3)
        ]

    check(org.ok("GET", "/entity/contact/list", headers=headers))  # records API walk
    check(org.ok("GET", "/entity/contact/list", params={"filter": "last_name startswith 'Wide'"}))
    one = org.ok("GET", f"/entity/contact/{made[1]}")
    assert one["last_name"] == "Wide1" and one["Extra_39"] == "last1"
    generic = org.ok("GET", "/entity/Contacts/list")  # every field of the module
    check(generic)
    assert generic[0]["Last_Name"] == "Wide0" and "Email" not in generic[0]  # no value: absent
    check(org.ok("GET", "/entity/Contacts/list", params={"filter": "Last_Name ne 'x'"}))
    assert org.ok("GET", f"/entity/Contacts/{made[2]}")["Extra_39"] == "last2"
    sent = [c[2] for c in org.sim.queries if c[1] in ("/crm/v8/coql", "/crm/v8/Contacts")]
    assert all(len(c.get("fields", "").split(",")) <= 50 for c in sent)
