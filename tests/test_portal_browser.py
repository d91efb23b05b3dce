"""The portal in a real browser (Chromium, headless, through Playwright) against a real
`crmgate serve --demo`: sign-up, TOTP enrolment and sign-in, replayed codes, recovery codes,
session fixation, cross-site form posts; every page checked with axe-core; screenshots of the
main pages for docs/portal.md."""

from __future__ import annotations

import http.server
import re
import threading
from collections.abc import Iterator

import httpx
import pytest
from playwright.sync_api import Browser, Page, expect

from browser import accessible, code_at, screenshot, sign_in, sign_up
from conftest import Served


def enrol_totp(page: Page) -> tuple[str, list[str]]:
    """From any signed-in page: turn on TOTP; returns the seed and the recovery codes."""
    page.goto("/portal/security")
    page.get_by_role("button", name="Set up an authenticator app").click()
    expect(page.get_by_role("heading", name="Set up an authenticator app")).to_be_visible()
    accessible(page)
    screenshot(page, "totp-enrolment")
    seed = page.locator("#totp-secret").inner_text()
    page.get_by_label("Code from the app").fill(code_at(seed))
    page.get_by_role("button", name="Turn on").click()
    expect(page.get_by_role("heading", name="Recovery codes")).to_be_visible()
    codes = page.locator("#recovery-codes code").all_inner_texts()
    return seed, codes


def sign_out(page: Page) -> None:
    page.get_by_role("button", name="Sign out", exact=True).click()
    expect(page.get_by_role("heading", name="Sign in")).to_be_visible()


def session_cookie(page: Page) -> str | None:
    for cookie in page.context.cookies():
        if cookie["name"] in ("crmgate_portal", "__Host-crmgate_portal"):
            return cookie["value"]
    return None


def test_sign_up_enrol_totp_sign_in_with_a_code_and_a_replayed_code_is_refused(
    page: Page, portal_server: Served
) -> None:
    page.goto("/portal/sign-up")
    accessible(page)
    screenshot(page, "sign-up")
    account = sign_up(page)
    accessible(page)
    screenshot(page, "overview")
    # the key shown once works on the API
    answer = httpx.get(
        f"{portal_server.base_url}/v1/platform/list",
        headers={"X-API2CRM-USER-KEY": account.user_key},
        trust_env=False,
    )
    assert answer.status_code == 200

    seed, codes = enrol_totp(page)
    assert len(codes) == 10 and len(set(codes)) == 10
    accessible(page)
    page.goto("/portal/security")
    expect(page.locator("#totp-state")).to_have_text("On")
    accessible(page)
    screenshot(page, "security")
    sign_out(page)
    accessible(page)
    screenshot(page, "sign-in")

    # the step after the enrolment's: within the one-step skew, not used yet
    code = code_at(seed, 1)
    sign_in(page, account)
    expect(page.get_by_role("heading", name="Two-factor authentication")).to_be_visible()
    accessible(page)
    screenshot(page, "second-factor")
    # nothing behind the portal opens between the password and the code
    page.goto("/portal/credentials")
    expect(page.get_by_role("heading", name="Two-factor authentication")).to_be_visible()
    page.get_by_label("Code from your authenticator app").fill(code)
    page.get_by_role("button", name="Verify").click()
    expect(page.get_by_role("heading", name="Acme")).to_be_visible()
    sign_out(page)

    sign_in(page, account, code)  # the same code again
    expect(page.get_by_role("alert")).to_contain_text("not right, or was already used")
    page.goto("/portal/")
    expect(page.get_by_role("heading", name="Two-factor authentication")).to_be_visible()


def test_a_recovery_code_signs_in_once(page: Page) -> None:
    account = sign_up(page)
    _, codes = enrol_totp(page)
    page.goto("/portal/security")
    sign_out(page)

    for attempt in ("first", "second"):
        sign_in(page, account)
        page.get_by_text("Use a recovery code").click()
        page.get_by_label("Recovery code").fill(codes[3].upper())  # as typed from paper
        page.get_by_role("button", name="Use recovery code").click()
        if attempt == "first":
            expect(page.get_by_role("heading", name="Acme")).to_be_visible()
            page.goto("/portal/security")
            expect(page.locator("#recovery-left")).to_have_text("9")
            sign_out(page)
        else:
            expect(page.get_by_role("alert")).to_contain_text("not right, or was already used")


def test_the_session_id_changes_at_sign_in_and_at_the_second_factor(
    page: Page, portal_server: Served
) -> None:
    account = sign_up(page)
    seed, _ = enrol_totp(page)
    page.goto("/portal/security")
    sign_out(page)
    # an attacker's planted session id (fixation): the sign-in does not adopt it
    planted = "planted-session-id-0123456789abcdefghijklmnop"
    page.context.add_cookies(
        [{"name": "crmgate_portal", "value": planted, "url": portal_server.base_url}]
    )
    sign_in(page, account)
    after_password = session_cookie(page)
    assert after_password not in (None, planted)
    page.get_by_label("Code from your authenticator app").fill(code_at(seed, 1))
    page.get_by_role("button", name="Verify").click()
    expect(page.get_by_role("heading", name="Acme")).to_be_visible()
    after_code = session_cookie(page)
    assert after_code not in (None, planted, after_password)
    # the session before the second factor is over: its cookie opens nothing
    with httpx.Client(base_url=portal_server.base_url, trust_env=False) as other:
        other.cookies.set("crmgate_portal", after_password or "")
        assert other.get("/portal/credentials").status_code == 303


class AttackerSite:
    """A page on another site (http://localhost:<port>, not 127.0.0.1) whose form posts to the
    portal: what a phishing page would do with a signed-in victim's browser."""

    def __init__(self, target: str) -> None:
        body = f"""<!doctype html><html lang="en"><title>win a prize</title>
<form method="post" action="{target}"><input type="hidden" name="csrf" value="guess">
<button type="submit">Claim</button></form></html>""".encode()

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                self.send_response(200)
                self.send_header("Content-Type", "text/html")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: object) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://localhost:{self.server.server_address[1]}/"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def attacker(portal_server: Served) -> Iterator[AttackerSite]:
    site = AttackerSite(f"{portal_server.base_url}/portal/security/disable")
    yield site
    site.close()


def test_a_cross_site_form_post_is_refused(page: Page, attacker: AttackerSite) -> None:
    sign_up(page)
    enrol_totp(page)
    page.goto(attacker.url)
    page.get_by_role("button", name="Claim").click()
    expect(page.get_by_role("heading", name="Not possible")).to_be_visible()
    expect(page.locator("main")).to_contain_text("not sent from this portal")
    page.goto("/portal/security")
    expect(page.locator("#totp-state")).to_have_text("On")


def test_pages_send_a_strict_content_security_policy(page: Page, chromium: Browser) -> None:
    answer = page.goto("/portal/sign-in")
    assert answer is not None
    headers = answer.headers
    policy = headers["content-security-policy"]
    assert "script-src 'self'" in policy and "frame-ancestors 'none'" in policy
    assert "unsafe-inline" not in policy
    assert headers["cache-control"] == "no-store"
    assert headers["x-frame-options"] == "DENY"
    # an inline script would be refused: none of the portal's pages needs one
    messages: list[str] = []
    page.on("console", lambda message: messages.append(message.text))
    page.goto("/portal/sign-up")
    assert not [m for m in messages if re.search("Content Security Policy", m)]
