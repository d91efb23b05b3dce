"""The Dataverse simulator checked with Microsoft's own Python SDK (powerplatform-dataverse-client):
where the SDK and the simulator disagree, the simulator is wrong."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest
from azure.core.credentials import AccessToken
from PowerPlatform.Dataverse.client import DataverseClient
from PowerPlatform.Dataverse.core.errors import HttpError

from crmsim.dynamics import DynamicsSimulator
from crmsim.server import RunningSimulator
from crmsim.tls import Certificates


class SimulatorCredential:
    """An azure.core TokenCredential handing out the simulator's tokens (Entra ID's part)."""

    def __init__(self, token: str) -> None:
        self.token = token
        self.scopes: list[tuple[str, ...]] = []

    def get_token(self, *scopes: str, **kwargs: Any) -> AccessToken:
        self.scopes.append(scopes)
        return AccessToken(self.token, int(time.time()) + 3600)


@pytest.fixture
def sim(certificates: Certificates, monkeypatch: pytest.MonkeyPatch) -> Iterator[DynamicsSimulator]:
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(certificates.ca_file))
    simulator = DynamicsSimulator()
    with RunningSimulator(simulator.app(), certificates) as running:
        simulator.base_url = running.base_url
        yield simulator


@pytest.fixture
def client(sim: DynamicsSimulator) -> Iterator[DataverseClient]:
    credential = SimulatorCredential(sim.issue_access_token())
    with DataverseClient(sim.base_url, credential) as sdk:
        yield sdk
    assert credential.scopes and credential.scopes[0] == (f"{sim.base_url}/.default",)


def test_records_crud(client: DataverseClient, sim: DynamicsSimulator) -> None:
    made = client.records.create("account", {"name": "Contoso", "numberofemployees": 12})
    assert made in sim.records["account"]
    read = client.records.retrieve("account", made, select=["name", "numberofemployees"])
    assert read is not None and read["name"] == "Contoso" and read["numberofemployees"] == 12
    assert read["accountid"] == made and read.etag and read.etag.startswith('W/"')
    client.records.update("account", made, {"telephone1": "555-0100"})
    changed = client.records.retrieve("account", made, select=["telephone1"])
    assert changed is not None and changed["telephone1"] == "555-0100"
    client.records.delete("account", made)
    assert client.records.retrieve("account", made) is None  # the SDK's answer to a 404
    with pytest.raises(HttpError) as absent:  # If-Match: * never creates
        client.records.update("account", made, {"name": "Back"})
    assert absent.value.status_code == 404 and made not in sim.records["account"]


def test_queries_page_with_next_links_and_filter(client: DataverseClient) -> None:
    names = ["Abel", "Baker", "Bishop", "Brown", "Carter"]
    ids = client.records.create("contact", [{"lastname": n} for n in names])  # CreateMultiple
    assert len(ids) == 5
    pages = list(
        client.records.list_pages(
            "contact",
            select=["lastname"],
            filter="startswith(lastname,'B')",
            orderby=["lastname desc"],
            page_size=2,
        )
    )
    assert [[r["lastname"] for r in page] for page in pages] == [["Brown", "Bishop"], ["Baker"]]
    counted = client.records.list("contact", filter="lastname ne 'Abel'", count=True)
    assert sorted(r["lastname"] for r in counted) == names[1:]
    top = client.records.list("contact", orderby=["lastname"], top=2, select=["lastname"])
    assert [r["lastname"] for r in top] == ["Abel", "Baker"]
    quoted = client.records.create("contact", {"lastname": "O'Hara"})
    found = client.records.list("contact", filter="lastname eq 'O''Hara'", select=["lastname"])
    assert [r["contactid"] for r in found] == [quoted]
    with pytest.raises(HttpError) as bad:
        client.records.list("contact", filter="shoesize eq 44")
    assert bad.value.status_code == 400 and "shoesize" in str(bad.value)


def test_top_is_ignored_beside_a_max_page_size(client: DataverseClient) -> None:
    # Microsoft's "Page results": with both $top and Prefer: odata.maxpagesize, $top is ignored
    client.records.create("contact", [{"lastname": f"P{n}"} for n in range(5)])
    pages = list(client.records.list_pages("contact", select=["lastname"], top=3, page_size=2))
    assert [len(page) for page in pages] == [2, 2, 1]
    assert len(list(client.records.list("contact", select=["lastname"], top=3))) == 3


def test_contains_and_startswith_are_sql_like(client: DataverseClient) -> None:
    # Microsoft's "Use wildcard characters in conditions for string values"
    client.records.create("contact", [{"lastname": n} for n in ("50% off", "50 off", "[x]", "x")])

    def names(expression: str) -> list[str]:
        found = client.records.list("contact", filter=expression, select=["lastname"])
        return sorted(r["lastname"] for r in found)

    assert names("contains(lastname,'%')") == ["50 off", "50% off", "[x]", "x"]
    assert names("contains(lastname,'[%]')") == ["50% off"]
    assert names("startswith(lastname,'5_ o')") == ["50 off"]
    assert names("contains(lastname,'[[]x]')") == ["[x]"]
    assert names("endswith(lastname,'[^x]')") == ["50 off", "50% off", "[x]"]


def test_lookups_bind_and_read_back(client: DataverseClient) -> None:
    account = client.records.create("account", {"name": "Fourth Coffee"})
    person = client.records.create(
        "contact",
        {"lastname": "McKay", "parentcustomerid_account@odata.bind": f"/accounts({account})"},
    )
    read = client.records.retrieve("contact", person, select=["_parentcustomerid_value"])
    assert read is not None and read["_parentcustomerid_value"] == account
    annotated = client.records.list(
        "contact",
        select=["lastname", "_parentcustomerid_value"],
        include_annotations="Microsoft.Dynamics.CRM.lookuplogicalname",
    )
    row = next(iter(annotated))
    assert row["_parentcustomerid_value@Microsoft.Dynamics.CRM.lookuplogicalname"] == "account"


def test_metadata_the_sdk_reads(client: DataverseClient) -> None:
    info = client.tables.get("opportunity")
    assert info is not None
    assert info["entity_set_name"] == "opportunities"
    assert info["primary_id_attribute"] == "opportunityid"
    missing = client.tables.get("new_nothing")
    assert missing is None
    tables = client.tables.list()
    assert {"account", "contact", "systemuser"} <= {t["LogicalName"] for t in tables}
    # a label of a choice column becomes its number (the SDK reads the picklist metadata)
    task = client.records.create("task", {"subject": "Call back", "prioritycode": "High"})
    stored = client.records.retrieve("task", task, select=["prioritycode"])
    assert stored is not None and stored["prioritycode"] == 2


def test_batches_with_change_sets_and_references(
    client: DataverseClient, sim: DynamicsSimulator
) -> None:
    batch = client.batch.new()
    batch.records.create("account", {"name": "Outside"})
    with batch.changeset() as changes:
        account = changes.records.create("account", {"name": "Adventure Works"})
        changes.records.create(
            "contact", {"lastname": "Campbell", "parentcustomerid_account@odata.bind": account}
        )
    result = batch.execute()
    assert [r.status_code for r in result.responses] == [204, 204, 204]
    made = {r.entity_id for r in result.responses}
    assert made <= set(sim.records["account"]) | set(sim.records["contact"])
    contact = next(r for r in sim.records["contact"].values() if r["lastname"] == "Campbell")
    assert contact["parentcustomerid"][0] == "account"

    failing = client.batch.new()
    with failing.changeset() as changes:
        changes.records.create("account", {"name": "Rolled back"})
        changes.records.create("account", {"name": "x" * 161})
    failing.records.create("account", {"name": "After"})
    answered = failing.execute(continue_on_error=True)
    statuses = [r.status_code for r in answered.responses]
    assert statuses == [400, 204]
    names = {r["name"] for r in sim.records["account"].values()}
    assert "Rolled back" not in names and "After" in names


def test_errors_the_sdk_understands(client: DataverseClient, sim: DynamicsSimulator) -> None:
    sim.request_limit = 0
    with pytest.raises(HttpError) as limited:
        client.records.list("account")
    assert limited.value.status_code == 429 and limited.value.details["retry_after"] >= 1
    sim.request_limit = 6000
    with pytest.raises(HttpError) as invalid:
        client.records.create("account", {"shoesize": 44})
    assert invalid.value.status_code == 400 and "shoesize" in str(invalid.value)
    sim.expire_tokens()
    with pytest.raises(HttpError) as expired:
        client.records.list("account")
    assert expired.value.status_code == 401
