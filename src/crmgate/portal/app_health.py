"""What the Applications page says of each connected CRM: authorized, expired (the CRM refused
its credentials or their renewal: authorize it again) or failing (most of today's calls through
it failed), from the application's row and today's usage counters."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from sqlalchemy import select

from crmgate.store.applications import ApplicationView
from crmgate.store.db import SessionFactory
from crmgate.store.models import UsageCounter, utcnow
from crmgate.store.usage import application_digest

# Failing: at least this many failed calls today, and at least this share of the day's calls.
# A few 404s among many good calls are a client's business, not a broken connection.
FAILING_ERRORS = 3
FAILING_SHARE = 0.5


@dataclass(frozen=True, slots=True)
class Health:
    state: str  # authorized | expired | failing
    label: str
    requests: int = 0  # today (UTC)
    errors: int = 0

    @property
    def ok(self) -> bool:
        return self.state == "authorized"


def health(view: ApplicationView, requests: int = 0, errors: int = 0) -> Health:
    if not view.is_authorized:
        return Health("expired", "Expired: authorize it again", requests, errors)
    if errors >= FAILING_ERRORS and errors >= FAILING_SHARE * requests:
        return Health(
            "failing", f"Failing: {errors} of {requests} calls failed today", requests, errors
        )
    return Health("authorized", "Authorized", requests, errors)


class ApplicationHealth:
    def __init__(self, sessions: SessionFactory) -> None:
        self._sessions = sessions

    async def of(self, organisation_id: str, views: Iterable[ApplicationView]) -> dict[str, Health]:
        """Each application's health, by key."""
        async with self._sessions() as session:
            rows = await session.execute(
                select(
                    UsageCounter.application_key, UsageCounter.requests, UsageCounter.errors
                ).where(
                    UsageCounter.organisation_id == organisation_id,
                    UsageCounter.day == utcnow().date(),
                )
            )
            today = {key: (requests, errors) for key, requests, errors in rows}
        # the counters name an application by its key's digest (store/usage.py)
        return {
            view.key: health(view, *today.get(application_digest(view.key), (0, 0)))
            for view in views
        }
