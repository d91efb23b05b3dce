"""Server-side portal sessions (OWASP Session Management Cheat Sheet): the cookie holds 256
random bits, the database only their SHA-256; a new id at every sign-in and change of
privilege (no fixation); idle and absolute timeouts; sign-out ends one or every session.

CSRF (OWASP CSRF Cheat Sheet, "signed double-submit" / HMAC token): every form carries a token
derived from the browser's session token, which a cross-site page can neither read (HttpOnly)
nor compute. Before sign-in the browser holds a random pre-session cookie for the same purpose,
so the sign-in and sign-up forms are protected too (login CSRF)."""

from __future__ import annotations

import hashlib
import hmac
import json
import secrets
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import delete, select, update

from crmgate.security.vault import Sealed, Vault
from crmgate.store.db import SessionFactory
from crmgate.store.ids import new_id
from crmgate.store.models import PortalSession, utcnow

PARTIAL = "partial"  # the password is right; the second factor is still to come
FULL = "full"
TOUCH_EVERY = timedelta(seconds=30)  # last_seen_at is written at most this often


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def csrf_token(browser_token: str) -> str:
    """The form token of a browser whose session (or pre-session) cookie is ``browser_token``."""
    return hmac.new(browser_token.encode(), b"crmgate-portal-csrf", hashlib.sha256).hexdigest()


def csrf_valid(browser_token: str | None, submitted: str | None) -> bool:
    if not browser_token or not submitted:
        return False
    return hmac.compare_digest(csrf_token(browser_token), submitted)


@dataclass(frozen=True, slots=True)
class Session:
    id: str
    user_id: str
    level: str
    created_at: datetime
    signed_in_at: datetime
    expires_at: datetime
    token: str = field(repr=False)

    @property
    def csrf(self) -> str:
        return csrf_token(self.token)

    def fresh(self, window: float, now: datetime | None = None) -> bool:
        return (now or utcnow()) - self.signed_in_at <= timedelta(seconds=window)


class Sessions:
    def __init__(
        self, sessions: SessionFactory, vault: Vault, idle: float, absolute: float
    ) -> None:
        self._sessions = sessions
        self._vault = vault
        self.idle = timedelta(seconds=idle)
        self.absolute = timedelta(seconds=absolute)

    def __repr__(self) -> str:
        return "Sessions()"

    async def start(
        self,
        user_id: str,
        level: str,
        *,
        replaces: str | None = None,
        address: str | None = None,
        user_agent: str | None = None,
        signed_in: bool = True,
    ) -> Session:
        """A new session (a new token: the old one, if any, ends in the same transaction)."""
        now = utcnow()
        token = secrets.token_urlsafe(32)
        async with self._sessions.begin() as session:
            created_at, signed_in_at, expires_at = now, now, now + self.absolute
            if replaces is not None:
                old = await session.scalar(
                    select(PortalSession).where(PortalSession.token_hash == token_hash(replaces))
                )
                if old is not None:
                    await session.delete(old)
                    if old.user_id == user_id:
                        # a step up keeps the sign-in's absolute end
                        created_at, expires_at = old.created_at, old.expires_at
                        if not signed_in:
                            signed_in_at = old.signed_in_at
            row = PortalSession(
                id=new_id("pss"),
                token_hash=token_hash(token),
                user_id=user_id,
                level=level,
                created_at=created_at,
                last_seen_at=now,
                signed_in_at=signed_in_at,
                expires_at=expires_at,
                address=address,
                user_agent=(user_agent or "")[:200] or None,
            )
            session.add(row)
        return self._view(row, token)

    @staticmethod
    def _view(row: PortalSession, token: str) -> Session:
        return Session(
            row.id, row.user_id, row.level, row.created_at, row.signed_in_at, row.expires_at, token
        )

    async def load(self, token: str | None) -> Session | None:
        """The live session of this cookie, or None (unknown, idle too long or past its end)."""
        if not token or len(token) > 100:
            return None
        now = utcnow()
        async with self._sessions() as session:
            row = await session.scalar(
                select(PortalSession).where(PortalSession.token_hash == token_hash(token))
            )
        if row is None:
            return None
        if now >= row.expires_at or now - row.last_seen_at > self.idle:
            await self.end(token)
            return None
        if now - row.last_seen_at >= TOUCH_EVERY:
            async with self._sessions.begin() as session:
                await session.execute(
                    update(PortalSession).where(PortalSession.id == row.id).values(last_seen_at=now)
                )
        return self._view(row, token)

    async def end(self, token: str) -> None:
        async with self._sessions.begin() as session:
            await session.execute(
                delete(PortalSession).where(PortalSession.token_hash == token_hash(token))
            )

    async def end_all(self, user_id: str, *, except_token: str | None = None) -> int:
        async with self._sessions.begin() as session:
            statement = delete(PortalSession).where(PortalSession.user_id == user_id)
            if except_token is not None:
                statement = statement.where(PortalSession.token_hash != token_hash(except_token))
            result = await session.execute(statement)
            return int(result.rowcount)  # type: ignore[attr-defined]

    async def purge_expired(self) -> int:
        now = utcnow()
        async with self._sessions.begin() as session:
            result = await session.execute(
                delete(PortalSession).where(
                    (PortalSession.expires_at <= now)
                    | (PortalSession.last_seen_at < now - self.idle)
                )
            )
            return int(result.rowcount)  # type: ignore[attr-defined]

    # ---- a ceremony's pending state (sealed: it can hold a TOTP seed being enrolled) ----------

    async def set_pending(self, session: Session, value: dict[str, Any] | None) -> None:
        sealed = (
            None
            if value is None
            else self._vault.encrypt(
                json.dumps(value).encode(), f"portal-pending:{session.id}".encode()
            )
        )
        async with self._sessions.begin() as db:
            await db.execute(
                update(PortalSession)
                .where(PortalSession.id == session.id)
                .values(
                    pending=None if sealed is None else sealed.blob,
                    pending_key_version=None if sealed is None else sealed.version,
                )
            )

    async def pending(self, session: Session) -> dict[str, Any]:
        async with self._sessions() as db:
            row = await db.get(PortalSession, session.id)
        if row is None or row.pending is None or row.pending_key_version is None:
            return {}
        plain = self._vault.decrypt(
            Sealed(row.pending_key_version, row.pending), f"portal-pending:{session.id}".encode()
        )
        value = json.loads(plain)
        return value if isinstance(value, dict) else {}

    async def take_pending(self, session: Session, key: str) -> Any:
        """Remove ``key`` from the pending state and return its value (None when absent), the
        rest kept. Atomic (the row is swapped only if no one changed it meanwhile): of two
        requests racing with the same single-use challenge, one gets it."""
        context = f"portal-pending:{session.id}".encode()
        async with self._sessions.begin() as db:
            row = await db.get(PortalSession, session.id, with_for_update=True)
            if row is None or row.pending is None or row.pending_key_version is None:
                return None
            value = json.loads(
                self._vault.decrypt(Sealed(row.pending_key_version, row.pending), context)
            )
            if not isinstance(value, dict) or key not in value:
                return None
            found = value.pop(key)
            sealed = self._vault.encrypt(json.dumps(value).encode(), context) if value else None
            swapped = await db.execute(
                update(PortalSession)
                .where(PortalSession.id == session.id, PortalSession.pending == row.pending)
                .values(
                    pending=None if sealed is None else sealed.blob,
                    pending_key_version=None if sealed is None else sealed.version,
                )
            )
            return found if swapped.rowcount else None  # type: ignore[attr-defined]
