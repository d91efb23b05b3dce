"""Keeping an application's CRM access alive: refresh OAuth tokens (oAuth-internal) and log in
again (user), one renewal at a time per application.

Concurrent requests of one process that find the access expired wait on one asyncio lock per
application; across processes the application's row is locked for the length of the renewal
(see ApplicationStore.renew_locked), so exactly one process calls the CRM. Whoever comes after a
renewal sees the new credentials revision and uses the new tokens without calling the CRM. The
new tokens are sealed and committed before any request uses them; a rotated refresh token
replaces the old one in the same commit.

oAuth-external-refresh applications are never renewed here: their client pushes new tokens.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING

from sqlalchemy.exc import SQLAlchemyError

from crmgate.audit import AuditKeyError
from crmgate.connectors.base import Connector
from crmgate.connectors.catalogue import Platform
from crmgate.connectors.errors import CredentialsRejected, CrmError, GrantRevoked
from crmgate.settings import OAuthClient
from crmgate.store.applications import (
    ApplicationStore,
    ApplicationView,
    Credentials,
    InTransaction,
    RenewalRefused,
)

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncSession

    from crmgate.audit import AuditLog

log = logging.getLogger("crmgate.tokens")

RENEWABLE = frozenset({"oAuth-internal", "user"})
EARLY_REFRESH = 60  # seconds before a known expiry the access token is refreshed
RETRY_AFTER_FAILURE = 30.0  # seconds a failed renewal is answered from memory


class TokenManager:
    def __init__(
        self,
        store: ApplicationStore,
        clients: Mapping[str, OAuthClient],
        audit: AuditLog | None = None,
        callback_url: Callable[[Platform], str] | None = None,
    ) -> None:
        self.store = store
        self.clients = clients
        self._audit = audit
        # crmgate's OAuth callback, which a refresh repeats where the CRM wants it (Kommo)
        self._callback_url = callback_url
        self._locks: dict[str, asyncio.Lock] = {}
        # application -> (credentials revision, when, error) of its last failed renewal: the
        # requests that waited for it, and those of the next seconds, get that answer instead
        # of sending the CRM (or its login) the same doomed request again, one after another.
        self._failures: dict[str, tuple[int, float, CrmError]] = {}

    def client(self, platform: Platform) -> OAuthClient:
        client = self.clients.get(platform.type)
        if client is None:
            raise CredentialsRejected(
                f"crmgate has no OAuth client for {platform.type} (CRMGATE_OAUTH_CLIENTS), so it "
                "cannot refresh this application's tokens"
            )
        return client

    @staticmethod
    def expiring(view: ApplicationView, credentials: Credentials) -> bool:
        """Whether the access token expires soon: within EARLY_REFRESH seconds, or half its
        lifetime when that is shorter (when the CRM said when; Salesforce does not, and is
        renewed when it answers INVALID_SESSION_ID)."""
        expires_at = credentials.derived.get("expires_at", "")
        lifetime = credentials.derived.get("expires_in", "")
        margin = min(EARLY_REFRESH, int(lifetime) // 2) if lifetime.isdigit() else EARLY_REFRESH
        return (
            # a `user` login too, when its connector knows the expiry (Dynamics 365's client
            # credentials; a Salesforce session's is not known)
            view.authorization in RENEWABLE
            and expires_at.isdigit()
            and int(expires_at) - margin <= time.time()
        )

    @staticmethod
    def still_valid(credentials: Credentials) -> bool:
        expires_at = credentials.derived.get("expires_at", "")
        return expires_at.isdigit() and int(expires_at) > time.time()

    async def renew(
        self, view: ApplicationView, platform: Platform, connector: Connector
    ) -> tuple[ApplicationView, Credentials] | None:
        """New credentials for an application whose access the CRM no longer accepts (seen at
        ``view``'s credentials revision); None if crmgate cannot renew this authorization."""
        if view.authorization not in RENEWABLE:
            return None
        # One lock per application used, kept: a few bytes each, and dropping one while a
        # request waits on it would let a second renewal start in this process.
        async with self._locks.setdefault(view.key, asyncio.Lock()):
            failed = self._failures.get(view.key)
            if (
                failed is not None
                and failed[0] == view.credentials_revision
                and time.monotonic() - failed[1] < RETRY_AFTER_FAILURE
            ):
                raise failed[2]

            async def produce(current: Credentials) -> Credentials:
                return await self._produce(view, platform, connector, current)

            late: list[str] = []  # token.refreshed that could not join the renewal's commit
            try:
                # each event in the transaction that stores what it records: ours stored
                # (not another's), or the application marked unauthorized
                renewed = await self.store.renew_locked(
                    view.organisation_id,
                    view.key,
                    view.credentials_revision,
                    produce,
                    audit_renewed=self._in_transaction("token.refreshed", view, late),
                    audit_refused=self._in_transaction("application.reauthorization_needed", view),
                )
            except CrmError as error:
                if not isinstance(error, GrantRevoked):  # that one is kept in the database
                    self._failures[view.key] = (view.credentials_revision, time.monotonic(), error)
                raise
            self._failures.pop(view.key, None)
            if late and self._audit is not None:  # the renewal is committed: now its event
                await self._audit.record(
                    "token.refreshed",
                    organisation_id=view.organisation_id,
                    actor="system",
                    target=late[0],
                    details={
                        "type": view.type,
                        "authorization": view.authorization,
                        "own_transaction": True,
                    },
                )
            return renewed

    def _in_transaction(
        self, event: str, view: ApplicationView, late: list[str] | None = None
    ) -> InTransaction | None:
        """The hook that writes ``event`` in the renewal's transaction. With ``late``: the
        CRM has renewed the access already (a rotated refresh token would be lost with a
        rollback), so a failure to write the event (under a savepoint) never fails the renewal:
        the key goes to ``late`` and the caller writes the event on its own after the commit."""
        audit = self._audit
        if audit is None:
            return None

        async def write(session: AsyncSession, key: str) -> None:
            async def record() -> None:
                await audit.record(
                    event,
                    organisation_id=view.organisation_id,
                    actor="system",
                    target=key,
                    details={"type": view.type, "authorization": view.authorization},
                    session=session,
                )

            if late is None:
                await record()
                return
            try:
                async with session.begin_nested():
                    await record()
            except (SQLAlchemyError, AuditKeyError):
                log.error(
                    "application %s: its %s event could not be written with the renewal; the "
                    "renewal is kept and the event is written on its own",
                    key[:8],
                    event,
                    exc_info=True,
                )
                late.append(key)

        return write

    async def _produce(
        self, view: ApplicationView, platform: Platform, connector: Connector, current: Credentials
    ) -> Credentials:
        try:
            if view.authorization == "user":
                verified = await connector.verify("user", current.fields)
                log.info("application %s: logged in to %s again", view.key[:8], platform.name)
                return Credentials(current.fields, verified.derived)
            redirect = self._callback_url(platform) if self._callback_url else None
            fields, derived = await connector.refresh(
                current.fields, self.client(platform), redirect
            )
        except GrantRevoked as refused:
            log.warning(
                "application %s: %s refused its renewal for good; it is marked unauthorized",
                view.key[:8],
                platform.name,
            )
            raise RenewalRefused(refused) from None
        log.info("application %s: %s tokens refreshed", view.key[:8], platform.name)
        # an expiry the CRM does not repeat is not kept: it belonged to the old token
        kept = {k: v for k, v in current.derived.items() if k not in ("expires_at", "expires_in")}
        return Credentials({**current.fields, **fields}, {**kept, **derived})
