"""The Applications page and connect links in a real browser (Chromium through Playwright)
against a real `crmgate serve` whose Salesforce is the simulator, with crmgate's own OAuth
client registered there: a CRM connected by OAuth from the Applications page and its contacts
listed through the API; a connect link used by an anonymous visitor. Every page is checked
with axe-core; screenshots for docs/portal.md."""

from __future__ import annotations

import json
import secrets
from collections.abc import Iterator
from dataclasses import dataclass

import httpx
import pytest
from playwright.sync_api import Browser, Page, expect

from browser import accessible, screenshot, sign_up
from conftest import Served, serve_process
from crmsim.salesforce import SalesforceSimulator, platform_overrides
from crmsim.seed import seed_sales_org
from crmsim.server import RunningSimulator
from crmsim.tls import Certificates

CLIENT_ID = "crmgate-portal-browser"
CLIENT_SECRET = "secret-" + secrets.token_hex(8)
APP = "X-API2CRM-APPLICATION-KEY"


@dataclass
class OAuthPortal:
    served: Served
    simulator: SalesforceSimulator


@pytest.fixture(scope="module")
def oauth_portal(
    tmp_path_factory: pytest.TempPathFactory, certificates: Certificates
) -> Iterator[OAuthPortal]:
    """`crmgate serve` with Salesforce pointed at a seeded simulator that approves at once, and
    crmgate's OAuth client for it (registered at the simulator once the port is known)."""
    simulator = SalesforceSimulator(org_name="Globex Sales (sim)")
    owner = simulator.add_user("owner@globex.example", "pw", name="Olive Owner")
    seed_sales_org(simulator.data, owner=owner.id)
    simulator.auto_approve_user = owner.username
    with RunningSimulator(simulator.app(), certificates) as crm:
        environment = {
            "CRMGATE_PORTAL_SIGNUP": "open",
            "CRMGATE_PORTAL_ARGON2_MEMORY_KIB": "8192",
            "CRMGATE_PORTAL_ARGON2_TIME_COST": "1",
            "CRMGATE_RATE_LIMIT_USER_KEY": "",
            "CRMGATE_RATE_LIMIT_APPLICATION": "",
            "CRMGATE_RATE_LIMIT_BAD_KEYS": "",
            "CRMGATE_PLATFORM_OVERRIDES": json.dumps(platform_overrides(crm.base_url)),
            "CRMGATE_OUTBOUND_CA_FILE": str(certificates.ca_file),
            "CRMGATE_OUTBOUND_ALLOWED_NETWORKS": json.dumps(["127.0.0.0/8"]),
            "CRMGATE_OAUTH_CLIENTS": json.dumps(
                {"Salesforce": {"client_id": CLIENT_ID, "client_secret": CLIENT_SECRET}}
            ),
        }
        with serve_process(tmp_path_factory.mktemp("portal-oauth"), **environment) as served:
            callback = f"{served.base_url}/authorization/oauth/Salesforce/callback"
            simulator.add_connected_app(CLIENT_ID, CLIENT_SECRET, [callback], require_pkce=True)
            yield OAuthPortal(served, simulator)


@pytest.fixture(scope="module")
def portal_server(oauth_portal: OAuthPortal) -> Served:
    """This module's server, for conftest's ``chromium`` (started after it)."""
    return oauth_portal.served


@pytest.fixture
def admin_page(chromium: Browser, oauth_portal: OAuthPortal) -> Iterator[Page]:
    # the simulated CRM's certificate is of a throw-away CA the browser does not know
    context = chromium.new_context(base_url=oauth_portal.served.base_url, ignore_https_errors=True)
    yield context.new_page()
    context.close()


def test_a_crm_connected_by_oauth_from_the_applications_page_lists_its_contacts(
    admin_page: Page, oauth_portal: OAuthPortal
) -> None:
    page = admin_page
    account = sign_up(page, organisation="Acme")
    page.goto("/portal/applications")
    expect(page.locator("#no-applications")).to_be_visible()
    accessible(page)
    page.get_by_role("link", name="Connect a CRM").click()
    expect(page.get_by_role("heading", name="Connect a CRM")).to_be_visible()
    accessible(page)
    page.get_by_role("link", name="Salesforce", exact=True).click()
    expect(page.get_by_role("heading", name="Connect Salesforce")).to_be_visible()
    accessible(page)
    screenshot(page, "connect-crm")
    page.locator("#oauth-description").fill("Acme sales")
    page.get_by_role("button", name="Connect with Salesforce").click()
    # the continue page, the simulator's consent (approved at once), crmgate's callback, the
    # portal's return page and on to the new application
    page.wait_for_url("**/portal/applications/*?connected=1")
    expect(page.get_by_text("Your CRM is connected.")).to_be_visible()
    expect(page.locator("#application-state")).to_have_text("Authorized")
    assert "#" not in page.url and "token" not in page.url
    key = page.locator("#application-key").inner_text()
    accessible(page)
    screenshot(page, "application")
    page.goto("/portal/applications")
    expect(page.locator("#applications")).to_contain_text("Acme sales")
    accessible(page)
    screenshot(page, "applications")
    contacts = httpx.get(
        f"{oauth_portal.served.base_url}/v1/application/entity/contact/list",
        headers={"X-API2CRM-USER-KEY": account.user_key, APP: key},
        trust_env=False,
        timeout=20,
    )
    assert contacts.status_code == 200, contacts.text
    assert contacts.json(), "the seeded org has contacts"


def test_an_anonymous_visitor_connects_their_crm_through_a_connect_link(
    admin_page: Page,
    chromium: Browser,
    oauth_portal: OAuthPortal,
) -> None:
    page = admin_page
    sign_up(page, organisation="Initech")
    page.goto("/portal/applications/links")
    accessible(page)
    page.get_by_label("For whom").fill("Globex")
    page.get_by_label("Salesforce", exact=True).check()
    page.get_by_role("button", name="Create link").click()
    link = page.locator("#new-link").inner_text()
    assert link.startswith(f"{oauth_portal.served.base_url}/portal/connect/cgl_")
    accessible(page)
    screenshot(page, "connect-links")

    stranger = chromium.new_context(ignore_https_errors=True)  # no cookies, no account
    try:
        visitor = stranger.new_page()
        visitor.goto(link)
        expect(visitor.get_by_role("heading", name="Connect Salesforce to Initech")).to_be_visible()
        expect(visitor.get_by_role("button", name="Sign out")).to_have_count(0)
        accessible(visitor)
        screenshot(visitor, "connect-link")
        visitor.get_by_role("button", name="Connect with Salesforce").click()
        visitor.wait_for_url("**/portal/connect/done/*")
        expect(visitor.locator("#connect-result")).to_contain_text("connected to Initech")
        accessible(visitor)
        visitor.goto(link)  # used up
        expect(visitor.get_by_text("This link does not work any more")).to_be_visible()
    finally:
        stranger.close()

    page.goto("/portal/applications")
    expect(page.locator("#applications")).to_contain_text("Globex")
    page.goto("/portal/applications/links")
    expect(page.locator("#connect-links")).to_contain_text("Used")
