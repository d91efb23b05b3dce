"""Events and their keyed hash chain: hashing, appending under the head row's lock, verifying.

Appends are serialised by the head row: each one starts with ``UPDATE audit_head SET seq = seq
+ 1 ... RETURNING``, which locks that row until the commit (on PostgreSQL, across every gateway
process; SQLite's write transactions are serial anyway), so two appends never take the same
number or chain to the same predecessor. Callers append last in their transaction, so the head
stays locked only for the commit.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import math
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy import Select, func, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from crmgate.audit.anchor import AuditAnchor, Witness
from crmgate.audit.keys import AuditKeyError, AuditKeys
from crmgate.logs import redact
from crmgate.store.db import SessionFactory
from crmgate.store.models import AuditEvent, AuditHead

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
AUDIT_DROPPED = "audit.dropped"  # noisy events over the cap of a window, counted

# Events an attacker can cause at will: one row per client (and organisation) per window, and
# one at its end counting those folded into it; queued, never written on the request path.
NOISY = frozenset({AUTH_FAILED, LIMIT_EXCEEDED})

Detail = str | int | float | bool | None | list[str]


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
    key_id: str | None = None  # None: chained before keyed chains, with plain SHA-256

    def canonical(self) -> str:
        """What the hash covers: every field but the hashes, as sorted compact JSON (the key
        id too, for keyed events; unkeyed ones keep the form they were chained with)."""
        covered: dict[str, Any] = {
            "seq": self.seq,
            "created_at": self.created_at.isoformat(),
            "event": self.event,
            "organisation_id": self.organisation_id,
            "actor": self.actor,
            "client": self.client,
            "request_id": self.request_id,
            "target": self.target,
            "details": self.details,
        }
        if self.key_id is not None:
            covered["key_id"] = self.key_id
        return json.dumps(covered, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def chain_hash(previous_hash: str, event: Event, key: bytes | None = None) -> str:
    """HMAC-SHA256 under ``key``; plain SHA-256 for the events chained before keys (None)."""
    data = (previous_hash + event.canonical()).encode()
    if key is None:
        return hashlib.sha256(data).hexdigest()
    return hmac.new(key, data, hashlib.sha256).hexdigest()


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
        key_id=row.key_id,
    )


def _clean(details: Mapping[str, Any] | None) -> dict[str, Any]:
    """Plain JSON values only (anything else becomes its ``str()``, so one odd value can fail
    neither a caller's change nor a flush), text cut short and masked where it looks like a key
    (a second line of defence: callers put no secret here)."""

    def text(value: object) -> str:
        return redact(str(value))[:MAX_TEXT]

    cleaned: dict[str, Any] = {}
    for name, value in (details or {}).items():
        if value is None:
            continue
        if isinstance(value, bool | int) or (isinstance(value, float) and math.isfinite(value)):
            cleaned[text(name)] = value
        elif isinstance(value, list | tuple | set | frozenset):
            cleaned[text(name)] = [text(item) for item in value][:50]
        else:
            cleaned[text(name)] = text(value)
    return cleaned


@dataclass(frozen=True, slots=True)
class _Draft:
    """An event before it has a number: what ``record`` was told, filled in from the context."""

    created_at: datetime
    event: str
    organisation_id: str | None
    actor: str
    client: str | None
    request_id: str | None
    target: str | None
    details: dict[str, Any]


@dataclass(frozen=True, slots=True)
class Verification:
    intact: bool
    count: int  # events checked
    head_seq: int
    head_hash: str
    broken_seq: int | None = None
    reason: str | None = None
    keyed: int = 0  # of the events checked, how many were chained under an audit key
    anchored: int | None = None  # the highest witnessed seq the chain was checked against


def _any_keyed() -> Select[Any]:
    """The newest keyed event's number, if any (from the end: that is where keyed events are)."""
    return (
        select(AuditEvent.seq)
        .where(AuditEvent.key_id.is_not(None))
        .order_by(AuditEvent.seq.desc())
        .limit(1)
    )


class Chain:
    """AuditLog's part that appends to the chain and verifies it (its state is set in
    ``AuditLog.__init__``)."""

    keys: AuditKeys
    anchor: AuditAnchor | None
    _sessions: SessionFactory

    if TYPE_CHECKING:  # the anchor's and the queries' parts of AuditLog

        def _chained_head(self, seq: int, digest: str, signing_id: str, key: bytes) -> None: ...

        def _walk(
            self, batch_size: int = 1000, upto: int | None = None
        ) -> AsyncIterator[Event]: ...

    async def check_keys(self) -> None:
        """At start-up: refuse (AuditKeyError) a key file that is unusable, missing while the
        chain holds keyed events (lost, or a host it was never copied to), or without the key
        that chained the newest event (another host's file)."""
        exists = self.keys.exists()
        async with self._sessions() as session:
            if not exists:
                keyed = await session.scalar(_any_keyed())
                if keyed is not None:
                    raise AuditKeyError(self._missing_key_file(keyed))
                return
            newest = await session.scalar(
                select(AuditEvent.key_id).join(AuditHead, AuditHead.seq == AuditEvent.seq)
            )
        if newest is not None and newest not in self.keys.all():
            raise AuditKeyError(
                f"the audit key file {self.keys.path} does not hold audit key {newest}, which "
                "chained the newest event: this host's file is not the one the other gateway "
                "hosts use; copy theirs here"
            )

    def _missing_key_file(self, keyed: int) -> str:
        return (
            f"the audit key file {self.keys.path} is missing, but the audit trail holds events "
            f"chained under an audit key (#{keyed}): restore the file from the backup of the "
            "data dir, or copy it from another gateway host. crmgate makes no new key while "
            "keyed events exist (it would hide the old ones from verify)"
        )

    async def _append(
        self, session: AsyncSession, drafts: Sequence[_Draft]
    ) -> list[tuple[int, str]]:
        """Chain ``drafts`` in ``session``'s transaction, in order; their numbers and hashes.

        Lock order: a caller's transaction locks its rows first (an application, a user), then
        the cache invalidation head (``_changed``), then, here, the audit head, last: every
        transaction takes them in that order, so none waits on another in a cycle, and the
        audit head (every process's appends wait on it) is held only until the commit."""
        signing = self.keys.signing() if self.keys.exists() else None  # file I/O, unlocked
        chained: list[tuple[int, str]] = []
        for draft in drafts:
            # Taking the next number locks the head row until the commit: appends are serial.
            seq, previous = (
                await session.execute(
                    update(AuditHead)
                    .where(AuditHead.id == HEAD_ID)
                    .values(seq=AuditHead.seq + 1)
                    .returning(AuditHead.seq, AuditHead.hash)
                )
            ).one()
            if signing is None:
                signing = await self._first_key(session, int(seq))
            signing_id, key = signing
            entry = Event(
                seq=seq,
                created_at=draft.created_at,
                event=draft.event,
                organisation_id=draft.organisation_id,
                actor=draft.actor,
                client=draft.client,
                request_id=draft.request_id,
                target=draft.target,
                details=draft.details,
                previous_hash=previous,
                hash="",
                key_id=signing_id,
            )
            digest = chain_hash(previous, entry, key)
            session.add(
                AuditEvent(
                    seq=seq,
                    created_at=entry.created_at,
                    event=entry.event,
                    organisation_id=entry.organisation_id,
                    actor=entry.actor,
                    client=entry.client,
                    request_id=entry.request_id,
                    target=entry.target,
                    details=json.dumps(entry.details, sort_keys=True, ensure_ascii=False),
                    previous_hash=previous,
                    hash=digest,
                    key_id=signing_id,
                )
            )
            await session.execute(
                update(AuditHead).where(AuditHead.id == HEAD_ID).values(hash=digest)
            )
            chained.append((int(seq), digest))
        if chained and signing is not None:
            self._chained_head(chained[-1][0], chained[-1][1], *signing)
        return chained

    async def _first_key(self, session: AsyncSession, seq: int) -> tuple[str, bytes]:
        """No key file yet, and the head locked at ``seq``: make the file, keyed events from
        ``seq`` on, unless keyed events exist (then the file was lost: an error)."""
        if not self.keys.exists():  # another process may have made it meanwhile
            keyed = await session.scalar(_any_keyed())
            if keyed is not None:
                raise AuditKeyError(self._missing_key_file(keyed))
            self.keys.create(keyed_from=seq)
            log.warning(
                "audit: made the audit key file %s (events from #%d on are keyed): back it up "
                "apart from the database, and copy it to every gateway host",
                self.keys.path,
                seq,
            )
        return self.keys.signing()

    async def verify(
        self, batch_size: int = 1000, witnesses: Sequence[Witness] = ()
    ) -> Verification:
        """Walk the chain up to the head read first (events appended meanwhile, by a running
        gateway, are the next run's), each keyed event checked with the key it names, every
        event from the key file's ``keyed_from`` on keyed, the chain at least as long as the
        anchor file and ``witnesses`` say and their events carrying the hashes they saw, and no
        row beyond the head; the first event that does not fit is named. Raises AuditKeyError
        when the key file is missing or unusable: the chain cannot be checked then, which is
        never a pass."""
        keys = self.keys.all()
        keyed_from = self.keys.keyed_from()
        # the anchor before the head: a running gateway advances it only to committed heads,
        # so the head read next is at least as high
        anchored = self.anchor.witness(keys) if self.anchor is not None else None
        async with self._sessions() as session:
            head = await session.get(AuditHead, HEAD_ID)
        if head is None:
            return Verification(False, 0, 0, "", 0, "the chain head (audit_head) is missing")

        def broken(count: int, seq: int | None, reason: str, keyed: int = 0) -> Verification:
            return Verification(False, count, head.seq, head.hash, seq, reason, keyed)

        if isinstance(anchored, str):
            return broken(0, None, anchored)
        seen = [*witnesses, *([anchored] if anchored is not None else [])]
        for witness in seen:
            if witness.seq > head.seq:
                return broken(
                    0,
                    head.seq + 1,
                    f"events #{head.seq + 1} to #{witness.seq} are missing: the chain ends at "
                    f"#{head.seq}, but {witness.source} saw #{witness.seq} (cut off at the end)",
                )
        if head.seq < keyed_from - 1:
            return broken(
                0,
                head.seq + 1,
                f"the chain ends at #{head.seq}, but the audit key file was made when it held "
                f"#{keyed_from - 1}: events were removed",
            )
        expected_hashes: dict[int, list[Witness]] = {}
        for witness in seen:
            expected_hashes.setdefault(witness.seq, []).append(witness)
        previous, expected, count, keyed = GENESIS, 1, 0, 0
        last: Event | None = None
        async for event in self._walk(batch_size, upto=head.seq):
            failure = _check(event, expected, previous, keys, last, self.keys.path, keyed_from)
            if failure is None:
                for witness in expected_hashes.get(event.seq, []):
                    if not hmac.compare_digest(witness.hash, event.hash):
                        failure = (
                            event.seq,
                            (
                                f"event #{event.seq} ({event.event}) is not the one "
                                f"{witness.source} saw: its hash differs (the chain was rewritten "
                                "from there on)"
                            ),
                        )
            if failure is not None:
                return broken(count, *failure, keyed=keyed)
            previous, expected, count = event.hash, event.seq + 1, count + 1
            keyed += event.key_id is not None
            last = event
        end = expected - 1
        if head.seq != end or head.hash != previous:
            return broken(
                count,
                end + 1,
                f"event #{end + 1} and any after it are missing: the chain ends at #{end}, "
                f"its head says #{head.seq}",
                keyed,
            )
        # Rows beyond the head (one statement: one snapshot, so a running gateway's append,
        # which moves the head in the transaction that adds the row, is never one of them).
        async with self._sessions() as session:
            beyond = (
                await session.execute(
                    select(func.min(AuditEvent.seq), func.max(AuditHead.seq))
                    .select_from(AuditEvent)
                    .join(AuditHead, AuditEvent.seq > AuditHead.seq)
                )
            ).one()
        if beyond[0] is not None:
            return broken(
                count,
                int(beyond[0]),
                f"event #{beyond[0]} lies beyond the chain's head #{beyond[1]}: crmgate never "
                "chained it (inserted into the table)",
                keyed,
            )
        return Verification(
            True,
            count,
            head.seq,
            head.hash,
            keyed=keyed,
            anchored=max((w.seq for w in seen), default=None),
        )


def _check(
    event: Event,
    expected: int,
    previous: str,
    keys: Mapping[str, bytes],
    before: Event | None,
    key_file: Path,
    keyed_from: int,
) -> tuple[int, str] | None:
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
    key = None
    if event.key_id is None:
        if event.seq >= keyed_from:
            return event.seq, (
                f"event #{event.seq} ({event.event}) is not keyed, but the audit key file says "
                f"every event from #{keyed_from} on is: it was re-chained without the audit key"
            )
        if before is not None and before.key_id is not None:
            return event.seq, (
                f"event #{event.seq} ({event.event}) is not keyed but follows keyed event "
                f"#{before.seq}: it was re-chained without the audit key"
            )
    else:
        key = keys.get(event.key_id)
        if key is None:
            return event.seq, (
                f"event #{event.seq} ({event.event}) was chained under audit key "
                f"{event.key_id}, which {key_file} does not hold (a key removed from the file, "
                "another host's key file, or a forged key id)"
            )
    if not hmac.compare_digest(chain_hash(previous, event, key), event.hash):
        return event.seq, f"event #{event.seq} ({event.event}) was changed: its hash does not match"
    return None
