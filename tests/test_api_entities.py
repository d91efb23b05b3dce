"""The unified entity API over real HTTP: crmgate on loopback, Salesforce played by the simulator
over HTTPS. Every call goes client -> crmgate -> connector -> simulator and back."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from conftest import Account, RunningGateway, SalesforceSim, create_account
from crmgate.settings import Settings
from test_api_applications import connect_external

APP = "X-API2CRM-APPLICATION-KEY"


@pytest.fixture
def admin(crm_settings: Settings) -> Account:
    return create_account(crm_settings)


class Crm:
    """A client of one connected Salesforce application."""

    def __init__(self, client: httpx.Client, key: str) -> None:
        self.client = client
        self.key = key

    def call(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        headers = {APP: self.key, **kwargs.pop("headers", {})}
        return self.client.request(method, f"/v1/application{path}", headers=headers, **kwargs)

    def ok(self, method: str, path: str, status: int = 200, **kwargs: Any) -> Any:
        response = self.call(method, path, **kwargs)
        assert response.status_code == status, response.text
        return response.json() if response.content else None


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
        ("GET", "/entity/contact/aggregate", None),
    ]:
        answer = crm.call(method, path, json=body)
        assert answer.status_code == 403, (path, answer.text)
        detail = answer.json()["detail"]
        assert detail["code"] == "NOT_SUPPORTED"
        assert "Salesforce" in detail["message"]


def test_crm_rate_limit_becomes_429_with_retry_after(crm: Crm, salesforce: SalesforceSim) -> None:
    salesforce.simulator.data.api_limit = salesforce.simulator.data.api_used
    answer = crm.call("GET", "/entity/contact/list", headers={"X-API2CRM-DESCRIBE-LIFETIME": "0"})
    assert answer.status_code == 429
    assert int(answer.headers["Retry-After"]) > 0
    assert answer.json()["detail"]["code"] == "RATE_LIMITED"
    assert "REQUEST_LIMIT_EXCEEDED" in answer.json()["detail"]["message"]


def test_expired_crm_session_is_401_unauthorized(crm: Crm, salesforce: SalesforceSim) -> None:
    salesforce.simulator.expire_sessions()
    answer = crm.call("GET", "/entity/contact/count")
    assert answer.status_code == 401
    assert answer.json()["detail"]["code"] == "UNAUTHORIZED"


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

    # the CRM's own refusals come back as they are
    missing = crm.ok("POST", "/request", 201, json={"method": "GET", "path": "sobjects/Nope"})
    assert missing["status_code"] == 404

    for bad in [
        {"method": "GET", "path": "https://evil.example/x"},
        {"method": "GET", "path": "//evil.example/x"},
        {"method": "GET", "path": "/etc/passwd"},
        {"method": "GET", "path": "sobjects", "header": [{"name": "Authorization", "value": "x"}]},
        {"method": "GET", "path": "sobjects", "header": [{"name": "Host", "value": "evil"}]},
        {"method": "TRACE", "path": "sobjects"},
        {"method": "POST", "path": "sobjects/Account", "content": "not base64!"},
    ]:
        refused = crm.call("POST", "/request", json=bad)
        assert refused.status_code == 422, (bad, refused.text)
        assert refused.json()["detail"]["code"] == "NOT_VALID"
