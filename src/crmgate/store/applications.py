"""Connected applications: rows whose credentials live only as vault ciphertext.

The vault context of a row is its organisation and application key, so a ciphertext copied onto
another row does not decrypt. Plaintext credentials exist only inside ``Credentials`` objects,
in memory, for as long as a caller holds them, and in the warm cache (crmgate/cache.py) for
``CRMGATE_CACHE_TTL`` seconds at most: every change here tells every process's cache to drop
its copy, in the change's own transaction.
"""

from __future__ import annotations

import json
import re
import secrets
from collections.abc import Awaitable, Callable, Collection, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, and_, func, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from crmgate.cache import WarmCache, application_subject
from crmgate.query import Condition, SortKey
from crmgate.security.vault import DecryptionError, Sealed, Vault
from crmgate.store.accounts import AccountError
from crmgate.store.db import SessionFactory
from crmgate.store.filtering import FieldSpec, order_by, where
from crmgate.store.models import Application, Organisation, utcnow

_KEY = re.compile(r"^[0-9a-f]{40}$")

# Run last inside a change's transaction, with the application's key: the audit event of that
# change (crmgate/audit/), so that the change and its event commit together or not at all.
InTransaction = Callable[[AsyncSession, str], Awaitable[object]]


class RenewalRefused(Exception):
    """Raised by a renewal when the CRM refused for good: the application is marked
    unauthorized and ``cause`` (the CRM's refusal) goes on to the caller."""

    def __init__(self, cause: Exception) -> None:
        super().__init__(str(cause))
        self.cause = cause


def new_application_key() -> str:
    """40 hex characters (160 bits), the shape of the contract's application keys."""
    return secrets.token_hex(20)


class Credentials:
    """Decrypted credentials: the client's fields and what the gateway derived (a session).
    Its repr shows field names only."""

    __slots__ = ("derived", "fields")

    def __init__(self, fields: Mapping[str, str], derived: Mapping[str, str]) -> None:
        self.fields = dict(fields)
        self.derived = dict(derived)

    def __repr__(self) -> str:
        return f"Credentials(fields={sorted(self.fields)}, derived={sorted(self.derived)})"

    def to_bytes(self) -> bytes:
        return json.dumps({"fields": self.fields, "derived": self.derived}).encode()

    @classmethod
    def from_bytes(cls, data: bytes) -> Credentials:
        loaded = json.loads(data)
        return cls(loaded["fields"], loaded["derived"])


@dataclass(frozen=True, slots=True)
class ApplicationView:
    key: str
    organisation_id: str
    user_id: str | None
    type: str
    authorization: str
    description: str
    is_authorized: bool
    identity: dict[str, Any]
    public_credential: dict[str, str]
    key_version: int
    created_at: datetime
    updated_at: datetime
    last_used_at: datetime | None
    credentials_revision: int


_FIELDS: dict[str, FieldSpec] = {
    "key": FieldSpec(Application.id),
    "type": FieldSpec(Application.type),
    "authorization": FieldSpec(Application.authorization),
    "description": FieldSpec(Application.description),
    "is_authorized": FieldSpec(Application.is_authorized, "boolean"),
    "user_key": FieldSpec(Application.user_id),
    "created_at": FieldSpec(Application.created_at, "datetime"),
    "updated_at": FieldSpec(Application.updated_at, "datetime"),
    "last_used_at": FieldSpec(Application.last_used_at, "datetime"),
}


def _view(row: Application) -> ApplicationView:
    return ApplicationView(
        key=row.id,
        organisation_id=row.organisation_id,
        user_id=row.user_id,
        type=row.type,
        authorization=row.authorization,
        description=row.description,
        is_authorized=row.is_authorized,
        identity=json.loads(row.identity),
        public_credential=json.loads(row.public_credential),
        key_version=row.key_version,
        created_at=row.created_at,
        updated_at=row.updated_at,
        last_used_at=row.last_used_at,
        credentials_revision=row.credentials_revision,
    )


def _context(organisation_id: str, key: str) -> bytes:
    return f"application|{organisation_id}|{key}".encode()


def _visible(organisation_id: str, within: Collection[str] | None) -> ColumnElement[bool]:
    # In the query itself, so that pages and counts are those of what the caller may see.
    mine = Application.organisation_id == organisation_id
    return mine if within is None else and_(mine, Application.id.in_(sorted(within)))


def _not_found(key: str) -> AccountError:
    # The same answer for a key that does not exist and one of another organisation.
    return AccountError(404, "ENTITY_NOT_FOUND", "application not found")


class ApplicationStore:
    def __init__(
        self, sessions: SessionFactory, vault: Vault, cache: WarmCache | None = None
    ) -> None:
        self._sessions = sessions
        self._vault = vault
        self._cache = cache or WarmCache.off(sessions)

    async def _changed(self, session: AsyncSession, organisation_id: str, key: str) -> None:
        """Within the transaction of a change to the application: every process's cached copy
        goes (crmgate/cache.py)."""
        await self._cache.invalidate(session, application_subject(organisation_id, key))

    def _stale(self, organisation_id: str, key: str) -> None:
        # another process changed it: our copy goes now, before that process's poll tells us
        self._cache.forget([application_subject(organisation_id, key)])

    def _seal(self, organisation_id: str, key: str, credentials: Credentials) -> Sealed:
        return self._vault.encrypt(credentials.to_bytes(), _context(organisation_id, key))

    def _open(self, row: Application) -> Credentials:
        sealed = Sealed(row.key_version, row.ciphertext)
        return Credentials.from_bytes(
            self._vault.decrypt(sealed, _context(row.organisation_id, row.id))
        )

    async def _row(
        self, session: AsyncSession, organisation_id: str, key: str, *, lock: bool = False
    ) -> Application:
        if not _KEY.match(key):
            raise _not_found(key)
        query = select(Application).where(
            Application.id == key, Application.organisation_id == organisation_id
        )
        if lock:
            query = query.with_for_update()
        row = await session.scalar(query)
        if row is None:
            raise _not_found(key)
        return row

    async def create(
        self,
        organisation_id: str,
        user_id: str,
        *,
        type: str,
        authorization: str,
        description: str,
        credentials: Credentials,
        public_credential: Mapping[str, str],
        identity: Mapping[str, Any],
        limit: int,
        audit: InTransaction | None = None,
    ) -> ApplicationView:
        key = new_application_key()
        now = utcnow()
        async with self._sessions.begin() as session:
            # Lock the organisation first: concurrent creations cannot pass the limit together.
            await session.execute(
                update(Organisation)
                .where(Organisation.id == organisation_id)
                .values(version=Organisation.version + 1)
            )
            count = await session.scalar(
                select(func.count())
                .select_from(Application)
                .where(Application.organisation_id == organisation_id)
            )
            if (count or 0) >= limit:
                raise AccountError(
                    403,
                    "SERVICE_CONNECTED_APPLICATIONS_LIMIT",
                    f"the organisation has reached its limit of {limit} connected applications",
                )
            # Sealed inside the transaction, as late as possible: a key version retired meanwhile
            # cannot end up protecting this row.
            sealed = self._seal(organisation_id, key, credentials)
            row = Application(
                id=key,
                organisation_id=organisation_id,
                user_id=user_id,
                type=type,
                authorization=authorization,
                description=description,
                is_authorized=True,
                identity=json.dumps(dict(identity)),
                public_credential=json.dumps(dict(public_credential)),
                key_version=sealed.version,
                ciphertext=sealed.blob,
                created_at=now,
                updated_at=now,
            )
            session.add(row)
            if audit is not None:
                await audit(session, key)
        return _view(row)

    async def get(self, organisation_id: str, key: str) -> ApplicationView:
        async with self._sessions() as session:
            return _view(await self._row(session, organisation_id, key))

    async def credentials(
        self, organisation_id: str, key: str, *, fresh: bool = False
    ) -> tuple[ApplicationView, Credentials]:
        """The application and its decrypted credentials: from the warm cache (crmgate/cache.py)
        when it holds them, unless ``fresh`` (a change about to be based on them)."""
        if not fresh:
            cached = self._cache.application(organisation_id, key)
            if cached is not None:
                return cached
        ticket = self._cache.ticket()
        async with self._sessions() as session:
            row = await self._row(session, organisation_id, key)
            entry = _view(row), self._open(row)
        self._cache.keep_application(entry, ticket)
        return entry

    async def list_page(
        self,
        organisation_id: str,
        *,
        within: Collection[str] | None = None,
        conditions: Sequence[Condition] = (),
        sort: Sequence[SortKey] = (),
        page: int = 1,
        page_size: int = 25,
    ) -> list[ApplicationView]:
        """A page of the organisation's applications; only those among ``within`` (a
        restricted key's applications) unless it is None."""
        query = (
            select(Application)
            .where(_visible(organisation_id, within), where(_FIELDS, conditions))
            .order_by(*order_by(_FIELDS, sort, Application.created_at, Application.id))
            .offset((page - 1) * page_size)
            .limit(page_size)
        )
        async with self._sessions() as session:
            return [_view(row) for row in (await session.scalars(query)).all()]

    async def count(
        self,
        organisation_id: str,
        conditions: Sequence[Condition] = (),
        *,
        within: Collection[str] | None = None,
    ) -> int:
        """How many applications ``list_page`` would go through with the same arguments."""
        query = (
            select(func.count())
            .select_from(Application)
            .where(_visible(organisation_id, within), where(_FIELDS, conditions))
        )
        async with self._sessions() as session:
            return int(await session.scalar(query) or 0)

    async def update(
        self,
        organisation_id: str,
        key: str,
        *,
        description: str | None = None,
        authorization: str | None = None,
        credentials: Credentials | None = None,
        public_credential: Mapping[str, str] | None = None,
        identity: Mapping[str, Any] | None = None,
        expected_revision: int | None = None,
        audit: InTransaction | None = None,
    ) -> ApplicationView:
        """Change what is given. With ``expected_revision``, refuse (409) when the credentials
        changed since the caller read them, so two updates never silently overwrite each other
        (the vault's rewrap does not count as a change)."""
        async with self._sessions.begin() as session:
            row = await self._row(session, organisation_id, key, lock=True)
            if expected_revision is not None and row.credentials_revision != expected_revision:
                raise AccountError(
                    409, "CONFLICT", "the application changed meanwhile; send the update again"
                )
            if description is not None:
                row.description = description
            if authorization is not None:
                row.authorization = authorization
            if credentials is not None:
                sealed = self._seal(organisation_id, key, credentials)
                row.key_version, row.ciphertext = sealed.version, sealed.blob
                row.credentials_revision += 1
                row.is_authorized = True
            if public_credential is not None:
                row.public_credential = json.dumps(dict(public_credential))
            if identity is not None:
                row.identity = json.dumps(dict(identity))
            row.updated_at = utcnow()
            await self._changed(session, organisation_id, key)
            if audit is not None:
                await audit(session, key)
        return _view(row)

    async def renew_locked(
        self,
        organisation_id: str,
        key: str,
        seen_revision: int,
        produce: Callable[[Credentials], Awaitable[Credentials]],
        audit_renewed: InTransaction | None = None,
        audit_refused: InTransaction | None = None,
    ) -> tuple[ApplicationView, Credentials]:
        """Replace the credentials with what ``produce`` makes of them (new tokens, a new
        session), one renewal at a time per application.

        On PostgreSQL the application's row is locked (SELECT ... FOR UPDATE) from before the
        old credentials are read until the new ones are committed, so across every gateway
        process exactly one renewal calls the CRM; the others wait for the row and find the new
        credentials. SQLite's write lock would hold the whole database during the CRM call, so
        there the caller's in-process lock serialises renewals (the embedded default is one
        process) and the result is committed only if nobody renewed meanwhile.

        If the credentials changed since the caller saw them (revision ``seen_revision``),
        another request renewed them already: those are returned and ``produce`` is not called.
        If ``produce`` raises ``RenewalRefused``, the application is marked unauthorized (that
        is committed) and the refusal's cause is raised. ``audit_renewed`` / ``audit_refused``
        write their events in the transaction that stores the renewal / the refusal."""
        if not self._sessions.row_locks:
            return await self._renew_optimistic(
                organisation_id, key, seen_revision, produce, audit_renewed, audit_refused
            )
        refused: RenewalRefused | None = None
        async with self._sessions.begin() as session:
            row = await self._row(session, organisation_id, key, lock=True)
            current = self._open(row)
            if row.credentials_revision != seen_revision:
                self._stale(organisation_id, key)
                return _view(row), current
            try:
                renewed = await produce(current)
            except RenewalRefused as error:
                refused = error
                row.is_authorized = False
                row.updated_at = utcnow()
                await self._changed(session, organisation_id, key)
                if audit_refused is not None:
                    await audit_refused(session, key)
            else:
                self._store_renewal(row, renewed)
                await self._changed(session, organisation_id, key)
                if audit_renewed is not None:
                    await audit_renewed(session, key)
        if refused is not None:
            raise refused.cause
        return _view(row), renewed

    async def _renew_optimistic(
        self,
        organisation_id: str,
        key: str,
        seen_revision: int,
        produce: Callable[[Credentials], Awaitable[Credentials]],
        audit_renewed: InTransaction | None,
        audit_refused: InTransaction | None,
    ) -> tuple[ApplicationView, Credentials]:
        async with self._sessions() as session:
            row = await self._row(session, organisation_id, key)
            view, current = _view(row), self._open(row)
        if view.credentials_revision != seen_revision:
            self._stale(organisation_id, key)
            return view, current
        try:
            renewed = await produce(current)
        except RenewalRefused as error:
            async with self._sessions.begin() as session:
                row = await self._row(session, organisation_id, key, lock=True)
                if row.credentials_revision == seen_revision:
                    row.is_authorized = False
                    row.updated_at = utcnow()
                    await self._changed(session, organisation_id, key)
                    if audit_refused is not None:
                        await audit_refused(session, key)
            raise error.cause from None
        async with self._sessions.begin() as session:  # a short write: no CRM call inside
            row = await self._row(session, organisation_id, key, lock=True)
            if row.credentials_revision != seen_revision:
                self._stale(organisation_id, key)
                return _view(row), self._open(row)  # renewed elsewhere meanwhile: theirs wins
            self._store_renewal(row, renewed)
            await self._changed(session, organisation_id, key)
            if audit_renewed is not None:
                await audit_renewed(session, key)
        return _view(row), renewed

    def _store_renewal(self, row: Application, renewed: Credentials) -> None:
        sealed = self._seal(row.organisation_id, row.id, renewed)
        row.key_version, row.ciphertext = sealed.version, sealed.blob
        row.credentials_revision += 1
        row.is_authorized = True

    async def touch(self, key: str, when: datetime) -> None:
        """Record that the application was used (last_used_at); no row lock, no revision."""
        async with self._sessions.begin() as session:
            await session.execute(
                update(Application).where(Application.id == key).values(last_used_at=when)
            )

    async def delete(
        self, organisation_id: str, key: str, audit: InTransaction | None = None
    ) -> None:
        async with self._sessions.begin() as session:
            row = await self._row(session, organisation_id, key, lock=True)
            await session.delete(row)
            await self._changed(session, organisation_id, key)
            if audit is not None:
                await audit(session, key)

    # ---- the vault's maintenance ----------------------------------------------------------------

    async def key_versions(self) -> dict[int, int]:
        """Key version -> how many applications it protects."""
        async with self._sessions() as session:
            rows = await session.execute(
                select(Application.key_version, func.count()).group_by(Application.key_version)
            )
            return {int(version): int(count) for version, count in rows}

    async def rewrap(self, batch_size: int = 100) -> tuple[int, list[str]]:
        """Re-encrypt every row not under the newest key version. Returns how many moved, and the
        keys of rows whose ciphertext cannot be decrypted (left as they are, for the operator).

        Each batch is its own short transaction holding row locks, so the gateway keeps serving
        (and writing) throughout; a row changed meanwhile is simply picked up again.
        """
        moved = 0
        unreadable: list[str] = []
        while True:
            newest = self._vault.keyring.newest
            async with self._sessions.begin() as session:
                query = select(Application).where(Application.key_version != newest)
                if unreadable:
                    query = query.where(Application.id.not_in(unreadable))
                rows = (
                    await session.scalars(
                        query.order_by(Application.id).limit(batch_size).with_for_update()
                    )
                ).all()
                for row in rows:
                    context = _context(row.organisation_id, row.id)
                    try:
                        sealed = self._vault.rewrap(
                            Sealed(row.key_version, row.ciphertext), context
                        )
                    except DecryptionError:
                        unreadable.append(row.id)
                        continue
                    row.key_version, row.ciphertext = sealed.version, sealed.blob
                    moved += 1
            if len(rows) < batch_size:
                return moved, unreadable
