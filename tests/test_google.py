"""Google (contract type GSuite) through crmgate, with Google played by crmsim over HTTPS: its
quirks only (the conformance suite runs the rest). Contacts are the People API's, which has no
server-side filter; meetings and events the Calendar's, tasks the Tasks API's; three hosts."""

from __future__ import annotations

import ssl
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import select
from yarl import URL

import conftest
from conftest import (
    AppClient,
    Database,
    RunningGateway,
    Simulated,
    create_account,
    loopback_socket,
    oauth_connect,
    run_simulated,
    sqlite_only,
    with_services,
)
from crmgate.api.app import create_app
from crmgate.connectors.auth import Access
from crmgate.connectors.catalogue import Catalogue, CatalogueError, load_descriptors
from crmgate.connectors.google import GoogleConnector
from crmgate.outbound import Outbound
from crmgate.runtime import Services
from crmgate.settings import Settings
from crmgate.store.models import Application
from crmsim.app import cursor
from crmsim.google import GoogleSimulator, platform_overrides, seed_google
from crmsim.tls import Certificates

pytestmark = sqlite_only


class GoogleSim(Simulated[GoogleSimulator]):
    """The simulator of this module's tests."""


@pytest.fixture
def google_sim(certificates: Certificates) -> Iterator[GoogleSim]:
    yield from run_simulated(GoogleSim, GoogleSimulator(), certificates, platform_overrides)


class Account(AppClient):
    def __init__(self, client: httpx.Client, key: str, sim: GoogleSimulator) -> None:
        super().__init__(client, key)
        self.sim = sim

    def contact(self, first: str, last: str, **more: Any) -> str:
        body = {"first_name": first, "last_name": last, **more}
        return str(self.ok("POST", "/entity/contact", 201, json=body)["id"])


@pytest.fixture
def account(tmp_path: Path, database: Database, google_sim: GoogleSim) -> Iterator[Account]:
    settings = google_sim.settings(tmp_path / "data", database)
    admin = create_account(settings)
    token = google_sim.simulator.issue_access_token()
    with RunningGateway(create_app(settings)) as gateway, gateway.client(admin.key) as client:
        body = {
            "type": "GSuite",
            "authorization": "oAuth-external-refresh",
            "credential": {"access_token": token},
        }
        created = client.post("/v1/application", json=body)
        assert created.status_code == 201, created.text
        yield Account(client, created.json()["key"], google_sim.simulator)


def code(response: httpx.Response) -> str:
    return str(response.json()["detail"]["code"])


# ---- where each API is ----------------------------------------------------------------------


def test_each_api_is_called_on_googles_own_host_for_it() -> None:
    platform = next(p for p in load_descriptors() if p.type == "GSuite")
    connector = GoogleConnector(platform, Outbound())
    access = Access(URL("https://www.googleapis.com"), "ya29.token")
    assert str(connector.url(access, "people", "/v1/people/me")).startswith(
        "https://people.googleapis.com/v1/"
    )
    assert connector.url(access, "tasks", "/tasks/v1/x").host == "tasks.googleapis.com"
    assert connector.url(access, "calendar", "/calendar/v3/x").host == "www.googleapis.com"
    passthrough = connector.records.passthrough_url
    assert passthrough(access, "v1/people/me?personFields=names").host == "people.googleapis.com"
    assert passthrough(access, "tasks/v1/users/@me/lists").host == "tasks.googleapis.com"
    assert passthrough(access, "calendar/v3/users/me/calendarList").host == "www.googleapis.com"
    simulated = Access(URL("https://127.0.0.1:8443"), "ya29.token")
    assert connector.url(simulated, "people", "/v1/x").host == "127.0.0.1"  # it serves all


def test_the_account_is_the_signed_in_user_and_the_company_its_workspace_domain(
    account: Account,
) -> None:
    app = account.client.get(f"/v1/application/{account.key}").json()
    assert app["company"]["id"] == "acme.example"
    assert app["me"]["id"] == account.sim.admin


def test_the_catalogue_lists_googles_objects_and_reads_them_by_their_names(
    account: Account,
) -> None:
    listed = {o["id"]: o for o in account.ok("GET", "/entity/list")}
    names = ["contactGroups", "directory", "events", "otherContacts", "people", "tasks"]
    assert sorted(listed) == names
    for read_only in ("directory", "otherContacts", "contactGroups"):
        assert listed[read_only]["methods"]["create"] is False, read_only
    account.sim.insert("tasks", {"title": "Native"})
    tasks = account.ok("GET", "/entity/tasks/list")
    assert [t["title"] for t in tasks] == ["Native"]
    account.sim.add_other_contact("Pat", "pat@example.com")
    other = account.ok("GET", "/entity/otherContacts/list")
    assert [(o["given_name"], o["email_other"]) for o in other] == [("Pat", "pat@example.com")]
    refused = account.call("POST", "/entity/otherContacts", json={"given_name": "X"})
    assert refused.status_code == 403 and code(refused) == "NOT_SUPPORTED", refused.text
    groups = account.ok("GET", "/entity/contactGroups/list")
    assert [g["id"] for g in groups] == ["myContacts", "starred"]
    unknown = account.call("GET", "/entity/calendarList/list")
    assert unknown.status_code == 404, unknown.text


def test_an_api_whose_scope_was_not_granted_is_not_allowed(
    tmp_path: Path, database: Database, google_sim: GoogleSim
) -> None:
    sim = google_sim.simulator
    scopes = ("openid", "email", "https://www.googleapis.com/auth/contacts")
    token = sim.tokens.issue_access(sim.admin, scopes)
    settings = google_sim.settings(tmp_path / "data", database)
    admin = create_account(settings)
    with RunningGateway(create_app(settings)) as gateway, gateway.client(admin.key) as client:
        credential = {"access_token": token}
        body = {
            "type": "GSuite",
            "authorization": "oAuth-external-refresh",
            "credential": credential,
        }
        created = client.post("/v1/application", json=body)
        assert created.status_code == 201, created.text
        app = AppClient(client, created.json()["key"])
        assert app.call("GET", "/entity/contact/count").status_code == 200
        refused = app.call("GET", "/entity/task/list")
    assert refused.status_code == 403 and code(refused) == "NOT_ALLOWED", refused.text
    assert "insufficient authentication scopes" in refused.text


# ---- contacts: the People API has no filter ---------------------------------------------------


def test_contacts_filter_only_by_id_and_the_prefix_search_checked_exactly(
    account: Account,
) -> None:
    ids = {last: account.contact("Ann", last) for last in ("Max", "Maxwell", "Smith")}
    exact = account.ok("GET", "/entity/contact/list", params={"filter": "last_name eq 'Max'"})
    assert [r["id"] for r in exact] == [ids["Max"]]  # Google's prefix search finds Maxwell too
    begins = account.ok(
        "GET", "/entity/contact/list", params={"filter": "last_name startswith 'Max'"}
    )
    assert sorted(r["id"] for r in begins) == sorted([ids["Max"], ids["Maxwell"]])
    by_id = account.ok("GET", "/entity/contact/count", params={"filter": f"id eq '{ids['Smith']}'"})
    assert by_id == {"total": 1}
    before = len(account.sim.calls)
    for unserved in ("position eq 'CFO'", "last_name contains 'ax'", "updated_at ge '2020-01-01'"):
        refused = account.call("GET", "/entity/contact/list", params={"filter": unserved})
        assert refused.status_code == 403 and code(refused) == "NOT_SUPPORTED", unserved
    assert len(account.sim.calls) == before  # never a read of the whole address book


def test_a_search_with_more_matches_than_google_returns_is_refused(account: Account) -> None:
    for n in range(31):
        account.sim.insert("people", {"names": [{"givenName": "Bo", "familyName": f"Lee{n}"}]})
    refused = account.call("GET", "/entity/contact/list", params={"filter": "first_name eq 'Bo'"})
    assert refused.status_code in (400, 422) and "at most 30" in refused.text


def test_contacts_sort_by_name_ascending_only(account: Account) -> None:
    for last in ("Zed", "Amy"):
        account.contact("X", last)
    listed = account.ok("GET", "/entity/contact/list", params={"sort": "last_name"})
    assert [r["last_name"] for r in listed] == ["Amy", "Zed"]
    newest = account.ok("GET", "/entity/contact/list", params={"sort": "-updated_at"})
    assert [r["last_name"] for r in newest] == ["Amy", "Zed"]
    refused = account.call("GET", "/entity/contact/list", params={"sort": "-last_name"})
    assert refused.status_code == 400 and code(refused) == "NOT_VALID"


def test_an_update_sends_the_current_etag_and_keeps_what_it_does_not_change(
    account: Account,
) -> None:
    made = account.contact("Ann", "Lee", email=[{"type": "home", "address": "ann@home.example"}])
    account.ok("PUT", f"/entity/contact/{made}", json={"first_name": "Anna"})
    person = account.sim.store["people"][made]
    assert person["names"][0]["givenName"] == "Anna" and person["names"][0]["familyName"] == "Lee"
    assert person["emailAddresses"] == [{"type": "home", "value": "ann@home.example"}]
    account.ok(
        "PUT",
        f"/entity/contact/{made}",
        json={"email": [{"type": "work", "address": "ann@work.example"}]},
    )
    person = account.sim.store["people"][made]  # the contract's list, whole
    assert person["emailAddresses"] == [{"type": "work", "value": "ann@work.example"}]
    assert person["names"][0]["givenName"] == "Anna"


def test_a_stale_etag_is_refused_by_the_simulator_as_google_does(google_sim: GoogleSim) -> None:
    sim = google_sim.simulator
    made = sim.insert("people", {"names": [{"givenName": "A", "familyName": "B"}]})
    token = sim.issue_access_token()
    url = f"{google_sim.base_url}/v1/people/{made}:updateContact?updatePersonFields=names"
    with httpx.Client(verify=ssl.create_default_context(cafile=google_sim.ca_file)) as client:
        answer = client.patch(
            url,
            json={"etag": "%stale", "names": [{"givenName": "C"}]},
            headers={"Authorization": f"Bearer {token}"},
        )
    assert answer.status_code == 400
    assert answer.json()["error"]["status"] == "FAILED_PRECONDITION"


def test_contacts_are_made_and_deleted_in_bulk_through_peoples_batch_endpoints(
    account: Account,
) -> None:
    items = [{"first_name": "B", "last_name": f"Bulk {n}"} for n in range(3)]
    before = len(account.sim.calls)
    made = account.ok("POST", "/entity/contact/bulk", 201, json={"item": items})["item"]
    assert [i["status"] for i in made] == [201, 201, 201]
    assert list(account.sim.calls)[before:] == [("POST", "/v1/people:batchCreateContacts")]
    ids = [i["id"] for i in made]
    assert all(account.sim.store["people"][i]["names"][0]["givenName"] == "B" for i in ids)
    missing = "c1234567890123456789"
    refused = account.ok(
        "DELETE", "/entity/contact/bulk", json={"item": [{"id": i} for i in (ids[0], missing)]}
    )["item"]
    assert [i["status"] for i in refused] == [404, 404]  # Google refuses the batch whole
    before = len(account.sim.calls)
    removed = account.ok("DELETE", "/entity/contact/bulk", json={"item": [{"id": i} for i in ids]})
    assert [i["status"] for i in removed["item"]] == [204, 204, 204]
    assert list(account.sim.calls)[before:] == [("POST", "/v1/people:batchDeleteContacts")]
    assert account.ok("GET", "/entity/contact/count") == {"total": 0}


# ---- calendar and tasks -------------------------------------------------------------------------


def test_a_deleted_event_is_not_found_though_google_keeps_it_cancelled(account: Account) -> None:
    body = {
        "subject": "Review",
        "started_at": "2027-03-31T09:00:00+00:00",
        "ended_at": "2027-03-31T10:00:00+00:00",
    }
    made = account.ok("POST", "/entity/meeting", 201, json=body)["id"]
    assert account.call("DELETE", f"/entity/meeting/{made}").status_code == 204
    assert account.sim.store["events"][made]["status"] == "cancelled"
    for method in ("GET", "DELETE", "PUT"):
        gone = account.call(method, f"/entity/meeting/{made}", json={"subject": "X"})
        assert gone.status_code == 404 and code(gone) == "ENTITY_NOT_FOUND", (method, gone.text)
    assert account.ok("GET", "/entity/meeting/count") == {"total": 0}


def test_an_event_without_its_times_is_refused_with_googles_reason(account: Account) -> None:
    refused = account.call("POST", "/entity/event", json={"subject": "No time"})
    assert refused.status_code in (400, 422) and "Missing start time" in refused.text


def test_a_tasks_due_date_keeps_the_date_only_and_due_ranges_filter(account: Account) -> None:
    made = account.ok(
        "POST", "/entity/task", 201, json={"subject": "Call", "due_at": "2027-03-31T15:30:00Z"}
    )["id"]
    shown = account.ok("GET", f"/entity/task/{made}")
    assert shown["due_at"].startswith("2027-03-31T00:00:00")
    later = account.ok("GET", "/entity/task/list", params={"filter": "due_at ge '2027-04-01'"})
    assert later == []
    refused = account.call("GET", "/entity/task/list", params={"filter": "due_at gt '2027-04-01'"})
    assert refused.status_code == 400 and "due_at ge" in refused.text


def test_events_filter_by_title_through_calendars_search_checked_exactly(
    account: Account,
) -> None:
    def event(subject: str, **more: str) -> str:
        times = {"started_at": "2027-03-31T09:00:00Z", "ended_at": "2027-03-31T10:00:00Z"}
        body = {"subject": subject, **times, **more}
        return str(account.ok("POST", "/entity/event", 201, json=body)["id"])

    review = event("Review")
    event("Review notes")  # Google's search finds both words and more: checked exactly here
    event("Lunch", description="Review")
    for path in ("/entity/event/list", "/entity/meeting/list"):
        found = account.ok("GET", path, params={"filter": "subject eq 'review'"})
        assert [r["id"] for r in found] == [review]
    assert account.sim.searches[-1] == "review"  # Calendar's q, not a read of the calendar
    since = {"filter": "subject eq 'Review' and updated_at ge '2020-01-01'"}
    assert account.ok("GET", "/entity/event/count", params=since) == {"total": 1}
    before = len(account.sim.calls)
    for entity, unserved in (("event", "subject contains 'view'"), ("task", "subject eq 'X'")):
        refused = account.call("GET", f"/entity/{entity}/list", params={"filter": unserved})
        assert refused.status_code == 403 and code(refused) == "NOT_SUPPORTED", refused.text
    assert len(account.sim.calls) == before


# ---- the simulator's own fidelity ---------------------------------------------------------------


def test_a_sync_token_reads_the_changes_and_expires_after_seven_days(
    google_sim: GoogleSim,
) -> None:
    sim = google_sim.simulator
    token = sim.issue_access_token()
    headers = {"Authorization": f"Bearer {token}"}
    base = f"{google_sim.base_url}/v1/people/me/connections"
    names = {"personFields": "names"}
    with httpx.Client(
        verify=ssl.create_default_context(cafile=google_sim.ca_file), headers=headers
    ) as client:
        first = client.get(base, params={**names, "requestSyncToken": "true"}).json()
        gone = sim.insert("people", {"names": [{"givenName": "A", "familyName": "B"}]})
        changed = client.get(base, params={**names, "syncToken": first["nextSyncToken"]})
        listed = changed.json()["connections"]
        assert [p["resourceName"] for p in listed] == [f"people/{gone}"]
        old = cursor({"at": "2020-01-01T00:00:00.000Z", "issued": time.time() - 8 * 86400})
        expired = client.get(base, params={**names, "syncToken": old})
    assert expired.status_code == 410
    assert expired.json()["error"]["status"] == "EXPIRED_SYNC_TOKEN"


DONE = "https://app.example/connected"
AUTH = "https://www.googleapis.com/auth/"


@dataclass
class Flow:
    """A gateway whose OAuth client is registered at the simulated Google."""

    gateway: RunningGateway
    admin: conftest.Account
    sim: GoogleSimulator
    settings: Settings
    ca_file: str

    def connect(self, entities: str = "", **session: str) -> str:
        key = oauth_connect(
            self.gateway, self.admin.key, "GSuite", DONE, self.ca_file, entities=entities, **session
        )
        return key

    def app(self, client: httpx.Client, key: str) -> AppClient:
        return AppClient(client, key)

    def stored(self, key: str) -> tuple[dict[str, str], list[str]]:
        """The application's sealed derived values, and its row's columns in clear."""

        async def work(services: Services) -> tuple[dict[str, str], list[str]]:
            _, held = await services.applications.store.credentials(
                self.admin.organisation_id, key, fresh=True
            )
            async with services.engine.connect() as connection:
                row = (await connection.execute(select(Application).filter_by(id=key))).one()
            return held.derived, [str(v) for k, v in row._mapping.items() if k != "ciphertext"]

        found: tuple[dict[str, str], list[str]] = with_services(self.settings, work)
        return found


@pytest.fixture
def flow(tmp_path: Path, database: Database, google_sim: GoogleSim) -> Iterator[Flow]:
    bound = loopback_socket()
    base = f"http://127.0.0.1:{bound.getsockname()[1]}"
    sim = google_sim.simulator
    sim.add_app("google-flow", "google-flow-secret", f"{base}/authorization/oauth/GSuite/callback")
    clients = {
        "GSuite": {
            "client_id": "google-flow",
            "client_secret": "google-flow-secret",
            "redirects": [DONE],
        }
    }
    settings = google_sim.settings(
        tmp_path / "flow", database, public_url=base, oauth_clients=clients
    )
    admin = create_account(settings)
    with RunningGateway(create_app(settings), bound) as gateway:
        yield Flow(gateway, admin, sim, settings, google_sim.ca_file)


def test_the_oauth_flow_connects_a_google_account(flow: Flow) -> None:
    sim = flow.sim
    key = flow.connect()
    with flow.gateway.client(flow.admin.key) as client:
        app = client.get(f"/v1/application/{key}").json()
        assert app["authorization"] == "oAuth-internal" and app["is_authorized"] is True
        assert app["company"]["id"] == sim.domain
        counted = flow.app(client, key).call("GET", "/entity/task/count")
        assert counted.status_code == 200, counted.text
        assert sim.tokens.codes == {} and len(sim.tokens.refresh) == 1  # offline: refreshable
        assert client.delete(f"/v1/application/{key}").status_code == 204
    assert sim.tokens.refresh == {} and ("POST", "/revoke") in sim.calls  # RFC 7009
    asked = sim.authorizations[-1]
    assert asked["access_type"] == "offline" and asked["prompt"] == "consent"
    assert asked["include_granted_scopes"] == "true"
    assert asked["code_challenge_method"] == "S256"
    assert set(asked["scope"].split()) == {
        "openid",
        "email",
        "profile",
        *(AUTH + s for s in ("contacts", "contacts.other.readonly", "calendar.events", "tasks")),
        AUTH + "directory.readonly",
    }


# ---- incremental authorization: scopes per entity --------------------------------------------


def test_a_flow_naming_entities_asks_only_their_scopes_and_seals_what_was_granted(
    flow: Flow,
) -> None:
    key = flow.connect(entities="task")
    asked = flow.sim.authorizations[-1]
    assert asked["scope"].split() == ["openid", "email", "profile", AUTH + "tasks"]
    assert asked["include_granted_scopes"] == "true" and asked["access_type"] == "offline"
    derived, in_clear = flow.stored(key)
    granted = derived["scope"].split()  # the token answer's, as Google names them
    assert sorted(granted) == sorted(
        ["openid", AUTH + "userinfo.email", AUTH + "userinfo.profile", AUTH + "tasks"]
    )
    assert not any("auth/tasks" in column for column in in_clear)  # only in the vault's blob


def test_an_entity_whose_scope_was_not_granted_is_refused_before_any_call(flow: Flow) -> None:
    key = flow.connect(entities="task")
    with flow.gateway.client(flow.admin.key) as client:
        app = flow.app(client, key)
        assert app.call("GET", "/entity/task/count").status_code == 200
        before = len(flow.sim.calls)
        for path in ("/entity/contact/list", "/entity/meeting/count", "/entity/people/list"):
            refused = app.call("GET", path)
            assert refused.status_code == 403 and code(refused) == "NOT_ALLOWED", refused.text
        message = refused.json()["detail"]["message"]
        assert AUTH + "contacts" in message and "entities=contact" in message
        assert len(flow.sim.calls) == before  # Google was never asked


def test_authorizing_more_entities_keeps_the_scopes_granted_before(flow: Flow) -> None:
    key = flow.connect(entities="task")
    assert flow.connect(entities="contact,meeting", application_key=key) == key
    asked = flow.sim.authorizations[-1]["scope"].split()
    assert AUTH + "tasks" not in asked and AUTH + "calendar.events" in asked
    granted = flow.stored(key)[0]["scope"].split()  # include_granted_scopes: all of them
    assert {AUTH + "tasks", AUTH + "contacts", AUTH + "calendar.events"} <= set(granted)
    with flow.gateway.client(flow.admin.key) as client:
        app = flow.app(client, key)
        for entity in ("task", "contact", "meeting", "event"):
            assert app.call("GET", f"/entity/{entity}/count").status_code == 200, entity
        refused = app.call("GET", "/entity/user/list")
    assert refused.status_code == 403 and AUTH + "directory.readonly" in refused.text


def test_entities_a_flow_names_are_checked_against_the_descriptor(flow: Flow) -> None:
    start = f"{flow.gateway.base_url}/authorization/oauth/GSuite/authorize"
    with httpx.Client() as browser:
        for entities in ("lead", "task,lead", ",", "contacts"):
            refused = browser.get(start, params={"redirect": DONE, "entities": entities})
            assert refused.status_code == 400, entities
            assert "location" not in refused.headers
            assert refused.json()["detail"]["code"] == "NOT_VALID"
            assert "entities" in refused.json()["detail"]["message"]
        fine = browser.get(start, params={"redirect": DONE, "entities": "user, task"})
    assert fine.status_code == 302
    scope = httpx.URL(fine.headers["location"]).params["scope"].split()
    assert scope[3:] == [AUTH + "directory.readonly", AUTH + "tasks"]


def test_a_descriptors_scopes_per_entity_name_its_own_entities() -> None:
    for wrong in ({"lead": [AUTH + "contacts"]}, {"task": []}):
        with pytest.raises(CatalogueError, match="entity_scopes"):
            Catalogue.load(["google"], {"GSuite": {"oauth": {"entity_scopes": wrong}}})


def test_a_token_without_the_apis_scope_is_refused_as_google_does(google_sim: GoogleSim) -> None:
    sim = google_sim.simulator
    token = sim.tokens.issue_access(sim.admin, ("openid", AUTH + "contacts"))
    context = ssl.create_default_context(cafile=google_sim.ca_file)
    with httpx.Client(verify=context, headers={"Authorization": f"Bearer {token}"}) as client:
        events = client.get(f"{google_sim.base_url}/calendar/v3/calendars/primary/events")
        people = client.get(f"{google_sim.base_url}/v1/people:listDirectoryPeople")
        allowed = client.get(
            f"{google_sim.base_url}/v1/people/me/connections", params={"personFields": "names"}
        )
    assert allowed.status_code == 200
    for refused in (events, people):
        error = refused.json()["error"]
        assert refused.status_code == 403 and error["status"] == "PERMISSION_DENIED"
        assert error["details"][0]["reason"] == "ACCESS_TOKEN_SCOPE_INSUFFICIENT"
        assert 'error="insufficient_scope"' in refused.headers["WWW-Authenticate"]
    assert events.json()["error"]["errors"][0]["reason"] == "insufficientPermissions"
    assert "errors" not in people.json()["error"]  # the People API lists none
    assert AUTH + "calendar.events" in events.headers["WWW-Authenticate"]


def test_the_demo_seed_fills_a_small_account(google_sim: GoogleSim) -> None:
    seed_google(google_sim.simulator)
    store = google_sim.simulator.store
    assert len(store["people"]) == 3 and len(store["events"]) == 2 and len(store["tasks"]) == 1
