"""The portal's Applications page and connect links over real HTTP, with Salesforce played by
the simulator: an httpx client that keeps cookies stands in for the browser (the browser
tests are in test_portal_browser_applications.py)."""

from __future__ import annotations

import hashlib
import json
import re
import secrets
import ssl
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

import httpx
import pytest
from sqlalchemy import select, update

from conftest import (
    RunningGateway,
    SalesforceSim,
    loopback_socket,
    make_settings,
    migrate_database,
    with_services,
)
from crmgate.api.app import create_app
from crmgate.oauth import FlowRefused
from crmgate.runtime import Services
from crmgate.settings import Settings
from crmgate.store.accounts import Role
from crmgate.store.db import for_writing
from crmgate.store.models import Application, AuditEvent, ConnectLink, UsageCounter, utcnow
from crmgate.store.usage import application_digest

CLIENT_ID = "crmgate-portal-client"
CLIENT_SECRET = "portal-secret-" + secrets.token_hex(8)
ELSEWHERE = "https://app.example/crm/connected"
PASSWORD = "correct horse battery staple"
APP = "X-API2CRM-APPLICATION-KEY"
CSRF = re.compile(r'name="csrf" value="([^"]+)"')


@dataclass
class Site:
    gateway: RunningGateway
    sim: SalesforceSim
    settings: Settings

    def browser(self) -> httpx.Client:
        """A browser: keeps cookies, trusts the simulator's CA, does not follow redirects."""
        context = ssl.create_default_context(cafile=self.sim.ca_file)
        return httpx.Client(
            base_url=self.gateway.base_url, trust_env=False, timeout=20, verify=context
        )

    def run(self, work: Any) -> Any:
        return with_services(self.settings, work)


@pytest.fixture
def site(tmp_path: Path, salesforce: SalesforceSim) -> Iterator[Site]:
    bound = loopback_socket()
    base = f"http://127.0.0.1:{bound.getsockname()[1]}"
    salesforce.simulator.add_connected_app(
        CLIENT_ID,
        CLIENT_SECRET,
        [f"{base}/authorization/oauth/Salesforce/callback"],
        require_pkce=True,
    )
    salesforce.simulator.add_user("owner@acme.example", "pw", name="Olive Owner")
    salesforce.simulator.auto_approve_user = "owner@acme.example"
    settings = make_settings(
        tmp_path / "data",
        portal_signup="open",
        portal_argon2_memory_kib=8192,
        portal_argon2_time_cost=1,
        platform_overrides=salesforce.overrides(),
        outbound_ca_file=salesforce.ca_file,
        public_url=base,
        oauth_clients={
            "Salesforce": {
                "client_id": CLIENT_ID,
                "client_secret": CLIENT_SECRET,
                "redirects": [ELSEWHERE],
            }
        },
    )
    migrate_database(settings)
    with RunningGateway(create_app(settings), bound) as gateway:
        yield Site(gateway, salesforce, settings)


def csrf(response: httpx.Response) -> str:
    found = CSRF.search(response.text)
    assert found, response.text
    return found.group(1)


def sign_up(browser: httpx.Client, organisation: str = "Acme") -> str:
    """A new organisation with its admin, signed in; returns the admin's user key."""
    token = csrf(browser.get("/portal/sign-up"))
    email = f"ann.{secrets.token_hex(4)}@example.com"
    answer = browser.post(
        "/portal/sign-up",
        data={
            "csrf": token,
            "organisation": organisation,
            "name": "Ann Admin",
            "email": email,
            "password": PASSWORD,
        },
    )
    assert answer.status_code == 200, answer.text
    found = re.search(r'id="new-key" class="key">(cgu_[^<]+)<', answer.text)
    assert found
    return found.group(1)


def post(browser: httpx.Client, page: str, action: str, **fields: Any) -> httpx.Response:
    """Submit a form of ``page`` as the page's own form would (its CSRF token)."""
    return browser.post(action, data={"csrf": csrf(browser.get(page)), **fields})


def follow(browser: httpx.Client, url: str) -> httpx.Response:
    """Follow redirects as a browser does, through the CRM and back, until the portal."""
    response = browser.get(url)
    for _ in range(10):
        location = response.headers.get("location")
        if response.status_code not in (302, 303) or location is None:
            return response
        if "/portal/" in location:
            return response
        response = browser.get(location)
    raise AssertionError("too many redirects")


def continue_url(response: httpx.Response) -> str:
    """The flow's address on the page that sends the browser on to the CRM."""
    assert response.status_code == 200, response.text
    found = re.search(r'id="oauth-continue" href="([^"]+)"', response.text)
    assert found, response.text
    return found.group(1).replace("&amp;", "&")


def fragment(response: httpx.Response, page: str) -> dict[str, str]:
    location = response.headers["location"]
    assert location.split("#")[0] == page, location
    return {k: v[0] for k, v in parse_qs(location.split("#", 1)[1]).items()}


def connect_by_form(browser: httpx.Client, site: Site, description: str = "") -> str:
    user = site.sim.simulator.add_user(f"u{secrets.token_hex(3)}@acme.example", "s3cret")
    answer = post(
        browser,
        "/portal/applications/connect/Salesforce",
        "/portal/applications/connect/Salesforce/user",
        description=description,
        cred_login=user.username,
        cred_password="s3cret",
        cred_security_token=user.security_token,
    )
    assert answer.status_code == 303, answer.text
    key = answer.headers["location"].removeprefix("/portal/applications/").split("?")[0]
    assert re.fullmatch(r"[0-9a-f]{40}", key)
    return key


def events(site: Site, name: str) -> list[AuditEvent]:
    async def work(services: Services) -> list[AuditEvent]:
        async with services.engine.connect() as connection:
            rows = await connection.execute(select(AuditEvent).where(AuditEvent.event == name))
            return list(rows)  # type: ignore[arg-type]

    result: list[AuditEvent] = site.run(work)
    return result


def execute(site: Site, statement: Any) -> None:
    async def work(services: Services) -> None:
        async with for_writing(services.engine).begin() as connection:
            await connection.execute(statement)

    site.run(work)


def add_member(site: Site, organisation: str, role: Role) -> tuple[str, str]:
    """A user of ``role`` in the organisation named ``organisation``, with a portal sign-in."""

    async def work(services: Services) -> tuple[str, str]:
        from crmgate.store.models import Organisation

        async with services.engine.connect() as connection:
            org_id = await connection.scalar(
                select(Organisation.id).where(Organisation.name == organisation)
            )
        email = f"{role.value}.{secrets.token_hex(3)}@example.com"
        created, _ = await services.accounts.create_user(org_id, name="Vic", email=email, role=role)
        user_id = created.id
        hashed = services.portal.passwords.hash(PASSWORD)
        await services.portal.logins.ensure(user_id, email, hashed)
        return email, user_id

    result: tuple[str, str] = site.run(work)
    return result


def sign_in(browser: httpx.Client, email: str) -> None:
    token = csrf(browser.get("/portal/sign-in"))
    answer = browser.post(
        "/portal/sign-in",
        data={"csrf": token, "email": email, "password": PASSWORD, "next": "/portal/"},
    )
    assert answer.status_code == 303 and answer.headers["location"] == "/portal/", answer.text


# ---- connecting from the Applications page ------------------------------------------------------


def test_a_user_form_connects_the_crm_and_the_page_lists_it_as_authorized(site: Site) -> None:
    with site.browser() as browser:
        user_key = sign_up(browser)
        key = connect_by_form(browser, site, description="Sales team")
        listed = browser.get("/portal/applications")
        shown = browser.get(f"/portal/applications/{key}?connected=1")
    assert listed.status_code == 200
    assert key in listed.text and "Sales team" in listed.text and "Authorized" in listed.text
    assert "Your CRM is connected." in shown.text and "Acme Corp (sim)" in shown.text
    with site.gateway.client(user_key) as api:
        contacts = api.get("/v1/application/entity/contact/list", headers={APP: key})
    assert contacts.status_code == 200, contacts.text


def test_refused_credentials_show_the_crms_reason_store_nothing_and_never_echo_a_secret(
    site: Site,
) -> None:
    site.sim.simulator.add_user("bo@acme.example", "s3cret", security_token="TOKEN")
    with site.browser() as browser:
        user_key = sign_up(browser)
        answer = post(
            browser,
            "/portal/applications/connect/Salesforce",
            "/portal/applications/connect/Salesforce/user",
            cred_login="bo@acme.example",
            cred_password="wrong-password-xyz",
        )
    assert answer.status_code == 400
    assert "did not accept these credentials" in answer.text
    assert 'value="bo@acme.example"' in answer.text  # shown again, to correct
    assert "wrong-password-xyz" not in answer.text
    with site.gateway.client(user_key) as api:
        assert api.get("/v1/application/count").json() == {"total": 0}


def test_oauth_from_the_applications_page_stores_the_application_and_returns_to_the_portal(
    site: Site,
) -> None:
    with site.browser() as browser:
        user_key = sign_up(browser)
        started = post(
            browser,
            "/portal/applications/connect/Salesforce",
            "/portal/applications/connect/Salesforce/oauth",
            description="By OAuth",
        )
        url = continue_url(started)
        assert url.startswith("/authorization/oauth/Salesforce/authorize?session=")
        back = follow(browser, url)
        landing = browser.get(back.headers["location"].split("#")[0])
    result = fragment(back, f"{site.gateway.base_url}/portal/applications/connected")
    assert set(result) == {"application_key"}  # tokens never reach the browser
    assert landing.status_code == 200 and "data-oauth-return" in landing.text
    key = result["application_key"]
    with site.gateway.client(user_key) as api:
        shown = api.get(f"/v1/application/{key}").json()
        contacts = api.get("/v1/application/entity/contact/list", headers={APP: key})
    assert shown["authorization"] == "oAuth-internal" and shown["description"] == "By OAuth"
    assert contacts.status_code == 200, contacts.text
    [connected] = events(site, "oauth.connected")
    assert connected.target == key and json.loads(connected.details)["mode"] == "portal"


def test_an_api_session_cannot_send_the_browser_to_a_portal_page(site: Site) -> None:
    with site.browser() as browser:
        user_key = sign_up(browser)
    with site.gateway.client(user_key) as api:
        refused = api.post(
            "/v1/oauth/session",
            json={
                "type": "Salesforce",
                "redirect": f"{site.gateway.base_url}/portal/applications/connected",
            },
        )
    assert refused.status_code == 400 and refused.json()["detail"]["code"] == "NOT_VALID"


@pytest.mark.parametrize(
    "redirect",
    [
        "https://evil.example/portal/applications/connected",
        "{base}.evil.example/portal/applications/connected",
        "{base}/portal/applications/connected?next=https://evil.example",
        "{base}/portal/applications/connected#x",
        "{base}/portal/../v1/application",
        "{base}/portal/%2e%2e/v1/application",
        "{base}/other/page",
        "{base}/portal\\@evil.example/",
    ],
)
def test_a_portal_flow_returns_only_to_this_portals_own_pages(site: Site, redirect: str) -> None:
    target = redirect.format(base=site.gateway.base_url)

    async def work(services: Services) -> None:
        with pytest.raises(FlowRefused):
            services.oauth.check_own_page(target)
        assert services.oauth.check_own_page(
            f"{site.gateway.base_url}/portal/applications/connected"
        )

    site.run(work)


def test_authorizing_again_by_oauth_keeps_the_key_and_replaces_the_tokens(site: Site) -> None:
    with site.browser() as browser:
        user_key = sign_up(browser)
        url = continue_url(
            post(
                browser,
                "/portal/applications/connect/Salesforce",
                "/portal/applications/connect/Salesforce/oauth",
            )
        )
        key = fragment(
            follow(browser, url), f"{site.gateway.base_url}/portal/applications/connected"
        )["application_key"]
        execute(site, update(Application).values(is_authorized=False))
        assert "Expired" in browser.get(f"/portal/applications/{key}").text
        again = post(
            browser, f"/portal/applications/{key}", f"/portal/applications/{key}/authorize"
        )
        back = follow(browser, continue_url(again))
        assert fragment(back, f"{site.gateway.base_url}/portal/applications/connected") == {
            "application_key": key
        }
        shown = browser.get(f"/portal/applications/{key}")
    assert "Expired" not in shown.text and "Authorized" in shown.text
    with site.gateway.client(user_key) as api:
        assert api.get("/v1/application/count").json() == {"total": 1}


def test_the_description_is_edited_and_a_deleted_application_is_gone(site: Site) -> None:
    with site.browser() as browser:
        user_key = sign_up(browser)
        key = connect_by_form(browser, site, "first")
        page = f"/portal/applications/{key}"
        edited = post(browser, page, f"{page}/description", description="Renamed")
        assert edited.status_code == 303
        assert "Renamed" in browser.get(page).text
        deleted = post(browser, page, f"{page}/delete")
        assert deleted.status_code == 303
        assert browser.get(page).status_code == 404
    with site.gateway.client(user_key) as api:
        assert api.get(f"/v1/application/{key}").status_code == 404
    assert [event.target for event in events(site, "application.deleted")] == [key]


@pytest.mark.parametrize("role", [Role.VIEWER, Role.MEMBER])
def test_only_an_admin_changes_applications_as_the_api_requires(site: Site, role: Role) -> None:
    with site.browser() as admin:
        user_key = sign_up(admin)
        key = connect_by_form(admin, site, "kept")
        page = f"/portal/applications/{key}"
    email, _ = add_member(site, "Acme", role)
    with site.browser() as other:
        sign_in(other, email)
        listed = other.get("/portal/applications")
        shown = other.get(page)
        assert listed.status_code == 200 and key in listed.text
        assert "Connect a CRM" not in listed.text and "Delete application" not in shown.text
        assert other.get("/portal/applications/connect").status_code == 403
        assert other.get("/portal/applications/links").status_code == 403
        mine = csrf(shown)
        for action, data in [
            (f"{page}/delete", {}),
            (f"{page}/description", {"description": "hijacked"}),
            (f"{page}/authorize", {}),
            ("/portal/applications/connect/Salesforce/oauth", {}),
            ("/portal/applications/links", {"platform": "Salesforce", "lifetime": "1d"}),
        ]:
            answer = other.post(action, data={"csrf": mine, **data})
            assert answer.status_code == 403, action
    with site.gateway.client(user_key) as api:
        assert api.get(f"/v1/application/{key}").json()["description"] == "kept"


def test_another_organisations_application_and_link_are_not_found(site: Site) -> None:
    with site.browser() as owner:
        owner_key = sign_up(owner, organisation="Acme")
        key = connect_by_form(owner, site, "ours")
        create_link(owner, "Salesforce")

    async def work(services: Services) -> str:
        async with services.engine.connect() as connection:
            found = await connection.scalar(select(ConnectLink.id))
        assert isinstance(found, str)
        return found

    link_id = site.run(work)
    with site.browser() as stranger:
        sign_up(stranger, organisation="Umbrella")
        page = f"/portal/applications/{key}"
        assert stranger.get(page).status_code == 404
        mine = csrf(stranger.get("/portal/applications"))
        for action in (f"{page}/delete", f"{page}/description", f"{page}/authorize"):
            answer = stranger.post(action, data={"csrf": mine, "description": "x"})
            assert answer.status_code == 404, action
        revoke = f"/portal/applications/links/{link_id}/revoke"
        assert stranger.post(revoke, data={"csrf": mine}).status_code == 404
        assert key not in stranger.get("/portal/applications").text
    with site.gateway.client(owner_key) as api:
        assert api.get(f"/v1/application/{key}").json()["description"] == "ours"
    assert site.run(work) == link_id


def test_the_page_says_which_applications_are_expired_or_failing(site: Site) -> None:
    with site.browser() as browser:
        sign_up(browser)
        healthy, expired, failing = (connect_by_form(browser, site, n) for n in "abc")
        execute(
            site, update(Application).where(Application.id == expired).values(is_authorized=False)
        )

        async def work(services: Services) -> None:
            async with for_writing(services.engine).begin() as connection:
                org = await connection.scalar(
                    select(Application.organisation_id).where(Application.id == failing)
                )
                day = utcnow().date()
                await connection.execute(
                    UsageCounter.__table__.insert(),  # type: ignore[attr-defined]
                    [
                        {
                            "organisation_id": org,
                            "day": day,
                            "application_key": application_digest(failing),
                            "requests": 10,
                            "errors": 7,
                            "limited": 0,
                        },
                        {
                            "organisation_id": org,
                            "day": day,
                            "application_key": healthy,
                            "requests": 10,
                            "errors": 2,
                            "limited": 0,
                        },
                    ],
                )

        site.run(work)
        rows = {
            key: browser.get(f"/portal/applications/{key}").text
            for key in (healthy, expired, failing)
        }
    assert 'id="application-state" class="state-ok">Authorized' in rows[healthy]
    assert "Expired: authorize it again" in rows[expired]
    assert "Failing: 7 of 10 calls failed today" in rows[failing]


# ---- connect links ------------------------------------------------------------------------------


def create_link(browser: httpx.Client, *platforms: str, lifetime: str = "1d") -> str:
    answer = browser.post(
        "/portal/applications/links",
        data={
            "csrf": csrf(browser.get("/portal/applications/links")),
            "description": "For Globex",
            "platform": list(platforms),
            "lifetime": lifetime,
        },
    )
    assert answer.status_code == 200, answer.text
    found = re.search(r'id="new-link" class="key">([^<]+)<', answer.text)
    assert found, answer.text
    return found.group(1)


def test_a_link_is_shown_once_and_kept_only_as_a_digest(site: Site) -> None:
    with site.browser() as browser:
        sign_up(browser)
        url = create_link(browser, "Salesforce")
        listed = browser.get("/portal/applications/links")
    token = url.rsplit("/", 1)[1]
    assert url == f"{site.gateway.base_url}/portal/connect/{token}" and token.startswith("cgl_")
    assert (
        token not in listed.text and "For Globex" in listed.text and "Not used yet" in listed.text
    )

    async def work(services: Services) -> list[str]:
        async with services.engine.connect() as connection:
            return list(await connection.scalars(select(ConnectLink.token_hash)))

    assert site.run(work) == [hashlib.sha256(token.encode()).hexdigest()]
    assert len(events(site, "portal.connect_link_created")) == 1


def test_an_anonymous_visitor_connects_a_crm_into_the_organisation_once(site: Site) -> None:
    with site.browser() as admin:
        user_key = sign_up(admin, organisation="Initech")
        url = create_link(admin, "Salesforce")
    crm_user = site.sim.simulator.add_user("cust@globex.example", "pw-123", security_token="T")
    with site.browser() as visitor:
        opened = visitor.get(url)
        assert opened.status_code == 200 and "Initech" in opened.text
        assert "Sign out" not in opened.text  # no account, no portal navigation
        connected = visitor.post(
            f"{url}/Salesforce/user",
            data={
                "csrf": csrf(opened),
                "cred_login": crm_user.username,
                "cred_password": "pw-123",
                "cred_security_token": "T",
            },
        )
        assert connected.status_code == 200, connected.text
        assert "connected to <strong>Initech</strong>" in connected.text
        assert visitor.get(url).status_code == 404  # used up
    with site.gateway.client(user_key) as api:
        [application] = api.get("/v1/application/list").json()
    assert application["description"] == "For Globex"
    [used] = events(site, "portal.connect_link_used")
    assert json.loads(used.details)["application_key"] == application["key"]


def test_a_link_connects_by_oauth_once_even_with_two_flows_started(site: Site) -> None:
    with site.browser() as admin:
        user_key = sign_up(admin, organisation="Initech")
        url = create_link(admin, "Salesforce")
    with site.browser() as visitor, site.browser() as second:
        first_start = continue_url(
            visitor.post(f"{url}/Salesforce/oauth", data={"csrf": csrf(visitor.get(url))})
        )
        second_start = continue_url(
            second.post(f"{url}/Salesforce/oauth", data={"csrf": csrf(second.get(url))})
        )
        first = follow(visitor, first_start)
        second_end = follow(second, second_start)
    done = first.headers["location"].split("#")[0]
    assert re.fullmatch(rf"{site.gateway.base_url}/portal/connect/done/cl_\w+", done), done
    assert "application_key=" in first.headers["location"]
    assert "error=server_error" in second_end.headers["location"]
    with site.browser() as visitor:
        page = visitor.get(done.removeprefix(site.gateway.base_url))
    assert page.status_code == 200 and "Your CRM is connected to" in page.text
    with site.gateway.client(user_key) as api:
        assert api.get("/v1/application/count").json() == {"total": 1}
    assert len(events(site, "oauth.failed")) == 1


def digest_of(url: str) -> str:
    return hashlib.sha256(url.rsplit("/", 1)[1].encode()).hexdigest()


def test_a_revoked_or_expired_link_or_another_crm_does_not_work(site: Site) -> None:
    with site.browser() as admin:
        sign_up(admin)
        revoked, expired, narrow = (create_link(admin, "Salesforce") for _ in range(3))

        async def work(services: Services) -> str:
            async with services.engine.connect() as connection:
                found = await connection.scalar(
                    select(ConnectLink.id).where(ConnectLink.token_hash == digest_of(revoked))
                )
            assert isinstance(found, str)
            return found

        link_id = site.run(work)
        assert (
            f"/portal/applications/links/{link_id}/revoke"
            in admin.get("/portal/applications/links").text
        )
        answer = post(
            admin, "/portal/applications/links", f"/portal/applications/links/{link_id}/revoke"
        )
        assert answer.status_code == 303
        assert link_id not in admin.get("/portal/applications/links").text
    execute(
        site,
        update(ConnectLink)
        .where(ConnectLink.token_hash == digest_of(expired))
        .values(expires_at=utcnow() - timedelta(seconds=1)),
    )
    with site.browser() as visitor:
        assert visitor.get(revoked).status_code == 404
        assert visitor.get(expired).status_code == 404
        assert visitor.get(f"{narrow}/HubSpot").status_code == 404  # not a CRM of the link
        assert visitor.get(narrow).status_code == 200
    assert len(events(site, "portal.connect_link_revoked")) == 1


def test_a_links_form_post_without_its_token_is_refused(site: Site) -> None:
    with site.browser() as admin:
        sign_up(admin)
        url = create_link(admin, "Salesforce")
    with site.browser() as visitor:
        visitor.get(url)
        refused = visitor.post(f"{url}/Salesforce/oauth", data={})
    assert refused.status_code == 403
