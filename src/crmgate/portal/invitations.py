"""Invitations into an organisation with a role, sent by e-mail (OWASP ASVS 2.5: a link's
token is random, single-use and expiring): the link holds 256 random bits, the database only
their SHA-256; an invitation works once, for seven days, and a new one to the same address
replaces the older one."""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import ColumnElement, delete, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from crmgate.portal.logins import normal_email
from crmgate.portal.sessions import token_hash
from crmgate.store.accounts import AccountError, AlsoWrite, Role
from crmgate.store.db import SessionFactory
from crmgate.store.ids import new_id
from crmgate.store.models import Organisation, PortalInvitation, User, utcnow

LIFETIME = timedelta(days=7)
GONE = (
    "This invitation is not valid: it was used, revoked or has expired. Ask an admin of the "
    "organisation for a new one."
)


class InvitationGone(AccountError):
    """The invitation was used, revoked or expired before it could be accepted."""

    def __init__(self) -> None:
        super().__init__(404, "ENTITY_NOT_FOUND", GONE)


@dataclass(frozen=True, slots=True)
class Invitation:
    id: str
    organisation_id: str
    organisation_name: str
    email: str
    role: Role
    invited_by: str  # the inviter's name, or "" once they are gone
    created_at: datetime
    expires_at: datetime


class Invitations:
    def __init__(self, sessions: SessionFactory) -> None:
        self._sessions = sessions

    def __repr__(self) -> str:
        return "Invitations()"

    async def create(
        self, organisation_id: str, email: str, role: Role, invited_by: str
    ) -> tuple[Invitation, str]:
        """A new invitation and the token of its link (returned once, kept only as a digest);
        an earlier open invitation of the same address into this organisation ends."""
        token = secrets.token_urlsafe(32)
        now = utcnow()
        address = normal_email(email)
        async with self._sessions.begin() as session:
            await session.execute(
                delete(PortalInvitation).where(
                    PortalInvitation.organisation_id == organisation_id,
                    PortalInvitation.email == address,
                    PortalInvitation.accepted_at.is_(None),
                )
            )
            row = PortalInvitation(
                id=new_id("inv"),
                token_hash=token_hash(token),
                organisation_id=organisation_id,
                email=address,
                role=role.value,
                invited_by=invited_by,
                created_at=now,
                expires_at=now + LIFETIME,
            )
            session.add(row)
        found = await self._views(PortalInvitation.id == row.id)
        return found[0], token

    async def _views(self, *conditions: ColumnElement[bool]) -> list[Invitation]:
        statement = (
            select(PortalInvitation, Organisation.name, User.name)
            .join(Organisation, Organisation.id == PortalInvitation.organisation_id)
            .outerjoin(User, User.id == PortalInvitation.invited_by)
            .where(*conditions)
            .order_by(PortalInvitation.created_at)
        )
        async with self._sessions() as session:
            rows = (await session.execute(statement)).all()
        return [
            Invitation(
                id=row.id,
                organisation_id=row.organisation_id,
                organisation_name=organisation,
                email=row.email,
                role=Role(row.role),
                invited_by=inviter or "",
                created_at=row.created_at,
                expires_at=row.expires_at,
            )
            for row, organisation, inviter in rows
        ]

    async def open(self, organisation_id: str) -> list[Invitation]:
        """The organisation's invitations not yet accepted and not expired."""
        return await self._views(
            PortalInvitation.organisation_id == organisation_id,
            PortalInvitation.accepted_at.is_(None),
            PortalInvitation.expires_at > utcnow(),
        )

    async def find(self, token: str) -> Invitation | None:
        """The open invitation of this link, or None (unknown, used, revoked or expired)."""
        if not token or len(token) > 100:
            return None
        found = await self._views(
            PortalInvitation.token_hash == token_hash(token),
            PortalInvitation.accepted_at.is_(None),
            PortalInvitation.expires_at > utcnow(),
        )
        return found[0] if found else None

    async def revoke(self, organisation_id: str, invitation_id: str) -> bool:
        async with self._sessions.begin() as session:
            result = await session.execute(
                delete(PortalInvitation).where(
                    PortalInvitation.id == invitation_id,
                    PortalInvitation.organisation_id == organisation_id,
                    PortalInvitation.accepted_at.is_(None),
                )
            )
            return bool(result.rowcount)  # type: ignore[attr-defined]

    @staticmethod
    def claim(invitation_id: str) -> AlsoWrite:
        """What the transaction creating the invitee writes too: the invitation accepted, if
        it still was open. Two browsers accepting at once: one gets the user, the other a
        refusal, and nothing of its attempt stays."""

        async def write(session: AsyncSession, user: User) -> None:
            result = await session.execute(
                update(PortalInvitation)
                .where(
                    PortalInvitation.id == invitation_id,
                    PortalInvitation.accepted_at.is_(None),
                    PortalInvitation.expires_at > utcnow(),
                )
                .values(accepted_at=utcnow())
            )
            if not result.rowcount:  # type: ignore[attr-defined]
                raise InvitationGone

        return write
