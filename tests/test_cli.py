"""The operator interface: migrate, account create, user list, key rotate / revoke."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import Database, RunningGateway, make_settings
from crmgate.api.app import create_app
from crmgate.store import migrate


def crmgate(
    env: dict[str, str], *args: str, check: bool = True
) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        [sys.executable, "-m", "crmgate.cli", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    if check:
        assert result.returncode == 0, result.stderr
    return result


@pytest.fixture
def env(tmp_path: Path, database: Database) -> dict[str, str]:
    environment = {k: v for k, v in os.environ.items() if not k.startswith("CRMGATE_")}
    environment["CRMGATE_DATA_DIR"] = str(tmp_path / "data")
    if database.backend == "postgresql":
        environment["CRMGATE_DATABASE_URL"] = database.url
    return environment


def test_operator_workflow(env: dict[str, str], tmp_path: Path, database: Database) -> None:
    assert migrate.head_revision() in crmgate(env, "migrate").stdout
    assert migrate.head_revision() in crmgate(env, "migrate").stdout  # idempotent
    created = json.loads(
        crmgate(
            env, "account", "create", "--name", "Acme", "--email", "ops@acme.example", "--json"
        ).stdout
    )
    assert {"user_key", "user_id", "organisation_id"} <= created.keys()
    listed = json.loads(crmgate(env, "user", "list", "--json").stdout)["users"]
    assert [(u["user_id"], u["role"], u["email"]) for u in listed] == [
        (created["user_id"], "admin", "ops@acme.example")
    ]
    assert created["user_key"] not in json.dumps(listed)

    settings = make_settings(Path(env["CRMGATE_DATA_DIR"]), env.get("CRMGATE_DATABASE_URL"))
    with RunningGateway(create_app(settings)) as gateway:
        with gateway.client(created["user_key"]) as client:
            assert client.get("/v1/user/list").status_code == 200
        rotated = json.loads(
            crmgate(env, "key", "rotate", "--user-id", created["user_id"], "--json").stdout
        )
        assert rotated["user_id"] == created["user_id"]
        with gateway.client(created["user_key"]) as client:
            assert client.get("/v1/user/list").status_code == 401
        with gateway.client(rotated["user_key"]) as client:
            assert client.get("/v1/user/list").status_code == 200
        assert (
            "revoked 1 key" in crmgate(env, "key", "revoke", "--user-id", created["user_id"]).stdout
        )
        with gateway.client(rotated["user_key"]) as client:
            assert client.get("/v1/user/list").status_code == 401


def test_clear_errors(env: dict[str, str]) -> None:
    unmigrated = crmgate(
        env, "account", "create", "--name", "A", "--email", "a@a.example", check=False
    )
    assert unmigrated.returncode == 1
    assert "run `crmgate migrate`" in unmigrated.stderr
    crmgate(env, "migrate")
    bad_email = crmgate(env, "account", "create", "--name", "A", "--email", "nope", check=False)
    assert bad_email.returncode == 1 and "not a valid e-mail" in bad_email.stderr
    absent = "usr_" + "A" * 22
    missing = crmgate(env, "key", "rotate", "--user-id", absent, check=False)
    assert missing.returncode == 1 and f"user {absent} not found" in missing.stderr
    malformed = crmgate(env, "key", "revoke", "--user-id", "nonsense", check=False)
    assert malformed.returncode == 1 and "user not found" in malformed.stderr
    assert (
        "Traceback" not in missing.stderr + bad_email.stderr + unmigrated.stderr + malformed.stderr
    )
