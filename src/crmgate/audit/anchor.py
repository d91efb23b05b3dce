"""The anchor: the highest chain head this host committed, in a file outside the database.

What the database cannot say about its own end, a file beside it does: ``<data dir>/
audit_anchor`` holds the highest head (seq and hash) this host's gateway processes committed,
under an HMAC of the audit key, advanced at most every ``anchor_interval`` seconds (and at
shutdown); the head is also logged at info level then, for shipped logs to witness. verify fails
when the chain ends below that anchor or the event at its seq carries another hash, and takes
more witnesses from the operator (``--anchor SEQ:HASH``).
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import hmac
import json
import logging
import time
from collections.abc import Coroutine, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy import select

from crmgate.security import secretfile
from crmgate.security.vault import key_file_lock
from crmgate.store.db import SessionFactory
from crmgate.store.models import AuditEvent

log = logging.getLogger("crmgate.audit")

ANCHOR_FILE = "audit_anchor"
ANCHOR_INTERVAL = 5.0  # seconds: the anchor file and the head's log line, at most this often


def anchor_file_path(data_dir: Path) -> Path:
    return data_dir / ANCHOR_FILE


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


@dataclass(frozen=True, slots=True)
class _Head:
    """A head this process chained (its transaction committed, or not yet, or never)."""

    seq: int
    hash: str
    key_id: str
    key: bytes = dataclasses.field(repr=False)
    tries: int = 0


class Anchoring:
    """AuditLog's part that advances the anchor file to the heads it chained (its state is
    set in ``AuditLog.__init__``)."""

    anchor: AuditAnchor | None
    _sessions: SessionFactory
    _chained: list[_Head]
    _anchor_task: asyncio.Task[None] | None
    _anchor_written: float
    _anchor_interval: float
    _closed: bool

    if TYPE_CHECKING:  # AuditLog's

        def _start(self, work: Coroutine[Any, Any, None]) -> asyncio.Task[None]: ...

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
