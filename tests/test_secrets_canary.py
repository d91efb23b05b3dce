"""Canary secrets: keys and the pepper never reach the database, the logs or a later response."""

from __future__ import annotations

import logging
import secrets
import subprocess
from pathlib import Path

import httpx
import pytest
from pydantic import SecretStr

from conftest import (
    PG_HOST,
    PG_PORT,
    PG_USER,
    Database,
    RunningGateway,
    make_settings,
    migrate_database,
    with_services,
)
from crmgate.api.app import create_app

CLIENT_LOGGERS = ("httpx", "httpcore")  # the test's own HTTP client, not the gateway


def database_bytes(database: Database) -> bytes:
    if database.backend == "sqlite":
        path = Path(database.name)
        files = (path, path.with_name(path.name + "-wal"), path.with_name(path.name + "-shm"))
        return b"".join(candidate.read_bytes() for candidate in files if candidate.exists())
    dump = subprocess.run(
        ["pg_dump", "-h", PG_HOST, "-p", str(PG_PORT), "-U", PG_USER, "--no-owner", database.name],
        check=True,
        capture_output=True,
    )
    return dump.stdout


def test_no_secret_in_database_logs_or_later_responses(
    tmp_path: Path, database: Database, caplog: pytest.LogCaptureFixture
) -> None:
    pepper = "pepper-canary-" + secrets.token_hex(16)
    settings = make_settings(tmp_path / "data", database.url, key_pepper=SecretStr(pepper))
    migrate_database(settings)
    created = with_services(
        settings, lambda s: s.accounts.create_account("Canary Org", "Ada", "ada@canary.example")
    )
    issued = [created.key.secret]
    later: list[httpx.Response] = []

    caplog.set_level(logging.DEBUG)
    with RunningGateway(create_app(settings)) as gateway:
        with gateway.client(created.key.secret) as admin:
            made = admin.post("/v1/user", json={"name": "Mo", "email": "mo@canary.example"})
            member_id, member_key = made.json()["key"], made.json()["user_key"]
            issued.append(member_key)
            rotated = admin.post(f"/v1/user/{member_id}/key").json()["user_key"]
            issued.append(rotated)
            later += [
                admin.get("/v1/user/list"),
                admin.get(f"/v1/user/{member_id}"),
                admin.get("/v1/user/count"),
                admin.put(f"/v1/user/{member_id}", json={"phone": "123"}),
                admin.get("/v1/user/list", params={"filter": f"name eq '{member_key}'"}),
                admin.get("/v1/user/list", params={"filter": f"nonsense {member_key}"}),
                admin.get(f"/v1/user/{member_key}"),
            ]
        with gateway.client() as anonymous:
            for key in issued:
                typo = key[:-1] + ("A" if key[-1] != "A" else "B")
                later += [
                    anonymous.get("/v1/user/list", headers={"X-API2CRM-USER-KEY": key}),
                    anonymous.get("/v1/user/list", headers={"X-API2CRM-USER-KEY": typo}),
                    anonymous.get("/v1/user/list", params={"key": key}),
                    anonymous.get(f"/v1/{key}"),
                ]
        with gateway.client(rotated) as member:
            later.append(member.get("/v1/user/list"))

    stored = database_bytes(database)
    logged = "\n".join(
        record.getMessage()
        + (logging.Formatter().formatException(record.exc_info) if record.exc_info else "")
        for record in caplog.records
        if not record.name.startswith(CLIENT_LOGGERS)
    )
    assert "crmgate.access" in {record.name for record in caplog.records}, "nothing was logged"
    for key in issued:
        for part in (key, key[10:]):  # the whole key, and the part after its public hint
            assert part.encode() not in stored, "a user key is in the database"
            assert part not in logged, "a user key is in the logs"
            for response in later:
                # A response may repeat what its own request put in the URL ("user <id> not
                # found"); no other response may contain a key.
                if part in str(response.request.url):
                    continue
                assert part not in response.text + str(dict(response.headers)), (
                    f"a user key is in the response to {response.request.url}"
                )
    answered = "\n".join(response.text + str(dict(response.headers)) for response in later)
    assert pepper.encode() not in stored
    assert pepper not in logged and pepper not in answered
    assert created.key.secret[:10].encode() in stored  # hints are stored, by design
