"""Microsoft Dynamics 365 (Dataverse) through crmgate's unified entity API, with the organisation
and Entra ID played by crmsim over HTTPS: OData queries, nextLink paging, lookups bound with
@odata.bind, $batch bulk, metadata-driven describe, and every way Dataverse says no."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from yarl import URL

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
from crmsim import seed
from crmsim.dynamics import DynamicsSimulator, platform_overrides, seed_dynamics
from crmsim.dynamics_schema import Attr, Table
from crmsim.faults import Fault
from crmsim.tls import Certificates

APP = "X-API2CRM-APPLICATION-KEY"
TYPE = "MicrosoftDynamics"


pytestmark = sqlite_only


class Dynamics(Simulated[DynamicsSimulator]):
    def credential(self, **more: str) -> dict[str, str]:
        token = self.simulator.issue_access_token(lifetime=3600)
        return {"instance_url": self.base_url, "access_token": token, **more}


@pytest.fixture
def dynamics(certificates: Certificates) -> Iterator[Dynamics]:
    yield from run_simulated(Dynamics, DynamicsSimulator(), certificates, platform_overrides)


class Org(AppClient):
    """A client of one connected Dynamics application, and the organisation behind it."""

    def __init__(self, client: httpx.Client, key: str, sim: DynamicsSimulator) -> None:
        super().__init__(client, key)
        self.sim = sim

    def calls(self, path: str, method: str = "GET") -> int:
        return sum(1 for m, p in self.sim.calls if m == method and p == path)


@pytest.fixture
def org(tmp_path: Path, database: Database, dynamics: Dynamics) -> Iterator[Org]:
    settings = dynamics.settings(tmp_path / "data", database)
    admin = create_account(settings)
    with RunningGateway(create_app(settings)) as gateway, gateway.client(admin.key) as client:
        created = client.post(
            "/v1/application",
            json={
                "type": TYPE,
                "authorization": "oAuth-external-refresh",
                "credential": dynamics.credential(),
            },
        )
        assert created.status_code == 201, created.text
        yield Org(client, created.json()["key"], dynamics.simulator)


def test_a_token_connects_as_its_user_and_a_wrong_one_is_refused(org: Org) -> None:
    app = org.client.get(f"/v1/application/{org.key}").json()
    assert app["type"] == TYPE and app["company"]["id"] == org.sim.organization_id
    assert app["me"]["id"] == org.sim.admin.id and app["me"]["username"] == "ada@contoso.example"
    wrong = org.client.post(
        "/v1/application",
        json={
            "type": TYPE,
            "authorization": "oAuth-external-refresh",
            "credential": {"instance_url": org.sim.base_url, "access_token": "nope"},
        },
    )
    assert wrong.status_code == 401 and wrong.json()["detail"]["code"] == "UNAUTHORIZED"
    elsewhere = org.client.post(
        "/v1/application",
        json={
            "type": TYPE,
            "authorization": "oAuth-external-refresh",
            "credential": {"instance_url": "https://evil.example", "access_token": "x"},
        },
    )
    assert elsewhere.status_code == 422


def test_users_are_read_only(org: Org) -> None:
    users = org.ok("GET", "/entity/user/list")
    assert [u["username"] for u in users] == ["ada@contoso.example"]
    assert users[0]["email"] == [{"type": "work", "address": "ada@contoso.example"}]
    assert org.ok("GET", f"/entity/user/{org.sim.admin.id}")["last_name"] == "Admin"
    refused = org.call("POST", "/entity/user", json={"last_name": "X"})
    assert refused.status_code == 403 and refused.json()["detail"]["code"] == "NOT_SUPPORTED"


def test_an_opportunity_links_its_account_with_odata_bind(org: Org) -> None:
    first = org.ok("POST", "/entity/account", 201, json={"name": "Fourth Coffee"})["id"]
    second = org.ok("POST", "/entity/account", 201, json={"name": "Litware"})["id"]
    link = {"account": [{"type": "account", "entity": {"id": first}}]}
    deal = org.ok("POST", "/entity/opportunity", 201, json={"name": "Big", "relation": link})["id"]
    assert org.sim.records["opportunity"][deal]["parentaccountid"] == ("account", first)
    read = org.ok("GET", f"/entity/opportunity/{deal}")
    assert read["relation"]["account"] == [{"type": "account", "entity": {"id": first}}]
    moved = {"account": [{"type": "account", "entity": {"id": second}}]}
    org.ok("PUT", f"/entity/opportunity/{deal}", json={"relation": moved})
    assert org.ok("GET", f"/entity/opportunity/{deal}")["relation"]["account"][0]["entity"] == {
        "id": second
    }
    org.ok("POST", "/entity/opportunity", 201, json={"name": "Other"})
    mine = org.ok(
        "GET", "/entity/opportunity/list", params={"filter": f"relation.account eq '{second}'"}
    )
    assert [d["id"] for d in mine] == [deal]
    expanded = org.ok("GET", f"/entity/opportunity/{deal}", params={"expand": "account"})
    assert expanded["relation"]["account"][0]["entity"]["name"] == "Litware"
    org.ok("PUT", f"/entity/opportunity/{deal}", json={"relation": {"account": []}})
    assert org.sim.records["opportunity"][deal]["parentaccountid"] is None
    assert org.ok("GET", f"/entity/opportunity/{deal}")["relation"] == {}


def test_polymorphic_lookups_tell_their_target(org: Org) -> None:
    account = org.ok("POST", "/entity/account", 201, json={"name": "Acme"})["id"]
    person = org.ok("POST", "/entity/contact", 201, json={"last_name": "Doe"})["id"]
    as_contact = {"contact": [{"type": "contact", "entity": {"id": person}}], "account": []}
    task = org.ok("POST", "/entity/task", 201, json={"subject": "Call", "relation": as_contact})
    stored = org.sim.records["task"][task["id"]]["regardingobjectid"]
    assert stored == ("contact", person)
    relation = org.ok("GET", f"/entity/task/{task['id']}")["relation"]
    assert relation == {"contact": [{"type": "contact", "entity": {"id": person}}]}
    link = {"account": [{"type": "account", "entity": {"id": account}}]}
    employee = org.ok("POST", "/entity/contact", 201, json={"last_name": "Roe", "relation": link})
    assert org.sim.records["contact"][employee["id"]]["parentcustomerid"] == ("account", account)
    note_link = {"opportunity": [{"type": "opportunity", "entity": {"id": account}}]}
    wrong = org.call("POST", "/entity/note", json={"subject": "x", "relation": note_link})
    assert wrong.status_code == 404  # no opportunity has that id


def test_filters_become_odata_and_hostile_values_stay_literals(org: Org) -> None:
    body = {
        "first_name": "Grace",
        "last_name": "Hopper",
        "birth_date": "1906-12-09",
        "email": [{"type": "work", "address": "grace@navy.example"}],
        "phone": [{"type": "mobile", "number": "+1 555 0100"}],
        "address": [{"type": "main", "city": "Arlington", "country": "US"}],
    }
    grace = org.ok("POST", "/entity/contact", 201, json=body)["id"]
    org.ok("POST", "/entity/contact", 201, json={"last_name": "O'Brien"})
    stored = org.sim.records["contact"][grace]
    assert stored["emailaddress1"] == "grace@navy.example" and stored["birthdate"] == "1906-12-09"
    read = org.ok("GET", f"/entity/contact/{grace}")
    assert read["birth_date"] == "1906-12-09" and read["created_at"].endswith("+00:00")
    assert read["address"][0]["city"] == "Arlington"

    def names(expression: str) -> list[str]:
        found = org.ok("GET", "/entity/contact/list", params={"filter": expression})
        return sorted(c["last_name"] for c in found)

    assert names("email contains 'navy'") == ["Hopper"]
    assert names("last_name startswith 'O''B'") == ["O'Brien"]
    assert names("last_name eq 'o''brien'") == ["O'Brien"]  # Dataverse compares case-blind
    assert names("first_name eq null") == ["O'Brien"]
    assert names("birth_date lt '1950-01-01'") == ["Hopper"]
    assert names(f"id eq '{grace}'") == ["Hopper"]
    for hostile in [
        "x' or lastname ne 'y",
        "') or (1 eq 1",
        "x' or contains(lastname,'",
        "%27 or 1 eq 1",
        "&$filter=lastname ne null",
    ]:
        assert names(f"last_name eq '{hostile.replace(chr(39), chr(39) * 2)}'") == []
    bad_id = org.call("GET", "/entity/contact/list", params={"filter": "id eq 'x or 1 eq 1'"})
    assert bad_id.status_code == 400


def test_wildcards_in_contains_and_startswith_are_plain_characters(org: Org) -> None:
    # Dataverse runs contains/startswith as SQL LIKE: %, _ and [..] would be wildcards
    for name in ("50% off", "50 off", "5_0", "550", "[x]", "x", "a]b"):
        org.sim.insert("contact", {"lastname": name})

    def names(expression: str) -> list[str]:
        found = org.ok("GET", "/entity/contact/list", params={"filter": expression})
        return sorted(c["last_name"] for c in found)

    assert names("last_name contains '%'") == ["50% off"]
    assert names("last_name contains '0%'") == ["50% off"]
    assert names("last_name contains '5_0'") == ["5_0"]
    assert names("last_name startswith '_'") == []
    assert names("last_name contains '[x]'") == ["[x]"]
    assert names("last_name startswith '[x'") == ["[x]"]
    assert names("last_name contains ']'") == ["[x]", "a]b"]
    assert names("last_name startswith '50'") == ["50 off", "50% off"]


def test_numbers_dates_and_choices_come_back_typed(org: Org) -> None:
    deal = org.ok(
        "POST",
        "/entity/opportunity",
        201,
        json={"name": "Big", "amount": 1500, "expected_end_at": "2027-02-01T10:00:00Z"},
    )["id"]
    org.ok("POST", "/entity/opportunity", 201, json={"name": "Small", "amount": 10})
    assert org.sim.records["opportunity"][deal]["estimatedclosedate"] == "2027-02-01"
    read = org.ok("GET", f"/entity/opportunity/{deal}")
    assert read["amount"] == 1500 and read["expected_end_at"] == "2027-02-01T00:00:00+00:00"
    big = org.ok("GET", "/entity/opportunity/list", params={"filter": "amount gt 100"})
    assert [d["id"] for d in big] == [deal]
    task = org.ok("POST", "/entity/task", 201, json={"subject": "T", "priority": "2"})["id"]
    assert org.sim.records["task"][task]["prioritycode"] == 2
    assert org.ok("GET", "/entity/task/list", params={"filter": "priority eq 2"})[0]["id"] == task
    described = org.ok("GET", "/entity/task/describe")["schema"]["create"]["fields"]
    assert described["priority"]["enum"] == ["0", "1", "2"]
    assert described["subject"]["required"] is True
    assert "relation.contact" in described


def test_dataverse_errors_become_the_contracts(org: Org) -> None:
    long = org.call("POST", "/entity/task", json={"subject": "x" * 201})
    assert long.status_code == 422 and long.json()["detail"]["code"] == "NOT_VALID"
    assert long.json()["detail"]["errors"][0]["field"] == "subject"
    assert "maximum allowed length" in long.json()["detail"]["message"]
    choice = org.call("POST", "/entity/task", json={"subject": "x", "priority": "9"})
    assert choice.status_code == 422 and "prioritycode" in choice.json()["detail"]["message"]
    missing = "00000000-0000-0000-0000-000000000001"
    assert org.call("GET", f"/entity/contact/{missing}").status_code == 404
    assert org.call("PUT", f"/entity/contact/{missing}", json={"last_name": "X"}).status_code == 404
    assert missing not in org.sim.records["contact"]  # If-Match: * never creates
    assert org.call("GET", "/entity/contact/not-a-guid").status_code == 404
    assert org.call("DELETE", f"/entity/contact/{missing}").status_code == 404

    org.sim.request_limit = 0
    limited = org.call("GET", "/entity/contact/count")
    assert limited.status_code == 429 and 1 <= int(limited.headers["Retry-After"]) <= 301
    assert "0x80072322" in limited.json()["detail"]["message"]
    org.sim.request_limit = 6000

    for status, body, kind in [
        (
            500,
            b'{"error":{"code":"0x80040216","message":"An unexpected error occurred."}}',
            "application/json",
        ),
        (200, b"<html>maintenance</html>", "text/html"),
        (503, b"", "text/plain"),
    ]:
        # a 5xx on a read is tried again (outbound.py, Retrying): it fails every try here
        tries = 3 if status >= 500 else 1
        org.sim.faults.add(Fault(status, body, kind), times=tries)
        odd = org.call("GET", "/entity/contact/count")
        assert odd.status_code == 502 and odd.json()["detail"]["code"] == "CRM_UNAVAILABLE"
        assert not org.sim.faults  # each try met its fault
    org.sim.faults.add(Fault(503))  # once: the retry gets the answer
    assert org.call("GET", "/entity/contact/count").status_code == 200


@on_both_stores
def test_a_user_without_the_privilege_is_not_allowed(
    tmp_path: Path, database: Database, dynamics: Dynamics
) -> None:
    settings = dynamics.settings(tmp_path / "ro", database)
    admin = create_account(settings)
    reader = dynamics.simulator.add_user("Rita", "Reader", "rita@contoso.example", read_only=True)
    credential = {
        "instance_url": dynamics.base_url,
        "access_token": dynamics.simulator.issue_access_token(reader),
    }
    with RunningGateway(create_app(settings)) as gateway, gateway.client(admin.key) as client:
        key = client.post(
            "/v1/application",
            json={
                "type": TYPE,
                "authorization": "oAuth-external-refresh",
                "credential": credential,
            },
        ).json()["key"]
        headers = {APP: key}
        assert client.get("/v1/application/entity/contact/list", headers=headers).status_code == 200
        refused = client.post(
            "/v1/application/entity/contact", headers=headers, json={"last_name": "X"}
        )
        assert refused.status_code == 403 and refused.json()["detail"]["code"] == "NOT_ALLOWED"
        assert "prvCreateContact" in refused.json()["detail"]["message"]
        dynamics.simulator.expire_tokens()
        expired = client.get("/v1/application/entity/contact/list", headers=headers)
        assert expired.status_code == 401 and expired.json()["detail"]["code"] == "UNAUTHORIZED"


def test_odd_metadata_answers_are_502_not_500(org: Org) -> None:
    fresh = {"X-API2CRM-DESCRIBE-LIFETIME": "0"}
    assert org.call("GET", "/entity/task/describe", headers=fresh).status_code == 200
    odd_answers = [
        [
            b'{"value": [{"LogicalName": "subject", "AttributeType": "String", '
            b'"RequiredLevel": "None"}]}'
        ],
        [b'{"value": []}', b'{"value": []}', b'{"value": ["x"]}'],
        [
            b'{"value": []}',
            b'{"value": []}',
            b'{"value": [{"LogicalName": "p", "OptionSet": [1]}]}',
        ],
        [b'{"value": []}', b'{"value": 7}'],
    ]
    for answers in odd_answers:  # columns, dates, choices, in that order
        org.sim.faults.clear()
        for answer in answers:
            org.sim.faults.add(Fault(200, answer, "application/json"))
        odd = org.call("GET", "/entity/task/describe", headers=fresh)
        assert odd.status_code == 502, odd.text
        assert odd.json()["detail"]["code"] == "CRM_UNAVAILABLE"
    org.sim.faults.clear()


def test_pages_follow_next_links_one_call_each(org: Org) -> None:
    for n in range(250):
        org.sim.insert("contact", {"lastname": f"C{n:03d}"})
    path = "/api/data/v9.2/contacts"
    by_name = {"sort": "last_name", "page_size": 100}
    seen: list[str] = []
    for page in (1, 2, 3, 4):
        before = org.calls(path)
        rows = org.ok("GET", "/entity/contact/list", params={**by_name, "page": page})
        seen += [r["last_name"] for r in rows]
        assert org.calls(path) - before == (1 if page < 4 else 0)  # the end is known: free
    assert seen == [f"C{n:03d}" for n in range(250)]
    small = org.calls(path)
    for page in (1, 2, 3, 4):  # 25 a page: one call for four pages
        org.ok("GET", "/entity/contact/list", params={**by_name, "page": page, "page_size": 25})
    assert org.calls(path) - small == 1
    before = org.calls(path)  # a far jump on another query walks the links from the start
    jump = org.ok(
        "GET",
        "/entity/contact/list",
        params={**by_name, "page": 9, "page_size": 25, "fields": "last_name"},
    )
    assert [r["last_name"] for r in jump][:2] == ["C200", "C201"]
    assert org.calls(path) - before == 3
    too_far = org.call("GET", "/entity/contact/list", params={"page": 500, "page_size": 25})
    assert too_far.status_code == 400 and "page by page" in too_far.json()["detail"]["message"]


def test_counts_go_past_the_5000_cap_of_odata_count(org: Org) -> None:
    for n in range(5020):
        org.sim.insert("account", {"name": f"A{n}", "numberofemployees": n})
    assert org.ok("GET", "/entity/account/count") == {"total": 5020}
    filtered = org.ok("GET", "/entity/account/count", params={"filter": "employees ge 20"})
    assert filtered == {"total": 5000}
    assert org.ok("GET", "/entity/account/count", params={"filter": "employees lt 10"}) == {
        "total": 10
    }
    org.sim.aggregate_limit = 5010
    refused = org.call("GET", "/entity/account/count")
    assert refused.status_code == 400 and "narrow" in refused.json()["detail"]["message"]


def test_bulk_is_one_batch_call_with_a_result_per_item(org: Org) -> None:
    before = org.calls("/api/data/v9.2/$batch", "POST")
    nowhere = {"contact": [{"type": "contact", "entity": {"id": "not-a-guid"}}]}
    items = [
        {"subject": "ok 1"},
        {"subject": "x" * 201},
        {"subject": "bad link", "relation": nowhere},  # refused alone, the others sent
        {"subject": "ok 2"},
    ]
    made = org.ok("POST", "/entity/task/bulk", 201, json={"item": items})["item"]
    assert [i["status"] for i in made] == [201, 422, 422, 201]
    assert made[1]["error"]["fields"] == ["subject"]
    assert org.calls("/api/data/v9.2/$batch", "POST") - before == 1
    subjects = {made[0]["id"]: "ok 1", made[3]["id"]: "ok 2"}
    for record_id, subject in subjects.items():
        assert org.sim.records["task"][record_id]["subject"] == subject
    changed = org.ok(
        "PUT",
        "/entity/task/bulk",
        json={
            "item": [
                {"id": made[0]["id"], "relation": nowhere},
                {"id": made[3]["id"], "subject": "ok 2 changed"},
            ]
        },
    )["item"]
    assert [i["status"] for i in changed] == [422, 200]
    assert org.sim.records["task"][made[3]["id"]]["subject"] == "ok 2 changed"
    gone = "00000000-0000-0000-0000-000000000009"
    removed = org.ok(
        "DELETE",
        "/entity/task/bulk",
        json={"item": [{"id": made[0]["id"]}, {"id": gone}, {"id": "not-a-guid"}]},
    )
    assert [i["status"] for i in removed["item"]] == [204, 404, 404]


def test_batches_hold_100_requests_and_one_without_answer_is_reported_as_unknown(
    tmp_path: Path, database: Database, dynamics: Dynamics
) -> None:
    settings = dynamics.settings(tmp_path / "slow", database, outbound_timeout=1.0)
    admin = create_account(settings)
    sim = dynamics.simulator
    with RunningGateway(create_app(settings)) as gateway, gateway.client(admin.key) as client:
        body = {
            "type": TYPE,
            "authorization": "oAuth-external-refresh",
            "credential": dynamics.credential(),
        }
        org = Org(client, client.post("/v1/application", json=body).json()["key"], sim)
        items = [{"subject": f"T{n}"} for n in range(150)]
        made = org.ok("POST", "/entity/task/bulk", 201, json={"item": items})["item"]
        assert [i["status"] for i in made] == [201] * 150
        assert org.calls("/api/data/v9.2/$batch", "POST") == 2  # 100 requests a batch
        sim.batch_delay = 1.5  # done, but answered after crmgate's timeout
        late = org.ok("POST", "/entity/task/bulk", 201, json={"item": items})["item"]
        assert org.calls("/api/data/v9.2/$batch", "POST") == 3  # the rest not sent
        assert [i["status"] for i in late] == [502] * 150
        assert all("may have been done" in i["error"]["message"] for i in late[:100])
        assert all("not sent" in i["error"]["message"] for i in late[100:])
        assert len(sim.records["task"]) == 250
        sim.batch_delay = 0.0


def test_custom_columns_and_tables_come_from_the_metadata_api(org: Org) -> None:
    contact = org.sim.tables["contact"]
    contact.attrs["new_loyaltytier"] = Attr("new_loyaltytier", label="Loyalty Tier", custom=True)
    # a date is told by DateTimeBehavior; a DateOnly Format alone still holds a date and time
    contact.attrs["new_since"] = Attr("new_since", "DateTime", custom=True, date_format=True)
    contact.attrs["new_renewal"] = Attr("new_renewal", "DateTime", custom=True, date_only=True)
    shipment = Table(
        "new_shipment",
        "new_shipments",
        "new_shipmentid",
        "new_name",
        "Shipment",
        "Shipments",
        {
            "new_shipmentid": Attr("new_shipmentid", "Uniqueidentifier", update=False),
            "new_name": Attr("new_name", label="Name", custom=True),
            "new_weight": Attr("new_weight", "Decimal", "Weight", custom=True),
            "createdon": Attr("createdon", "DateTime", create=False, update=False),
            "modifiedon": Attr("modifiedon", "DateTime", create=False, update=False),
            "statecode": Attr("statecode", "State", create=False, options=((0, "Active"),)),
            "ownerid": Attr("ownerid", "Owner"),
        },
        custom=True,
    )
    org.sim.tables["new_shipment"] = shipment
    org.sim.records["new_shipment"] = {}
    fields = org.ok("GET", "/entity/contact/describe")["schema"]["create"]["fields"]
    assert fields["new_loyaltytier"]["custom"] is True
    assert fields["new_since"]["type"] == "date-time" and fields["new_renewal"]["type"] == "date"
    made = org.ok(
        "POST", "/entity/contact", 201, json={"last_name": "L", "new_loyaltytier": "Gold"}
    )
    found = org.ok("GET", "/entity/contact/list", params={"filter": "new_loyaltytier eq 'Gold'"})
    assert [c["id"] for c in found] == [made["id"]] and found[0]["new_loyaltytier"] == "Gold"
    objects = {o["id"]: o for o in org.ok("GET", "/entity/list", params={"page_size": 100})}
    assert objects["new_shipments"]["type"] == "custom"
    assert objects["contacts"]["internalType"] == "unified"
    box = org.ok("POST", "/entity/new_shipments", 201, json={"new_name": "S-1", "new_weight": 12.5})
    heavy = org.ok("GET", "/entity/new_shipments/list", params={"filter": "new_weight ge 10"})
    assert [s["id"] for s in heavy] == [box["id"]] and heavy[0]["new_name"] == "S-1"


@on_both_stores
def test_oauth_internal_tokens_are_refreshed_at_entra_id(
    tmp_path: Path, database: Database, dynamics: Dynamics
) -> None:
    sim = dynamics.simulator
    sim.add_app("crmgate-app", "crmgate-secret")
    done = "https://app.example/connected"
    clients = {
        TYPE: {"client_id": "crmgate-app", "client_secret": "crmgate-secret", "redirects": [done]}
    }
    settings = dynamics.settings(tmp_path / "oauth", database, oauth_clients=clients)
    admin = create_account(settings)
    tenant = "Contoso.example"
    credential = dynamics.credential(
        refresh_token=sim.issue_refresh_token("crmgate-app"), tenant=tenant
    )
    token_path = "/contoso.example/oauth2/v2.0/token"  # the credential's tenant's endpoint
    with RunningGateway(create_app(settings)) as gateway, gateway.client(admin.key) as client:
        # Entra ID's scope names the organisation: a flow that names none is refused
        flow = client.get(
            "/authorization/oauth/MicrosoftDynamics/authorize", params={"redirect": done}
        )
        assert flow.status_code == 400 and "location" not in flow.headers
        assert "instance_url" in flow.json()["detail"]["message"]
        bad = {**credential, "tenant": "x/../common"}
        refused_tenant = client.post(
            "/v1/application",
            json={"type": TYPE, "authorization": "oAuth-internal", "credential": bad},
        )
        assert refused_tenant.status_code == 422
        key = client.post(
            "/v1/application",
            json={"type": TYPE, "authorization": "oAuth-internal", "credential": credential},
        ).json()["key"]
        refused = check_refresh(
            AppClient(client, key),
            sim,
            lambda: sum(1 for c in sim.calls if c == ("POST", token_path)),
            "invalid_grant",
        )
        assert "Trace ID" not in refused.json()["detail"]["message"]


@on_both_stores
def test_an_application_user_gets_and_renews_its_own_tokens(
    tmp_path: Path, database: Database, dynamics: Dynamics
) -> None:
    sim = dynamics.simulator
    app_user = sim.add_application_user("s2s-app", "s2s-secret")
    settings = dynamics.settings(tmp_path / "s2s", database)
    admin = create_account(settings)
    credential = {
        "instance_url": dynamics.base_url,
        "tenant_id": sim.tenant_id,
        "client_id": "s2s-app",
        "client_secret": "s2s-secret",
    }
    token_path = f"/{sim.tenant_id}/oauth2/v2.0/token"

    def calls(path: str, method: str = "GET") -> int:
        return sum(1 for c in sim.calls if c == (method, path))

    with RunningGateway(create_app(settings)) as gateway, gateway.client(admin.key) as client:
        malformed = {**credential, "tenant_id": "../common/oauth2"}
        refused = client.post(
            "/v1/application",
            json={"type": TYPE, "authorization": "user", "credential": malformed},
        )
        assert refused.status_code == 422 and refused.json()["detail"]["code"] == "NOT_VALID"
        sim.tokens.access_lifetime = 2  # a token whose expiry crmgate knows is renewed before it
        created = client.post(
            "/v1/application",
            json={"type": TYPE, "authorization": "user", "credential": credential},
        )
        assert created.status_code == 201, created.text
        sim.tokens.access_lifetime = 3599
        key = created.json()["key"]
        assert client.get(f"/v1/application/{key}").json()["me"]["id"] == app_user.id
        headers = {APP: key}
        who_am_i = calls("/api/data/v9.2/WhoAmI")
        time.sleep(1.1)  # within a second of its expiry, still valid at Dataverse
        assert client.get("/v1/application/entity/account/count", headers=headers).json() == {
            "total": 0
        }
        assert calls(token_path, "POST") == 2  # renewed ahead: the client credentials grant
        assert calls("/api/data/v9.2/WhoAmI") == who_am_i  # and nothing else
        made = client.post("/v1/application/entity/account", headers=headers, json={"name": "S"})
        assert made.status_code == 201
        owner = sim.records["account"][made.json()["id"]]["ownerid"]
        assert owner == ("systemuser", app_user.id)
        sim.expire_tokens()
        assert client.get("/v1/application/entity/account/count", headers=headers).json() == {
            "total": 1
        }
        assert sum(1 for c in sim.calls if c == ("POST", token_path)) == 3
        wrong = client.post(
            "/v1/application",
            json={
                "type": TYPE,
                "authorization": "user",
                "credential": {**credential, "client_secret": "guess"},
            },
        )
        assert wrong.status_code == 401 and "invalid_client" in wrong.json()["detail"]["message"]


def test_next_links_to_another_host_or_table_are_refused(dynamics: Dynamics) -> None:
    from crmgate.connectors.base import Access
    from crmgate.connectors.catalogue import Catalogue
    from crmgate.connectors.dynamics import DynamicsConnector
    from crmgate.connectors.errors import CrmUnavailable
    from crmgate.connectors.paging import Pager
    from crmgate.outbound import Outbound

    platform = Catalogue.load(["dynamics"], platform_overrides(dynamics.base_url)).get(TYPE)
    assert platform is not None
    connector = DynamicsConnector(platform, Outbound())
    access = Access(URL(dynamics.base_url), "token")
    pager = Pager(connector.records, platform.paging)
    first = URL(f"{dynamics.base_url}/api/data/v9.2/contacts?$select=fullname")
    good = f"{dynamics.base_url}/api/data/v9.2/contacts?$skiptoken=x"
    assert str(pager.within(access, first, good)).startswith(dynamics.base_url)
    for forged in [
        "https://evil.example/api/data/v9.2/contacts?$skiptoken=x",
        f"http://{URL(dynamics.base_url).authority}/api/data/v9.2/contacts",
        f"{dynamics.base_url}/api/data/v9.2/systemusers?$skiptoken=x",
        f"{dynamics.base_url}/api/data/v9.2/contacts/../systemusers",
        f"https://user@{URL(dynamics.base_url).authority}/api/data/v9.2/contacts",
    ]:
        with pytest.raises(CrmUnavailable):
            pager.within(access, first, forged)
    asyncio.run(connector.outbound.close())


def test_sovereign_clouds_get_tokens_from_their_own_entra_id() -> None:
    # Microsoft Entra "National clouds": US Government and China have their own token service
    from crmgate.connectors.catalogue import Catalogue
    from crmgate.connectors.dynamics import DynamicsConnector
    from crmgate.outbound import Outbound

    platform = Catalogue.load(["dynamics"]).get(TYPE)
    assert platform is not None
    connector = DynamicsConnector(platform, Outbound())
    for instance, login in [
        ("https://org.crm.dynamics.com", "login.microsoftonline.com"),
        ("https://org.crm9.dynamics.com", "login.microsoftonline.com"),  # GCC
        ("https://org.crm.microsoftdynamics.us", "login.microsoftonline.us"),  # GCC High
        ("https://org.crm.appsplatform.us", "login.microsoftonline.us"),  # DoD
        ("https://org.crm.dynamics.cn", "login.partner.microsoftonline.cn"),  # 21Vianet
    ]:
        url = connector.token_url(connector.instance_url(instance), "contoso.com")
        assert str(url) == f"https://{login}/contoso.com/oauth2/v2.0/token"
    asyncio.run(connector.outbound.close())


def test_the_demo_seed_fills_a_small_realistic_organisation(org: Org) -> None:
    made = seed_dynamics(org.sim)
    assert len(made["account"]) == 3 and len(made["contact"]) == len(seed.CONTACTS)
    deals = org.ok("GET", "/entity/opportunity/list", params={"expand": "account"})
    assert {d["relation"]["account"][0]["entity"]["name"] for d in deals} == {
        name for name, *_ in seed.ACCOUNTS
    }
    overrides = platform_overrides(org.sim.base_url)
    assert overrides[TYPE]["instance_hosts"] == [org.sim.base_url.removeprefix("https://")]


@on_both_stores
def test_the_oauth_flow_authorizes_one_named_organisation(
    tmp_path: Path, database: Database, dynamics: Dynamics
) -> None:
    """crmgate runs Entra ID's flow for the organisation the client names: its
    user_impersonation scope is asked for, PKCE, and its URL becomes the instance_url."""
    bound = loopback_socket()
    base = f"http://127.0.0.1:{bound.getsockname()[1]}"
    done = "https://app.example/connected"
    sim = dynamics.simulator
    sim.add_app(
        "crmgate-flow",
        "flow-secret",
        redirect_uris=(f"{base}/authorization/oauth/MicrosoftDynamics/callback",),
    )
    clients = {
        TYPE: {"client_id": "crmgate-flow", "client_secret": "flow-secret", "redirects": [done]}
    }
    settings = dynamics.settings(
        tmp_path / "flow", database, public_url=base, oauth_clients=clients
    )
    admin = create_account(settings)
    with RunningGateway(create_app(settings), bound) as gateway:
        with gateway.client(admin.key) as client:
            for wrong in (None, "https://evil.example", "https://127.0.0.1.evil.example"):
                refused = client.post(
                    "/v1/oauth/session",
                    json={"type": TYPE, "redirect": done, "instance_url": wrong},
                )
                assert refused.status_code == 400, refused.text
                assert refused.json()["detail"]["errors"][0]["field"] == "instance_url"
            session = client.post(
                "/v1/oauth/session",
                json={"type": TYPE, "redirect": done, "instance_url": dynamics.base_url},
            ).json()
            swapped = client.get(  # a session's organisation cannot be changed on the way
                "/authorization/oauth/MicrosoftDynamics/authorize",
                params={
                    "session": session["authorize_url"].split("session=")[1],
                    "instance_url": "https://other.example",
                },
            )
            assert swapped.status_code == 400 and "location" not in swapped.headers
            started = client.get(
                "/authorization/oauth/MicrosoftDynamics/authorize",
                params={"redirect": done, "instance_url": dynamics.base_url},
            )
            assert started.status_code == 302
            sent = httpx.URL(started.headers["location"]).params
            assert sent["scope"] == f"{dynamics.base_url}/user_impersonation offline_access"
            assert sent["code_challenge_method"] == "S256"
        key = oauth_connect(
            gateway, admin.key, TYPE, done, dynamics.ca_file, instance_url=dynamics.base_url
        )
        with gateway.client(admin.key) as client:
            app = client.get(f"/v1/application/{key}").json()
            assert app["authorization"] == "oAuth-internal" and app["is_authorized"] is True
            assert app["credential"]["instance_url"] == dynamics.base_url
            counted = client.get(
                "/v1/application/entity/contact/count",
                headers={"X-API2CRM-APPLICATION-KEY": key},
            )
            assert counted.status_code == 200, counted.text
    assert sim.codes == {}  # the code was exchanged, once


def test_the_flow_refuses_organisations_of_another_cloud() -> None:
    """The descriptor's flow is on the global Entra ID: an organisation of the US Government or
    China cloud gets its tokens elsewhere, and is refused before the browser leaves."""
    from yarl import URL

    from crmgate.connectors import REGISTRY
    from crmgate.connectors.catalogue import Catalogue
    from crmgate.connectors.errors import NotValid
    from crmgate.outbound import Outbound

    platform = Catalogue.load(REGISTRY).get(TYPE)
    assert platform is not None
    connector = REGISTRY["dynamics"](platform, Outbound())
    connector.check_flow_instance(URL("https://contoso.crm4.dynamics.com"))
    for sovereign in ("https://gov.crm9.microsoftdynamics.us", "https://cn.crm.dynamics.cn"):
        with pytest.raises(NotValid):
            connector.check_flow_instance(URL(sovereign))
