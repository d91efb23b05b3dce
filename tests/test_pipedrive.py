"""Pipedrive through crmgate's unified entity API, with Pipedrive played by crmsim over HTTPS:
API v2 for persons, organizations, deals and activities, v1 for leads, notes and users, and
Pipedrive's saved filters for every filtered list. The module runs on SQLite, its tests where
the store takes part (credentials, tokens) on both backends."""

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
from crmgate.connectors import pipedrive as pipedrive_connector
from crmsim.faults import Fault
from crmsim.pipedrive import PipedriveSimulator, platform_overrides, seed_pipedrive
from crmsim.tls import Certificates

pytestmark = sqlite_only


class PipedriveSim(Simulated[PipedriveSimulator]):
    """The simulator of this module's tests."""


@pytest.fixture
def pipedrive(certificates: Certificates) -> Iterator[PipedriveSim]:
    yield from run_simulated(PipedriveSim, PipedriveSimulator(), certificates, platform_overrides)


class Company(AppClient):
    """A client of one connected Pipedrive application, and the company behind it."""

    def __init__(self, client: httpx.Client, key: str, sim: PipedriveSimulator) -> None:
        super().__init__(client, key)
        self.sim = sim

    def calls(self, method: str, path: str) -> int:
        return sum(1 for call in self.sim.calls if call == (method, path))


def connect(client: httpx.Client, sim: PipedriveSim, token: str) -> httpx.Response:
    credential = {"instance_url": sim.base_url, "api_token": token}
    return client.post(
        "/v1/application",
        json={"type": "Pipedrive", "authorization": "key", "credential": credential},
    )


def running_company(
    directory: Path, database: Database, pipedrive: PipedriveSim
) -> Iterator[Company]:
    settings = pipedrive.settings(directory, database)
    admin = create_account(settings)
    token = pipedrive.simulator.add_api_token()
    with RunningGateway(create_app(settings)) as gateway, gateway.client(admin.key) as client:
        created = connect(client, pipedrive, token)
        assert created.status_code == 201, created.text
        yield Company(client, created.json()["key"], pipedrive.simulator)


@pytest.fixture
def company(tmp_path: Path, database: Database, pipedrive: PipedriveSim) -> Iterator[Company]:
    """A connected company (on SQLite, unless a test asks for both stores)."""
    yield from running_company(tmp_path / "data", database, pipedrive)


@on_both_stores
def test_an_api_token_connects_and_a_wrong_one_is_refused(
    company: Company, pipedrive: PipedriveSim
) -> None:
    app = company.client.get(f"/v1/application/{company.key}").json()
    assert app["type"] == "Pipedrive" and app["company"]["id"] == str(company.sim.company_id)
    assert app["me"]["id"] == str(company.sim.admin)
    wrong = connect(company.client, pipedrive, "not-a-token")
    assert wrong.status_code == 401 and wrong.json()["detail"]["code"] == "UNAUTHORIZED"
    assert company.ok("GET", "/entity/contact/count") == {"total": 0}
    # the token travels in the x-api-token header, never in a URL crmgate logs
    assert company.sim.auth and {how for _, _, how in company.sim.auth} == {"header"}
    evil = company.client.post(
        "/v1/application",
        json={
            "type": "Pipedrive",
            "authorization": "key",
            "credential": {"instance_url": "https://evil.example", "api_token": "x"},
        },
    )
    assert evil.status_code in (400, 422)  # a company domain is *.pipedrive.com
    platform = company.client.get("/v1/platform/Pipedrive").json()
    kinds = {a["type"]: a for a in platform["authorization"]}
    assert set(kinds) == {"key", "oAuth-internal", "oAuth-external-refresh"}
    assert [f["name"] for f in kinds["key"]["platform_credential"]] == ["instance_url", "api_token"]
    assert platform["resource"]["entities"]["user"] == ["list", "count", "get", "describe"]


ENTITIES: dict[str, tuple[str, dict[str, Any], dict[str, Any]]] = {
    "contact": ("last_name", {"first_name": "Ada", "position": "CFO"}, {"position": "CEO"}),
    "account": ("name", {}, {"name": "Renamed"}),
    "opportunity": (
        "name",
        {"amount": 2500.5, "expected_end_at": "2027-03-31T00:00:00+00:00"},
        {"amount": 100.0, "state": "won"},
    ),
}


@pytest.mark.parametrize("entity", sorted(ENTITIES))
def test_every_entity_has_the_whole_life_cycle(company: Company, entity: str) -> None:
    v2_life_cycle(company, entity, ENTITIES[entity])


def v2_life_cycle(
    app: Company, entity: str, record: tuple[str, dict[str, Any], dict[str, Any]]
) -> None:
    """check_life_cycle for a v2 object: the same routes, but pages sorted by id (Pipedrive's
    v2 lists sort by id, created_at and updated_at only; any other sort is refused, the
    deprecated v1 lists are not used), and a deleted record is only marked so in Pipedrive."""
    name_field, extra, change = record
    base = f"/entity/{entity}"
    ids = [
        app.ok("POST", base, 201, json={name_field: f"{entity} {n}", **extra})["id"]
        for n in (3, 1, 2)
    ]
    one = app.ok("GET", f"{base}/{ids[0]}")
    assert one[name_field] == f"{entity} 3"
    for key, value in extra.items():
        assert one[key] == value, key
    made = [f"{entity} {n}" for n in (3, 1, 2)]
    page_one = app.ok("GET", f"{base}/list", params={"page_size": 2, "sort": "id"})
    page_two = app.ok("GET", f"{base}/list", params={"page_size": 2, "page": 2, "sort": "id"})
    assert [r[name_field] for r in page_one + page_two] == made
    backwards = app.ok("GET", f"{base}/list", params={"sort": "-id"})
    assert [r[name_field] for r in backwards] == made[::-1]
    by_name = app.call("GET", f"{base}/list", params={"sort": name_field})
    assert by_name.status_code == 400 and "id, created_at, updated_at" in by_name.text
    v1_lists = ("/v1/persons", "/v1/organizations", "/v1/deals")
    assert not [call for call in app.sim.calls if call[1] in v1_lists]  # deprecated: unused
    chosen = app.ok("GET", f"{base}/list", params={"filter": f"{name_field} eq '{entity} 2'"})
    assert [r["id"] for r in chosen] == [ids[2]]
    assert app.ok("GET", f"{base}/count") == {"total": 3}
    later = app.ok("GET", f"{base}/count", params={"filter": f"{name_field} ge '{entity} 2'"})
    assert later == {"total": 2}

    app.ok("PUT", f"{base}/{ids[1]}", json=change)
    changed = app.ok("GET", f"{base}/{ids[1]}")
    for key, value in change.items():
        assert changed[key] == value, key
    if name_field not in change:
        assert changed[name_field] == f"{entity} 1"  # what the change leaves, it keeps

    described = app.ok("GET", f"{base}/describe")
    assert described["entity"] == entity and name_field in described["schema"]["fetch"]["fields"]
    native = described["native_entity"]

    assert app.call("DELETE", f"{base}/{ids[0]}").status_code == 204
    assert app.sim.records[native][ids[0]]["is_deleted"] is True  # kept 30 days, marked
    assert app.call("GET", f"{base}/{ids[0]}").status_code == 404

    bulk = app.ok(
        "POST",
        f"{base}/bulk",
        201,
        json={"item": [{name_field: f"{entity} bulk {n}", **extra} for n in range(3)]},
    )["item"]
    assert [i["status"] for i in bulk] == [201, 201, 201]
    created = [i["id"] for i in bulk]
    updated = app.ok("PUT", f"{base}/bulk", json={"item": [{"id": i, **change} for i in created]})
    assert [i["status"] for i in updated["item"]] == [200, 200, 200]
    assert app.ok("GET", f"{base}/count") == {"total": 5}
    removed = app.ok("DELETE", f"{base}/bulk", json={"item": [{"id": i} for i in created]})
    assert [i["status"] for i in removed["item"]] == [204, 204, 204]
    assert app.ok("GET", f"{base}/count") == {"total": 2}

    answer = app.ok("POST", "/request", 201, json={"path": f"api/v2/{native}/{ids[2]}"})
    assert answer["status_code"] == 200
    assert json.loads(base64.b64decode(answer["content"]))["data"]["id"] == int(ids[2])


def test_leads_have_the_whole_life_cycle(company: Company) -> None:
    org = company.sim.insert("organizations", {"name": "Lead owner org"})
    links = {"relation": {"account": [{"type": "account", "entity": {"id": org}}]}}
    check_life_cycle(
        company, "lead", ("description", {}, {}), ("v1/{native}/{id}", "data.id"), links
    )
    lead = company.ok("GET", "/entity/lead/list")[0]
    assert lead["relation"]["account"] == [{"type": "account", "entity": {"id": org}}]
    assert len(lead["id"]) == 36  # Pipedrive's lead ids are UUIDs


def test_lead_counts_read_every_page_of_the_leads_own_paging(company: Company) -> None:
    """The leads API pages with additional_data.{start, limit, more_items_in_collection}, not
    the pagination object of the other v1 lists."""
    org = int(company.sim.insert("organizations", {"name": "Many leads"}))
    for n in range(600):
        company.sim.insert("leads", {"title": f"Lead {n}", "organization_id": org})
    assert company.ok("GET", "/entity/lead/count") == {"total": 600}
    assert company.calls("GET", "/v1/leads") == 2
    assert company.sim.filters == {}  # no conditions, no saved filter


def test_custom_fields_take_v2_shapes(company: Company) -> None:
    """v2 writes and shows some custom fields as objects or lists (the v2 migration guide):
    crmgate reads them flat, as v1 did (an amount's currency as <key>_currency, options as
    "1,2"), and writes them back in v2's shapes."""
    budget = company.sim.add_custom_field("deals", "Budget", "monetary", key="b" + "1" * 39)
    tags = company.sim.add_custom_field(
        "persons", "Tags", "set", ("VIP", "Press", "Partner"), key="c" + "2" * 39
    )
    where = company.sim.add_custom_field("persons", "Office", "address", key="d" + "3" * 39)
    described = company.ok("GET", "/entity/opportunity/describe")["schema"]["fetch"]["fields"]
    assert described[budget]["type"] == "number" and f"{budget}_currency" in described
    deal = company.ok(
        "POST",
        "/entity/opportunity",
        201,
        json={"name": "Big", budget: 2300, f"{budget}_currency": "EUR"},
    )["id"]
    assert company.sim.records["deals"][deal][budget] == {"value": 2300, "currency": "EUR"}
    read = company.ok("GET", f"/entity/opportunity/{deal}")
    assert read[budget] == 2300 and read[f"{budget}_currency"] == "EUR"
    company.ok("PUT", f"/entity/opportunity/{deal}", json={budget: 100})  # keeps the currency
    assert company.sim.records["deals"][deal][budget] == {"value": 100, "currency": "EUR"}
    company.ok("PUT", f"/entity/opportunity/{deal}", json={f"{budget}_currency": "USD"})
    assert company.sim.records["deals"][deal][budget] == {"value": 100, "currency": "USD"}
    no_currency = company.call("POST", "/entity/opportunity", json={"name": "X", budget: 5})
    assert no_currency.status_code == 422 and f"{budget}_currency" in no_currency.text
    person = company.ok(
        "POST",
        "/entity/contact",
        201,
        json={"last_name": "Tagged", tags: "1,3", where: "Main St 1, Tallinn"},
    )["id"]
    stored = company.sim.records["persons"][person]
    assert stored[tags] == [1, 3] and stored[where] == {"value": "Main St 1, Tallinn"}
    read = company.ok("GET", f"/entity/contact/{person}")
    assert read[tags] == "1,3" and read[where] == "Main St 1, Tallinn"
    found = company.ok(
        "GET", "/entity/opportunity/list", params={"filter": f"{budget} ge 50 and name eq 'Big'"}
    )
    assert [d["id"] for d in found] == [deal]


def test_activities_of_each_type_have_their_life_cycle(company: Company) -> None:
    """Pipedrive sorts activities by id, dates and due date only: the same life cycle as
    check_life_cycle, sorted by due date, for tasks, calls and meetings in one company."""
    company.sim.burst = 1000  # three life cycles go beyond 80 calls in 2 seconds
    company.sim.insert("activities", {"subject": "Lunch", "type": "lunch"})  # not any of them
    for entity in ("task", "call", "meeting"):
        activity_life_cycle(company, entity)


def activity_life_cycle(company: Company, entity: str) -> None:
    when = "due_at" if entity == "task" else "started_at"
    base = f"/entity/{entity}"
    ids = [
        company.ok("POST", base, 201, json={"subject": f"{entity} {n}", when: f"2027-01-0{n}"})[
            "id"
        ]
        for n in (3, 1, 2)
    ]
    assert company.sim.records["activities"][ids[0]]["type"] == entity
    one = company.ok("GET", f"{base}/{ids[0]}")
    assert one["subject"] == f"{entity} 3" and one[when] == "2027-01-03T00:00:00+00:00"
    first = company.ok("GET", f"{base}/list", params={"page_size": 2, "sort": when})
    second = company.ok("GET", f"{base}/list", params={"page_size": 2, "page": 2, "sort": when})
    assert [r["subject"] for r in first + second] == [f"{entity} {n}" for n in (1, 2, 3)]
    backwards = company.ok("GET", f"{base}/list", params={"sort": f"-{when}"})
    assert [r["subject"] for r in backwards] == [f"{entity} {n}" for n in (3, 2, 1)]
    by_subject = company.call("GET", f"{base}/list", params={"sort": "subject"})
    assert by_subject.status_code == 400 and f"id, {when}, created_at" in by_subject.text
    chosen = company.ok("GET", f"{base}/list", params={"filter": f"subject eq '{entity} 2'"})
    assert [r["id"] for r in chosen] == [ids[2]]
    assert company.ok("GET", f"{base}/count") == {"total": 3}
    later = company.ok("GET", f"{base}/count", params={"filter": f"{when} ge '2027-01-02'"})
    assert later == {"total": 2}
    company.ok("PUT", f"{base}/{ids[1]}", json={"description": "Agenda"})
    assert company.ok("GET", f"{base}/{ids[1]}")["description"] == "Agenda"
    described = company.ok("GET", f"{base}/describe")
    assert described["native_entity"] == "activities"
    assert "subject" in described["schema"]["create"]["fields"]
    lunch = next(i for i, r in company.sim.records["activities"].items() if r["type"] == "lunch")
    assert company.call("GET", f"{base}/{lunch}").status_code == 404
    assert company.call("DELETE", f"{base}/{lunch}").status_code == 404
    assert company.call("DELETE", f"{base}/{ids[0]}").status_code == 204
    bulk = company.ok(
        "POST", f"{base}/bulk", 201, json={"item": [{"subject": f"bulk {n}"} for n in range(3)]}
    )["item"]
    assert [i["status"] for i in bulk] == [201, 201, 201]
    removed = company.ok("DELETE", f"{base}/bulk", json={"item": [{"id": i["id"]} for i in bulk]})
    assert [i["status"] for i in removed["item"]] == [204, 204, 204]
    assert company.ok("GET", f"{base}/count") == {"total": 2}
    raw = company.ok("POST", "/request", 201, json={"path": f"api/v2/activities/{ids[2]}"})
    assert raw["status_code"] == 200 and f'"id":{ids[2]}'.encode() in base64.b64decode(
        raw["content"]
    ).replace(b" ", b"")


def test_deals_link_organizations_and_people_and_filter_by_them(company: Company) -> None:
    acme = company.ok("POST", "/entity/account", 201, json={"name": "Acme"})["id"]
    initech = company.ok("POST", "/entity/account", 201, json={"name": "Initech"})["id"]
    bob = company.ok("POST", "/entity/contact", 201, json={"last_name": "Bob Slydell"})["id"]

    def link(kind: str, record_id: str) -> dict[str, Any]:
        return {kind: [{"type": kind, "entity": {"id": record_id}}]}

    deal = company.ok(
        "POST",
        "/entity/opportunity",
        201,
        json={"name": "TPS reports", "relation": {**link("account", acme), **link("contact", bob)}},
    )["id"]
    company.ok(
        "POST",
        "/entity/opportunity",
        201,
        json={"name": "Other", "relation": link("account", acme)},
    )
    read = company.ok("GET", f"/entity/opportunity/{deal}")
    assert read["relation"]["account"] == link("account", acme)["account"]
    assert read["relation"]["contact"] == link("contact", bob)["contact"]
    assert company.sim.records["deals"][deal]["org_id"] == int(acme)  # v2 wants numbers
    company.ok("PUT", f"/entity/opportunity/{deal}", json={"relation": link("account", initech)})
    moved = company.ok("GET", f"/entity/opportunity/{deal}")
    assert moved["relation"]["account"] == link("account", initech)["account"]
    found = company.ok(
        "GET", "/entity/opportunity/list", params={"filter": f"relation.account eq '{initech}'"}
    )
    assert [d["id"] for d in found] == [deal]
    expanded = company.ok("GET", f"/entity/opportunity/{deal}", params={"expand": "account"})
    assert expanded["relation"]["account"][0]["entity"]["name"] == "Initech"
    bad = company.call(
        "GET", "/entity/opportunity/list", params={"filter": "relation.account eq '1 OR 1=1'"}
    )
    assert bad.status_code == 400


def test_contacts_typed_lists_custom_fields_and_hostile_filters(company: Company) -> None:
    # crmgate's filter language names fields that start with a letter (a key such as
    # 9f86d0...  can be read and written, not filtered)
    tier = company.sim.add_custom_field(
        "persons", "Loyalty tier", "enum", ("Gold", "Silver"), key="a" + "0" * 38 + "1"
    )
    since = company.sim.add_custom_field("persons", "Customer since", "date")
    described = company.ok("GET", "/entity/contact/describe")["schema"]["fetch"]["fields"]
    assert described[tier]["label"] == "Loyalty tier" and described[tier]["custom"] is True
    assert described[tier]["enum"] == ["1", "2"] and len(tier) == 40
    assert described[since]["type"] == "date"
    assert described["email"]["item_types"] == ["work", "home", "other"]
    body = {
        "first_name": "Grace",
        "last_name": "Hopper",
        "email": [
            {"type": "work", "address": "grace@navy.example"},
            {"type": "home", "address": "grace@home.example"},
        ],
        "phone": [{"type": "mobile", "number": "+1 555 0100"}],
        tier: 1,
        since: "2020-05-01",
    }
    grace = company.ok("POST", "/entity/contact", 201, json=body)["id"]
    company.ok("POST", "/entity/contact", 201, json={"first_name": "Ada", "last_name": "Lovelace"})
    stored = company.sim.records["persons"][grace]
    assert stored["emails"][0] == {"value": "grace@navy.example", "label": "work", "primary": True}
    assert stored[tier] == 1
    read = company.ok("GET", f"/entity/contact/{grace}")
    assert read["first_name"] == "Grace" and read["last_name"] == "Hopper"
    assert read["email"] == [
        {"type": "work", "address": "grace@navy.example"},
        {"type": "home", "address": "grace@home.example"},
    ]
    assert read["phone"] == [{"type": "mobile", "number": "+1 555 0100"}]
    assert read[tier] == "1" and read[since] == "2020-05-01"  # an option id, as text
    assert read["created_at"].endswith("+00:00")
    found = company.ok("GET", "/entity/contact/list", params={"filter": "email contains 'navy'"})
    assert [c["id"] for c in found] == [grace]
    gold = company.ok("GET", "/entity/contact/list", params={"filter": f"{tier} eq '1'"})
    assert [c["id"] for c in gold] == [grace]
    starts = company.ok(
        "GET", "/entity/contact/list", params={"filter": "first_name startswith 'ada'"}
    )
    assert [c["last_name"] for c in starts] == ["Lovelace"]
    none = company.ok("GET", "/entity/contact/list", params={"filter": "position eq null"})
    assert len(none) == 2
    for hostile in ["x' OR 1=1", '"}]},{"glue":"or","conditions":[', "Grace Hopper' --"]:
        quoted = hostile.replace("'", "''")
        listed = company.ok(
            "GET", "/entity/contact/list", params={"filter": f"last_name eq '{quoted}'"}
        )
        assert listed == []
    for wildcard in ("%", "_", "Gr%ce"):
        refused = company.call(
            "GET", "/entity/contact/list", params={"filter": f"last_name contains '{wildcard}'"}
        )
        assert refused.status_code == 400 and "wildcards" in refused.text
    company.ok("PUT", f"/entity/contact/{grace}", json={"email": []})
    assert company.ok("GET", f"/entity/contact/{grace}")["email"] == []
    assert company.sim.records["persons"][grace]["emails"] == []


def test_contact_names_are_written_as_pipedrive_s_one_name(company: Company) -> None:
    """Pipedrive keeps one name and splits it; crmgate writes "first last" and reads the split,
    and a change of one half keeps the other."""
    grace = company.ok(
        "POST", "/entity/contact", 201, json={"first_name": "Grace", "last_name": "Hopper"}
    )["id"]
    assert company.sim.records["persons"][grace]["name"] == "Grace Hopper"
    read = company.ok("GET", f"/entity/contact/{grace}")
    assert (read["first_name"], read["last_name"]) == ("Grace", "Hopper")
    company.ok("PUT", f"/entity/contact/{grace}", json={"last_name": "Murray Hopper"})
    assert company.sim.records["persons"][grace]["name"] == "Grace Murray Hopper"
    company.ok("PUT", f"/entity/contact/{grace}", json={"first_name": "Amazing"})
    read = company.ok("GET", f"/entity/contact/{grace}")
    assert (read["first_name"], read["last_name"]) == ("Amazing", "Murray Hopper")
    found = company.ok(
        "GET", "/entity/contact/list", params={"filter": "last_name eq 'murray hopper'"}
    )
    assert [c["id"] for c in found] == [grace]
    described = company.ok("GET", "/entity/contact/describe")["schema"]["create"]["fields"]
    assert {"first_name", "last_name"} <= set(described)


def test_filters_are_made_once_reused_and_made_again_when_deleted(
    company: Company,
) -> None:
    company.sim.insert("persons", {"name": "Ann Smith"})
    params = {"filter": "last_name eq 'Smith'"}
    for _ in range(3):
        assert len(company.ok("GET", "/entity/contact/list", params=params)) == 1
    assert company.ok("GET", "/entity/contact/count", params=params) == {"total": 1}
    assert company.calls("POST", "/v1/filters") == 1
    assert company.calls("GET", "/v1/personFields") == 1  # the describe gave the field ids
    made = next(iter(company.sim.filters.values()))
    assert made["name"].startswith("crmgate ") and made["type"] == "people"
    # the documented minimum structure: an AND group, then an (empty) OR group
    groups = made["conditions"]["conditions"]
    assert [g["glue"] for g in groups] == ["and", "or"] and groups[1]["conditions"] == []
    company.sim.filters.clear()  # someone deletes it in Pipedrive
    assert len(company.ok("GET", "/entity/contact/list", params=params)) == 1
    assert company.calls("POST", "/v1/filters") == 2
    company.sim.filters.clear()  # a count recovers the same way
    assert company.ok("GET", "/entity/contact/count", params=params) == {"total": 1}
    assert company.calls("POST", "/v1/filters") == 3


def test_filters_use_query_parameters_first_check_found_ones_and_delete_evicted_ones(
    company: Company, pipedrive: PipedriveSim, monkeypatch: pytest.MonkeyPatch
) -> None:
    sim = company.sim
    org = sim.insert("organizations", {"name": "Initech"})
    ann = sim.insert("persons", {"name": "Ann Smith", "org_id": int(org)})
    sim.insert("persons", {"name": "Bob Jones"})
    deal = sim.insert("deals", {"title": "TPS", "org_id": int(org)})
    sim.insert("deals", {"title": "Other"})
    # ids, owners and relations: the v2 list's own query parameters, no saved filter
    mine = company.ok(
        "GET", "/entity/contact/list", params={"filter": f"relation.account eq '{org}'"}
    )
    assert [c["id"] for c in mine] == [ann]
    one = company.ok("GET", "/entity/opportunity/list", params={"filter": f"id eq '{deal}'"})
    assert [d["id"] for d in one] == [deal]
    owned = company.ok(
        "GET", "/entity/opportunity/count", params={"filter": f"relation.user eq '{sim.admin}'"}
    )
    assert owned == {"total": 2}
    assert company.calls("POST", "/v1/filters") == 0 and sim.filters == {}
    queries = [q for method, path, q in sim.queries if path == "/api/v2/deals"]
    assert {"ids": deal}.items() <= queries[0].items() and "owner_id" in queries[-1]
    # a deal's owner is user_id in dealFields: with another condition, a filter names it so
    both = f"relation.user eq '{sim.admin}' and name eq 'TPS'"
    assert len(company.ok("GET", "/entity/opportunity/list", params={"filter": both})) == 1
    # a filter found by its name is used only if its conditions are still crmgate's
    params = {"filter": "last_name eq 'Smith'"}
    assert [c["id"] for c in company.ok("GET", "/entity/contact/list", params=params)] == [ann]
    tampered = max(sim.filters)
    sim.filters[tampered]["conditions"]["conditions"][0]["conditions"][0]["value"] = "Jones"
    other = AppClient(
        company.client, connect(company.client, pipedrive, sim.add_api_token()).json()["key"]
    )
    assert [c["id"] for c in other.ok("GET", "/entity/contact/list", params=params)] == [ann]
    assert company.calls("POST", "/v1/filters") == 3  # one for `both`, two for Smith
    third = AppClient(
        company.client, connect(company.client, pipedrive, sim.add_api_token()).json()["key"]
    )
    assert [c["id"] for c in third.ok("GET", "/entity/contact/list", params=params)] == [ann]
    assert company.calls("POST", "/v1/filters") == 3  # found, checked and trusted
    # the filters crmgate keeps are bounded: one it lets go of is deleted in Pipedrive
    first = min(sim.filters)  # `both`: the oldest of the four (application, filter) kept
    monkeypatch.setattr(pipedrive_connector, "MAX_FILTERS", 4)
    company.ok("GET", "/entity/contact/list", params={"filter": "last_name eq 'Jones'"})
    assert first not in sim.filters and len(sim.filters) == 3


def test_notes_link_records_and_filter_by_their_relations(company: Company) -> None:
    deal = company.sim.insert("deals", {"title": "Deal"})
    person = company.sim.insert("persons", {"name": "Pat"})
    on_deal = {"relation": {"opportunity": [{"type": "opportunity", "entity": {"id": deal}}]}}
    on_person = {"relation": {"contact": [{"type": "contact", "entity": {"id": person}}]}}
    first = company.ok("POST", "/entity/note", 201, json={"body": "On the deal", **on_deal})["id"]
    company.ok("POST", "/entity/note", 201, json={"body": "On the person", **on_person})
    bad = company.call("POST", "/entity/note", json={"body": "Nowhere"})
    assert bad.status_code == 422 and "deal_id" in bad.json()["detail"]["message"]
    read = company.ok("GET", f"/entity/note/{first}")
    assert read["body"] == "On the deal" and read["created_at"].endswith("+00:00")
    assert read["relation"]["opportunity"][0]["entity"]["id"] == deal
    found = company.ok(
        "GET", "/entity/note/list", params={"filter": f"relation.contact eq '{person}'"}
    )
    assert [n["body"] for n in found] == ["On the person"]
    pages = [
        company.ok("GET", "/entity/note/list", params={"page_size": 1, "page": p, "sort": "body"})
        for p in (1, 2, 3)
    ]
    assert [[n["body"] for n in page] for page in pages] == [["On the deal"], ["On the person"], []]
    assert company.ok("GET", "/entity/note/count") == {"total": 2}
    by_body = company.call("GET", "/entity/note/list", params={"filter": "body eq 'x'"})
    assert by_body.status_code == 400
    company.ok("PUT", f"/entity/note/{first}", json={"body": "Edited"})
    assert company.sim.records["notes"][first]["content"] == "Edited"
    assert company.call("DELETE", f"/entity/note/{first}").status_code == 204
    assert company.call("GET", f"/entity/note/{first}").status_code == 404


def test_users_are_read_only(company: Company) -> None:
    other = company.sim.add_user("Bob Builder", "bob@acme.example")
    users = company.ok("GET", "/entity/user/list")
    assert [u["username"] for u in users] == ["ada@acme.example", "bob@acme.example"]
    assert company.ok("GET", "/entity/user/count") == {"total": 2}
    bob = company.ok("GET", f"/entity/user/{other}")
    assert bob["last_name"] == "Bob Builder" and bob["is_admin"] is False
    assert bob["email"] == [{"type": "work", "address": "bob@acme.example"}]
    refused = company.call("POST", "/entity/user", json={"last_name": "X"})
    assert refused.status_code == 403 and refused.json()["detail"]["code"] == "NOT_SUPPORTED"
    assert company.ok("GET", "/entity/user/describe")["schema"]["create"]["allowed"] is False
    # Pipedrive's users API neither filters nor sorts: crmgate does, on the one list it gives
    company.sim.add_user("Carol Builder", "carol@acme.example")
    builders = company.ok(
        "GET",
        "/entity/user/list",
        params={"filter": "last_name contains 'builder'", "sort": "-username"},
    )
    assert [u["username"] for u in builders] == ["carol@acme.example", "bob@acme.example"]
    assert company.ok("GET", "/entity/user/count", params={"filter": "is_admin eq false"}) == {
        "total": 2
    }


def test_pipedrive_errors_become_the_contracts(
    company: Company, pipedrive: PipedriveSim, tmp_path: Path, database: Database
) -> None:
    missing = company.call("POST", "/entity/opportunity", json={"amount": 5})
    assert missing.status_code == 422
    assert missing.json()["detail"]["errors"][0]["field"] == "title" or "title" in missing.text
    wrong_type = company.call("POST", "/entity/opportunity", json={"name": "X", "state": "maybe"})
    assert wrong_type.status_code == 422 and "status" in wrong_type.text
    assert company.call("GET", "/entity/contact/999999").status_code == 404
    assert company.call("GET", "/entity/contact/not-a-number").status_code == 404
    assert company.call("GET", "/entity/lead/not-a-uuid").status_code == 404
    unsupported = company.call("GET", "/entity/case/list")
    assert unsupported.status_code == 403 and "Pipedrive" in unsupported.text
    company.sim.burst = 0
    limited = company.call("GET", "/entity/contact/count")
    assert limited.status_code == 429 and int(limited.headers["Retry-After"]) == 2
    assert "Request over limit" in limited.json()["detail"]["message"]
    company.sim.burst = 1000
    for status in (500, 503):
        fault = Fault(status, "upstream failure", path="/api/v2/persons")
        # a write is sent once: its 5xx is the client's 502
        company.sim.faults.add(fault)
        failed = company.call("POST", "/entity/contact", json={"last_name": "Once"})
        assert failed.status_code == 502, (fault, failed.text)
        assert failed.json()["detail"]["code"] == "CRM_UNAVAILABLE"
        # a read is tried again (outbound.py, Retrying): one bad answer is not the client's
        company.sim.faults.add(fault)
        assert company.call("GET", "/entity/contact/list").status_code == 200
        assert not company.sim.faults  # each fault met its call
    # a 200 that is not JSON is no "not now": not tried again
    company.sim.faults.add(Fault(200, "<html>maintenance</html>", "text/html", path="/api/v2/*"))
    failed = company.call("GET", "/entity/contact/list")
    assert failed.status_code == 502 and failed.json()["detail"]["code"] == "CRM_UNAVAILABLE"
    # a user whose permission set forbids edits
    reader = company.sim.add_user("Rita Reader", "rita@acme.example")
    company.sim.read_only_users.add(reader)
    token = company.sim.add_api_token(reader)
    key = connect(company.client, pipedrive, token).json()["key"]
    reading = AppClient(company.client, key)
    assert reading.call("GET", "/entity/contact/count").status_code == 200
    refused = reading.call("POST", "/entity/contact", json={"last_name": "X"})
    assert refused.status_code == 403 and refused.json()["detail"]["code"] == "NOT_ALLOWED"
    assert "permissions" in refused.json()["detail"]["message"]


def test_pages_in_order_cost_one_call_per_500_records(
    company: Company, monkeypatch: pytest.MonkeyPatch
) -> None:
    for n in range(1100):
        company.sim.insert("persons", {"name": f"P{n:04d}"})

    def lists() -> int:
        return company.calls("GET", "/api/v2/persons")

    before = lists()
    seen: list[str] = []
    for page in range(1, 13):  # 100 a page; the last is empty
        rows = company.ok("GET", "/entity/contact/list", params={"page": page, "page_size": 100})
        seen += [r["first_name"] for r in rows]  # a one-word name is Pipedrive's first name
    assert seen == [f"P{n:04d}" for n in range(1100)]
    assert lists() - before == 3  # 500 + 500 + 100
    jump = company.ok(
        "GET", "/entity/contact/list", params={"page": 8, "page_size": 100, "fields": "id"}
    )
    assert len(jump) == 100 and lists() - before == 5  # a new walk: two batches to reach it
    before = lists()
    assert company.ok("GET", "/entity/contact/count") == {"total": 1100}
    assert lists() - before == 3
    # the walk knows where the list ends; another query with no walk near may not jump so far
    assert company.ok("GET", "/entity/contact/list", params={"page": 400}) == []
    far = company.call("GET", "/entity/contact/list", params={"page": 402, "sort": "-id"})
    assert far.status_code == 400 and "page by page" in far.text
    # sorts v2 does not have are refused, not served by the deprecated v1 list
    named = company.call("GET", "/entity/contact/list", params={"page": 9, "sort": "-last_name"})
    assert named.status_code == 400 and "id, created_at, updated_at" in named.text
    assert company.calls("GET", "/v1/persons") == 0
    # a count walks the list: it stops, clearly, at MAX_COUNT records
    monkeypatch.setattr(pipedrive_connector, "MAX_COUNT", 1000)
    before = lists()
    capped = company.call("GET", "/entity/contact/count")
    assert capped.status_code == 400 and "at most 1,000 records" in capped.text
    assert lists() - before == 2
    assert company.ok("GET", "/entity/contact/count", params={"filter": "id eq '5'"}) == {
        "total": 1
    }


@on_both_stores
def test_oauth_tokens_are_refreshed_with_basic_client_authentication(
    tmp_path: Path, database: Database, pipedrive: PipedriveSim
) -> None:
    sim = pipedrive.simulator
    sim.add_app("pd-client", "pd-secret")
    settings = pipedrive.settings(
        tmp_path / "oauth",
        database,
        oauth_clients={"Pipedrive": {"client_id": "pd-client", "client_secret": "pd-secret"}},
    )
    admin = create_account(settings)
    credential = {
        "instance_url": pipedrive.base_url,
        "access_token": sim.issue_access_token(),
        "refresh_token": sim.issue_refresh_token("pd-client"),
    }
    with RunningGateway(create_app(settings)) as gateway, gateway.client(admin.key) as client:
        created = client.post(
            "/v1/application",
            json={"type": "Pipedrive", "authorization": "oAuth-internal", "credential": credential},
        )
        assert created.status_code == 201, created.text
        app = AppClient(client, created.json()["key"])
        check_refresh(app, sim, lambda: sim.calls.count(("POST", "/oauth/token")), "invalid_grant")
        # OAuth tokens go as Bearer tokens; the token endpoint gets HTTP Basic
        assert {how for _, path, how in sim.auth if path != "/oauth/token"} == {"bearer"}
        assert {how for _, path, how in sim.auth if path == "/oauth/token"} == {"basic"}


def test_the_demo_seed_fills_a_small_company(pipedrive: PipedriveSim) -> None:
    seed_pipedrive(pipedrive.simulator)
    records = pipedrive.simulator.records
    assert len(records["organizations"]) == 3 and len(records["persons"]) == 5
    assert len(records["deals"]) == 3 and len(records["activities"]) == 3
    assert len(records["leads"]) == 2 and len(records["notes"]) == 2
    assert platform_overrides(pipedrive.base_url)["Pipedrive"]["oauth"]["token_url"].endswith(
        "/oauth/token"
    )


@on_both_stores
def test_the_oauth_flow_connects_a_pipedrive_company(
    tmp_path: Path, database: Database, pipedrive: PipedriveSim
) -> None:
    """Application mode end to end: Pipedrive's authorize page, the code exchanged with HTTP
    Basic client authentication, the token answer's api_domain as the instance URL."""
    bound = loopback_socket()
    base = f"http://127.0.0.1:{bound.getsockname()[1]}"
    done = "https://app.example/connected"
    sim = pipedrive.simulator
    sim.add_app("pd-flow", "pd-flow-secret", f"{base}/authorization/oauth/Pipedrive/callback")
    settings = pipedrive.settings(
        tmp_path / "flow",
        database,
        public_url=base,
        oauth_clients={
            "Pipedrive": {
                "client_id": "pd-flow",
                "client_secret": "pd-flow-secret",
                "redirects": [done],
            }
        },
    )
    admin = create_account(settings)
    with RunningGateway(create_app(settings), bound) as gateway:
        key = oauth_connect(gateway, admin.key, "Pipedrive", done, pipedrive.ca_file)
        with gateway.client(admin.key) as client:
            app = client.get(f"/v1/application/{key}").json()
            assert app["authorization"] == "oAuth-internal" and app["is_authorized"] is True
            assert app["credential"]["instance_url"] == pipedrive.base_url  # from api_domain
            counted = client.get(
                "/v1/application/entity/contact/count",
                headers={"X-API2CRM-APPLICATION-KEY": key},
            )
            assert counted.status_code == 200, counted.text
    assert sim.codes == {}  # exchanged, once
    assert {how for _, path, how in sim.auth if path == "/oauth/token"} == {"basic"}
