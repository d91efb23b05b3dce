"""Organisations, their users and the users' keys: every read and write of the account tables."""

from __future__ import annotations

import hmac
import re
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime
from enum import StrEnum
from typing import TYPE_CHECKING, Any

from sqlalchemy import Select, func, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from crmgate.cache import WarmCache, user_subject
from crmgate.query import Condition, QueryError, SortKey
from crmgate.security import keys
from crmgate.security.keys import IssuedKey, KeyHasher, KeyKind
from crmgate.security.scopes import KeyScope
from crmgate.store.db import SessionFactory
from crmgate.store.filtering import FieldSpec, order_by, where
from crmgate.store.ids import new_id
from crmgate.store.models import ApiKey, Organisation, UsageDaily, User, utcnow

if TYPE_CHECKING:
    from crmgate.audit import AuditLog


class Role(StrEnum):
    ADMIN = "admin"
    MEMBER = "member"
    VIEWER = "viewer"  # reads only (security/scopes.py)


class UserStatus(StrEnum):
    ACTIVE = "active"
    DISABLED = "disabled"


class AccountError(Exception):
    """A request the account rules refuse; ``code`` is the contract's error code."""

    def __init__(self, status: int, code: str, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.field = field


@dataclass(frozen=True, slots=True)
class Principal:
    """Who is calling: the owner of a valid, unrevoked key of an active user."""

    user_id: str
    organisation_id: str
    role: Role
    key_id: str
    key_hint: str
    key_last_used_at: datetime | None
    scope: KeyScope | None = None  # a restricted key's limits; None for a user key

    @property
    def is_admin(self) -> bool:
        return self.role is Role.ADMIN


@dataclass(frozen=True, slots=True)
class UserView:
    """A user as the API shows it, without any secret."""

    id: str
    organisation_id: str
    organisation_name: str
    name: str
    email: str
    phone: str | None
    role: Role
    status: UserStatus
    created_at: datetime
    updated_at: datetime
    last_used_at: datetime | None
    key_hint: str | None
    request_count: int = 0
    internal_request_count: int = 0


@dataclass(frozen=True, slots=True)
class NewAccount:
    organisation_id: str
    user: UserView
    key: IssuedKey


# More to write in the transaction that creates a user, once the user row is flushed.
AlsoWrite = Callable[[AsyncSession, User], Awaitable[None]]

# Fields that filters and sorts may name, the column behind each and the kind of value.
_USER_FIELDS: dict[str, FieldSpec] = {
    "key": FieldSpec(User.id),
    "id": FieldSpec(User.id),
    "name": FieldSpec(User.name),
    "email": FieldSpec(User.email, "email"),
    "phone": FieldSpec(User.phone),
    "status": FieldSpec(User.status),
    "roles": FieldSpec(User.role),
    "role": FieldSpec(User.role),
    "created_at": FieldSpec(User.created_at, "datetime"),
    "updated_at": FieldSpec(User.updated_at, "datetime"),
}
_USER_ID = re.compile(r"^usr_[0-9A-Za-z]{22}$")


class AccountStore:
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
        self._cache = cache or WarmCache.off(sessions)

    async def _record(
        self,
        session: AsyncSession,
        event: str,
        organisation_id: str,
        user_id: str,
        **details: str | int | None,
    ) -> None:
        """An audit event about a user's keys or account, written last in the transaction of
        the change: both commit, or neither."""
        if self._audit is not None:
            await self._audit.record(
                event,
                organisation_id=organisation_id,
                target=user_id,
                details=details,
                session=session,
            )

    # ---- keys -------------------------------------------------------------------------------

    def _issue(self, session: AsyncSession, user: User, now: datetime) -> IssuedKey:
        secret = keys.generate(KeyKind.USER)
        row = ApiKey(
            id=new_id("key"),
            user_id=user.id,
            organisation_id=user.organisation_id,
            kind=KeyKind.USER.value,
            hint=keys.hint(secret),
            digest=self._hasher.digest(secret),
            created_at=now,
        )
        session.add(row)
        return IssuedKey(user_id=user.id, key_id=row.id, hint=row.hint, secret=secret)

    async def authenticate(self, key: str) -> Principal | None:
        """The principal behind ``key``, or None if it is unknown, revoked or its user disabled.
        A principal seen a moment ago comes from the warm cache (crmgate/cache.py), by digest."""
        digest = self._hasher.digest(key)
        cached = self._cache.principal(digest)
        if cached is not None:
            return cached
        ticket = self._cache.ticket()
        async with self._sessions() as session:
            row = (
                await session.execute(
                    select(ApiKey, User.role)
                    .join(User, User.id == ApiKey.user_id)
                    .where(
                        ApiKey.digest == digest,
                        ApiKey.revoked_at.is_(None),
                        User.status == UserStatus.ACTIVE.value,
                    )
                )
            ).first()
        if row is None:
            return None
        api_key, role = row
        if not hmac.compare_digest(api_key.digest, digest):
            return None
        scope = None
        if api_key.kind == KeyKind.RESTRICTED.value:
            # its user's role, and on every operation its scope's grant too (api/auth.py)
            scope = KeyScope.from_json(api_key.scope or "{}", api_key.expires_at)
        principal = Principal(
            user_id=api_key.user_id,
            organisation_id=api_key.organisation_id,
            role=Role(role),
            key_id=api_key.id,
            key_hint=api_key.hint,
            key_last_used_at=api_key.last_used_at,
            scope=scope,
        )
        self._cache.keep_principal(digest, principal, ticket)
        return principal

    async def touch_key(self, key_id: str, when: datetime) -> None:
        async with self._sessions.begin() as session:
            await session.execute(
                update(ApiKey).where(ApiKey.id == key_id).values(last_used_at=when)
            )

    async def rotate_key(self, user_id: str, organisation_id: str | None = None) -> IssuedKey:
        """Revoke the user's current keys and issue a new one, in one transaction."""
        now = utcnow()
        async with self._sessions.begin() as session:
            user = await self._user_row(session, user_id, organisation_id, lock=True)
            await session.execute(
                update(ApiKey)
                .where(
                    ApiKey.user_id == user.id,
                    ApiKey.revoked_at.is_(None),
                    ApiKey.kind == KeyKind.USER.value,  # restricted keys have their own life
                )
                .values(revoked_at=now)
            )
            issued = self._issue(session, user, now)
            await self._cache.invalidate(session, user_subject(user.id))
            await self._record(
                session, "key.rotated", user.organisation_id, user.id, key=issued.hint
            )
        return issued

    async def revoke_keys(
        self, user_id: str, organisation_id: str | None = None, *, kind: KeyKind | None = None
    ) -> int:
        """Revoke the user's keys: every one, or those of one ``kind`` (the portal's "revoke my
        key" leaves the restricted keys, which have their own life)."""
        async with self._sessions.begin() as session:
            user = await self._user_row(session, user_id, organisation_id, lock=True)
            which = () if kind is None else (ApiKey.kind == kind.value,)
            result = await session.execute(
                update(ApiKey)
                .where(ApiKey.user_id == user.id, ApiKey.revoked_at.is_(None), *which)
                .values(revoked_at=utcnow())
            )
            count = int(result.rowcount)  # type: ignore[attr-defined]
            await self._cache.invalidate(session, user_subject(user.id))
            await self._record(session, "key.revoked", user.organisation_id, user.id, count=count)
        return count

    # ---- organisations and users --------------------------------------------------------------

    async def create_account(
        self, name: str, admin_name: str, admin_email: str, also: AlsoWrite | None = None
    ) -> NewAccount:
        """A new organisation, its admin and the admin's key; ``also`` writes more in the same
        transaction (the portal's sign-in row): all of it commits, or none."""
        now = utcnow()
        async with self._sessions.begin() as session:
            organisation = Organisation(id=new_id("org"), name=name, created_at=now)
            session.add(organisation)
            user = self._new_user(organisation.id, admin_name, admin_email, None, Role.ADMIN, now)
            session.add(user)
            await session.flush()
            if also is not None:
                await also(session, user)
            key = self._issue(session, user, now)
            await self._record(
                session,
                "key.created",
                organisation.id,
                user.id,
                key=key.hint,
                role="admin",
                reason="account",
            )
        return NewAccount(organisation.id, self._view(user, organisation.name, key.hint), key)

    async def organisation_count(self) -> int:
        async with self._sessions() as session:
            return int(await session.scalar(select(func.count()).select_from(Organisation)) or 0)

    async def all_users(self) -> list[UserView]:
        """Every user of every organisation, for the operator's CLI."""
        async with self._sessions() as session:
            users = list(
                (
                    await session.scalars(
                        select(User).order_by(User.organisation_id, User.created_at, User.id)
                    )
                ).all()
            )
            return await self._views(session, users)

    async def first_admin(self) -> UserView | None:
        async with self._sessions() as session:
            user = await session.scalar(
                select(User)
                .where(User.role == Role.ADMIN.value, User.status == UserStatus.ACTIVE.value)
                .order_by(User.created_at, User.id)
                .limit(1)
            )
            if user is None:
                return None
            return (await self._views(session, [user]))[0]

    @staticmethod
    def _new_user(
        organisation_id: str, name: str, email: str, phone: str | None, role: Role, now: datetime
    ) -> User:
        return User(
            id=new_id("usr"),
            organisation_id=organisation_id,
            name=name,
            email=email.lower(),
            phone=phone,
            role=role.value,
            status=UserStatus.ACTIVE.value,
            created_at=now,
            updated_at=now,
        )

    async def create_user(
        self,
        organisation_id: str,
        *,
        name: str,
        email: str,
        phone: str | None = None,
        role: Role = Role.MEMBER,
        status: UserStatus = UserStatus.ACTIVE,
        also: AlsoWrite | None = None,
    ) -> tuple[UserView, IssuedKey]:
        now = utcnow()
        async with self._sessions.begin() as session:
            organisation = await session.get(Organisation, organisation_id)
            if organisation is None:
                raise AccountError(404, "ENTITY_NOT_FOUND", "organisation not found")
            user = self._new_user(organisation_id, name, email, phone, role, now)
            user.status = status.value
            session.add(user)
            await _flush_user(session)
            if also is not None:
                await also(session, user)
            key = self._issue(session, user, now)
            await self._record(session, "user.created", organisation_id, user.id, role=user.role)
            await self._record(session, "key.created", organisation_id, user.id, key=key.hint)
        return self._view(user, organisation.name, key.hint), key

    async def _user_row(
        self,
        session: AsyncSession,
        user_id: str,
        organisation_id: str | None,
        *,
        lock: bool = False,
    ) -> User:
        if not _USER_ID.match(user_id):
            raise AccountError(404, "ENTITY_NOT_FOUND", "user not found")
        query = select(User).where(User.id == user_id)
        if organisation_id is not None:
            query = query.where(User.organisation_id == organisation_id)
        if lock:
            # Serialises key changes per user: two rotations at once leave one live key.
            query = query.with_for_update()
        user = await session.scalar(query)
        if user is None:
            raise AccountError(404, "ENTITY_NOT_FOUND", f"user {user_id} not found")
        return user

    def _filtered(
        self, query: Select[Any], organisation_id: str, conditions: Sequence[Condition]
    ) -> Select[Any]:
        return query.where(User.organisation_id == organisation_id, where(_USER_FIELDS, conditions))

    async def list_users(
        self,
        organisation_id: str,
        *,
        conditions: Sequence[Condition] = (),
        sort: Sequence[SortKey] = (),
        page: int = 1,
        page_size: int = 25,
        usage_from: date | None = None,
        usage_to: date | None = None,
    ) -> list[UserView]:
        order = order_by(_USER_FIELDS, sort, User.created_at, User.id)
        query = self._filtered(select(User), organisation_id, conditions).order_by(*order)
        query = query.offset((page - 1) * page_size).limit(page_size)
        async with self._sessions() as session:
            users = list((await session.scalars(query)).all())
            return await self._views(session, users, usage_from, usage_to)

    async def count_users(self, organisation_id: str, conditions: Sequence[Condition] = ()) -> int:
        query = self._filtered(select(func.count()).select_from(User), organisation_id, conditions)
        async with self._sessions() as session:
            return int(await session.scalar(query) or 0)

    async def get_user(
        self,
        organisation_id: str,
        user_id: str,
        usage_from: date | None = None,
        usage_to: date | None = None,
    ) -> UserView:
        async with self._sessions() as session:
            user = await self._user_row(session, user_id, organisation_id)
            return (await self._views(session, [user], usage_from, usage_to))[0]

    async def update_user(
        self, organisation_id: str, user_id: str, changes: dict[str, Any]
    ) -> UserView:
        """Apply ``changes`` (name, email, phone, role, status); the organisation keeps an admin."""
        async with self._sessions.begin() as session:
            await self._lock_organisation(session, organisation_id)
            user = await self._user_row(session, user_id, organisation_id)
            for name, value in changes.items():
                if name == "email":
                    value = value.lower()
                elif name in ("role", "status"):
                    value = value.value
                setattr(user, name, value)
            user.updated_at = utcnow()
            await _flush_user(session)
            await self._ensure_active_admin(session, organisation_id)
            if "role" in changes or "status" in changes:
                await self._cache.invalidate(session, user_subject(user_id))
            await self._record(
                session,
                "user.updated",
                organisation_id,
                user_id,
                changed=",".join(sorted(changes)),
                role=user.role if "role" in changes else None,
                status=user.status if "status" in changes else None,
            )
        return await self.get_user(organisation_id, user_id)

    async def delete_user(self, organisation_id: str, user_id: str) -> None:
        async with self._sessions.begin() as session:
            await self._lock_organisation(session, organisation_id)
            user = await self._user_row(session, user_id, organisation_id)
            await session.delete(user)
            await session.flush()
            await self._ensure_active_admin(session, organisation_id)
            await self._cache.invalidate(session, user_subject(user_id))
            await self._record(session, "user.deleted", organisation_id, user_id, keys="revoked")

    @staticmethod
    async def _lock_organisation(session: AsyncSession, organisation_id: str) -> None:
        # Written first so that it takes the write lock before any read: two admins demoting
        # each other at once are serialised instead of both seeing "another admin remains".
        await session.execute(
            update(Organisation)
            .where(Organisation.id == organisation_id)
            .values(version=Organisation.version + 1)
        )

    @staticmethod
    async def _ensure_active_admin(session: AsyncSession, organisation_id: str) -> None:
        admins = await session.scalar(
            select(func.count())
            .select_from(User)
            .where(
                User.organisation_id == organisation_id,
                User.role == Role.ADMIN.value,
                User.status == UserStatus.ACTIVE.value,
            )
        )
        if not admins:
            raise AccountError(
                403, "NOT_ALLOWED", "an organisation must keep at least one active admin"
            )

    # ---- views --------------------------------------------------------------------------------

    @staticmethod
    def _view(
        user: User,
        organisation_name: str,
        key_hint: str | None,
        last_used_at: datetime | None = None,
        usage: tuple[int, int] = (0, 0),
    ) -> UserView:
        return UserView(
            id=user.id,
            organisation_id=user.organisation_id,
            organisation_name=organisation_name,
            name=user.name,
            email=user.email,
            phone=user.phone,
            role=Role(user.role),
            status=UserStatus(user.status),
            created_at=user.created_at,
            updated_at=user.updated_at,
            last_used_at=last_used_at,
            key_hint=key_hint,
            request_count=usage[0],
            internal_request_count=usage[1],
        )

    async def _views(
        self,
        session: AsyncSession,
        users: list[User],
        usage_from: date | None = None,
        usage_to: date | None = None,
    ) -> list[UserView]:
        if not users:
            return []
        ids = [user.id for user in users]
        organisation_names = {
            organisation_id: name
            for organisation_id, name in (
                await session.execute(
                    select(Organisation.id, Organisation.name).where(
                        Organisation.id.in_({user.organisation_id for user in users})
                    )
                )
            )
        }
        active_keys = {
            user_id: (hint, last_used)
            for user_id, hint, last_used in (
                await session.execute(
                    select(ApiKey.user_id, ApiKey.hint, ApiKey.last_used_at)
                    .where(
                        ApiKey.user_id.in_(ids),
                        ApiKey.revoked_at.is_(None),
                        ApiKey.kind == KeyKind.USER.value,
                    )
                    .order_by(ApiKey.created_at)
                )
            )
        }
        last_used = {
            user_id: when
            for user_id, when in (
                await session.execute(
                    select(ApiKey.user_id, func.max(ApiKey.last_used_at))
                    .where(ApiKey.user_id.in_(ids))
                    .group_by(ApiKey.user_id)
                )
            )
        }
        usage_query = (
            select(
                UsageDaily.user_id,
                func.sum(UsageDaily.request_count),
                func.sum(UsageDaily.internal_request_count),
            )
            .where(UsageDaily.user_id.in_(ids))
            .group_by(UsageDaily.user_id)
        )
        if usage_from is not None:
            usage_query = usage_query.where(UsageDaily.day >= usage_from)
        if usage_to is not None:
            usage_query = usage_query.where(UsageDaily.day <= usage_to)
        usage = {
            user_id: (int(requests or 0), int(internal or 0))
            for user_id, requests, internal in (await session.execute(usage_query))
        }
        return [
            self._view(
                user,
                organisation_names.get(user.organisation_id, ""),
                active_keys.get(user.id, (None, None))[0],
                _aware(last_used.get(user.id)),
                usage.get(user.id, (0, 0)),
            )
            for user in users
        ]


async def _flush_user(session: AsyncSession) -> None:
    """Write a new or changed user: the one unique constraint it can break is its e-mail (only
    this flush is read so; a failure of the audit event later in the transaction is not)."""
    try:
        await session.flush()
    except IntegrityError as exc:
        raise AccountError(
            422, "NOT_VALID", "email: a user with this e-mail already exists", "email"
        ) from exc


def _aware(value: datetime | None) -> datetime | None:
    # Aggregates (max) bypass the column type, so SQLite hands back a naive string or datetime.
    if value is None:
        return None
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value


def day_range(start: date | None, end: date | None) -> tuple[date | None, date | None]:
    if start and end and end < start:
        raise QueryError("application_request_end", "is before application_request_start")
    return start, end


__all__ = [
    "AccountError",
    "AccountStore",
    "NewAccount",
    "Principal",
    "Role",
    "UserStatus",
    "UserView",
    "day_range",
]
