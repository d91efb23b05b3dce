"""The Usage and Audit trail pages in a real browser, on the demo organisation (its simulated
CRMs connected): the charts drawn, the audit filter form used, axe-core on both, screenshots
for docs/portal.md."""

from __future__ import annotations

import json
import re
import time

import httpx
from playwright.sync_api import Page, expect

from browser import PortalAccount, accessible, screenshot, sign_in
from conftest import Served


def demo_admin(served: Served) -> tuple[PortalAccount, dict[str, str]]:
    """The demo admin's portal sign-in, and the demo's applications (platform -> key)."""
    demo = json.loads((served.stderr.parent / "data" / "demo.json").read_text())
    portal = demo["portal"]
    return PortalAccount(portal["email"], portal["password"], demo["user_key"]), demo[
        "applications"
    ]


def test_the_usage_page_charts_the_demo_organisations_requests(
    page: Page, portal_server: Served
) -> None:
    account, applications = demo_admin(portal_server)
    with httpx.Client(
        base_url=portal_server.base_url,
        headers={"X-API2CRM-USER-KEY": account.user_key},
        trust_env=False,
        timeout=30,
    ) as api:
        for number, key in enumerate(sorted(applications.values())[:4]):
            for _ in range(number + 1):
                api.get(
                    "/v1/application/entity/contact/list",
                    headers={"X-API2CRM-APPLICATION-KEY": key},
                )
        api.get("/v1/application/entity/nope/list", headers={"X-API2CRM-APPLICATION-KEY": key})
    sign_in(page, account)
    page.goto("/portal/usage")
    deadline = time.monotonic() + 20  # the server writes its counters every 5 seconds
    while page.locator("#per-application-table").count() == 0 and time.monotonic() < deadline:
        time.sleep(0.5)
        page.reload()
    expect(page.get_by_role("heading", name="Usage", level=1)).to_be_visible()
    expect(page.get_by_role("img", name="Requests per day")).to_be_visible()
    expect(page.get_by_role("img", name="Requests per application")).to_be_visible()
    expect(page.locator("#per-application-table tbody tr").first).to_be_visible()
    page.get_by_text("The numbers per day").click()  # the table behind the chart opens
    expect(page.locator("#per-day-table")).to_be_visible()
    accessible(page)
    screenshot(page, "usage")


def test_the_audit_trail_is_filtered_from_its_form(page: Page, portal_server: Served) -> None:
    account, _ = demo_admin(portal_server)
    sign_in(page, account)
    page.goto("/portal/audit")
    expect(page.locator("#chain-verdict")).to_contain_text("Intact.")
    page.get_by_label("Event (a name or its beginning)").fill("portal.signed_in")
    page.get_by_role("button", name="Filter").click()
    expect(page).to_have_url(re.compile(r"/portal/audit\?event=portal\.signed_in&"))
    events = page.locator("#audit-events tbody th").all_inner_texts()
    assert events and set(events) == {"portal.signed_in"}
    expect(page.get_by_label("Event (a name or its beginning)")).to_have_value("portal.signed_in")
    accessible(page)
    page.get_by_role("link", name="Clear").click()
    expect(page.locator("#audit-events")).to_be_visible()
    accessible(page)
    screenshot(page, "audit")
