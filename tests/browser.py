"""What the portal's browser tests share: a real `crmgate serve --demo` (simulated CRMs), Debian's
Chromium driven by Playwright (no browser download: `executable_path`), an accessibility check
with the vendored axe-core, screenshots for docs/portal.md, and the steps most tests take
(sign up, read the form token, a TOTP code).

The fixtures (``chromium``, ``portal_server``, ``page``) are in tests/conftest.py; the helpers
are imported from here by name. Screenshots go to docs/portal/ when
CRMGATE_SCREENSHOTS=docs is set (or the file is missing there), else to a temporary directory:
a test run does not rewrite the repository's images."""

from __future__ import annotations

import hashlib
import os
import re
import secrets
import time
from dataclasses import dataclass
from pathlib import Path

import pyotp
from playwright.sync_api import Page

ROOT = Path(__file__).resolve().parents[1]
AXE = Path(__file__).with_name("vendor") / "axe-core-4.14.1.min.js"
AXE_SHA256 = (Path(__file__).with_name("vendor") / "axe-core.sha256").read_text().split()[0]
SCREENSHOTS = ROOT / "docs" / "portal"
PASSWORD = "correct horse battery staple"

__all__ = [
    "PASSWORD",
    "PortalAccount",
    "accessible",
    "code_at",
    "screenshot",
    "sign_in",
    "sign_up",
]


def accessible(page: Page) -> None:
    """axe-core on the page as it is: no critical violation (the issue's bar), and none of the
    serious ones we can fix either (listed with their nodes when it fails)."""
    source = AXE.read_bytes()
    assert hashlib.sha256(source).hexdigest() == AXE_SHA256, "tests/vendor/axe-core changed"
    # evaluated through the DevTools protocol: the portal's CSP forbids inline scripts, and an
    # injected <script> tag would be one
    page.evaluate(source.decode())
    results = page.evaluate("axe.run(document, {resultTypes: ['violations']})")
    bad = [
        f"{v['id']} ({v['impact']}): {v['help']} at {[n['target'] for n in v['nodes']]}"
        for v in results["violations"]
        if v["impact"] in ("critical", "serious")
    ]
    assert not bad, f"{page.url}: " + "; ".join(bad)


def screenshot(page: Page, name: str) -> Path:
    SCREENSHOTS.mkdir(exist_ok=True)
    target = SCREENSHOTS / f"{name}.png"
    if os.environ.get("CRMGATE_SCREENSHOTS") != "docs" and target.exists():
        target = Path(os.environ.get("TMPDIR", "/tmp")) / f"crmgate-portal-{name}.png"
    page.screenshot(path=str(target), full_page=True)
    return target


def code_at(seed: str, offset_steps: int = 0) -> str:
    """The TOTP code of ``seed`` for the time step ``offset_steps`` away from now."""
    return pyotp.TOTP(seed).at(time.time() + 30 * offset_steps)


@dataclass
class PortalAccount:
    email: str
    password: str
    user_key: str
    totp_seed: str | None = None


def sign_up(page: Page, organisation: str = "Acme", name: str = "Ann Admin") -> PortalAccount:
    """A new organisation through the sign-up form; the page ends on the overview, which shows
    the user key once."""
    email = f"ann.{secrets.token_hex(4)}@example.com"
    page.goto("/portal/sign-up")
    page.get_by_label("Organisation").fill(organisation)
    page.get_by_label("Your name").fill(name)
    page.get_by_label("E-mail").fill(email)
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Create account").click()
    key = page.locator("#new-key").inner_text()
    assert re.fullmatch(r"cgu_\S+", key)
    return PortalAccount(email, PASSWORD, key)


def sign_in(page: Page, account: PortalAccount, code: str | None = None) -> None:
    page.goto("/portal/sign-in")
    page.get_by_label("E-mail").fill(account.email)
    page.get_by_label("Password").fill(account.password)
    page.get_by_role("button", name="Sign in").click()
    if code is not None:
        page.get_by_label("Code from your authenticator app").fill(code)
        page.get_by_role("button", name="Verify").click()
