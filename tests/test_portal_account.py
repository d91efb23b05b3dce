"""The portal's sign-up, sign-in and sessions over real HTTP (no browser): the rules a browser
test cannot see well — no user enumeration, throttling, password rehash, TOTP windows, session
timeouts, cookie attributes, the refusal of a form without its token."""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pyotp
import pytest
from sqlalchemy import select, update
from starlette.requests import Request
from starlette.responses import Response

from conftest import RunningGateway, make_settings, migrate_database, with_services
from crmgate.api.app import create_app
from crmgate.portal import totp, web
from crmgate.portal.passwords import Passwords
from crmgate.settings import Settings
from crmgate.store.models import AuditEvent, PortalLogin, PortalSession, utcnow

PASSWORD = "correct horse battery staple"
FAST = {"portal_argon2_memory_kib": 8192, "portal_argon2_time_cost": 1}


def portal_settings(data_dir: Path, **extra: Any) -> Settings:
    settings = make_settings(data_dir, **({"portal_signup": "open"} | FAST | extra))
    migrate_database(settings)
    return settings


@pytest.fixture
def portal(tmp_path: Path) -> Iterator[RunningGateway]:
    with RunningGateway(create_app(portal_settings(tmp_path / "data"))) as running:
        yield running


def csrf(page: httpx.Response) -> str:
    found = re.search(r'name="csrf" value="([^"]+)"', page.text)
    assert found, page.text[:500]
    return found.group(1)


def sign_up(client: httpx.Client, email: str = "ann@example.com") -> str:
    token = csrf(client.get("/portal/sign-up"))
    answer = client.post(
        "/portal/sign-up",
        data={
            "csrf": token,
            "organisation": "Acme",
            "name": "Ann",
            "email": email,
            "password": PASSWORD,
        },
    )
    assert answer.status_code == 200, answer.text
    key = re.search(r'id="new-key"[^>]*>(cgu_\w+)<', answer.text)
    assert key
    return key.group(1)


def sign_in(client: httpx.Client, email: str, password: str) -> httpx.Response:
    token = csrf(client.get("/portal/sign-in"))
    return client.post(
        "/portal/sign-in",
        data={"csrf": token, "email": email, "password": password, "next": "/portal/"},
    )


def sign_out(client: httpx.Client) -> None:
    token = csrf(client.get("/portal/security"))
    assert client.post("/portal/sign-out", data={"csrf": token}).status_code == 303


def test_a_wrong_password_and_an_unknown_address_get_the_same_answer(
    portal: RunningGateway,
) -> None:
    with portal.client() as client:
        sign_up(client)
        sign_out(client)
        wrong = sign_in(client, "ann@example.com", "not the password at all")
        unknown = sign_in(client, "nobody@example.com", "not the password at all")
    assert wrong.status_code == unknown.status_code == 400

    def message(answer: httpx.Response) -> str:
        found = re.search(r'role="alert">([^<]+)<', answer.text)
        assert found
        return found.group(1)

    assert message(wrong) == message(unknown) == "The e-mail address or password is not right."


def test_sign_in_is_throttled_per_account_whatever_the_password(tmp_path: Path) -> None:
    settings = portal_settings(tmp_path / "data", portal_sign_in_limit_account="3/minute")
    with RunningGateway(create_app(settings)) as running, running.client() as client:
        sign_up(client)
        sign_out(client)
        for _ in range(3):
            assert sign_in(client, "ann@example.com", "wrong password!!").status_code == 400
        refused = sign_in(client, "ann@example.com", PASSWORD)
        assert refused.status_code == 429
        assert "Try again in" in refused.text
        # another account is not locked out by Ann's failures
        with running.client() as other:
            sign_up(other, "bob@example.com")

    async def events(services: Any) -> list[str]:
        async with services.accounts._sessions() as session:
            return list(await session.scalars(select(AuditEvent.event)))

    recorded = with_services(settings, events)
    assert recorded.count("portal.sign_in_failed") == 3
    assert "portal.sign_in_throttled" in recorded


def test_a_form_without_its_token_is_refused_and_changes_nothing(portal: RunningGateway) -> None:
    with portal.client() as client:
        sign_up(client)
        answer = client.post("/portal/security/totp", data={"csrf": "guessed"})
        assert answer.status_code == 403
        cross = client.post(
            "/portal/security/totp",
            data={"csrf": csrf(client.get("/portal/security"))},
            headers={"Sec-Fetch-Site": "cross-site"},
        )
        assert cross.status_code == 403
        other_origin = client.post(
            "/portal/security/totp",
            data={"csrf": csrf(client.get("/portal/security"))},
            headers={"Origin": "http://evil.example"},
        )
        assert other_origin.status_code == 403
        assert 'id="totp-state">Off<' in client.get("/portal/security").text


def test_a_password_is_rehashed_at_sign_in_when_the_parameters_change(tmp_path: Path) -> None:
    settings = portal_settings(tmp_path / "data")
    with RunningGateway(create_app(settings)) as running, running.client() as client:
        sign_up(client)

    async def stored(services: Any) -> str:
        async with services.accounts._sessions() as session:
            return str(await session.scalar(select(PortalLogin.password_hash)))

    before = with_services(settings, stored)
    assert "t=1" in before
    stronger = settings.model_copy(update={"portal_argon2_time_cost": 2})
    with RunningGateway(create_app(stronger)) as running, running.client() as client:
        assert sign_in(client, "ann@example.com", PASSWORD).status_code == 303
    after = with_services(stronger, stored)
    assert "t=2" in after and after != before
    assert Passwords(2, 8192, 4).verify(after, PASSWORD)


def test_an_idle_session_ends(tmp_path: Path) -> None:
    settings = portal_settings(tmp_path / "data", portal_session_idle=600)
    with RunningGateway(create_app(settings)) as running, running.client() as client:
        sign_up(client)
        assert client.get("/portal/").status_code == 200

        async def age(services: Any) -> None:
            async with services.accounts._sessions.begin() as session:
                await session.execute(
                    update(PortalSession).values(last_seen_at=utcnow() - timedelta(seconds=601))
                )

        with_services(settings, age)
        answer = client.get("/portal/")
        assert answer.status_code == 303
        assert answer.headers["location"].startswith("/portal/sign-in")


def test_a_session_ends_at_its_absolute_timeout_however_busy(tmp_path: Path) -> None:
    settings = portal_settings(tmp_path / "data")
    with RunningGateway(create_app(settings)) as running, running.client() as client:
        sign_up(client)

        async def expire(services: Any) -> None:
            async with services.accounts._sessions.begin() as session:
                await session.execute(update(PortalSession).values(expires_at=utcnow()))

        with_services(settings, expire)
        assert client.get("/portal/").status_code == 303


def test_sign_up_follows_the_setting(tmp_path: Path) -> None:
    settings = portal_settings(tmp_path / "data", portal_signup="invite")
    with RunningGateway(create_app(settings)) as running, running.client() as client:
        assert client.get("/portal/sign-up").status_code == 404
        token = csrf(client.get("/portal/sign-in"))
        answer = client.post(
            "/portal/sign-up",
            data={
                "csrf": token,
                "organisation": "A",
                "name": "A",
                "email": "a@example.com",
                "password": PASSWORD,
            },
        )
        assert answer.status_code == 404


def test_session_cookies_are_secure_httponly_samesite_and_host_prefixed_over_tls() -> None:
    def cookie(scheme: str) -> str:
        request = Request(
            {
                "type": "http",
                "scheme": scheme,
                "server": ("portal.example", 443),
                "headers": [],
                "path": "/",
            }
        )
        response = Response()
        web.set_cookie(response, request, web.SESSION_COOKIE, "value")
        return response.headers["set-cookie"]

    secure = cookie("https")
    assert secure.startswith("__Host-crmgate_portal=value;")
    assert "Secure" in secure and "HttpOnly" in secure and "SameSite=lax" in secure
    assert "Path=/" in secure and "Domain" not in secure
    plain = cookie("http")
    assert plain.startswith("crmgate_portal=value;") and "HttpOnly" in plain


def test_a_totp_code_is_accepted_one_step_either_side_and_never_twice() -> None:
    seed = totp.new_seed()
    now = 1_900_000_000.0
    generator = pyotp.TOTP(seed)
    step = int(now // 30)
    for offset in (-1, 0, 1):
        assert totp.accepted_step(seed, generator.at(now + 30 * offset), None, now) == step + offset
    for offset in (-2, 2):
        assert totp.accepted_step(seed, generator.at(now + 30 * offset), None, now) is None
    # a code of a step at or before the last one used is a replay
    assert totp.accepted_step(seed, generator.at(now), step, now) is None
    assert totp.accepted_step(seed, generator.at(now + 30), step, now) == step + 1
    assert totp.accepted_step(seed, "12345", None, now) is None
    assert totp.accepted_step(seed, "abcdef", None, now) is None


def test_the_rfc_6238_sha1_vectors() -> None:
    # RFC 6238 appendix B: the seed "12345678901234567890", 8 digits; ours are 6, the last six
    seed = "GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ"
    for moment, expected in ((59, "94287082"), (1111111109, "07081804"), (2000000000, "69279037")):
        assert totp.accepted_step(seed, expected[-6:], None, moment) == moment // 30


def test_only_portal_paths_are_followed_after_sign_in() -> None:
    assert web.local_path("/portal/credentials") == "/portal/credentials"
    for hostile in (
        "https://evil.example/",
        "//evil.example/portal/",
        "/portal/\\evil",
        "/v1/x",
        "",
    ):
        assert web.local_path(hostile) == "/portal/"
