"""The unified entity API over real HTTP: crmgate on loopback, Salesforce played by the simulator
over HTTPS. Every call goes client -> crmgate -> connector -> simulator and back.

The mapping, paging and errors do not depend on the store: the module runs on SQLite, and the
tests where the store takes part (credentials, sessions, use records) on both backends."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from typing import Any

import pytest

from conftest import (
    Account,
    AppClient,
    RunningGateway,
    SalesforceSim,
    create_account,
    on_both_stores,
    sqlite_only,
)
from crmgate.settings import Settings
from crmsim.faults import Fault
from test_api_applications import connect_external

APP = "X-API2CRM-APPLICATION-KEY"
pytestmark = sqlite_only


@pytest.fixture
def admin(crm_settings: Settings) -> Account:
    return create_account(crm_settings)


class Crm(AppClient):
    """A client of one connected Salesforce application."""


@pytest.fixture
def crm(crm_gateway: RunningGateway, admin: Account, salesforce: SalesforceSim) -> Iterator[Crm]:
    created = connect_external(crm_gateway, admin.key, salesforce)
    assert created.status_code == 201, created.text
    with crm_gateway.client(admin.key) as client:
        yield Crm(client, created.json()["key"])


# ---- contact: the whole life cycle ----------------------------------------------------------


def test_contact_life_cycle(crm: Crm, salesforce: SalesforceSim) -> None:
    account_id = crm.ok("POST", "/entity/account", 201, json={"name": "Acme Ltd"})["id"]
    people = [("Ada", "Lovelace"), ("Charles", "Babbage"), ("Grace", "Hopper")]
    ids = []
    for first, last in people:
        body = {
            "first_name": first,
            "last_name": last,
            "email": [{"type": "work", "address": f"{first.lower()}@acme.example"}],
            "phone": [{"type": "mobile", "number": "+44 20 7946 0000"}],
            "birth_date": "1815-12-10",
            "relation": {"account": [{"type": "account", "entity": {"id": account_id}}]},
        }
        ids.append(crm.ok("POST", "/entity/contact", 201, json=body)["id"])

    # what Salesforce holds is the native shape of what was sent
    native = salesforce.simulator.data.records["Contact"][ids[0]]
    assert native["FirstName"] == "Ada" and native["Email"] == "ada@acme.example"
    assert native["MobilePhone"] == "+44 20 7946 0000" and native["AccountId"] == account_id

    one = crm.ok("GET", f"/entity/contact/{ids[0]}")
    assert one["id"] == ids[0] and one["last_name"] == "Lovelace"
    assert one["email"] == [{"type": "work", "address": "ada@acme.example"}]
    assert one["birth_date"] == "1815-12-10"
    assert one["relation"]["account"][0]["entity"]["id"] == account_id
    assert one["created_at"].endswith("+00:00")

    # two pages, in order of the sort; then a filtered list and its count
    first = crm.ok("GET", "/entity/contact/list", params={"page_size": 2, "sort": "last_name"})
    second = crm.ok(
        "GET", "/entity/contact/list", params={"page_size": 2, "page": 2, "sort": "last_name"}
    )
    assert [c["last_name"] for c in first + second] == ["Babbage", "Hopper", "Lovelace"]
    assert crm.ok("GET", "/entity/contact/list", params={"page": 3, "page_size": 2}) == []
    newest_first = crm.ok("GET", "/entity/contact/list", params={"sort": "-first_name"})
    assert [c["first_name"] for c in newest_first] == ["Grace", "Charles", "Ada"]
    found = crm.ok("GET", "/entity/contact/list", params={"filter": "email contains 'grace@'"})
    assert [c["id"] for c in found] == [ids[2]]
    assert crm.ok("GET", "/entity/contact/count") == {"total": 3}
    assert crm.ok("GET", "/entity/contact/count", params={"filter": "first_name ne 'Ada'"}) == {
        "total": 2
    }
    chosen = crm.ok("GET", "/entity/contact/list", params={"fields": "last_name", "page_size": 1})
    assert set(chosen[0]) == {"id", "last_name"}

    # update changes what it names and nothing else
    assert crm.ok("PUT", f"/entity/contact/{ids[1]}", json={"position": "Engineer"}) == {
        "id": ids[1]
    }
    updated = crm.ok("GET", f"/entity/contact/{ids[1]}")
    assert updated["position"] == "Engineer" and updated["first_name"] == "Charles"

    assert crm.call("DELETE", f"/entity/contact/{ids[1]}").status_code == 204
    gone = crm.call("GET", f"/entity/contact/{ids[1]}")
    assert gone.status_code == 404 and gone.json()["detail"]["code"] == "ENTITY_NOT_FOUND"
    assert crm.ok("GET", "/entity/contact/count") == {"total": 2}


def test_native_records_come_with_the_unified_ones_when_asked(crm: Crm) -> None:
    created = crm.ok("POST", "/entity/lead", 201, json={"last_name": "Doe", "company": "Initech"})
    plain = crm.ok("GET", f"/entity/lead/{created['id']}")
    both = crm.ok(
        "GET", f"/entity/lead/{created['id']}", headers={"X-API2CRM-NATIVE-ENABLE": "true"}
    )
    listed = crm.ok("GET", "/entity/lead/list", headers={"X-API2CRM-NATIVE-ENABLE": "true"})
    assert "native" not in plain
    assert both["native"]["LastName"] == "Doe" and both["native"]["Company"] == "Initech"
    assert both["native"]["Id"] == created["id"] and "attributes" not in both["native"]
    assert listed[0]["native"]["Company"] == "Initech"


# ---- describe ---------------------------------------------------------------------------------


def test_describe_shows_fields_types_and_the_crm_users_permissions(
    crm: Crm, crm_gateway: RunningGateway, admin: Account, salesforce: SalesforceSim
) -> None:
    described = crm.ok("GET", "/entity/opportunity/describe")
    schema = described["schema"]
    assert described["entity"] == "opportunity" and described["native_entity"] == "Opportunity"
    assert schema["create"]["allowed"] and schema["delete"]["allowed"]
    stage = schema["create"]["fields"]["pipeline_with_stage"]
    assert stage["required"] and "Closed Won" in stage["enum"] and stage["native"] == ["StageName"]
    assert schema["fetch"]["fields"]["amount"]["type"] == "number"
    assert schema["fetch"]["fields"]["created_at"]["read_only"]
    assert "created_at" not in schema["create"]["fields"]

    reader = salesforce.simulator.add_user("reader@acme.example", "pw", profile="Read Only")
    readonly = connect_external(
        crm_gateway,
        admin.key,
        salesforce,
        {
            "instance_url": salesforce.base_url,
            "access_token": salesforce.simulator.issue_session(reader),
        },
    ).json()["key"]
    limited = Crm(crm.client, readonly).ok("GET", "/entity/opportunity/describe")["schema"]
    assert limited["fetch"]["allowed"] and not limited["create"]["allowed"]
    assert not limited["update"]["allowed"] and not limited["delete"]["allowed"]


# ---- errors -------------------------------------------------------------------------------------


def test_the_crm_users_own_permissions_bound_the_api(
    crm: Crm, crm_gateway: RunningGateway, admin: Account, salesforce: SalesforceSim
) -> None:
    reader = salesforce.simulator.add_user("ro@acme.example", "pw", profile="Read Only")
    credential = {
        "instance_url": salesforce.base_url,
        "access_token": salesforce.simulator.issue_session(reader),
    }
    key = connect_external(crm_gateway, admin.key, salesforce, credential).json()["key"]
    refused = Crm(crm.client, key).call("POST", "/entity/contact", json={"last_name": "X"})
    assert refused.status_code == 403
    assert refused.json()["detail"]["code"] == "NOT_ALLOWED"
    assert "insufficient access" in refused.json()["detail"]["message"]
    assert salesforce.simulator.data.records["Contact"] == {}


def test_operations_a_platform_does_not_offer_are_not_supported(crm: Crm) -> None:
    for method, path, body in [
        ("POST", "/entity/user", {"last_name": "New"}),
        ("DELETE", "/entity/user/005000000000001AAA", None),
        ("GET", "/entity/invoice/list", None),
        ("POST", "/entity/attachment", {"name": "a.txt"}),
        ("GET", "/entity/quote/count", None),
    ]:
        answer = crm.call(method, path, json=body)
        assert answer.status_code == 403, (path, answer.text)
        detail = answer.json()["detail"]
        assert detail["code"] == "NOT_SUPPORTED"
        assert "Salesforce" in detail["message"]


def test_crm_validation_errors_are_422_with_the_crms_reason(crm: Crm) -> None:
    answer = crm.call("POST", "/entity/contact", json={"first_name": "No last name"})
    assert answer.status_code == 422
    detail = answer.json()["detail"]
    assert detail["code"] == "NOT_VALID" and "LastName" in detail["message"]
    unknown = crm.call("POST", "/entity/contact", json={"shoe_size": 44})
    assert unknown.status_code == 422 and "shoe_size" in unknown.json()["detail"]["message"]


def test_the_application_key_decides_which_crm_and_must_be_the_callers(
    crm: Crm, crm_gateway: RunningGateway, crm_settings: Settings
) -> None:
    missing = crm.client.get("/v1/application/entity/contact/list")
    assert missing.status_code == 401
    unknown = Crm(crm.client, "0" * 40).call("GET", "/entity/contact/list")
    assert unknown.status_code == 404
    other = create_account(crm_settings, "Other", "admin@other.example")
    with crm_gateway.client(other.key) as client:
        foreign = Crm(client, crm.key).call("GET", "/entity/contact/list")
    assert foreign.status_code == 404
    assert foreign.json()["detail"]["code"] == "ENTITY_NOT_FOUND"


def test_filter_values_cannot_change_the_crm_query(crm: Crm, salesforce: SalesforceSim) -> None:
    crm.ok("POST", "/entity/contact", 201, json={"last_name": "Secret"})
    hostile = [
        "x' OR LastName != '",
        "x\\' OR LastName != \\'",
        "' OR Id != null OR LastName = '",
        "%",
    ]
    for value in hostile:
        quoted = value.replace("'", "''")
        for op in ("eq", "contains"):
            found = crm.ok(
                "GET", "/entity/contact/list", params={"filter": f"last_name {op} '{quoted}'"}
            )
            assert found == [], (value, op)


# ---- bulk and passthrough -----------------------------------------------------------------------


def test_bulk_create_update_delete_report_each_item(crm: Crm, salesforce: SalesforceSim) -> None:
    created = crm.ok(
        "POST",
        "/entity/contact/bulk",
        201,
        json={"item": [{"last_name": "One"}, {"first_name": "no last name"}, {"last_name": "Two"}]},
    )
    items = created["item"]
    assert [i["status"] for i in items] == [201, 422, 201]
    assert items[1]["error"]["code"] == "NOT_VALID"
    ids = [items[0]["id"], items[2]["id"]]
    assert set(salesforce.simulator.data.records["Contact"]) == set(ids)

    updated = crm.ok(
        "PUT",
        "/entity/contact/bulk",
        json={
            "item": [
                {"id": ids[0], "position": "CEO"},
                {"id": "003000000000000AAA", "position": "Ghost"},
                {"position": "no id"},
            ]
        },
    )["item"]
    assert [i["status"] for i in updated] == [200, 404, 422]
    assert salesforce.simulator.data.records["Contact"][ids[0]]["Title"] == "CEO"

    deleted = crm.ok("DELETE", "/entity/contact/bulk", json={"item": [{"id": i} for i in ids]})
    assert [i["status"] for i in deleted["item"]] == [204, 204]
    assert salesforce.simulator.data.records["Contact"] == {}


def test_passthrough_reaches_only_the_applications_crm(crm: Crm, salesforce: SalesforceSim) -> None:
    crm.ok("POST", "/entity/account", 201, json={"name": "Passthrough Inc"})
    answer = crm.ok(
        "POST",
        "/request",
        201,
        json={"method": "GET", "path": "query?q=SELECT+Name+FROM+Account", "header": []},
    )
    assert answer["status_code"] == 200
    content = json.loads(base64.b64decode(answer["content"]))
    assert [r["Name"] for r in content["records"]] == ["Passthrough Inc"]
    assert any(h["name"].lower() == "sforce-limit-info" for h in answer["header"])

    body = base64.b64encode(json.dumps({"Name": "Made raw"}).encode()).decode()
    made = crm.ok(
        "POST",
        "/request",
        201,
        json={
            "method": "POST",
            "path": "sobjects/Account",
            "header": [{"name": "Content-Type", "value": "application/json"}],
            "content": body,
        },
    )
    assert made["status_code"] == 201

    # sent exactly as written: nothing decoded, normalised or re-encoded on the way
    salesforce.simulator.calls.clear()
    crm.ok("POST", "/request", 201, json={"path": "query?q=SELECT%20Name%20FROM%20Account"})
    assert list(salesforce.simulator.calls) == [("GET", "/services/data/v60.0/query")]

    # the CRM's own refusals come back as they are
    missing = crm.ok("POST", "/request", 201, json={"method": "GET", "path": "sobjects/Nope"})
    assert missing["status_code"] == 404

    for bad in [
        {"method": "GET", "path": "https://evil.example/x"},
        {"method": "GET", "path": "//evil.example/x"},
        {"method": "GET", "path": "/etc/passwd"},
        {"method": "GET", "path": "../../../secur/frontdoor.jsp"},
        {"method": "GET", "path": "/services/../secur/x"},
        {"method": "GET", "path": "%2e%2e/%2E%2E/%2e%2e/apex/Page"},
        {"method": "GET", "path": "sobjects/..%2Fx"},
        {"method": "GET", "path": "sobjects\\..\\..\\x"},
        {"method": "GET", "path": "sobjects/Contact with spaces"},
        {"method": "GET", "path": "sobjects/Ünïcode"},
        {"method": "GET", "path": "sobjects", "header": [{"name": "Authorization", "value": "x"}]},
        {"method": "GET", "path": "sobjects", "header": [{"name": "Host", "value": "evil"}]},
        {"method": "TRACE", "path": "sobjects"},
        {"method": "POST", "path": "sobjects/Account", "content": "not base64!"},
    ]:
        refused = crm.call("POST", "/request", json=bad)
        assert refused.status_code == 422, (bad, refused.text)
        assert refused.json()["detail"]["code"] == "NOT_VALID"


# ---- entities with Salesforce's own shapes (the conformance suite has the life cycles) ---------


def test_calls_are_tasks_of_subtype_call(crm: Crm, salesforce: SalesforceSim) -> None:
    call = crm.ok("POST", "/entity/call", 201, json={"subject": "Ring Bob"})["id"]
    task = crm.ok("POST", "/entity/task", 201, json={"subject": "Write to Bob"})["id"]
    assert salesforce.simulator.data.records["Task"][call]["TaskSubtype"] == "Call"
    assert [c["id"] for c in crm.ok("GET", "/entity/call/list")] == [call]
    assert crm.ok("GET", "/entity/task/count") == {"total": 2}
    assert crm.call("GET", f"/entity/call/{task}").status_code == 404
    # a plain task cannot be changed or deleted as a call either
    assert crm.call("PUT", f"/entity/call/{task}", json={"subject": "x"}).status_code == 404
    assert crm.call("DELETE", f"/entity/call/{task}").status_code == 404
    removed = crm.ok("DELETE", "/entity/call/bulk", json={"item": [{"id": task}, {"id": call}]})[
        "item"
    ]
    assert [i["status"] for i in removed] == [404, 204]
    assert set(salesforce.simulator.data.records["Task"]) == {task}


def test_polymorphic_relations_name_the_right_kind_of_record(crm: Crm) -> None:
    contact = crm.ok("POST", "/entity/contact", 201, json={"last_name": "Who"})["id"]
    lead = crm.ok("POST", "/entity/lead", 201, json={"last_name": "Lee", "company": "L"})["id"]
    account = crm.ok("POST", "/entity/account", 201, json={"name": "What"})["id"]

    def link(kind: str, record: str) -> dict[str, Any]:
        return {kind: [{"type": kind, "entity": {"id": record}}]}

    about_contact = crm.ok(
        "POST",
        "/entity/task",
        201,
        json={"subject": "A", "relation": {**link("contact", contact), **link("account", account)}},
    )["id"]
    about_lead = crm.ok(
        "POST", "/entity/task", 201, json={"subject": "B", "relation": link("lead", lead)}
    )["id"]
    first = crm.ok("GET", f"/entity/task/{about_contact}")["relation"]
    second = crm.ok("GET", f"/entity/task/{about_lead}")["relation"]
    assert set(first) == {"contact", "account"} and first["contact"][0]["entity"]["id"] == contact
    assert set(second) == {"lead"} and second["lead"][0]["entity"]["id"] == lead
    by_lead = crm.ok("GET", "/entity/task/list", params={"filter": f"relation.lead eq '{lead}'"})
    assert [t["id"] for t in by_lead] == [about_lead]
    both = crm.call(
        "POST",
        "/entity/task",
        json={"subject": "C", "relation": {**link("contact", contact), **link("lead", lead)}},
    )
    assert both.status_code == 422 and "WhoId" in both.json()["detail"]["message"]
    disguised = crm.call(
        "POST", "/entity/task", json={"subject": "D", "relation": link("contact", lead)}
    )
    assert disguised.status_code == 422 and "is the id of a lead" in disguised.text
    as_contact = crm.ok(
        "GET", "/entity/task/list", params={"filter": f"relation.contact ne '{contact}'"}
    )
    assert [t["id"] for t in as_contact] == []  # the lead's task has no contact


def test_opportunity_products_link_an_opportunity_and_show_computed_fields(crm: Crm) -> None:
    opportunity = crm.ok(
        "POST",
        "/entity/opportunity",
        201,
        json={
            "name": "Deal",
            "pipeline_with_stage": "Prospecting",
            "expected_end_at": "2027-01-01T00:00:00+00:00",
        },
    )["id"]
    product = crm.ok("POST", "/entity/product", 201, json={"name": "Widget"})["id"]
    line = crm.ok(
        "POST",
        "/entity/opportunityProduct",
        201,
        json={
            "quantity": 3,
            "sales_price": 10.0,
            "relation": {
                "opportunity": [{"type": "opportunity", "entity": {"id": opportunity}}],
                "product": [{"type": "product", "entity": {"id": product}}],
            },
        },
    )["id"]
    read = crm.ok("GET", f"/entity/opportunityProduct/{line}")
    assert read["quantity"] == 3 and read["sales_price"] == 10.0
    assert read["relation"]["opportunity"][0]["entity"]["id"] == opportunity
    described = crm.ok("GET", "/entity/opportunityProduct/describe")["schema"]
    assert "subtotal" not in described["create"]["fields"]
    assert described["fetch"]["fields"]["subtotal"]["read_only"]


def test_dates_kept_as_dates_by_the_crm_filter_and_write_as_dates(
    crm: Crm, salesforce: SalesforceSim
) -> None:
    body = {"name": "D", "pipeline_with_stage": "Prospecting"}
    early = crm.ok(
        "POST", "/entity/opportunity", 201, json={**body, "expected_end_at": "2027-01-31T18:00:00Z"}
    )["id"]
    crm.ok("POST", "/entity/opportunity", 201, json={**body, "expected_end_at": "2027-06-30"})
    assert salesforce.simulator.data.records["Opportunity"][early]["CloseDate"] == "2027-01-31"
    before = crm.ok(
        "GET", "/entity/opportunity/list", params={"filter": "expected_end_at lt '2027-03-01'"}
    )
    assert [o["id"] for o in before] == [early]
    assert before[0]["expected_end_at"] == "2027-01-31T00:00:00+00:00"
    bad = crm.call("POST", "/entity/opportunity", json={**body, "expected_end_at": "soon"})
    assert bad.status_code == 422 and "expected_end_at" in bad.json()["detail"]["message"]


# ---- custom fields and the CRM's own objects ---------------------------------------------------


def test_custom_fields_are_read_written_filtered_and_described(
    crm: Crm, salesforce: SalesforceSim
) -> None:
    from crmsim.salesforce_schema import SField

    salesforce.simulator.data.add_custom_field(
        "Contact",
        SField("Loyalty_Tier__c", "picklist", "Loyalty tier", options=("Gold", "Silver")),
    )
    salesforce.simulator.data.add_custom_field("Contact", SField("Visits__c", "double", "Visits"))
    fresh = {"X-API2CRM-DESCRIBE-LIFETIME": "0"}  # the org changed: ask Salesforce again
    described = crm.ok("GET", "/entity/contact/describe", headers=fresh)["schema"]
    tier = described["create"]["fields"]["Loyalty_Tier__c"]
    assert tier["custom"] and tier["enum"] == ["Gold", "Silver"]
    assert described["fetch"]["fields"]["Visits__c"]["type"] == "number"

    gold = crm.ok(
        "POST",
        "/entity/contact",
        201,
        json={"last_name": "Gold", "Loyalty_Tier__c": "Gold", "Visits__c": 7},
    )["id"]
    crm.ok("POST", "/entity/contact", 201, json={"last_name": "Plain"})
    read = crm.ok("GET", f"/entity/contact/{gold}")
    assert read["Loyalty_Tier__c"] == "Gold" and read["Visits__c"] == 7
    found = crm.ok("GET", "/entity/contact/list", params={"filter": "Visits__c gt 5"})
    assert [c["id"] for c in found] == [gold]
    crm.ok("PUT", f"/entity/contact/{gold}", json={"Loyalty_Tier__c": "Silver"})
    assert salesforce.simulator.data.records["Contact"][gold]["Loyalty_Tier__c"] == "Silver"


def test_the_crms_objects_custom_ones_included_have_generic_routes(
    crm: Crm, salesforce: SalesforceSim
) -> None:
    from crmsim.salesforce_schema import SField

    salesforce.simulator.data.define_object(
        "Shipment__c",
        "Shipment",
        [SField("Weight__c", "double", "Weight"), SField("Shipped__c", "date", "Shipped on")],
    )
    catalogue = crm.ok("GET", "/entity/list", params={"page_size": 100})
    by_id = {entry["id"]: entry for entry in catalogue}
    assert by_id["Shipment__c"]["type"] == "custom"
    assert by_id["Shipment__c"]["internalType"] == "not_unified"
    assert by_id["Contact"]["internalType"] == "unified" and by_id["Contact"]["similarTo"]
    assert crm.ok("GET", "/entity/count") == {"total": len(salesforce.simulator.data.objects)}
    custom_only = crm.ok("GET", "/entity/list", params={"filter": "type eq 'custom'"})
    assert [entry["id"] for entry in custom_only] == ["Shipment__c"]
    one = crm.ok("GET", "/entity/Shipment__c")
    assert one["entity"] == "Shipment" and one["methods"]["create"]

    base = "/entity/Shipment__c"
    first = crm.ok(
        "POST", base, 201, json={"Name": "S-1", "Weight__c": 12.5, "Shipped__c": "2027-01-02"}
    )["id"]
    crm.ok("POST", base, 201, json={"Name": "S-2", "Weight__c": 3})
    assert crm.ok("GET", f"{base}/{first}")["Weight__c"] == 12.5
    heavy = crm.ok("GET", f"{base}/list", params={"filter": "Weight__c ge 10", "sort": "-Name"})
    assert [s["Name"] for s in heavy] == ["S-1"]
    assert crm.ok("GET", f"{base}/count") == {"total": 2}
    crm.ok("PUT", f"{base}/{first}", json={"Weight__c": 13})
    assert crm.ok("GET", f"{base}/{first}")["Weight__c"] == 13
    described = crm.ok("GET", f"{base}/describe")
    assert described["custom"] and "Weight__c" in described["schema"]["create"]["fields"]
    bulk = crm.ok("POST", f"{base}/bulk", 201, json={"item": [{"Name": "S-3"}, {"Nope__c": 1}]})
    assert [i["status"] for i in bulk["item"]] == [201, 422]
    assert crm.call("DELETE", f"{base}/{first}").status_code == 204
    assert crm.ok("GET", f"{base}/count") == {"total": 2}
    missing = crm.call("GET", "/entity/Nothing__c/list")
    assert missing.status_code == 404 and missing.json()["detail"]["code"] == "ENTITY_NOT_FOUND"


def test_fields_of_the_unified_entities_and_the_values_of_enum_fields(
    crm: Crm, salesforce: SalesforceSim
) -> None:
    from crmsim.salesforce_schema import SField

    salesforce.simulator.data.add_custom_field("Lead", SField("Score__c", "int", "Score"))
    every = crm.ok("GET", "/field/list", params={"page_size": 100, "filter": "entity eq 'lead'"})
    by_id = {f["id"]: f for f in every}
    assert {"lead.last_name", "lead.email", "lead.status", "lead.Score__c"} <= set(by_id)
    assert by_id["lead.Score__c"]["custom"] and by_id["lead.Score__c"]["type"] == "integer"
    assert by_id["lead.status"]["isEnum"] and by_id["lead.created_at"]["format"] == "date-time"
    assert not by_id["lead.created_at"]["methods"]["create"]
    total = crm.ok("GET", "/field/count")["total"]
    assert total > len(every)

    status = crm.ok("GET", "/field/lead.status")
    assert status["name"] == "status" and status["native"] == ["Status"]
    values = crm.ok("GET", "/field/lead.status/list")
    assert [v["name"] for v in values][:2] == ["Open - Not Contacted", "Working - Contacted"]
    assert crm.ok("GET", "/field/lead.status/count") == {"total": len(values)}
    one = crm.ok("GET", f"/field/lead.status/{values[1]['id']}")
    assert one["name"] == "Working - Contacted" and one["entity"] == "lead"
    assert crm.ok("GET", "/field/lead.status/describe")["schema"]["fetch"]["allowed"]
    assert crm.call("GET", "/field/lead.nothing").status_code == 404
    assert crm.call("GET", "/field/lead.status/bm9wZQ").status_code == 404
    change = crm.call("POST", "/field/lead.status", json={"name": "Hot"})
    assert change.status_code == 403 and change.json()["detail"]["code"] == "NOT_SUPPORTED"


@pytest.mark.parametrize(
    ("status", "body"),
    [
        (200, b"<html>maintenance</html>"),
        (200, b'{"records": "nope"}'),
        (200, b'{"totalSize": 1, "done": true, "records": [1, 2]}'),
        (200, b"[]"),
        (503, b"Service Unavailable"),
        (500, b'[{"errorCode": "UNKNOWN_EXCEPTION", "message": "An unexpected error"}]'),
    ],
)
def test_whatever_the_crm_answers_is_never_a_500(
    crm: Crm, salesforce: SalesforceSim, status: int, body: bytes
) -> None:
    crm.ok("GET", "/entity/contact/describe")  # describe cached: the fault hits the query
    for path in ("*/query*", "*/sobjects/Contact/*"):
        fault = Fault(status, body, "application/json", path=path)
        salesforce.simulator.faults.add(fault, times=None)
    for method, path in [
        ("GET", "/entity/contact/list"),
        ("GET", "/entity/contact/count"),
        ("GET", "/entity/contact/003000000000001AAA"),
    ]:
        answer = crm.call(method, path)
        assert answer.status_code in (404, 502), (path, answer.text)
        assert answer.json()["detail"]["code"] in ("CRM_UNAVAILABLE", "ENTITY_NOT_FOUND")


@on_both_stores
def test_using_an_application_records_when_it_was_last_used(crm: Crm) -> None:
    before = crm.client.get(f"/v1/application/{crm.key}").json()
    assert "last_used_at" not in before  # absent, never null (docs/errors.md)
    crm.ok("GET", "/entity/contact/count")
    after = crm.client.get(f"/v1/application/{crm.key}").json()
    assert after["last_used_at"]
    assert after["updated_at"] == before["updated_at"]  # use is not a change


def test_aggregates_are_computed_by_the_crm(crm: Crm, salesforce: SalesforceSim) -> None:
    for stage, amount, close in [
        ("Prospecting", 100.0, "2027-01-10"),
        ("Prospecting", 50.0, "2027-02-10"),
        ("Closed Won", 70.0, "2027-03-10"),
    ]:
        crm.ok(
            "POST",
            "/entity/opportunity",
            201,
            json={
                "name": stage,
                "pipeline_with_stage": stage,
                "amount": amount,
                "expected_end_at": close,
            },
        )
    before = len(salesforce.simulator.calls)
    grouped = crm.ok(
        "GET",
        "/entity/opportunity/aggregate",
        params={"pipeline": "count(), sum(amount), max(expected_end_at) by pipeline_with_stage"},
    )
    assert len(salesforce.simulator.calls) - before == 1  # one SOQL query, nothing in memory
    assert grouped["result"]["groups"] == [
        {
            "by": {"pipeline_with_stage": "Closed Won"},
            "count": 1,
            "sum_amount": 70.0,
            "max_expected_end_at": "2027-03-10T00:00:00+00:00",
        },
        {
            "by": {"pipeline_with_stage": "Prospecting"},
            "count": 2,
            "sum_amount": 150.0,
            "max_expected_end_at": "2027-02-10T00:00:00+00:00",
        },
    ]
    total = crm.ok(
        "GET",
        "/entity/opportunity/aggregate",
        params={"pipeline": "avg(amount)", "filter": "amount gt 60"},
    )
    assert total["result"]["groups"] == [{"by": {}, "avg_amount": 85.0}]
    assert crm.ok("GET", "/entity/opportunity/aggregate")["result"]["groups"] == [
        {"by": {}, "count": 3}
    ]
    for bad in ["sum(name)", "median(amount)", "sum()", "count() by", "count(shoe_size)"]:
        refused = crm.call("GET", "/entity/opportunity/aggregate", params={"pipeline": bad})
        assert refused.status_code == 400, (bad, refused.text)
        assert refused.json()["detail"]["code"] == "NOT_VALID"


def test_describes_are_cached_per_object_whatever_its_spelling(
    crm: Crm, salesforce: SalesforceSim
) -> None:
    def describes() -> int:
        return sum(1 for _, path in salesforce.simulator.calls if path.endswith("/describe"))

    before = describes()
    for spelling in ("Contact", "contact", "CONTACT", "cOnTaCt"):
        assert crm.call("GET", f"/entity/{spelling}/count").status_code == 200
    crm.ok("GET", "/entity/contact/count")  # the unified entity shares the Contact describe
    assert describes() - before == 1
    crm.ok("GET", "/entity/contact/count", headers={"X-API2CRM-DESCRIBE-LIFETIME": "0"})
    assert describes() - before == 2


def test_the_describe_cache_is_bounded_and_bound_to_the_credentials() -> None:
    from crmgate.entities import DescribeCache
    from crmgate.model.objects import ObjectInfo

    cache = DescribeCache(max_entries=3)
    info = ObjectInfo("Contact", "Contact")
    cache.put("app", 1, "Contact", info)
    assert cache.get("app", 1, "CONTACT", 60) is info
    assert cache.get("app", 2, "Contact", 60) is None  # new credentials: ask again
    assert cache.get("app", 1, "Contact", 0) is None  # lifetime 0: ask again
    for name in ("A", "B", "C"):
        cache.put("app", 1, name, ObjectInfo(name, name))
    assert len(cache) == 3 and cache.get("app", 1, "Contact", 60) is None


def test_a_bulk_call_cut_short_by_the_crm_reports_what_was_done(
    crm: Crm, salesforce: SalesforceSim
) -> None:
    data = salesforce.simulator.data
    crm.ok("GET", "/entity/contact/describe")  # cached: the limit hits the collection calls
    data.quota.limit = data.quota.used + 1  # one call left: the first 200 records, not the rest
    items = [{"last_name": f"Bulk {n:03d}"} for n in range(250)]
    answer = crm.ok("POST", "/entity/contact/bulk", 201, json={"item": items})["item"]
    assert [i["status"] for i in answer] == [201] * 200 + [429] * 50
    assert {i["id"] for i in answer[:200]} == set(data.records["Contact"])
    assert answer[200]["error"]["code"] == "RATE_LIMITED"

    # nothing done at all: the CRM's answer for the whole call, with its Retry-After
    refused = crm.call("POST", "/entity/contact/bulk", json={"item": items[:3]})
    assert refused.status_code == 429 and int(refused.headers["Retry-After"]) > 0
    assert len(data.records["Contact"]) == 200


def test_passthrough_keeps_repeated_answer_headers_and_drops_cookies(
    crm: Crm, salesforce: SalesforceSim
) -> None:
    from multidict import CIMultiDict

    headers = CIMultiDict([("Warning", "199 - one"), ("Warning", "199 - two")])
    headers.add("Set-Cookie", "sid=secret")
    salesforce.simulator.faults.add(Fault(200, b"{}", "application/json", headers))
    got = crm.ok("POST", "/request", 201, json={"path": "limits"})
    names = [(h["name"].lower(), h["value"]) for h in got["header"]]
    assert [v for n, v in names if n == "warning"] == ["199 - one", "199 - two"]
    assert not [n for n, _ in names if n == "set-cookie"]


@on_both_stores
def test_a_user_application_logs_in_again_when_its_session_expires(
    crm: Crm, crm_gateway: RunningGateway, admin: Account, salesforce: SalesforceSim
) -> None:
    from test_api_applications import connect

    salesforce.simulator.add_user("bo@acme.example", "pw", security_token="TKN")
    created = connect(
        crm_gateway,
        admin.key,
        {
            "type": "Salesforce",
            "authorization": "user",
            "credential": {"login": "bo@acme.example", "password": "pw", "security_token": "TKN"},
        },
    )
    assert created.status_code == 201, created.text
    app = Crm(crm.client, created.json()["key"])
    app.ok("POST", "/entity/contact", 201, json={"last_name": "Before"})

    def logins() -> int:
        return sum(1 for _, path in salesforce.simulator.calls if "/services/Soap/u/" in path)

    before = logins()
    salesforce.simulator.expire_sessions()
    assert app.ok("GET", "/entity/contact/count") == {"total": 1}  # no 401: a new session
    assert logins() - before == 1
    assert app.ok("GET", "/entity/contact/count") == {"total": 1}
    assert logins() - before == 1  # the new session is kept, not made per call

    # an OAuth application cannot log in by itself: 401 tells its client to push a new token
    salesforce.simulator.expire_sessions()
    assert crm.call("GET", "/entity/contact/count").status_code == 401
    # a password changed in the CRM: the login is refused, 401 with the CRM's reason
    salesforce.simulator.users["bo@acme.example"].password = "changed"
    refused = app.call("GET", "/entity/contact/count")
    assert refused.status_code == 401 and refused.json()["detail"]["code"] == "UNAUTHORIZED"


def test_expand_puts_the_linked_records_in_place(crm: Crm, salesforce: SalesforceSim) -> None:
    account = crm.ok("POST", "/entity/account", 201, json={"name": "Expanded Ltd"})["id"]
    link = {"account": [{"type": "account", "entity": {"id": account}}]}
    for name in ("One", "Two"):
        crm.ok("POST", "/entity/contact", 201, json={"last_name": name, "relation": link})
    crm.ok("POST", "/entity/contact", 201, json={"last_name": "Alone"})
    before = len(salesforce.simulator.calls)
    listed = crm.ok(
        "GET", "/entity/contact/list", params={"expand": "account", "sort": "last_name"}
    )
    calls = len(salesforce.simulator.calls) - before
    assert calls == 2  # the page, then all of its accounts in one query
    assert [c["last_name"] for c in listed] == ["Alone", "One", "Two"]
    assert listed[0]["relation"] == {}
    assert listed[1]["relation"]["account"][0]["entity"]["name"] == "Expanded Ltd"
    one = crm.ok("GET", f"/entity/contact/{listed[2]['id']}", params={"expand": "account"})
    assert one["relation"]["account"][0]["entity"]["id"] == account
    assert one["relation"]["account"][0]["entity"]["name"] == "Expanded Ltd"
    task = crm.ok(
        "POST",
        "/entity/task",
        201,
        json={"subject": "T", "relation": {"contact": [{"entity": {"id": listed[1]["id"]}}]}},
    )["id"]
    expanded = crm.ok("GET", f"/entity/task/{task}", params={"expand": "contact,lead"})
    assert expanded["relation"]["contact"][0]["entity"]["last_name"] == "One"
    wrong = crm.call("GET", "/entity/contact/list", params={"expand": "campaign"})
    assert wrong.status_code == 400 and "not a relation" in wrong.json()["detail"]["message"]


def test_unique_lists_the_distinct_values_of_one_field(crm: Crm) -> None:
    for source in ("Web", "Web", "Other", "Phone Inquiry"):
        crm.ok(
            "POST", "/entity/lead", 201, json={"last_name": "L", "company": "C", "source": source}
        )
    values = crm.ok("GET", "/entity/lead/list", params={"unique": "true", "fields": "source"})
    assert values == [{"source": "Other"}, {"source": "Phone Inquiry"}, {"source": "Web"}]
    web_only = crm.ok(
        "GET",
        "/entity/lead/list",
        params={
            "unique": "true",
            "fields": "source",
            "sort": "-source",
            "filter": "source ne 'Other'",
        },
    )
    assert web_only == [{"source": "Web"}, {"source": "Phone Inquiry"}]
    assert crm.call("GET", "/entity/lead/list", params={"unique": "true"}).status_code == 400


@on_both_stores
def test_crm_tokens_and_user_keys_reach_no_log_and_no_answer(
    crm_gateway: RunningGateway,
    admin: Account,
    salesforce: SalesforceSim,
    caplog: pytest.LogCaptureFixture,
) -> None:
    import logging

    caplog.set_level(logging.DEBUG)
    user = salesforce.simulator.add_user("canary@acme.example", "canary-password-7731")
    token = salesforce.simulator.issue_session(user)
    credential = {"instance_url": salesforce.base_url, "access_token": token}
    key = connect_external(crm_gateway, admin.key, salesforce, credential).json()["key"]
    answers = []
    with crm_gateway.client(admin.key) as client:
        app = Crm(client, key)
        answers.append(app.call("POST", "/entity/contact", json={"last_name": "Canary"}))
        answers.append(app.call("GET", "/entity/contact/list"))
        answers.append(app.call("POST", "/entity/contact", json={"first_name": "invalid"}))
        answers.append(app.call("POST", "/request", json={"path": "sobjects/Contact/describe"}))
        answers.append(
            app.call(
                "POST",
                "/request",
                json={"path": "x", "header": [{"name": "Authorization", "value": token}]},
            )
        )
        salesforce.simulator.expire_sessions()
        answers.append(app.call("GET", "/entity/contact/count"))
    logged = "\n".join(
        f"{r.getMessage()} {r.exc_text or ''}"
        for r in caplog.records
        if r.name.startswith("crmgate")
    )
    for secret in (token, admin.key):
        assert secret not in logged
        for answer in answers:
            assert secret not in answer.text, answer.request.url
