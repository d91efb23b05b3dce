"""Request counters per user and day, counted in memory and written in batches.

Counting in the database on every request would cost a write per call; instead each process adds
up its counts and upserts them every few seconds (and once more at shutdown). A crash loses at most
one interval of counts, never a request.
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from datetime import date

from sqlalchemy import select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import SQLAlchemyError

from crmgate.store.db import SessionFactory
from crmgate.store.models import UsageDaily, User, utcnow

log = logging.getLogger("crmgate.usage")


class UsageRecorder:
    def __init__(self, sessions: SessionFactory) -> None:
        self._sessions = sessions
        self._pending: Counter[tuple[str, date, bool]] = Counter()

    def record(self, user_id: str, *, internal: bool) -> None:
        self._pending[(user_id, utcnow().date(), internal)] += 1

    async def flush(self) -> None:
        if not self._pending:
            return
        batch, self._pending = self._pending, Counter()
        rows: dict[tuple[str, date], list[int]] = {}
        for (user_id, day, internal), count in batch.items():
            rows.setdefault((user_id, day), [0, 0])[1 if internal else 0] += count
        try:
            async with self._sessions.begin() as session:
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
            log.warning("could not write request counters; will retry", exc_info=True)

    async def run(self, interval: float) -> None:
        while True:
            await asyncio.sleep(interval)
            try:
                await self.flush()
            except Exception:  # keep counting whatever happened to one batch
                log.exception("request counters: flush failed")
