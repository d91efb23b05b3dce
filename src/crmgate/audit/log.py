"""AuditLog, the audit trail's one object: it records events and ties chain, anchor, queue, queries.

No event is lost to a crash between a change and its event: callers that change the database
pass their session to ``record``, so the event commits or rolls back with the change.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
import math
import time
from collections import Counter, OrderedDict
from collections.abc import Coroutine, Mapping
from typing import TYPE_CHECKING, Any

from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncSession

from crmgate.audit.anchor import (
    ANCHOR_INTERVAL,
    Anchoring,
    AuditAnchor,
    _Head,
    anchor_file_path,
)
from crmgate.audit.chain import NOISY, Chain, Detail, _clean, _Draft
from crmgate.audit.context import current
from crmgate.audit.keys import AuditKeyError, AuditKeys, key_file_path
from crmgate.audit.queries import Queries
from crmgate.audit.queue import CAP_WINDOW, FOLD_CLIENTS, NoisyQueue, _Fold, _Unsure
from crmgate.store.db import SessionFactory
from crmgate.store.models import utcnow

if TYPE_CHECKING:
    from crmgate.settings import Settings

log = logging.getLogger("crmgate.audit")


class AuditLog(Chain, Anchoring, NoisyQueue, Queries):
    """The audit trail of one gateway process: ``record`` appends (or queues) an event, ``flush``
    and ``close`` write the queue, ``verify`` checks the chain, ``list_page`` reads it back."""

    def __init__(
        self,
        sessions: SessionFactory,
        keys: AuditKeys,
        anchor: AuditAnchor | None = None,
        *,
        repeat_window: float = 10.0,
        flush_interval: float = 2.0,
        noisy_cap: int = 600,
        cap_window: float = CAP_WINDOW,
        fold_clients: int = FOLD_CLIENTS,
        anchor_interval: float = ANCHOR_INTERVAL,
    ) -> None:
        self._sessions = sessions
        self.keys = keys
        self.anchor = anchor
        self._repeat_window = repeat_window
        self._flush_interval = flush_interval
        self._cap = noisy_cap
        self._cap_window = cap_window
        self._fold_clients = max(fold_clients, 1)
        self._anchor_interval = anchor_interval
        # (event, client, organisation) -> its window, least recently seen first
        self._recent: OrderedDict[tuple[str, str | None, str | None], _Fold] = OrderedDict()
        # noisy events waiting for the flush, and the cap's window: its start, how many events
        # it queued, how many of each kind it dropped
        self._queue: list[_Draft] = []
        self._unsure: _Unsure | None = None
        self._window_start = time.monotonic()
        self._window_count = 0
        self._dropped: Counter[str] = Counter()
        self._timer: asyncio.Task[None] | None = None
        self._writing: asyncio.Lock | None = None
        # heads this process chained, newest last (committed or not: the anchor checks), the
        # key that chained each; and the task that advances the anchor file
        self._chained: list[_Head] = []
        self._anchor_task: asyncio.Task[None] | None = None
        self._anchor_written = -math.inf  # monotonic time
        self._closed = False
        # every timer task, the ones past their sleep (writing) included: close() waits for
        # those, so no query is still in flight when the event loop ends
        self._tasks: set[asyncio.Task[None]] = set()

    @classmethod
    def from_settings(cls, sessions: SessionFactory, settings: Settings) -> AuditLog:
        return cls(
            sessions,
            AuditKeys(key_file_path(settings.data_dir)),
            AuditAnchor(anchor_file_path(settings.data_dir)),
            repeat_window=settings.audit_repeat_window,
            flush_interval=settings.audit_flush_interval,
            noisy_cap=settings.audit_noisy_cap,
        )

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
        session: AsyncSession | None = None,
    ) -> int | None:
        """Append one event; what is not given comes from the request (or CLI) being served.

        With ``session`` (a write transaction of the caller), the event is written in it, as
        the transaction's last statement: it commits or rolls back with the change it records,
        and a failure to write it fails the transaction. Without, it gets a transaction of its
        own, and a failure is logged. Noisy events are queued for the flush instead.

        Returns its number, or None when it was queued or folded (noisy events) or could not be
        written (logged)."""
        draft = self._draft(event, organisation_id, actor, client, request_id, target, details)
        if draft.event in NOISY:
            self._enqueue(draft)
            return None
        if session is not None:
            return (await self._append(session, [draft]))[0][0]
        try:
            async with self._sessions.begin() as own:
                return (await self._append(own, [draft]))[0][0]
        except (SQLAlchemyError, AuditKeyError):
            log.exception("audit: could not record %s", event)
            return None

    def _draft(
        self,
        event: str,
        organisation_id: str | None,
        actor: str | None,
        client: str | None,
        request_id: str | None,
        target: str | None,
        details: Mapping[str, Detail] | None,
    ) -> _Draft:
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
        if principal is not None:
            # the credential that acted, not only its user: a restricted key's deeds are told
            # apart from its user's full key's
            details = {
                **(details or {}),
                "credential": principal.key_id,
                "credential_kind": "restricted" if principal.scope is not None else "user",
            }
        if context is not None:
            client = client or context.client
            request_id = request_id or context.request_id
        return _Draft(
            created_at=utcnow(),
            event=event[:64],
            organisation_id=organisation_id,
            actor=actor[:64],
            client=client[:64] if client else None,
            request_id=request_id,
            target=target[:100] if target else None,
            details=_clean(details),
        )

    def _start(self, work: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
        task = asyncio.get_running_loop().create_task(work, context=contextvars.Context())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def close(self) -> None:
        """At shutdown: the queue written (with the summary of what the cap dropped), and the
        anchor file advanced to the last head."""
        self._closed = True  # no new timers: what is due is done here
        for task in (self._timer, self._anchor_task):
            if task is not None:  # still registered: still asleep, nothing in flight
                task.cancel()
        self._timer = self._anchor_task = None
        # the ones already writing finish their write (a query cancelled mid-way would answer
        # after the event loop is gone)
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if not await self.flush(closing=True):
            log.error("audit: %d queued events could not be written at shutdown", len(self._queue))
        try:
            await self.write_anchor()
        except (SQLAlchemyError, OSError):
            log.exception("audit: could not advance the anchor file at shutdown")
