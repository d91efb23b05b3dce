"""Password resets by e-mail (OWASP Forgot Password Cheat Sheet): the link holds 256 random
bits, the database only their SHA-256; it works once, for an hour, and using it ends every
other open reset of the user. A few e-mails an hour per user at most, so that nobody can fill
someone's mailbox with them."""

from __future__ import annotations

import secrets
from datetime import timedelta

from sqlalchemy import func, select, update

from crmgate.portal.sessions import token_hash
from crmgate.store.db import SessionFactory
from crmgate.store.ids import new_id
from crmgate.store.models import PortalPasswordReset, utcnow

LIFETIME = timedelta(hours=1)
PER_HOUR = 3  # reset e-mails one user may be sent per hour


class PasswordResets:
    def __init__(self, sessions: SessionFactory) -> None:
        self._sessions = sessions

    def __repr__(self) -> str:
        return "PasswordResets()"

    async def create(self, user_id: str) -> str | None:
        """The token of a new reset link for this user, or None when they were sent enough of
        them this past hour (returned once, kept only as a digest)."""
        now = utcnow()
        token = secrets.token_urlsafe(32)
        async with self._sessions.begin() as session:
            recent = await session.scalar(
                select(func.count())
                .select_from(PortalPasswordReset)
                .where(
                    PortalPasswordReset.user_id == user_id,
                    PortalPasswordReset.created_at > now - timedelta(hours=1),
                )
            )
            if (recent or 0) >= PER_HOUR:
                return None
            session.add(
                PortalPasswordReset(
                    id=new_id("pwr"),
                    token_hash=token_hash(token),
                    user_id=user_id,
                    created_at=now,
                    expires_at=now + LIFETIME,
                )
            )
        return token

    async def find(self, token: str) -> str | None:
        """The user of this open reset link, or None (unknown, used or expired)."""
        if not token or len(token) > 100:
            return None
        async with self._sessions() as session:
            user_id: str | None = await session.scalar(
                select(PortalPasswordReset.user_id).where(
                    PortalPasswordReset.token_hash == token_hash(token),
                    PortalPasswordReset.used_at.is_(None),
                    PortalPasswordReset.expires_at > utcnow(),
                )
            )
        return user_id

    async def use(self, token: str) -> str | None:
        """Spend the link: its user, once (None for a second use, even a concurrent one); every
        other open link of the user ends with it."""
        user_id = await self.find(token)
        if user_id is None:
            return None
        now = utcnow()
        async with self._sessions.begin() as session:
            result = await session.execute(
                update(PortalPasswordReset)
                .where(
                    PortalPasswordReset.token_hash == token_hash(token),
                    PortalPasswordReset.used_at.is_(None),
                    PortalPasswordReset.expires_at > now,
                )
                .values(used_at=now)
            )
            if not result.rowcount:  # type: ignore[attr-defined]
                return None
            await session.execute(
                update(PortalPasswordReset)
                .where(
                    PortalPasswordReset.user_id == user_id,
                    PortalPasswordReset.used_at.is_(None),
                )
                .values(used_at=now)
            )
        return user_id
