"""Reading the usage counters back for one organisation: requests, errors and rate-limit refusals
per UTC day and per application (store/usage.py writes them), and the keys whose rate-limit
windows the portal shows."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date

from sqlalchemy import select

from crmgate.security.keys import KeyKind
from crmgate.store.db import SessionFactory
from crmgate.store.models import ApiKey, UsageCounter, User


@dataclass(frozen=True, slots=True)
class Counts:
    """What was counted under one label (a day, an application)."""

    label: str
    requests: int = 0
    errors: int = 0
    limited: int = 0


@dataclass(frozen=True, slots=True)
class Usage:
    per_day: list[Counts]  # every day of the period, oldest first, labelled with its ISO date
    per_application: list[Counts]  # by application digest ("" for none), the busiest first

    @property
    def total(self) -> Counts:
        return Counts(
            "",
            sum(day.requests for day in self.per_day),
            sum(day.errors for day in self.per_day),
            sum(day.limited for day in self.per_day),
        )


@dataclass(frozen=True, slots=True)
class LiveKey:
    """An unrevoked key of the organisation: which windows of the rate limits are its own."""

    id: str
    restricted: bool
    hint: str
    owner: str  # its user's name
    description: str | None


class UsageReport:
    def __init__(self, sessions: SessionFactory) -> None:
        self._sessions = sessions

    async def read(self, organisation_id: str, first: date, last: date) -> Usage:
        """The counts from ``first`` to ``last``, per day and per application, read in one
        statement: both views add up to the same totals even while a batch is written."""
        query = select(
            UsageCounter.day,
            UsageCounter.application_key,
            UsageCounter.requests,
            UsageCounter.errors,
            UsageCounter.limited,
        ).where(
            UsageCounter.organisation_id == organisation_id,
            UsageCounter.day >= first,
            UsageCounter.day <= last,
        )
        async with self._sessions() as session:
            rows = (await session.execute(query)).all()
        days = {
            date.fromordinal(n).isoformat(): [0, 0, 0]
            for n in range(first.toordinal(), last.toordinal() + 1)
        }
        applications: dict[str, list[int]] = {}
        for day, application, *counts in rows:
            for total in (days[day.isoformat()], applications.setdefault(application, [0, 0, 0])):
                total[:] = [a + b for a, b in zip(total, counts, strict=True)]
        per_application = [Counts(label, *counts) for label, counts in applications.items()]
        return Usage(
            per_day=[Counts(label, *counts) for label, counts in days.items()],
            per_application=sorted(per_application, key=lambda c: (-c.requests, c.label)),
        )

    async def live_keys(self, organisation_id: str, user_id: str | None = None) -> list[LiveKey]:
        """The organisation's unrevoked keys (only ``user_id``'s when given), user keys first."""
        query = (
            select(ApiKey, User.name)
            .join(User, User.id == ApiKey.user_id)
            .where(ApiKey.organisation_id == organisation_id, ApiKey.revoked_at.is_(None))
            .order_by(ApiKey.kind.desc(), User.name, ApiKey.created_at, ApiKey.id)
        )
        if user_id is not None:
            query = query.where(ApiKey.user_id == user_id)
        async with self._sessions() as session:
            rows = (await session.execute(query)).all()
        return [
            LiveKey(
                id=key.id,
                restricted=key.kind == KeyKind.RESTRICTED.value,
                hint=key.hint,
                owner=name,
                description=key.description,
            )
            for key, name in rows
        ]
