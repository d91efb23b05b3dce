"""The audit trail: security events recorded where they happen, with who, where and which
request; read by admins through /v1/audit; chained with HMAC-SHA256 under keys kept outside the
database, so that `crmgate audit verify` names an event that was changed or deleted, even by a
forger who recomputes plain hashes; written in the transaction of the change they record;
noisy events queued off the request path under a cap; appends serialised across gateway
processes; no secrets."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import hashlib
import itertools
import json
import logging
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import text
from sqlalchemy.exc import OperationalError

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
from crmgate.audit import GENESIS, AuditKeyError, AuditKeys, AuditLog, Event, bind_request
from crmgate.runtime import Services
from crmgate.security import keys
from crmgate.security.keys import KeyKind
from crmgate.security.scopes import KeyScope
from crmgate.settings import Settings
from crmgate.store import migrate
from crmgate.store.db import for_writing, session_factory
from crmgate.store.models import utcnow
from test_tokens import CLIENT_ID, CLIENT_SECRET, count

DONE = "https://client.example/done"


@pytest.fixture
def audit_settings(tmp_path: Path, database: Database) -> Settings:
    # every authentication failure kept (no folding), so each one can be looked for, and
    # written soon after it happened
    result = make_settings(
        tmp_path / "data", database.url, audit_repeat_window=0.0, audit_flush_interval=0.05
    )
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


def rows_of(
    settings: Settings, event: str, at_least: int, timeout: float = 10.0
) -> list[dict[str, Any]]:
    """The rows of ``event`` once there are ``at_least`` of them (noisy events are written by
    the background flush, a moment after the request)."""
    deadline = time.monotonic() + timeout
    while True:
        rows = [row for row in audit_rows(settings) if row["event"] == event]
        if len(rows) >= at_least or time.monotonic() > deadline:
            return rows
        time.sleep(0.05)


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
    updated = by_event["user.updated"]["details"]
    assert updated == {"changed": "role", "role": "admin", **updated} and len(updated) == 4
    # the credential that acted: the admin's user key (the same for every event of it)
    assert updated["credential_kind"] == "user" and updated["credential"].startswith("key_")
    acted = ("user.created", "key.rotated", "user.updated", "user.deleted")
    assert {by_event[name]["details"]["credential"] for name in acted} == {updated["credential"]}
    assert "credential" not in listed[-1]["details"]  # made by a script: no key acted
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
    failures = rows_of(audit_settings, "auth.failed", 3)
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
    """One row opens the window, one at its end counts what was folded into it (written when
    the window ends, not when the client comes back), the next failure opens a new window."""
    settings = make_settings(tmp_path / "data", audit_repeat_window=0.5, audit_flush_interval=0.05)
    migrate_database(settings)
    with RunningGateway(create_app(settings)) as running, running.client() as client:
        for _ in range(5):
            client.get("/v1/user/list", headers={"X-API2CRM-USER-KEY": "wrong"})
        closing = rows_of(settings, "auth.failed", 2)
        assert [json.loads(row["details"]).get("repeated") for row in closing] == [None, 4]
        client.get("/v1/user/list", headers={"X-API2CRM-USER-KEY": "wrong"})
    failures = [row for row in audit_rows(settings) if row["event"] == "auth.failed"]
    assert [json.loads(row["details"]).get("repeated") for row in failures] == [None, 4, None]
    assert json.loads(failures[1]["details"]) == {"reason": "malformed", "repeated": 4}


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
        async with for_writing(services.engine).begin() as connection:
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
        "keyed": 2,
        "head": None,
        "anchored": None,
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


# ---- keyed chain: a forger who can write the database ---------------------------------------


def cli_env(settings: Settings, database: Database) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CRMGATE_")}
    env["CRMGATE_DATA_DIR"] = str(settings.data_dir)
    env["CRMGATE_DATABASE_URL"] = database.url
    return env


def drop_append_only_guard(settings: Settings, database: Database) -> None:
    """What a forger with write access does first (test_audit_verify_names_... shows the guard)."""
    if database.backend == "postgresql":
        sql(settings, "ALTER TABLE audit_events DISABLE TRIGGER audit_events_append_only")
    else:
        sql(settings, "DROP TRIGGER audit_events_no_update", "DROP TRIGGER audit_events_no_delete")


def rechain_plain(settings: Settings, start: int, *, drop_key_ids: bool) -> None:
    """The forger's rewrite: every event from ``start`` on re-hashed with plain SHA-256 (the
    published algorithm, but no key), optionally claiming to be unkeyed, and the head too."""

    async def work(services: Services) -> None:
        events = await services.audit.all_events()
        previous = events[start - 2].hash if start > 1 else GENESIS
        async with for_writing(services.engine).begin() as connection:
            for event in events[start - 1 :]:
                key_id = None if drop_key_ids else event.key_id
                forged = dataclasses.replace(event, previous_hash=previous, key_id=key_id)
                digest = hashlib.sha256((previous + forged.canonical()).encode()).hexdigest()
                await connection.execute(
                    text(
                        "UPDATE audit_events SET previous_hash = :p, hash = :h, key_id = :k "
                        "WHERE seq = :s"
                    ),
                    {"p": previous, "h": digest, "k": key_id, "s": event.seq},
                )
                previous = digest
            await connection.execute(text("UPDATE audit_head SET hash = :h"), {"h": previous})

    with_services(settings, work)


def rotate_keys(settings: Settings, user_id: str, times: int) -> None:
    async def work(services: Services) -> None:
        for _ in range(times):
            await services.accounts.rotate_key(user_id)

    with_services(settings, work)


@pytest.mark.parametrize("drop_key_ids", [False, True], ids=["keyed-ids-kept", "claimed-unkeyed"])
def test_a_forger_who_recomputes_plain_hashes_along_the_chain_is_detected(
    audit_settings: Settings, database: Database, drop_key_ids: bool
) -> None:
    admin = create_account(audit_settings)
    rotate_keys(audit_settings, admin.user_id, 3)
    env = cli_env(audit_settings, database)
    assert crmgate(env, "audit", "verify").returncode == 0
    drop_append_only_guard(audit_settings, database)
    sql(
        audit_settings,
        """UPDATE audit_events SET details = '{"key": "cgu_forged"}' WHERE seq = 2""",
    )
    rechain_plain(audit_settings, 2, drop_key_ids=drop_key_ids)
    # the forgery is consistent as a plain hash chain: every link and the head agree ...
    rows = audit_rows(audit_settings)
    assert all(b["previous_hash"] == a["hash"] for a, b in itertools.pairwise(rows))
    # ... and verify still names the first forged event
    forged = crmgate(env, "audit", "verify", "--json")
    assert forged.returncode == 1, forged.stdout
    result = json.loads(forged.stdout)
    assert result["intact"] is False and result["broken_id"] == 2, result
    expected = "re-chained without the audit key" if drop_key_ids else "was changed"
    assert expected in result["reason"]


def test_a_chain_rewritten_entirely_as_unkeyed_is_detected(
    audit_settings: Settings, database: Database
) -> None:
    """Turning every event into a pre-key (plain SHA-256) event leaves no keyed event to
    contradict it; the key file's existence does."""
    admin = create_account(audit_settings)
    rotate_keys(audit_settings, admin.user_id, 2)
    drop_append_only_guard(audit_settings, database)
    rechain_plain(audit_settings, 1, drop_key_ids=True)
    result = crmgate(cli_env(audit_settings, database), "audit", "verify")
    assert result.returncode == 1
    assert (
        "BROKEN at event #1: event #1 (key.created) is not keyed, but the audit key file says "
        "every event from #1 on is"
    ) in result.stdout


def test_verify_across_a_key_rotation_passes_and_needs_every_key(
    audit_settings: Settings, database: Database
) -> None:
    admin = create_account(audit_settings)
    env = cli_env(audit_settings, database)
    key_file = audit_settings.data_dir / "secrets" / "audit_keys"

    async def work(services: Services) -> None:
        await services.accounts.rotate_key(admin.user_id)
        rotated = crmgate(env, "audit", "rotate-key")  # another process, this one running
        assert rotated.returncode == 0, rotated.stderr
        assert "key 2:" in rotated.stdout and "chains every event" in rotated.stdout
        await services.accounts.rotate_key(admin.user_id)  # picked up without a restart

    with_services(audit_settings, work)
    assert oct(key_file.stat().st_mode & 0o777) == "0o600"
    content = key_file.read_text()
    assert content.startswith("# crmgate audit keys") and content.count("\n2:") == 1
    key_ids = [row["key_id"] for row in audit_rows(audit_settings)]
    assert [k.split(":")[0] for k in key_ids] == ["1", "1", "2"]
    verified = crmgate(env, "audit", "verify", "--json")
    assert verified.returncode == 0, verified.stdout
    assert json.loads(verified.stdout) | {"head": None} == {
        "intact": True,
        "events": 3,
        "keyed": 3,
        "head": None,
        "anchored": 3,  # the anchor file this host's processes wrote
        "broken_id": None,
        "reason": None,
    }
    # the file's text holds no key id, and the database no key
    table = json.dumps(audit_rows(audit_settings), default=str)
    for line in content.splitlines()[1:]:
        assert line.split(":", 1)[1] not in table

    # a key version removed from the file: its events cannot be checked, and verify says so
    key_file.write_text(
        "\n".join(line for line in content.splitlines() if not line.startswith("1:")) + "\n"
    )
    lost = crmgate(env, "audit", "verify")
    assert lost.returncode == 1
    assert "BROKEN at event #1" in lost.stdout and "does not hold" in lost.stdout
    # another host's key file (its own version 1): told apart by the key id's fingerprint,
    # and refused at start-up (every command, the gateway) before anything is chained with it
    key_file.unlink()
    AuditKeys(key_file).create(keyed_from=1)
    other = crmgate(env, "audit", "verify")
    assert other.returncode == 2 and "does not hold audit key 2:" in other.stderr
    assert "copy theirs here" in other.stderr


def test_a_missing_or_unsafe_key_file_is_a_clear_error_never_a_pass(
    audit_settings: Settings, database: Database
) -> None:
    create_account(audit_settings)
    env = cli_env(audit_settings, database)
    key_file = audit_settings.data_dir / "secrets" / "audit_keys"
    key_file.chmod(0o644)
    unsafe = crmgate(env, "audit", "verify")
    assert unsafe.returncode == 2 and "readable by other users" in unsafe.stderr
    key_file.rename(key_file.with_name("elsewhere"))
    missing = crmgate(env, "audit", "verify")
    assert missing.returncode == 2, missing.stdout
    assert "audit key file" in missing.stderr and "is missing" in missing.stderr
    assert not key_file.exists()  # verify never makes a key
    assert crmgate(env, "audit", "rotate-key").returncode == 2


async def write_legacy_events(services: Services, count: int) -> None:
    """A trail written by an older crmgate (plain SHA-256, schema 0006), then the upgrade."""
    await migrate.upgrade(services.engine, "0006_restricted_keys")
    previous = GENESIS
    async with for_writing(services.engine).begin() as connection:
        for seq in range(1, count + 1):
            event = Event(
                seq,
                utcnow(),
                "key.rotated",
                None,
                "cli",
                None,
                None,
                "usr_x",
                {"n": seq},
                previous,
                "",
            )
            digest = hashlib.sha256((previous + event.canonical()).encode()).hexdigest()
            await connection.execute(
                text(
                    "INSERT INTO audit_events (seq, created_at, event, actor, target, "
                    "details, previous_hash, hash) VALUES (:s, :c, 'key.rotated', 'cli', "
                    "'usr_x', :d, :p, :h)"
                ),
                {
                    "s": seq,
                    "c": event.created_at,
                    "d": json.dumps(event.details),
                    "p": previous,
                    "h": digest,
                },
            )
            await connection.execute(text("UPDATE audit_head SET seq = :s"), {"s": seq})
            await connection.execute(text("UPDATE audit_head SET hash = :h"), {"h": digest})
            previous = digest
    await migrate.upgrade(services.engine)


def test_events_from_before_keyed_chains_keep_verifying(tmp_path: Path, database: Database) -> None:
    """A trail written by an older crmgate (plain SHA-256, schema 0006) goes on after the
    upgrade: its events verify as they were, the new ones are keyed."""
    settings = make_settings(tmp_path / "data", database.url)
    with_services(settings, lambda services: write_legacy_events(services, 2))
    env = cli_env(settings, database)
    before = crmgate(env, "audit", "verify")
    assert before.returncode == 2 and "does not exist" in before.stderr  # no key yet: no pass
    create_account(settings)  # the first keyed event makes the key file
    after = crmgate(env, "audit", "verify", "--json")
    assert after.returncode == 0, after.stdout
    assert json.loads(after.stdout)["events"] == 3 and json.loads(after.stdout)["keyed"] == 1
    key_file = settings.data_dir / "secrets" / "audit_keys"
    assert "\n# keyed_from=3:" in key_file.read_text()  # the legacy head + 1
    # the downgrade of such a trail: the keyed events re-chained as legacy ones, a new one after
    drop_append_only_guard(settings, database)
    rechain_plain(settings, 3, drop_key_ids=True)
    create_account(settings, "Globex", "admin@globex.example")
    downgraded = crmgate(env, "audit", "verify")
    assert downgraded.returncode == 1 and "BROKEN at event #3" in downgraded.stdout


# ---- an event and its change: one transaction ------------------------------------------------


def fail_head_updates(settings: Settings, database: Database) -> None:
    """A failure injected inside the append, after the event row is written: the head's hash
    update (the append's last statement, right before the caller's commit) is refused."""
    if database.backend == "postgresql":
        sql(
            settings,
            "CREATE FUNCTION injected() RETURNS trigger LANGUAGE plpgsql AS "
            "$$ BEGIN RAISE EXCEPTION 'injected failure'; END $$",
            "CREATE TRIGGER injected BEFORE UPDATE ON audit_head FOR EACH ROW "
            "WHEN (NEW.hash <> OLD.hash) EXECUTE FUNCTION injected()",
        )
    else:
        sql(
            settings,
            "CREATE TRIGGER injected BEFORE UPDATE ON audit_head WHEN NEW.hash <> OLD.hash "
            "BEGIN SELECT RAISE(ABORT, 'injected failure'); END",
        )


def test_a_change_and_its_event_commit_together_or_not_at_all(
    audit_settings: Settings, database: Database
) -> None:
    admin = create_account(audit_settings)
    head_before = audit_rows(audit_settings)[-1]
    fail_head_updates(audit_settings, database)

    async def attempts(services: Services) -> None:
        with pytest.raises(Exception, match="injected failure"):
            await services.accounts.rotate_key(admin.user_id)
        with pytest.raises(Exception, match="injected failure"):
            await services.accounts.create_user(
                admin.organisation_id, name="Mia", email="mia@acme.example"
            )
        with pytest.raises(Exception, match="injected failure"):
            await services.restricted_keys.create(admin.organisation_id, admin.user_id, KeyScope())
        # neither the changes ...
        assert await services.accounts.authenticate(admin.key) is not None  # not rotated
        assert await services.accounts.count_users(admin.organisation_id) == 1
        assert await services.restricted_keys.count(admin.organisation_id) == 0

    with_services(audit_settings, attempts)
    # ... nor their events, and the head where it was
    rows = audit_rows(audit_settings)
    assert [row["seq"] for row in rows] == [head_before["seq"]]

    async def head(services: Services) -> tuple[int, str]:
        async with services.engine.connect() as connection:
            found = (await connection.execute(text("SELECT seq, hash FROM audit_head"))).one()
            return int(found[0]), str(found[1])

    assert with_services(audit_settings, head) == (head_before["seq"], head_before["hash"])
    sql(
        audit_settings,
        "DROP TRIGGER injected" + (" ON audit_head" if database.backend == "postgresql" else ""),
    )
    rotate_keys(audit_settings, admin.user_id, 1)
    verified = with_services(audit_settings, lambda services: services.audit.verify())
    assert verified.intact and verified.count == 2, verified


# ---- noisy events: off the request path, capped ---------------------------------------------


def test_a_burst_of_bad_keys_is_answered_at_once_queued_capped_and_flushed(
    tmp_path: Path, database: Database
) -> None:
    settings = make_settings(
        tmp_path / "data",
        database.url,
        audit_repeat_window=0.0,  # no folding: the global cap alone
        audit_flush_interval=0.2,
        audit_noisy_cap=5,
    )
    migrate_database(settings)
    admin = create_account(settings)
    bad = [keys.generate(KeyKind.USER) for _ in range(6)] + ["wrong"] * 6

    def burst(client: httpx.Client) -> list[float]:
        took = []
        for key in bad:
            started = time.monotonic()
            assert (
                client.get("/v1/user/list", headers={"X-API2CRM-USER-KEY": key}).status_code == 401
            )
            took.append(time.monotonic() - started)
        return took

    async def while_the_trail_is_locked(services: Services, client: httpx.Client) -> list[float]:
        # another transaction holds the chain head (and, on SQLite, the write lock) throughout
        async with for_writing(services.engine).begin() as connection:
            await connection.execute(text("UPDATE audit_head SET hash = hash"))
            took = await asyncio.to_thread(burst, client)
            await asyncio.sleep(0.5)  # flushes come due meanwhile, and wait
            rows = await asyncio.to_thread(audit_rows, settings)  # another connection
            assert [r for r in rows if r["event"] == "auth.failed"] == []
        return took

    with RunningGateway(create_app(settings)) as running, running.client() as client:
        # the gateway's pool connected (a first connection to PostgreSQL takes a while)
        ok = client.get("/v1/user/list", headers={"X-API2CRM-USER-KEY": admin.key})
        assert ok.status_code == 200
        took = with_services(settings, lambda services: while_the_trail_is_locked(services, client))
        # nobody waited for the database: a request that did would still be waiting (the lock
        # is held until the burst is over)
        assert max(took) < 1.0, took
        written = rows_of(settings, "auth.failed", 5)
        assert len(written) == 5  # the cap: five kept
        time.sleep(0.5)
        assert len(rows_of(settings, "auth.failed", 5)) == 5
        assert rows_of(settings, "audit.dropped", 1, timeout=0) == []  # due at the window's end
    # shutdown writes what is pending: one summary of the window's drops
    dropped = rows_of(settings, "audit.dropped", 1, timeout=0)
    assert [json.loads(row["details"]) for row in dropped] == [
        {"dropped": 7, "auth.failed": 7, "cap": 5, "window_seconds": 60}
    ]
    verified = with_services(settings, lambda services: services.audit.verify())
    assert verified.intact, verified


# ---- review fixes: downgrade, cut-off end, rows beyond the head, a lost key file -------------


def drop_head_guard(settings: Settings, database: Database) -> None:
    """What a forger who moves the head back drops too."""
    if database.backend == "postgresql":
        sql(settings, "ALTER TABLE audit_head DISABLE TRIGGER audit_head_forward")
    else:
        sql(settings, "DROP TRIGGER audit_head_forward")


def head_back_to(settings: Settings, seq: int) -> None:
    """The forger's cut: every event after ``seq`` deleted, the head moved back onto ``seq``."""
    rows = audit_rows(settings)
    digest = rows[seq - 1]["hash"] if seq else GENESIS
    sql(settings, "DELETE FROM audit_events WHERE seq > :s", s=seq)
    sql(settings, "UPDATE audit_head SET seq = :s, hash = :h", s=seq, h=digest)


def test_a_chain_rewritten_as_unkeyed_with_a_keyed_event_after_it_is_detected(
    audit_settings: Settings, database: Database
) -> None:
    """The downgrade: every event re-chained as a pre-key (plain SHA-256) event, then one new
    keyed event (here a key rotation; a bad key's auth.failed does as well) chained onto the
    forged head. The key file says where keyed events start."""
    admin = create_account(audit_settings)
    rotate_keys(audit_settings, admin.user_id, 2)
    key_file = audit_settings.data_dir / "secrets" / "audit_keys"
    assert "\n# keyed_from=1:" in key_file.read_text()  # a fresh install: every event keyed
    drop_append_only_guard(audit_settings, database)
    rechain_plain(audit_settings, 1, drop_key_ids=True)
    rotate_keys(audit_settings, admin.user_id, 1)
    rows = audit_rows(audit_settings)
    assert [row["key_id"] is None for row in rows] == [True, True, True, False]
    assert rows[3]["previous_hash"] == rows[2]["hash"]  # chained onto the forgery
    result = crmgate(cli_env(audit_settings, database), "audit", "verify")
    assert result.returncode == 1, result.stdout
    assert "BROKEN at event #1" in result.stdout and "from #1 on is" in result.stdout


def test_a_cut_off_end_is_detected_by_the_anchor_file_and_by_a_given_anchor(
    audit_settings: Settings, database: Database, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, "crmgate.audit")
    admin = create_account(audit_settings)
    rotate_keys(audit_settings, admin.user_id, 3)
    env = cli_env(audit_settings, database)
    rows = audit_rows(audit_settings)
    newest = f"{rows[-1]['seq']}:{rows[-1]['hash']}"
    # the head, logged for shipped logs to witness, and kept in the anchor file
    assert f"audit: head #{newest.replace(':', ' ')}" in caplog.text
    anchor_file = audit_settings.data_dir / "audit_anchor"
    assert json.loads(anchor_file.read_text())["seq"] == 4
    intact = crmgate(env, "audit", "verify", "--anchor", newest)
    assert intact.returncode == 0 and "anchored at #4" in intact.stdout, intact.stdout

    drop_append_only_guard(audit_settings, database)
    drop_head_guard(audit_settings, database)
    head_back_to(audit_settings, 2)  # the newest events gone, the new last one keyed
    cut = crmgate(env, "audit", "verify")
    assert cut.returncode == 1, cut.stdout
    assert "events #3 to #4 are missing: the chain ends at #2" in cut.stdout
    assert "the anchor file" in cut.stdout

    # the gateway goes on writing: the anchor is not moved past the evidence, and the events
    # that now carry the anchored numbers are not the ones it saw
    rotate_keys(audit_settings, admin.user_id, 3)
    assert "is gone or changed since the anchor file" in caplog.text
    assert json.loads(anchor_file.read_text())["seq"] == 4
    regrown = crmgate(env, "audit", "verify")
    assert regrown.returncode == 1 and "BROKEN at event #4" in regrown.stdout
    assert "is not the one the anchor file" in regrown.stdout

    # on a host that never wrote (no anchor file), a head kept elsewhere does the same
    anchor_file.unlink()
    assert crmgate(env, "audit", "verify").returncode == 0  # what the database alone can say
    witnessed = crmgate(env, "audit", "verify", "--anchor", newest)
    assert witnessed.returncode == 1 and "is not the one --anchor 4:" in witnessed.stdout
    bad = crmgate(env, "audit", "verify", "--anchor", "4:nothex")
    assert bad.returncode == 2 and "SEQ:HASH" in bad.stderr


def test_an_anchor_file_that_was_edited_is_no_pass(
    audit_settings: Settings, database: Database
) -> None:
    admin = create_account(audit_settings)
    rotate_keys(audit_settings, admin.user_id, 2)
    anchor_file = audit_settings.data_dir / "audit_anchor"
    anchor = json.loads(anchor_file.read_text())
    rows = audit_rows(audit_settings)
    anchor_file.write_text(json.dumps(anchor | {"seq": 2, "hash": rows[1]["hash"]}))
    edited = crmgate(cli_env(audit_settings, database), "audit", "verify")
    assert edited.returncode == 1 and "its MAC does not match" in edited.stdout


def test_a_wiped_trail_is_no_pass(tmp_path: Path, database: Database) -> None:
    """Every row deleted and the head reset: the anchor file says otherwise; on a trail an
    older crmgate began, the key file alone does too (it was made when the chain held two)."""
    settings = make_settings(tmp_path / "data", database.url)
    with_services(settings, lambda services: write_legacy_events(services, 2))
    create_account(settings)
    key_file = settings.data_dir / "secrets" / "audit_keys"
    assert "\n# keyed_from=3:" in key_file.read_text()
    env = cli_env(settings, database)
    assert crmgate(env, "audit", "verify").returncode == 0
    drop_append_only_guard(settings, database)
    drop_head_guard(settings, database)
    sql(settings, "DELETE FROM audit_events")
    sql(settings, "UPDATE audit_head SET seq = 0, hash = :h", h=GENESIS)
    wiped = crmgate(env, "audit", "verify")
    assert wiped.returncode == 1 and "the chain ends at #0, but the anchor file" in wiped.stdout
    (settings.data_dir / "audit_anchor").unlink()
    wiped = crmgate(env, "audit", "verify")
    assert wiped.returncode == 1, wiped.stdout
    assert "the audit key file was made when it held #2: events were removed" in wiped.stdout


def test_a_row_beyond_the_head_is_named_by_verify_and_never_listed(
    gateway: RunningGateway, audit_settings: Settings, database: Database
) -> None:
    admin = create_account(audit_settings)
    rows = audit_rows(audit_settings)
    sql(  # an insert is what the append-only guard allows
        audit_settings,
        "INSERT INTO audit_events (seq, created_at, event, organisation_id, actor, details, "
        "previous_hash, hash) VALUES (:s, :c, 'key.revoked', :o, 'cli', '{}', :p, :h)",
        s=rows[-1]["seq"] + 1,
        c=utcnow(),
        o=admin.organisation_id,
        p=rows[-1]["hash"],
        h="f" * 64,
    )
    with gateway.client(admin.key) as client:
        assert [e["event"] for e in events(client)] == ["key.created"]
        assert client.get("/v1/audit/count").json() == {"total": 1}
    result = crmgate(cli_env(audit_settings, database), "audit", "verify")
    assert result.returncode == 1, result.stdout
    assert "BROKEN at event #2: event #2 lies beyond the chain's head #1" in result.stdout


@pytest.mark.filterwarnings("ignore::pytest.PytestUnhandledThreadExceptionWarning")
def test_a_lost_key_file_is_never_replaced_while_keyed_events_exist(
    audit_settings: Settings, database: Database
) -> None:
    admin = create_account(audit_settings)
    key_file = audit_settings.data_dir / "secrets" / "audit_keys"
    key_file.rename(key_file.with_name("backup"))

    async def rotate(services: Services) -> None:
        with pytest.raises(AuditKeyError, match="crmgate makes no new key"):
            await services.accounts.rotate_key(admin.user_id)
        assert await services.accounts.authenticate(admin.key) is not None  # not rotated

    with_services(audit_settings, rotate)
    assert not key_file.exists()
    assert len(audit_rows(audit_settings)) == 1
    # nothing starts without it: the gateway, crmgate serve, every command
    with pytest.raises(RuntimeError, match="did not start"):
        RunningGateway(create_app(audit_settings)).__enter__()
    env = cli_env(audit_settings, database)
    for command in (["serve", "--port", "0"], ["key", "rotate", "--user-id", admin.user_id]):
        refused = crmgate(env, *command)
        assert refused.returncode == 2, (command, refused.stdout, refused.stderr)
        assert "is missing, but the audit trail holds events chained under an audit key" in (
            refused.stderr
        )
        assert "Traceback" not in refused.stderr
    assert not key_file.exists()
    key_file.with_name("backup").rename(key_file)  # restored: all is well again
    rotate_keys(audit_settings, admin.user_id, 1)
    assert crmgate(env, "audit", "verify").returncode == 0


# ---- review fixes: token renewals, the flush, folding, the timer's context --------------------


def test_a_token_refresh_is_kept_when_its_event_cannot_join_the_renewal(
    oauth_gateway: tuple[RunningGateway, Settings],
    salesforce: SalesforceSim,
    database: Database,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The CRM renewed the tokens (a rotated refresh token would be lost with a rollback): a
    failure to write token.refreshed in the renewal's transaction keeps the renewal, and the
    event is written in a transaction of its own afterwards, loudly."""
    gateway, settings = oauth_gateway
    admin = create_account(settings)
    salesforce.simulator.auto_approve_user = salesforce.simulator.add_user(
        "owner@acme.example", "pw"
    ).username
    key = oauth_connect(gateway, admin.key, "Salesforce", DONE, salesforce.ca_file)
    assert count(gateway, admin, key).status_code == 200
    # the renewal's transaction cannot write the event; a transaction of its own can
    if database.backend == "postgresql":
        sql(
            settings,
            "CREATE FUNCTION refuse_in_renewal() RETURNS trigger LANGUAGE plpgsql AS "
            "$$ BEGIN RAISE EXCEPTION 'injected failure'; END $$",
            "CREATE TRIGGER refuse_in_renewal BEFORE INSERT ON audit_events FOR EACH ROW "
            "WHEN (NEW.event = 'token.refreshed' AND NEW.details NOT LIKE '%own_transaction%') "
            "EXECUTE FUNCTION refuse_in_renewal()",
        )
    else:
        sql(
            settings,
            "CREATE TRIGGER refuse_in_renewal BEFORE INSERT ON audit_events "
            "WHEN NEW.event = 'token.refreshed' AND NEW.details NOT LIKE '%own_transaction%' "
            "BEGIN SELECT RAISE(ABORT, 'injected failure'); END",
        )

    async def revision(services: Services) -> int:
        async with services.engine.connect() as connection:
            found = await connection.execute(
                text("SELECT credentials_revision FROM applications WHERE id = :k"), {"k": key}
            )
            return int(found.scalar_one())

    before = with_services(settings, revision)
    salesforce.simulator.expire_sessions()
    assert count(gateway, admin, key).status_code == 200  # refreshed, the event refused
    assert with_services(settings, revision) == before + 1  # the renewal committed
    refreshed = [row for row in audit_rows(settings) if row["event"] == "token.refreshed"]
    (details,) = [json.loads(row["details"]) for row in refreshed]
    assert details.pop("credential").startswith("key_")  # the request's key set it going
    assert details == {
        "type": "Salesforce",
        "authorization": "oAuth-internal",
        "own_transaction": True,
        "credential_kind": "user",
    }
    assert "could not be written with the renewal; the renewal is kept" in caplog.text
    sessions_before = len(salesforce.simulator.sessions)
    assert count(gateway, admin, key).status_code == 200  # the new tokens are the stored ones
    assert len(salesforce.simulator.sessions) == sessions_before
    verified = with_services(settings, lambda services: services.audit.verify())
    assert verified.intact, verified


class FaultySessions:
    """The gateway's session factory, with one failure injected into the next write: raised
    after a real commit (a connection lost while COMMIT was answered: was it written?), or
    an error no database layer raises (any exception at all)."""

    def __init__(self, real: Any, failure: str) -> None:
        self.real, self.failure = real, failure

    def __call__(self) -> Any:
        return self.real()

    @contextlib.asynccontextmanager
    async def begin(self) -> Any:
        failure, self.failure = self.failure, ""
        if failure == "unexpected":
            raise RuntimeError("injected: not a database error")
        async with self.real.begin() as session:
            yield session
        if failure == "after-commit":
            raise OperationalError("COMMIT", {}, ConnectionResetError("injected: lost"))


def noisy_log(services: Services, sessions: Any = None, **options: Any) -> AuditLog:
    """An audit log beside the services' own, its flush called by the test (never by a timer,
    unless the test sets a short interval)."""
    options.setdefault("repeat_window", 0.0)
    options.setdefault("flush_interval", 3600.0)
    return AuditLog(
        sessions or session_factory(services.engine), services.audit.keys, None, **options
    )


async def noisy_rows(services: Services) -> list[dict[str, Any]]:
    async with services.engine.connect() as connection:
        found = await connection.execute(
            text("SELECT * FROM audit_events WHERE event <> 'key.created' ORDER BY seq")
        )
        return [dict(row._mapping) for row in found]


def test_a_failed_flush_keeps_its_events_and_writes_them_exactly_once(
    audit_settings: Settings, database: Database
) -> None:
    create_account(audit_settings)  # the key file

    async def work(services: Services) -> None:
        # the database refuses the write (as when it is unavailable): kept, then written once
        audit = noisy_log(services)
        for n in range(3):
            await audit.record("auth.failed", client=f"192.0.2.{n}", details={"n": n})
        async with for_writing(services.engine).begin() as connection:
            if database.backend == "postgresql":
                await connection.execute(
                    text(
                        "CREATE FUNCTION injected() RETURNS trigger LANGUAGE plpgsql AS "
                        "$$ BEGIN RAISE EXCEPTION 'injected failure'; END $$"
                    )
                )
                await connection.execute(
                    text(
                        "CREATE TRIGGER injected BEFORE INSERT ON audit_events "
                        "FOR EACH ROW EXECUTE FUNCTION injected()"
                    )
                )
            else:
                await connection.execute(
                    text(
                        "CREATE TRIGGER injected BEFORE INSERT ON audit_events "
                        "BEGIN SELECT RAISE(ABORT, 'injected failure'); END"
                    )
                )
        assert await audit.flush() is False
        assert await noisy_rows(services) == []
        async with for_writing(services.engine).begin() as connection:
            await connection.execute(
                text(
                    "DROP TRIGGER injected"
                    + (" ON audit_events" if database.backend == "postgresql" else "")
                )
            )
        assert await audit.flush() is True
        assert await audit.flush() is True
        assert [json.loads(r["details"])["n"] for r in await noisy_rows(services)] == [0, 1, 2]

        # a commit that failed after it was written: looked up, never written twice
        faulty = FaultySessions(session_factory(services.engine), "after-commit")
        audit = noisy_log(services, faulty)
        for n in range(3, 5):
            await audit.record("auth.failed", client=f"192.0.2.{n}", details={"n": n})
        assert await audit.flush() is False
        assert await audit.flush() is True
        assert [json.loads(r["details"])["n"] for r in await noisy_rows(services)] == [
            0,
            1,
            2,
            3,
            4,
        ]

        # any other failure: kept too, and raised
        faulty = FaultySessions(session_factory(services.engine), "unexpected")
        audit = noisy_log(services, faulty)
        await audit.record("limit.exceeded", client="192.0.2.9", details={"n": 5})
        with pytest.raises(RuntimeError, match="injected"):
            await audit.flush()
        assert await audit.flush() is True
        assert [json.loads(r["details"])["n"] for r in await noisy_rows(services)][-1] == 5
        assert len(await noisy_rows(services)) == 6
        assert (await services.audit.verify()).intact

    with_services(audit_settings, work)


def test_details_that_are_not_json_are_written_as_text(audit_settings: Settings) -> None:
    create_account(audit_settings)

    class Odd:
        def __str__(self) -> str:
            return "odd"

    odd: dict[str, Any] = {
        "when": datetime(2026, 1, 2, tzinfo=UTC),
        "amount": Decimal("1.50"),
        "ratio": float("nan"),
        "thing": Odd(),
        "items": ("a", 1),
        "n": 3,
    }

    async def work(services: Services) -> None:
        audit = noisy_log(services)
        await audit.record("auth.failed", client="192.0.2.1", details=odd)
        await audit.record("auth.failed", client="192.0.2.2", details={"n": 1})
        assert await audit.flush() is True  # one odd event does not poison the batch
        assert await services.audit.record("user.updated", target="usr_x", details=odd)

    with_services(audit_settings, work)
    written = [json.loads(r["details"]) for r in audit_rows(audit_settings)[1:]]
    expected = {
        "when": "2026-01-02 00:00:00+00:00",
        "amount": "1.50",
        "ratio": "nan",
        "thing": "odd",
        "items": ["a", "1"],
        "n": 3,
    }
    assert written == [expected, {"n": 1}, expected]


def test_a_folded_count_is_written_when_its_window_ends_and_few_clients_are_tracked(
    audit_settings: Settings,
) -> None:
    create_account(audit_settings)

    async def work(services: Services) -> None:
        audit = noisy_log(services, repeat_window=0.3, flush_interval=0.05)
        for _ in range(5):
            await audit.record("auth.failed", client="192.0.2.1", details={"reason": "bad"})
        await asyncio.sleep(0.8)  # no sixth failure: the window's end alone writes the count
        for _ in range(100):  # a loaded machine flushes late: up to 10 s more
            if len(rows := await noisy_rows(services)) >= 2:
                break
            await asyncio.sleep(0.1)
        assert [json.loads(r["details"]) for r in rows] == [
            {"reason": "bad"},
            {"reason": "bad", "repeated": 4},
        ]

        # a hard bound on the clients being folded: the least recent one out, its count written
        audit = noisy_log(services, repeat_window=60.0, fold_clients=2)
        for client in ("198.51.100.1", "198.51.100.1", "198.51.100.2", "198.51.100.3"):
            await audit.record("auth.failed", client=client)
        for n in range(1000):  # addresses rotated by an attacker
            await audit.record("auth.failed", client=f"2001:db8::{n:x}")
        assert len(audit._recent) == 2
        assert await audit.flush() is True
        written = [(r["client"], json.loads(r["details"])) for r in await noisy_rows(services)]
        assert ("198.51.100.1", {"repeated": 1}) in written
        assert await audit.flush(closing=True) is True

    with_services(audit_settings, work)


def test_the_flush_timer_does_not_carry_the_request_that_started_it(
    audit_settings: Settings,
) -> None:
    create_account(audit_settings)

    async def work(services: Services) -> None:
        audit = noisy_log(services, flush_interval=0.05, noisy_cap=1, cap_window=0.3)

        async def request() -> None:
            bind_request({}, "req-attacker", "203.0.113.66")
            for _ in range(3):  # one kept, two over the cap
                await audit.record("auth.failed", details={"reason": "missing"})

        await asyncio.create_task(request())
        await asyncio.sleep(0.9)  # the cap window ends; its summary is written by the timer
        rows = await noisy_rows(services)
        assert [(r["event"], r["client"], r["request_id"]) for r in rows] == [
            ("auth.failed", "203.0.113.66", "req-attacker"),
            ("audit.dropped", None, None),
        ]
        assert rows[1]["actor"] == "system"

    with_services(audit_settings, work)
