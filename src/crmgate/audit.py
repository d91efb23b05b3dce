"""The audit trail: an append-only, hash-chained log of security events.

Every event (a key created, an application deleted, an authentication that failed, ...) is one
row of ``audit_events``, numbered 1, 2, 3, ... (``seq``). Each row stores
``hash = SHA-256(previous row's hash + canonical JSON of this event)``, the first one chained to
``GENESIS``, and the chain head (the last seq and hash) lives in the one row of ``audit_head``.
Editing an event changes its hash; deleting one leaves a gap and a broken link; deleting the last
ones disagrees with the head. ``verify()`` (``crmgate audit verify``) walks the chain and names
the first broken event.

Appends are serialised by the head row: each one starts with ``UPDATE audit_head SET seq = seq
+ 1 ... RETURNING``, which locks that row until the commit (on PostgreSQL, across every gateway
process; SQLite's write transactions are serial anyway), so two appends never take the same
number or chain to the same predecessor.

Who, where and which request: a request's client address and id are bound to the running task
by the request middleware (``bind_request``), and its principal is read from the request's
state once authentication put it there; ``record`` falls back on them for what it is not told.
No secret ever goes into an event: details hold ids, key hints, names of fields, counts.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections.abc import Mapping, Sequence
from contextvars import ContextVar
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Select, func, select, update
from sqlalchemy.exc import SQLAlchemyError

from crmgate.logs import redact
from crmgate.query import Condition, SortKey
from crmgate.store.db import SessionFactory
from crmgate.store.filtering import FieldSpec, order_by, where
from crmgate.store.models import AuditEvent, AuditHead, utcnow

log = logging.getLogger("crmgate.audit")

GENESIS = "0" * 64  # the "previous hash" of event 1
HEAD_ID = 1
MAX_TEXT = 200  # a detail's text is cut to this many characters

# Events recorded where they happen (docs/security.md lists them).
KEY_CREATED = "key.created"
KEY_ROTATED = "key.rotated"
KEY_REVOKED = "key.revoked"
USER_CREATED = "user.created"
USER_UPDATED = "user.updated"
USER_DELETED = "user.deleted"
APPLICATION_CREATED = "application.created"
APPLICATION_UPDATED = "application.updated"
APPLICATION_DELETED = "application.deleted"
OAUTH_CONNECTED = "oauth.connected"
OAUTH_FAILED = "oauth.failed"
TOKEN_REFRESHED = "token.refreshed"  # noqa: S105 (an event name)
REAUTHORIZATION_NEEDED = "application.reauthorization_needed"
AUTH_FAILED = "auth.failed"
LIMIT_EXCEEDED = "limit.exceeded"

# Events an attacker can cause at will: one row per client (and organisation) per window, the
# next one saying how many were folded into it, so a burst of them cannot flood the table.
NOISY = frozenset({AUTH_FAILED, LIMIT_EXCEEDED})

Detail = str | int | float | bool | None | list[str]


@dataclass(frozen=True, slots=True)
class RequestContext:
    """Where an event comes from: the HTTP request being served, or the operator's CLI."""

    client: str | None
    request_id: str | None
    scope: Mapping[str, Any] | None = None  # the ASGI scope: its state holds the principal
    actor: str | None = None

    @property
    def principal(self) -> Any:
        if self.scope is None:
            return None
        return self.scope.get("state", {}).get("principal")


_context: ContextVar[RequestContext | None] = ContextVar("crmgate_audit_context", default=None)


def bind_request(scope: Mapping[str, Any], request_id: str, client: str | None) -> None:
    """Called by the request middleware: events of this request carry its client address (the
    connection's peer, or what a trusted proxy says: api/clients.py) and its request id."""
    _context.set(RequestContext(client, request_id, scope))


def bind_cli() -> None:
    """Events of an operator command: actor ``cli``."""
    _context.set(RequestContext(None, None, None, actor="cli"))


def current() -> RequestContext | None:
    return _context.get()


@dataclass(frozen=True, slots=True)
class Event:
    seq: int
    created_at: datetime
    event: str
    organisation_id: str | None
    actor: str
    client: str | None
    request_id: str | None
    target: str | None
    details: dict[str, Any]
    previous_hash: str
    hash: str

    def canonical(self) -> str:
        """What the hash covers: every field but the hashes, as sorted compact JSON."""
        return json.dumps(
            {
                "seq": self.seq,
                "created_at": self.created_at.isoformat(),
                "event": self.event,
                "organisation_id": self.organisation_id,
                "actor": self.actor,
                "client": self.client,
                "request_id": self.request_id,
                "target": self.target,
                "details": self.details,
            },
            sort_keys=True,
            separators=(",", ":"),
            ensure_ascii=False,
        )


def chain_hash(previous_hash: str, event: Event) -> str:
    return hashlib.sha256((previous_hash + event.canonical()).encode()).hexdigest()


def _event(row: AuditEvent) -> Event:
    return Event(
        seq=row.seq,
        created_at=row.created_at,
        event=row.event,
        organisation_id=row.organisation_id,
        actor=row.actor,
        client=row.client,
        request_id=row.request_id,
        target=row.target,
        details=json.loads(row.details),
        previous_hash=row.previous_hash,
        hash=row.hash,
    )


def _clean(details: Mapping[str, Detail] | None) -> dict[str, Any]:
    """Plain JSON values only, text cut short and masked where it looks like a key (a second
    line of defence: callers put no secret here)."""

    def text(value: str) -> str:
        return redact(value)[:MAX_TEXT]

    cleaned: dict[str, Any] = {}
    for name, value in (details or {}).items():
        if value is None:
            continue
        if isinstance(value, str):
            cleaned[name] = text(value)
        elif isinstance(value, list):
            cleaned[name] = [text(str(item)) for item in value][:50]
        else:
            cleaned[name] = value
    return cleaned


@dataclass(frozen=True, slots=True)
class Verification:
    intact: bool
    count: int  # events checked
    head_seq: int
    head_hash: str
    broken_seq: int | None = None
    reason: str | None = None


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


class AuditLog:
    def __init__(self, sessions: SessionFactory, repeat_window: float = 10.0) -> None:
        self._sessions = sessions
        self._repeat_window = repeat_window
        # (event, client, organisation) -> (monotonic time of the last row, events folded since)
        self._recent: dict[tuple[str, str | None, str | None], tuple[float, int]] = {}

    async def record(
        self,
        event: str,
        *,
        organisation_id: str | None = None,
        actor: str | None = None,
        client: str | None = None,
        request_id: str | None = None,
        target: str | None = None,
        details: Mapping[str, Detail] | None = None,
    ) -> int | None:
        """Append one event; what is not given comes from the request (or CLI) being served.
        Returns its number, or None when it was folded into a recent one (noisy events) or could
        not be written (logged: the action it records has happened already)."""
        context = current()
        principal = context.principal if context else None
        if actor is None:
            if context is not None and context.actor:
                actor = context.actor
            elif principal is not None:
                actor = principal.user_id
            else:
                actor = "anonymous" if context is not None else "system"
        if organisation_id is None and principal is not None:
            organisation_id = principal.organisation_id
        if context is not None:
            client = client or context.client
            request_id = request_id or context.request_id
        cleaned = _clean(details)
        if event in NOISY:
            repeated = self._fold(event, client, organisation_id)
            if repeated is None:
                return None
            if repeated:
                cleaned["repeated"] = repeated
        try:
            return await self._append(
                event, organisation_id, actor, client, request_id, target, cleaned
            )
        except SQLAlchemyError:
            log.exception("audit: could not record %s", event)
            return None

    def _fold(self, event: str, client: str | None, organisation_id: str | None) -> int | None:
        """None when this event is folded into the last one of its client; otherwise how many
        were folded since the last row."""
        key = (event, client, organisation_id)
        now = time.monotonic()
        last = self._recent.get(key)
        if last is not None and now - last[0] < self._repeat_window:
            self._recent[key] = (last[0], last[1] + 1)
            return None
        if len(self._recent) > 10_000:
            self._recent = {k: v for k, v in self._recent.items() if now - v[0] < 60}
        self._recent[key] = (now, 0)
        return last[1] if last is not None else 0

    async def _append(
        self,
        event: str,
        organisation_id: str | None,
        actor: str,
        client: str | None,
        request_id: str | None,
        target: str | None,
        details: dict[str, Any],
    ) -> int:
        async with self._sessions.begin() as session:
            # Taking the next number locks the head row until the commit: appends are serial.
            seq, previous = (
                await session.execute(
                    update(AuditHead)
                    .where(AuditHead.id == HEAD_ID)
                    .values(seq=AuditHead.seq + 1)
                    .returning(AuditHead.seq, AuditHead.hash)
                )
            ).one()
            entry = Event(
                seq=seq,
                created_at=utcnow(),
                event=event[:64],
                organisation_id=organisation_id,
                actor=actor[:64],
                client=client[:64] if client else None,
                request_id=request_id,
                target=target[:100] if target else None,
                details=details,
                previous_hash=previous,
                hash="",
            )
            digest = chain_hash(previous, entry)
            session.add(
                AuditEvent(
                    seq=seq,
                    created_at=entry.created_at,
                    event=entry.event,
                    organisation_id=organisation_id,
                    actor=entry.actor,
                    client=entry.client,
                    request_id=request_id,
                    target=entry.target,
                    details=json.dumps(details, sort_keys=True, ensure_ascii=False),
                    previous_hash=previous,
                    hash=digest,
                )
            )
            await session.execute(
                update(AuditHead).where(AuditHead.id == HEAD_ID).values(hash=digest)
            )
        return int(seq)

    # ---- reading --------------------------------------------------------------------------------

    def _filtered(
        self, query: Select[Any], organisation_id: str, conditions: Sequence[Condition]
    ) -> Select[Any]:
        return query.where(AuditEvent.organisation_id == organisation_id, where(FIELDS, conditions))

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

    async def _walk(self, batch_size: int = 1000, upto: int | None = None) -> Any:
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

    # ---- checking -------------------------------------------------------------------------------

    async def verify(self, batch_size: int = 1000) -> Verification:
        """Walk the chain up to the head read first (events appended meanwhile, by a running
        gateway, are the next run's); the first event that does not fit is named."""
        async with self._sessions() as session:
            head = await session.get(AuditHead, HEAD_ID)
        if head is None:
            return Verification(False, 0, 0, "", 0, "the chain head (audit_head) is missing")
        previous, expected, count = GENESIS, 1, 0
        async for event in self._walk(batch_size, upto=head.seq):
            broken = _check(event, expected, previous)
            if broken is not None:
                return Verification(False, count, head.seq, head.hash, *broken)
            previous, expected, count = event.hash, event.seq + 1, count + 1
        last = expected - 1
        if head.seq != last or head.hash != previous:
            return Verification(
                False,
                count,
                head.seq,
                head.hash,
                last + 1,
                f"event #{last + 1} and any after it are missing: the chain ends at #{last}, "
                f"its head says #{head.seq}",
            )
        return Verification(True, count, head.seq, head.hash)


def _check(event: Event, expected: int, previous: str) -> tuple[int, str] | None:
    if event.seq != expected:
        return (
            expected,
            f"event #{expected} is missing (deleted): #{event.seq} follows #{expected - 1}",
        )
    if event.previous_hash != previous:
        return event.seq, (
            f"event #{event.seq} ({event.event}) does not follow #{event.seq - 1}: its "
            "previous_hash differs from that event's hash (an event was changed or replaced)"
        )
    if chain_hash(previous, event) != event.hash:
        return event.seq, f"event #{event.seq} ({event.event}) was changed: its hash does not match"
    return None
