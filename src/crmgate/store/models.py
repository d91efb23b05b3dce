"""Tables of crmgate's own state. Schema changes go through an Alembic migration in migrations/."""

from __future__ import annotations

from datetime import UTC, date, datetime
from typing import Any

from sqlalchemy import (
    Boolean,
    Date,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Text,
    TypeDecorator,
    UniqueConstraint,
    false,
)
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class UTCDateTime(TypeDecorator[datetime]):
    """Timestamps stored in UTC and read back timezone-aware on every backend (SQLite included)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UTC column")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: Any, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        assert isinstance(value, datetime)
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def utcnow() -> datetime:
    """Now, in whole seconds: the API shows seconds, so a value read back filters exactly."""
    return datetime.now(UTC).replace(microsecond=0)


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)


class Organisation(Base):
    __tablename__ = "organisations"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    # Bumped by every change that must be serialised per organisation (e.g. "keep one admin"):
    # an UPDATE of this row is a portable row lock on PostgreSQL and SQLite alike.
    version: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    # set by an admin in the portal: every member signs in with a second factor
    require_two_factor: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())


class User(Base):
    __tablename__ = "users"
    __table_args__ = (UniqueConstraint("organisation_id", "email"),)

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    organisation_id: Mapped[str] = mapped_column(
        ForeignKey("organisations.id", ondelete="CASCADE"), index=True
    )
    name: Mapped[str] = mapped_column(String(200))
    email: Mapped[str] = mapped_column(String(320))
    phone: Mapped[str | None] = mapped_column(String(64), default=None)
    role: Mapped[str] = mapped_column(String(16))
    status: Mapped[str] = mapped_column(String(16), default="active")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class ApiKey(Base):
    """A user key, stored only as its HMAC-SHA256 digest."""

    __tablename__ = "api_keys"
    __table_args__ = (Index("ix_api_keys_user_active", "user_id", "revoked_at"),)

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    user_id: Mapped[str] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    organisation_id: Mapped[str] = mapped_column(
        ForeignKey("organisations.id", ondelete="CASCADE"), index=True
    )
    kind: Mapped[str] = mapped_column(String(8))
    hint: Mapped[str] = mapped_column(String(16))
    digest: Mapped[bytes] = mapped_column(LargeBinary(32), unique=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    last_used_at: Mapped[datetime | None] = mapped_column(UTCDateTime, default=None)
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime, default=None)
    # restricted keys (kind "cgr", security/scopes.py): what the key may reach, as JSON (None
    # for a user key), its expiry and a label
    scope: Mapped[str | None] = mapped_column(Text, default=None)
    expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime, default=None)
    description: Mapped[str | None] = mapped_column(String(200), default=None)


class UsageDaily(Base):
    """Requests per user and UTC day: gateway calls (internal) and CRM calls (application)."""

    __tablename__ = "usage_daily"

    user_id: Mapped[str] = mapped_column(
        ForeignKey("users.id", ondelete="CASCADE"), primary_key=True
    )
    day: Mapped[date] = mapped_column(Date, primary_key=True)
    request_count: Mapped[int] = mapped_column(Integer, default=0)
    internal_request_count: Mapped[int] = mapped_column(Integer, default=0)


class Application(Base):
    """A connected CRM account. Its credentials exist only as a vault ciphertext."""

    __tablename__ = "applications"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)  # the application key
    organisation_id: Mapped[str] = mapped_column(
        ForeignKey("organisations.id", ondelete="CASCADE"), index=True
    )
    user_id: Mapped[str | None] = mapped_column(
        ForeignKey("users.id", ondelete="SET NULL"), default=None
    )
    type: Mapped[str] = mapped_column(String(40))
    authorization: Mapped[str] = mapped_column(String(32))
    description: Mapped[str] = mapped_column(String(1000), default="")
    is_authorized: Mapped[bool] = mapped_column(Boolean, default=True)
    identity: Mapped[str] = mapped_column(Text, default="{}")  # JSON: who the credentials act as
    public_credential: Mapped[str] = mapped_column(Text, default="{}")  # JSON: non-secret fields
    key_version: Mapped[int] = mapped_column(Integer, index=True)
    ciphertext: Mapped[bytes] = mapped_column(LargeBinary)
    # Bumped whenever the credentials change (not when the vault rewraps them): the optimistic
    # check of a credential update.
    credentials_revision: Mapped[int] = mapped_column(Integer, default=1)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    last_used_at: Mapped[datetime | None] = mapped_column(UTCDateTime, default=None)


class OAuthFlow(Base):
    """One browser's trip through a CRM's OAuth authorization: created when it starts (or, in
    application mode, when the client asks for a session), consumed once at the callback.
    Only digests of the state, the session token and the browser's cookie are kept; the PKCE
    verifier is sealed by the vault."""

    __tablename__ = "oauth_flows"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    state_hash: Mapped[str | None] = mapped_column(String(64), unique=True, default=None)
    session_hash: Mapped[str | None] = mapped_column(String(64), unique=True, default=None)
    browser_hash: Mapped[str | None] = mapped_column(String(64), default=None)
    platform: Mapped[str] = mapped_column(String(40))
    mode: Mapped[str] = mapped_column(String(16))  # fragment (the contract) or application
    redirect: Mapped[str] = mapped_column(String(2000))
    organisation_id: Mapped[str | None] = mapped_column(
        ForeignKey("organisations.id", ondelete="CASCADE"), default=None
    )
    user_id: Mapped[str | None] = mapped_column(
        ForeignKey("users.id", ondelete="SET NULL"), default=None
    )
    description: Mapped[str] = mapped_column(String(1000), default="")
    # application mode: the application the flow authorizes again (None: a new one)
    application_key: Mapped[str | None] = mapped_column(String(40), default=None)
    # the account's instance, where the platform's authorization is per instance (Dynamics 365:
    # the organisation whose scope is asked for); it becomes the credential's instance_url
    instance_url: Mapped[str | None] = mapped_column(String(300), default=None)
    key_version: Mapped[int | None] = mapped_column(Integer, default=None)
    verifier: Mapped[bytes | None] = mapped_column(LargeBinary, default=None)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime, index=True)


class AuditEvent(Base):
    """One security event of the audit trail (crmgate/audit/), never changed once written:
    ``hash`` is HMAC-SHA256, under the audit key ``key_id`` names, of the previous event's hash
    and this event's canonical JSON (plain SHA-256 for events written before keyed chains,
    whose ``key_id`` is NULL). No foreign keys: the trail outlives the users, applications and
    organisations it names."""

    __tablename__ = "audit_events"
    __table_args__ = (Index("ix_audit_events_organisation_seq", "organisation_id", "seq"),)

    seq: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    event: Mapped[str] = mapped_column(String(64))
    organisation_id: Mapped[str | None] = mapped_column(String(40), default=None)
    actor: Mapped[str] = mapped_column(String(64))  # a user id, "cli", "system" or "anonymous"
    client: Mapped[str | None] = mapped_column(String(64), default=None)  # peer address
    request_id: Mapped[str | None] = mapped_column(String(64), default=None)
    target: Mapped[str | None] = mapped_column(String(100), default=None)
    details: Mapped[str] = mapped_column(Text, default="{}")  # JSON, no secrets
    previous_hash: Mapped[str] = mapped_column(String(64))
    hash: Mapped[str] = mapped_column(String(64))
    key_id: Mapped[str | None] = mapped_column(String(32), default=None)  # "2:<fingerprint>"


class AuditHead(Base):
    """The chain head, one row (id 1): the last event's number and hash. Appends lock it."""

    __tablename__ = "audit_head"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    seq: Mapped[int] = mapped_column(Integer)
    hash: Mapped[str] = mapped_column(String(64))


class CacheInvalidation(Base):
    """A change that every process's in-memory cache must drop (crmgate/cache.py), written in
    the change's transaction; ``seq`` comes from the head row, so rows commit in ``seq`` order."""

    __tablename__ = "cache_invalidations"

    seq: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    subject: Mapped[str] = mapped_column(String(120))  # "user:<id>", "application:<org>|<key>"


class CacheInvalidationHead(Base):
    """One row (id 1): the last invalidation's ``seq``. Writers lock it (crmgate/cache.py)."""

    __tablename__ = "cache_invalidation_head"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    seq: Mapped[int] = mapped_column(Integer)


class UsageCounter(Base):
    """Requests per organisation, UTC day and application ("" for calls that reach none): how
    many, how many failed (an answer of 400 or more) and how many a rate limit refused. The
    portal's usage charts read them."""

    __tablename__ = "usage_counters"

    organisation_id: Mapped[str] = mapped_column(
        ForeignKey("organisations.id", ondelete="CASCADE"), primary_key=True
    )
    day: Mapped[date] = mapped_column(Date, primary_key=True)
    application_key: Mapped[str] = mapped_column(String(40), primary_key=True)
    requests: Mapped[int] = mapped_column(Integer, default=0)
    errors: Mapped[int] = mapped_column(Integer, default=0)
    limited: Mapped[int] = mapped_column(Integer, default=0)


# ---- the developer portal (crmgate/portal/) -------------------------------------------------


class PortalLogin(Base):
    """How a user signs in to the portal: an e-mail address unique across organisations, an
    argon2id password hash and, once enrolled, a TOTP seed sealed by the vault."""

    __tablename__ = "portal_logins"

    user_id: Mapped[str] = mapped_column(
        ForeignKey("users.id", ondelete="CASCADE"), primary_key=True
    )
    email: Mapped[str] = mapped_column(String(320), unique=True)  # lower-cased
    password_hash: Mapped[str] = mapped_column(String(200))
    password_changed_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    totp_key_version: Mapped[int | None] = mapped_column(Integer, default=None)
    totp_seed: Mapped[bytes | None] = mapped_column(LargeBinary, default=None)
    # the last time step a code was accepted for: an older or equal one is a replay
    totp_last_step: Mapped[int | None] = mapped_column(Integer, default=None)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class PortalRecoveryCode(Base):
    """A single-use recovery code, kept as its HMAC-SHA256 digest under the server pepper."""

    __tablename__ = "portal_recovery_codes"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    user_id: Mapped[str] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    digest: Mapped[bytes] = mapped_column(LargeBinary(32), unique=True)
    used_at: Mapped[datetime | None] = mapped_column(UTCDateTime, default=None)


class PortalPasskey(Base):
    """A WebAuthn credential registered as a second factor."""

    __tablename__ = "portal_passkeys"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    user_id: Mapped[str] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    credential_id: Mapped[bytes] = mapped_column(LargeBinary(1024), unique=True)
    public_key: Mapped[bytes] = mapped_column(LargeBinary)
    sign_count: Mapped[int] = mapped_column(Integer, default=0)
    name: Mapped[str] = mapped_column(String(100))
    transports: Mapped[str] = mapped_column(String(200), default="")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    last_used_at: Mapped[datetime | None] = mapped_column(UTCDateTime, default=None)


class PortalSession(Base):
    """A signed-in browser. The cookie holds a random token; only its SHA-256 is kept here.
    ``level`` is "partial" between the password and the second factor, then "full"."""

    __tablename__ = "portal_sessions"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    user_id: Mapped[str] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    level: Mapped[str] = mapped_column(String(16))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    last_seen_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    # the last time the user proved who they are (password and second factor): sensitive
    # changes need it recent
    signed_in_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime, index=True)  # absolute timeout
    address: Mapped[str | None] = mapped_column(String(64), default=None)
    user_agent: Mapped[str | None] = mapped_column(String(200), default=None)
    # a pending ceremony's state (a WebAuthn challenge, a TOTP seed being enrolled, sealed)
    pending: Mapped[bytes | None] = mapped_column(LargeBinary, default=None)
    pending_key_version: Mapped[int | None] = mapped_column(Integer, default=None)


class PortalInvitation(Base):
    """An invitation by e-mail into an organisation with a role; its link's token is kept as
    a SHA-256 digest and works once, until it expires."""

    __tablename__ = "portal_invitations"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    organisation_id: Mapped[str] = mapped_column(
        ForeignKey("organisations.id", ondelete="CASCADE"), index=True
    )
    email: Mapped[str] = mapped_column(String(320))
    role: Mapped[str] = mapped_column(String(16))
    invited_by: Mapped[str | None] = mapped_column(
        ForeignKey("users.id", ondelete="SET NULL"), default=None
    )
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime)
    accepted_at: Mapped[datetime | None] = mapped_column(UTCDateTime, default=None)


class PortalPasswordReset(Base):
    """A password reset link sent by e-mail: single-use, short-lived, kept as a digest."""

    __tablename__ = "portal_password_resets"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    user_id: Mapped[str] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime)
    used_at: Mapped[datetime | None] = mapped_column(UTCDateTime, default=None)


class ConnectLink(Base):
    """A link an organisation sends its own customer to connect a CRM without an account:
    single-use, expiring, limited to a list of platforms; kept as a digest of its token."""

    __tablename__ = "connect_links"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    organisation_id: Mapped[str] = mapped_column(
        ForeignKey("organisations.id", ondelete="CASCADE"), index=True
    )
    created_by: Mapped[str | None] = mapped_column(
        ForeignKey("users.id", ondelete="SET NULL"), default=None
    )
    platforms: Mapped[str] = mapped_column(Text)  # JSON list of platform types
    description: Mapped[str] = mapped_column(String(1000), default="")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime)
    used_at: Mapped[datetime | None] = mapped_column(UTCDateTime, default=None)
    application_key: Mapped[str | None] = mapped_column(String(40), default=None)
