"""Close through crmgate's unified entity API, with Close played by crmsim over HTTPS: leads as
accounts, contacts, opportunities, tasks, notes, calls and meetings, the advanced filtering API
for the filters and sorts of leads and contacts. The module runs on SQLite, its tests where the
store takes part (credentials, tokens) on both backends."""

from __future__ import annotations

import base64
import json
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
    check_refresh,
    create_account,
    loopback_socket,
    oauth_connect,
    on_both_stores,
    run_simulated,
    sqlite_only,
)
from crmgate.api.app import create_app
from crmsim.close import CloseSimulator, platform_overrides, seed_close
from crmsim.faults import Fault
from crmsim.tls import Certificates

pytestmark = sqlite_only
TOKEN_CALL = ("POST", "/oauth2/token/")


class CloseSim(Simulated[CloseSimulator]):
    """The simulator of this module's tests."""


@pytest.fixture
def close_sim(certificates: Certificates) -> Iterator[CloseSim]:
    yield from run_simulated(CloseSim, CloseSimulator(), certificates, platform_overrides)


class Organization(AppClient):
    """A client of one connected Close application, and the organization behind it."""

    def __init__(self, client: httpx.Client, key: str, sim: CloseSimulator) -> None:
        super().__init__(client, key)
        self.sim = sim

    def calls(self, method: str, path: str) -> int:
        return sum(1 for call in self.sim.calls if call == (method, path))


def connect(client: httpx.Client, authorization: str, credential: dict[str, str]) -> httpx.Response:
    body = {"type": "CloseIO", "authorization": authorization, "credential": credential}
    return client.post("/v1/application", json=body)


@pytest.fixture
def org(tmp_path: Path, database: Database, close_sim: CloseSim) -> Iterator[Organization]:
    """A Close organization connected with an API key."""
    settings = close_sim.settings(tmp_path / "data", database)
    admin = create_account(settings)
    key = close_sim.simulator.add_api_key()
    with RunningGateway(create_app(settings)) as gateway, gateway.client(admin.key) as client:
        created = connect(client, "key", {"api_key": key})
        assert created.status_code == 201, created.text
        yield Organization(client, created.json()["key"], close_sim.simulator)


def test_an_api_key_connects_and_a_wrong_one_is_refused(org: Organization) -> None:
    app = org.client.get(f"/v1/application/{org.key}").json()
    assert app["type"] == "CloseIO" and app["company"]["id"] == org.sim.org_id
    assert app["me"]["id"] == org.sim.admin
    wrong = connect(org.client, "key", {"api_key": "api_not-a-key"})
    assert wrong.status_code == 401 and wrong.json()["detail"]["code"] == "UNAUTHORIZED"
    assert org.ok("GET", "/entity/contact/count") == {"total": 0}
    # the key is the HTTP Basic user (RFC 7617), never in a URL
    assert {how for _, _, how in org.sim.auth} == {"basic"}
    platform = org.client.get("/v1/platform/CloseIO").json()
    kinds = {a["type"]: a for a in platform["authorization"]}
    assert set(kinds) == {"key", "oAuth-internal", "oAuth-external-refresh"}
    assert [f["name"] for f in kinds["key"]["platform_credential"]] == ["api_key"]
    listed = [p["type"] for p in org.client.get("/v1/platform/list").json()]
    assert "CloseIO" in listed


# entity: (the field naming a record, more fields to create with, a change to make)
ENTITIES: dict[str, tuple[str, dict[str, Any], dict[str, Any]]] = {
    "account": ("name", {"description": "Makes things"}, {"description": "Sells things"}),
    "contact": (
        "last_name",
        {"position": "CFO", "email": [{"type": "work", "address": "cfo@acme.example"}]},
        {"position": "CEO"},
    ),
    "opportunity": (
        "description",
        {"amount": 2500.5, "probability": 40, "expected_end_at": "2027-03-31T00:00:00+00:00"},
        {"amount": 100.0, "probability": 90},
    ),
    "task": ("subject", {"due_at": "2027-03-31T09:00:00+00:00"}, {"subject": "Renamed"}),
    "note": ("body", {}, {"body": "Changed"}),
    "call": ("description", {"direction": "inbound"}, {"direction": "outbound"}),
}
SEARCHABLE = ("account", "contact")


@pytest.mark.parametrize("entity", sorted(ENTITIES))
def test_every_entity_has_the_whole_life_cycle(org: Organization, entity: str) -> None:
    name_field, extra, change = ENTITIES[entity]
    lead = org.sim.insert("lead", {"name": "Linked Co"})
    links = {} if entity == "account" else {"relation": {"account": [{"entity": {"id": lead}}]}}
    base = f"/entity/{entity}"
    ids = [
        org.ok("POST", base, 201, json={name_field: f"{entity} {n}", **extra, **links})["id"]
        for n in (3, 1, 2)
    ]
    one = org.ok("GET", f"{base}/{ids[0]}")
    assert one[name_field] == f"{entity} 3"
    for key, value in extra.items():
        assert one[key] == value, key
    total = 4 if entity == "account" else 3  # the linked lead is an account too
    assert org.ok("GET", f"{base}/count") == {"total": total}
    if entity in SEARCHABLE:  # the advanced filtering API
        params = {
            "page_size": 2,
            "sort": name_field,
            "filter": f"{name_field} startswith '{entity}'",
        }
        page_one = org.ok("GET", f"{base}/list", params=params)
        page_two = org.ok("GET", f"{base}/list", params={**params, "page": 2})
        assert [r[name_field] for r in page_one + page_two] == [f"{entity} {n}" for n in (1, 2, 3)]
        chosen = org.ok("GET", f"{base}/list", params={"filter": f"{name_field} eq '{entity} 2'"})
        assert [r["id"] for r in chosen] == [ids[2]]
    else:  # the list's own filters: the lead it belongs to
        linked = org.ok("GET", f"{base}/list", params={"filter": f"relation.account eq '{lead}'"})
        assert sorted(r["id"] for r in linked) == sorted(ids)
        assert all(r["relation"]["account"][0]["entity"]["id"] == lead for r in linked)

    org.ok("PUT", f"{base}/{ids[1]}", json=change)
    changed = org.ok("GET", f"{base}/{ids[1]}")
    for key, value in change.items():
        assert changed[key] == value, key
    if name_field not in change:
        assert changed[name_field] == f"{entity} 1"  # what the change leaves, it keeps

    described = org.ok("GET", f"{base}/describe")
    assert described["entity"] == entity and name_field in described["schema"]["fetch"]["fields"]
    assert org.call("DELETE", f"{base}/{ids[0]}").status_code == 204
    assert org.call("GET", f"{base}/{ids[0]}").status_code == 404

    made = org.ok(
        "POST",
        f"{base}/bulk",
        201,
        json={"item": [{name_field: f"bulk {n}", **extra, **links} for n in range(3)]},
    )["item"]
    assert [i["status"] for i in made] == [201, 201, 201]
    made_ids = [i["id"] for i in made]
    updated = org.ok("PUT", f"{base}/bulk", json={"item": [{"id": i, **change} for i in made_ids]})
    assert [i["status"] for i in updated["item"]] == [200, 200, 200]
    assert org.ok("GET", f"{base}/count") == {"total": total + 2}
    odd = [{"id": "not an id"}, {"id": f"{made_ids[0]}/../x"}, *({"id": i} for i in made_ids)]
    removed = org.ok("DELETE", f"{base}/bulk", json={"item": odd})
    assert [i["status"] for i in removed["item"]] == [404, 404, 204, 204, 204]
    assert org.ok("GET", f"{base}/count") == {"total": total - 1}

    native = described["native_entity"]
    answer = org.ok("POST", "/request", 201, json={"path": f"{native}/{ids[2]}/"})
    assert answer["status_code"] == 200
    assert json.loads(base64.b64decode(answer["content"]))["id"] == ids[2]


def test_meetings_come_from_close_and_are_read_changed_and_deleted(org: Organization) -> None:
    seed_close(org.sim)
    meetings = org.ok("GET", "/entity/meeting/list")
    assert len(meetings) == 3 and {m["subject"] for m in meetings} == {"Kick-off"}
    first = meetings[0]["id"]
    org.ok("PUT", f"/entity/meeting/{first}", json={"location": "Berlin"})
    assert org.ok("GET", f"/entity/meeting/{first}")["location"] == "Berlin"
    refused = org.call("POST", "/entity/meeting", json={"subject": "New"})
    assert refused.status_code == 403 and refused.json()["detail"]["code"] == "NOT_SUPPORTED"
    assert org.call("DELETE", f"/entity/meeting/{first}").status_code == 204
    assert org.ok("GET", "/entity/meeting/count") == {"total": 2}


def test_leads_and_contacts_filter_and_sort_through_the_advanced_filtering_api(
    org: Organization,
) -> None:
    seed_close(org.sim)
    searched = org.calls("POST", "/api/v1/data/search/")

    def names(entity: str, **params: str) -> list[str]:
        field = "name" if entity == "account" else "last_name"
        return [r[field] for r in org.ok("GET", f"/entity/{entity}/list", params=params)]

    assert names("account", sort="-name") == [
        "Northwind Traders",
        "Fabrikam Farms",
        "Contoso Pharmaceuticals",
    ]
    assert names("account", filter="name contains 'farms'") == ["Fabrikam Farms"]
    assert names("account", filter="name ne 'Fabrikam Farms'", sort="name") == [
        "Contoso Pharmaceuticals",
        "Northwind Traders",
    ]
    assert names("contact", filter="position startswith 'head'") == ["Janet Leverling"]
    assert names("contact", filter="email eq null") == []
    assert len(names("contact", filter="position ne null")) == 3
    lead = org.ok("GET", "/entity/account/list", params={"filter": "name eq 'Fabrikam Farms'"})
    linked = names("contact", filter=f"relation.account eq '{lead[0]['id']}'")
    assert linked == ["Steven Buchanan"]
    assert org.ok("GET", "/entity/contact/count", params={"filter": "last_name contains 'an'"}) == {
        "total": 3
    }
    assert org.calls("POST", "/api/v1/data/search/") - searched == 9  # one call each
    # what Close's search cannot say is refused before any call
    later = org.call("GET", "/entity/account/list", params={"filter": "created_at gt '2024-01-01'"})
    assert later.status_code == 400 and "ge and lt" in later.text
    text = org.call("GET", "/entity/account/list", params={"filter": "name gt 'M'"})
    assert text.status_code == 400


def test_other_lists_filter_and_sort_by_their_own_parameters(org: Organization) -> None:
    seed_close(org.sim)
    by_amount = org.ok("GET", "/entity/opportunity/list", params={"sort": "-amount"})
    assert [o["amount"] for o in by_amount] == [45000.0, 12000.0, 8000.0]  # Close keeps cents
    assert org.sim.calls[-1] == ("GET", "/api/v1/opportunity/")
    since = org.ok("GET", "/entity/task/count", params={"filter": "created_at ge '2020-01-01'"})
    assert since == {"total": 3}
    refused = org.call("GET", "/entity/opportunity/list", params={"filter": "amount gt 5"})
    assert refused.status_code == 400 and "relation.<entity>" in refused.text
    unsorted = org.call("GET", "/entity/note/list", params={"sort": "body"})
    assert unsorted.status_code == 400 and "none" in unsorted.text


def test_pages_in_order_cost_one_call_per_batch(org: Organization) -> None:
    lead = org.sim.insert("lead", {"name": "Big Co"})
    for n in range(250):
        org.sim.insert("contact", {"lead_id": lead, "name": f"P{n:03d}"})

    def lists() -> int:
        return org.calls("GET", "/api/v1/contact/")

    before, seen = lists(), []
    for page in range(1, 5):  # 100 a page; the last is empty
        rows = org.ok("GET", "/entity/contact/list", params={"page": page, "page_size": 100})
        seen += [r["last_name"] for r in rows]
    assert sorted(seen) == [f"P{n:03d}" for n in range(250)] and len(set(seen)) == 250
    assert lists() - before == 3  # 100 + 100 + 50, each batch once
    # a sorted list pages through the search API's cursor, 200 a call
    before = org.calls("POST", "/api/v1/data/search/")
    sorted_seen = []
    for page in (1, 2, 3):
        params = {"page": page, "page_size": 100, "sort": "-last_name"}
        sorted_seen += [
            r["last_name"] for r in org.ok("GET", "/entity/contact/list", params=params)
        ]
    assert sorted_seen == [f"P{n:03d}" for n in range(249, -1, -1)]
    assert org.calls("POST", "/api/v1/data/search/") - before == 2


def test_custom_fields_are_described_read_and_written(org: Organization) -> None:
    size = org.sim.add_custom_field("contact", "Shoe size", "number")
    described = org.ok("GET", "/entity/contact/describe")
    assert size in described["schema"]["fetch"]["fields"]
    made = org.ok("POST", "/entity/contact", 201, json={"last_name": "Ada", size: 38})["id"]
    assert org.ok("GET", f"/entity/contact/{made}")[size] == 38
    assert org.sim.store["contact"][made][size] == 38
    found = org.ok("GET", "/entity/contact/list", params={"filter": f"{size} gt 37"})
    assert [r["id"] for r in found] == [made]


def test_close_errors_become_the_contracts(org: Organization) -> None:
    assert org.call("GET", "/entity/contact/cont_missing").status_code == 404
    assert org.call("GET", "/entity/contact/not-an-id").status_code == 404
    # a 400 with field-errors: NOT_VALID naming the field
    missing = org.call("POST", "/entity/opportunity", json={"amount": 5})
    assert missing.status_code == 422 and "lead_id" in missing.text
    lead = org.sim.insert("lead", {"name": "Acme"})
    link = {"relation": {"account": [{"entity": {"id": lead}}]}}
    wrong = org.call("POST", "/entity/opportunity", json={"probability": 250, **link})
    assert wrong.status_code == 422 and wrong.json()["detail"]["code"] == "NOT_VALID"
    assert "confidence" in wrong.json()["detail"]["message"]
    # a 429: when to retry is Close's rate_reset (seconds) in the body; writes are not retried
    error = {"rate_reset": 7.2, "message": "API call count exceeded", "rate_limit": 1}
    org.sim.faults.add(
        Fault(429, json.dumps({"error": error}), "application/json", path="/api/v1/lead/")
    )
    limited = org.call("POST", "/entity/account", json={"name": "Too fast"})
    assert limited.status_code == 429 and limited.headers["Retry-After"] == "8"
    assert "API call count exceeded" in limited.json()["detail"]["message"]
    # the simulator's own window says the same
    org.sim.burst = 0
    windowed = org.call("POST", "/entity/account", json={"name": "Too fast"})
    assert windowed.status_code == 429 and 1 <= int(windowed.headers["Retry-After"]) <= 15


def _oauth_app(client: httpx.Client, close_sim: CloseSim, authorization: str) -> AppClient:
    sim = close_sim.simulator
    credential = {"access_token": sim.issue_access_token()}
    if authorization == "oAuth-internal":
        credential["refresh_token"] = sim.tokens.issue_refresh("close-client", sim.admin)
    created = connect(client, authorization, credential)
    assert created.status_code == 201, created.text
    return AppClient(client, created.json()["key"])


@on_both_stores
def test_oauth_tokens_are_refreshed_once_per_expiry(
    tmp_path: Path, database: Database, close_sim: CloseSim
) -> None:
    sim = close_sim.simulator
    sim.add_app("close-client", "close-secret")
    clients = {"CloseIO": {"client_id": "close-client", "client_secret": "close-secret"}}
    settings = close_sim.settings(tmp_path / "oauth", database, oauth_clients=clients)
    admin = create_account(settings)
    with RunningGateway(create_app(settings)) as gateway, gateway.client(admin.key) as client:
        app = _oauth_app(client, close_sim, "oAuth-internal")
        check_refresh(app, sim, lambda: sim.calls.count(TOKEN_CALL), "invalid_grant")
        assert {how for _, path, how in sim.auth if path.startswith("/api/")} == {"bearer"}


@on_both_stores
def test_the_oauth_flow_connects_a_close_organization(
    tmp_path: Path, database: Database, close_sim: CloseSim
) -> None:
    bound = loopback_socket()
    base = f"http://127.0.0.1:{bound.getsockname()[1]}"
    done = "https://app.example/connected"
    sim = close_sim.simulator
    sim.add_app("close-flow", "close-flow-secret", f"{base}/authorization/oauth/CloseIO/callback")
    clients = {
        "CloseIO": {
            "client_id": "close-flow",
            "client_secret": "close-flow-secret",
            "redirects": [done],
        }
    }
    settings = close_sim.settings(
        tmp_path / "flow", database, public_url=base, oauth_clients=clients
    )
    admin = create_account(settings)
    with RunningGateway(create_app(settings), bound) as gateway:
        key = oauth_connect(gateway, admin.key, "CloseIO", done, close_sim.ca_file)
        with gateway.client(admin.key) as client:
            app = client.get(f"/v1/application/{key}").json()
            assert app["authorization"] == "oAuth-internal" and app["is_authorized"] is True
            assert app["company"]["id"] == sim.org_id
            counted = AppClient(client, key).call("GET", "/entity/contact/count")
            assert counted.status_code == 200, counted.text
    assert sim.tokens.codes == {}  # exchanged, once


def test_the_demo_seed_fills_a_small_organization(close_sim: CloseSim) -> None:
    seed_close(close_sim.simulator)
    store = close_sim.simulator.store
    assert len(store["lead"]) == 3 and len(store["contact"]) == 3
    assert len(store["opportunity"]) == 3 and len(store["activity/meeting"]) == 3
    overrides = platform_overrides(close_sim.base_url)["CloseIO"]
    assert overrides["oauth"]["token_url"].endswith("/oauth2/token/")
