"""The Close simulator checked with Close's official Python client (``closeio``): where the
client and the simulator disagree, the simulator is wrong."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest
from closeio_api import APIError, Client, ValidationError

from crmsim.close import CloseSimulator
from crmsim.faults import Fault
from crmsim.server import RunningSimulator
from crmsim.tls import Certificates


@pytest.fixture
def sim(certificates: Certificates) -> Iterator[tuple[CloseSimulator, Client]]:
    simulator = CloseSimulator()
    with RunningSimulator(simulator.app(), certificates) as running:
        simulator.base_url = running.base_url
        client = Client(simulator.add_api_key(), max_retries=2)
        client.base_url = running.base_url + "/api/v1/"  # api.close.com, played on loopback
        client.verify = str(certificates.ca_file)
        yield simulator, client


def test_leads_contacts_and_opportunities_crud(sim: tuple[CloseSimulator, Client]) -> None:
    simulator, api = sim
    assert api.get("me")["organizations"][0]["id"] == simulator.org_id
    lead = api.post("lead", {"name": "Acme", "url": "https://acme.example"})
    assert lead["id"].startswith("lead_") and lead["status_label"] == "Potential"
    contact = api.post(
        "contact",
        {"lead_id": lead["id"], "name": "Ada", "emails": [{"type": "office", "email": "a@x.io"}]},
    )
    assert api.get(f"contact/{contact['id']}")["emails"][0]["email"] == "a@x.io"
    opportunity = api.post("opportunity", {"lead_id": lead["id"], "value": 50000, "note": "Big"})
    assert opportunity["status_type"] == "active" and opportunity["value_formatted"] == "$500.00"
    api.put(f"opportunity/{opportunity['id']}", {"status_id": "stat_won"})
    assert api.get(f"opportunity/{opportunity['id']}")["status_label"] == "Won"
    read = api.get(f"lead/{lead['id']}")
    assert [c["id"] for c in read["contacts"]] == [contact["id"]]
    api.put(f"lead/{lead['id']}", {"name": "Acme Corp"})
    assert api.get(f"lead/{lead['id']}", params={"_fields": "name"}) == {
        "id": lead["id"],
        "name": "Acme Corp",
    }
    assert api.delete(f"contact/{contact['id']}") == {}
    with pytest.raises(APIError) as gone:
        api.get(f"contact/{contact['id']}")
    assert gone.value.response.status_code == 404
    api.delete(f"lead/{lead['id']}")  # takes its opportunities along
    assert api.get("opportunity")["data"] == []


def test_lists_page_with_skip_and_limit(sim: tuple[CloseSimulator, Client]) -> None:
    simulator, api = sim
    lead = simulator.insert("lead", {"name": "Paged"})
    for n in range(5):
        api.post("task", {"lead_id": lead, "text": f"T{n}"})
    first = api.get("task", params={"_skip": 0, "_limit": 3, "_order_by": "date_created"})
    rest = api.get("task", params={"_skip": 3, "_limit": 3, "_order_by": "date_created"})
    assert first["has_more"] is True and rest["has_more"] is False
    assert [t["text"] for t in first["data"] + rest["data"]] == [f"T{n}" for n in range(5)]
    with pytest.raises(ValidationError) as refused:
        api.get("task", params={"_limit": 500})
    assert "_limit" in refused.value.field_errors


def test_the_advanced_filtering_api_searches_and_pages(sim: tuple[CloseSimulator, Client]) -> None:
    simulator, api = sim
    for name in ("Alpha Inc", "Beta LLC", "Alpha Labs"):
        simulator.insert("lead", {"name": name})
    query = {
        "type": "and",
        "queries": [
            {"type": "object_type", "object_type": "lead"},
            {
                "type": "field_condition",
                "field": {"type": "regular_field", "object_type": "lead", "field_name": "name"},
                "condition": {"type": "text", "mode": "beginning_of_words", "value": "alp"},
            },
        ],
    }
    order = [
        {
            "direction": "desc",
            "field": {"type": "regular_field", "object_type": "lead", "field_name": "name"},
        }
    ]
    body = {"query": query, "sort": order, "_fields": {"lead": ["name"]}, "_limit": 1}
    first = api.post("data/search", {**body, "include_counts": True})
    assert first["count"] == {"total": 2} and first["data"][0]["name"] == "Alpha Labs"
    second = api.post("data/search", {**body, "cursor": first["cursor"]})
    assert second["data"][0]["name"] == "Alpha Inc" and second["cursor"] is None


def test_errors_are_the_clients_to_read(sim: tuple[CloseSimulator, Client]) -> None:
    simulator, api = sim
    with pytest.raises(ValidationError) as invalid:
        api.post("opportunity", {"value": "lots"})
    assert set(invalid.value.field_errors) == {"value", "lead_id"}
    # a 429: the client sleeps for the RateLimit header's reset and sends the call again
    error = {"error": {"rate_reset": 0, "message": "API call count exceeded"}}
    headers = {"RateLimit": "limit=1, remaining=0, reset=0"}
    simulator.faults.add(Fault(429, json.dumps(error), "application/json", headers))
    assert api.get("me")["id"] == simulator.admin
    assert simulator.calls.count(("GET", "/api/v1/me/")) == 2
    bad = Client("api_wrong", max_retries=1)
    bad.base_url, bad.verify = api.base_url, api.verify
    with pytest.raises(APIError) as refused:
        bad.get("me")
    assert refused.value.response.status_code == 401
