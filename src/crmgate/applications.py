"""Connecting CRMs: validate an application's credentials against its platform's descriptor,
verify them with the CRM through its connector, and keep them in the vault-backed store.

Nothing is stored unless the CRM accepted the credentials; an update that the CRM refuses leaves
the application as it was.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from crmgate.connectors.base import Connector, Verified
from crmgate.connectors.catalogue import AUTHORIZATION_TYPES, Catalogue, Platform
from crmgate.connectors.errors import CrmError
from crmgate.outbound import OutboundRefused
from crmgate.security.vault import DecryptionError
from crmgate.store.accounts import AccountError, Principal
from crmgate.store.applications import (
    ApplicationStore,
    ApplicationView,
    Credentials,
    InTransaction,
)

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncSession

    from crmgate.audit import AuditLog, Detail

log = logging.getLogger("crmgate.applications")
MAX_VALUE = 4096
# C0/C1 controls, Unicode line/paragraph separators and lone surrogates: never in a credential.
_UNPRINTABLE = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029\ud800-\udfff]")


def invalid(field: str, message: str) -> AccountError:
    return AccountError(422, "NOT_VALID", f"{field}: {message}", field)


class ApplicationService:
    def __init__(
        self,
        catalogue: Catalogue,
        connectors: Mapping[str, Connector],
        store: ApplicationStore,
        max_applications: int,
        audit: AuditLog | None = None,
    ) -> None:
        self.catalogue = catalogue
        self._connectors = connectors
        self.store = store
        self._limit = max_applications
        self._audit = audit

    async def _record(
        self, event: str, principal: Principal, key: str | None, **details: Detail
    ) -> None:
        if self._audit is not None:
            await self._audit.record(
                event,
                organisation_id=principal.organisation_id,
                actor=principal.user_id,
                target=key,
                details=details,
            )

    def _in_transaction(
        self,
        event: str,
        principal: Principal,
        also: InTransaction | None = None,
        **details: Detail,
    ) -> InTransaction | None:
        """The audit event of a change, written by the store in the change's transaction (and
        ``also``, another event of the same change: the OAuth flow's)."""
        audit = self._audit
        if audit is None and also is None:
            return None

        async def write(session: AsyncSession, key: str) -> None:
            if audit is not None:
                await audit.record(
                    event,
                    organisation_id=principal.organisation_id,
                    actor=principal.user_id,
                    target=key,
                    details=details,
                    session=session,
                )
            if also is not None:
                await also(session, key)

        return write

    def connector(self, platform: Platform) -> Connector:
        """The connector object of this very platform type (keyed by type, not connector name)."""
        return self._connectors[platform.type]

    def platform(self, platform_type: str) -> Platform:
        platform = self.catalogue.get(platform_type)
        if platform is not None:
            return platform
        if self.catalogue.known(platform_type) is not None or platform_type in _contract_types():
            raise AccountError(
                403, "NOT_SUPPORTED", f"crmgate has no working connector for {platform_type} yet"
            )
        raise invalid("type", f"unknown platform {platform_type!r}")

    def validate(
        self, platform: Platform, authorization: str, credential: Mapping[str, Any]
    ) -> tuple[dict[str, str], dict[str, str]]:
        """The credential's fields, and the non-secret ones that responses may show."""
        if authorization not in AUTHORIZATION_TYPES:
            raise invalid("authorization", f"must be one of {', '.join(AUTHORIZATION_TYPES)}")
        spec = platform.authorization_for(authorization)
        if spec is None:
            offered = ", ".join(platform.authorization_types)
            raise invalid("authorization", f"{platform.type} offers {offered}, not {authorization}")
        fields: dict[str, str] = {}
        for name, value in credential.items():
            field = spec.field(name)
            where = f"credential.{name}"
            if field is None:
                known = ", ".join(f.name for f in spec.credential)
                raise invalid(where, f"not a field of {authorization} (fields: {known})")
            if not isinstance(value, str):
                raise invalid(where, "must be a string")
            if len(value) > MAX_VALUE or _UNPRINTABLE.search(value):
                raise invalid(where, f"must be at most {MAX_VALUE} printable characters")
            if value == "" and not field.required:
                continue
            if field.type == "url":
                try:
                    value = str(self.connector(platform).instance_url(value))
                except OutboundRefused as refused:
                    raise invalid(where, str(refused)) from None
            elif field.type == "email" and "@" not in value:
                raise invalid(where, "must be an e-mail address")
            fields[name] = value
        for field in spec.credential:
            if field.required and not fields.get(field.name):
                raise invalid(f"credential.{field.name}", "is required")
        public = {
            f.name: fields[f.name] for f in spec.credential if not f.secret and f.name in fields
        }
        return fields, public

    async def _verify(
        self, platform: Platform, authorization: str, fields: Mapping[str, str]
    ) -> Verified:
        try:
            return await self.connector(platform).verify(authorization, fields)
        except OutboundRefused as refused:
            raise invalid("credential", str(refused)) from None

    async def create(
        self,
        principal: Principal,
        *,
        platform_type: str,
        authorization: str,
        credential: Mapping[str, Any],
        description: str,
        also: InTransaction | None = None,
        derived: Mapping[str, str] | None = None,
    ) -> ApplicationView:
        """``derived``: what the OAuth flow learnt beside the credential (the granted scopes),
        sealed with it."""
        platform = self.platform(platform_type)
        fields, public = self.validate(platform, authorization, credential)
        if await self.store.count(principal.organisation_id) >= self._limit:
            await self._limit_hit(principal)
            raise _limit_reached(self._limit)  # early answer; the store checks again atomically
        verified = await self._verify(platform, authorization, fields)
        try:
            view = await self.store.create(
                principal.organisation_id,
                principal.user_id,
                type=platform.type,
                authorization=authorization,
                description=description,
                credentials=Credentials(fields, {**(derived or {}), **verified.derived}),
                public_credential=_public(public, verified),
                identity=_identity(verified),
                limit=self._limit,
                audit=self._in_transaction(
                    "application.created",
                    principal,
                    also,
                    type=platform.type,
                    authorization=authorization,
                ),
            )
        except AccountError as error:
            if error.code == "SERVICE_CONNECTED_APPLICATIONS_LIMIT":
                await self._limit_hit(principal)
            raise
        return view

    async def _limit_hit(self, principal: Principal) -> None:
        await self._record(
            "limit.exceeded", principal, None, limit="applications", maximum=self._limit
        )

    async def update(
        self,
        principal: Principal,
        key: str,
        *,
        platform_type: str | None,
        authorization: str | None,
        credential: Mapping[str, Any] | None,
        description: str | None,
        also: InTransaction | None = None,
        derived: Mapping[str, str] | None = None,
    ) -> ApplicationView:
        current = await self.store.get(principal.organisation_id, key)
        if platform_type is not None and platform_type != current.type:
            raise invalid("type", "the platform of an application cannot change")
        if credential is None and authorization is None:
            return await self.store.update(
                principal.organisation_id,
                key,
                description=description,
                audit=self._in_transaction(
                    "application.updated", principal, also, changed="description"
                ),
            )
        platform = self.platform(current.type)
        kind = authorization or current.authorization
        stored = await self._readable_stored(principal, key)
        sent = dict(credential or {})
        if kind == current.authorization and stored is not None:
            # Same authorization type: the fields sent replace the stored ones they name (a
            # client pushing a fresh access token sends only that) ...
            merged = {**stored.fields, **sent}
            self._require_secrets_with_new_address(platform, kind, stored.fields, sent)
        else:
            merged = sent  # ... another type (or unreadable credentials) needs the full set.
        fields, public = self.validate(platform, kind, merged)
        verified = await self._verify(platform, kind, fields)
        updated = await self.store.update(
            principal.organisation_id,
            key,
            description=description,
            authorization=kind,
            credentials=Credentials(fields, {**(derived or {}), **verified.derived}),
            public_credential=_public(public, verified),
            identity=_identity(verified),
            expected_revision=current.credentials_revision,
            audit=self._in_transaction(
                "application.updated",
                principal,
                also,
                changed="credential" + (",description" if description is not None else ""),
                authorization=kind,
                credential_fields=sorted(sent),  # names only, never values
            ),
        )
        if stored is not None and current.authorization != kind:
            await self._revoke(platform, current.authorization, stored, key)
        return updated

    @staticmethod
    def _require_secrets_with_new_address(
        platform: Platform, kind: str, stored: Mapping[str, str], sent: Mapping[str, Any]
    ) -> None:
        """Stored secrets are only ever sent to the address they were given for: a request that
        changes a URL field must bring the secrets again, or any admin could point the stored
        token at a host of their choosing and read it there."""
        spec = platform.authorization_for(kind)
        if spec is None:
            return
        moved = [
            f.name
            for f in spec.credential
            if f.type == "url" and f.name in sent and sent[f.name] != stored.get(f.name)
        ]
        if not moved:
            return
        for field in spec.credential:
            if field.secret and field.name in stored and field.name not in sent:
                raise invalid(
                    f"credential.{field.name}",
                    f"send it again: {moved[0]} changes, and stored secrets never follow it",
                )

    async def _readable_stored(self, principal: Principal, key: str) -> Credentials | None:
        """The stored credentials, or None when they cannot be decrypted (then the client's
        update must bring a complete credential, which repairs the application)."""
        try:
            # fresh: an update merges with them, and must not merge a cached, older token
            _, credentials = await self.store.credentials(
                principal.organisation_id, key, fresh=True
            )
        except DecryptionError as error:
            log.error("application %s: stored credentials unreadable: %s", key[:8], error)
            return None
        return credentials

    async def _revoke(
        self, platform: Platform, authorization: str, credentials: Credentials, key: str
    ) -> None:
        """Revoke tokens crmgate no longer keeps; a failure is logged, never fatal."""
        try:
            await self.connector(platform).revoke(
                authorization, credentials.fields, credentials.derived
            )
        except (CrmError, OutboundRefused) as failure:
            log.warning("could not revoke the tokens of application %s: %s", key[:8], failure)

    async def revoke_tokens(self, platform: Platform, fields: Mapping[str, str]) -> None:
        """Revoke tokens obtained for an application that was then not stored."""
        await self._revoke(platform, "oAuth-internal", Credentials(fields, {}), "-")

    async def delete(self, principal: Principal, key: str) -> None:
        view = await self.store.get(principal.organisation_id, key)
        credentials = await self._readable_stored(principal, key)
        platform = self.catalogue.known(view.type)
        if credentials is not None and platform is not None and platform.type in self._connectors:
            # The application goes even if revocation fails: keeping credentials a client asked
            # to remove would be worse than a token left to expire.
            await self._revoke(platform, view.authorization, credentials, key)
        await self.store.delete(
            principal.organisation_id,
            key,
            audit=self._in_transaction("application.deleted", principal, type=view.type),
        )


def _limit_reached(limit: int) -> AccountError:
    return AccountError(
        403,
        "SERVICE_CONNECTED_APPLICATIONS_LIMIT",
        f"the organisation has reached its limit of {limit} connected applications",
    )


def _public(public: Mapping[str, str], verified: Verified) -> dict[str, str]:
    result = dict(public)
    if "instance_url" in verified.derived:
        result.setdefault("instance_url", verified.derived["instance_url"])
    return result


def _identity(verified: Verified) -> dict[str, Any]:
    identity = verified.identity
    return {
        "me": identity.as_user_entity(),
        "company": {"id": identity.company_id, "name": identity.company_name},
    }


def _contract_types() -> tuple[str, ...]:
    from crmgate.connectors.catalogue import contract_platform_types

    return contract_platform_types()
