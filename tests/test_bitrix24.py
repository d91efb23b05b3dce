"""Bitrix24's quirks through crmgate, with a portal and its token server played by crmsim over
HTTPS (what every platform does is tests/test_conformance.py's): the OAuth flow whose consent
page is on the portal and whose token server is called with GET, the inbound webhook URL as a
secret, the leaky bucket's 503 QUERY_LIMIT_EXCEEDED, and EMAIL/PHONE items replaced on update."""

from __future__ import annotations

import json
import logging
import secrets
import ssl
import time
from collections.abc import Iterator
from pathlib import Path

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
    on_both_stores,
    run_simulated,
    sqlite_only,
)
from crmgate.api.app import create_app
from crmsim.bitrix24 import Bitrix24Simulator, platform_overrides, seed_bitrix24
from crmsim.faults import Fault
from crmsim.tls import Certificates
from test_secrets_canary import database_bytes

pytestmark = sqlite_only
TYPE = "Bitrix24"
DONE = "https://app.example/connected"


class Bitrix24Sim(Simulated[Bitrix24Simulator]):
    """The simulator of this module's tests."""


@pytest.fixture
def b24(certificates: Certificates) -> Iterator[Bitrix24Sim]:
    yield from run_simulated(
        Bitrix24Sim, Bitrix24Simulator(burst=100_000), certificates, platform_overrides
    )


def connect(client: httpx.Client, authorization: str, credential: dict[str, str]) -> httpx.Response:
    body = {"type": TYPE, "authorization": authorization, "credential": credential}
    return client.post("/v1/application", json=body)


@pytest.fixture
def portal(tmp_path: Path, database: Database, b24: Bitrix24Sim) -> Iterator[AppClient]:
    """A portal connected with an inbound webhook."""
    settings = b24.settings(tmp_path / "data", database)
    admin = create_account(settings)
    with RunningGateway(create_app(settings)) as gateway, gateway.client(admin.key) as client:
        created = connect(client, "key", {"webhook_url": b24.simulator.webhook_url()})
        assert created.status_code == 201, created.text
        yield AppClient(client, created.json()["key"])


@on_both_stores
def test_the_oauth_flow_connects_a_bitrix24_portal(
    tmp_path: Path, database: Database, b24: Bitrix24Sim, caplog: pytest.LogCaptureFixture
) -> None:
    """Consent on the customer's portal; the code and every refresh at the token server with
    GET (its parameters in the query, as Bitrix24 documents it), none of them in a log line."""
    caplog.set_level(logging.DEBUG)
    bound = loopback_socket()
    base = f"http://127.0.0.1:{bound.getsockname()[1]}"
    sim, secret = b24.simulator, "b24-secret-" + secrets.token_hex(8)
    sim.add_app("local.flow", secret, f"{base}/authorization/oauth/{TYPE}/callback")
    clients = {TYPE: {"client_id": "local.flow", "client_secret": secret, "redirects": [DONE]}}
    settings = b24.settings(tmp_path / "flow", database, public_url=base, oauth_clients=clients)
    admin = create_account(settings)
    with RunningGateway(create_app(settings), bound) as gateway:
        key = oauth_connect(gateway, admin.key, TYPE, DONE, b24.ca_file, instance_url=b24.base_url)
        with gateway.client(admin.key) as client:
            app = client.get(f"/v1/application/{key}").json()
            assert app["authorization"] == "oAuth-internal" and app["is_authorized"] is True
            assert app["company"]["id"] == b24.base_url.removeprefix("https://").rpartition(":")[0]
            refresh = next(iter(sim.refresh_tokens))
            sim.expire_tokens()  # the next call refreshes
            counted = AppClient(client, key).call("GET", "/entity/contact/count")
            assert counted.status_code == 200, counted.text
    assert sim.tokens.codes == {}  # exchanged, once
    assert ("GET", "/oauth/authorize/") in sim.calls
    token_calls = [call for call in sim.calls if call[1] == "/oauth/token/"]
    assert token_calls == [("GET", "/oauth/token/")] * 2  # the code, then the refresh
    logged = caplog.text
    assert secret not in logged and refresh not in logged
    assert next(iter(sim.refresh_tokens)) not in logged


def test_the_token_server_takes_its_parameters_in_a_get_only(b24: Bitrix24Sim) -> None:
    sim = b24.simulator
    sim.add_app("local.only", "only-secret")
    form = {
        "grant_type": "refresh_token",
        "client_id": "local.only",
        "client_secret": "only-secret",
        "refresh_token": sim.issue_refresh_token("local.only"),
    }
    context = ssl.create_default_context(cafile=b24.ca_file)
    with httpx.Client(verify=context, trust_env=False) as http:
        posted = http.post(f"{b24.base_url}/oauth/token/", data=form)
        got = http.get(f"{b24.base_url}/oauth/token/", params=form)
    assert posted.status_code == 405
    assert got.status_code == 200 and got.json()["refresh_token"] != form["refresh_token"]
    assert got.json()["client_endpoint"] == f"{b24.base_url}/rest/"


@on_both_stores
def test_the_webhook_url_is_a_secret_never_shown_logged_or_stored_in_clear(
    tmp_path: Path, database: Database, b24: Bitrix24Sim, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    webhook = b24.simulator.webhook_url()
    code = webhook.rstrip("/").rsplit("/", 1)[1]  # the secret part of the URL
    settings = b24.settings(tmp_path / "hook", database)
    admin = create_account(settings)
    seen: list[str] = []
    with RunningGateway(create_app(settings)) as gateway, gateway.client(admin.key) as client:
        created = connect(client, "key", {"webhook_url": webhook})
        assert created.status_code == 201, created.text
        app = AppClient(client, created.json()["key"])
        seen.append(created.text)
        seen.append(client.get(f"/v1/application/{app.key}").text)
        seen.append(app.call("GET", "/entity/contact/list").text)
        seen.append(app.call("GET", "/entity/contact/999999").text)  # an error's body
        seen.append(app.call("GET", "/passthrough", params={"path": "crm.nope.list"}).text)
        wrong = webhook.replace(code, "0" * len(code))
        refused = connect(client, "key", {"webhook_url": wrong})
        assert refused.status_code >= 400
        seen.append(refused.text)
        malformed = connect(client, "key", {"webhook_url": webhook + "?x=" + code})
        assert malformed.status_code >= 400
        seen.append(malformed.text)
    assert all(code not in text for text in seen)
    assert code not in caplog.text and "0" * len(code) not in caplog.text
    assert code.encode() not in database_bytes(database)


def test_the_leaky_bucket_is_429_with_retry_after(portal: AppClient, b24: Bitrix24Sim) -> None:
    """Past the bucket, Bitrix24 answers 503 QUERY_LIMIT_EXCEEDED: a rate limit, not an
    outage."""
    bucket = b24.simulator.bucket
    bucket.capacity, bucket.rate = 0, 0.0  # full, and it does not drain
    limited = portal.call("GET", "/entity/contact/count")
    assert limited.status_code == 429, limited.text
    assert limited.json()["detail"]["code"] == "RATE_LIMITED"
    assert int(limited.headers["retry-after"]) >= 1


def test_email_and_phone_items_are_replaced_on_update(portal: AppClient, b24: Bitrix24Sim) -> None:
    """Bitrix24 adds an item sent without its ID: an update sends the old items' IDs with
    empty values, so the record holds the new ones only."""
    made = portal.ok(
        "POST",
        "/entity/contact",
        201,
        json={
            "last_name": "Lists",
            "email": [{"type": "work", "address": "old@acme.example"}],
            "phone": [{"type": "mobile", "number": "+1 555 0100"}],
        },
    )
    new_email = [{"type": "work", "address": "new@acme.example"}]
    portal.ok("PUT", f"/entity/contact/{made['id']}", json={"email": new_email})
    shown = portal.ok("GET", f"/entity/contact/{made['id']}")
    assert [e["address"] for e in shown["email"]] == ["new@acme.example"]
    assert [p["number"] for p in shown["phone"]] == ["+1 555 0100"]  # untouched
    held = b24.simulator.store["contact"][made["id"]]
    assert [(i["VALUE_TYPE"], i["VALUE"]) for i in held["EMAIL"]] == [("WORK", "new@acme.example")]
    assert len(held["PHONE"]) == 1


def test_the_demo_seed_fills_a_small_portal(b24: Bitrix24Sim) -> None:
    seed_bitrix24(b24.simulator)
    store = b24.simulator.store
    assert len(store["company"]) == 3 and len(store["contact"]) == 3
    assert len(store["deal"]) == 3 and len(store["lead"]) == 3
    assert {c["ENTITY_TYPE"] for c in store["timeline.comment"].values()} == {"company"}
    assert len(store["timeline.comment"]) == 3
    overrides = platform_overrides(b24.base_url)[TYPE]
    assert overrides["oauth"]["token_url"] == f"{b24.base_url}/oauth/token/"


def test_bulk_goes_through_batch_fifty_commands_a_call(portal: AppClient, b24: Bitrix24Sim) -> None:
    sim = b24.simulator
    batches = lambda: sum(1 for call in sim.calls if call[1].endswith("/batch"))  # noqa: E731
    items = [{"last_name": f"Bulk {n}"} for n in range(60)]
    made = portal.ok("POST", "/entity/contact/bulk", 201, json={"item": items})["item"]
    assert [i["status"] for i in made] == [201] * 60 and batches() == 2
    ids = [i["id"] for i in made]
    assert {sim.store["contact"][i]["LAST_NAME"] for i in ids} == {f"Bulk {n}" for n in range(60)}
    first = portal.ok(
        "POST",
        "/entity/contact",
        201,
        json={"last_name": "Mail", "email": [{"type": "work", "address": "old@acme.example"}]},
    )["id"]
    change = [
        {"id": first, "email": [{"type": "work", "address": "new@acme.example"}]},
        {"id": ids[0], "position": "CFO"},
        {"id": "999999", "position": "CTO"},
    ]
    updated = portal.ok("PUT", "/entity/contact/bulk", json={"item": change})["item"]
    assert [i["status"] for i in updated] == [200, 200, 404]
    assert batches() == 4  # the record whose list changed read first, in a batch of its own
    held = sim.store["contact"][first]["EMAIL"]
    assert [i["VALUE"] for i in held] == ["new@acme.example"]
    assert sim.store["contact"][ids[0]]["POST"] == "CFO"
    odd = [{"id": "not an id"}, {"id": "999999"}, *({"id": i} for i in ids[:2])]
    removed = portal.ok("DELETE", "/entity/contact/bulk", json={"item": odd})["item"]
    assert [i["status"] for i in removed] == [404, 404, 204, 204]
    assert batches() == 5 and ids[0] not in sim.store["contact"]


def test_activities_are_typed_and_owned_by_one_crm_record(
    portal: AppClient, b24: Bitrix24Sim
) -> None:
    """A task, call or meeting is a crm.activity of that TYPE_ID; its owner (OWNER_TYPE_ID and
    OWNER_ID) is the relation of that object."""
    sim = b24.simulator
    company = sim.insert("company", {"TITLE": "Owner Co"})
    link = {"relation": {"account": [{"type": "account", "entity": {"id": company}}]}}
    call = portal.ok("POST", "/entity/call", 201, json={"subject": "Ring", **link})["id"]
    held = sim.store["activity"][call]
    assert (str(held["TYPE_ID"]), str(held["OWNER_TYPE_ID"]), str(held["OWNER_ID"])) == (
        "2",
        "4",
        company,
    )
    shown = portal.ok("GET", f"/entity/call/{call}")
    assert shown["relation"]["account"][0]["entity"]["id"] == company
    assert "contact" not in shown.get("relation", {})
    assert portal.call("GET", f"/entity/task/{call}").status_code == 404  # a call is no task
    assert [t["id"] for t in portal.ok("GET", "/entity/call/list")] == [call]
    assert portal.ok("GET", "/entity/task/list") == []
    other = sim.insert("company", {"TITLE": "Other Co"})
    sim.insert("activity", {"TYPE_ID": "2", "OWNER_TYPE_ID": "4", "OWNER_ID": other})
    # a contact of the same number (Bitrix24 numbers each object's records on their own)
    sim.store.insert("activity", {"TYPE_ID": "2", "OWNER_TYPE_ID": "3", "OWNER_ID": company})
    owned = f"relation.account eq '{company}'"  # OWNER_TYPE_ID 4 and OWNER_ID, both
    by_owner = portal.ok("GET", "/entity/call/list", params={"filter": owned})
    assert [c["id"] for c in by_owner] == [call]
    for refused in (f"relation.account ne '{company}'", "relation.account eq null"):
        answer = portal.call("GET", "/entity/call/list", params={"filter": refused})
        assert answer.status_code == 400, refused
    unowned = portal.call("POST", "/entity/meeting", json={"subject": "Lunch"})
    assert unowned.status_code == 422 and "OWNER_ID" in unowned.text


def test_a_method_past_its_time_limit_is_429_until_it_resets(
    portal: AppClient, b24: Bitrix24Sim
) -> None:
    """OPERATION_TIME_LIMIT: the wait is until time.operating_reset_at where the refusal says,
    else the 10 minutes a block lasts."""
    blocked = {
        "error": "OPERATION_TIME_LIMIT",
        "error_description": "Method is blocked due to operation time limit.",
    }
    reset = {"time": {"operating_reset_at": int(time.time()) + 300}}
    waits = []
    for body in (blocked | reset, blocked):
        b24.simulator.faults.add(Fault(429, json.dumps(body), "application/json"), times=None)
        limited = portal.call("GET", "/entity/contact/count")
        b24.simulator.faults.clear()
        assert limited.status_code == 429 and limited.json()["detail"]["code"] == "RATE_LIMITED"
        waits.append(int(limited.headers["retry-after"]))
    assert 295 <= waits[0] <= 300 and waits[1] == 600


def test_notes_are_timeline_comments_listed_only_by_the_record_they_are_on(
    portal: AppClient, b24: Bitrix24Sim
) -> None:
    """crm.timeline.comment.list must name the record (ENTITY_TYPE, ENTITY_ID): a note list or
    count without a relation filter is refused before any call, never read whole."""
    sim = b24.simulator
    company, other = sim.insert("company", {"TITLE": "Acme"}), sim.insert("company", {"TITLE": "B"})
    contact = sim.insert("contact", {"LAST_NAME": "Lee"})
    on = lambda r, i: {"relation": {r: [{"type": r, "entity": {"id": i}}]}}  # noqa: E731
    note = portal.ok("POST", "/entity/note", 201, json={"body": "Called", **on("account", company)})
    held = sim.store["timeline.comment"][note["id"]]
    assert (held["ENTITY_TYPE"], str(held["ENTITY_ID"]), held["COMMENT"]) == (
        "company",
        company,
        "Called",
    )
    portal.ok("POST", "/entity/note", 201, json={"body": "Elsewhere", **on("account", other)})
    mine = portal.ok("POST", "/entity/note", 201, json={"body": "Met", **on("contact", contact)})
    shown = portal.ok("GET", f"/entity/note/{note['id']}")
    assert shown["body"] == "Called" and shown["relation"]["account"][0]["entity"]["id"] == company

    lists = lambda: sum(1 for c in sim.calls if c[1].endswith("crm.timeline.comment.list"))  # noqa: E731
    before = lists()
    for route in ("list", "count"):
        whole = portal.call("GET", f"/entity/note/{route}")
        assert whole.status_code == 403, whole.text
        assert whole.json()["detail"]["code"] == "NOT_SUPPORTED"
        assert "relation.account eq" in whole.json()["detail"]["message"]
    by_author = portal.call("GET", "/entity/note/list", params={"filter": "relation.user eq '1'"})
    assert by_author.status_code == 403 and lists() == before  # no call made
    by_company = {"filter": f"relation.account eq '{company}'"}
    assert [n["id"] for n in portal.ok("GET", "/entity/note/list", params=by_company)] == [
        note["id"]
    ]
    assert portal.ok("GET", "/entity/note/count", params=by_company) == {"total": 1}
    by_contact = {"filter": f"relation.contact eq '{contact}'"}
    assert [n["id"] for n in portal.ok("GET", "/entity/note/list", params=by_contact)] == [
        mine["id"]
    ]
    for params in (  # the list filters by the record only, sorts by id, created_at, author
        {"filter": f"relation.account eq '{company}' and body eq 'Called'"},
        {"filter": f"relation.account eq '{company}' and relation.contact ne '{contact}'"},
        {**by_company, "sort": "body"},
    ):
        refused = portal.call("GET", "/entity/note/list", params=params)
        assert refused.status_code == 400, (params, refused.text)
        assert refused.json()["detail"]["code"] == "NOT_VALID"
    newest = portal.ok("GET", "/entity/note/list", params={**by_company, "sort": "-created_at"})
    assert [n["id"] for n in newest] == [note["id"]]

    portal.ok("PUT", f"/entity/note/{note['id']}", json={"body": "Called twice"})
    assert sim.store["timeline.comment"][note["id"]]["COMMENT"] == "Called twice"
    assert portal.call("DELETE", f"/entity/note/{note['id']}").status_code == 204
    assert note["id"] not in sim.store["timeline.comment"]
    gone = portal.call("GET", f"/entity/note/{note['id']}")
    assert gone.status_code == 404 and gone.json()["detail"]["code"] == "ENTITY_NOT_FOUND"
    nowhere = portal.call("POST", "/entity/note", json={"body": "On nothing"})
    assert nowhere.status_code == 422, nowhere.text
