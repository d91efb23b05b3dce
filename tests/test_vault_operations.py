"""Vault operations on stored credentials: rotate + rewrap while serving, retire, tampering,
and canary secrets that must never leave the vault."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import threading
import time
from typing import Any

import pytest
from sqlalchemy import select, update

from conftest import Account, Database, RunningGateway, SalesforceSim, create_account, with_services
from crmgate.security.vault import DecryptionError
from crmgate.settings import Settings
from crmgate.store.db import for_writing
from crmgate.store.models import Application
from test_secrets_canary import CLIENT_LOGGERS, database_bytes


def cli_env(settings: Settings) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CRMGATE_")}
    env["CRMGATE_DATA_DIR"] = str(settings.data_dir)
    if settings.database_url:
        env["CRMGATE_DATABASE_URL"] = settings.database_url
    env["CRMGATE_PLATFORM_OVERRIDES"] = json.dumps(settings.platform_overrides)
    env["CRMGATE_OUTBOUND_ALLOWED_NETWORKS"] = json.dumps(settings.outbound_allowed_networks)
    if settings.outbound_ca_file:
        env["CRMGATE_OUTBOUND_CA_FILE"] = settings.outbound_ca_file
    return env


def vault(settings: Settings, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        [sys.executable, "-m", "crmgate.cli", "vault", *args],
        env=cli_env(settings),
        capture_output=True,
        text=True,
        timeout=120,
    )
    if check:
        assert result.returncode == 0, result.stderr
    return result


def new_app(gateway: RunningGateway, key: str, sim: SalesforceSim, description: str = "") -> str:
    user = sim.simulator.add_user(f"u{len(sim.simulator.users)}@acme.example", "pw")
    body = {
        "type": "Salesforce",
        "authorization": "oAuth-internal",
        "credential": {
            "instance_url": sim.base_url,
            "access_token": sim.simulator.issue_session(user),
            "refresh_token": sim.simulator.issue_refresh_token(user),
        },
        "description": description,
    }
    with gateway.client(key) as client:
        response = client.post("/v1/application", json=body)
    assert response.status_code == 201, response.text
    return str(response.json()["key"])


@pytest.fixture
def admin(crm_settings: Settings) -> Account:
    return create_account(crm_settings)


def test_rotate_and_rewrap_while_the_gateway_serves(
    crm_settings: Settings, crm_gateway: RunningGateway, admin: Account, salesforce: SalesforceSim
) -> None:
    keys = [new_app(crm_gateway, admin.key, salesforce, f"app {i}") for i in range(6)]
    before = {
        key: with_services(
            crm_settings,
            lambda s, key=key: s.applications.store.credentials(admin.organisation_id, key),
        )[1].fields
        for key in keys
    }
    assert json.loads(vault(crm_settings, "status", "--json").stdout)["versions"] == {"1": 6}

    statuses: list[int] = []
    stop = threading.Event()
    owner = salesforce.simulator.users["u0@acme.example"]  # keys[0] acts as this user

    def traffic() -> None:
        with crm_gateway.client(admin.key) as client:
            round_ = 0
            while not stop.is_set():
                key = keys[round_ % len(keys)]
                statuses.append(client.get("/v1/application/list").status_code)
                statuses.append(client.get(f"/v1/application/{key}").status_code)
                statuses.append(
                    client.put(
                        f"/v1/application/{key}", json={"description": f"r{round_}"}
                    ).status_code
                )
                # A credential change while rewrap moves the rows: no conflict.
                fresh = {"access_token": salesforce.simulator.issue_session(owner)}
                statuses.append(
                    client.put(f"/v1/application/{keys[0]}", json={"credential": fresh}).status_code
                )
                round_ += 1

    worker = threading.Thread(target=traffic)
    worker.start()
    try:
        time.sleep(0.3)
        assert "version 2 added" in vault(crm_settings, "rotate").stdout
        created_during = new_app(crm_gateway, admin.key, salesforce, "made after rotate")
        assert "rewrapped under version 2" in vault(crm_settings, "rewrap").stdout
        time.sleep(0.3)
    finally:
        stop.set()
        worker.join(timeout=30)
    assert statuses and set(statuses) == {200}, sorted(set(statuses))

    status = json.loads(vault(crm_settings, "status", "--json").stdout)
    assert status["newest"] == 2 and status["versions"] == {"1": 0, "2": 7}
    for key in keys[1:]:  # keys[0] got new access tokens meanwhile
        after = with_services(
            crm_settings,
            lambda s, key=key: s.applications.store.credentials(admin.organisation_id, key),
        )[1].fields
        assert after == before[key]
    assert "retired" in vault(crm_settings, "retire", "--version", "1").stdout
    assert json.loads(vault(crm_settings, "status", "--json").stdout)["versions"] == {"2": 7}
    refused = vault(crm_settings, "retire", "--version", "2", check=False)
    assert refused.returncode == 1 and "newest" in refused.stderr
    with crm_gateway.client(admin.key) as client:  # the running gateway still reads everything
        user = next(iter(salesforce.simulator.users.values()))
        fresh = salesforce.simulator.issue_session(user)
        response = client.put(
            f"/v1/application/{created_during}", json={"credential": {"access_token": fresh}}
        )
        assert response.status_code == 200


def test_a_version_in_use_cannot_be_retired(
    crm_settings: Settings, crm_gateway: RunningGateway, admin: Account, salesforce: SalesforceSim
) -> None:
    new_app(crm_gateway, admin.key, salesforce)
    vault(crm_settings, "rotate")
    refused = vault(crm_settings, "retire", "--version", "1", check=False)
    assert refused.returncode == 1 and "still protects 1" in refused.stderr
    assert json.loads(vault(crm_settings, "status", "--json").stdout)["versions"] == {
        "1": 1,
        "2": 0,
    }


def test_moved_or_altered_ciphertexts_do_not_decrypt(
    crm_settings: Settings, crm_gateway: RunningGateway, admin: Account, salesforce: SalesforceSim
) -> None:
    first = new_app(crm_gateway, admin.key, salesforce)
    second = new_app(crm_gateway, admin.key, salesforce)
    stranger = create_account(crm_settings, name="Globex", email="boss@globex.example")
    theirs = new_app(crm_gateway, stranger.key, salesforce)

    async def tamper(services: Any) -> None:
        async with for_writing(services.engine).begin() as conn:
            row = (
                await conn.execute(
                    select(Application.key_version, Application.ciphertext).where(
                        Application.id == first
                    )
                )
            ).one()
            await conn.execute(
                update(Application)
                .where(Application.id.in_([second, theirs]))
                .values(key_version=row.key_version, ciphertext=row.ciphertext)
            )
            flipped = bytearray(row.ciphertext)
            flipped[20] ^= 0x01
            await conn.execute(
                update(Application).where(Application.id == first).values(ciphertext=bytes(flipped))
            )

    with_services(crm_settings, tamper)
    for organisation, key in (
        (admin.organisation_id, first),
        (admin.organisation_id, second),
        (stranger.organisation_id, theirs),  # moved to another organisation
    ):
        with pytest.raises(DecryptionError, match="failed authentication"):
            with_services(
                crm_settings,
                lambda s, o=organisation, k=key: s.applications.store.credentials(o, k),
            )
    vault(crm_settings, "rotate")
    rewrap = vault(crm_settings, "rewrap", check=False)
    assert rewrap.returncode == 1
    assert all(key in rewrap.stderr for key in (first, second, theirs))
    status = json.loads(vault(crm_settings, "status", "--json").stdout)
    assert status["versions"] == {"1": 3, "2": 0}
    with crm_gateway.client(admin.key) as client:
        partial = client.put(
            f"/v1/application/{second}", json={"credential": {"access_token": "x"}}
        )
        assert partial.status_code == 422  # the rest of the credential cannot be read back
        user = next(iter(salesforce.simulator.users.values()))
        repaired = client.put(
            f"/v1/application/{second}",
            json={
                "credential": {
                    "instance_url": salesforce.base_url,
                    "access_token": salesforce.simulator.issue_session(user),
                    "refresh_token": salesforce.simulator.issue_refresh_token(user),
                }
            },
        )
        assert repaired.status_code == 200
        assert client.delete(f"/v1/application/{first}").status_code == 204  # goes anyway


def test_credential_canaries_stay_in_the_vault(
    crm_settings: Settings,
    database: Database,
    salesforce: SalesforceSim,
    caplog: pytest.LogCaptureFixture,
) -> None:
    from crmgate.api.app import create_app

    password, token = "canary-password-5b1e", "CANARYTOKEN77"
    user = salesforce.simulator.add_user("canary@acme.example", password, security_token=token)
    access = salesforce.simulator.issue_session(user)
    refresh = salesforce.simulator.issue_refresh_token(user)
    admin = create_account(crm_settings)
    caplog.set_level(logging.DEBUG)
    responses = []
    with RunningGateway(create_app(crm_settings)) as gateway, gateway.client(admin.key) as client:
        for authorization, credential in (
            ("user", {"login": user.username, "password": password, "security_token": token}),
            (
                "oAuth-internal",
                {
                    "instance_url": salesforce.base_url,
                    "access_token": access,
                    "refresh_token": refresh,
                },
            ),
        ):
            made = client.post(
                "/v1/application",
                json={
                    "type": "Salesforce",
                    "authorization": authorization,
                    "credential": credential,
                },
            )
            assert made.status_code == 201
            key = made.json()["key"]
            responses += [
                made,
                client.get(f"/v1/application/{key}"),
                client.get("/v1/application/list"),
                client.put(f"/v1/application/{key}", json={"credential": credential}),
            ]
        responses.append(
            client.post(
                "/v1/application",
                json={
                    "type": "Salesforce",
                    "authorization": "user",
                    "credential": {"login": user.username, "password": password + "x"},
                },
            )
        )
    stored = database_bytes(database)
    logged = "\n".join(
        record.getMessage()
        for record in caplog.records
        if not record.name.startswith(CLIENT_LOGGERS)
    )
    answered = "\n".join(response.text + str(dict(response.headers)) for response in responses)
    sessions = [s for s, held in salesforce.simulator.sessions.items() if held.subject is user]
    for secret in (password, token, access, refresh, *sessions):
        assert secret.encode() not in stored, "a credential is in the database"
        assert secret not in logged, "a credential is in the logs"
        assert secret not in answered, "a credential is in a response"


def test_rewrap_reseals_portal_totp_seeds_and_retire_counts_them(settings: Settings) -> None:
    seed = "JBSWY3DPEHPK3PXPJBSWY3DPEHPK3PXP"

    async def enrol(services: Any) -> str:
        logins = services.portal.logins
        user, _ = await logins.sign_up("Acme", "Ann", "ann@acme.example", "not-a-real-hash")
        await logins.enrol_totp(user.user_id, seed, 1)
        return str(user.user_id)

    user_id = with_services(settings, enrol)
    status = json.loads(vault(settings, "status", "--json").stdout)
    assert (status["versions"], status["applications"], status["totp_seeds"]) == (
        {"1": 1},
        {},
        {"1": 1},
    )
    assert "0 application(s), 1 portal TOTP seed(s)" in vault(settings, "status").stdout
    vault(settings, "rotate")
    refused = vault(settings, "retire", "--version", "1", check=False)
    assert refused.returncode == 1 and "still protects 1" in refused.stderr

    assert "1 portal TOTP seed(s) rewrapped under version 2" in vault(settings, "rewrap").stdout
    status = json.loads(vault(settings, "status", "--json").stdout)
    assert (status["versions"], status["totp_seeds"]) == ({"1": 0, "2": 1}, {"2": 1})
    assert "retired" in vault(settings, "retire", "--version", "1").stdout
    # the seed opens under the new key, and the code already used stays used
    found = with_services(settings, lambda s: s.portal.logins.totp_seed(user_id))
    assert found == (seed, 1)
