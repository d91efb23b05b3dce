"""Passkeys in a real browser against `crmgate serve --demo`: Chromium's virtual authenticator
(DevTools protocol, WebAuthn domain) stands in for a platform authenticator. A passkey is added
on the Security page, then used as the second factor after the password; a fresh sign-in asks
for it too. The page is opened as http://localhost:<port>: WebAuthn refuses IP addresses."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from playwright.sync_api import Browser, CDPSession, Page, expect

from browser import accessible, screenshot, sign_in, sign_up
from conftest import Served


@dataclass
class WithAuthenticator:
    page: Page
    cdp: CDPSession
    authenticator: str

    def credentials(self) -> list[dict[str, Any]]:
        found = self.cdp.send("WebAuthn.getCredentials", {"authenticatorId": self.authenticator})
        return list(found["credentials"])


@pytest.fixture
def browser_page(chromium: Browser, portal_server: Served) -> Iterator[WithAuthenticator]:
    context = chromium.new_context(base_url=f"http://localhost:{portal_server.port}")
    page = context.new_page()
    cdp = context.new_cdp_session(page)
    cdp.send("WebAuthn.enable")
    added = cdp.send(
        "WebAuthn.addVirtualAuthenticator",
        {
            "options": {
                "protocol": "ctap2",
                "transport": "internal",
                "hasResidentKey": True,
                "hasUserVerification": True,
                "isUserVerified": True,
            }
        },
    )
    yield WithAuthenticator(page, cdp, added["authenticatorId"])
    context.close()


def sign_out(page: Page) -> None:
    page.get_by_role("button", name="Sign out", exact=True).click()
    expect(page.get_by_role("heading", name="Sign in")).to_be_visible()


def test_a_passkey_added_on_the_security_page_is_the_second_factor_at_sign_in(
    browser_page: WithAuthenticator,
) -> None:
    page = browser_page.page
    account = sign_up(page)
    page.goto("/portal/security")
    page.get_by_label("Passkey name").fill("Virtual authenticator")
    page.get_by_role("button", name="Add a passkey").click()
    # the first factor: recovery codes, shown once
    expect(page.get_by_role("heading", name="Recovery codes")).to_be_visible()
    expect(page.locator("#recovery-codes code")).to_have_count(10)
    page.goto("/portal/security")
    expect(page.locator("#passkey-count")).to_have_text("1")
    expect(page.get_by_role("table", name="Your passkeys")).to_contain_text("Virtual authenticator")
    accessible(page)
    screenshot(page, "security-passkey")
    (stored,) = browser_page.credentials()
    assert stored["rpId"] == "localhost" and stored["signCount"] == 1
    sign_out(page)

    sign_in(page, account)
    expect(page.get_by_role("heading", name="Two-factor authentication")).to_be_visible()
    accessible(page)
    page.get_by_role("button", name="Use a passkey").click()
    expect(page.get_by_role("heading", name="Acme")).to_be_visible()
    assert browser_page.credentials()[0]["signCount"] == 2
    page.goto("/portal/security")
    row = page.get_by_role("table", name="Your passkeys").locator("tbody tr")
    expect(row).not_to_contain_text("never")  # last used: now


def test_a_fresh_sign_in_asks_a_passkey_only_user_for_the_passkey(
    browser_page: WithAuthenticator,
) -> None:
    page = browser_page.page
    sign_up(page)
    page.goto("/portal/security")
    page.get_by_role("button", name="Add a passkey").click()
    expect(page.get_by_role("heading", name="Recovery codes")).to_be_visible()
    page.goto("/portal/reauthenticate?next=/portal/security")
    accessible(page)
    # the password alone is not enough: Enter in its field starts the passkey
    page.get_by_label("Password").fill("correct horse battery staple")
    page.get_by_label("Password").press("Enter")
    expect(page.get_by_role("heading", name="Security")).to_be_visible()
    assert browser_page.credentials()[0]["signCount"] == 2
