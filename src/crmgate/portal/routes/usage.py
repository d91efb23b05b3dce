"""The Usage page: the organisation's requests per UTC day (the last 30) and per application,
errors and rate-limit refusals among them, as server-drawn charts with their numbers in tables
(store/usage_report.py reads what api/counting.py counts); and the rate limits' windows as they
are now, per key and per application (OWASP API4:2023: a client sees its quota before it hits
it). Every member reads it; only admins see the other members' keys."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from datetime import date, timedelta

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse

from crmgate.limits import Window
from crmgate.portal import charts
from crmgate.portal.web import BASE, page, require, services, visitor
from crmgate.store.applications import ApplicationView
from crmgate.store.models import utcnow
from crmgate.store.usage import application_digest
from crmgate.store.usage_report import Counts

router = APIRouter(prefix=BASE, include_in_schema=False)
DAYS = 30
NO_APPLICATION = "No application (crmgate's own routes)"
DELETED = "A deleted application"


@dataclass(frozen=True, slots=True)
class Row:
    """One application's line: its counts and how the page names it."""

    name: str
    type: str
    hint: str
    counts: Counts


@dataclass(frozen=True, slots=True)
class Limits:
    """One key's or application's rate-limit windows as they are now."""

    name: str
    detail: str
    windows: tuple[Window, ...]


def _name(application: ApplicationView) -> str:
    return application.description or f"{application.type} application"


async def _applications(request: Request, organisation_id: str) -> list[ApplicationView]:
    store = services(request).applications.store
    found: list[ApplicationView] = []
    page_number = 1
    while True:
        batch = await store.list_page(organisation_id, page=page_number, page_size=100)
        found.extend(batch)
        if len(batch) < 100:
            return found
        page_number += 1


def _rows(counted: list[Counts], applications: list[ApplicationView]) -> list[Row]:
    by_digest = {application_digest(app.key): app for app in applications}
    rows = []
    for counts in counted:
        app = by_digest.get(counts.label)
        if app is not None:
            rows.append(Row(_name(app), app.type, app.key[:8], counts))
        else:
            rows.append(Row(NO_APPLICATION if not counts.label else DELETED, "", "", counts))
    return rows


@router.get("/usage")
async def usage(request: Request) -> HTMLResponse:
    who = await visitor(request)
    user = require(request, who)
    portal = services(request)
    organisation_id = user.organisation_id
    last = utcnow().date()
    first = last - timedelta(days=DAYS - 1)
    counted, applications, keys = await asyncio.gather(
        portal.usage.read(organisation_id, first, last),
        _applications(request, organisation_id),
        portal.usage.live_keys(organisation_id, None if user.is_admin else user.user_id),
    )
    days = counted.per_day
    rows = _rows(counted.per_application, applications)
    key_windows = await asyncio.gather(
        *(portal.limits.user_key_windows(organisation_id, key.id) for key in keys)
    )
    app_windows = await asyncio.gather(
        *(portal.limits.application_windows(organisation_id, app.key) for app in applications)
    )
    key_limits = [
        Limits(
            f"{key.hint}…",
            (f"restricted key of {key.owner}" if key.restricted else f"user key of {key.owner}")
            + (f": {key.description}" if key.description else ""),
            windows,
        )
        for key, windows in zip(keys, key_windows, strict=True)
    ]
    app_limits = [
        Limits(_name(app), f"{app.type}, key {app.key[:8]}…", windows)
        for app, windows in zip(applications, app_windows, strict=True)
    ]
    day_names = [date.fromisoformat(day.label).strftime("%d %b") for day in days]
    return page(
        request,
        who,
        "usage.html",
        title="Usage",
        first=first,
        last=last,
        days=days,
        rows=rows,
        total=counted.total,
        per_day=charts.columns("per-day", "Requests per day", days, day_names),
        per_application=charts.rows_chart(
            "per-application",
            "Requests per application",
            [row.counts for row in rows],
            [row.name for row in rows],
        ),
        key_limits=key_limits,
        app_limits=app_limits,
        now=time.time(),
        flush=portal.settings.usage_flush_interval,
        number=charts.number,
    )
