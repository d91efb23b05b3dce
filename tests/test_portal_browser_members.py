"""Members, invitations and password reset in a real browser (Chromium through Playwright)
against `crmgate serve --demo`: an admin invites a viewer (no mail server there, so the page
shows the link once), the viewer joins in a browser of their own and cannot reach the admins'
page, not even by posting its forms; a removal asks first. Every page passes axe-core."""

from __future__ import annotations

import re
from collections.abc import Iterator

import pytest
from playwright.sync_api import Browser, Dialog, Page, expect

from browser import PASSWORD, accessible, screenshot, sign_up
from conftest import Served


@pytest.fixture
def second(chromium: Browser, portal_server: Served) -> Iterator[Page]:
    """Another person's browser (cookies of its own)."""
    context = chromium.new_context(base_url=portal_server.base_url)
    yield context.new_page()
    context.close()


def invite(page: Page, email: str, role: str) -> str:
    """From the admin's browser: the invitation link the Members page shows (no mail server)."""
    page.goto("/portal/members")
    page.get_by_label("E-mail address").fill(email)
    page.get_by_label("Role", exact=True).select_option(role)
    page.get_by_role("button", name="Send invitation").click()
    link = page.locator("#invitation-link")
    expect(link).to_be_visible()
    return link.inner_text()


def join(page: Page, link: str, name: str) -> None:
    page.goto(link)
    expect(page.get_by_role("heading", name=re.compile("^Join "))).to_be_visible()
    accessible(page)
    screenshot(page, "invitation")
    page.get_by_label("Your name").fill(name)
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name=re.compile("^Join ")).click()
    expect(page.locator("#new-key")).to_be_visible()  # their key, once


def test_an_invited_viewer_joins_and_cannot_reach_the_admins_page(page: Page, second: Page) -> None:
    sign_up(page, organisation="Globex")
    page.goto("/portal/members")
    expect(page.get_by_role("heading", name="Members", exact=True)).to_be_visible()
    link = invite(page, "vera@globex.example", "viewer")
    accessible(page)  # with the link shown once

    join(second, link, "Vera Viewer")
    expect(second.get_by_role("link", name="Members")).to_have_count(0)
    # the server refuses, link or no link
    answer = second.goto("/portal/members")
    assert answer is not None and answer.status == 403
    expect(second.get_by_role("heading", name="Not possible")).to_be_visible()
    # nor do the page's forms work when posted with the viewer's own, valid form token
    second.goto("/portal/security")
    token = second.locator('input[name="csrf"]').first.get_attribute("value") or ""
    posted = second.request.post(
        "/portal/members/invite",
        form={"csrf": token, "email": "eve@evil.example", "role": "admin"},
    )
    assert posted.status == 403

    page.goto("/portal/members")
    row = page.locator('tr[data-email="vera@globex.example"]')
    expect(row).to_contain_text("Vera Viewer")
    expect(row.get_by_label("Role of Vera Viewer", exact=True)).to_have_value("viewer")
    expect(page.locator("#invitations")).to_have_count(0)  # accepted: no longer open
    screenshot(page, "members")


def test_a_removal_asks_first_and_ends_the_members_session(page: Page, second: Page) -> None:
    sign_up(page, organisation="Initech")
    join(second, invite(page, "milton@initech.example", "member"), "Milton")

    page.goto("/portal/members")
    answers: list[bool] = []

    def decide(dialog: Dialog) -> None:
        assert "Remove Milton from Initech?" in dialog.message
        if answers:
            dialog.accept()
        else:
            dialog.dismiss()
        answers.append(True)

    page.on("dialog", decide)
    page.get_by_role("button", name="Remove Milton").click()  # dismissed: nothing happens
    expect(page.locator('tr[data-email="milton@initech.example"]')).to_have_count(1)
    page.get_by_role("button", name="Remove Milton").click()
    expect(page.get_by_role("status")).to_contain_text("Milton was removed")
    expect(page.locator('tr[data-email="milton@initech.example"]')).to_have_count(0)
    assert len(answers) == 2

    second.goto("/portal/")
    expect(second.get_by_role("heading", name="Sign in")).to_be_visible()


def test_the_password_reset_pages_are_accessible(page: Page) -> None:
    page.goto("/portal/sign-in")
    page.get_by_role("link", name="Forgot your password?").click()
    expect(page.get_by_role("heading", name="Reset your password")).to_be_visible()
    accessible(page)
    page.get_by_label("E-mail").fill("nobody@example.com")
    page.get_by_role("button", name="Send the link").click()
    expect(page.locator("#reset-sent")).to_contain_text("nobody@example.com")
    accessible(page)
    screenshot(page, "password-reset")
