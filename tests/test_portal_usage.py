"""The portal's Usage and Audit trail pages over real HTTP: the counters the API keeps per
organisation, day and application (requests, errors, rate-limit refusals), drawn as SVG charts
with their numbers in tables; the rate limits' windows per key and application; the audit trail
filtered by event, actor and date, paged, with the chain's verification state. Salesforce is
played by its simulator."""

from __future__ import annotations

import asyncio
import html
import itertools
import re
import time
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path

import httpx
import pytest
from sqlalchemy import select, text, update

from conftest import (
    Database,
    RunningGateway,
    SalesforceSim,
    make_settings,
    migrate_database,
    with_services,
)
from crmgate.api.app import create_app
from crmgate.portal import charts
from crmgate.runtime import Services
from crmgate.settings import Settings
from crmgate.store.db import for_writing, session_factory
from crmgate.store.models import AuditEvent, Organisation, UsageCounter, utcnow
from crmgate.store.usage import application_digest
from crmgate.store.usage_report import Counts

PASSWORD = "correct horse battery staple"


@pytest.fixture
def portal_settings(tmp_path: Path, database: Database, salesforce: SalesforceSim) -> Settings:
    result = make_settings(
        tmp_path / "data",
        database.url,
        platform_overrides=salesforce.overrides(),
        outbound_ca_file=salesforce.ca_file,
        portal_signup="open",
        portal_argon2_memory_kib=8192,
        portal_argon2_time_cost=1,
        rate_limit_user_key="1000/day",
        rate_limit_application="4/minute",
    )
    migrate_database(result)
    return result


@pytest.fixture
def gateway(portal_settings: Settings) -> Iterator[RunningGateway]:
    with RunningGateway(create_app(portal_settings)) as running:
        yield running


def csrf(text: str) -> str:
    found = re.search(r'name="csrf" value="([^"]+)"', text)
    assert found, text
    return found.group(1)


def browser_for(gateway: RunningGateway) -> httpx.Client:
    """A client that keeps cookies and follows redirects, as a browser does."""
    return httpx.Client(
        base_url=gateway.base_url, timeout=20, trust_env=False, follow_redirects=True
    )


def sign_up(gateway: RunningGateway, organisation: str = "Acme") -> tuple[httpx.Client, str]:
    """A browser signed in as a new organisation's admin, and its user key."""
    browser = browser_for(gateway)
    form = browser.get("/portal/sign-up")
    answer = browser.post(
        "/portal/sign-up",
        data={
            "csrf": csrf(form.text),
            "organisation": organisation,
            "name": "Ann Admin",
            "email": f"ann@{organisation.lower()}.example",
            "password": PASSWORD,
        },
    )
    assert answer.status_code == 200, answer.text
    key = re.search(r'id="new-key" class="key">([^<]+)<', answer.text)
    assert key
    return browser, key.group(1)


def connect(gateway: RunningGateway, key: str, sim: SalesforceSim, description: str) -> str:
    user = sim.simulator.add_user(f"u{len(sim.simulator.users)}@acme.example", "pw")
    credential = {"instance_url": sim.base_url, "access_token": sim.simulator.issue_session(user)}
    with gateway.client(key) as client:
        answer = client.post(
            "/v1/application",
            json={
                "type": "Salesforce",
                "authorization": "oAuth-external-refresh",
                "credential": credential,
                "description": description,
            },
        )
    assert answer.status_code == 201, answer.text
    found: str = answer.json()["key"]
    return found


def eventually(browser: httpx.Client, path: str, ready: Callable[[str], object]) -> str:
    """The page once ``ready`` holds (the counters are written every 0.2 s)."""
    deadline = time.monotonic() + 10
    while True:
        text = browser.get(path).text
        if ready(text) or time.monotonic() > deadline:
            return text
        time.sleep(0.1)


def cells(text: str, table: str, row: str) -> list[str]:
    """The cells of the row headed ``row`` in the table with id ``table``, as text."""
    body = re.search(rf'<table id="{table}">(.*?)</table>', text, re.S)
    assert body, f"no table {table}"
    for found in re.findall(r"<tr>(.*?)</tr>", body.group(1), re.S):
        values = [
            html.unescape(re.sub(r"<[^>]+>", " ", c)).split()
            for c in re.findall(r"<t[hd][^>]*>(.*?)</t[hd]>", found, re.S)
        ]
        texts = [" ".join(value) for value in values]
        if texts and texts[0].startswith(row):
            return texts
    raise AssertionError(f"no row {row} in {table}")


# ---- the counters and the Usage page -------------------------------------------------------------


def test_requests_errors_and_rate_limit_refusals_are_counted_per_application(
    gateway: RunningGateway, salesforce: SalesforceSim, portal_settings: Settings
) -> None:
    browser, key = sign_up(gateway)
    application = connect(gateway, key, salesforce, "Sales EU")
    headers = {"X-API2CRM-APPLICATION-KEY": application}
    with gateway.client(key) as client:
        statuses = [
            client.get("/v1/application/entity/contact/list", headers=headers).status_code,
            client.get("/v1/application/entity/contact/count", headers=headers).status_code,
            client.get(
                "/v1/application/entity/contact/003000000000000AAA", headers=headers
            ).status_code,
            client.get("/v1/application/entity/contact/list", headers=headers).status_code,
            client.get("/v1/application/entity/contact/list", headers=headers).status_code,
        ]
        assert client.get("/v1/platform/list").status_code == 200
    assert statuses == [200, 200, 404, 200, 429]  # the application's 4 per minute
    with gateway.client("cgu_not-a-key") as stranger:  # no organisation: counted nowhere
        assert stranger.get("/v1/platform/list").status_code == 401

    text = eventually(browser, "/portal/usage", lambda t: re.search(r'id="total-requests">7<', t))
    assert cells(text, "per-application-table", "Sales EU") == [
        "Sales EU",
        "Salesforce",
        f"{application[:8]}…",
        "5",
        "2",
        "1",
    ]
    # the application was created and the platforms listed: crmgate's own routes
    assert cells(text, "per-application-table", "No application")[3:] == ["2", "0", "0"]
    today = utcnow().date().isoformat()
    assert cells(text, "per-day-table", today) == [today, "7", "2", "1"]
    assert application not in text  # only the key's beginning is shown

    async def rows(services: Services) -> list[tuple[str, int]]:
        async with session_factory(services.engine)() as session:
            found = await session.execute(
                select(UsageCounter.application_key, UsageCounter.requests)
            )
            return sorted((row[0], row[1]) for row in found)

    # the counters never hold an application key, only its digest
    assert with_services(portal_settings, rows) == sorted(
        [("", 2), (application_digest(application), 5)]
    )


def test_counters_of_several_flushes_add_up_and_a_deleted_application_keeps_its_counts(
    gateway: RunningGateway, salesforce: SalesforceSim
) -> None:
    browser, key = sign_up(gateway)
    application = connect(gateway, key, salesforce, "Short-lived")
    headers = {"X-API2CRM-APPLICATION-KEY": application}
    with gateway.client(key) as client:
        for _ in range(2):
            assert client.get("/v1/application/entity/contact/count", headers=headers).is_success
            time.sleep(0.5)  # another batch each time
        assert client.delete(f"/v1/application/{application}").status_code == 204
    # the connect and the delete are crmgate's own routes; the page waits for the last batch
    text = eventually(browser, "/portal/usage", lambda t: re.search(r'id="total-requests">4<', t))
    assert cells(text, "per-application-table", "A deleted application")[3:] == ["2", "0", "0"]
    assert cells(text, "per-application-table", "No application")[3:] == ["2", "0", "0"]


def test_the_charts_are_accessible_server_drawn_svg(
    gateway: RunningGateway, salesforce: SalesforceSim
) -> None:
    browser, key = sign_up(gateway)
    application = connect(gateway, key, salesforce, "Sales EU")
    with gateway.client(key) as client:
        client.get(
            "/v1/application/entity/contact/list",
            headers={"X-API2CRM-APPLICATION-KEY": application},
        )
    # the connect and the list, once their batch is written
    text = eventually(browser, "/portal/usage", lambda t: 'id="total-requests">2<' in t)
    for chart in ("per-day", "per-application"):
        svg = re.search(rf'<svg class="chart" id="{chart}"[^>]*>(.*?)</svg>', text, re.S)
        assert svg, chart
        opening = svg.group(0)[: svg.group(0).index(">")]
        assert 'role="img"' in opening
        assert f'aria-labelledby="{chart}-title {chart}-desc"' in opening
        assert re.search(rf'<title id="{chart}-title">\S', svg.group(1))
        assert re.search(rf'<desc id="{chart}-desc">[^<]*requests in all', svg.group(1))
    per_day = re.search(r'<svg class="chart" id="per-day".*?</svg>', text, re.S)
    assert per_day
    assert per_day.group(0).count('<g class="bars">') == 30  # one bar per day
    assert per_day.group(0).count('<rect class="bar"') == 1  # one day with requests
    assert len(re.findall(r"<tr><th scope=\"row\">\d{4}-\d\d-\d\d</th>", text)) == 30
    # the Content-Security-Policy allows neither: the charts need none
    assert (
        "style=" not in text
        and "<script>" not in text
        and "<script " not in text.replace('<script src="/portal/static/portal.js" defer>', "")
    )


def test_the_rate_limit_state_is_shown_per_key_and_per_application(
    gateway: RunningGateway, salesforce: SalesforceSim
) -> None:
    browser, key = sign_up(gateway)
    application = connect(gateway, key, salesforce, "Sales EU")
    headers = {"X-API2CRM-APPLICATION-KEY": application}
    with gateway.client(key) as client:
        for _ in range(5):
            client.get("/v1/application/entity/contact/count", headers=headers)
    text = browser.get("/portal/usage").text
    # 1 connect + 4 calls on the key: the 5th, refused by the application's full window,
    # counts nowhere (limits.py, "Admission")
    assert cells(text, "key-limits", key[:10])[1:4] == ["1000 per day", "5", "995"]
    row = cells(text, "application-limits", "Sales EU")
    assert row[1:4] == ["4 per minute", "4", "0 (exhausted)"]
    assert 1 <= int(row[4].removesuffix(" s")) <= 60


def test_only_admins_see_the_other_members_keys(
    gateway: RunningGateway, portal_settings: Settings
) -> None:
    browser, key = sign_up(gateway)
    viewer = add_viewer(gateway, portal_settings, key)
    admin_view = browser.get("/portal/usage").text
    own_view = viewer.get("/portal/usage").text
    assert "user key of Vic Viewer" in admin_view and "user key of Ann Admin" in admin_view
    assert "user key of Vic Viewer" in own_view and "user key of Ann Admin" not in own_view


def add_viewer(gateway: RunningGateway, settings: Settings, admin_key: str) -> httpx.Client:
    """A viewer of the admin's organisation, signed in to the portal."""
    with gateway.client(admin_key) as client:
        made = client.post(
            "/v1/user",
            json={"name": "Vic Viewer", "email": "vic@acme.example", "roles": ["viewer"]},
        )
    assert made.status_code == 201, made.text
    user_id = made.json()["key"]

    async def login(services: Services) -> None:
        hashed = await asyncio.to_thread(services.portal.passwords.hash, PASSWORD)
        await services.portal.logins.ensure(user_id, "vic@acme.example", hashed)

    with_services(settings, login)
    browser = browser_for(gateway)
    form = browser.get("/portal/sign-in")
    signed = browser.post(
        "/portal/sign-in",
        data={"csrf": csrf(form.text), "email": "vic@acme.example", "password": PASSWORD},
    )
    assert signed.status_code == 200 and "Vic Viewer" in signed.text, signed.text
    return browser


def test_the_usage_page_needs_a_sign_in(gateway: RunningGateway) -> None:
    with gateway.client() as anonymous:
        answer = anonymous.get("/portal/usage", follow_redirects=False)
    assert answer.status_code == 303
    assert answer.headers["location"] == "/portal/sign-in?next=/portal/usage"


# ---- the Audit trail page ------------------------------------------------------------------------


def rename(gateway: RunningGateway, key: str, application: str, times: int) -> None:
    with gateway.client(key) as client:
        for number in range(times):
            answer = client.put(
                f"/v1/application/{application}", json={"description": f"Sales {number}"}
            )
            assert answer.status_code == 200, answer.text


def events(text: str) -> list[str]:
    return re.findall(r'<th scope="row"><code[^>]*>([^<]+)</code></th>', text)


def test_the_audit_trail_lists_the_organisations_events_newest_first_by_name(
    gateway: RunningGateway, salesforce: SalesforceSim
) -> None:
    browser, key = sign_up(gateway)
    connect(gateway, key, salesforce, "Sales EU")
    _, other_key = sign_up(gateway, "Globex")
    connect(gateway, other_key, salesforce, "Globex CRM")
    text = browser.get("/portal/audit").text
    assert events(text) == ["application.created", "portal.signed_up", "key.created"]
    assert "<td>Ann Admin</td>" in text  # the actor, by name
    assert "Sales EU (application" in text  # the target, by its description
    assert "Globex" not in text  # another organisation's events are not shown


def test_the_audit_trail_filters_by_event_actor_and_date(
    gateway: RunningGateway, salesforce: SalesforceSim
) -> None:
    browser, key = sign_up(gateway)
    application = connect(gateway, key, salesforce, "Sales EU")
    rename(gateway, key, application, 2)
    admin = re.search(
        r'<option value="(usr_[^"]+)"\s*>Ann Admin', browser.get("/portal/audit").text
    )
    assert admin
    assert events(browser.get("/portal/audit", params={"event": "application."}).text) == [
        "application.updated",
        "application.updated",
        "application.created",
    ]
    assert events(browser.get("/portal/audit", params={"event": "portal.signed_up"}).text) == [
        "portal.signed_up"
    ]
    by_admin = browser.get("/portal/audit", params={"actor": admin.group(1)}).text
    assert len(events(by_admin)) == 4  # the key was made before the sign-up's session
    assert f'<option value="{admin.group(1)}" selected>' in by_admin  # the form keeps it
    assert events(browser.get("/portal/audit", params={"actor": "system"}).text) == []
    today = utcnow().date()
    same_day = {"since": today.isoformat(), "until": today.isoformat()}
    assert len(events(browser.get("/portal/audit", params=same_day).text)) == 5
    tomorrow = (today + timedelta(days=1)).isoformat()
    later = browser.get("/portal/audit", params={"since": tomorrow}).text
    assert events(later) == [] and 'id="no-events"' in later
    yesterday = (today - timedelta(days=1)).isoformat()
    assert events(browser.get("/portal/audit", params={"until": yesterday}).text) == []
    wrong = browser.get("/portal/audit", params={"since": "31.12.2025"})
    assert wrong.status_code == 400 and "Enter dates as YYYY-MM-DD." in wrong.text


def test_the_audit_trail_is_paged(gateway: RunningGateway, salesforce: SalesforceSim) -> None:
    browser, key = sign_up(gateway)
    application = connect(gateway, key, salesforce, "Sales EU")
    rename(gateway, key, application, 53)  # 55 events with the sign-up and the connect
    first = browser.get("/portal/audit", params={"event": "application"}).text
    assert "Events 1 to 50 of 54, newest first" in first
    older = re.search(r'<a href="([^"]+)" rel="next">Older events</a>', first)
    assert older and 'rel="prev"' not in first
    second = browser.get(html.unescape(older.group(1))).text
    assert "Events 51 to 54 of 54, newest first" in second
    assert events(second) == ["application.updated"] * 3 + ["application.created"]
    assert 'rel="next"' not in second and 'rel="prev">Newer events' in second
    assert "event=application" in older.group(1)  # the filter goes along


def test_a_viewer_reads_the_audit_trail_and_its_intact_chain(
    gateway: RunningGateway, portal_settings: Settings
) -> None:
    _, key = sign_up(gateway)
    viewer = add_viewer(gateway, portal_settings, key)
    answer = viewer.get("/portal/audit")
    assert answer.status_code == 200
    assert "user.created" in events(answer.text)
    verdict = re.search(r'id="chain-verdict">(.*?)</p>', answer.text, re.S)
    assert verdict and "Intact." in verdict.group(1)


def test_a_changed_event_shows_the_chain_broken(
    gateway: RunningGateway,
    portal_settings: Settings,
    salesforce: SalesforceSim,
    database: Database,
) -> None:
    browser, key = sign_up(gateway)
    connect(gateway, key, salesforce, "Sales EU")

    async def tamper(services: Services) -> int:
        async with for_writing(services.engine).begin() as connection:
            # the database refuses changes to the trail: a forger removes that guard first
            if database.backend == "postgresql":
                await connection.execute(
                    text("ALTER TABLE audit_events DISABLE TRIGGER audit_events_append_only")
                )
            else:
                await connection.execute(text("DROP TRIGGER audit_events_no_update"))
            seq = await connection.scalar(
                select(AuditEvent.seq).where(AuditEvent.event == "application.created")
            )
            assert seq is not None
            await connection.execute(
                update(AuditEvent).where(AuditEvent.seq == seq).values(actor="someone else")
            )
            return int(seq)

    changed = with_services(portal_settings, tamper)
    verdict = re.search(r'id="chain-verdict">(.*?)</p>', browser.get("/portal/audit").text, re.S)
    assert verdict and f"Broken</span> at event #{changed}" in verdict.group(1)


def test_a_verdict_is_kept_for_minutes_not_checked_on_every_view(
    gateway: RunningGateway, portal_settings: Settings
) -> None:
    browser, _ = sign_up(gateway)
    checked = re.search(r"Every one of the (\d+) events", browser.get("/portal/audit").text)
    assert checked

    async def add_event(services: Services) -> None:
        async with session_factory(services.engine)() as session:
            organisation = await session.scalar(select(Organisation.id))  # the only one
        await services.audit.record("portal.test_event", organisation_id=organisation)

    with_services(portal_settings, add_event)
    again = browser.get("/portal/audit").text
    assert "portal.test_event" in again  # listed at once ...
    # ... but the chain is not walked again for this view: the verdict counts what it checked
    assert f"Every one of the {checked.group(1)} events" in again


# ---- the charts' geometry ----------------------------------------------------------------------


def test_an_axis_ends_on_a_round_number_in_at_most_five_steps() -> None:
    assert charts.scale_top(0) == (1, 1)
    assert charts.scale_top(7) == (8, 2)
    assert charts.scale_top(11) == (15, 5)
    assert charts.scale_top(4321) == (5000, 1000)


def test_a_bar_stacks_successes_errors_and_refusals_in_proportion() -> None:
    rows = [Counts("2026-01-01", 10, 4, 1), Counts("2026-01-02", 5)]
    chart = charts.columns("c", "Requests per day", rows, ["1 Jan", "2 Jan"])
    busy, quiet = chart.bars
    heights = {segment.kind: segment.height for segment in busy.segments}
    assert heights["errors"] == pytest.approx(3 * heights["limited"], abs=0.2)
    assert heights[""] == pytest.approx(2 * heights["errors"], abs=0.2)
    assert sum(heights.values()) == pytest.approx(2 * quiet.segments[0].height, abs=0.2)
    # stacked: each segment starts where the one below ends
    ordered = sorted(busy.segments, key=lambda segment: -segment.y)
    for lower, upper in itertools.pairwise(ordered):
        assert upper.y + upper.height == pytest.approx(lower.y, abs=0.2)
    assert busy.tooltip == "1 Jan: 10 requests, 4 errors, 1 rate-limited"
    assert "busiest was 1 Jan, with 10 requests" in chart.description
