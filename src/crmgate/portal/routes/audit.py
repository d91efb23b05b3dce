"""The Audit trail page: the organisation's events, newest first, filtered by event (a name or
its beginning), actor and UTC dates through a GET form, paged; users and applications shown by
name; and the chain's verification state (portal/chain.py). Every member reads it, viewers
included: the trail is how an organisation checks what was done in its name."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from datetime import date, timedelta
from typing import Annotated
from urllib.parse import urlencode

from fastapi import APIRouter, Query, Request
from fastapi.responses import HTMLResponse

from crmgate import audit as trail
from crmgate.audit import Event
from crmgate.portal.web import BASE, page, require, services, visitor
from crmgate.query import Condition

router = APIRouter(prefix=BASE, include_in_schema=False)
PAGE_SIZE = 50
MAX_PAGE = 10_000
KNOWN_EVENTS = sorted(
    {
        value
        for name, value in vars(trail).items()
        if name.isupper() and isinstance(value, str) and re.fullmatch(r"[a-z_]+\.[a-z_]+", value)
    }
    | {"key.", "user.", "application.", "oauth.", "portal.", "limit.", "auth."}
)
SYSTEM_ACTORS = (
    ("system", "crmgate itself"),
    ("cli", "an operator's command"),
    ("anonymous", "someone not signed in"),
)
_APPLICATION_KEY = re.compile(r"^[0-9a-f]{40}$")


@dataclass(frozen=True, slots=True)
class Filters:
    event: str
    actor: str
    since: date | None
    until: date | None

    def conditions(self) -> list[Condition]:
        found = []
        if self.event:
            found.append(Condition("event", "startswith", self.event))
        if self.actor:
            found.append(Condition("actor", "eq", self.actor))
        if self.since is not None:
            found.append(Condition("created_at", "ge", f"{self.since.isoformat()}T00:00:00+00:00"))
        if self.until is not None:
            end = self.until + timedelta(days=1)
            found.append(Condition("created_at", "lt", f"{end.isoformat()}T00:00:00+00:00"))
        return found

    def query(self, page_number: int) -> str:
        values = {
            "event": self.event,
            "actor": self.actor,
            "since": self.since.isoformat() if self.since else "",
            "until": self.until.isoformat() if self.until else "",
            "page": str(page_number),
        }
        return urlencode({name: value for name, value in values.items() if value})


@dataclass(frozen=True, slots=True)
class Row:
    seq: int
    day: str
    time: str
    event: str
    actor: str
    target: str
    client: str
    details: list[tuple[str, str]]


def _day(text: str) -> date | None:
    try:
        return date.fromisoformat(text) if text else None
    except ValueError:
        return None


def _detail(value: object) -> str:
    return value if isinstance(value, str) else json.dumps(value, sort_keys=True)


def _row(event: Event, names: dict[str, str]) -> Row:
    target = event.target or ""
    if target in names:
        target = names[target]
    elif _APPLICATION_KEY.match(target):
        target = f"application {target[:8]}…"  # a deleted one: its key's beginning only
    return Row(
        seq=event.seq,
        day=event.created_at.strftime("%Y-%m-%d"),
        time=event.created_at.strftime("%H:%M:%S"),
        event=event.event,
        actor=names.get(event.actor, event.actor),
        target=target,
        client=event.client or "",
        details=[(name, _detail(value)) for name, value in sorted(event.details.items())],
    )


async def _names(
    request: Request, organisation_id: str
) -> tuple[dict[str, str], list[tuple[str, str]]]:
    """Who and what the organisation's events name: user ids and application keys -> how the
    page shows them; and the actors a filter offers (members, then crmgate's own)."""
    portal = services(request)
    names: dict[str, str] = {}
    members = []
    for page_number in range(1, 11):
        users = await portal.accounts.list_users(organisation_id, page=page_number, page_size=200)
        for member in users:
            names[member.id] = member.name
            members.append((member.id, f"{member.name} ({member.email})"))
        if len(users) < 200:
            break
    for page_number in range(1, 11):
        applications = await portal.applications.store.list_page(
            organisation_id, page=page_number, page_size=100
        )
        for app in applications:
            label = app.description or f"{app.type} application"
            names[app.key] = f"{label} (application {app.key[:8]}…)"
        if len(applications) < 100:
            break
    return names, [*members, *SYSTEM_ACTORS]


@router.get("/audit")
async def audit_page(
    request: Request,
    event: str = "",
    actor: str = "",
    since: str = "",
    until: str = "",
    page_text: Annotated[str, Query(alias="page")] = "1",
) -> HTMLResponse:
    who = await visitor(request)
    user = require(request, who)
    portal = services(request)
    digits = page_text.isascii() and page_text.isdigit() and len(page_text) <= 6
    page_number = min(max(int(page_text), 1), MAX_PAGE) if digits else 1
    filters = Filters(
        event.strip()[:64], actor.strip()[:64], _day(since.strip()), _day(until.strip())
    )
    error = None
    if (since.strip() and filters.since is None) or (until.strip() and filters.until is None):
        error = "Enter dates as YYYY-MM-DD."
    names, actors = await _names(request, user.organisation_id)
    conditions = filters.conditions()
    total = await portal.audit.count(user.organisation_id, conditions)
    events = await portal.audit.list_page(
        user.organisation_id, conditions=conditions, page=page_number, page_size=PAGE_SIZE
    )
    first = (page_number - 1) * PAGE_SIZE + 1
    return page(
        request,
        who,
        "audit.html",
        status=400 if error else 200,
        title="Audit trail",
        error=error,
        filters=filters,
        since_text=since.strip()[:10],
        until_text=until.strip()[:10],
        actors=actors,
        known_events=KNOWN_EVENTS,
        rows=[_row(found, names) for found in events],
        total=total,
        first=first,
        last=first + len(events) - 1,
        newer=f"{BASE}/audit?{filters.query(page_number - 1)}" if page_number > 1 else None,
        older=(
            f"{BASE}/audit?{filters.query(page_number + 1)}"
            if first + len(events) - 1 < total
            else None
        ),
        chain=await portal.chain.state(portal.audit),
    )
