"""The Pipedrive simulator checked with Pipedrive's Python SDK (pipedrive-python-lib, API v1
with the api_token query parameter): where the SDK and the simulator disagree, the simulator is
wrong."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from pipedrive.client import Client
from pipedrive.exceptions import (
    BadRequestError,
    ForbiddenError,
    NotFoundError,
    TooManyRequestsError,
    UnauthorizedError,
)

from crmsim.pipedrive import PipedriveSimulator
from crmsim.server import RunningSimulator
from crmsim.tls import Certificates


@pytest.fixture
def sim(
    certificates: Certificates, monkeypatch: pytest.MonkeyPatch
) -> Iterator[tuple[PipedriveSimulator, Client]]:
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(certificates.ca_file))
    simulator = PipedriveSimulator()
    with RunningSimulator(simulator.app(), certificates) as running:
        simulator.base_url = running.base_url
        client = Client(domain=running.base_url + "/")
        client.set_api_token(simulator.add_api_token())
        yield simulator, client


def test_persons_crud_and_fields(sim: tuple[PipedriveSimulator, Client]) -> None:
    simulator, client = sim
    org = client.organizations.create_organization({"name": "Acme"})["data"]
    made = client.persons.create_person(
        {"name": "Ada King", "email": "ada@example.com", "org_id": org["id"]}
    )
    person = made["data"]
    assert made["success"] is True and person["first_name"] == "Ada"
    assert (
        person["email"][0]["value"] == "ada@example.com" and person["org_id"]["value"] == org["id"]
    )
    read = client.persons.get_person(person["id"])["data"]
    assert read["name"] == "Ada King" and read["add_time"].count(":") == 2
    client.persons.update_person(person["id"], {"name": "Ada Lovelace"})
    assert client.persons.get_person(person["id"])["data"]["last_name"] == "Lovelace"
    assert client.persons.delete_person(person["id"])["data"]["id"] == person["id"]
    # marked as deleted (gone for good after 30 days): still readable, out of lists
    assert client.persons.get_person(person["id"])["data"]["active_flag"] is False
    assert client.persons.get_all_persons()["data"] is None
    with pytest.raises(NotFoundError):
        client.persons.delete_person(person["id"])
    fields = client.persons.get_person_fields()["data"]
    assert {"name", "email", "phone", "org_id"} <= {f["key"] for f in fields}
    key = simulator.add_custom_field("persons", "Shoe size", "double")
    custom = next(f for f in client.persons.get_person_fields()["data"] if f["key"] == key)
    assert custom["edit_flag"] is True and len(key) == 40 and custom["name"] == "Shoe size"


def test_paging_sorting_and_filters(sim: tuple[PipedriveSimulator, Client]) -> None:
    _, client = sim
    for name in ("Cy", "Ann", "Bob"):
        client.organizations.create_organization({"name": name})
    first = client.organizations.get_all_organizations({"limit": 2, "sort": "name ASC"})
    assert [o["name"] for o in first["data"]] == ["Ann", "Bob"]
    pagination = first["additional_data"]["pagination"]
    assert pagination["more_items_in_collection"] is True and pagination["next_start"] == 2
    rest = client.organizations.get_all_organizations({"start": 2, "limit": 2, "sort": "name ASC"})
    assert [o["name"] for o in rest["data"]] == ["Cy"]
    assert rest["additional_data"]["pagination"]["more_items_in_collection"] is False
    name_field = next(
        f for f in client.organizations.get_organization_fields()["data"] if f["key"] == "name"
    )
    conditions = {
        "glue": "and",
        "conditions": [
            {
                "glue": "and",
                "conditions": [
                    {
                        "object": "organization",
                        "field_id": str(name_field["id"]),
                        "operator": "LIKE '$%'",
                        "value": "b",
                        "extra_value": None,
                    }
                ],
            },
            {"glue": "or", "conditions": []},
        ],
    }
    made = client.filters.create_filter({"name": "B orgs", "conditions": conditions, "type": "org"})
    filter_id = made["data"]["id"]
    found = client.organizations.get_all_organizations({"filter_id": filter_id})
    assert [o["name"] for o in found["data"]] == ["Bob"]
    listed = client.filters.get_all_filters({"type": "org"})["data"]
    assert [f["name"] for f in listed] == ["B orgs"]
    assert client.filters.get_filter(filter_id)["data"]["conditions"] == conditions
    client.filters.delete_filter(filter_id)
    with pytest.raises(NotFoundError):
        client.filters.get_filter(filter_id)
    with pytest.raises(BadRequestError):
        client.filters.create_filter({"name": "bad", "conditions": {"glue": "or"}, "type": "org"})
    without_or = {"glue": "and", "conditions": conditions["conditions"][:1]}
    with pytest.raises(BadRequestError):  # the documented minimum: an AND and an OR group
        client.filters.create_filter({"name": "bad", "conditions": without_or, "type": "org"})


def test_deals_activities_notes_and_leads(sim: tuple[PipedriveSimulator, Client]) -> None:
    simulator, client = sim
    org = client.organizations.create_organization({"name": "Initech"})["data"]["id"]
    person = client.persons.create_person({"name": "Bob Slydell", "org_id": org})["data"]["id"]
    deal = client.deals.create_deal({"title": "TPS", "value": 500, "org_id": org})["data"]
    assert deal["org_id"]["value"] == org and deal["status"] == "open"
    client.deals.update_deal(deal["id"], {"person_id": person, "status": "won"})
    read = client.deals.get_deal(deal["id"])["data"]
    assert read["person_id"]["value"] == person and read["status"] == "won"
    # v1 names a deal's owner user_id, in its fields as in its records
    deal_fields = {f["key"]: f for f in client.deals.get_deal_fields()["data"]}
    assert "user_id" in deal_fields and "owner_id" not in deal_fields
    assert read["user_id"]["id"] == simulator.admin
    # a monetary custom field: v1 shows the amount and <key>_currency beside it
    budget = simulator.add_custom_field("deals", "Budget", "monetary")
    client.deals.update_deal(deal["id"], {budget: 700, f"{budget}_currency": "USD"})
    read = client.deals.get_deal(deal["id"])["data"]
    assert read[budget] == 700 and read[f"{budget}_currency"] == "USD"
    assert simulator.records["deals"][str(deal["id"])][budget] == {"value": 700, "currency": "USD"}
    assert [d["title"] for d in client.deals.get_all_deals()["data"]] == ["TPS"]
    activity = client.activities.create_activity(
        {"subject": "Call Bob", "type": "call", "deal_id": deal["id"], "person_id": person}
    )["data"]
    assert activity["type"] == "call" and activity["person_id"] == person
    client.activities.update_activity(activity["id"], {"done": 1})
    assert client.activities.get_activity(activity["id"])["data"]["done"] is True
    assert len(client.activities.get_all_activities()["data"]) == 1
    note = client.notes.create_note({"content": "Met at the fair", "deal_id": deal["id"]})["data"]
    assert client.notes.get_all_notes({"deal_id": deal["id"]})["data"][0]["id"] == note["id"]
    client.notes.update_note(note["id"], {"content": "Edited"})
    assert client.notes.get_note(note["id"])["data"]["content"] == "Edited"
    client.notes.delete_note(note["id"])
    with pytest.raises(BadRequestError):
        client.notes.create_note({"content": "Attached to nothing"})
    lead = client.leads.create_lead({"title": "Upsell", "person_id": person})["data"]
    assert len(lead["id"]) == 36 and lead["add_time"].endswith("Z")
    client.leads.update_lead(lead["id"], {"title": "Bigger upsell"})
    assert client.leads.get_lead(lead["id"])["data"]["title"] == "Bigger upsell"
    assert [x["id"] for x in client.leads.get_all_leads()["data"]] == [lead["id"]]
    client.leads.delete_lead(lead["id"])
    with pytest.raises(NotFoundError):
        client.leads.get_lead(lead["id"])
    with pytest.raises(BadRequestError):
        client.leads.create_lead({"title": "Orphan"})
    client.deals.delete_deal(deal["id"])
    assert client.deals.get_all_deals()["data"] is None  # Pipedrive's empty v1 list
    assert client.deals.get_deal(deal["id"])["data"]["active_flag"] is False


def test_users_errors_and_rate_limits(sim: tuple[PipedriveSimulator, Client]) -> None:
    simulator, client = sim
    me = client.users.get_me()["data"]
    assert me["id"] == simulator.admin and me["company_id"] == simulator.company_id
    assert [u["email"] for u in client.users.get_all_users()["data"]] == ["ada@acme.example"]
    reader = simulator.add_user("Rita", "rita@acme.example")
    simulator.read_only_users.add(reader)
    limited = Client(domain=simulator.base_url)
    limited.set_api_token(simulator.add_api_token(reader))
    with pytest.raises(ForbiddenError):
        limited.persons.create_person({"name": "X"})
    wrong = Client(domain=simulator.base_url)
    wrong.set_api_token("wrong")
    with pytest.raises(UnauthorizedError):
        wrong.users.get_me()
    simulator.burst = 0
    with pytest.raises(TooManyRequestsError) as refused:
        client.persons.get_all_persons()
    assert refused.value.response.headers["Retry-After"] == "2"
    assert refused.value.response.headers["x-ratelimit-limit"] == "0"


def test_oauth_token_exchange_with_basic_client_authentication(
    sim: tuple[PipedriveSimulator, Client],
) -> None:
    simulator, _ = sim
    simulator.add_app("cid", "secret", "https://app.example/callback")
    client = Client("cid", "secret", domain=simulator.base_url)
    client.OAUTH_BASE_URL = simulator.base_url + "/oauth/"
    refresh = simulator.issue_refresh_token("cid")
    answer = client.refresh_token(refresh)
    assert answer["api_domain"] == simulator.base_url and answer["token_type"] == "Bearer"
    client.set_access_token(answer["access_token"])
    assert client.users.get_me()["data"]["id"] == simulator.admin
    wrong = Client("cid", "nope", domain=simulator.base_url)
    wrong.OAUTH_BASE_URL = client.OAUTH_BASE_URL
    with pytest.raises(UnauthorizedError):
        wrong.refresh_token(refresh)
