"""Request counters per user and day, and per organisation, day and application (how many
requests, errors and rate-limit refusals: the portal's usage page), counted in memory and written
in batches.

Counting in the database on every request would cost a write per call; instead each process adds
up its counts and upserts them every few seconds (and once more at shutdown). A crash loses at most
one interval of counts, never a request.

Application keys are credentials (the rate limits only ever see a digest, the access log 8
characters): the counters name an application by ``application_digest`` of its key, and "" for
calls that reach none.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from collections import Counter
from datetime import date

from sqlalchemy import select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncSession

from crmgate.store.db import SessionFactory
from crmgate.store.models import Organisation, UsageCounter, UsageDaily, User, utcnow

log = logging.getLogger("crmgate.usage")

# (organisation, UTC day, application digest or "") -> [requests, errors, rate-limited]
Traffic = dict[tuple[str, date, str], list[int]]


def application_digest(application_key: str) -> str:
    """What the counters hold for an application: 40 hex characters of its key's SHA-256 (the
    key has 160 random bits: the digest cannot be turned back into it)."""
    return hashlib.sha256(application_key.encode()).hexdigest()[:40]


class UsageRecorder:
    def __init__(self, sessions: SessionFactory) -> None:
        self._sessions = sessions
        self._pending: Counter[tuple[str, date, bool]] = Counter()
        self._traffic: Traffic = {}

    def record(self, user_id: str, *, internal: bool) -> None:
        self._pending[(user_id, utcnow().date(), internal)] += 1

    def count(
        self, organisation_id: str, application_key: str | None, status: int, *, limited: bool
    ) -> None:
        """One answer of the organisation's: an error when ``status`` is 400 or more (a
        rate-limit refusal, ``limited``, is one too)."""
        subject = application_digest(application_key) if application_key else ""
        counts = self._traffic.setdefault((organisation_id, utcnow().date(), subject), [0, 0, 0])
        counts[0] += 1
        counts[1] += status >= 400
        counts[2] += limited

    async def flush(self) -> None:
        if not self._pending and not self._traffic:
            return
        batch, self._pending = self._pending, Counter()
        traffic, self._traffic = self._traffic, {}
        rows: dict[tuple[str, date], list[int]] = {}
        for (user_id, day, internal), count in batch.items():
            rows.setdefault((user_id, day), [0, 0])[1 if internal else 0] += count
        try:
            async with self._sessions.begin() as session:
                await _write_traffic(session, traffic)
                existing = set(
                    await session.scalars(
                        select(User.id).where(User.id.in_({user for user, _ in rows}))
                    )
                )
                values = [
                    {
                        "user_id": user_id,
                        "day": day,
                        "request_count": counts[0],
                        "internal_request_count": counts[1],
                    }
                    for (user_id, day), counts in rows.items()
                    if user_id in existing
                ]
                if not values:
                    return
                dialect = (await session.connection()).dialect.name
                insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
                statement = insert(UsageDaily).values(values)
                await session.execute(
                    statement.on_conflict_do_update(
                        index_elements=[UsageDaily.user_id, UsageDaily.day],
                        set_={
                            "request_count": UsageDaily.request_count
                            + statement.excluded.request_count,
                            "internal_request_count": UsageDaily.internal_request_count
                            + statement.excluded.internal_request_count,
                        },
                    )
                )
        except SQLAlchemyError:
            # Put the counts back: they are written with the next batch.
            self._pending.update(batch)
            for subject, counts in traffic.items():
                again = self._traffic.setdefault(subject, [0, 0, 0])
                again[:] = [a + b for a, b in zip(again, counts, strict=True)]
            log.warning("could not write request counters; will retry", exc_info=True)

    async def run(self, interval: float) -> None:
        while True:
            await asyncio.sleep(interval)
            try:
                await self.flush()
            except Exception:  # keep counting whatever happened to one batch
                log.exception("request counters: flush failed")


async def _write_traffic(session: AsyncSession, traffic: Traffic) -> None:
    """Add ``traffic`` to the counters, in the caller's transaction (organisations deleted since
    are left out)."""
    if not traffic:
        return
    organisations = {organisation for organisation, _, _ in traffic}
    existing = set(
        await session.scalars(select(Organisation.id).where(Organisation.id.in_(organisations)))
    )
    values = [
        {
            "organisation_id": organisation,
            "day": day,
            "application_key": subject,
            "requests": counts[0],
            "errors": counts[1],
            "limited": counts[2],
        }
        for (organisation, day, subject), counts in traffic.items()
        if organisation in existing
    ]
    if not values:
        return
    dialect = (await session.connection()).dialect.name
    insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
    statement = insert(UsageCounter).values(values)
    await session.execute(
        statement.on_conflict_do_update(
            index_elements=[
                UsageCounter.organisation_id,
                UsageCounter.day,
                UsageCounter.application_key,
            ],
            set_={
                column: getattr(UsageCounter, column) + getattr(statement.excluded, column)
                for column in ("requests", "errors", "limited")
            },
        )
    )
