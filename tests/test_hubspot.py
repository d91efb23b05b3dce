"""HubSpot through crmgate's unified entity API, with HubSpot played by crmsim over HTTPS: the
same requests as for Salesforce, translated into HubSpot's search, batch and objects APIs."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from conftest import (
    Account,
    AppClient,
    Database,
    HubSpot,
    RunningGateway,
    check_life_cycle,
    check_refresh,
    create_account,
    loopback_socket,
    make_settings,
    migrate_database,
    oauth_connect,
    on_both_stores,
    sqlite_only,
)
from crmgate.api.app import create_app
from crmsim.hubspot import HubSpotSimulator

APP = "X-API2CRM-APPLICATION-KEY"


pytestmark = sqlite_only


class Portal(AppClient):
    """A client of one connected HubSpot application, and the portal behind it."""

    def __init__(self, client: httpx.Client, key: str, sim: HubSpotSimulator) -> None:
        super().__init__(client, key)
        self.sim = sim


@pytest.fixture
def portal(tmp_path: Path, database: Database, hubspot: HubSpot) -> Iterator[Portal]:
    settings = make_settings(
        tmp_path / "data",
        database.url,
        platform_overrides=hubspot.overrides(),
        outbound_ca_file=hubspot.ca_file,
    )
    migrate_database(settings)
    admin: Account = create_account(settings)
    token = hubspot.simulator.add_private_app()
    with RunningGateway(create_app(settings)) as gateway, gateway.client(admin.key) as client:
        created = client.post(
            "/v1/application",
            json={"type": "HubSpot", "authorization": "key", "credential": {"access_token": token}},
        )
        assert created.status_code == 201, created.text
        yield Portal(client, created.json()["key"], hubspot.simulator)


def test_leads_are_created_with_their_primary_contact(portal: Portal) -> None:
    ada = portal.ok("POST", "/entity/contact", 201, json={"last_name": "Ada"})["id"]
    check_life_cycle(
        portal,
        "lead",
        ("last_name", {"status": "new-stage-id", "rating": "WARM"}, {"type": "UPSELL"}),
        ("crm/v3/objects/{native}/{id}", "id"),
        links={"relation": {"contact": [{"type": "contact", "entity": {"id": ada}}]}},
    )
    alone = portal.call("POST", "/entity/lead", json={"last_name": "No contact"})
    assert alone.status_code == 422 and "primary contact" in alone.json()["detail"]["message"]
    lead = portal.ok("GET", "/entity/lead/list", params={"page_size": 1})[0]
    assert lead["relation"]["contact"] == [{"type": "contact", "entity": {"id": ada}}]
    assert portal.sim.links[("leads", lead["id"])][("contacts", ada)] == {578, 608}


def test_contacts_map_typed_lists_and_filters_become_search_filters(portal: Portal) -> None:
    body = {
        "first_name": "Grace",
        "last_name": "Hopper",
        "email": [{"type": "work", "address": "grace@navy.example"}],
        "phone": [{"type": "mobile", "number": "+1 555 0100"}],
        "address": [{"type": "main", "city": "Arlington", "country": "US"}],
    }
    grace = portal.ok("POST", "/entity/contact", 201, json=body)["id"]
    portal.ok("POST", "/entity/contact", 201, json={"last_name": "Lovelace"})
    stored = portal.sim.records["contacts"][grace]
    assert stored["email"] == "grace@navy.example" and stored["mobilephone"] == "+1 555 0100"
    read = portal.ok("GET", f"/entity/contact/{grace}")
    assert read["email"] == [{"type": "work", "address": "grace@navy.example"}]
    assert read["address"][0]["city"] == "Arlington"
    assert read["created_at"].endswith("+00:00")
    found = portal.ok("GET", "/entity/contact/list", params={"filter": "email contains 'navy'"})
    assert [c["id"] for c in found] == [grace]
    starts = portal.ok(
        "GET", "/entity/contact/list", params={"filter": "last_name startswith 'Lov'"}
    )
    assert [c["last_name"] for c in starts] == ["Lovelace"]
    none = portal.ok("GET", "/entity/contact/list", params={"filter": "first_name eq null"})
    assert [c["last_name"] for c in none] == ["Lovelace"]
    for hostile in ["x' OR 1=1", '"}],"filters":[{"propertyName":"email"', "*"]:
        quoted = hostile.replace("'", "''")
        assert (
            portal.ok("GET", "/entity/contact/list", params={"filter": f"last_name eq '{quoted}'"})
            == []
        )
    two_keys = portal.call("GET", "/entity/contact/list", params={"sort": "last_name,first_name"})
    assert two_keys.status_code == 400 and "one field" in two_keys.text


def test_numbers_and_dates_come_back_typed(portal: Portal) -> None:
    deal = portal.ok(
        "POST",
        "/entity/opportunity",
        201,
        json={
            "name": "Big",
            "pipeline_with_stage": "closedwon",
            "amount": 1500,
            "expected_end_at": "2027-02-01T00:00:00+00:00",
        },
    )["id"]
    portal.ok(
        "POST",
        "/entity/opportunity",
        201,
        json={"name": "Small", "pipeline_with_stage": "closedlost", "amount": 10},
    )
    read = portal.ok("GET", f"/entity/opportunity/{deal}")
    assert read["amount"] == 1500.0 and read["expected_end_at"] == "2027-02-01T00:00:00+00:00"
    big = portal.ok("GET", "/entity/opportunity/list", params={"filter": "amount gt 100"})
    assert [d["id"] for d in big] == [deal]
    soon = portal.ok(
        "GET", "/entity/opportunity/list", params={"filter": "expected_end_at lt '2027-03-01'"}
    )
    assert [d["id"] for d in soon] == [deal]


def test_hubspot_errors_become_the_contracts(portal: Portal) -> None:
    bad = portal.call("POST", "/entity/opportunity", json={"name": "No stage"})
    assert bad.status_code == 422 and "dealstage" in bad.json()["detail"]["message"]
    # HubSpot names its own property; the client is told the unified field
    assert [e["field"] for e in bad.json()["detail"]["errors"]] == ["pipeline_with_stage"]
    wrong_option = portal.call(
        "POST", "/entity/opportunity", json={"name": "X", "pipeline_with_stage": "nope"}
    )
    assert wrong_option.status_code == 422
    # unknown ids and unmapped entities: test_conformance; here HubSpot's own 10-second window
    portal.sim.ten_secondly = 0
    limited = portal.call("GET", "/entity/contact/count")
    assert limited.status_code == 429 and int(limited.headers["Retry-After"]) == 10
    assert "ten_secondly_rolling" in limited.json()["detail"]["message"]


@on_both_stores
def test_missing_scopes_are_not_allowed(
    tmp_path: Path, database: Database, hubspot: HubSpot
) -> None:
    settings = make_settings(
        tmp_path / "scoped",
        database.url,
        platform_overrides=hubspot.overrides(),
        outbound_ca_file=hubspot.ca_file,
    )
    migrate_database(settings)
    admin = create_account(settings)
    token = hubspot.simulator.add_private_app(scopes=("crm.objects.contacts.read",))
    with RunningGateway(create_app(settings)) as gateway, gateway.client(admin.key) as client:
        key = client.post(
            "/v1/application",
            json={"type": "HubSpot", "authorization": "key", "credential": {"access_token": token}},
        ).json()["key"]
        headers = {APP: key}
        assert (
            client.get("/v1/application/entity/contact/count", headers=headers).status_code == 200
        )
        refused = client.post(
            "/v1/application/entity/contact", headers=headers, json={"last_name": "X"}
        )
    assert refused.status_code == 403 and refused.json()["detail"]["code"] == "NOT_ALLOWED"
    assert "scopes" in refused.json()["detail"]["message"]


def test_unfiltered_lists_read_in_order_go_past_the_search_limit(portal: Portal) -> None:
    for n in range(10_150):
        portal.sim.insert("contacts", {"lastname": f"C{n:05d}"})

    def list_calls() -> int:
        return sum(1 for m, p in portal.sim.calls if m == "GET" and p == "/crm/v3/objects/contacts")

    seen: list[str] = []
    before = list_calls()
    for page in range(1, 104):  # 100 a page: the last pages are past the 10,000th record
        rows = portal.ok("GET", "/entity/contact/list", params={"page": page, "page_size": 100})
        seen += [r["last_name"] for r in rows]
    assert seen == [f"C{n:05d}" for n in range(10_150)]
    assert list_calls() - before == 102  # one call per 100 records, none for the empty end
    # a direct jump within the search's reach is one search call; past it, a clear refusal
    searches = sum(1 for _, p in portal.sim.calls if p.endswith("/search"))
    jump = portal.ok("GET", "/entity/contact/list", params={"page": 50, "page_size": 100})
    assert jump[0]["last_name"] == "C04900"
    assert sum(1 for _, p in portal.sim.calls if p.endswith("/search")) == searches + 1
    past_the_end = portal.ok("GET", "/entity/contact/list", params={"page": 150, "page_size": 100})
    assert past_the_end == []  # the walk knows where the list ends
    far = portal.call(  # another query (other fields), no walk near: too far for a jump
        "GET", "/entity/contact/list", params={"page": 102, "page_size": 100, "fields": "email"}
    )
    assert far.status_code == 400 and "page by page" in far.json()["detail"]["message"]
    filtered = portal.call(
        "GET",
        "/entity/contact/list",
        params={"page": 102, "page_size": 100, "filter": "last_name startswith 'C'"},
    )
    assert filtered.status_code == 400 and "narrow it with a filter" in filtered.text


@on_both_stores
def test_oauth_tokens_are_refreshed_with_hubspots_token_endpoint(
    tmp_path: Path, database: Database, hubspot: HubSpot
) -> None:
    sim = hubspot.simulator
    sim.add_app("hs-client", "hs-secret")
    settings = make_settings(
        tmp_path / "oauth",
        database.url,
        platform_overrides=hubspot.overrides(),
        outbound_ca_file=hubspot.ca_file,
        oauth_clients={"HubSpot": {"client_id": "hs-client", "client_secret": "hs-secret"}},
    )
    migrate_database(settings)
    admin = create_account(settings)
    credential = {
        "access_token": sim.issue_access_token(),
        "refresh_token": sim.issue_refresh_token("hs-client"),
    }

    def token_calls() -> int:
        return sum(1 for call in sim.calls if call == ("POST", "/oauth/v1/token"))

    with RunningGateway(create_app(settings)) as gateway, gateway.client(admin.key) as client:
        key = client.post(
            "/v1/application",
            json={"type": "HubSpot", "authorization": "oAuth-internal", "credential": credential},
        ).json()["key"]
        check_refresh(AppClient(client, key), sim, token_calls, "BAD_REFRESH_TOKEN")
        assert client.get(f"/v1/application/{key}").json()["is_authorized"] is False
        assert client.delete(f"/v1/application/{key}").status_code == 204
    revokes = [c for c in sim.calls if c[0] == "DELETE" and c[1].startswith("/oauth/v1/refresh")]
    assert len(revokes) == 1


def test_bulk_create_ids_follow_the_items_whatever_order_hubspot_answers_in(
    portal: Portal,
) -> None:
    names = [f"Ordered {n:02d}" for n in range(30)]
    made = portal.ok(
        "POST", "/entity/contact/bulk", 201, json={"item": [{"last_name": n} for n in names]}
    )["item"]
    for name, item in zip(names, made, strict=True):
        assert portal.sim.records["contacts"][item["id"]]["lastname"] == name


def test_bulk_delete_of_an_id_hubspot_does_not_have_is_not_found(portal: Portal) -> None:
    # HubSpot's batch archive answers 204 for ids it does not have: each chunk is read first
    kept = portal.sim.insert("contacts", {"lastname": "Kept"})
    gone = portal.sim.insert("contacts", {"lastname": "Gone"})
    removed = portal.ok(
        "DELETE", "/entity/contact/bulk", json={"item": [{"id": gone}, {"id": "999999"}]}
    )["item"]
    assert [i["status"] for i in removed] == [204, 404]
    assert list(portal.sim.records["contacts"]) == [kept]


def test_a_walk_survives_a_failed_call_and_far_jumps_use_the_search(portal: Portal) -> None:
    for n in range(650):
        portal.sim.insert("contacts", {"lastname": f"W{n:03d}"})

    def calls(kind: str) -> int:
        if kind == "search":
            return sum(1 for _, p in portal.sim.calls if p.endswith("/search"))
        return sum(1 for m, p in portal.sim.calls if m == "GET" and p == "/crm/v3/objects/contacts")

    params = {"page_size": 100}
    assert (
        portal.ok("GET", "/entity/contact/list", params={**params, "page": 1})[0]["last_name"]
        == "W000"
    )
    portal.sim.ten_secondly = 0
    assert (
        portal.call("GET", "/entity/contact/list", params={**params, "page": 2}).status_code == 429
    )
    portal.sim.ten_secondly = 10_000
    lists, searches = calls("list"), calls("search")
    second = portal.ok("GET", "/entity/contact/list", params={**params, "page": 2})
    assert second[0]["last_name"] == "W100"
    assert (calls("list") - lists, calls("search") - searches) == (1, 0)  # the walk went on
    far = portal.ok("GET", "/entity/contact/list", params={**params, "page": 6})
    assert far[0]["last_name"] == "W500"
    assert calls("search") - searches == 1  # one search call, not a walk over the gap


def test_search_limits_are_checked_before_hubspot_refuses(portal: Portal) -> None:
    star = portal.call("GET", "/entity/contact/list", params={"filter": "last_name contains '*'"})
    assert star.status_code == 400
    many = " and ".join(f"last_name ne 'x{n}'" for n in range(7))
    assert portal.call("GET", "/entity/contact/list", params={"filter": many}).status_code == 400


def test_cursor_walks_expire_and_keep_their_place_on_failure() -> None:
    import asyncio

    from crmgate.connectors.base import CursorWalks
    from crmgate.query import QueryError

    batches = {
        None: ([{"n": i} for i in range(3)], "b"),
        "b": ([{"n": i} for i in range(3, 6)], None),
    }
    fetched: list[str | None] = []
    failing = {"on": False}

    async def fetch(token: str | None) -> tuple[list[dict[str, Any]], str | None]:
        fetched.append(token)
        if failing["on"]:
            raise RuntimeError("the CRM is down")
        rows, following = batches[token]
        return list(rows), following

    async def go() -> None:
        walks = CursorWalks(lifetime=60)
        assert [r["n"] for r in await walks.page(("k",), 0, 2, fetch, 0)] == [0, 1]
        failing["on"] = True
        assert [r["n"] for r in await walks.page(("k",), 2, 1, fetch, 0)] == [2]  # from memory
        with pytest.raises(RuntimeError):
            await walks.page(("k",), 3, 2, fetch, 0)
        failing["on"] = False
        assert [r["n"] for r in await walks.page(("k",), 3, 2, fetch, 0)] == [3, 4]
        assert fetched == [None, "b", "b"]
        stale = CursorWalks(lifetime=0)
        await stale.page(("k",), 0, 2, fetch, 0)
        assert not stale.continues(("k",), 2)
        with pytest.raises(QueryError):
            await stale.page(("k",), 2, 1, fetch, 0)  # past the cold limit: refused

    asyncio.run(go())


def test_numbers_hubspot_sends_as_text_become_numbers_or_nothing() -> None:
    from crmgate.model.mapping import _from_native

    assert _from_native("1500", {"type": "number"}) == 1500.0
    assert _from_native("12345678901234567891", {"type": "integer"}) == 12345678901234567891
    for bad in ("NaN", "Infinity", "", "1_000"):
        assert _from_native(bad, {"type": "number"}) is None


def test_activities_get_hubspots_required_timestamp_when_the_client_gives_none(
    portal: Portal,
) -> None:
    from datetime import UTC, datetime, timedelta

    task = portal.ok("POST", "/entity/task", 201, json={"subject": "Call back"})["id"]
    note = portal.ok("POST", "/entity/note", 201, json={"body": "Met at the fair"})["id"]
    for object_type, record_id in (("tasks", task), ("notes", note)):
        stamp = portal.sim.records[object_type][record_id]["hs_timestamp"]
        when = datetime.fromisoformat(stamp.replace("Z", "+00:00"))
        assert abs(datetime.now(UTC) - when) < timedelta(minutes=1)
    given = portal.ok(
        "POST", "/entity/task", 201, json={"subject": "Later", "due_at": "2027-05-01T08:00:00Z"}
    )["id"]
    assert portal.ok("GET", f"/entity/task/{given}")["due_at"] == "2027-05-01T08:00:00+00:00"


def test_a_deal_is_associated_with_its_company_and_moved_to_another(portal: Portal) -> None:
    acme = portal.ok("POST", "/entity/account", 201, json={"name": "Acme"})["id"]
    globex = portal.ok("POST", "/entity/account", 201, json={"name": "Globex"})["id"]
    ada = portal.ok("POST", "/entity/contact", 201, json={"last_name": "Ada"})["id"]

    def link(target: str, record_id: str) -> dict[str, Any]:
        return {target: [{"type": target, "entity": {"id": record_id}}]}

    deal = portal.ok(
        "POST",
        "/entity/opportunity",
        201,
        json={
            "name": "Rockets",
            "pipeline_with_stage": "qualifiedtobuy",
            "relation": {**link("account", acme), **link("contact", ada)},
        },
    )["id"]
    # one create call, with HubSpot's primary deal-to-company association type
    assert portal.sim.links[("deals", deal)][("companies", acme)] == {5, 341}
    read = portal.ok("GET", f"/entity/opportunity/{deal}")
    assert read["relation"]["account"] == [{"type": "account", "entity": {"id": acme}}]
    assert read["relation"]["contact"][0]["entity"]["id"] == ada

    portal.ok(
        "POST",
        "/entity/opportunity",
        201,
        json={"name": "Alone", "pipeline_with_stage": "closedwon"},
    )
    by_company = portal.ok(
        "GET", "/entity/opportunity/list", params={"filter": f"relation.account eq '{acme}'"}
    )
    assert [d["id"] for d in by_company] == [deal]
    # a sorted list goes through the search API, whose results carry no associations: they
    # come from one batch read per associated object type
    listed = portal.ok("GET", "/entity/opportunity/list", params={"sort": "name"})
    assert [d["name"] for d in listed] == ["Alone", "Rockets"]
    assert "account" not in listed[0].get("relation", {})
    assert listed[1]["relation"]["account"][0]["entity"]["id"] == acme
    walked = portal.ok("GET", "/entity/opportunity/list")  # the objects API, associations= param
    assert {d["id"]: d.get("relation", {}).get("account") for d in walked}[deal] == [
        {"type": "account", "entity": {"id": acme}}
    ]

    portal.ok("PUT", f"/entity/opportunity/{deal}", json={"relation": link("account", globex)})
    moved = portal.ok("GET", f"/entity/opportunity/{deal}")
    assert moved["relation"]["account"][0]["entity"]["id"] == globex
    assert moved["name"] == "Rockets" and moved["relation"]["contact"][0]["entity"]["id"] == ada
    assert ("companies", acme) not in portal.sim.links[("deals", deal)]
    portal.ok("PUT", f"/entity/opportunity/{deal}", json={"relation": {"account": []}})
    assert "account" not in portal.ok("GET", f"/entity/opportunity/{deal}").get("relation", {})

    missing = portal.call(
        "POST",
        "/entity/opportunity",
        json={
            "name": "X",
            "pipeline_with_stage": "closedwon",
            "relation": link("account", "9999999"),
        },
    )
    assert missing.status_code == 422, missing.text
    described = portal.ok("GET", "/entity/opportunity/describe")
    assert "relation.account" in described["schema"]["fetch"]["fields"]


def test_activities_link_to_contacts_companies_and_deals(portal: Portal) -> None:
    acme = portal.ok("POST", "/entity/account", 201, json={"name": "Acme"})["id"]
    ada = portal.ok(
        "POST",
        "/entity/contact",
        201,
        json={
            "last_name": "Ada",
            "relation": {"account": [{"type": "account", "entity": {"id": acme}}]},
        },
    )["id"]
    assert portal.sim.links[("contacts", ada)][("companies", acme)] == {1, 279}
    notes = portal.ok(
        "POST",
        "/entity/note/bulk",
        201,
        json={
            "item": [
                {
                    "body": f"n{n}",
                    "relation": {"contact": [{"type": "contact", "entity": {"id": ada}}]},
                }
                for n in range(2)
            ]
        },
    )["item"]
    assert [n["status"] for n in notes] == [201, 201]
    for note in notes:
        assert portal.sim.links[("notes", note["id"])] == {("contacts", ada): {202}}
    about_ada = portal.ok(
        "GET",
        "/entity/note/list",
        params={"filter": f"relation.contact eq '{ada}'", "sort": "body"},
    )
    assert [n["body"] for n in about_ada] == ["n0", "n1"]
    moved = portal.ok(
        "PUT",
        "/entity/note/bulk",
        json={
            "item": [
                {
                    "id": notes[0]["id"],
                    "relation": {"account": [{"type": "account", "entity": {"id": acme}}]},
                },
                {
                    "id": notes[1]["id"],
                    "relation": {"account": [{"type": "account", "entity": {"id": "424242"}}]},
                },
            ]
        },
    )["item"]
    assert [m["status"] for m in moved] == [200, 422], moved  # no such company to link
    assert moved[1]["error"]["fields"] == ["relation.account"]
    assert ("companies", acme) in portal.sim.links[("notes", notes[0]["id"])]


def test_users_are_owners_read_whole_and_queried_in_memory(portal: Portal) -> None:
    for n in range(600):  # two pages of HubSpot's owners API (500 a call)
        portal.sim.add_owner(
            f"rep{n:03d}@portal.example", f"Rep{n:03d}", "Sales" if n % 2 else "Ops"
        )
    portal.sim.add_queue("Support inbox")  # an owner, but no user
    assert portal.ok("GET", "/entity/user/count") == {"total": 601}
    sales = portal.ok("GET", "/entity/user/count", params={"filter": "last_name eq 'sales'"})
    assert sales == {"total": 300}
    page = portal.ok(
        "GET",
        "/entity/user/list",
        params={
            "filter": "last_name eq 'Sales'",
            "sort": "-first_name",
            "page": 2,
            "page_size": 10,
        },
    )
    assert [u["first_name"] for u in page] == [f"Rep{n:03d}" for n in range(579, 559, -2)]
    assert page[0]["email"] == [{"type": "work", "address": "rep579@portal.example"}]
    found = portal.ok("GET", "/entity/user/list", params={"filter": "email contains 'rep007'"})
    assert [u["username"] for u in found] == ["rep007@portal.example"]
    one = portal.ok("GET", f"/entity/user/{found[0]['id']}")
    assert one["last_name"] == "Sales" and one["created_at"].endswith("+00:00")
    assert portal.call("GET", "/entity/user/424242").status_code == 404
    assert "first_name" in portal.ok("GET", "/entity/user/describe")["schema"]["fetch"]["fields"]
    refused = portal.call("POST", "/entity/user", json={"last_name": "X"})
    assert refused.status_code == 403


@on_both_stores
def test_the_oauth_flow_connects_a_hubspot_portal(
    tmp_path: Path, database: Database, hubspot: HubSpot
) -> None:
    """Application mode: an admin opens a session, the browser goes through HubSpot's authorize
    page and back, and the application exists with tokens only crmgate holds."""
    bound = loopback_socket()
    base = f"http://127.0.0.1:{bound.getsockname()[1]}"
    done = "https://app.example/connected"
    hubspot.simulator.add_app(
        "hs-flow", "hs-flow-secret", f"{base}/authorization/oauth/HubSpot/callback"
    )
    settings = make_settings(
        tmp_path / "flow",
        database.url,
        platform_overrides=hubspot.overrides(),
        outbound_ca_file=hubspot.ca_file,
        public_url=base,
        oauth_clients={
            "HubSpot": {
                "client_id": "hs-flow",
                "client_secret": "hs-flow-secret",
                "redirects": [done],
            }
        },
    )
    migrate_database(settings)
    admin = create_account(settings)
    with RunningGateway(create_app(settings), bound) as gateway:
        key = oauth_connect(gateway, admin.key, "HubSpot", done, hubspot.ca_file)
        with gateway.client(admin.key) as client:
            app = client.get(f"/v1/application/{key}").json()
            assert app["authorization"] == "oAuth-internal" and app["is_authorized"] is True
            counted = client.get("/v1/application/entity/contact/count", headers={APP: key})
            assert counted.status_code == 200, counted.text
            # the optional scopes (leads) were asked for, and this portal granted them
            leads = client.get("/v1/application/entity/lead/count", headers={APP: key})
            assert leads.status_code == 200, leads.text
    assert hubspot.simulator.codes == {}  # the code was exchanged, once


def test_custom_objects_have_the_generic_entity_routes(portal: Portal) -> None:
    from crmsim.hubspot import Prop

    cars = portal.sim.add_custom_object(
        "cars", "Car", "Cars", [Prop("model", label="Model"), Prop("year", "number", "Year")]
    )
    catalogue = {e["id"]: e for e in portal.ok("GET", "/entity/list", params={"page_size": 100})}
    assert catalogue[cars]["type"] == "custom" and catalogue[cars]["entity"] == "Car"
    assert catalogue["contacts"]["internalType"] == "unified"
    base = f"/entity/{cars}"
    first = portal.ok("POST", base, 201, json={"model": "Roadster", "year": 2008})["id"]
    portal.ok("POST", base, 201, json={"model": "Beetle", "year": 1938})
    assert portal.ok("GET", f"{base}/{first}")["model"] == "Roadster"
    recent = portal.ok("GET", f"{base}/list", params={"filter": "year gt 2000"})
    assert [c["id"] for c in recent] == [first]
    by_model = portal.ok("GET", f"{base}/list", params={"sort": "model"})
    assert [c["model"] for c in by_model] == ["Beetle", "Roadster"]
    portal.ok("PUT", f"{base}/{first}", json={"year": 2010})
    assert portal.ok("GET", f"{base}/{first}")["year"] == 2010
    described = portal.ok("GET", f"{base}/describe")
    assert described["custom"] and "model" in described["schema"]["create"]["fields"]
    assert portal.call("DELETE", f"{base}/{first}").status_code == 204
    assert portal.ok("GET", f"{base}/count") == {"total": 1}
    assert portal.call("GET", "/entity/p1_nothing/list").status_code == 404


def test_a_first_page_is_never_served_from_a_finished_walk(portal: Portal) -> None:
    assert portal.ok("GET", "/entity/contact/list") == []
    made = portal.ok("POST", "/entity/contact", 201, json={"last_name": "New"})["id"]
    assert [c["id"] for c in portal.ok("GET", "/entity/contact/list")] == [made]


def test_a_relation_change_touches_only_the_link_crmgate_shows(portal: Portal) -> None:
    acme = portal.ok("POST", "/entity/account", 201, json={"name": "Acme"})["id"]
    ada, bob = (
        portal.ok("POST", "/entity/contact", 201, json={"last_name": n})["id"] for n in ("A", "B")
    )
    deal = portal.ok(
        "POST",
        "/entity/opportunity",
        201,
        json={
            "name": "Two buyers",
            "pipeline_with_stage": "closedwon",
            "relation": {"contact": [{"type": "contact", "entity": {"id": ada}}]},
        },
    )["id"]
    portal.sim.associate("deals", deal, "contacts", bob)  # made in HubSpot, not through crmgate
    read = portal.ok("GET", f"/entity/opportunity/{deal}")
    assert read["relation"]["contact"][0]["entity"]["id"] == ada
    portal.ok("PUT", f"/entity/opportunity/{deal}", json={"relation": read["relation"]})
    linked = set(portal.sim.links[("deals", deal)])
    assert linked == {("contacts", ada), ("contacts", bob)}  # read and written back: both kept

    # A link HubSpot refuses leaves the record as it was: its properties and its old link
    portal.ok(
        "PUT",
        f"/entity/opportunity/{deal}",
        json={"relation": {"account": [{"type": "account", "entity": {"id": acme}}]}},
    )
    refused = portal.call(
        "PUT",
        f"/entity/opportunity/{deal}",
        json={
            "name": "Renamed",
            "relation": {"account": [{"type": "account", "entity": {"id": "99999"}}]},
        },
    )
    assert refused.status_code == 422, refused.text
    after = portal.ok("GET", f"/entity/opportunity/{deal}")
    assert after["name"] == "Two buyers"
    assert after["relation"]["account"][0]["entity"]["id"] == acme

    bad = portal.ok(
        "POST",
        "/entity/note/bulk",
        201,
        json={
            "item": [
                {"body": "fine"},
                {
                    "body": "bad link",
                    "relation": {"account": [{"type": "account", "entity": {"id": "x!"}}]},
                },
            ]
        },
    )["item"]
    assert [i["status"] for i in bad] == [201, 422]  # the bad item fails alone
