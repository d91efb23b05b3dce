"""Restricted keys: issued by an admin for a user of the organisation, limited to a scope
(security/scopes.py), shown once, listed without their secret, revocable one by one.

They live in ``api_keys`` beside the user keys (kind ``cgr``), so authentication, last-used
tracking, revocation with the user and the secret-canary checks apply to them unchanged.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING

from sqlalchemy import Select, func, select, update

from crmgate.cache import WarmCache, user_subject
from crmgate.security import keys
from crmgate.security.keys import IssuedKey, KeyHasher, KeyKind
from crmgate.security.scopes import KeyScope
from crmgate.store.accounts import AccountError
from crmgate.store.db import SessionFactory
from crmgate.store.ids import new_id
from crmgate.store.models import ApiKey, Application, User, utcnow

if TYPE_CHECKING:
    from crmgate.audit import AuditLog

_KEY_ID = re.compile(r"^key_[0-9A-Za-z]{22}$")
_USER_ID = re.compile(r"^usr_[0-9A-Za-z]{22}$")


@dataclass(frozen=True, slots=True)
class RestrictedKeyView:
    """A restricted key as listings show it: never its secret."""

    id: str
    user_id: str
    hint: str
    description: str | None
    scope: KeyScope
    created_at: datetime
    last_used_at: datetime | None


class RestrictedKeyStore:
    def __init__(
        self,
        sessions: SessionFactory,
        hasher: KeyHasher,
        audit: AuditLog | None = None,
        cache: WarmCache | None = None,
    ) -> None:
        self._sessions = sessions
        self._hasher = hasher
        self._audit = audit
        self._cache = cache or WarmCache.off(sessions)  # told of revocations

    async def create(
        self,
        organisation_id: str | None,
        user_id: str,
        scope: KeyScope,
        description: str | None = None,
    ) -> tuple[RestrictedKeyView, IssuedKey]:
        """Issue a key for ``user_id`` (of the organisation; any, for the operator's CLI)
        limited to ``scope``."""
        now = utcnow()
        if scope.expires_at is not None and scope.expires_at <= now:
            raise AccountError(422, "NOT_VALID", "expires_at: must be in the future", "expires_at")
        async with self._sessions.begin() as session:
            user = None
            if _USER_ID.match(user_id):
                query = select(User).where(User.id == user_id)
                if organisation_id is not None:
                    query = query.where(User.organisation_id == organisation_id)
                user = await session.scalar(query)
            if user is None:
                raise AccountError(422, "NOT_VALID", f"user: no user {user_id[:40]}", "user")
            organisation_id = user.organisation_id
            if scope.applications:
                known = set(
                    (
                        await session.scalars(
                            select(Application.id).where(
                                Application.organisation_id == organisation_id,
                                Application.id.in_(scope.applications),
                            )
                        )
                    ).all()
                )
                unknown = sorted(scope.applications - known)
                if unknown:
                    raise AccountError(
                        422,
                        "NOT_VALID",
                        f"applications: no application {unknown[0][:40]}",
                        "applications",
                    )
            secret = keys.generate(KeyKind.RESTRICTED)
            row = ApiKey(
                id=new_id("key"),
                user_id=user.id,
                organisation_id=organisation_id,
                kind=KeyKind.RESTRICTED.value,
                hint=keys.hint(secret),
                digest=self._hasher.digest(secret),
                created_at=now,
                scope=scope.to_json(),
                expires_at=scope.expires_at,
                description=description,
            )
            session.add(row)
            if self._audit is not None:  # in the key's transaction: both commit, or neither
                await self._audit.record(
                    "key.created",
                    organisation_id=organisation_id,
                    target=user.id,
                    details={
                        "key": row.hint,
                        "restricted": row.id,
                        "expires_at": scope.expires_at.isoformat() if scope.expires_at else None,
                    },
                    session=session,
                )
        issued = IssuedKey(user_id=user.id, key_id=row.id, hint=row.hint, secret=secret)
        return _view(row), issued

    async def list_page(
        self, organisation_id: str | None, *, page: int = 1, page_size: int = 25
    ) -> list[RestrictedKeyView]:
        """The organisation's unrevoked restricted keys, oldest first (expired ones included,
        until revoked: their expiry shows)."""
        async with self._sessions() as session:
            rows = (
                await session.scalars(
                    self._live(organisation_id)
                    .order_by(ApiKey.created_at, ApiKey.id)
                    .offset((page - 1) * page_size)
                    .limit(page_size)
                )
            ).all()
        return [_view(row) for row in rows]

    async def count(self, organisation_id: str) -> int:
        query = self._live(organisation_id).with_only_columns(func.count())
        async with self._sessions() as session:
            return int(await session.scalar(query) or 0)

    async def revoke(self, organisation_id: str | None, key_id: str) -> None:
        """Revoke one restricted key of the organisation: 404 for any other id."""
        missing = AccountError(404, "ENTITY_NOT_FOUND", f"key {key_id[:40]} not found")
        if not _KEY_ID.match(key_id):
            raise missing
        async with self._sessions.begin() as session:
            result = await session.execute(
                update(ApiKey)
                .where(
                    ApiKey.id == key_id,
                    ApiKey.organisation_id == (organisation_id or ApiKey.organisation_id),
                    ApiKey.kind == KeyKind.RESTRICTED.value,
                    ApiKey.revoked_at.is_(None),
                )
                .values(revoked_at=utcnow())
                .returning(ApiKey.user_id, ApiKey.hint, ApiKey.organisation_id)
            )
            revoked = result.first()
            if revoked is None:
                raise missing
            await self._cache.invalidate(session, user_subject(revoked.user_id))
            if self._audit is not None:
                await self._audit.record(
                    "key.revoked",
                    organisation_id=revoked.organisation_id,
                    target=revoked.user_id,
                    details={"key": revoked.hint, "restricted": key_id},
                    session=session,
                )

    @staticmethod
    def _live(organisation_id: str | None) -> Select[ApiKey]:
        query = select(ApiKey).where(
            ApiKey.kind == KeyKind.RESTRICTED.value, ApiKey.revoked_at.is_(None)
        )
        if organisation_id is not None:
            query = query.where(ApiKey.organisation_id == organisation_id)
        return query


def _view(row: ApiKey) -> RestrictedKeyView:
    return RestrictedKeyView(
        id=row.id,
        user_id=row.user_id,
        hint=row.hint,
        description=row.description,
        scope=KeyScope.from_json(row.scope or "{}", row.expires_at),
        created_at=row.created_at,
        last_used_at=row.last_used_at,
    )
