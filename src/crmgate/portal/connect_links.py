"""Connect links: an organisation's admin sends one to their own customer, who connects a CRM
into that organisation without an account (what Merge calls Link, Nango a connect session).
A link works once, until it expires, for a list of platforms; only the SHA-256 of its token is
kept, and it is used up in the very transaction that stores the application it connected."""

from __future__ import annotations

import hashlib
import json
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

from sqlalchemy import delete, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from crmgate.store.accounts import AccountError
from crmgate.store.db import SessionFactory
from crmgate.store.ids import new_id
from crmgate.store.models import ConnectLink, Organisation, utcnow

if TYPE_CHECKING:
    from crmgate.audit import AuditLog
    from crmgate.store.models import OAuthFlow

TOKEN_PREFIX = "cgl_"  # noqa: S105 - a prefix, not a secret
# an OAuth flow started while the link worked may end this much later (oauth.FLOW_LIFETIME)
FLOW_GRACE = timedelta(minutes=10)
DONE_PATH = "/portal/connect/done/"


def digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


@dataclass(frozen=True, slots=True)
class LinkView:
    id: str
    organisation_id: str
    organisation_name: str
    created_by: str | None
    platforms: tuple[str, ...]
    description: str
    created_at: datetime
    expires_at: datetime
    used_at: datetime | None
    application_key: str | None

    def state(self, now: datetime | None = None) -> str:
        if self.used_at is not None:
            return "used"
        return "expired" if (now or utcnow()) >= self.expires_at else "open"


def _view(row: ConnectLink, organisation_name: str) -> LinkView:
    return LinkView(
        id=row.id,
        organisation_id=row.organisation_id,
        organisation_name=organisation_name,
        created_by=row.created_by,
        platforms=tuple(json.loads(row.platforms)),
        description=row.description,
        created_at=row.created_at,
        expires_at=row.expires_at,
        used_at=row.used_at,
        application_key=row.application_key,
    )


class ConnectLinks:
    def __init__(self, sessions: SessionFactory, audit: AuditLog, public_url: str) -> None:
        self._sessions = sessions
        self._audit = audit
        self.public_url = public_url.rstrip("/")

    def url(self, token: str) -> str:
        return f"{self.public_url}/portal/connect/{token}"

    def done_url(self, link_id: str) -> str:
        """Where a link's OAuth flow sends the visitor back (a page of the portal)."""
        return f"{self.public_url}{DONE_PATH}{link_id}"

    async def create(
        self,
        organisation_id: str,
        user_id: str,
        platforms: list[str],
        description: str,
        lifetime: timedelta,
    ) -> tuple[LinkView, str]:
        """The new link and its token (shown once: only its digest is kept)."""
        token = TOKEN_PREFIX + secrets.token_urlsafe(32)
        now = utcnow()
        row = ConnectLink(
            id=new_id("cl"),
            token_hash=digest(token),
            organisation_id=organisation_id,
            created_by=user_id,
            platforms=json.dumps(platforms),
            description=description,
            created_at=now,
            expires_at=now + lifetime,
        )
        async with self._sessions.begin() as session:
            name = await self._organisation_name(session, organisation_id)
            session.add(row)
            await self._audit.record(
                "portal.connect_link_created",
                organisation_id=organisation_id,
                actor=user_id,
                target=row.id,
                details={
                    "platforms": platforms,
                    "expires_at": row.expires_at.isoformat(timespec="seconds"),
                },
                session=session,
            )
        return _view(row, name), token

    @staticmethod
    async def _organisation_name(session: AsyncSession, organisation_id: str) -> str:
        name = await session.scalar(
            select(Organisation.name).where(Organisation.id == organisation_id)
        )
        return name or ""

    async def list(self, organisation_id: str) -> list[LinkView]:
        async with self._sessions() as session:
            name = await self._organisation_name(session, organisation_id)
            rows = await session.scalars(
                select(ConnectLink)
                .where(ConnectLink.organisation_id == organisation_id)
                .order_by(ConnectLink.created_at.desc(), ConnectLink.id)
            )
            return [_view(row, name) for row in rows]

    async def by_token(self, token: str) -> LinkView | None:
        """The link of ``token`` while it works (not used, not expired), else None."""
        if not token.startswith(TOKEN_PREFIX) or len(token) > 100:
            return None
        return await self._find(ConnectLink.token_hash == digest(token), usable=True)

    async def by_id(self, link_id: str) -> LinkView | None:
        return await self._find(ConnectLink.id == link_id[:40], usable=False)

    async def _find(self, condition: object, *, usable: bool) -> LinkView | None:
        async with self._sessions() as session:
            found = (
                await session.execute(
                    select(ConnectLink, Organisation.name)
                    .join(Organisation, Organisation.id == ConnectLink.organisation_id)
                    .where(condition)  # type: ignore[arg-type]
                )
            ).first()
        if found is None:
            return None
        view = _view(found[0], found[1])
        return view if not usable or view.state() == "open" else None

    async def revoke(self, organisation_id: str, link_id: str, user_id: str) -> None:
        async with self._sessions.begin() as session:
            gone = await session.execute(
                delete(ConnectLink).where(
                    ConnectLink.id == link_id[:40], ConnectLink.organisation_id == organisation_id
                )
            )
            if not gone.rowcount:  # type: ignore[attr-defined]
                raise AccountError(404, "ENTITY_NOT_FOUND", "There is no such connect link.")
            await self._audit.record(
                "portal.connect_link_revoked",
                organisation_id=organisation_id,
                actor=user_id,
                target=link_id,
                session=session,
            )

    async def use(
        self,
        session: AsyncSession,
        link_id: str,
        organisation_id: str,
        application_key: str,
        platform: str,
    ) -> None:
        """In the transaction that stores the application: the link is used up, or (used or
        revoked meanwhile) the transaction fails and no application is stored."""
        now = utcnow()
        used = await session.execute(
            update(ConnectLink)
            .where(
                ConnectLink.id == link_id,
                ConnectLink.organisation_id == organisation_id,
                ConnectLink.used_at.is_(None),
                ConnectLink.expires_at > now - FLOW_GRACE,
            )
            .values(used_at=now, application_key=application_key)
        )
        if not used.rowcount:  # type: ignore[attr-defined]
            raise AccountError(
                409, "NOT_ALLOWED", "This connect link was used already, expired or was revoked."
            )
        await self._audit.record(
            "portal.connect_link_used",
            organisation_id=organisation_id,
            actor="anonymous",
            target=link_id,
            details={"application_key": application_key, "platform": platform},
            session=session,
        )

    async def on_connected(self, session: AsyncSession, flow: OAuthFlow, key: str) -> None:
        """OAuthFlows.portal_hooks: a flow a link started (its return page names the link)
        uses the link up with the application it stored."""
        prefix = f"{self.public_url}{DONE_PATH}"
        if flow.redirect.startswith(prefix) and flow.organisation_id is not None:
            link_id = flow.redirect.removeprefix(prefix)
            await self.use(session, link_id, flow.organisation_id, key, flow.platform)
