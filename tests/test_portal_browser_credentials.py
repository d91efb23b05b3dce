"""The API Credentials page in a real browser against `crmgate serve --demo`: a restricted key
created from the form, copied with its button, then used on the API, allowed within its scope
and refused outside it; revoked from the list. axe-core on every page; a screenshot for
docs/portal.md."""

from __future__ import annotations

import json
import re

import httpx
from playwright.sync_api import Page, expect

from browser import PortalAccount, accessible, screenshot, sign_in, sign_up
from conftest import Served

APP = "X-API2CRM-APPLICATION-KEY"


def api(served: Served, key: str) -> httpx.Client:
    return httpx.Client(
        base_url=served.base_url,
        headers={"X-API2CRM-USER-KEY": key},
        trust_env=False,
        timeout=30,
    )


def create_key(page: Page) -> str:
    """Send the restricted-key form as it is filled; the key shown once, copied by its button."""
    page.context.grant_permissions(["clipboard-read", "clipboard-write"])
    page.get_by_role("button", name="Create restricted key").click()
    expect(page.get_by_role("heading", name="Your new restricted key")).to_be_visible()
    accessible(page)
    key = page.locator("#new-key").inner_text()
    assert re.fullmatch(r"cgr_\w+", key)
    page.get_by_role("button", name="Copy").click()
    expect(page.get_by_role("button", name="Copied")).to_be_visible()
    assert page.evaluate("navigator.clipboard.readText()") == key
    return key


def test_a_restricted_key_made_in_the_form_reads_platforms_and_nothing_else(
    page: Page, portal_server: Served
) -> None:
    sign_up(page)
    page.goto("/portal/credentials")
    accessible(page)
    page.get_by_label("Description").fill("platform reader")
    page.get_by_label("read every entity").check()
    key = create_key(page)
    with api(portal_server, key) as client:
        assert client.get("/v1/platform/list").status_code == 200
        assert client.get("/v1/application/list").json() == []
        refused = client.get("/v1/user/list")  # crmgate's users: not in its scope
        assert refused.status_code == 403
        assert refused.json()["detail"]["code"] == "NOT_ALLOWED"
    page.get_by_role("link", name="Back to API credentials").click()
    row = page.locator("#restricted-keys tbody tr", has_text="platform reader")
    expect(row).to_contain_text(key[:10])
    expect(row).to_contain_text("every entity: read")
    row.get_by_role("button", name=re.compile("^Revoke")).click()
    expect(page.get_by_role("status")).to_contain_text("was revoked")
    accessible(page)
    with api(portal_server, key) as client:
        assert client.get("/v1/platform/list").status_code == 401


def test_a_key_for_one_demo_crm_and_its_contacts_only(page: Page, portal_server: Served) -> None:
    demo = json.loads((portal_server.stderr.parent / "data" / "demo.json").read_text())
    admin = PortalAccount(demo["portal"]["email"], demo["portal"]["password"], demo["user_key"])
    salesforce, hubspot = demo["applications"]["Salesforce"], demo["applications"]["HubSpot"]
    sign_in(page, admin)
    page.goto("/portal/credentials")
    page.get_by_label("Description").fill("Salesforce contacts, read only")
    page.get_by_label("Only the applications ticked below").check()
    page.locator(f'input[name="application"][value="{salesforce}"]').check()
    page.get_by_label("read contact", exact=True).check()
    page.get_by_label("Expires on").fill("2099-12-31")
    key = create_key(page)
    expect(page.locator("#new-key-scope")).to_contain_text("contact: read")
    with api(portal_server, key) as client:
        contacts = client.get("/v1/application/entity/contact/list", headers={APP: salesforce})
        assert contacts.status_code == 200, contacts.text
        assert contacts.json(), "the demo's Salesforce has contacts"
        for refused in (
            client.get("/v1/application/entity/account/list", headers={APP: salesforce}),
            client.get("/v1/application/entity/contact/list", headers={APP: hubspot}),
            client.post(
                "/v1/application/entity/contact", headers={APP: salesforce}, json={"last_name": "X"}
            ),
        ):
            assert refused.status_code == 403, refused.text
    page.goto("/portal/credentials")
    accessible(page)
    screenshot(page, "credentials")
