"""The audit trail: security events recorded where they happen, with who, where and which
request; read by admins through /v1/audit; hash-chained so that `crmgate audit verify` names an
event that was changed or deleted; appends serialised across gateway processes; no secrets."""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import text

from conftest import (
    Account,
    Database,
    RunningGateway,
    SalesforceSim,
    create_account,
    loopback_socket,
    make_settings,
    migrate_database,
    oauth_connect,
    with_services,
)
from crmgate.api.app import create_app
from crmgate.audit import AuditLog
from crmgate.runtime import Services
from crmgate.security import keys
from crmgate.security.keys import KeyKind
from crmgate.settings import Settings
from test_tokens import CLIENT_ID, CLIENT_SECRET, count

DONE = "https://client.example/done"


@pytest.fixture
def audit_settings(tmp_path: Path, database: Database) -> Settings:
    # every authentication failure kept (no folding), so each one can be looked for
    result = make_settings(tmp_path / "data", database.url, audit_repeat_window=0.0)
    migrate_database(result)
    return result


@pytest.fixture
def gateway(audit_settings: Settings) -> Iterator[RunningGateway]:
    with RunningGateway(create_app(audit_settings)) as running:
        yield running


def audit_rows(settings: Settings) -> list[dict[str, Any]]:
    async def work(services: Services) -> list[dict[str, Any]]:
        async with services.engine.connect() as connection:
            rows = await connection.execute(text("SELECT * FROM audit_events ORDER BY seq"))
            return [dict(row._mapping) for row in rows]

    result: list[dict[str, Any]] = with_services(settings, work)
    return result


def events(client: httpx.Client, **params: Any) -> list[dict[str, Any]]:
    response = client.get("/v1/audit/list", params={"page_size": 100, **params})
    assert response.status_code == 200, response.text
    listed: list[dict[str, Any]] = response.json()
    return listed


def test_key_and_user_events_carry_actor_client_and_request_id(
    gateway: RunningGateway, audit_settings: Settings
) -> None:
    admin = create_account(audit_settings)
    with gateway.client(admin.key) as client:
        created = client.post(
            "/v1/user",
            json={"name": "Mia", "email": "mia@acme.example"},
            headers={"X-Request-ID": "req-create-1"},
        )
        assert created.status_code == 201, created.text
        member = created.json()["key"]
        rotated = client.post(f"/v1/user/{member}/key", headers={"X-Request-ID": "req-rotate"})
        assert rotated.status_code == 201
        assert client.put(f"/v1/user/{member}", json={"roles": ["admin"]}).status_code == 200
        assert client.delete(f"/v1/user/{member}").status_code == 204
        listed = events(client)

    by_event = {e["event"]: e for e in listed}
    assert [e["event"] for e in listed] == [  # newest first
        "user.deleted",
        "user.updated",
        "key.rotated",
        "key.created",
        "user.created",
        "key.created",
    ]
    # the account, made by a script (the CLI would say "cli")
    assert listed[-1]["actor"] == "system" and listed[-1]["target"] == admin.user_id
    for name in ("user.created", "key.rotated", "user.updated", "user.deleted"):
        event = by_event[name]
        assert event["actor"] == admin.user_id and event["target"] == member, event
        assert event["client"] == "127.0.0.1" and event["request_id"], event
    assert by_event["user.created"]["request_id"] == "req-create-1"
    assert by_event["key.rotated"]["request_id"] == "req-rotate"
    assert by_event["key.rotated"]["details"]["key"] == rotated.json()["user_key"][:10]  # a hint
    assert by_event["user.updated"]["details"] == {"changed": "role", "role": "admin"}
    ids = [e["id"] for e in listed]
    assert ids == sorted(ids, reverse=True)
    for newer, older in itertools.pairwise(listed):
        assert newer["previous_hash"] == older["hash"]  # one chain


def test_authentication_failures_are_recorded_without_the_key(
    gateway: RunningGateway, audit_settings: Settings
) -> None:
    create_account(audit_settings)
    unknown = keys.generate(KeyKind.USER)  # well-formed, never issued
    malformed = "sk_live_" + "C4NARY" * 6  # another service's secret sent by mistake
    with gateway.client() as client:
        assert client.get("/v1/user/list").status_code == 401
        for key in (unknown, malformed):
            answer = client.get("/v1/user/list", headers={"X-API2CRM-USER-KEY": key})
            assert answer.status_code == 401
    failures = [row for row in audit_rows(audit_settings) if row["event"] == "auth.failed"]
    assert [json.loads(row["details"]) for row in failures] == [
        {"reason": "missing"},
        {"reason": "unknown or revoked", "key": unknown[:10]},
        {"reason": "malformed"},
    ]
    assert {(row["actor"], row["client"], row["organisation_id"]) for row in failures} == {
        ("anonymous", "127.0.0.1", None)
    }
    table = json.dumps(audit_rows(audit_settings), default=str)
    assert unknown not in table and "C4NARY" not in table


def test_a_burst_of_failures_from_one_address_is_folded(tmp_path: Path) -> None:
    settings = make_settings(tmp_path / "data", audit_repeat_window=0.5)
    migrate_database(settings)
    with RunningGateway(create_app(settings)) as running, running.client() as client:
        for _ in range(5):
            client.get("/v1/user/list", headers={"X-API2CRM-USER-KEY": "wrong"})
        time.sleep(0.6)
        client.get("/v1/user/list", headers={"X-API2CRM-USER-KEY": "wrong"})
    failures = [row for row in audit_rows(settings) if row["event"] == "auth.failed"]
    assert [json.loads(row["details"]).get("repeated") for row in failures] == [None, 4]


def test_the_audit_api_is_for_admins_of_the_organisation_only(
    gateway: RunningGateway, audit_settings: Settings
) -> None:
    acme = create_account(audit_settings)
    other = create_account(audit_settings, "Globex", "admin@globex.example")
    with gateway.client(acme.key) as client:
        member = client.post("/v1/user", json={"name": "M", "email": "m@acme.example"}).json()
        for _ in range(3):
            assert client.post(f"/v1/user/{member['key']}/key").status_code == 201
    with gateway.client(other.key) as client:
        theirs = events(client)
        assert {e["target"] for e in theirs} == {other.user_id}  # none of Acme's
        assert client.get("/v1/audit/count").json() == {"total": len(theirs)}
    with gateway.client(acme.key) as client:
        rotations = {"filter": "event eq 'key.rotated'"}
        assert client.get("/v1/audit/count", params=rotations).json() == {"total": 3}
        page_one = events(client, page_size=2, **rotations)
        page_two = events(client, page_size=2, page=2, **rotations)
        assert len(page_one) == 2 and len(page_two) == 1
        assert len({e["id"] for e in page_one + page_two}) == 3
        oldest_first = events(client, sort="id", **rotations)
        assert [e["id"] for e in oldest_first] == sorted(e["id"] for e in page_one + page_two)
        mine = events(client, filter=f"actor eq '{acme.user_id}' and target eq '{member['key']}'")
        assert {e["event"] for e in mine} == {"user.created", "key.created", "key.rotated"}
        first = oldest_first[0]["created_at"]
        since = events(client, filter=f"created_at ge '{first}' and event startswith 'key.'")
        assert {e["event"] for e in since} >= {"key.rotated"}
        assert events(client, filter="created_at lt '2000-01-01T00:00:00Z'") == []
        trimmed = events(client, fields="event", page_size=1)
        assert set(trimmed[0]) == {"id", "event"}
        wrong = client.get("/v1/audit/list", params={"filter": "secret eq 'x'"})
        assert wrong.status_code == 400 and wrong.json()["detail"]["code"] == "NOT_VALID"
        assert client.get("/v1/audit/list", params={"page_size": 1000}).status_code == 422
        rotated = client.post(f"/v1/user/{member['key']}/key").json()["user_key"]
    with gateway.client(rotated) as client:  # a member
        for path in ("/v1/audit/list", "/v1/audit/count"):
            refused = client.get(path)
            assert refused.status_code == 403, path
            assert refused.json()["detail"]["code"] == "NOT_ALLOWED"
    with gateway.client("cgu_wrong") as client:
        assert client.get("/v1/audit/list").status_code == 401
    with gateway.client(acme.key) as client:
        openapi = client.get("/v1/openapi.json").json()
    for path in ("/v1/audit/list", "/v1/audit/count"):
        assert openapi["paths"][path]["get"]["tags"] == ["crmgate"]


def test_appends_from_two_processes_make_one_unbroken_chain(audit_settings: Settings) -> None:
    async def go() -> tuple[list[int], Any]:
        async with (
            Services.open(audit_settings) as one,
            Services.open(audit_settings) as two,
        ):

            async def burst(audit: AuditLog, name: str) -> list[int | None]:
                return list(
                    await asyncio.gather(
                        *(
                            audit.record("key.created", actor=name, details={"n": n})
                            for n in range(25)
                        )
                    )
                )

            numbers = await asyncio.gather(burst(one.audit, "one"), burst(two.audit, "two"))
            return sorted(n for batch in numbers for n in batch if n is not None), (
                await one.audit.verify()
            )

    numbers, verified = asyncio.run(go())
    assert numbers == list(range(1, 51))
    assert verified.intact and verified.count == 50 and verified.head_seq == 50


# ---- crmgate audit verify ------------------------------------------------------------------------


def crmgate(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "crmgate.cli", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


def sql(settings: Settings, *statements: str, **params: Any) -> None:
    async def work(services: Services) -> None:
        async with services.engine.begin() as connection:
            for statement in statements:
                await connection.execute(text(statement), params)

    with_services(settings, work)


def test_audit_verify_names_the_event_that_was_changed_or_deleted(
    audit_settings: Settings, database: Database
) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CRMGATE_")}
    env["CRMGATE_DATA_DIR"] = str(audit_settings.data_dir)
    env["CRMGATE_DATABASE_URL"] = database.url
    admin = create_account(audit_settings)

    async def rotate(services: Services) -> None:
        for _ in range(3):
            await services.accounts.rotate_key(admin.user_id)

    with_services(audit_settings, rotate)
    intact = crmgate(env, "audit", "verify")
    assert intact.returncode == 0, intact.stderr
    assert "4 events, chain intact" in intact.stdout

    # the database itself refuses changes (append-only) ...
    with pytest.raises(Exception, match="append-only"):
        sql(audit_settings, "UPDATE audit_events SET actor = 'someone' WHERE seq = 2")
    # ... an emptied table with its head reset to the start, in one go ...
    reset = ["UPDATE audit_head SET seq = 0", "DELETE FROM audit_head"]
    if database.backend == "postgresql":
        reset += ["TRUNCATE audit_events", "TRUNCATE audit_head"]
    for statement in reset:
        with pytest.raises(Exception, match="append-only"):
            sql(audit_settings, statement)
    # ... so a forger first removes that guard; the chain still gives them away
    if database.backend == "postgresql":
        sql(audit_settings, "ALTER TABLE audit_events DISABLE TRIGGER audit_events_append_only")
    else:
        sql(
            audit_settings,
            "DROP TRIGGER audit_events_no_update",
            "DROP TRIGGER audit_events_no_delete",
        )
    original = audit_rows(audit_settings)[1]["details"]
    sql(
        audit_settings,
        """UPDATE audit_events SET details = '{"key": "cgu_forged"}' WHERE seq = 2""",
    )
    edited = crmgate(env, "audit", "verify")
    assert edited.returncode == 1
    assert "BROKEN at event #2" in edited.stdout and "key.rotated" in edited.stdout

    sql(audit_settings, "UPDATE audit_events SET details = :old WHERE seq = 2", old=original)
    restored = crmgate(env, "audit", "verify", "--json")  # put back: intact again
    assert restored.returncode == 0 and json.loads(restored.stdout)["intact"] is True
    sql(audit_settings, "DELETE FROM audit_events WHERE seq = 3")
    deleted = crmgate(env, "audit", "verify")
    assert deleted.returncode == 1 and "event #3 is missing" in deleted.stdout
    sql(audit_settings, "DELETE FROM audit_events WHERE seq >= 3")  # the newest ones
    truncated = crmgate(env, "audit", "verify", "--json")
    assert truncated.returncode == 1
    assert json.loads(truncated.stdout) | {"head": None} == {
        "intact": False,
        "events": 2,
        "head": None,
        "broken_id": 3,
        "reason": "event #3 and any after it are missing: the chain ends at #2, its head says #4",
    }


# ---- applications, OAuth and tokens --------------------------------------------------------------


@pytest.fixture
def oauth_gateway(
    tmp_path: Path, database: Database, salesforce: SalesforceSim
) -> Iterator[tuple[RunningGateway, Settings]]:
    bound = loopback_socket()
    base = f"http://127.0.0.1:{bound.getsockname()[1]}"
    salesforce.simulator.add_connected_app(
        CLIENT_ID, CLIENT_SECRET, [f"{base}/authorization/oauth/Salesforce/callback"]
    )
    settings = make_settings(
        tmp_path / "data",
        database.url,
        platform_overrides=salesforce.overrides(),
        outbound_ca_file=salesforce.ca_file,
        public_url=base,
        audit_repeat_window=0.0,
        oauth_clients={
            "Salesforce": {
                "client_id": CLIENT_ID,
                "client_secret": CLIENT_SECRET,
                "redirects": [DONE],
            }
        },
    )
    migrate_database(settings)
    with RunningGateway(create_app(settings), bound) as running:
        yield running, settings


def test_application_oauth_and_token_events_without_secrets(
    oauth_gateway: tuple[RunningGateway, Settings], salesforce: SalesforceSim
) -> None:
    gateway, settings = oauth_gateway
    admin: Account = create_account(settings)
    salesforce.simulator.auto_approve_user = salesforce.simulator.add_user(
        "owner@acme.example", "pw"
    ).username
    key = oauth_connect(gateway, admin.key, "Salesforce", DONE, salesforce.ca_file)
    assert count(gateway, admin, key).status_code == 200
    tokens = {*salesforce.simulator.sessions, *salesforce.simulator.refresh_tokens}
    salesforce.simulator.expire_sessions()
    assert count(gateway, admin, key).status_code == 200  # refreshed
    tokens |= {*salesforce.simulator.sessions, *salesforce.simulator.refresh_tokens}
    salesforce.simulator.refresh_tokens.clear()  # the grant revoked at the CRM
    salesforce.simulator.expire_sessions()
    assert count(gateway, admin, key).status_code == 401
    with gateway.client(admin.key) as client:
        assert client.put(f"/v1/application/{key}", json={"description": "x"}).status_code == 200
        assert client.delete(f"/v1/application/{key}").status_code == 204
        listed = events(client, filter=f"target eq '{key}'", sort="id")

    assert [(e["event"], e["actor"]) for e in listed] == [
        ("application.created", admin.user_id),
        ("oauth.connected", admin.user_id),
        ("token.refreshed", "system"),
        ("application.reauthorization_needed", "system"),
        ("application.updated", admin.user_id),
        ("application.deleted", admin.user_id),
    ]
    assert listed[1]["details"] == {"platform": "Salesforce", "mode": "application"}
    assert all(e["client"] == "127.0.0.1" and e["request_id"] for e in listed)

    table = json.dumps(audit_rows(settings), default=str)
    assert tokens and CLIENT_SECRET not in table and admin.key not in table
    for token in tokens:
        assert token not in table


def test_verify_on_a_live_gateway_checks_up_to_the_head_it_read(audit_settings: Settings) -> None:
    """An event appended while verify walks (a running gateway) is the next run's, not a
    broken chain: verify reads the head first and checks the chain up to it."""

    async def work(services: Services) -> None:
        audit: AuditLog = services.audit
        for n in range(3):
            await audit.record("user.updated", actor="system", target=f"usr_{n}")
        walk = audit._walk

        async def walk_while_appending(batch_size: int = 1000, upto: int | None = None) -> Any:
            await audit.record("user.updated", actor="system", target="usr_late")  # meanwhile
            async for event in walk(batch_size, upto):
                yield event

        audit._walk = walk_while_appending  # type: ignore[method-assign]
        checked = await audit.verify()
        assert checked.intact, checked
        audit._walk = walk  # type: ignore[method-assign]
        assert (await audit.verify()).intact  # and the late one fits too

    with_services(audit_settings, work)
