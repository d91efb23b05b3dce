"""The Salesforce simulator checked with Salesforce's most used Python SDK, simple-salesforce, over
HTTPS on loopback. Where the SDK and the simulator disagree, the simulator is wrong."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import requests
from simple_salesforce import Salesforce
from simple_salesforce.exceptions import (
    SalesforceExpiredSession,
    SalesforceMalformedRequest,
    SalesforceRefusedRequest,
    SalesforceResourceNotFound,
)

from conftest import SalesforceSim
from crmsim.salesforce import SfUser
from crmsim.salesforce_schema import SField


def connect(sim: SalesforceSim, user: SfUser) -> Salesforce:
    session = requests.Session()
    session.verify = sim.ca_file
    session.trust_env = False
    return Salesforce(
        instance_url=sim.base_url,
        session_id=sim.simulator.issue_session(user),
        session=session,
        version="60.0",
    )


@pytest.fixture
def admin_user(salesforce: SalesforceSim) -> SfUser:
    return salesforce.simulator.add_user("admin@acme.example", "pw", name="Ada Admin")


@pytest.fixture
def sf(salesforce: SalesforceSim, admin_user: SfUser) -> Iterator[Salesforce]:
    client = connect(salesforce, admin_user)
    yield client
    client.session.close()


def test_record_crud(sf: Salesforce) -> None:
    account = sf.Account.create({"Name": "Acme"})
    assert account["success"] is True and account["id"].startswith("001")
    created = sf.Contact.create(
        {
            "FirstName": "Bill",
            "LastName": "Wall",
            "Email": "bill@acme.example",
            "AccountId": account["id"],
        }
    )
    contact_id = created["id"]
    assert contact_id.startswith("003") and len(contact_id) == 18
    record = sf.Contact.get(contact_id)
    assert record["attributes"]["type"] == "Contact"
    assert (record["LastName"], record["AccountId"]) == ("Wall", account["id"])
    assert record["CreatedDate"] and record["OwnerId"]
    assert sf.Contact.update(contact_id, {"Title": "CTO"}) == 204
    assert sf.Contact.get(contact_id)["Title"] == "CTO"
    assert sf.Contact.delete(contact_id) == 204
    with pytest.raises(SalesforceResourceNotFound):
        sf.Contact.get(contact_id)


def test_validation_errors(sf: Salesforce) -> None:
    with pytest.raises(SalesforceMalformedRequest) as missing:
        sf.Contact.create({"FirstName": "No last name"})
    assert missing.value.content[0]["errorCode"] == "REQUIRED_FIELD_MISSING"
    assert missing.value.content[0]["fields"] == ["LastName"]
    with pytest.raises(SalesforceMalformedRequest) as unknown:
        sf.Contact.create({"LastName": "X", "Nope__c": 1})
    assert unknown.value.content[0]["errorCode"] == "INVALID_FIELD"
    with pytest.raises(SalesforceMalformedRequest) as reference:
        sf.Contact.create({"LastName": "X", "AccountId": "001000000000000AAA"})
    assert reference.value.content[0]["errorCode"] == "INVALID_CROSS_REFERENCE_KEY"


def test_soql_queries_and_query_locators(
    sf: Salesforce, salesforce: SalesforceSim, admin_user: SfUser
) -> None:
    for index in range(450):
        salesforce.simulator.data.insert(
            "Contact", {"LastName": f"Person {index:03d}", "Email": f"p{index}@acme.example"}
        )
    salesforce.simulator.data.insert("Contact", {"LastName": "O'Brien"})
    first = sf.query(
        "SELECT Id, LastName FROM Contact WHERE LastName LIKE 'Person 00%' ORDER BY LastName DESC"
    )
    assert first["totalSize"] == 10 and first["done"] is True
    assert [r["LastName"] for r in first["records"]][:2] == ["Person 009", "Person 008"]
    quoted = sf.query("SELECT Id FROM Contact WHERE LastName = 'O\\'Brien'")
    assert quoted["totalSize"] == 1
    sf.headers["Sforce-Query-Options"] = "batchSize=200"
    page = sf.query("SELECT Id, Email FROM Contact WHERE Email != null")
    assert page["done"] is False and len(page["records"]) == 200 and page["totalSize"] == 450
    assert page["nextRecordsUrl"].startswith("/services/data/v60.0/query/")
    everything = sf.query_all("SELECT Id FROM Contact WHERE Email != null")
    assert everything["totalSize"] == 450 and len(everything["records"]) == 450
    assert len({r["Id"] for r in everything["records"]}) == 450
    counted = sf.query("SELECT COUNT() FROM Contact WHERE LastName IN ('Person 001', 'Person 002')")
    assert counted["totalSize"] == 2
    window = sf.query("SELECT LastName FROM Contact ORDER BY LastName LIMIT 5 OFFSET 10")
    # "O'Brien" sorts first, so the eleventh name is Person 009.
    assert [r["LastName"] for r in window["records"]] == [f"Person {i:03d}" for i in range(9, 14)]
    with pytest.raises(SalesforceMalformedRequest) as malformed:
        sf.query("SELECT Id FROM Contact WHERE")
    assert malformed.value.content[0]["errorCode"] == "MALFORMED_QUERY"
    with pytest.raises(SalesforceMalformedRequest) as bad_field:
        sf.query("SELECT Nope FROM Contact")
    assert bad_field.value.content[0]["errorCode"] == "INVALID_FIELD"


def test_describe(sf: Salesforce) -> None:
    names = {o["name"] for o in sf.describe()["sobjects"]}
    assert {"Account", "Contact", "Lead", "Opportunity", "Task", "User", "Case"} <= names
    contact = sf.Contact.describe()
    fields = {f["name"]: f for f in contact["fields"]}
    assert fields["LastName"]["nillable"] is False and fields["Email"]["type"] == "email"
    assert fields["AccountId"]["referenceTo"] == ["Account"]
    stages = sf.Opportunity.describe()["fields"]
    stage = next(f for f in stages if f["name"] == "StageName")
    assert "Closed Won" in [v["value"] for v in stage["picklistValues"]]


def test_basic_information_and_custom_fields_on_standard_objects(
    sf: Salesforce, salesforce: SalesforceSim
) -> None:
    basic = sf.Contact.metadata()
    assert basic["objectDescribe"]["name"] == "Contact" and basic["recentItems"] == []
    salesforce.simulator.data.add_custom_field(
        "Contact", SField("Tier__c", "picklist", options=("A",))
    )
    fields = {f["name"]: f for f in sf.Contact.describe()["fields"]}
    assert fields["Tier__c"]["custom"] is True
    made = sf.Contact.create({"LastName": "Custom", "Tier__c": "A"})
    assert sf.Contact.get(made["id"])["Tier__c"] == "A"
    with pytest.raises(SalesforceResourceNotFound):
        sf.Nope__c.metadata()


def test_custom_objects(sf: Salesforce, salesforce: SalesforceSim) -> None:
    salesforce.simulator.data.define_object(
        "Invoice__c", "Invoice", [SField("Amount__c", "currency", custom=True)]
    )
    made = sf.Invoice__c.create({"Name": "INV-1", "Amount__c": 99.5})
    assert sf.Invoice__c.get(made["id"])["Amount__c"] == 99.5
    assert sf.Invoice__c.describe()["custom"] is True
    assert sf.query("SELECT Name FROM Invoice__c WHERE Amount__c > 50")["totalSize"] == 1


def test_sobject_collections(sf: Salesforce) -> None:
    created = sf.restful(
        "composite/sobjects",
        method="POST",
        json={
            "allOrNone": False,
            "records": [
                {"attributes": {"type": "Lead"}, "LastName": "A", "Company": "Acme"},
                {"attributes": {"type": "Lead"}, "LastName": "B"},  # Company missing
            ],
        },
    )
    assert [r["success"] for r in created] == [True, False]
    assert created[1]["errors"][0]["statusCode"] == "REQUIRED_FIELD_MISSING"
    rolled_back = sf.restful(
        "composite/sobjects",
        method="POST",
        json={
            "allOrNone": True,
            "records": [
                {"attributes": {"type": "Lead"}, "LastName": "C", "Company": "Acme"},
                {"attributes": {"type": "Lead"}, "LastName": "D"},
            ],
        },
    )
    assert [r["success"] for r in rolled_back] == [False, False]
    assert sf.query("SELECT COUNT() FROM Lead")["totalSize"] == 1
    deleted = sf.restful("composite/sobjects", method="DELETE", params={"ids": created[0]["id"]})
    assert deleted[0]["success"] is True


def test_expired_sessions(sf: Salesforce, salesforce: SalesforceSim) -> None:
    salesforce.simulator.expire_sessions()
    with pytest.raises(SalesforceExpiredSession):
        sf.query("SELECT Id FROM Contact")


def test_read_only_profiles_are_refused(salesforce: SalesforceSim) -> None:
    reader = salesforce.simulator.add_user("ro@acme.example", "pw", profile="Read Only")
    client = connect(salesforce, reader)
    assert client.query("SELECT Id FROM Account")["totalSize"] == 0
    with pytest.raises(SalesforceRefusedRequest) as refused:
        client.Account.create({"Name": "Nope"})
    assert refused.value.content[0]["errorCode"] == "INSUFFICIENT_ACCESS_OR_READONLY"
    assert client.Account.describe()["createable"] is False


def test_api_limits(sf: Salesforce, salesforce: SalesforceSim) -> None:
    sf.query("SELECT Id FROM Contact")
    usage = sf.api_usage["api-usage"]
    assert usage.total == 15000 and usage.used == salesforce.simulator.data.quota.used
    salesforce.simulator.data.quota.limit = salesforce.simulator.data.quota.used
    with pytest.raises(SalesforceRefusedRequest) as limited:
        sf.query("SELECT Id FROM Contact")
    assert limited.value.content[0]["errorCode"] == "REQUEST_LIMIT_EXCEEDED"


def test_aggregate_queries(sf: Salesforce) -> None:
    account = sf.Account.create({"Name": "Agg"})["id"]
    for stage, amount in [("Prospecting", 100.0), ("Prospecting", 50.0), ("Closed Won", 70.0)]:
        sf.Opportunity.create(
            {"Name": stage, "StageName": stage, "CloseDate": "2027-01-01", "Amount": amount}
        )
    grouped = sf.query(
        "SELECT StageName, COUNT(Id) n, SUM(Amount) total FROM Opportunity GROUP BY StageName "
        "ORDER BY StageName"
    )
    assert [(r["StageName"], r["n"], r["total"]) for r in grouped["records"]] == [
        ("Closed Won", 1, 70.0),
        ("Prospecting", 2, 150.0),
    ]
    assert grouped["records"][0]["attributes"]["type"] == "AggregateResult"
    overall = sf.query("SELECT AVG(Amount), MAX(Amount) FROM Opportunity WHERE Amount > 60")
    assert overall["records"][0]["expr0"] == 85.0 and overall["records"][0]["expr1"] == 100.0
    with pytest.raises(SalesforceMalformedRequest):
        sf.query("SELECT Name, COUNT(Id) FROM Opportunity GROUP BY StageName")
    assert account
