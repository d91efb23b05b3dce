"""The token lifecycle of oAuth-internal applications: crmgate refreshes the tokens itself, once
per expiry however many requests and gateway processes notice it, stores rotated refresh tokens,
and marks an application unauthorized when the CRM refuses its grant for good."""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import os
import secrets
import ssl
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Protocol

import httpx
import pytest

from conftest import (
    Account,
    Database,
    RunningGateway,
    SalesforceSim,
    create_account,
    make_settings,
    migrate_database,
)
from crmgate.api.app import create_app
from crmgate.settings import Settings
from test_serve import ROOT, Served, free_port

CLIENT_ID = "crmgate-test-client"
CLIENT_SECRET = "client-secret-" + secrets.token_hex(8)
CALLBACK = "https://gateway.example/authorization/oauth/Salesforce/callback"
APP = "X-API2CRM-APPLICATION-KEY"


@pytest.fixture
def oauth_settings(tmp_path: Path, database: Database, salesforce: SalesforceSim) -> Settings:
    salesforce.simulator.add_connected_app(CLIENT_ID, CLIENT_SECRET, [CALLBACK])
    result = make_settings(
        tmp_path / "data",
        database.url,
        platform_overrides=salesforce.overrides(),
        outbound_ca_file=salesforce.ca_file,
        oauth_clients={"Salesforce": {"client_id": CLIENT_ID, "client_secret": CLIENT_SECRET}},
    )
    migrate_database(result)
    return result


@pytest.fixture
def gateways(oauth_settings: Settings) -> Iterator[tuple[RunningGateway, RunningGateway]]:
    """Two gateways on one database, each with its own connections, locks and caches: two
    processes as far as crmgate can tell."""
    with RunningGateway(create_app(oauth_settings)) as one:
        with RunningGateway(create_app(oauth_settings)) as two:
            yield one, two


@pytest.fixture
def admin(oauth_settings: Settings) -> Account:
    return create_account(oauth_settings)


def tokens_from_the_flow(sim: SalesforceSim, username: str) -> dict[str, Any]:
    """What Salesforce's web server flow gives crmgate's connected app for ``username``."""
    sim.simulator.auto_approve_user = username
    verifier = secrets.token_urlsafe(48)
    challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest())
    with httpx.Client(
        verify=ssl.create_default_context(cafile=sim.ca_file), trust_env=False
    ) as http:
        authorized = http.get(
            f"{sim.base_url}/services/oauth2/authorize",
            params={
                "response_type": "code",
                "client_id": CLIENT_ID,
                "redirect_uri": CALLBACK,
                "code_challenge": challenge.decode().rstrip("="),
                "code_challenge_method": "S256",
            },
        )
        code = httpx.URL(authorized.headers["location"]).params["code"]
        answer = http.post(
            f"{sim.base_url}/services/oauth2/token",
            data={
                "grant_type": "authorization_code",
                "code": code,
                "client_id": CLIENT_ID,
                "client_secret": CLIENT_SECRET,
                "redirect_uri": CALLBACK,
                "code_verifier": verifier,
            },
        )
    assert answer.status_code == 200, answer.text
    tokens: dict[str, Any] = answer.json()
    return tokens


def connect_internal(gateway: RunningGateway, admin: Account, sim: SalesforceSim) -> str:
    user = sim.simulator.add_user(f"u{len(sim.simulator.users)}@acme.example", "pw")
    tokens = tokens_from_the_flow(sim, user.username)
    body = {
        "type": "Salesforce",
        "authorization": "oAuth-internal",
        "credential": {
            "instance_url": tokens["instance_url"],
            "access_token": tokens["access_token"],
            "refresh_token": tokens["refresh_token"],
        },
    }
    with gateway.client(admin.key) as client:
        created = client.post("/v1/application", json=body)
    assert created.status_code == 201, created.text
    return str(created.json()["key"])


class Pointed(Protocol):
    """A running simulator as `start_process` points a gateway at it."""

    ca_file: str

    def overrides(self) -> dict[str, dict[str, Any]]: ...


def start_process(
    settings: Settings, sim: Pointed, platform: str = "Salesforce"
) -> tuple[Served, str]:
    """`crmgate serve` as its own process on the same database, secrets and simulator (with
    this module's OAuth client for ``platform``)."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("CRMGATE_")}
    env |= {
        "CRMGATE_DATA_DIR": str(settings.data_dir),
        "CRMGATE_PLATFORM_OVERRIDES": json.dumps(sim.overrides()),
        "CRMGATE_OUTBOUND_CA_FILE": sim.ca_file,
        "CRMGATE_OUTBOUND_ALLOWED_NETWORKS": '["127.0.0.0/8"]',
        # 100 requests at once from one key: this test is about refreshes, not rate limits
        "CRMGATE_RATE_LIMIT_USER_KEY": "",
        "CRMGATE_RATE_LIMIT_APPLICATION": "",
        "CRMGATE_OAUTH_CLIENTS": json.dumps(
            {platform: {"client_id": CLIENT_ID, "client_secret": CLIENT_SECRET}}
        ),
    }
    if settings.database_url:
        env["CRMGATE_DATABASE_URL"] = settings.database_url
    served = Served([str(ROOT / ".venv/bin/crmgate"), "serve", "--port", str(port)], env)
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while True:  # listening once /health answers
        try:
            if httpx.get(f"{base}/health", timeout=2).status_code == 200:
                return served, base
        except httpx.TransportError:
            pass
        if time.monotonic() > deadline or served.process.poll() is not None:
            served.stop()
            raise AssertionError(served.stderr)
        time.sleep(0.05)


def refreshes(sim: SalesforceSim) -> int:
    return sum(1 for call in sim.simulator.calls if call == ("POST", "/services/oauth2/token"))


def count(gateway: RunningGateway, admin: Account, key: str) -> httpx.Response:
    with gateway.client(admin.key) as client:
        return client.get("/v1/application/entity/contact/count", headers={APP: key})


def test_an_expired_access_token_is_refreshed_and_the_request_retried(
    gateways: tuple[RunningGateway, RunningGateway],
    admin: Account,
    salesforce: SalesforceSim,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    one, _ = gateways
    key = connect_internal(one, admin, salesforce)
    assert count(one, admin, key).status_code == 200
    before = refreshes(salesforce)
    old_tokens = set(salesforce.simulator.sessions)
    salesforce.simulator.expire_sessions()
    answer = count(one, admin, key)
    assert answer.status_code == 200, answer.text
    assert refreshes(salesforce) - before == 1
    assert count(one, admin, key).status_code == 200  # the new token is kept
    assert refreshes(salesforce) - before == 1
    new_tokens = set(salesforce.simulator.sessions) - old_tokens
    assert len(new_tokens) == 1
    logged = "\n".join(r.getMessage() for r in caplog.records if r.name.startswith("crmgate"))
    assert "tokens refreshed" in logged
    for token in (*old_tokens, *new_tokens, *salesforce.simulator.refresh_tokens):
        assert token not in logged


@pytest.mark.parametrize("rotate", [False, True], ids=["kept", "rotated"])
def test_many_concurrent_requests_in_two_processes_cause_one_refresh(
    oauth_settings: Settings,
    gateways: tuple[RunningGateway, RunningGateway],
    admin: Account,
    salesforce: SalesforceSim,
    rotate: bool,
) -> None:
    salesforce.simulator.rotate_refresh_tokens = rotate  # and a used refresh token is dead
    key = connect_internal(gateways[0], admin, salesforce)
    # Several processes share PostgreSQL; the embedded SQLite default is one process (its
    # renewals are serialised by an in-process lock, not by the database).
    many = 2 if oauth_settings.database_url and "postgresql" in oauth_settings.database_url else 1
    processes = [start_process(oauth_settings, salesforce) for _ in range(many)]
    try:
        headers = {"X-API2CRM-USER-KEY": admin.key, APP: key}
        clients = [
            httpx.Client(base_url=base, headers=headers, timeout=30) for _, base in processes
        ]
        for client in clients:
            assert client.get("/v1/application/entity/contact/count").status_code == 200
        for round_ in range(2):  # a second expiry must work with what the first refresh stored
            salesforce.simulator.expire_sessions()
            before = refreshes(salesforce)
            spread = [clients[n % len(clients)] for n in range(100)]
            with ThreadPoolExecutor(max_workers=20) as pool:
                answers = list(
                    pool.map(
                        lambda client: client.get("/v1/application/entity/contact/count"),
                        spread,
                    )
                )
            failed = [a.text for a in answers if a.status_code != 200]
            assert failed == [], (round_, failed[:3])
            assert refreshes(salesforce) - before == 1, round_
        for client in clients:
            client.close()
    finally:
        for served, _ in processes:
            served.stop()


def test_a_refused_grant_marks_the_application_unauthorized(
    gateways: tuple[RunningGateway, RunningGateway], admin: Account, salesforce: SalesforceSim
) -> None:
    one, _ = gateways
    key = connect_internal(one, admin, salesforce)
    salesforce.simulator.refresh_tokens.clear()  # revoked at the CRM
    salesforce.simulator.expire_sessions()
    refused = count(one, admin, key)
    assert refused.status_code == 401
    detail = refused.json()["detail"]
    assert (
        detail["code"] == "UNAUTHORIZED" and "authorize the application again" in detail["message"]
    )
    with one.client(admin.key) as client:
        assert client.get(f"/v1/application/{key}").json()["is_authorized"] is False
    calls = len(salesforce.simulator.calls)
    again = count(one, admin, key)
    assert again.status_code == 401 and "authorize it again" in again.json()["detail"]["message"]
    assert len(salesforce.simulator.calls) == calls  # answered without asking the CRM

    # new credentials restore it
    user = salesforce.simulator.add_user("back@acme.example", "pw")
    tokens = tokens_from_the_flow(salesforce, user.username)
    with one.client(admin.key) as client:
        put = client.put(
            f"/v1/application/{key}",
            json={
                "credential": {
                    "access_token": tokens["access_token"],
                    "refresh_token": tokens["refresh_token"],
                }
            },
        )
        assert put.status_code == 200, put.text
        assert client.get(f"/v1/application/{key}").json()["is_authorized"] is True
    assert count(one, admin, key).status_code == 200


def test_without_an_oauth_client_crmgate_cannot_refresh_and_says_so(
    tmp_path: Path, database: Database, salesforce: SalesforceSim
) -> None:
    settings = make_settings(
        tmp_path / "plain",
        database.url,
        platform_overrides=salesforce.overrides(),
        outbound_ca_file=salesforce.ca_file,
    )
    migrate_database(settings)
    admin = create_account(settings)
    salesforce.simulator.add_connected_app(CLIENT_ID, CLIENT_SECRET, [CALLBACK])
    with RunningGateway(create_app(settings)) as gateway:
        key = connect_internal(gateway, admin, salesforce)
        salesforce.simulator.expire_sessions()
        answer = count(gateway, admin, key)
    assert answer.status_code == 401
    assert "CRMGATE_OAUTH_CLIENTS" in answer.json()["detail"]["message"]


def test_external_refresh_applications_are_told_to_push_a_new_token(
    gateways: tuple[RunningGateway, RunningGateway], admin: Account, salesforce: SalesforceSim
) -> None:
    one, _ = gateways
    user = salesforce.simulator.add_user("ext@acme.example", "pw")
    body = {
        "type": "Salesforce",
        "authorization": "oAuth-external-refresh",
        "credential": {
            "instance_url": salesforce.base_url,
            "access_token": salesforce.simulator.issue_session(user),
        },
    }
    with one.client(admin.key) as client:
        key = client.post("/v1/application", json=body).json()["key"]
    before = refreshes(salesforce)
    salesforce.simulator.expire_sessions()
    answer = count(one, admin, key)
    assert answer.status_code == 401
    assert "PUT /v1/application/{key}" in answer.json()["detail"]["message"]
    assert refreshes(salesforce) == before  # never refreshed by crmgate


def test_the_oauth_client_secret_is_not_shown_by_the_settings(oauth_settings: Settings) -> None:
    assert CLIENT_SECRET not in json.dumps(oauth_settings.model_dump(mode="json"))
    assert CLIENT_SECRET not in repr(oauth_settings)


@pytest.mark.parametrize("rotate", [False, True], ids=["kept", "rotated"])
def test_a_gateway_killed_in_the_middle_of_a_refresh(
    oauth_settings: Settings,
    gateways: tuple[RunningGateway, RunningGateway],
    admin: Account,
    salesforce: SalesforceSim,
    rotate: bool,
) -> None:
    """A gateway process is SIGKILLed while the CRM is answering its refresh. Its transaction
    (and row lock) dies with its connection; the next request refreshes again from the stored
    refresh token. If the CRM kept that token valid (Salesforce's default) the application goes
    on working; if the CRM rotated it, the new one died with the process: the application is
    marked unauthorized and must be authorized again (nothing else is safe)."""
    import contextlib
    import signal
    import threading

    one, _ = gateways
    key = connect_internal(one, admin, salesforce)
    assert count(one, admin, key).status_code == 200
    doomed, base = start_process(oauth_settings, salesforce)
    try:
        salesforce.simulator.rotate_refresh_tokens = rotate
        salesforce.simulator.refresh_delay = 30.0
        salesforce.simulator.expire_sessions()
        before = refreshes(salesforce)
        url = f"{base}/v1/application/entity/contact/count"
        headers = {"X-API2CRM-USER-KEY": admin.key, APP: key}

        def doomed_request() -> None:
            with contextlib.suppress(httpx.TransportError):  # the process dies under it
                httpx.get(url, headers=headers, timeout=60)

        threading.Thread(target=doomed_request, daemon=True).start()
        deadline = time.monotonic() + 20
        while refreshes(salesforce) == before:  # the refresh is at the CRM
            assert time.monotonic() < deadline, doomed.stderr
            time.sleep(0.05)
        os.killpg(doomed.process.pid, signal.SIGKILL)
        doomed.process.wait(timeout=20)
    finally:
        doomed.stop()
    salesforce.simulator.refresh_delay = 0.0
    after = count(one, admin, key)
    if not rotate:
        assert after.status_code == 200, after.text  # refreshed again with the kept token
        assert count(one, admin, key).status_code == 200
    else:
        assert after.status_code == 401, after.text
        assert "authorize the application again" in after.json()["detail"]["message"]
        with one.client(admin.key) as client:
            assert client.get(f"/v1/application/{key}").json()["is_authorized"] is False


def test_a_token_known_to_expire_is_refreshed_before_it_is_used(
    gateways: tuple[RunningGateway, RunningGateway], admin: Account, salesforce: SalesforceSim
) -> None:
    import time

    one, _ = gateways
    key = connect_internal(one, admin, salesforce)
    salesforce.simulator.report_expires_in = True  # as CRMs other than Salesforce do
    salesforce.simulator.tokens.access_lifetime = 2  # refreshed in its second half: after 1 s
    salesforce.simulator.expire_sessions()
    assert count(one, admin, key).status_code == 200  # refreshed: now it says when it expires
    time.sleep(1.3)
    salesforce.simulator.tokens.access_lifetime = 7200
    before = refreshes(salesforce)
    queries = sum(1 for _, path in salesforce.simulator.calls if "/query" in path)
    assert count(one, admin, key).status_code == 200
    assert refreshes(salesforce) - before == 1  # refreshed ahead of the CRM refusing it
    assert sum(1 for _, path in salesforce.simulator.calls if "/query" in path) == queries + 1
    assert count(one, admin, key).status_code == 200
    assert refreshes(salesforce) - before == 1  # far from expiry now: nothing to do


def test_a_failing_refresh_is_tried_once_not_by_every_waiting_request(
    gateways: tuple[RunningGateway, RunningGateway],
    admin: Account,
    salesforce: SalesforceSim,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    one, _ = gateways
    key = connect_internal(one, admin, salesforce)
    assert count(one, admin, key).status_code == 200
    salesforce.simulator.expire_sessions()
    salesforce.simulator.token_outage = True
    before = refreshes(salesforce)
    with ThreadPoolExecutor(max_workers=10) as pool:
        answers = list(pool.map(lambda _: count(one, admin, key), range(10)))
    assert [a.status_code for a in answers] == [502] * 10
    assert refreshes(salesforce) - before == 1  # the others got its answer
    salesforce.simulator.token_outage = False
    assert count(one, admin, key).status_code == 502  # still remembered for a little while
    assert refreshes(salesforce) - before == 1
    monkeypatch.setattr("crmgate.tokens.RETRY_AFTER_FAILURE", 0.0)
    assert count(one, admin, key).status_code == 200  # then tried again, and it works
    with one.client(admin.key) as client:
        assert client.get(f"/v1/application/{key}").json()["is_authorized"] is True


def test_an_early_refresh_that_fails_falls_back_on_the_still_valid_token(
    oauth_settings: Settings,
    gateways: tuple[RunningGateway, RunningGateway],
    admin: Account,
    salesforce: SalesforceSim,
) -> None:
    import asyncio
    import time

    from crmgate.runtime import Services
    from crmgate.store.applications import Credentials

    one, _ = gateways
    key = connect_internal(one, admin, salesforce)

    async def expiring_soon() -> None:
        async with Services.open(oauth_settings) as services:
            store = services.applications.store
            _, held = await store.credentials(admin.organisation_id, key)
            soon = {**held.derived, "expires_at": str(int(time.time()) + 20)}
            await store.update(
                admin.organisation_id, key, credentials=Credentials(held.fields, soon)
            )

    asyncio.run(expiring_soon())
    salesforce.simulator.token_outage = True
    before = refreshes(salesforce)
    assert count(one, admin, key).status_code == 200  # the current token still works
    assert refreshes(salesforce) - before == 1
