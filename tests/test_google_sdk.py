"""The Google simulator checked with Google's official Python client (``google-api-python-
client``, from the discovery documents it ships): where the client and the simulator disagree,
the simulator is wrong."""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httplib2
import pytest
from google.oauth2.credentials import Credentials
from google_auth_httplib2 import AuthorizedHttp
from googleapiclient.discovery import build
from googleapiclient.errors import HttpError

from crmsim.google import GoogleSimulator
from crmsim.server import RunningSimulator
from crmsim.tls import Certificates


@dataclass
class Google:
    sim: GoogleSimulator
    people: Any
    calendar: Any
    tasks: Any


@pytest.fixture
def google(certificates: Certificates) -> Iterator[Google]:
    simulator = GoogleSimulator()
    with RunningSimulator(simulator.app(), certificates) as running:
        simulator.base_url = running.base_url
        credentials = Credentials(simulator.issue_access_token())
        http = AuthorizedHttp(credentials, http=httplib2.Http(ca_certs=str(certificates.ca_file)))

        def service(name: str, version: str, path: str) -> Any:
            options = {"api_endpoint": running.base_url + path}  # Google's hosts, on loopback
            return build(name, version, http=http, client_options=options, static_discovery=True)

        yield Google(
            simulator,
            service("people", "v1", "/"),
            service("calendar", "v3", "/calendar/v3/"),
            service("tasks", "v1", "/"),
        )


def test_contacts_are_created_read_updated_searched_and_deleted(google: Google) -> None:
    people = google.people.people()
    made = people.createContact(
        personFields="names,emailAddresses",
        body={
            "names": [{"givenName": "Ada", "familyName": "Lovelace"}],
            "emailAddresses": [{"value": "ada@example.com", "type": "work"}],
        },
    ).execute()
    name = made["resourceName"]
    assert name.startswith("people/c") and made["etag"]
    read = people.get(resourceName=name, personFields="names,metadata").execute()
    assert read["names"][0]["displayName"] == "Ada Lovelace"
    assert read["metadata"]["sources"][0]["type"] == "CONTACT"
    changed = people.updateContact(
        resourceName=name,
        updatePersonFields="names",
        personFields="names",
        body={"etag": read["etag"], "names": [{"givenName": "Augusta", "familyName": "King"}]},
    ).execute()
    assert changed["names"][0]["familyName"] == "King" and changed["etag"] != read["etag"]
    with pytest.raises(HttpError) as stale:
        people.updateContact(
            resourceName=name,
            updatePersonFields="names",
            body={"etag": read["etag"], "names": [{"givenName": "X"}]},
        ).execute()
    assert stale.value.status_code == 400
    found = people.searchContacts(query="aug", readMask="names").execute()
    assert [r["person"]["resourceName"] for r in found["results"]] == [name]
    assert people.searchContacts(query="zzz", readMask="names").execute() == {}
    assert people.deleteContact(resourceName=name).execute() == {}
    with pytest.raises(HttpError) as missing:
        people.get(resourceName=name, personFields="names").execute()
    assert missing.value.status_code == 404
    assert "not found" in missing.value.reason


def test_contacts_are_made_and_deleted_in_batches(google: Google) -> None:
    people = google.people.people()
    answer = people.batchCreateContacts(
        body={
            "contacts": [
                {"contactPerson": {"names": [{"givenName": "A", "familyName": f"N{n}"}]}}
                for n in range(2)
            ],
            "readMask": "names",
        }
    ).execute()
    made = [r["person"]["resourceName"] for r in answer["createdPeople"]]
    assert [r["httpStatusCode"] for r in answer["createdPeople"]] == [200, 200]
    assert people.batchDeleteContacts(body={"resourceNames": made}).execute() == {}
    with pytest.raises(HttpError) as gone:
        people.batchDeleteContacts(body={"resourceNames": made}).execute()
    assert gone.value.status_code == 404
    assert google.sim.store["people"] == {}


def test_connections_page_with_the_clients_list_next(google: Google) -> None:
    for n in range(5):
        google.sim.insert("people", {"names": [{"givenName": "P", "familyName": f"N{n}"}]})
    connections = google.people.people().connections()
    request = connections.list(
        resourceName="people/me",
        personFields="names",
        pageSize=2,
        sortOrder="LAST_NAME_ASCENDING",
    )
    names: list[str] = []
    while request is not None:
        answer = request.execute()
        assert answer["totalItems"] == 5
        names += [p["names"][0]["familyName"] for p in answer.get("connections", [])]
        request = connections.list_next(request, answer)
    assert names == [f"N{n}" for n in range(5)]
    with pytest.raises(HttpError) as unmasked:
        connections.list(resourceName="people/me").execute()
    assert unmasked.value.status_code == 400


def test_the_directory_lists_the_domains_users(google: Google) -> None:
    google.sim.add_user("Grace", "Hopper", "grace@acme.example")
    answer = (
        google.people.people()
        .listDirectoryPeople(
            readMask="names,emailAddresses",
            sources=["DIRECTORY_SOURCE_TYPE_DOMAIN_PROFILE"],
        )
        .execute()
    )
    emails = [p["emailAddresses"][0]["value"] for p in answer["people"]]
    assert emails == ["ada@acme.example", "grace@acme.example"]


def test_events_are_inserted_listed_patched_and_deleted(google: Google) -> None:
    events = google.calendar.events()
    body = {
        "summary": "Review",
        "start": {"dateTime": "2027-03-31T09:00:00Z"},
        "end": {"dateTime": "2027-03-31T10:00:00Z"},
    }
    made = [events.insert(calendarId="primary", body=body).execute() for _ in range(3)]
    assert made[0]["kind"] == "calendar#event" and made[0]["status"] == "confirmed"
    for event in reversed(made):  # changed last to first, a few milliseconds apart
        time.sleep(0.01)
        events.patch(calendarId="primary", eventId=event["id"], body={"colorId": "2"}).execute()
    request = events.list(calendarId="primary", maxResults=2, orderBy="updated")
    seen: list[str] = []
    while request is not None:
        answer = request.execute()
        seen += [e["id"] for e in answer.get("items", [])]
        request = events.list_next(request, answer)
    assert seen == [e["id"] for e in reversed(made)]
    patched = events.patch(calendarId="primary", eventId=made[0]["id"], body={"location": "Room 2"})
    assert patched.execute()["location"] == "Room 2"
    events.delete(calendarId="primary", eventId=made[0]["id"]).execute()
    assert events.get(calendarId="primary", eventId=made[0]["id"]).execute()["status"] == (
        "cancelled"
    )
    with pytest.raises(HttpError) as gone:
        events.delete(calendarId="primary", eventId=made[0]["id"]).execute()
    assert gone.value.status_code == 410
    assert gone.value.error_details[0]["reason"] == "deleted"
    with pytest.raises(HttpError) as timeless:
        events.insert(calendarId="primary", body={"summary": "No time"}).execute()
    assert timeless.value.status_code == 400


def test_tasks_are_inserted_listed_patched_and_deleted(google: Google) -> None:
    lists = google.tasks.tasklists().list().execute()
    assert lists["items"][0]["title"] == "My Tasks"
    tasks = google.tasks.tasks()
    made = tasks.insert(
        tasklist="@default", body={"title": "Call", "due": "2027-03-31T15:30:00.000Z"}
    ).execute()
    assert made["due"] == "2027-03-31T00:00:00.000Z" and made["status"] == "needsAction"
    done = tasks.patch(tasklist="@default", task=made["id"], body={"status": "completed"})
    assert done.execute()["completed"]
    listed = tasks.list(tasklist="@default", showCompleted=False).execute()
    assert listed.get("items", []) == []
    tasks.delete(tasklist="@default", task=made["id"]).execute()
    with pytest.raises(HttpError) as missing:
        tasks.get(tasklist="@default", task=made["id"]).execute()
    assert missing.value.status_code == 404
