"""Reading the audit trail back: an organisation's events listed, counted, filtered; all events."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from typing import Any

from sqlalchemy import Select, func, select

from crmgate.audit.chain import HEAD_ID, Event, _event
from crmgate.query import Condition, SortKey
from crmgate.store.db import SessionFactory
from crmgate.store.filtering import FieldSpec, order_by, where
from crmgate.store.models import AuditEvent, AuditHead

# Fields the API's filter and sort may name.
FIELDS: dict[str, FieldSpec] = {
    "id": FieldSpec(AuditEvent.seq),
    "event": FieldSpec(AuditEvent.event),
    "actor": FieldSpec(AuditEvent.actor),
    "target": FieldSpec(AuditEvent.target),
    "client": FieldSpec(AuditEvent.client),
    "request_id": FieldSpec(AuditEvent.request_id),
    "created_at": FieldSpec(AuditEvent.created_at, "datetime"),
}


class Queries:
    """AuditLog's part that reads events back (its sessions are set in ``AuditLog.__init__``)."""

    _sessions: SessionFactory

    def _filtered(
        self, query: Select[Any], organisation_id: str, conditions: Sequence[Condition]
    ) -> Select[Any]:
        # rows beyond the head were never chained by crmgate (verify names them): not shown
        head = select(AuditHead.seq).where(AuditHead.id == HEAD_ID).scalar_subquery()
        return query.where(
            AuditEvent.organisation_id == organisation_id,
            AuditEvent.seq <= head,
            where(FIELDS, conditions),
        )

    async def list_page(
        self,
        organisation_id: str,
        *,
        conditions: Sequence[Condition] = (),
        sort: Sequence[SortKey] = (),
        page: int = 1,
        page_size: int = 25,
    ) -> list[Event]:
        """One organisation's events, newest first unless ``sort`` says otherwise."""
        order = order_by(FIELDS, sort or (SortKey("id", descending=True),), AuditEvent.seq)
        query = self._filtered(select(AuditEvent), organisation_id, conditions).order_by(*order)
        query = query.offset((page - 1) * page_size).limit(page_size)
        async with self._sessions() as session:
            return [_event(row) for row in (await session.scalars(query)).all()]

    async def count(self, organisation_id: str, conditions: Sequence[Condition] = ()) -> int:
        query = self._filtered(
            select(func.count()).select_from(AuditEvent), organisation_id, conditions
        )
        async with self._sessions() as session:
            return int(await session.scalar(query) or 0)

    async def all_events(self, batch_size: int = 1000) -> list[Event]:
        return [event async for event in self._walk(batch_size)]

    async def _walk(self, batch_size: int = 1000, upto: int | None = None) -> AsyncIterator[Event]:
        after = 0
        while True:
            async with self._sessions() as session:
                rows = (
                    await session.scalars(
                        select(AuditEvent)
                        .where(
                            AuditEvent.seq > after,
                            *([AuditEvent.seq <= upto] if upto is not None else []),
                        )
                        .order_by(AuditEvent.seq)
                        .limit(batch_size)
                    )
                ).all()
            for row in rows:
                yield _event(row)
            if len(rows) < batch_size:
                return
            after = rows[-1].seq
