"""Who may sign in to the portal, and with what: each user's e-mail address (unique across
organisations), password hash, TOTP seed (sealed by the vault) and recovery codes (kept as
digests). The organisations, users and keys themselves are the account store's."""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass, field
from datetime import datetime

from sqlalchemy import delete, func, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from crmgate.security.keys import IssuedKey
from crmgate.security.vault import DecryptionError, Sealed, Vault
from crmgate.store.accounts import AccountError, AccountStore, AlsoWrite, Role
from crmgate.store.db import SessionFactory
from crmgate.store.ids import new_id
from crmgate.store.models import (
    Organisation,
    PortalLogin,
    PortalPasskey,
    PortalRecoveryCode,
    User,
    utcnow,
)

RECOVERY_CODES = 10
_CODE_ALPHABET = "abcdefghjkmnpqrstuvwxyz23456789"  # no 0/o, 1/l/i: read off paper


@dataclass(frozen=True, slots=True)
class PortalUser:
    """A signed-in user as the portal shows them (no secret)."""

    user_id: str
    organisation_id: str
    organisation_name: str
    name: str
    email: str
    role: Role
    active: bool
    totp: bool  # a TOTP seed is enrolled
    passkeys: int
    require_two_factor: bool  # the organisation asks every member for a second factor

    @property
    def two_factor(self) -> bool:
        return self.totp or self.passkeys > 0

    @property
    def is_admin(self) -> bool:
        return self.role is Role.ADMIN


@dataclass(frozen=True, slots=True)
class Login:
    """What a sign-in checks: the stored hash (a secret's digest, never shown) and the user."""

    user: PortalUser
    password_hash: str = field(repr=False)


def normal_email(email: str) -> str:
    return email.strip().lower()


def new_recovery_code() -> str:
    body = "".join(secrets.choice(_CODE_ALPHABET) for _ in range(10))
    return f"{body[:5]}-{body[5:]}"


def _seed_context(user_id: str) -> bytes:
    return f"portal-totp:{user_id}".encode()


class Logins:
    def __init__(
        self, sessions: SessionFactory, accounts: AccountStore, vault: Vault, pepper: bytes
    ):
        self._sessions = sessions
        self._accounts = accounts
        self._vault = vault
        self._pepper = pepper

    def __repr__(self) -> str:
        return "Logins()"

    def _code_digest(self, code: str) -> bytes:
        normal = code.strip().lower().replace("-", "").replace(" ", "")
        return hmac.new(self._pepper, f"recovery:{normal}".encode(), hashlib.sha256).digest()

    # ---- reading ------------------------------------------------------------------------------

    async def _user(self, session: AsyncSession, user_id: str) -> Login | None:
        row = (
            await session.execute(
                select(PortalLogin, User, Organisation)
                .join(User, User.id == PortalLogin.user_id)
                .join(Organisation, Organisation.id == User.organisation_id)
                .where(PortalLogin.user_id == user_id)
            )
        ).first()
        if row is None:
            return None
        login, user, organisation = row
        passkeys = await session.scalar(
            select(func.count()).select_from(PortalPasskey).where(PortalPasskey.user_id == user_id)
        )
        return Login(
            PortalUser(
                user_id=user.id,
                organisation_id=organisation.id,
                organisation_name=organisation.name,
                name=user.name,
                email=login.email,
                role=Role(user.role),
                active=user.status == "active",
                totp=login.totp_seed is not None,
                passkeys=int(passkeys or 0),
                require_two_factor=organisation.require_two_factor,
            ),
            login.password_hash,
        )

    async def by_email(self, email: str) -> Login | None:
        async with self._sessions() as session:
            user_id = await session.scalar(
                select(PortalLogin.user_id).where(PortalLogin.email == normal_email(email))
            )
            return None if user_id is None else await self._user(session, user_id)

    async def by_user(self, user_id: str) -> Login | None:
        async with self._sessions() as session:
            return await self._user(session, user_id)

    async def email_taken(self, email: str) -> bool:
        return await self.by_email(email) is not None

    # ---- creating -----------------------------------------------------------------------------

    def _login_writer(self, email: str, password_hash: str) -> AlsoWrite:
        async def write(session: AsyncSession, user: User) -> None:
            session.add(
                PortalLogin(user_id=user.id, email=normal_email(email), password_hash=password_hash)
            )
            try:
                await session.flush()
            except IntegrityError:
                raise AccountError(
                    409, "NOT_VALID", "this e-mail address already has a portal account", "email"
                ) from None

        return write

    async def sign_up(
        self, organisation: str, name: str, email: str, password_hash: str
    ) -> tuple[PortalUser, IssuedKey]:
        """A new organisation with this person as its admin, a portal login and a user key."""
        account = await self._accounts.create_account(
            organisation, name, email, also=self._login_writer(email, password_hash)
        )
        login = await self.by_user(account.user.id)
        assert login is not None
        return login.user, account.key

    async def join(
        self,
        organisation_id: str,
        name: str,
        email: str,
        role: Role,
        password_hash: str,
        also: AlsoWrite | None = None,
    ) -> tuple[PortalUser, IssuedKey]:
        """A new member of an existing organisation (an accepted invitation); ``also`` writes
        more in the same transaction (the invitation, spent)."""
        write_login = self._login_writer(email, password_hash)

        async def write(session: AsyncSession, user: User) -> None:
            await write_login(session, user)
            if also is not None:
                await also(session, user)

        view, key = await self._accounts.create_user(
            organisation_id, name=name, email=email, role=role, also=write
        )
        login = await self.by_user(view.id)
        assert login is not None
        return login.user, key

    async def ensure(self, user_id: str, email: str, password_hash: str) -> None:
        """A portal login for an existing user (the demo's admin), its password set anew."""
        async with self._sessions.begin() as session:
            login = await session.get(PortalLogin, user_id)
            if login is None:
                session.add(
                    PortalLogin(
                        user_id=user_id, email=normal_email(email), password_hash=password_hash
                    )
                )
            else:
                login.password_hash = password_hash
                login.password_changed_at = utcnow()

    async def set_password(self, user_id: str, password_hash: str) -> None:
        async with self._sessions.begin() as session:
            await session.execute(
                update(PortalLogin)
                .where(PortalLogin.user_id == user_id)
                .values(password_hash=password_hash, password_changed_at=utcnow())
            )

    async def rehash(self, user_id: str, old_hash: str, new_hash: str) -> None:
        """Store a hash under the current parameters, unless the password changed meanwhile."""
        async with self._sessions.begin() as session:
            await session.execute(
                update(PortalLogin)
                .where(PortalLogin.user_id == user_id, PortalLogin.password_hash == old_hash)
                .values(password_hash=new_hash)
            )

    # ---- TOTP ---------------------------------------------------------------------------------

    def seal_seed(self, user_id: str, seed: str) -> Sealed:
        return self._vault.encrypt(seed.encode(), _seed_context(user_id))

    def open_seed(self, user_id: str, sealed: Sealed) -> str:
        return self._vault.decrypt(sealed, _seed_context(user_id)).decode()

    async def totp_seed(self, user_id: str) -> tuple[str, int | None] | None:
        """The enrolled seed and the last step a code was accepted for."""
        async with self._sessions() as session:
            login = await session.get(PortalLogin, user_id)
        if login is None or login.totp_seed is None or login.totp_key_version is None:
            return None
        seed = self.open_seed(user_id, Sealed(login.totp_key_version, login.totp_seed))
        return seed, login.totp_last_step

    async def seed_key_versions(self) -> dict[int, int]:
        """Key version -> how many TOTP seeds it protects (``crmgate vault status``)."""
        async with self._sessions() as session:
            rows = await session.execute(
                select(PortalLogin.totp_key_version, func.count())
                .where(PortalLogin.totp_key_version.is_not(None))
                .group_by(PortalLogin.totp_key_version)
            )
            return {int(version): int(count) for version, count in rows if version is not None}

    async def rewrap_seeds(self, batch_size: int = 100) -> tuple[int, list[str]]:
        """Re-seal every TOTP seed not under the newest key version, in short batches as
        ``ApplicationStore.rewrap`` does (sign-ins go on meanwhile). How many moved, and the
        users whose seed cannot be decrypted (left as they are, for the operator)."""
        moved = 0
        unreadable: list[str] = []
        while True:
            newest = self._vault.keyring.newest
            async with self._sessions.begin() as session:
                query = select(PortalLogin).where(
                    PortalLogin.totp_seed.is_not(None), PortalLogin.totp_key_version != newest
                )
                if unreadable:
                    query = query.where(PortalLogin.user_id.not_in(unreadable))
                rows = (
                    await session.scalars(
                        query.order_by(PortalLogin.user_id).limit(batch_size).with_for_update()
                    )
                ).all()
                for row in rows:
                    assert row.totp_seed is not None and row.totp_key_version is not None
                    try:
                        sealed = self._vault.rewrap(
                            Sealed(row.totp_key_version, row.totp_seed), _seed_context(row.user_id)
                        )
                    except DecryptionError:
                        unreadable.append(row.user_id)
                        continue
                    row.totp_key_version, row.totp_seed = sealed.version, sealed.blob
                    moved += 1
            if len(rows) < batch_size:
                return moved, unreadable

    async def use_step(self, user_id: str, step: int) -> bool:
        """Mark ``step`` used, atomically: False when it (or a later one) already was, so that
        two requests racing with the same code cannot both pass."""
        async with self._sessions.begin() as session:
            result = await session.execute(
                update(PortalLogin)
                .where(
                    PortalLogin.user_id == user_id,
                    (PortalLogin.totp_last_step.is_(None)) | (PortalLogin.totp_last_step < step),
                )
                .values(totp_last_step=step)
            )
            return bool(result.rowcount)  # type: ignore[attr-defined]

    async def enrol_totp(self, user_id: str, seed: str, step: int) -> list[str]:
        """Store the seed (its first code, ``step``, already used) and, if the user has none,
        a fresh set of recovery codes, returned once in clear."""
        sealed = self.seal_seed(user_id, seed)
        async with self._sessions.begin() as session:
            await session.execute(
                update(PortalLogin)
                .where(PortalLogin.user_id == user_id)
                .values(totp_key_version=sealed.version, totp_seed=sealed.blob, totp_last_step=step)
            )
            return await self._new_codes_if_none(session, user_id)

    async def _new_codes_if_none(self, session: AsyncSession, user_id: str) -> list[str]:
        left = await session.scalar(
            select(func.count())
            .select_from(PortalRecoveryCode)
            .where(PortalRecoveryCode.user_id == user_id, PortalRecoveryCode.used_at.is_(None))
        )
        if left:
            return []
        return await self._replace_codes(session, user_id)

    async def _replace_codes(self, session: AsyncSession, user_id: str) -> list[str]:
        await session.execute(
            delete(PortalRecoveryCode).where(PortalRecoveryCode.user_id == user_id)
        )
        codes = [new_recovery_code() for _ in range(RECOVERY_CODES)]
        session.add_all(
            PortalRecoveryCode(id=new_id("rec"), user_id=user_id, digest=self._code_digest(code))
            for code in codes
        )
        return codes

    async def new_recovery_codes(self, user_id: str) -> list[str]:
        async with self._sessions.begin() as session:
            return await self._replace_codes(session, user_id)

    async def recovery_codes_left(self, user_id: str) -> int:
        async with self._sessions() as session:
            return int(
                await session.scalar(
                    select(func.count())
                    .select_from(PortalRecoveryCode)
                    .where(
                        PortalRecoveryCode.user_id == user_id, PortalRecoveryCode.used_at.is_(None)
                    )
                )
                or 0
            )

    async def use_recovery_code(self, user_id: str, code: str) -> bool:
        """Spend one unused recovery code of this user: True once, then never again."""
        async with self._sessions.begin() as session:
            result = await session.execute(
                update(PortalRecoveryCode)
                .where(
                    PortalRecoveryCode.user_id == user_id,
                    PortalRecoveryCode.digest == self._code_digest(code),
                    PortalRecoveryCode.used_at.is_(None),
                )
                .values(used_at=utcnow())
            )
            return bool(result.rowcount)  # type: ignore[attr-defined]

    async def passkeys(self, user_id: str) -> list[dict[str, str]]:
        async with self._sessions() as session:
            rows = await session.scalars(
                select(PortalPasskey)
                .where(PortalPasskey.user_id == user_id)
                .order_by(PortalPasskey.created_at)
            )
            return [
                {
                    "id": row.id,
                    "name": row.name,
                    "created": stamp(row.created_at),
                    "last_used": stamp(row.last_used_at),
                }
                for row in rows
            ]

    async def disable_two_factor(self, user_id: str) -> None:
        """Forget the TOTP seed, every passkey and every recovery code."""
        async with self._sessions.begin() as session:
            await session.execute(
                update(PortalLogin)
                .where(PortalLogin.user_id == user_id)
                .values(totp_key_version=None, totp_seed=None, totp_last_step=None)
            )
            await session.execute(delete(PortalPasskey).where(PortalPasskey.user_id == user_id))
            await session.execute(
                delete(PortalRecoveryCode).where(PortalRecoveryCode.user_id == user_id)
            )

    async def set_require_two_factor(self, organisation_id: str, required: bool) -> None:
        async with self._sessions.begin() as session:
            await session.execute(
                update(Organisation)
                .where(Organisation.id == organisation_id)
                .values(require_two_factor=required)
            )

    async def members(self, organisation_id: str) -> list[PortalUser]:
        async with self._sessions() as session:
            ids = await session.scalars(
                select(User.id)
                .where(User.organisation_id == organisation_id)
                .order_by(User.created_at)
            )
            found = [await self._user(session, user_id) for user_id in ids]
        return [login.user for login in found if login is not None]


def stamp(moment: datetime | None) -> str:
    return "" if moment is None else moment.strftime("%Y-%m-%d %H:%M UTC")
