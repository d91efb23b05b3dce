"""Rate limits and quotas over real HTTP: per user key, per application, per organisation, bursts
of wrong keys per client address, in memory and shared through Redis by two gateways.

The limits do not depend on the database, so these tests run on SQLite only; every Redis key they
make carries a prefix of its own and is deleted afterwards.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis
from starlette.types import ASGIApp, Receive, Scope, Send

from conftest import (
    Account,
    RunningGateway,
    SalesforceSim,
    create_account,
    make_settings,
    migrate_database,
)
from crmgate.api.app import create_app
from crmgate.limits import STRATEGIES, RateLimits, Verdict
from crmgate.security import keys
from crmgate.settings import Settings
from test_api_applications import connect_external

REDIS_URL = "redis://127.0.0.1:6379/0"
ERROR_TYPE = "http://www.w3.org/Protocols/rfc2616/rfc2616-sec10.html"
APP = "X-API2CRM-APPLICATION-KEY"
PEER = "X-Test-Peer"


def limited_settings(directory: Path, **extra: Any) -> Settings:
    result = make_settings(directory, **extra)
    migrate_database(result)
    return result


def assert_rate_limited(response: httpx.Response, window: int, mentions: str) -> None:
    assert response.status_code == 429, response.text
    body = response.json()
    assert body["type"] == ERROR_TYPE and body["title"] == "Too Many Requests"
    assert body["status"] == 429 and body["detail"]["code"] == "RATE_LIMITED"
    assert mentions in body["detail"]["message"]
    assert body["request_id"] == response.headers["x-request-id"]
    assert 1 <= int(response.headers["retry-after"]) <= window
    assert response.headers["ratelimit-remaining"] == "0"
    assert 1 <= int(response.headers["ratelimit-reset"]) <= window


class PeerFromHeader:
    """Test harness: the TCP peer a request seems to come from, taken from a test header, so
    that one loopback client can play several addresses. crmgate itself trusts no header."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            for name, value in scope["headers"]:
                if name == PEER.lower().encode():
                    scope = {**scope, "client": (value.decode(), 40000)}
        await self.app(scope, receive, send)


@pytest.fixture
def redis_prefix() -> Iterator[str]:
    prefix = f"crmgate-test-{uuid.uuid4().hex[:12]}"
    yield prefix
    client = redis.Redis.from_url(REDIS_URL)
    try:
        keys_made = list(client.scan_iter(f"{prefix}*"))
        if keys_made:
            client.delete(*keys_made)
    finally:
        client.close()


# ---- per user key -------------------------------------------------------------------------------


def test_a_user_key_over_its_limit_gets_429_with_retry_after(tmp_path: Path) -> None:
    # the in-memory default: no Redis configured
    settings = limited_settings(tmp_path / "data", rate_limit_user_key="3/minute;100/day")
    assert settings.redis_url is None
    account = create_account(settings)
    other = create_account(settings, "Globex", "admin@globex.example")
    with RunningGateway(create_app(settings)) as gateway, gateway.client(account.key) as client:
        for remaining in (2, 1, 0):
            response = client.get("/v1/user/list")
            assert response.status_code == 200
            assert response.headers["ratelimit-limit"] == "3"
            assert response.headers["ratelimit-remaining"] == str(remaining)
            assert response.headers["ratelimit-policy"] == "3;w=60, 100;w=86400"
            assert 1 <= int(response.headers["ratelimit-reset"]) <= 60
        refused = client.get("/v1/user/list")
        assert_rate_limited(refused, 60, "the user key's limit of 3 per minute")
        assert refused.headers["ratelimit-limit"] == "3"
        # every route of the key is refused, and another key is not affected
        assert client.get("/v1/platform/list").status_code == 429
        with gateway.client(other.key) as theirs:
            assert theirs.get("/v1/user/list").status_code == 200


@pytest.mark.parametrize("strategy", ["sliding-window-counter", "fixed-window"])
def test_the_other_counting_strategies_limit_too(tmp_path: Path, strategy: str) -> None:
    settings = limited_settings(
        tmp_path / "data", rate_limit_user_key="3/minute", rate_limit_strategy=strategy
    )
    account = create_account(settings)
    with RunningGateway(create_app(settings)) as gateway, gateway.client(account.key) as client:
        statuses = [client.get("/v1/user/count").status_code for _ in range(4)]
        assert statuses == [200, 200, 200, 429]
        assert_rate_limited(client.get("/v1/user/count"), 60, "3 per minute")


def test_refused_requests_are_not_counted(tmp_path: Path) -> None:
    # exact counting: the approximate default would weigh the previous second's hits
    settings = limited_settings(
        tmp_path / "data",
        rate_limit_user_key="2/second;5/minute",
        rate_limit_strategy="moving-window",
    )
    account = create_account(settings)
    with RunningGateway(create_app(settings)) as gateway, gateway.client(account.key) as client:
        statuses = [client.get("/v1/user/count").status_code for _ in range(5)]
        assert statuses == [200, 200, 429, 429, 429]
        refused = client.get("/v1/user/count")
        assert refused.headers["ratelimit-limit"] == "2"  # the second's window refused it
        assert int(refused.headers["retry-after"]) == 1
        assert refused.headers["ratelimit-policy"] == "2;w=1, 5;w=60"
        time.sleep(1.1)
        # the minute's window holds the 2 answered requests, not the 6 attempts
        assert client.get("/v1/user/count").status_code == 200
        assert client.get("/v1/user/count").status_code == 200


def test_limits_are_configured_per_organisation(tmp_path: Path) -> None:
    probe = limited_settings(tmp_path / "probe")
    acme = create_account(probe)
    globex = create_account(probe, "Globex", "admin@globex.example")
    settings = make_settings(
        tmp_path / "probe",
        rate_limit_user_key="4/minute",
        rate_limit_organisations={
            acme.organisation_id: {"user_key": "2/minute"},
            globex.organisation_id: {"user_key": ""},  # no limit at all
        },
    )
    with RunningGateway(create_app(settings)) as gateway:
        with gateway.client(acme.key) as client:
            assert [client.get("/v1/user/count").status_code for _ in range(3)] == [200, 200, 429]
        with gateway.client(globex.key) as client:
            responses = [client.get("/v1/user/count") for _ in range(8)]
            assert {response.status_code for response in responses} == {200}
            assert "ratelimit-limit" not in responses[-1].headers


def test_a_bad_limit_setting_is_refused() -> None:
    with pytest.raises(ValueError, match="not a list of rate limits"):
        make_settings(Path("unused"), rate_limit_user_key="lots/second")
    with pytest.raises(ValueError, match="not a list of rate limits"):
        make_settings(Path("unused"), rate_limit_organisations={"org_x": {"application": "1/x"}})
    with pytest.raises(ValueError, match="moving-window"):
        make_settings(Path("unused"), rate_limit_strategy="leaky")


# ---- per application ----------------------------------------------------------------------------


@pytest.fixture
def crm_limited(tmp_path: Path, salesforce: SalesforceSim) -> Iterator[tuple[RunningGateway, Any]]:
    settings = limited_settings(
        tmp_path / "data",
        platform_overrides=salesforce.overrides(),
        outbound_ca_file=salesforce.ca_file,
        rate_limit_user_key="50/minute",
        rate_limit_application="3/minute;1000/month",
    )
    with RunningGateway(create_app(settings)) as gateway:
        yield gateway, settings


def test_an_application_limit_counts_every_user_of_it(
    crm_limited: tuple[RunningGateway, Settings], salesforce: SalesforceSim
) -> None:
    gateway, settings = crm_limited
    admin: Account = create_account(settings)
    created = connect_external(gateway, admin.key, salesforce)
    assert created.status_code == 201, created.text
    app_key = created.json()["key"]
    with gateway.client(admin.key) as client:
        member = client.post("/v1/user", json={"name": "Mo", "email": "mo@acme.example"})
        member_key = member.json()["user_key"]
        fresh = client.get(f"/v1/application/{app_key}").json()["requests_limit"]
        assert fresh == {  # no retry_after: an absent value is left out
            "is_exceeded": False,
            "type": [
                {"type": "minute", "available": 3, "count": 0, "period": 60},
                {"type": "month", "available": 1000, "count": 0, "period": 2592000},
            ],
        }
        first = client.get("/v1/application/entity/contact/count", headers={APP: app_key})
        assert first.status_code == 200, first.text
        # the application's window is closer to refusing than the key's: the headers show it
        assert first.headers["ratelimit-limit"] == "3"
        assert first.headers["ratelimit-remaining"] == "2"
        assert first.headers["ratelimit-policy"] == "50;w=60, 3;w=60, 1000;w=2592000"
    with gateway.client(member_key) as client:
        for _ in range(2):
            response = client.get("/v1/application/entity/contact/count", headers={APP: app_key})
            assert response.status_code == 200
        refused = client.get("/v1/application/entity/contact/count", headers={APP: app_key})
        assert_rate_limited(refused, 60, "the application's limit of 3 per minute")
        # routes that reach no CRM do not count the application
        assert client.get("/v1/application/list").status_code == 200
    with gateway.client(admin.key) as client:
        refused = client.get("/v1/application/entity/contact/list", headers={APP: app_key})
        assert refused.status_code == 429
        shown = client.get(f"/v1/application/{app_key}").json()["requests_limit"]
        listed = client.get("/v1/application/list").json()[0]["requests_limit"]
    assert shown["is_exceeded"] is True and listed["is_exceeded"] is True
    assert shown["type"][0] == {"type": "minute", "available": 0, "count": 3, "period": 60}
    assert shown["type"][1]["count"] == 3 and shown["type"][1]["available"] == 997
    assert shown["retry_after"] is not None and shown["retry_after"].startswith("20")


# ---- bad keys per client address ----------------------------------------------------------------


def test_bursts_of_wrong_keys_end_in_429_for_their_wrong_keys_only(tmp_path: Path) -> None:
    """One client's failures throttle that address's wrong keys, never a right key from it (a
    shared NAT or proxy): one client cannot deny service to the others."""
    settings = limited_settings(tmp_path / "data", rate_limit_bad_keys="3/minute")
    account = create_account(settings)
    attacker = {PEER: "203.0.113.7"}
    with RunningGateway(PeerFromHeader(create_app(settings))) as gateway:
        with gateway.client() as client:
            # a missing key is no guess: not counted
            for _ in range(5):
                assert client.get("/v1/user/list", headers=attacker).status_code == 401
            for _ in range(3):
                guess = {**attacker, "X-API2CRM-USER-KEY": keys.generate()}
                assert client.get("/v1/user/list", headers=guess).status_code == 401
            wrong = {**attacker, "X-API2CRM-USER-KEY": keys.generate()}
            refused = client.get("/v1/user/list", headers=wrong)
            assert_rate_limited(refused, 60, "too many failed authentications")
            # a right key from the same address is served, again and again
            right = {**attacker, "X-API2CRM-USER-KEY": account.key}
            for _ in range(3):
                assert client.get("/v1/user/list", headers=right).status_code == 200
            # no header moves the guesser to another address
            forwarded = {**wrong, "X-Forwarded-For": "198.51.100.1", "X-Real-IP": "198.51.100.1"}
            assert client.get("/v1/user/list", headers=forwarded).status_code == 429
            # another address's wrong key is a plain 401
            elsewhere = {PEER: "198.51.100.9", "X-API2CRM-USER-KEY": keys.generate()}
            assert client.get("/v1/user/list", headers=elsewhere).status_code == 401


# ---- shared through Redis -----------------------------------------------------------------------


def test_two_gateways_count_one_limit_together_in_redis(tmp_path: Path, redis_prefix: str) -> None:
    shared = {
        "redis_url": REDIS_URL,
        "rate_limit_redis_prefix": redis_prefix,
        "rate_limit_user_key": "4/minute",
        "rate_limit_bad_keys": "2/minute",
    }
    settings = limited_settings(tmp_path / "data", **shared)
    account = create_account(settings)
    with (
        RunningGateway(create_app(settings)) as one,
        RunningGateway(create_app(make_settings(tmp_path / "data", **shared))) as two,
        one.client(account.key) as first,
        two.client(account.key) as second,
    ):
        statuses = [client.get("/v1/user/count").status_code for client in (first, second) * 3]
        assert statuses == [200, 200, 200, 200, 429, 429]
        assert second.get("/v1/user/count").headers["ratelimit-remaining"] == "0"
        # failed authentications add up across gateways too
        for gateway in (one, two):
            with gateway.client(keys.generate()) as guesser:
                assert guesser.get("/v1/user/count").status_code == 401
        with one.client(keys.generate()) as guesser:
            assert guesser.get("/v1/user/count").status_code == 429
    stored = redis.Redis.from_url(REDIS_URL)
    try:
        made = [name.decode() for name in stored.scan_iter(f"{redis_prefix}*")]
    finally:
        stored.close()
    assert made and account.key not in " ".join(made)  # counters carry ids, never a key


def test_an_unreachable_redis_leaves_the_api_up(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    canary = "CANARYredisPassword7"
    settings = limited_settings(
        tmp_path / "data",
        redis_url=f"redis://:{canary}@127.0.0.1:9/0",  # port 9: nothing listens
        rate_limit_user_key="1/minute",
    )
    account = create_account(settings)
    assert canary not in repr(settings)
    caplog.set_level(logging.INFO)
    with RunningGateway(create_app(settings)) as gateway, gateway.client(account.key) as client:
        assert [client.get("/v1/user/count").status_code for _ in range(3)] == [200, 200, 200]
    assert "rate limits are not enforced" in caplog.text
    assert canary not in caplog.text


def test_behind_a_trusted_proxy_each_forwarded_client_is_counted_alone(tmp_path: Path) -> None:
    """The gateway's peer is the operator's load balancer (127.0.0.1 here): the address it
    forwards counts; a client writing its own X-Forwarded-For only adds to the left of it."""
    settings = limited_settings(
        tmp_path / "data", rate_limit_bad_keys="2/minute", trusted_proxies=["127.0.0.0/8"]
    )
    account = create_account(settings)
    with RunningGateway(create_app(settings)) as gateway, gateway.client() as client:

        def as_client(forwarded: str, key: str) -> int:
            headers = {"X-Forwarded-For": forwarded, "X-API2CRM-USER-KEY": key}
            return client.get("/v1/user/list", headers=headers).status_code

        for _ in range(2):
            assert as_client("203.0.113.7", keys.generate()) == 401
        assert as_client("203.0.113.7", keys.generate()) == 429
        assert as_client("203.0.113.7", account.key) == 200  # a right key is never throttled
        # the attacker cannot pose as another client: the proxy appends the real address
        assert as_client("198.51.100.1, 203.0.113.7", keys.generate()) == 429
        assert as_client("198.51.100.1", keys.generate()) == 401  # its neighbour is not counted
        # one IPv6 client holds a /64: the addresses of its /64 share one count
        for host in ("2001:db8:1:2::1", "2001:db8:1:2::2"):
            assert as_client(host, keys.generate()) == 401
        assert as_client("2001:db8:1:2::ffff", keys.generate()) == 429
        assert as_client("2001:db8:1:3::1", keys.generate()) == 401


def test_client_addresses_are_read_only_from_trusted_proxies() -> None:
    from crmgate.api.clients import client_address, networks, throttle_bucket

    trusted = networks(["10.0.0.0/8"])

    def scope(peer: str, forwarded: str | None = None) -> dict[str, Any]:
        headers = [(b"x-forwarded-for", forwarded.encode())] if forwarded else []
        return {"client": (peer, 50000), "headers": headers}

    assert client_address(scope("203.0.113.7", "1.2.3.4")) == "203.0.113.7"  # not a proxy
    assert client_address(scope("10.0.0.5", "1.2.3.4"), trusted) == "1.2.3.4"
    assert client_address(scope("10.0.0.5", "9.9.9.9, 1.2.3.4, 10.0.0.9"), trusted) == "1.2.3.4"
    assert client_address(scope("10.0.0.5", "junk, 1.2.3.4"), trusted) == "1.2.3.4"
    assert client_address(scope("10.0.0.5", "1.2.3.4, junk"), trusted) == "10.0.0.5"
    assert client_address(scope("::ffff:203.0.113.7")) == "203.0.113.7"
    assert client_address({"headers": []}) is None
    assert throttle_bucket(None) is None
    assert throttle_bucket("2001:db8::1") == throttle_bucket("2001:db8::ffff") == "2001:db8::/64"


def test_made_up_application_keys_open_no_counters(tmp_path: Path, redis_prefix: str) -> None:
    settings = limited_settings(
        tmp_path / "data",
        redis_url=REDIS_URL,
        rate_limit_redis_prefix=redis_prefix,
        rate_limit_user_key="100/minute",
        rate_limit_application="100/minute",
    )
    account = create_account(settings)
    with RunningGateway(create_app(settings)) as gateway, gateway.client(account.key) as client:
        for _ in range(5):
            made_up = uuid.uuid4().hex + "00000000"
            answer = client.get(
                "/v1/application/entity/contact/list",
                headers={"X-API2CRM-APPLICATION-KEY": made_up},
            )
            assert answer.status_code == 404
    stored = redis.Redis.from_url(REDIS_URL)
    try:
        made = [name.decode() for name in stored.scan_iter(f"{redis_prefix}*")]
    finally:
        stored.close()
    assert made and not any("app" in name for name in made), made  # the user key's only


# ---- a deprecated API version's own limit, under parallel calls ---------------------------------


def _deprecated(limit: str) -> dict[str, Any]:
    return {"v1": {"status": "deprecated", "deprecated": "2026-11-01", "limits": limit}}


def _burst(
    gateways: list[RunningGateway],
    key: str,
    calls: int,
    path: str = "/v1/user/count",
    headers: dict[str, str] | None = None,
) -> list[httpx.Response]:
    """``calls`` requests of one key at once, spread over the gateways, each on a connection of
    its own, all released together."""

    async def go() -> list[httpx.Response]:
        clients = [
            httpx.AsyncClient(
                base_url=gateway.base_url,
                headers={"X-API2CRM-USER-KEY": key, **(headers or {})},
                timeout=30,
                trust_env=False,
                limits=httpx.Limits(max_connections=calls),
            )
            for gateway in gateways
        ]
        try:
            return list(
                await asyncio.gather(*(clients[n % len(clients)].get(path) for n in range(calls)))
            )
        finally:
            for client in clients:
                await client.aclose()

    return asyncio.run(go())


def test_a_deprecated_versions_limit_admits_exactly_its_quota_of_parallel_calls(
    tmp_path: Path,
) -> None:
    # the in-memory default; calls that were admitted and then failed (404) count too
    settings = limited_settings(tmp_path / "data", api_versions=_deprecated("8/minute"))
    account = create_account(settings)
    with RunningGateway(create_app(settings)) as gateway:
        with gateway.client(account.key) as client:
            for _ in range(2):
                assert client.get("/v1/user/usr_" + "0" * 22).status_code == 404
        answers = _burst([gateway], account.key, 30)
    statuses = sorted(answer.status_code for answer in answers)
    assert statuses == [200] * 6 + [429] * 24, statuses
    for refused in (a for a in answers if a.status_code == 429):
        assert_rate_limited(refused, 60, "the deprecated API v1's limit of 8 per minute")
        assert refused.headers["deprecation"]


def test_a_deprecated_versions_limit_holds_across_gateways_in_redis(
    tmp_path: Path, redis_prefix: str
) -> None:
    shared = {
        "redis_url": REDIS_URL,
        "rate_limit_redis_prefix": redis_prefix,
        "api_versions": _deprecated("7/minute"),
    }
    settings = limited_settings(tmp_path / "data", **shared)
    account = create_account(settings)
    with (
        RunningGateway(create_app(settings)) as one,
        RunningGateway(create_app(make_settings(tmp_path / "data", **shared))) as two,
    ):
        answers = _burst([one, two], account.key, 30)
    statuses = sorted(answer.status_code for answer in answers)
    assert statuses == [200] * 7 + [429] * 23, statuses
    stored = redis.Redis.from_url(REDIS_URL)
    try:
        made = [name.decode() for name in stored.scan_iter(f"{redis_prefix}*")]
    finally:
        stored.close()
    assert any("version" in name for name in made), made
    assert account.key not in " ".join(made)  # counters carry ids, never a key


MIGRATE = "https://docs.example/migrate-to-v2"


@pytest.mark.parametrize("counted_in", ["memory", "redis"])
def test_calls_a_deprecated_versions_limit_refuses_spend_nothing_of_the_key_or_application(
    tmp_path: Path, salesforce: SalesforceSim, redis_prefix: str, counted_in: str
) -> None:
    crm = {"platform_overrides": salesforce.overrides(), "outbound_ca_file": salesforce.ca_file}
    # set up on a gateway where v1 is current, counting in its own memory: nothing of it shows
    setup = limited_settings(tmp_path / "data", **crm)
    admin = create_account(setup)
    with RunningGateway(create_app(setup)) as current:
        created = connect_external(current, admin.key, salesforce)
        assert created.status_code == 201, created.text
        app_key = created.json()["key"]
        with current.client(admin.key) as client:
            member = client.post("/v1/user", json={"name": "Mo", "email": "mo@acme.example"})
            member_key = member.json()["user_key"]
    shared: dict[str, Any] = {
        **crm,
        "api_versions": {"v1": {**_deprecated("10/second")["v1"], "link": MIGRATE}},
        "rate_limit_strategy": "moving-window",  # exact: the version's second frees entirely
        "rate_limit_user_key": "19/minute",
        "rate_limit_application": "18/minute",
    }
    if counted_in == "redis":
        shared |= {"redis_url": REDIS_URL, "rate_limit_redis_prefix": redis_prefix}
    apps = [create_app(make_settings(tmp_path / "data", **shared))]
    if counted_in == "redis":  # two gateways, one count
        apps.append(create_app(make_settings(tmp_path / "data", **shared)))
    with contextlib.ExitStack() as stack:
        gateways = [stack.enter_context(RunningGateway(app)) for app in apps]
        answers = _burst(
            gateways, admin.key, 24, "/v1/application/entity/contact/count", {APP: app_key}
        )
        admitted = [answer for answer in answers if answer.status_code != 429]
        # the version's limit admits 10 a second (a little more if the burst outlasts a second)
        assert 10 <= len(admitted) <= 16, [answer.status_code for answer in answers]
        assert {answer.status_code for answer in admitted} == {200}, admitted[0].text
        for refused in (answer for answer in answers if answer.status_code == 429):
            assert_rate_limited(refused, 1, "the deprecated API v1's limit of 10 per second")
            message = refused.json()["detail"]["message"]
            assert message.endswith(f", or move to a current version (see {MIGRATE})"), message
            assert f"<{MIGRATE}>" in refused.headers["link"]
        time.sleep(1.2)  # the version's second frees; the key's and the application's minute not
        with gateways[0].client(admin.key) as client:
            shown = client.get(f"/v1/application/{app_key}")
        with gateways[-1].client(member_key) as client:
            reached = client.get("/v1/application/entity/contact/count", headers={APP: app_key})
    # the key's minute holds the admitted calls and this one, not the refused ones: it is now
    # the window with least room (the version's has 9 left), so the headers show it
    assert shown.status_code == 200, shown.text
    assert shown.headers["ratelimit-limit"] == "19"
    assert shown.headers["ratelimit-remaining"] == str(19 - len(admitted) - 1)
    live = shown.json()["requests_limit"]["type"]
    assert live == [
        {"type": "minute", "available": 18 - len(admitted), "count": len(admitted), "period": 60}
    ]
    # another key of the organisation reaches the application: its minute holds the admitted
    # calls and this one
    assert reached.status_code == 200, reached.text
    assert reached.headers["ratelimit-limit"] == "18"
    assert reached.headers["ratelimit-remaining"] == str(18 - len(admitted) - 1)


def test_wrong_or_missing_keys_spend_nothing_of_a_deprecated_versions_limit(
    tmp_path: Path,
) -> None:
    settings = limited_settings(
        tmp_path / "data", api_versions=_deprecated("3/minute"), rate_limit_strategy="moving-window"
    )
    account = create_account(settings)
    mistyped = account.key[:-1] + ("B" if account.key.endswith("A") else "A")  # bad checksum
    with RunningGateway(create_app(settings)) as gateway:
        for key in (None, "nonsense", mistyped, keys.generate()):
            with gateway.client(key) as stranger:
                for _ in range(3):
                    refused = stranger.get("/v1/user/count")
                    assert refused.status_code == 401, refused.text
                    assert "ratelimit-limit" not in refused.headers
        with gateway.client(account.key) as client:
            answers = [client.get("/v1/user/count") for _ in range(4)]
    assert [answer.status_code for answer in answers] == [200, 200, 200, 429]
    assert [answer.headers["ratelimit-remaining"] for answer in answers] == ["2", "1", "0", "0"]
    assert_rate_limited(answers[-1], 60, "the deprecated API v1's limit of 3 per minute")


def test_only_a_refusal_by_the_versions_own_limit_points_to_a_current_version(
    tmp_path: Path,
) -> None:
    settings = limited_settings(
        tmp_path / "data",
        api_versions={"v1": {**_deprecated("3/minute")["v1"], "link": MIGRATE}},
        rate_limit_user_key="2/second",
        rate_limit_strategy="moving-window",
    )
    account = create_account(settings)
    with RunningGateway(create_app(settings)) as gateway, gateway.client(account.key) as client:
        statuses = [client.get("/v1/user/count").status_code for _ in range(2)]
        by_key = client.get("/v1/user/count")  # the key's second is full, the version has room
        time.sleep(1.1)
        assert client.get("/v1/user/count").status_code == 200
        by_version = client.get("/v1/user/count")
    assert statuses == [200, 200]
    assert_rate_limited(by_key, 1, "the user key's limit of 2 per second")
    assert by_key.json()["detail"]["message"].endswith("is exceeded; retry in 1 seconds")
    assert_rate_limited(by_version, 60, "the deprecated API v1's limit of 3 per minute")
    assert by_version.json()["detail"]["message"] == (
        "the deprecated API v1's limit of 3 per minute is exceeded; retry in "
        f"{by_version.headers['retry-after']} seconds, or move to a current version "
        f"(see {MIGRATE})"
    )


def test_a_burst_wider_than_the_redis_pool_is_still_counted(redis_prefix: str) -> None:
    # 150 requests at once in one process, each counting in four windows: 600 counts in flight
    # for 100 connections. They wait for a connection; none fails open and goes uncounted.
    quota = "120/minute;100000/day;1000000/month;10000000/year"

    async def burst() -> list[bool]:
        limits = RateLimits(
            user_key=quota,
            application="",
            bad_keys="",
            redis_url=REDIS_URL,
            redis_prefix=redis_prefix,
        )
        try:
            verdicts = await asyncio.gather(
                *(limits.hit_request("org_burst", "key_burst") for _ in range(150))
            )
        finally:
            await limits.close()
        return [(verdict.allowed, bool(verdict.windows)) for verdict in verdicts]

    verdicts = asyncio.run(burst())
    assert verdicts.count((True, True)) == 120  # admitted, and counted
    assert verdicts.count((False, True)) == 30  # refused by the full minute


# ---- under contention: a verdict is the one it was decided on ------------------------------------

# Many clients that ignore Retry-After, on a 1-second window: places free all the time (a sliding
# counter's previous window decays, a moving window's oldest entries age out, a fixed window
# turns), so now and then a request refused by its hit (a parallel request took the last place
# since its look) is refused by a window that a read a moment later finds with room again. A
# verdict built from that read named no full window, and its RateLimit fields raised: a 500.


def _hammer(gateways: list[RunningGateway], key: str, clients: int, seconds: float) -> list[int]:
    """``clients`` loops of one key, spread over the gateways, each sending its next request as
    soon as the last is answered, for ``seconds``: the statuses of every answer. A 429 is
    checked as it comes (the RateLimit fields are those of the window that refused it)."""

    async def go() -> list[int]:
        statuses: list[int] = []
        end = time.monotonic() + seconds
        sessions = [
            httpx.AsyncClient(
                base_url=gateway.base_url,
                headers={"X-API2CRM-USER-KEY": key},
                timeout=30,
                trust_env=False,
                limits=httpx.Limits(max_connections=clients),
            )
            for gateway in gateways
        ]

        async def loop(session: httpx.AsyncClient) -> None:
            while time.monotonic() < end:
                answer = await session.get("/v1/user/count")
                statuses.append(answer.status_code)
                if answer.status_code == 429:
                    assert_rate_limited(answer, 1, "the user key's limit of 30 per second")

        try:
            await asyncio.gather(*(loop(sessions[n % len(sessions)]) for n in range(clients)))
        finally:
            for session in sessions:
                await session.aclose()
        return statuses

    return asyncio.run(go())


@pytest.mark.parametrize("counted_in", ["memory", "redis"])
def test_clients_ignoring_retry_after_get_only_200_and_429(
    tmp_path: Path, redis_prefix: str, counted_in: str
) -> None:
    shared: dict[str, Any] = {
        "rate_limit_user_key": "30/second",
        "rate_limit_strategy": "sliding-window-counter",  # the default, the most affected
    }
    if counted_in == "redis":
        shared |= {"redis_url": REDIS_URL, "rate_limit_redis_prefix": redis_prefix}
    settings = limited_settings(tmp_path / "data", **shared)
    account = create_account(settings)
    apps = [create_app(settings)]
    if counted_in == "redis":  # two gateways, one count: their requests interleave for real
        apps.append(create_app(make_settings(tmp_path / "data", **shared)))
    with contextlib.ExitStack() as stack:
        gateways = [stack.enter_context(RunningGateway(app)) for app in apps]
        statuses = _hammer(gateways, account.key, 50, 3.0)
    assert {200, 429} <= set(statuses), statuses  # there was contention
    assert set(statuses) == {200, 429}, sorted(set(statuses))


@pytest.mark.parametrize("counted_in", ["memory", "redis"])
@pytest.mark.parametrize("strategy", sorted(STRATEGIES))
def test_every_verdict_under_contention_names_the_windows_it_was_decided_on(
    redis_prefix: str, counted_in: str, strategy: str
) -> None:
    # Below HTTP the race is met dozens of times a second (over HTTP, a few times a minute):
    # 50 tasks of one key and one application call without pause for a second and a half, so
    # that the 1-second windows turn (a Redis sliding counter's first window has no previous).
    async def contend() -> list[Verdict]:
        limits = RateLimits(
            user_key="200/second",
            application="150/second;1000000/day",
            bad_keys="",
            strategy=strategy,
            redis_url=REDIS_URL if counted_in == "redis" else None,
            redis_prefix=redis_prefix,
        )
        verdicts: list[Verdict] = []
        end = time.monotonic() + 1.5

        async def loop() -> None:
            while time.monotonic() < end:
                verdicts.append(await limits.hit_request("org_race", "key_race", "app_race"))

        try:
            await asyncio.gather(*(loop() for _ in range(50)))
        finally:
            await limits.close()
        return verdicts

    verdicts = asyncio.run(contend())
    assert {True, False} <= {verdict.allowed for verdict in verdicts}
    now = time.time()
    for verdict in verdicts:
        assert len(verdict.windows) == 3  # every window it was decided on, none lost
        headers = verdict.headers(now)  # total: never a ValueError
        if verdict.allowed:
            assert "Retry-After" not in headers
            continue
        assert any(window.exhausted for window in verdict.windows), verdict  # the refusing one
        assert headers["RateLimit-Remaining"] == "0"
        assert headers["Retry-After"] == "1"  # only the 1-second windows ever fill
        assert verdict.refusal() != "a rate limit"
