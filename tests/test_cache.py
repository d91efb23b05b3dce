"""The warm path's cache (crmgate/cache.py) over real HTTP on both store backends: a warm request
makes no database query and no vault decrypt; a change is seen at once by the gateway that made
it and within one second by another gateway on the same database; entries end at their TTL
even when no invalidation arrives; the size is bounded; no secret shows in its repr or logs."""

from __future__ import annotations

import asyncio
import base64
import collections
import itertools
import logging
import time
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from pydantic import SecretStr
from sqlalchemy import event

from conftest import Account, RunningGateway, SalesforceSim, create_account
from crmgate import audit
from crmgate.api.app import create_app
from crmgate.cache import WarmCache, application_subject
from crmgate.runtime import Services
from crmgate.settings import OAuthClient, Settings
from crmgate.store.accounts import Principal, Role
from crmgate.store.db import session_factory
from test_tokens import CALLBACK, CLIENT_ID, CLIENT_SECRET, connect_internal, refreshes

APP = "X-API2CRM-APPLICATION-KEY"
COUNT = "/v1/application/entity/contact/count"
LIST = "/v1/application/entity/contact/list"
LONG_TTL = 30.0  # longer than any wait below: what ends an entry there is an invalidation


def tuned(settings: Settings, **changes: Any) -> Settings:
    # no periodic counter flush while statements are counted: it is one write per interval
    # (CRMGATE_USAGE_FLUSH_INTERVAL), whatever the traffic, not one per request
    return settings.model_copy(update={"usage_flush_interval": 3600.0, **changes})


def services_of(app: Any) -> Services:
    while not isinstance(app, FastAPI):
        app = app.app
    services: Services = app.state.services
    return services


class Gateway:
    """A running gateway, its Services, and what it sends to the database and decrypts on behalf
    of each request: by the request id the middleware binds (crmgate.audit.current()), so that
    background work (the cache's poll, counter flushes, the audit trail's anchors) is not
    counted as a request's."""

    def __init__(self, running: RunningGateway, app: Any) -> None:
        self.running = running
        self.services = services_of(app)
        self.statements: collections.Counter[str] = collections.Counter()
        self.decrypts: collections.Counter[str] = collections.Counter()
        self._ids = itertools.count()
        event.listen(self.services.engine.sync_engine, "before_cursor_execute", self._sent)
        vault = self.services.vault
        decrypt = vault.decrypt

        def counted(*args: Any, **kwargs: Any) -> bytes:
            self.decrypts[_request_id()] += 1
            return decrypt(*args, **kwargs)

        vault.decrypt = counted  # type: ignore[method-assign]

    def _sent(self, *_: Any) -> None:
        self.statements[_request_id()] += 1

    def client(self, key: str) -> httpx.Client:
        return self.running.client(key)

    def call(
        self, key: str, application: str, method: str = "GET", path: str = COUNT, **kwargs: Any
    ) -> tuple[httpx.Response, int, int]:
        """The answer, and the statements sent and credentials decrypted to make it."""
        request_id = f"t{next(self._ids)}"
        headers = {"X-Request-ID": request_id, APP: application}
        with self.client(key) as client:
            response = client.request(method, path, headers=headers, **kwargs)
        return response, self.statements[request_id], self.decrypts[request_id]

    def warm(self, key: str, application: str) -> None:
        """Requests until one is answered from the cache (its first poll placed it in the log)."""
        deadline = time.monotonic() + 20  # generous: a loaded machine (CI) polls slowly
        while True:
            response, statements, decrypts = self.call(key, application)
            assert response.status_code == 200, response.text
            if statements == decrypts == 0:
                return
            assert time.monotonic() < deadline, "the cache never answered"
            time.sleep(0.05)


def _request_id() -> str:
    context = audit.current()
    return (context.request_id if context else None) or "-"


@pytest.fixture
def gateway_factory(
    crm_settings: Settings,
) -> Iterator[Callable[..., Gateway]]:
    running: list[RunningGateway] = []

    def start(**changes: Any) -> Gateway:
        app = create_app(tuned(crm_settings, **changes))
        gateway = RunningGateway(app).__enter__()
        running.append(gateway)
        return Gateway(gateway, app)

    yield start
    for gateway in reversed(running):
        gateway.__exit__(None, None, None)


@pytest.fixture
def admin(crm_settings: Settings) -> Account:
    return create_account(crm_settings)


def connect_external(gateway: Gateway, admin: Account, sim: SalesforceSim) -> tuple[str, str]:
    """An oAuth-external-refresh Salesforce application: its key and its user's id at the CRM."""
    user = sim.simulator.add_user(f"u{len(sim.simulator.users)}@acme.example", "pw")
    credential = {"instance_url": sim.base_url, "access_token": sim.simulator.issue_session(user)}
    body = {
        "type": "Salesforce",
        "authorization": "oAuth-external-refresh",
        "credential": credential,
    }
    with gateway.client(admin.key) as client:
        created = client.post("/v1/application", json=body)
    assert created.status_code == 201, created.text
    return str(created.json()["key"]), user.username


def within_a_second(check: Callable[[], bool]) -> float:
    """Seconds until ``check()`` holds; fails after one second."""
    started = time.monotonic()
    while not check():
        assert time.monotonic() - started < 1.0, "not seen within one second"
        time.sleep(0.02)
    return time.monotonic() - started


def status(gateway: Gateway, key: str, application: str | None = None, path: str = COUNT) -> int:
    with gateway.client(key) as client:
        headers = {APP: application} if application else {}
        return client.get(path, headers=headers).status_code


# ---- the warm path -------------------------------------------------------------------------------


def test_a_warm_request_makes_no_database_query_and_no_decrypt(
    gateway_factory: Callable[..., Gateway], admin: Account, salesforce: SalesforceSim
) -> None:
    gateway = gateway_factory(cache_ttl=LONG_TTL)
    application, _ = connect_external(gateway, admin, salesforce)
    cold, statements, decrypts = gateway.call(admin.key, application)
    assert cold.status_code == 200 and statements > 0 and decrypts >= 1  # what the cache saves
    gateway.warm(admin.key, application)
    passthrough = {"method": "GET", "path": "query?q=SELECT%20Name%20FROM%20Account"}
    for _ in range(10):
        for method, path, kwargs in (
            ("GET", COUNT, {}),
            ("GET", LIST, {"params": {"page_size": 5}}),
            ("POST", "/v1/application/request", {"json": passthrough}),
        ):
            answer, statements, decrypts = gateway.call(
                admin.key, application, method, path, **kwargs
            )
            assert answer.status_code in (200, 201), answer.text
            assert (statements, decrypts) == (0, 0), path


def test_without_the_cache_every_request_reads_the_database(
    gateway_factory: Callable[..., Gateway], admin: Account, salesforce: SalesforceSim
) -> None:
    gateway = gateway_factory(cache_ttl=0)  # CRMGATE_CACHE_TTL=0: no cache
    application, _ = connect_external(gateway, admin, salesforce)
    for _ in range(3):
        answer, statements, decrypts = gateway.call(admin.key, application)
        assert answer.status_code == 200
        assert statements >= 2 and decrypts >= 1  # the key and the application, each time


def test_an_entry_ends_at_its_ttl_and_is_read_once_again(
    gateway_factory: Callable[..., Gateway], admin: Account, salesforce: SalesforceSim
) -> None:
    gateway = gateway_factory(cache_ttl=0.5)
    application, _ = connect_external(gateway, admin, salesforce)
    gateway.warm(admin.key, application)
    time.sleep(0.6)
    answer, statements, decrypts = gateway.call(admin.key, application)
    assert answer.status_code == 200
    # read again, once: the authorization check and the route share the read
    assert statements > 0 and decrypts == 1


def test_the_cache_holds_at_most_its_size(
    gateway_factory: Callable[..., Gateway], admin: Account, salesforce: SalesforceSim
) -> None:
    gateway = gateway_factory(cache_ttl=LONG_TTL, cache_size=2)
    first, second, third = (connect_external(gateway, admin, salesforce)[0] for _ in range(3))
    gateway.warm(admin.key, first)
    gateway.warm(admin.key, second)

    def decrypts(application: str) -> int:
        answer, _, decrypted = gateway.call(admin.key, application)
        assert answer.status_code == 200
        return decrypted

    assert decrypts(first) == decrypts(second) == 0  # two fit
    assert decrypts(third) == 1
    assert decrypts(first) == 1  # the least recently used went
    assert "applications=2" in repr(gateway.services.cache)


# ---- invalidation in the gateway that made the change --------------------------------------------


def test_a_revoked_or_disabled_key_is_refused_at_once_by_the_same_gateway(
    gateway_factory: Callable[..., Gateway], admin: Account, salesforce: SalesforceSim
) -> None:
    gateway = gateway_factory(cache_ttl=LONG_TTL)
    application, _ = connect_external(gateway, admin, salesforce)
    with gateway.client(admin.key) as client:
        restricted = client.post("/v1/key", json={"permissions": {"contact": ["read"]}}).json()
        member = client.post("/v1/user", json={"name": "Mo", "email": "mo@acme.example"}).json()
    gateway.warm(restricted["user_key"], application)
    gateway.warm(member["user_key"], application)
    with gateway.client(admin.key) as client:
        assert client.delete(f"/v1/key/{restricted['id']}").status_code == 204
        assert status(gateway, restricted["user_key"], application) == 401
        # a role taken away: the member's cached principal goes with it
        with gateway.client(member["user_key"]) as as_member:
            made = as_member.post(
                "/v1/application/entity/contact",
                headers={APP: application},
                json={"last_name": "Before"},
            )
            assert made.status_code == 201, made.text
        demoted = client.put(f"/v1/user/{member['key']}", json={"roles": ["viewer"]})
        assert demoted.status_code == 200, demoted.text
        with gateway.client(member["user_key"]) as as_viewer:
            refused = as_viewer.post(
                "/v1/application/entity/contact",
                headers={APP: application},
                json={"last_name": "After"},
            )
        assert refused.status_code == 403 and "viewer" in refused.text
        disabled = client.put(f"/v1/user/{member['key']}", json={"status": "disabled"})
        assert disabled.status_code == 200
        assert status(gateway, member["user_key"], application) == 401
        rotated = client.post(f"/v1/user/{admin.user_id}/key").json()["user_key"]
    assert status(gateway, admin.key, application) == 401
    assert status(gateway, rotated, application) == 200


def test_a_changed_or_deleted_application_is_seen_at_once_by_the_same_gateway(
    gateway_factory: Callable[..., Gateway], admin: Account, salesforce: SalesforceSim
) -> None:
    gateway = gateway_factory(cache_ttl=LONG_TTL)
    application, username = connect_external(gateway, admin, salesforce)
    gateway.warm(admin.key, application)
    salesforce.simulator.expire_sessions()
    assert status(gateway, admin.key, application) == 401  # the client must push a new token
    fresh = salesforce.simulator.issue_session(salesforce.simulator.users[username])
    with gateway.client(admin.key) as client:
        pushed = client.put(
            f"/v1/application/{application}", json={"credential": {"access_token": fresh}}
        )
        assert pushed.status_code == 200, pushed.text
        assert status(gateway, admin.key, application) == 200
        assert client.delete(f"/v1/application/{application}").status_code == 204
        assert status(gateway, admin.key, application) == 404


# ---- invalidation in every other process ---------------------------------------------------------


def test_another_gateway_refuses_a_revoked_key_within_one_second(
    gateway_factory: Callable[..., Gateway], admin: Account, salesforce: SalesforceSim
) -> None:
    one = gateway_factory(cache_ttl=LONG_TTL)
    two = gateway_factory(cache_ttl=LONG_TTL)
    application, _ = connect_external(one, admin, salesforce)
    with one.client(admin.key) as client:
        restricted = client.post("/v1/key", json={"permissions": {"contact": ["read"]}}).json()
    two.warm(restricted["user_key"], application)
    two.warm(admin.key, application)
    with one.client(admin.key) as client:
        assert client.delete(f"/v1/key/{restricted['id']}").status_code == 204
    within_a_second(lambda: status(two, restricted["user_key"], application) == 401)
    with one.client(admin.key) as client:
        rotated = client.post(f"/v1/user/{admin.user_id}/key").json()["user_key"]
    within_a_second(lambda: status(two, admin.key, application) == 401)
    assert status(two, rotated, application) == 200


def test_another_gateway_sees_an_application_update_and_delete_within_one_second(
    gateway_factory: Callable[..., Gateway], admin: Account, salesforce: SalesforceSim
) -> None:
    one = gateway_factory(cache_ttl=LONG_TTL)
    two = gateway_factory(cache_ttl=LONG_TTL)
    application, username = connect_external(one, admin, salesforce)
    two.warm(admin.key, application)
    salesforce.simulator.expire_sessions()
    assert status(two, admin.key, application) == 401
    fresh = salesforce.simulator.issue_session(salesforce.simulator.users[username])
    with one.client(admin.key) as client:
        pushed = client.put(
            f"/v1/application/{application}", json={"credential": {"access_token": fresh}}
        )
        assert pushed.status_code == 200, pushed.text
    within_a_second(lambda: status(two, admin.key, application) == 200)
    with one.client(admin.key) as client:
        assert client.delete(f"/v1/application/{application}").status_code == 204
    within_a_second(lambda: status(two, admin.key, application) == 404)


@pytest.fixture
def oauth_gateways(
    crm_settings: Settings, salesforce: SalesforceSim, gateway_factory: Callable[..., Gateway]
) -> Callable[..., Gateway]:
    salesforce.simulator.add_connected_app(CLIENT_ID, CLIENT_SECRET, [CALLBACK])
    clients = {
        "Salesforce": OAuthClient(client_id=CLIENT_ID, client_secret=SecretStr(CLIENT_SECRET))
    }
    return lambda **changes: gateway_factory(oauth_clients=clients, **changes)


def test_another_gateway_uses_renewed_credentials_within_one_second(
    oauth_gateways: Callable[..., Gateway], admin: Account, salesforce: SalesforceSim
) -> None:
    one = oauth_gateways(cache_ttl=LONG_TTL)
    two = oauth_gateways(cache_ttl=LONG_TTL)
    application = connect_internal(one.running, admin, salesforce)
    two.warm(admin.key, application)
    before = refreshes(salesforce)  # the flow's own code exchange
    salesforce.simulator.expire_sessions()
    assert status(one, admin.key, application) == 200  # one refreshes
    assert refreshes(salesforce) == before + 1

    def queries() -> int:
        return sum(1 for _, path in salesforce.simulator.calls if path.endswith("/query"))

    def two_uses_the_new_token() -> bool:
        before = queries()
        assert status(two, admin.key, application) == 200
        return queries() - before == 1  # not a 401 on the old token, then the new one

    within_a_second(two_uses_the_new_token)
    assert refreshes(salesforce) == before + 1


def test_a_401_reads_fresh_credentials_even_before_the_invalidation_arrives(
    oauth_gateways: Callable[..., Gateway], admin: Account, salesforce: SalesforceSim
) -> None:
    one = oauth_gateways(cache_ttl=LONG_TTL)
    two = oauth_gateways(cache_ttl=LONG_TTL, cache_poll_interval=3600)  # hears of nothing
    application = connect_internal(one.running, admin, salesforce)
    two.warm(admin.key, application)
    before = refreshes(salesforce)
    salesforce.simulator.expire_sessions()
    assert status(one, admin.key, application) == 200
    assert refreshes(salesforce) == before + 1
    # two's cached token was refreshed away: the CRM's 401 makes it read the row, where it
    # finds one's new token instead of refreshing again
    assert status(two, admin.key, application) == 200
    assert status(two, admin.key, application) == 200
    assert refreshes(salesforce) == before + 1


def test_without_invalidations_an_entry_still_ends_at_its_ttl(
    gateway_factory: Callable[..., Gateway], admin: Account, salesforce: SalesforceSim
) -> None:
    one = gateway_factory(cache_ttl=LONG_TTL)
    # two's poll never comes (as when the database refuses it): only the TTL ends its entries
    two = gateway_factory(cache_ttl=1.0, cache_poll_interval=3600)
    application, _ = connect_external(one, admin, salesforce)
    with one.client(admin.key) as client:
        restricted = client.post("/v1/key", json={"permissions": {"contact": ["read"]}}).json()
    two.warm(restricted["user_key"], application)
    with one.client(admin.key) as client:
        assert client.delete(f"/v1/key/{restricted['id']}").status_code == 204
    revoked = time.monotonic()
    while status(two, restricted["user_key"], application) != 401:
        assert time.monotonic() - revoked < 1.5, "outlived its TTL"
        time.sleep(0.05)


# ---- the cache itself ----------------------------------------------------------------------------


def test_an_entry_read_before_an_invalidation_is_not_stored_after_it(settings: Settings) -> None:
    asyncio.run(_read_before_an_invalidation(settings))


async def _read_before_an_invalidation(settings: Settings) -> None:
    async with Services.open(settings) as services:
        cache = WarmCache(session_factory(services.engine), ttl=LONG_TTL)
        await cache.poll()  # placed in the log: ready
        principal = Principal("usr_1", "org_1", Role.ADMIN, "key_1", "cgu_abcd", None)
        ticket = cache.ticket()
        cache.forget(["user:usr_2"])  # a change committed while the read was under way
        cache.keep_principal(b"digest", principal, ticket)
        assert cache.principal(b"digest") is None
        cache.keep_principal(b"digest", principal, cache.ticket())
        assert cache.principal(b"digest") == principal
        cache.forget(["user:usr_1"])
        assert cache.principal(b"digest") is None
        await cache.close()


def test_a_cache_whose_poll_stalls_stops_serving(settings: Settings) -> None:
    asyncio.run(_stalled_poll(settings))


async def _stalled_poll(settings: Settings) -> None:
    """A poll that hangs (a database that does not answer, a pool with no free connection)
    leaves no invalidation applied: after ``stale_after`` the cache serves nothing, and serves
    again once a poll succeeds."""
    async with Services.open(settings) as services:
        cache = WarmCache(session_factory(services.engine), ttl=LONG_TTL, poll_interval=0.05)
        assert cache.stale_after == 1.0
        await cache.poll()
        principal = Principal("usr_1", "org_1", Role.ADMIN, "key_1", "cgu_abcd", None)
        cache.keep_principal(b"digest", principal, cache.ticket())
        assert cache.principal(b"digest") == principal  # and the background poll runs
        polls = cache.poll
        stalled = asyncio.Event()

        async def hang() -> int:
            stalled.set()
            await asyncio.Event().wait()
            return 0

        cache.poll = hang  # type: ignore[method-assign]
        await asyncio.wait_for(stalled.wait(), 5)
        still = time.monotonic()
        while cache.principal(b"digest") is not None:
            assert time.monotonic() - still < cache.stale_after + 0.5, "served while stale"
            await asyncio.sleep(0.05)
        await polls()  # the database answers again
        assert cache.principal(b"digest") == principal
        await cache.close()


def test_invalidations_commit_in_order_and_a_rollback_leaves_none(settings: Settings) -> None:
    asyncio.run(_in_order(settings))


async def _in_order(settings: Settings) -> None:
    async with Services.open(settings) as services:
        sessions = session_factory(services.engine)
        reader = WarmCache(sessions, ttl=LONG_TTL)
        await reader.poll()
        writer = WarmCache.off(sessions)
        with pytest.raises(RuntimeError):
            async with sessions.begin() as session:
                await writer.invalidate(session, application_subject("org_x", "a" * 40))
                raise RuntimeError("the change failed")
        async with sessions.begin() as session:
            await writer.invalidate(session, "user:usr_a", "user:usr_b")
        async with sessions.begin() as session:
            await writer.invalidate(session, "user:usr_c")
        assert await reader.poll() == 3
        assert await reader.poll() == 0
        await reader.close()


def test_no_secret_in_the_cache_repr_or_the_logs(
    gateway_factory: Callable[..., Gateway],
    admin: Account,
    salesforce: SalesforceSim,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    gateway = gateway_factory(cache_ttl=LONG_TTL)
    application, _ = connect_external(gateway, admin, salesforce)
    gateway.warm(admin.key, application)
    with gateway.client(admin.key) as client:
        restricted = client.post("/v1/key", json={"permissions": {"contact": ["read"]}}).json()
        assert client.delete(f"/v1/key/{restricted['id']}").status_code == 204
    cache = gateway.services.cache
    tokens = list(salesforce.simulator.sessions)
    secrets = [admin.key, restricted["user_key"], *tokens]
    secrets += [base64.b64encode(s.encode()).decode() for s in secrets]
    shown = repr(cache) + "\n".join(
        f"{r.name} {r.getMessage()}" for r in caplog.records if r.name.startswith("crmgate")
    )
    assert "principals=" in repr(cache) and "applications=1" in repr(cache)
    for secret in secrets:
        assert secret not in shown
