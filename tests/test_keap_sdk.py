"""The Keap simulator checked with Keap's official Python client (``keap-core-v2-sdk``): its
pydantic models are strict (string ids, typed nested objects), so where the client and the
simulator disagree, the simulator is wrong."""

from __future__ import annotations

import json
import ssl
from collections.abc import Iterator

import httpx
import pytest
from keap_core_v2_client import (
    ApiClient,
    CompanyApi,
    Configuration,
    ContactApi,
    NoteApi,
    OpportunityApi,
    TaskApi,
    UsersApi,
)
from keap_core_v2_client.exceptions import ApiException, NotFoundException
from keap_core_v2_client.models import (
    BasicCompany,
    CreateCompanyRequest,
    CreateNoteRequest,
    CreateOpportunityRequest,
    CreateTaskRequest,
    CreateUpdateContactRequest,
    CustomFieldValue,
    EmailAddressRequest,
    UpdateCompanyRequest,
    UpdateNoteRequest,
)
from pydantic import ValidationError

from crmsim.faults import Fault
from crmsim.keap import KeapSimulator
from crmsim.server import RunningSimulator
from crmsim.tls import Certificates

Clients = tuple[KeapSimulator, ApiClient, str]


def _client(base_url: str, ca_file: str, token: str | None = None, key: str = "") -> ApiClient:
    """The SDK pointed at the simulator (its host is https://api.keap.com/crm)."""
    config = Configuration(host=base_url + "/crm", access_token=token, ssl_ca_cert=ca_file)
    config.retries = 0
    if key:  # a PAT or service account key: the SDK's auth settings know only OAuth
        return ApiClient(config, header_name="X-Keap-API-Key", header_value=key)
    return ApiClient(config)


@pytest.fixture
def keap(certificates: Certificates) -> Iterator[Clients]:
    simulator = KeapSimulator()
    with RunningSimulator(simulator.app(), certificates) as running:
        ca = str(certificates.ca_file)
        with _client(running.base_url, ca, simulator.issue_access_token()) as client:
            yield simulator, client, running.base_url


def test_contacts_and_companies_round_trip(keap: Clients) -> None:
    _, client, _ = keap
    companies, contacts = CompanyApi(client), ContactApi(client)
    company = companies.create_company(CreateCompanyRequest(company_name="Acme", website="a.io"))
    assert company.id and company.company_name == "Acme" and company.create_time
    companies.update_company(company.id, UpdateCompanyRequest(notes="Makes things"))
    assert companies.get_company(company.id).notes == "Makes things"
    email = EmailAddressRequest(email="ada@acme.example", field="EMAIL1")
    request = CreateUpdateContactRequest(
        given_name="Ada",
        family_name="Lovelace",
        email_addresses=[email],
        company=BasicCompany(id=company.id),
    )
    contact = contacts.create_contact(request)
    read = contacts.get_contact(contact.id)
    assert read.given_name == "Ada" and read.email_addresses[0].email == "ada@acme.example"
    assert read.company is not None and read.company.id == company.id
    assert read.company.company_name == "Acme"
    contacts.delete_contact(contact.id)
    with pytest.raises(NotFoundException) as gone:
        contacts.get_contact(contact.id)
    error = json.loads(gone.value.body)
    assert error["code"] == 404 and error["status"] == "NOT_FOUND"


def test_opportunities_and_tasks_name_their_contact_stage_and_user(keap: Clients) -> None:
    simulator, client, _ = keap
    contact = simulator.insert("contacts", {"given_name": "Grace", "family_name": "Hopper"})
    opportunities, tasks = OpportunityApi(client), TaskApi(client)
    made = opportunities.create_opportunity(
        CreateOpportunityRequest(
            opportunity_title="Big deal",
            contact_id=contact,
            stage_id="1",
            user_id=simulator.admin,
            projected_revenue_high=2500.5,
        )
    )
    read = opportunities.get_opportunity(made.id)
    assert read.contact.id == contact and read.contact.first_name == "Grace"
    assert read.stage.id == "1" and read.stage.name == "New Opportunity"
    assert read.user is not None and read.user.id == simulator.admin
    assert read.user.first_name == "Ada" and read.projected_revenue_high == 2500.5
    stages = opportunities.list_opportunity_stages()
    assert [s.id for s in stages.stages][:1] == ["1"]
    task = tasks.create_task(
        CreateTaskRequest(
            title="Call back", contact_id=contact, assigned_to_user_id=simulator.admin
        )
    )
    assert task.completed is False and task.contact_id == contact
    listed = tasks.list_tasks(filter=f"contact_id=={contact}")
    assert [t.id for t in listed.tasks] == [task.id] and listed.next_page_token == ""


def test_notes_live_under_their_contact_and_list_across_contacts(keap: Clients) -> None:
    simulator, client, _ = keap
    contact = simulator.insert("contacts", {"given_name": "Ada"})
    notes = NoteApi(client)
    made = notes.create_note(
        contact, CreateNoteRequest(title="Met", text="At the fair", user_id=simulator.admin)
    )
    assert made.contact_id == contact and made.assigned_to_user is not None
    assert made.assigned_to_user.id == simulator.admin
    change = UpdateNoteRequest(text="At the big fair", user_id=simulator.admin)
    notes.update_note(contact, made.id, change)
    assert notes.get_note(contact, made.id).text == "At the big fair"
    found = notes.list_all_notes(filter=f"id=={made.id}")
    assert [(n.id, n.contact_id) for n in found.notes] == [(made.id, contact)]
    other = simulator.insert("contacts", {"given_name": "Bob"})
    with pytest.raises(NotFoundException):  # a note is found only under its own contact
        notes.get_note(other, made.id)
    notes.delete_note(contact, made.id)
    assert notes.list_notes(contact).notes == []


def test_users_and_the_userinfo_answer_as_the_client_reads_them(keap: Clients) -> None:
    simulator, client, _ = keap
    simulator.add_user("Bob", "Builder", "bob@acme.example")
    users = UsersApi(client)
    listed = users.list_paginated_users(order_by="name asc")
    assert [u.family_name for u in listed.users] == ["Admin", "Builder"]
    bob = listed.users[1]
    assert bob.email_addresses[0].email == "bob@acme.example" and bob.create_time is not None
    assert users.get_user_by_id(simulator.admin).given_name == "Ada"
    filtered = users.list_paginated_users(filter="email==bob@acme.example")
    assert [u.id for u in filtered.users] == [bob.id]
    me = users.get_user_info()
    assert me.given_name == "Ada" and me.email == "ada@acme.example"
    # users come at most 100 a page (the client refuses more itself)
    with pytest.raises(ValidationError):
        users.list_paginated_users(page_size=101)
    config = client.configuration
    too_big = httpx.get(
        f"{config.host}/rest/v2/users?page_size=101",
        headers={"Authorization": f"Bearer {config.access_token}"},
        verify=ssl.create_default_context(cafile=config.ssl_ca_cert),
    )
    assert too_big.status_code == 400 and too_big.json()["status"] == "INVALID_ARGUMENT"


def test_custom_fields_are_described_by_the_model_and_written_by_id(keap: Clients) -> None:
    simulator, client, _ = keap
    field = simulator.add_custom_field("contacts", "Shoe size", "WHOLE_NUMBER").removeprefix(
        "custom."
    )
    contacts = ContactApi(client)
    model = contacts.retrieve_contact_model()
    assert [(f.id, f.label, f.record_type) for f in model.custom_fields] == [
        (field, "Shoe size", "CONTACT")
    ]
    value = CustomFieldValue(id=field, content=42)
    request = CreateUpdateContactRequest(given_name="Ada", custom_fields=[value])
    made = contacts.create_contact(request)
    shown = contacts.get_contact(made.id).custom_fields
    assert shown is not None and [(c.id, c.content) for c in shown] == [(field, 42)]


def test_lists_page_with_page_token_until_an_empty_token(keap: Clients) -> None:
    simulator, client, _ = keap
    for n in range(5):
        simulator.insert("companies", {"company_name": f"Co {n}"})
    companies, names, token = CompanyApi(client), [], None
    for _ in range(5):
        page = companies.list_companies(page_size=2, page_token=token, order_by="name desc")
        names += [c.company_name for c in page.companies]
        token = page.next_page_token
        if not token:
            break
    assert names == [f"Co {n}" for n in range(4, -1, -1)] and token == ""
    with pytest.raises(ApiException) as wrong:  # a token is bound to its filter and order
        companies.list_companies(page_size=2, page_token="bogus", order_by="name desc")
    assert wrong.value.status == 400 and json.loads(wrong.value.body)["status"] == (
        "INVALID_ARGUMENT"
    )


def test_credentials_and_throttles_are_the_gateways_faults(
    keap: Clients, certificates: Certificates
) -> None:
    simulator, client, base_url = keap
    ca = str(certificates.ca_file)
    with _client(base_url, ca, key=simulator.add_api_key()) as by_key:
        me = UsersApi(by_key).get_user_info()
    # userinfo names the global user; the application's user has that as its global_user_id
    admin = UsersApi(client).get_user_by_id(simulator.admin)
    assert me.id is not None and me.id != simulator.admin and admin.global_user_id == me.id
    with _client(base_url, ca, "KeapAT-wrong") as wrong, pytest.raises(ApiException) as refused:
        UsersApi(wrong).get_user_info()
    assert refused.value.status == 401
    assert json.loads(refused.value.body)["fault"]["detail"]["errorcode"] == (
        "keymanagement.service.invalid_access_token"
    )
    body = json.dumps({"fault": {"faultstring": "Rate limit quota violation", "detail": {}}})
    simulator.faults.add(Fault(429, body, "application/json", {"Retry-After": "1"}))
    with pytest.raises(ApiException) as limited:
        UsersApi(client).get_user_info()
    assert limited.value.status == 429 and limited.value.headers["Retry-After"] == "1"
    answered = UsersApi(client).get_user_info_with_http_info()
    assert answered.headers is not None
    assert answered.headers["x-keap-product-quota-limit"] == str(simulator.quota)
