"""The audit trail: an append-only, keyed hash chain of security events, none of them lost.

Every event (a key created, an application deleted, an authentication that failed, ...) is one
row of ``audit_events``, numbered 1, 2, 3, ... (``seq``). Each row stores
``hash = HMAC-SHA256(audit key, previous row's hash + canonical JSON of this event)``, the first
one chained to ``GENESIS``, and the chain head (the last seq and hash) lives in the one row of
``audit_head``. Editing an event changes its hash; deleting one leaves a gap and a broken link;
deleting the last ones disagrees with the head. ``verify()`` (``crmgate audit verify``) walks the
chain and names the first broken event.

The audit keys live outside the database, in ``<data dir>/secrets/audit_keys`` (mode 0600,
``version:base64`` lines like the vault's key file): whoever can write the database but not read
that file cannot recompute a chain that verifies. Each event records the id of the key that
chained it (``key_id``: its version and a fingerprint, so another host's key of the same version
is told apart); ``crmgate audit rotate-key`` adds a version, which chains every event from then
on, and verify checks each event with its own key. The file is made with the first event
chained under a key, and only while the chain holds no keyed event (a lost file, or a second
host without a copy, is an error, never a new key). It also records where keyed events start
(``# keyed_from=N``: 1 on a fresh install, the head's seq + 1 on a trail an older crmgate
began): events before N (``key_id`` NULL, plain SHA-256) keep verifying, any unkeyed event from
N on and any chain shorter than N - 1 events is a forgery, so a forger cannot turn the keyed
chain back into plain SHA-256 and chain new keyed events onto that.

What the database cannot say about its own end, a file beside it does: ``<data dir>/
audit_anchor`` holds the highest head (seq and hash) this host's gateway processes committed,
under an HMAC of the audit key, advanced at most every ``anchor_interval`` seconds (and at
shutdown); the head is also logged at info level then, for shipped logs to witness. verify fails
when the chain ends below that anchor or the event at its seq carries another hash, and takes
more witnesses from the operator (``--anchor SEQ:HASH``).

No event is lost to a crash between a change and its event: callers that change the database
pass their session to ``record``, so the event commits or rolls back with the change.

Appends are serialised by the head row: each one starts with ``UPDATE audit_head SET seq = seq
+ 1 ... RETURNING``, which locks that row until the commit (on PostgreSQL, across every gateway
process; SQLite's write transactions are serial anyway), so two appends never take the same
number or chain to the same predecessor. Callers append last in their transaction, so the head
stays locked only for the commit.

Events an attacker can cause at will (``NOISY``: failed authentications, limits hit) never
touch the database on the request path: they are folded per client (one row opens a window,
one row at its end counts the events folded into it), queued in memory under a global cap per
window (beyond it one ``audit.dropped`` event counts what was dropped), and written in one
transaction every ``audit_flush_interval`` seconds and at shutdown. A batch whose write fails
goes back to the queue, whatever the failure; a failed commit that may have succeeded is looked
up (the last event's seq and hash) before the batch is written again, so it is never written
twice.

Who, where and which request: a request's client address and id are bound to the running task
by the request middleware (``bind_request``), and its principal is read from the request's
state once authentication put it there; ``record`` falls back on them for what it is not told.
Background tasks (the flush, the anchor) run in a context of their own, never a request's.
No secret ever goes into an event: details hold ids, key hints, names of fields, counts.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import dataclasses
import hashlib
import hmac
import json
import logging
import math
import re
import secrets
import time
from collections import Counter, OrderedDict
from collections.abc import AsyncIterator, Coroutine, Mapping, Sequence
from contextvars import ContextVar
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy import Select, func, select, update
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncSession

from crmgate.logs import redact
from crmgate.query import Condition, SortKey
from crmgate.security import secretfile
from crmgate.security.vault import (
    KEY_BYTES,
    Keyring,
    VaultConfigurationError,
    key_file_lock,
    rotate_key_file,
)
from crmgate.store.db import SessionFactory
from crmgate.store.filtering import FieldSpec, order_by, where
from crmgate.store.models import AuditEvent, AuditHead, utcnow

if TYPE_CHECKING:
    from crmgate.settings import Settings

log = logging.getLogger("crmgate.audit")

GENESIS = "0" * 64  # the "previous hash" of event 1
HEAD_ID = 1
MAX_TEXT = 200  # a detail's text is cut to this many characters
KEY_FILE = "audit_keys"
KEY_FILE_HEADER = (
    "crmgate audit keys: 'version:base64key'; the highest version chains new events. "
    "Keep every version: `crmgate audit verify` needs each one for the events it chained."
)
# The key file's second line: where keyed events start. A comment to the keyring parser (the
# vault's), data to crmgate. No commas: the parser splits items at them.
KEYED_FROM = re.compile(r"^# keyed_from=(\d+)\b", re.MULTILINE)
ANCHOR_FILE = "audit_anchor"
ANCHOR_INTERVAL = 5.0  # seconds: the anchor file and the head's log line, at most this often
CAP_WINDOW = 60.0  # seconds: the global cap on noisy events counts per this window
FOLD_CLIENTS = 10_000  # clients whose noisy events are being folded, at most (least recent out)

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


class AuditKeyError(Exception):
    """The audit key file is missing or unusable. The message never holds key material."""


# ---- the audit keys ---------------------------------------------------------------------------


def key_file_path(data_dir: Path) -> Path:
    return secretfile.secrets_dir(data_dir) / KEY_FILE


def anchor_file_path(data_dir: Path) -> Path:
    return data_dir / ANCHOR_FILE


def key_id(version: int, key: bytes) -> str:
    """The id an event records for the key that chained it: the version, and a fingerprint
    that tells two different keys of one version apart (another host's key file)."""
    fingerprint = hmac.new(key, b"crmgate audit key id", hashlib.sha256).hexdigest()[:12]
    return f"{version}:{fingerprint}"


def _file_header(keyed_from: int) -> str:
    return (
        f"{KEY_FILE_HEADER}\n# keyed_from={keyed_from}: every audit event from #{keyed_from} "
        "on is keyed. Keep this line: verify relies on it."
    )


class AuditKeys:
    """The versioned audit keys of ``<data dir>/secrets/audit_keys`` (the vault's ``Keyring``
    format and file machinery) and where keyed events start. Made by ``create`` only, which the
    append calls when the chain holds no keyed event yet, never by a reader; re-read when the
    file changes, so `crmgate audit rotate-key` reaches a running gateway without a restart."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._keyring: Keyring | None = None
        self._keyed_from = 0
        self._stamp: tuple[int, int, int] | None = None

    def _load(self) -> Keyring | None:
        try:
            info = self.path.stat()
        except FileNotFoundError:
            return None
        stamp = (info.st_mtime_ns, info.st_size, info.st_ino)
        if stamp != self._stamp or self._keyring is None:
            try:
                text = secretfile.read_private(self.path).decode()
                keyring = Keyring.parse(text)
            except (VaultConfigurationError, secretfile.SecretFileError, UnicodeDecodeError) as e:
                raise AuditKeyError(f"the audit key file {self.path} is unusable: {e}") from None
            found = KEYED_FROM.search(text)
            if found is None:
                raise AuditKeyError(
                    f"the audit key file {self.path} has no '# keyed_from=N' line (N: the number "
                    "of the first event chained under an audit key): restore the file from a "
                    "backup of the data dir"
                )
            self._keyring, self._keyed_from, self._stamp = keyring, int(found[1]), stamp
        return self._keyring

    def exists(self) -> bool:
        """Whether the key file is there; raises AuditKeyError when it is but is unusable."""
        return self._load() is not None

    def create(self, keyed_from: int) -> None:
        """Make the key file with version 1, keyed events starting at ``keyed_from``. The
        caller makes sure no keyed event exists yet; if another process made the file first,
        theirs is kept."""
        first = Keyring({1: secrets.token_bytes(KEY_BYTES)}).render(_file_header(keyed_from))
        with contextlib.suppress(FileExistsError):
            secretfile.create_private(self.path, first.encode())

    def signing(self) -> tuple[str, bytes]:
        """The id and key that chain new events: the newest version."""
        keyring = self._load()
        if keyring is None:
            raise AuditKeyError(f"there is no audit key file {self.path}")
        key = keyring.key(keyring.newest)
        assert key is not None
        return key_id(keyring.newest, key), key

    def keyed_from(self) -> int:
        """The number of the first event that must be keyed."""
        if self._load() is None:
            raise AuditKeyError(f"there is no audit key file {self.path}")
        return self._keyed_from

    def all(self) -> dict[str, bytes]:
        """Key id -> key, every version: what verify checks with. A missing file is an error:
        without it no keyed event can be checked, and verify never passes silently."""
        keyring = self._load()
        if keyring is None:
            raise AuditKeyError(
                f"the audit key file {self.path} does not exist, so the chain cannot be "
                "verified: restore it from the backup of the data dir (crmgate makes it with "
                "the first event it records; on several hosts every one needs the same file)"
            )
        keys = {version: keyring.key(version) for version in keyring.versions}
        return {key_id(v, k): k for v, k in keys.items() if k is not None}

    def rotate(self) -> str:
        """Add a key version, which chains every event from now on; returns its id."""
        if self._load() is None:
            raise AuditKeyError(
                f"there is no audit key file {self.path} yet: crmgate makes it with the first "
                "event it records"
            )
        try:
            rotate_key_file(self.path, _file_header(self._keyed_from))
        except VaultConfigurationError as error:
            raise AuditKeyError(f"the audit key file {self.path} is unusable: {error}") from None
        return self.signing()[0]

    def __repr__(self) -> str:
        return f"AuditKeys(file={self.path})"


# ---- the anchor: the highest head this host wrote, outside the database -----------------------


def _anchor_mac(key: bytes, seq: int, digest: str) -> str:
    return hmac.new(
        key, f"crmgate audit anchor|{seq}|{digest}".encode(), hashlib.sha256
    ).hexdigest()


@dataclass(frozen=True, slots=True)
class Witness:
    """Someone outside the database saw event ``seq`` with hash ``hash``."""

    seq: int
    hash: str
    source: str


class AuditAnchor:
    """``<data dir>/audit_anchor``: one JSON object ``{seq, hash, key_id, mac}``, the highest
    head the gateway processes of this host committed, the MAC made with the audit key that
    chained that event. Only ever moves forward (under a file lock: several processes)."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def _read(self) -> dict[str, Any] | None:
        try:
            raw = self.path.read_text()
        except FileNotFoundError:
            return None
        try:
            found = json.loads(raw)
            if not isinstance(found, dict):
                raise ValueError("not an object")
            int(found["seq"]), str(found["hash"]), str(found["key_id"]), str(found["mac"])
        except (ValueError, KeyError, TypeError):
            raise ValueError(f"the audit anchor file {self.path} is unreadable") from None
        return found

    def current(self) -> tuple[int, str] | None:
        """The head the file holds (unchecked), None when there is none or it is unreadable."""
        try:
            found = self._read()
        except ValueError:
            return None
        return (int(found["seq"]), str(found["hash"])) if found is not None else None

    def advance(self, seq: int, digest: str, signing_key_id: str, key: bytes) -> bool:
        """Record head ``seq`` unless the file holds a higher one; whether it did."""
        with key_file_lock(self.path):
            try:
                current = self._read()
            except ValueError:
                log.error("audit: %s is unreadable; it is left as it is for verify", self.path)
                return False
            if current is not None and int(current["seq"]) >= seq:
                return False
            content = {
                "seq": seq,
                "hash": digest,
                "key_id": signing_key_id,
                "mac": _anchor_mac(key, seq, digest),
            }
            secretfile.replace_private(self.path, (json.dumps(content) + "\n").encode())
            return True

    def witness(self, keys: Mapping[str, bytes]) -> Witness | str | None:
        """The anchor, checked with ``keys``; a reason when it cannot be trusted; None when
        there is none (this host never wrote an event)."""
        try:
            found = self._read()
        except ValueError as error:
            return str(error)
        if found is None:
            return None
        seq, digest = int(found["seq"]), str(found["hash"])
        key = keys.get(str(found["key_id"]))
        if key is None or not hmac.compare_digest(_anchor_mac(key, seq, digest), found["mac"]):
            return f"the audit anchor file {self.path} was changed: its MAC does not match"
        return Witness(seq, digest, f"the anchor file {self.path}")

    def __repr__(self) -> str:
        return f"AuditAnchor(file={self.path})"


# ---- who, where, which request ----------------------------------------------------------------


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


# ---- events and their chain -------------------------------------------------------------------


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


@dataclass(slots=True)
class _Fold:
    """One client's window of a noisy event: the row that opened it, and what was folded."""

    started: float  # monotonic time of the row that opened the window
    folded: int = 0  # events folded into it since
    last: _Draft | None = None  # the newest of them: what the window's closing row shows


@dataclass(frozen=True, slots=True)
class _Unsure:
    """A batch whose commit failed after it was chained: it may have been written after all.
    Its last event's number and hash tell (the hash covers the seq and the creation time)."""

    drafts: list[_Draft]
    seq: int
    hash: str


@dataclass(frozen=True, slots=True)
class _Head:
    """A head this process chained (its transaction committed, or not yet, or never)."""

    seq: int
    hash: str
    key_id: str
    key: bytes = dataclasses.field(repr=False)
    tries: int = 0


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


def _any_keyed() -> Select[Any]:
    """The newest keyed event's number, if any (from the end: that is where keyed events are)."""
    return (
        select(AuditEvent.seq)
        .where(AuditEvent.key_id.is_not(None))
        .order_by(AuditEvent.seq.desc())
        .limit(1)
    )


class AuditLog:
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

    # ---- the anchor ----------------------------------------------------------------------------

    def _chained_head(self, seq: int, digest: str, signing_id: str, key: bytes) -> None:
        if self.anchor is None:
            return
        self._chained = [*self._chained[-15:], _Head(seq, digest, signing_id, key)]
        self._schedule_anchor()

    def _schedule_anchor(self) -> None:
        if self._anchor_task is None and not self._closed:  # a context of its own, as the flush's
            delay = max(0.1, self._anchor_written + self._anchor_interval - time.monotonic())
            self._anchor_task = self._start(self._anchor_after(delay))

    async def _anchor_after(self, delay: float) -> None:
        await asyncio.sleep(delay)
        self._anchor_task = None  # from here on, new heads schedule the next write
        try:
            await self.write_anchor()
        except Exception:
            log.exception("audit: could not advance the anchor file")
        if self._chained:  # heads whose transactions were still open: next time
            self._schedule_anchor()

    async def write_anchor(self) -> None:
        """Advance the anchor file to the highest head this process chained that is committed
        (read back: a rolled back append never reaches the file), and log it."""
        if self.anchor is None or not self._chained:
            return
        candidates, self._chained = self._chained, []
        anchored = await asyncio.to_thread(self.anchor.current)
        seqs = [head.seq for head in candidates] + ([anchored[0]] if anchored else [])
        async with self._sessions() as session:
            rows = await session.execute(
                select(AuditEvent.seq, AuditEvent.hash).where(AuditEvent.seq.in_(seqs))
            )
            stored = {int(seq): str(digest) for seq, digest in rows}
        if anchored is not None and stored.get(anchored[0]) != anchored[1]:
            # Moving the anchor past a cut-off or rewritten end would launder it: left as it is.
            log.error(
                "audit: event #%d is gone or changed since the anchor file %s saw it: the audit "
                "trail was tampered with (run `crmgate audit verify`); the anchor stays there",
                anchored[0],
                self.anchor.path,
            )
            return
        committed = [head for head in candidates if stored.get(head.seq) == head.hash]
        top = max(committed, key=lambda head: head.seq) if committed else None
        if top is not None:
            self._anchor_written = time.monotonic()
            await asyncio.to_thread(self.anchor.advance, top.seq, top.hash, top.key_id, top.key)
            log.info("audit: head #%d %s", top.seq, top.hash)
        # not visible yet (a transaction still open) or never (rolled back): a few more tries
        waiting = [
            dataclasses.replace(head, tries=head.tries + 1)
            for head in candidates
            if head.seq not in stored and head.tries < 3 and (top is None or head.seq > top.seq)
        ]
        self._chained = waiting + self._chained

    # ---- noisy events: folded, capped, queued, flushed ----------------------------------------

    def _enqueue(self, draft: _Draft) -> None:
        """Fold ``draft`` into its client's window, or open a window with it (queued)."""
        key = (draft.event, draft.client, draft.organisation_id)
        now = time.monotonic()
        fold = self._recent.get(key)
        if fold is not None and now - fold.started < self._repeat_window:
            fold.folded, fold.last = fold.folded + 1, draft
            self._recent.move_to_end(key)
            # the window's closing row is due when it ends, even if nothing else comes
            self._schedule(max(self._flush_interval, fold.started + self._repeat_window - now))
            return
        if fold is not None:  # its window ended before the flush closed it
            self._close_fold(fold)
        self._recent[key] = _Fold(now)
        self._recent.move_to_end(key)
        while len(self._recent) > self._fold_clients:  # a hard bound: rotating addresses
            self._close_fold(self._recent.popitem(last=False)[1])
        self._admit(draft)
        self._schedule(self._flush_interval)

    def _close_fold(self, fold: _Fold) -> None:
        """The row that ends a window: the newest folded event, ``repeated`` counting all."""
        if fold.folded and fold.last is not None:
            details = {**fold.last.details, "repeated": fold.folded}
            self._admit(dataclasses.replace(fold.last, details=details))
            fold.folded, fold.last = 0, None

    def _sweep(self, now: float, *, closing: bool = False) -> None:
        """Close the windows that ended (all of them at shutdown)."""
        for key, fold in list(self._recent.items()):
            if closing or now - fold.started >= self._repeat_window:
                self._close_fold(fold)
                del self._recent[key]

    def _admit(self, draft: _Draft) -> None:
        """Queue ``draft`` within the cap of the window; beyond it, count it as dropped."""
        self._roll_window(time.monotonic())
        if self._window_count >= self._cap:
            self._dropped[draft.event] += 1
        else:
            self._window_count += 1
            self._queue.append(draft)

    def _roll_window(self, now: float, *, closing: bool = False) -> None:
        """At the end of a cap window (or at shutdown), one event counting what it dropped."""
        if not closing and now - self._window_start < self._cap_window:
            return
        if self._dropped:
            counts: dict[str, Detail] = dict(self._dropped)
            # not self._draft: whatever request is being served now, this is none of its events
            self._queue.append(
                _Draft(
                    created_at=utcnow(),
                    event=AUDIT_DROPPED,
                    organisation_id=None,
                    actor="system",
                    client=None,
                    request_id=None,
                    target=None,
                    details=_clean(
                        {
                            "dropped": sum(self._dropped.values()),
                            "cap": self._cap,
                            "window_seconds": int(self._cap_window),
                            **counts,
                        }
                    ),
                )
            )
        self._window_start, self._window_count, self._dropped = now, 0, Counter()

    def _schedule(self, delay: float) -> None:
        # A context of its own: created inside a request, the task would otherwise carry that
        # request's client and id into the events it drafts (audit.dropped).
        if self._timer is None and not self._closed:
            self._timer = self._start(self._flush_after(delay))

    async def _flush_after(self, delay: float) -> None:
        await asyncio.sleep(delay)
        self._timer = None  # from here on, new events schedule the next flush
        try:
            written = await self.flush()
        except Exception:  # keep queueing whatever happened to one batch
            log.exception("audit: flush failed")
            written = False
        now = time.monotonic()
        due = [self._flush_interval] if not written or self._queue else []
        open_windows = [f.started for f in self._recent.values() if f.folded]
        if open_windows:
            due.append(min(open_windows) + self._repeat_window - now)
        if self._dropped:  # the window's summary is due when it ends
            due.append(self._window_start + self._cap_window - now)
        if due:
            self._schedule(max(self._flush_interval, min(due)))

    async def flush(self, *, closing: bool = False) -> bool:
        """Write the queued events in one transaction; False when that failed (they stay
        queued, within twice the cap: beyond it they are counted as dropped). On any other
        failure (a cancellation at shutdown, a bug) they stay queued too, and it is raised."""
        if self._writing is None:
            self._writing = asyncio.Lock()
        async with self._writing:
            now = time.monotonic()
            self._sweep(now, closing=closing)
            self._roll_window(now, closing=closing)
            try:
                await self._settle_unsure()
            except (SQLAlchemyError, OSError):
                log.warning("audit: could not check the last failed write", exc_info=True)
                return False
            if not self._queue:
                return True
            batch, self._queue = self._queue, []
            chained: list[tuple[int, str]] = []
            try:
                async with self._sessions.begin() as session:
                    chained = await self._append(session, batch)
            except BaseException as error:
                self._queue = batch + self._queue
                if chained:  # the commit failed: it may have been written all the same
                    self._unsure = _Unsure(batch, *chained[-1])
                if not isinstance(error, SQLAlchemyError | AuditKeyError | OSError):
                    raise
                log.warning("audit: could not write %d queued events", len(batch), exc_info=True)
                kept = self._queue[: max(self._cap, 1) * 2]
                for lost in self._queue[len(kept) :]:
                    self._dropped[lost.event] += 1
                self._queue = kept
                return False
            return True

    async def _settle_unsure(self) -> None:
        """After a commit that failed once chained: if its last event is there, with the hash
        that batch gave it, it was written, and it leaves the queue."""
        unsure = self._unsure
        if unsure is None:
            return
        async with self._sessions() as session:
            stored = await session.scalar(
                select(AuditEvent.hash).where(AuditEvent.seq == unsure.seq)
            )
        self._unsure = None
        if stored == unsure.hash:
            written = {id(draft) for draft in unsure.drafts}
            self._queue = [draft for draft in self._queue if id(draft) not in written]
            log.warning(
                "audit: the %d events of a failed commit were written after all", len(written)
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

    # ---- reading --------------------------------------------------------------------------------

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

    # ---- checking -------------------------------------------------------------------------------

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
