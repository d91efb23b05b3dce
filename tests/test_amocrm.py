"""Kommo (amoCRM) through crmgate: its quirks only (tests/test_conformance.py runs the rest).
Its OAuth callback names the account, whose own token endpoint takes the code and the refreshes
(each repeating the redirect URI); an amoCRM.ru account consents at www.amocrm.ru, a Kommo one
at www.kommo.com; each refresh token is used once (rotated), so 50 calls on an expired token
across two gateway processes must cause one refresh; dates are Unix seconds, an empty list and
a record not found are 204, a contact's name is its first and last names, and API v4 deletes no
record crmgate maps."""

from __future__ import annotations

import ssl
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path
from typing import Any

import httpx
import pytest

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
)
from crmgate.api.app import create_app
from crmsim.amocrm import AmoSimulator, platform_overrides, seed_amocrm
from crmsim.tls import Certificates
from test_tokens import CLIENT_ID, CLIENT_SECRET, start_process

pytestmark = sqlite_only
TOKEN_CALL = ("POST", "/oauth2/access_token")


class AmoSim(Simulated[AmoSimulator]):
    """The simulator of this module's tests."""


@pytest.fixture
def amo_sim(certificates: Certificates) -> Iterator[AmoSim]:
    yield from run_simulated(
        AmoSim, AmoSimulator(per_second=100_000), certificates, platform_overrides
    )


class Account(AppClient):
    def __init__(self, client: httpx.Client, key: str, sim: AmoSimulator) -> None:
        super().__init__(client, key)
        self.sim = sim


@pytest.fixture
def account(tmp_path: Path, database: Database, amo_sim: AmoSim) -> Iterator[Account]:
    """A Kommo account connected with a long-lived token."""
    settings = amo_sim.settings(tmp_path / "data", database)
    admin = create_account(settings)
    credential = {"instance_url": amo_sim.base_url, "api_key": amo_sim.simulator.add_api_key()}
    body = {"type": "AmoCRM", "authorization": "key", "credential": credential}
    with RunningGateway(create_app(settings)) as gateway, gateway.client(admin.key) as client:
        created = client.post("/v1/application", json=body)
        assert created.status_code == 201, created.text
        yield Account(client, created.json()["key"], amo_sim.simulator)


def _flow_settings(
    tmp_path: Path, database: Database, amo_sim: AmoSim, base: str, done: str
) -> Any:
    amo_sim.simulator.add_app(
        CLIENT_ID, CLIENT_SECRET, f"{base}/authorization/oauth/AmoCRM/callback"
    )
    clients = {
        "AmoCRM": {"client_id": CLIENT_ID, "client_secret": CLIENT_SECRET, "redirects": [done]}
    }
    return amo_sim.settings(tmp_path / "flow", database, public_url=base, oauth_clients=clients)


def test_the_oauth_flow_connects_the_account_its_callback_names(
    tmp_path: Path, database: Database, amo_sim: AmoSim
) -> None:
    bound = loopback_socket()
    base = f"http://127.0.0.1:{bound.getsockname()[1]}"
    done = "https://app.example/connected"
    sim = amo_sim.simulator
    settings = _flow_settings(tmp_path, database, amo_sim, base, done)
    admin = create_account(settings)
    with RunningGateway(create_app(settings), bound) as gateway:
        key = oauth_connect(gateway, admin.key, "AmoCRM", done, amo_sim.ca_file)
        with gateway.client(admin.key) as client:
            app = client.get(f"/v1/application/{key}").json()
            assert app["authorization"] == "oAuth-internal" and app["is_authorized"] is True
            assert app["company"]["id"] == str(sim.account_id)
            assert AppClient(client, key).call("GET", "/entity/contact/count").status_code == 200
            before = sim.calls.count(TOKEN_CALL)
            old = set(sim.refresh_tokens)
            sim.expire_tokens()
            assert AppClient(client, key).call("GET", "/entity/contact/count").status_code == 200
    assert sim.tokens.codes == {}  # exchanged at the account's own endpoint, once
    assert sim.calls.count(TOKEN_CALL) - before == 1
    assert not old & set(sim.refresh_tokens)  # the refresh token was rotated, the new one kept


def _families(sim: AmoSim) -> AmoSim:
    """The simulator as an amoCRM.ru account whose family's login server it also plays (Kommo's
    accounts stay at www.kommo.com)."""
    host = sim.base_url.removeprefix("https://")

    def overrides(base: str) -> dict[str, dict[str, Any]]:
        entry = platform_overrides(base)["AmoCRM"]
        entry["instance_hosts"] = [host, "*.kommo.com"]
        entry["regions"] = [
            {
                "name": "kommo",
                "login_url": "https://www.kommo.com",
                "host_suffixes": [".kommo.com"],
            },
            {"name": "amocrm.ru", "login_url": base, "hosts": [host]},
        ]
        return {"AmoCRM": entry}

    return replace(sim, overrides=overrides)


def _browser(ca_file: str) -> httpx.Client:
    return httpx.Client(
        trust_env=False, timeout=20, verify=ssl.create_default_context(cafile=ca_file)
    )


def _authorize(
    gateway: RunningGateway, admin: str, instance: str, browser: httpx.Client
) -> httpx.Response:
    """Where crmgate sends ``browser`` for a flow naming ``instance``."""
    with gateway.client(admin) as client:
        body = {"type": "AmoCRM", "redirect": "https://app.example/connected"}
        opened = client.post("/v1/oauth/session", json={**body, "instance_url": instance})
        assert opened.status_code == 201, opened.text
    return browser.get(opened.json()["authorize_url"])


def test_an_account_named_in_the_flow_consents_at_its_familys_login_server(
    tmp_path: Path, database: Database, amo_sim: AmoSim
) -> None:
    bound = loopback_socket()
    base = f"http://127.0.0.1:{bound.getsockname()[1]}"
    done = "https://app.example/connected"
    sim = _families(amo_sim)
    settings = _flow_settings(tmp_path, database, sim, base, done)
    admin = create_account(settings)
    with RunningGateway(create_app(settings), bound) as gateway:
        with _browser(sim.ca_file) as browser:
            kommo = _authorize(gateway, admin.key, "https://acme.kommo.com", browser)
            ru = _authorize(gateway, admin.key, sim.base_url, browser)
        assert kommo.status_code == 302
        assert kommo.headers["location"].startswith("https://www.kommo.com/oauth?")
        assert ru.headers["location"].startswith(sim.base_url + "/oauth?")  # its login server
        key = oauth_connect(
            gateway, admin.key, "AmoCRM", done, sim.ca_file, instance_url=sim.base_url
        )
        with gateway.client(admin.key) as client:
            app = client.get(f"/v1/application/{key}").json()
    assert app["is_authorized"] is True and app["company"]["id"] == str(sim.simulator.account_id)


def test_a_callback_naming_an_account_of_another_family_connects_nothing(
    tmp_path: Path, database: Database, amo_sim: AmoSim
) -> None:
    bound = loopback_socket()
    base = f"http://127.0.0.1:{bound.getsockname()[1]}"
    done = "https://app.example/connected"
    sim = _families(amo_sim)
    sim.simulator.referer = "acme.kommo.com"  # a Kommo account, from amoCRM.ru's login server
    settings = _flow_settings(tmp_path, database, sim, base, done)
    admin = create_account(settings)
    with RunningGateway(create_app(settings), bound) as gateway:
        with _browser(sim.ca_file) as browser:
            response = _authorize(gateway, admin.key, sim.base_url, browser)
            while response.status_code == 302 and not response.headers["location"].startswith(done):
                response = browser.get(response.headers["location"])
        assert response.headers.get("location", "").startswith(done + "#error="), response.text
        with gateway.client(admin.key) as client:
            assert client.get("/v1/application/count").json()["total"] == 0
    assert sim.simulator.calls.count(TOKEN_CALL) == 0  # the client secret went nowhere


def test_kommo_refuses_a_refresh_without_the_integrations_redirect_uri(amo_sim: AmoSim) -> None:
    sim = amo_sim.simulator
    callback = "https://gateway.example/authorization/oauth/AmoCRM/callback"
    sim.add_app(CLIENT_ID, CLIENT_SECRET, callback)
    form = {
        "grant_type": "refresh_token",
        "client_id": CLIENT_ID,
        "client_secret": CLIENT_SECRET,
        "refresh_token": sim.issue_refresh_token(CLIENT_ID),
    }
    context = ssl.create_default_context(cafile=amo_sim.ca_file)
    with httpx.Client(base_url=amo_sim.base_url, verify=context) as http:
        for wrong in ({}, {"redirect_uri": "https://other.example/callback"}):
            refused = http.post("/oauth2/access_token", data={**form, **wrong})
            assert refused.status_code == 400 and refused.json()["error"] == "invalid_request"
        renewed = http.post("/oauth2/access_token", data={**form, "redirect_uri": callback})
    assert renewed.status_code == 200 and renewed.json()["refresh_token"] != form["refresh_token"]


def test_a_callback_naming_a_host_not_kommos_connects_nothing(
    tmp_path: Path, database: Database, amo_sim: AmoSim
) -> None:
    bound = loopback_socket()
    base = f"http://127.0.0.1:{bound.getsockname()[1]}"
    done = "https://app.example/connected"
    amo_sim.simulator.referer = "evil.example"  # the client secret must never go there
    settings = _flow_settings(tmp_path, database, amo_sim, base, done)
    admin = create_account(settings)
    with RunningGateway(create_app(settings), bound) as gateway:
        with gateway.client(admin.key) as client:
            opened = client.post("/v1/oauth/session", json={"type": "AmoCRM", "redirect": done})
            assert opened.status_code == 201, opened.text
        context = ssl.create_default_context(cafile=amo_sim.ca_file)
        with httpx.Client(trust_env=False, timeout=20, verify=context) as browser:
            response = browser.get(opened.json()["authorize_url"])
            while response.status_code == 302 and not response.headers["location"].startswith(done):
                response = browser.get(response.headers["location"])
        assert response.headers["location"].startswith(done + "#error="), response.headers
        with gateway.client(admin.key) as client:
            assert client.get("/v1/application/count").json()["total"] == 0
    assert amo_sim.simulator.calls.count(TOKEN_CALL) == 0


@pytest.mark.store_backends("postgresql")
def test_50_concurrent_calls_on_an_expired_token_in_two_processes_cause_one_refresh(
    tmp_path: Path, database: Database, amo_sim: AmoSim
) -> None:
    sim = amo_sim.simulator
    sim.add_app(CLIENT_ID, CLIENT_SECRET)
    clients = {"AmoCRM": {"client_id": CLIENT_ID, "client_secret": CLIENT_SECRET}}
    settings = amo_sim.settings(tmp_path / "data", database, oauth_clients=clients)
    admin = create_account(settings)
    credential = {
        "instance_url": amo_sim.base_url,
        "access_token": sim.issue_access_token(),
        "refresh_token": sim.issue_refresh_token(CLIENT_ID),
    }
    body = {"type": "AmoCRM", "authorization": "oAuth-internal", "credential": credential}
    with RunningGateway(create_app(settings)) as gateway, gateway.client(admin.key) as client:
        created = client.post("/v1/application", json=body)
        assert created.status_code == 201, created.text
        key = created.json()["key"]

    class Pointed:
        ca_file = amo_sim.ca_file

        def overrides(self) -> dict[str, dict[str, Any]]:
            return amo_sim.overrides(amo_sim.base_url)

    processes = [start_process(settings, Pointed(), "AmoCRM") for _ in range(2)]
    try:
        headers = {"X-API2CRM-USER-KEY": admin.key, "X-API2CRM-APPLICATION-KEY": key}
        https = [httpx.Client(base_url=b, headers=headers, timeout=30) for _, b in processes]
        for round_ in range(2):  # the second expiry refreshes with what the first stored
            sim.expire_tokens()
            before = sim.calls.count(TOKEN_CALL)
            spread = [https[n % 2] for n in range(50)]
            with ThreadPoolExecutor(max_workers=20) as pool:
                answers = list(
                    pool.map(lambda c: c.get("/v1/application/entity/contact/count"), spread)
                )
            failed = [a.text for a in answers if a.status_code != 200]
            assert failed == [], (round_, failed[:3])
            assert sim.calls.count(TOKEN_CALL) - before == 1, round_
            assert len(sim.refresh_tokens) == 1  # the used one is dead, the rotated one kept
        for http in https:
            http.close()
    finally:
        for served, _ in processes:
            served.stop()


def test_records_show_iso_dates_their_company_and_custom_fields(account: Account) -> None:
    sim = account.sim
    field = sim.add_custom_field("contacts", "Shoe size", "numeric")
    company = account.ok("POST", "/entity/account", 201, json={"name": "Initech"})["id"]
    relation = {"account": [{"type": "account", "entity": {"id": company}}]}
    made = account.ok(
        "POST", "/entity/contact", 201, json={"last_name": "Ada", "relation": relation}
    )
    stored = sim.store["contacts"][made["id"]]
    assert isinstance(stored["created_at"], int) and stored["_links_to"] == [int(company)]
    one = account.ok(
        "GET", f"/entity/contact/{made['id']}", headers={"X-API2CRM-NATIVE-ENABLE": "1"}
    )
    assert one["created_at"].endswith("+00:00") and one["created_at"][:2] == "20"
    assert one["relation"]["account"][0]["entity"]["id"] == company
    described = account.ok("GET", "/entity/contact/describe")
    assert f"cf_{field}" in str(described)
    due = "2027-03-31T09:00:00+00:00"
    task = account.ok("POST", "/entity/task", 201, json={"subject": "Call", "due_at": due})["id"]
    assert sim.store["tasks"][task]["complete_till"] == 1806483600
    assert account.ok("GET", f"/entity/task/{task}")["due_at"] == due


def test_an_empty_list_and_a_missing_record_are_kommos_204(account: Account) -> None:
    assert account.ok("GET", "/entity/opportunity/list") == []
    assert account.ok("GET", "/entity/opportunity/count") == {"total": 0}
    missing = account.call("GET", "/entity/opportunity/424242")
    assert missing.status_code == 404 and missing.json()["detail"]["code"] == "ENTITY_NOT_FOUND"


def test_a_contacts_name_is_its_first_and_last_names_and_each_filters(account: Account) -> None:
    sim = account.sim
    body = {"first_name": "Ada", "last_name": "Lovelace"}
    made = account.ok("POST", "/entity/contact", 201, json=body)["id"]
    assert sim.store["contacts"][made]["name"] == "Ada Lovelace"  # Kommo joins them
    account.ok("PUT", f"/entity/contact/{made}", json={"last_name": "King"})
    assert sim.store["contacts"][made]["name"] == "Ada King"
    shown = account.ok("GET", f"/entity/contact/{made}")
    assert (shown["first_name"], shown["last_name"]) == ("Ada", "King")
    named = sim.insert("contacts", {"name": "Sam"})  # a name alone is a first name (Kommo's)
    assert account.ok("GET", f"/entity/contact/{named}")["first_name"] == "Sam"
    for condition, found in (("last_name eq 'King'", [made]), ("first_name eq 'Sam'", [named])):
        listed = account.ok("GET", "/entity/contact/list", params={"filter": condition})
        assert [r["id"] for r in listed] == found, condition


def test_nothing_is_deleted(account: Account) -> None:
    made = account.ok("POST", "/entity/account", 201, json={"name": "Keep"})["id"]
    refused = account.call("DELETE", f"/entity/account/{made}")
    assert refused.status_code == 403 and refused.json()["detail"]["code"] == "NOT_SUPPORTED"
    items = account.ok("DELETE", "/entity/account/bulk", json={"item": [{"id": made}]})["item"]
    assert [(i["status"], i["error"]["code"]) for i in items] == [(403, "NOT_SUPPORTED")]
    assert made in account.sim.store["companies"]
    assert not [call for call in account.sim.calls if call[0] == "DELETE"]


def test_a_price_with_a_fraction_is_refused_not_rounded(account: Account) -> None:
    refused = account.call("POST", "/entity/opportunity", json={"name": "Deal", "amount": 10.5})
    assert refused.status_code == 422 and refused.json()["detail"]["code"] == "NOT_VALID"
    assert refused.json()["detail"]["errors"][0]["field"] == "amount"
    assert account.sim.store["leads"] == {}


def test_kommos_validation_errors_are_not_valid_with_its_reason(account: Account) -> None:
    refused = account.call("POST", "/entity/task", json={"subject": "No due date"})
    assert refused.status_code == 422, refused.text
    detail = refused.json()["detail"]
    assert detail["code"] == "NOT_VALID" and "should not be blank" in detail["message"]
    assert [e["field"] for e in detail["errors"]] == ["due_at"]  # Kommo's path, as the contract's


def test_lists_filter_by_what_kommos_filter_takes_and_refuse_the_rest(account: Account) -> None:
    for name in ("Alpha", "Beta"):
        account.ok("POST", "/entity/account", 201, json={"name": name})
    found = account.ok("GET", "/entity/account/list", params={"filter": "name eq 'beta'"})
    assert [r["name"] for r in found] == ["Beta"]
    recent = account.ok(
        "GET", "/entity/account/list", params={"filter": "created_at ge '2020-01-01T00:00:00Z'"}
    )
    assert len(recent) == 2
    assert account.ok("GET", "/entity/account/list", params={"sort": "-id"})[0]["name"] == "Beta"
    for bad in ({"filter": "name contains 'et'"}, {"sort": "name"}):
        refused = account.call("GET", "/entity/account/list", params=bad)
        assert refused.status_code == 400, (bad, refused.text)


def test_tasks_sort_and_filter_by_what_kommos_task_list_takes(account: Account) -> None:
    for subject, due in (
        ("Later", "2027-05-01T09:00:00+00:00"),
        ("Sooner", "2027-04-01T09:00:00+00:00"),
    ):
        account.ok("POST", "/entity/task", 201, json={"subject": subject, "due_at": due})
    by_due = account.ok("GET", "/entity/task/list", params={"sort": "due_at"})
    assert [t["subject"] for t in by_due] == ["Sooner", "Later"]  # order[complete_till]
    since = {"filter": "updated_at ge '2020-01-01T00:00:00Z'"}
    assert len(account.ok("GET", "/entity/task/list", params=since)) == 2
    for bad in ({"sort": "updated_at"}, {"filter": "created_at ge '2020-01-01T00:00:00Z'"}):
        refused = account.call("GET", "/entity/task/list", params=bad)
        assert refused.status_code == 400, (bad, refused.text)


def test_the_demo_seed_fills_a_small_account(amo_sim: AmoSim) -> None:
    seed_amocrm(amo_sim.simulator)
    store = amo_sim.simulator.store
    assert len(store["companies"]) == 3 and len(store["contacts"]) == 3
    assert len(store["leads"]) == 3 and len(store["tasks"]) == 3
    overrides = platform_overrides(amo_sim.base_url)["AmoCRM"]
    assert overrides["oauth"]["token_url"].endswith("/oauth2/access_token")


def test_the_simulator_answers_429_past_its_calls_a_second(amo_sim: AmoSim) -> None:
    sim = amo_sim.simulator
    sim.per_second = 7
    headers = {"Authorization": f"Bearer {sim.add_api_key()}"}
    context = ssl.create_default_context(cafile=amo_sim.ca_file)
    with httpx.Client(base_url=amo_sim.base_url, headers=headers, verify=context) as http:
        answers = [http.get("/api/v4/account") for _ in range(8)]
    assert [a.status_code for a in answers[:7]] == [200] * 7
    limited = answers[7]
    assert limited.status_code == 429 and int(limited.headers["Retry-After"]) >= 1
    assert limited.headers["Content-Type"].startswith("application/problem+json")


# ---- notes on deals, contacts and companies -------------------------------------------------

PARENTS = {"opportunity": "leads", "contact": "contacts", "account": "companies"}


def _linked(relation: str, parent: str, body: str = "Met") -> dict[str, Any]:
    return {"body": body, "relation": {relation: [{"type": relation, "entity": {"id": parent}}]}}


def _note(account: Account, relation: str, parent: str, body: str = "Met") -> str:
    made = account.ok("POST", "/entity/note", 201, json=_linked(relation, parent, body))
    return str(made["id"])


def _native(note: str) -> str:
    return note.rpartition("-")[2]


@pytest.mark.parametrize("relation", ["contact", "account"])
def test_a_note_on_a_contact_or_a_company_is_made_read_and_changed_in_its_parents_notes(
    account: Account, relation: str
) -> None:
    sim, kind = account.sim, PARENTS[relation]
    parent = sim.insert(kind, {"name": "Parent"})
    note = _note(account, relation, parent)
    native = _native(note)
    assert note == f"{kind}-{native}"  # Kommo finds a note under its parent's type only
    stored = sim.store["notes"][native]
    assert (stored["_parent"], stored["entity_id"]) == (kind, int(parent))
    assert stored["params"] == {"text": "Met"} and stored["note_type"] == "common"
    one = account.ok("GET", f"/entity/note/{note}")
    assert one["body"] == "Met" and one["relation"][relation][0]["entity"]["id"] == parent
    assert set(one["relation"]) - {"user"} == {relation}
    account.ok("PUT", f"/entity/note/{note}", json={"body": "Changed"})
    assert account.ok("GET", f"/entity/note/{note}")["body"] == "Changed"
    for call in (("POST", ""), ("GET", f"/{native}"), ("PATCH", f"/{native}")):
        assert (call[0], f"/api/v4/{kind}/notes{call[1]}") in sim.calls, call


def test_notes_listed_by_their_parent_come_from_its_own_list(account: Account) -> None:
    sim = account.sim
    ada, bob = (sim.insert("contacts", {"name": name}) for name in ("Ada", "Bob"))
    firm, deal = sim.insert("companies", {"name": "Initech"}), sim.insert("leads", {"name": "D"})
    adas = [_note(account, "contact", ada, f"Ada {n}") for n in range(2)]
    _note(account, "contact", bob)
    firms = _note(account, "account", firm, "Initech")
    _note(account, "opportunity", deal)
    by_ada = {"filter": f"relation.contact eq '{ada}'"}
    assert [r["id"] for r in account.ok("GET", "/entity/note/list", params=by_ada)] == adas
    assert account.ok("GET", "/entity/note/count", params=by_ada) == {"total": 2}
    assert ("GET", f"/api/v4/contacts/{ada}/notes") in sim.calls  # the parent's own list
    by_firm = {"filter": f"relation.account eq '{firm}'", "sort": "-id"}
    listed = account.ok("GET", "/entity/note/list", params=by_firm)
    assert [(r["id"], r["body"]) for r in listed] == [(firms, "Initech")]
    before = len(sim.calls)
    both = {"filter": f"relation.contact eq '{ada}' and relation.account eq '{firm}'"}
    assert account.ok("GET", "/entity/note/list", params=both) == []  # a note has one parent
    assert len(sim.calls) == before
    bad = account.call("GET", "/entity/note/list", params={"filter": "relation.contact eq 'x'"})
    assert bad.status_code == 400 and bad.json()["detail"]["code"] == "NOT_VALID"


def test_notes_without_a_parent_are_the_three_lists_merged_in_order(account: Account) -> None:
    sim = account.sim
    parents = {kind: sim.insert(kind, {"name": "Parent"}) for kind in PARENTS.values()}
    made = [  # batches (250) that end apart: the deals' first ends before the contacts' notes
        sim.insert(f"{kind}/notes", note)
        for kind, many in (("leads", 300), ("contacts", 300), ("companies", 100), ("leads", 100))
        for n in range(many)
        if (
            note := {
                "entity_id": int(parents[kind]),
                "note_type": "common",
                "params": {"text": "."},
            }
        )
    ]
    before = len(sim.calls)
    pages = [
        account.ok("GET", "/entity/note/list", params={"sort": "id", "page_size": 100, "page": p})
        for p in range(1, 10)
    ]
    listed = [_native(r["id"]) for page in pages for r in page]
    assert listed == made and pages[-1] == []  # every note once, in id order across the lists
    assert len(sim.calls) - before == 5  # each batch read once: 2 of deals and contacts, 1
    newest = [
        account.ok("GET", "/entity/note/list", params={"sort": "-id", "page_size": 100, "page": p})
        for p in (1, 2)
    ]
    assert [_native(r["id"]) for page in newest for r in page] == made[::-1][:200]
    assert {r["id"].partition("-")[0] for r in newest[1]} == {"companies"}
    assert account.ok("GET", "/entity/note/count") == {"total": 800}


def test_a_note_has_one_parent_and_stays_on_its_type(account: Account) -> None:
    sim = account.sim
    ada, bob = (sim.insert("contacts", {"name": name}) for name in ("Ada", "Bob"))
    deal = sim.insert("leads", {"name": "Deal"})
    two = _linked("contact", ada)
    two["relation"]["opportunity"] = [{"type": "opportunity", "entity": {"id": deal}}]
    for body in ({"body": "Orphan"}, two):
        refused = account.call("POST", "/entity/note", json=body)
        assert refused.status_code == 422, refused.text
        assert refused.json()["detail"]["code"] == "NOT_VALID"
    note = _note(account, "contact", ada)
    moved = account.call("PUT", f"/entity/note/{note}", json=_linked("opportunity", deal))
    assert moved.status_code == 422 and moved.json()["detail"]["code"] == "NOT_VALID"
    assert not [call for call in sim.calls if call[0] == "PATCH"]
    account.ok("PUT", f"/entity/note/{note}", json=_linked("contact", bob))  # another contact
    assert sim.store["notes"][_native(note)]["entity_id"] == int(bob)
    assert len(sim.store["notes"]) == 1


def test_a_note_is_found_by_the_id_naming_its_type_only(account: Account) -> None:
    sim = account.sim
    note = _note(account, "opportunity", sim.insert("leads", {"name": "Deal"}))
    assert note.isdigit()  # a deal's note keeps Kommo's id
    for wrong in (f"contacts-{note}", f"companies-{note}", f"leads-{note}", f"tasks-{note}"):
        missing = account.call("GET", f"/entity/note/{wrong}")
        assert missing.status_code == 404, wrong
    asked = [path for method, path in sim.calls if path.endswith(f"/notes/{note}")]
    assert asked == [f"/api/v4/contacts/notes/{note}", f"/api/v4/companies/notes/{note}"]
    found = account.ok("GET", "/entity/note/list", params={"filter": f"id eq '{note}'"})
    assert [r["id"] for r in found] == [note]
    elsewhere = {"filter": f"id eq 'contacts-{note}'"}
    assert account.ok("GET", "/entity/note/list", params=elsewhere) == []


def test_notes_in_bulk_go_to_their_parents_lists_and_answer_in_order(account: Account) -> None:
    sim = account.sim
    ada, firm = sim.insert("contacts", {"name": "Ada"}), sim.insert("companies", {"name": "I"})
    deal = sim.insert("leads", {"name": "Deal"})
    items = [
        _linked("contact", ada),
        _linked("opportunity", deal),
        {"body": "Orphan"},
        _linked("account", firm),
        _linked("contact", ada, "Again"),
    ]
    made = account.ok("POST", "/entity/note/bulk", 201, json={"item": items})["item"]
    assert [i["status"] for i in made] == [201, 201, 422, 201, 201]
    assert made[2]["error"]["code"] == "NOT_VALID"
    ids = [i["id"] for i in made if i["status"] == 201]
    assert [i.partition("-")[0] for i in ids] == ["contacts", ids[1], "companies", "contacts"]
    posts = sorted(path for method, path in sim.calls if method == "POST")
    assert posts == [f"/api/v4/{kind}/notes" for kind in ("companies", "contacts", "leads")]
    changes = [{"id": i, "body": "Changed"} for i in [*ids, f"tasks-{_native(ids[0])}"]]
    changed = account.ok("PUT", "/entity/note/bulk", json={"item": changes})["item"]
    assert [i["status"] for i in changed] == [200, 200, 200, 200, 404]
    assert [i["id"] for i in changed[:4]] == ids
    assert {n["params"]["text"] for n in sim.store["notes"].values()} == {"Changed"}


def test_a_note_on_a_contact_is_not_deleted(account: Account) -> None:
    sim = account.sim
    note = _note(account, "contact", sim.insert("contacts", {"name": "Ada"}))
    refused = account.call("DELETE", f"/entity/note/{note}")
    assert refused.status_code == 403 and refused.json()["detail"]["code"] == "NOT_SUPPORTED"
    assert _native(note) in sim.store["notes"]  # Kommo's API v4 has no DELETE for notes
    assert not [call for call in sim.calls if call[0] == "DELETE"]
