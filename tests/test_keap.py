"""Keap's quirks through crmgate, with Keap played by crmsim over HTTPS: its OAuth (single-use
refresh tokens), the x-keap-* quota headers of the passthrough, the filter= translation, notes
under their contact, and the key kept out of the logs. The conformance suite covers the rest."""

from __future__ import annotations

import base64
import json
import logging
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
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
from crmsim.keap import KeapSimulator, platform_overrides, seed_keap
from crmsim.tls import Certificates
from test_tokens import CLIENT_ID, CLIENT_SECRET, start_process

pytestmark = sqlite_only
TOKEN_CALL = ("POST", "/token")
CLIENT = {"client_id": "keap-client", "client_secret": "keap-secret"}


class KeapSim(Simulated[KeapSimulator]):
    """The simulator of this module's tests."""


@pytest.fixture
def keap_sim(certificates: Certificates) -> Iterator[KeapSim]:
    yield from run_simulated(KeapSim, KeapSimulator(), certificates, platform_overrides)


def connect(client: httpx.Client, authorization: str, credential: dict[str, str]) -> str:
    body = {"type": "Infusionsoft", "authorization": authorization, "credential": credential}
    created = client.post("/v1/application", json=body)
    assert created.status_code == 201, created.text
    return str(created.json()["key"])


@pytest.fixture
def gateway(tmp_path: Path, database: Database, keap_sim: KeapSim) -> Iterator[httpx.Client]:
    """An admin's client of a gateway whose Keap OAuth client is ``CLIENT``."""
    keap_sim.simulator.add_app(CLIENT["client_id"], CLIENT["client_secret"])
    clients = {"Infusionsoft": {**CLIENT, "redirects": ["https://app.example/done"]}}
    settings = keap_sim.settings(tmp_path / "data", database, oauth_clients=clients)
    admin = create_account(settings)
    with RunningGateway(create_app(settings)) as running, running.client(admin.key) as client:
        yield client


def test_the_oauth_flow_connects_a_keap_application(
    tmp_path: Path, database: Database, keap_sim: KeapSim
) -> None:
    bound = loopback_socket()
    base = f"http://127.0.0.1:{bound.getsockname()[1]}"
    done = "https://app.example/connected"
    sim = keap_sim.simulator
    sim.add_app(
        "keap-flow", "keap-flow-secret", f"{base}/authorization/oauth/Infusionsoft/callback"
    )
    clients = {
        "Infusionsoft": {
            "client_id": "keap-flow",
            "client_secret": "keap-flow-secret",
            "redirects": [done],
        }
    }
    settings = keap_sim.settings(
        tmp_path / "flow", database, public_url=base, oauth_clients=clients
    )
    admin = create_account(settings)
    with RunningGateway(create_app(settings), bound) as gateway:
        key = oauth_connect(gateway, admin.key, "Infusionsoft", done, keap_sim.ca_file)
        with gateway.client(admin.key) as client:
            app = client.get(f"/v1/application/{key}").json()
            assert app["authorization"] == "oAuth-internal" and app["is_authorized"] is True
            assert app["company"]["id"] == sim.tenant  # the Keap application (tenant)
            # its user in the application, not the global user userinfo names
            assert app["me"]["id"] == sim.admin
            counted = AppClient(client, key).call("GET", "/entity/contact/count")
            assert counted.status_code == 200, counted.text
    assert sim.tokens.codes == {}  # exchanged, once
    assert {how for _, path, how in sim.auth if path.startswith("/crm/")} == {"bearer"}


def test_a_reused_refresh_token_is_refused_and_its_application_marked_unauthorized(
    gateway: httpx.Client, keap_sim: KeapSim
) -> None:
    sim = keap_sim.simulator
    refresh = sim.tokens.issue_refresh(CLIENT["client_id"], sim.admin)
    credential = {"access_token": sim.issue_access_token(), "refresh_token": refresh}
    first = AppClient(gateway, connect(gateway, "oAuth-internal", credential))
    # a second application holding the same refresh token (a restored backup, say)
    second = AppClient(gateway, connect(gateway, "oAuth-internal", credential))
    sim.expire_tokens()
    assert first.call("GET", "/entity/contact/count").status_code == 200
    assert sim.calls.count(TOKEN_CALL) == 1 and refresh not in sim.refresh_tokens  # rotated
    refused = second.call("GET", "/entity/contact/count")
    assert refused.status_code == 401, refused.text
    assert refused.json()["detail"]["code"] == "UNAUTHORIZED"
    assert "invalid_grant" in refused.json()["detail"]["message"]
    assert gateway.get(f"/v1/application/{second.key}").json()["is_authorized"] is False
    # the first keeps the rotated token and needs no other refresh
    assert first.call("GET", "/entity/contact/count").status_code == 200
    assert sim.calls.count(TOKEN_CALL) == 2
    assert gateway.get(f"/v1/application/{first.key}").json()["is_authorized"] is True


def test_the_passthrough_answer_carries_keaps_quota_and_throttle_headers(
    gateway: httpx.Client, keap_sim: KeapSim
) -> None:
    sim = keap_sim.simulator
    app = AppClient(gateway, connect(gateway, "key", {"api_key": sim.add_api_key()}))
    answer = app.ok("POST", "/request", 201, json={"path": "contacts?page_size=1"})
    assert answer["status_code"] == 200
    headers = {h["name"].lower(): h["value"] for h in answer["header"]}
    assert headers["x-keap-product-quota-limit"] == str(sim.quota)
    assert headers["x-keap-product-throttle-limit"] == str(sim.burst)
    assert int(headers["x-keap-product-throttle-available"]) < sim.burst
    assert headers["x-keap-tenant-id"] == sim.tenant
    body = json.loads(base64.b64decode(answer["content"]))
    assert body == {"contacts": [], "next_page_token": ""}


def _listed(app: AppClient, entity: str, condition: str) -> httpx.Response:
    return app.call("GET", f"/entity/{entity}/list", params={"filter": condition})


def test_filters_become_keaps_filter_terms_or_are_refused(
    gateway: httpx.Client, keap_sim: KeapSim
) -> None:
    sim = keap_sim.simulator
    app = AppClient(gateway, connect(gateway, "key", {"api_key": sim.add_api_key()}))
    ada = sim.insert("contacts", {"given_name": "Ada", "family_name": "Lovelace"})
    sim.filters.clear()  # (connecting found the key's user by its email)
    turing = sim.insert("contacts", {"given_name": "Alan", "family_name": "Turing"})
    served = [
        ("last_name startswith 'Love'", "family_name==Love*", [ada]),
        (f"id gt '{ada}'", f"contact_id>{ada}", [turing]),
        (
            "first_name eq 'Ada' and last_name eq 'Lovelace'",
            "given_name==Ada;family_name==Lovelace",
            [ada],
        ),
    ]
    for condition, term, ids in served:
        listed = _listed(app, "contact", condition)
        assert listed.status_code == 200, (condition, listed.text)
        assert sim.filters[-1] == term and [r["id"] for r in listed.json()] == ids
    note = sim.insert("notes", {"title": "Met at the fair", "user_id": sim.admin})
    sim.store["notes"][note]["contact_id"] = ada  # the API makes it under the contact's path
    contains = _listed(app, "note", "subject contains 'the fair'")
    assert [r["id"] for r in contains.json()] == [note] and sim.filters[-1] == "title==the fair"
    refused = {
        ("contact", "position eq 'CFO'"),  # Keap cannot filter job titles
        ("contact", "last_name eq null"),
        ("contact", "last_name ne 'Turing'"),  # eq only on names
        ("contact", "last_name eq 'A;B'"),  # would be two terms
        ("note", "subject eq 'Met at the fair'"),  # a note's title== is contains
        ("account", "name startswith 'Ac'"),  # companies' names are whole
    }
    for entity, condition in refused:
        answer = _listed(app, entity, condition)
        # as the conformance suite has it for every CRM: a filter the CRM cannot take is 400
        assert answer.status_code == 400, (condition, answer.text)
        detail = answer.json()["detail"]
        assert detail["code"] == "NOT_VALID" and "Keap" in json.dumps(detail), condition
    assert len(sim.filters) == len(served) + 1  # nothing refused reached Keap


def test_a_note_keeps_keaps_id_and_is_written_under_its_contact(
    gateway: httpx.Client, keap_sim: KeapSim
) -> None:
    sim = keap_sim.simulator
    app = AppClient(gateway, connect(gateway, "key", {"api_key": sim.add_api_key()}))
    contact = sim.insert("contacts", {"given_name": "Ada"})
    relation = {"relation": {"contact": [{"entity": {"id": contact}}]}}
    made = app.ok("POST", "/entity/note", 201, json={"subject": "Call", **relation})["id"]
    assert sim.store["notes"][made]["user_id"] == sim.admin  # written as the credential's user
    assert ("POST", f"/crm/rest/v2/contacts/{contact}/notes") in sim.calls
    app.ok("PUT", f"/entity/note/{made}", json={"body": "Went well"})
    assert ("PATCH", f"/crm/rest/v2/contacts/{contact}/notes/{made}") in sim.calls
    assert app.ok("GET", f"/entity/note/{made}")["body"] == "Went well"
    other = sim.insert("contacts", {"given_name": "Bob"})
    moved = {"relation": {"contact": [{"entity": {"id": other}}]}}
    app.ok("PUT", f"/entity/note/{made}", json=moved)
    assert sim.store["notes"][made]["contact_id"] == other  # and its path follows it
    app.ok("PUT", f"/entity/note/{made}", json={"subject": "Call back"})
    assert ("PATCH", f"/crm/rest/v2/contacts/{other}/notes/{made}") in sim.calls
    orphan = app.call("POST", "/entity/note", json={"subject": "Alone"})
    assert orphan.status_code == 422 and orphan.json()["detail"]["code"] == "NOT_VALID"
    app.ok("DELETE", f"/entity/note/{made}", 204)
    gone = app.call("GET", f"/entity/note/{made}")
    assert gone.status_code == 404 and gone.json()["detail"]["code"] == "ENTITY_NOT_FOUND"


def test_a_task_without_a_user_is_assigned_to_the_credentials_user(
    gateway: httpx.Client, keap_sim: KeapSim
) -> None:
    sim = keap_sim.simulator
    bob = sim.add_user("Bob", "Builder", "bob@acme.example")
    app = AppClient(gateway, connect(gateway, "key", {"api_key": sim.issue_key(bob)}))
    made = app.ok("POST", "/entity/task", 201, json={"subject": "Call back"})["id"]
    assert sim.store["tasks"][made]["assigned_to_user_id"] == bob  # Keap requires an assignee
    given = {"subject": "Ada's", "relation": {"user": [{"entity": {"id": sim.admin}}]}}
    ada = app.ok("POST", "/entity/task", 201, json=given)["id"]
    assert sim.store["tasks"][ada]["assigned_to_user_id"] == sim.admin


def test_the_api_key_never_reaches_a_log_line_or_an_answer(
    gateway: httpx.Client, keap_sim: KeapSim, caplog: pytest.LogCaptureFixture
) -> None:
    sim = keap_sim.simulator
    caplog.set_level(logging.DEBUG)
    key = sim.add_api_key()
    app = AppClient(gateway, connect(gateway, "key", {"api_key": key}))
    answers: list[Any] = [
        app.call("GET", "/entity/contact/list"),
        app.call("GET", "/entity/contact/999999999"),
        app.call("POST", "/request", json={"path": "contacts/nope"}),
        gateway.get(f"/v1/application/{app.key}"),
    ]
    wrong = key[:-1] + ("A" if key[-1] != "A" else "B")
    body = {"type": "Infusionsoft", "authorization": "key", "credential": {"api_key": wrong}}
    answers.append(gateway.post("/v1/application", json=body))
    assert answers[-1].status_code == 401
    assert {how for _, _, how in sim.auth} == {"key"}  # its own header, never a URL
    logged = "\n".join(record.getMessage() for record in caplog.records)
    assert logged and key not in logged and wrong not in logged
    for answer in answers:
        assert key not in answer.text and wrong not in answer.text


@pytest.mark.store_backends("postgresql")
def test_50_concurrent_calls_on_an_expired_token_in_two_processes_cause_one_refresh(
    tmp_path: Path, database: Database, keap_sim: KeapSim
) -> None:
    sim = keap_sim.simulator
    sim.add_app(CLIENT_ID, CLIENT_SECRET)
    clients = {"Infusionsoft": {"client_id": CLIENT_ID, "client_secret": CLIENT_SECRET}}
    settings = keap_sim.settings(tmp_path / "data", database, oauth_clients=clients)
    admin = create_account(settings)
    first = sim.tokens.issue_refresh(CLIENT_ID, sim.admin)
    credential = {"access_token": sim.issue_access_token(), "refresh_token": first}
    with RunningGateway(create_app(settings)) as gateway, gateway.client(admin.key) as client:
        key = connect(client, "oAuth-internal", credential)

    class Pointed:
        ca_file = keap_sim.ca_file

        def overrides(self) -> dict[str, dict[str, Any]]:
            return keap_sim.overrides(keap_sim.base_url)

    processes = [start_process(settings, Pointed(), "Infusionsoft") for _ in range(2)]
    try:
        headers = {"X-API2CRM-USER-KEY": admin.key, "X-API2CRM-APPLICATION-KEY": key}
        https = [httpx.Client(base_url=b, headers=headers, timeout=30) for _, b in processes]
        used = {first}
        for round_ in range(2):  # the second expiry refreshes with the token the first stored
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
            # single-use: the used refresh token is dead, the one it rotated into is kept
            assert len(sim.refresh_tokens) == 1 and not used & set(sim.refresh_tokens)
            used |= set(sim.refresh_tokens)
        for http in https:
            http.close()
    finally:
        for served, _ in processes:
            served.stop()


def test_the_demo_seed_fills_a_small_application(keap_sim: KeapSim) -> None:
    seed_keap(keap_sim.simulator)
    store = keap_sim.simulator.store
    assert len(store["companies"]) == 3 and len(store["contacts"]) == 3
    assert len(store["notes"]) == 3 and len(store["tasks"]) == 3
    overrides = platform_overrides(keap_sim.base_url)["Infusionsoft"]
    assert overrides["oauth"]["token_url"] == f"{keap_sim.base_url}/token"
