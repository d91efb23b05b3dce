"""WebAuthn passkeys as a second factor (W3C Web Authentication Level 2, verified by py_webauthn):
the relying party a request speaks to, the registration and authentication ceremonies (each
with a single-use challenge kept sealed in the portal session), and the stored credentials with
their signature counters (§6.1.1: a counter that does not grow hints at a cloned authenticator).

The relying party is the host of ``public_url``, with the origin it names, compared exactly.
One exception: when the browser reached the portal by a loopback name (``localhost``,
``127.0.0.1``, ``::1``), the request's own host and origin are used. A developer runs
``crmgate serve`` and opens http://localhost:<port> whatever ``public_url`` says; trusting the
Host header there gives nothing away, because the authenticator signs the relying party id and
a browser asks for ``localhost`` only on a page served from its own machine."""

from __future__ import annotations

import ipaddress
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from sqlalchemy import delete, select, update
from sqlalchemy.exc import IntegrityError
from starlette.requests import HTTPConnection
from webauthn import (
    generate_authentication_options,
    generate_registration_options,
    verify_authentication_response,
    verify_registration_response,
)
from webauthn.helpers import (
    base64url_to_bytes,
    bytes_to_base64url,
    options_to_json_dict,
    parse_authentication_credential_json,
    parse_registration_credential_json,
)
from webauthn.helpers.exceptions import WebAuthnException
from webauthn.helpers.structs import (
    AuthenticatorSelectionCriteria,
    AuthenticatorTransport,
    PublicKeyCredentialDescriptor,
    ResidentKeyRequirement,
    UserVerificationRequirement,
)

from crmgate.portal.logins import PortalUser
from crmgate.portal.sessions import Session, Sessions
from crmgate.store.db import SessionFactory
from crmgate.store.ids import new_id
from crmgate.store.models import PortalPasskey, utcnow

RP_NAME = "crmgate"
CHALLENGE_LIFETIME = 300  # seconds a ceremony's challenge is accepted (the browser's hint: 120)
PENDING_KEY = "passkey"
_MALFORMED = (WebAuthnException, ValueError, TypeError, KeyError)


class PasskeyError(Exception):
    """A ceremony refused, with a sentence for the person."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class PasskeyCounterError(PasskeyError):
    """A valid signature whose counter did not grow: possibly a cloned authenticator."""


@dataclass(frozen=True, slots=True)
class RelyingParty:
    id: str
    origin: str


def _origin(scheme: str, host: str, port: int | None) -> str:
    default = {"http": 80, "https": 443}.get(scheme)
    shown = f"[{host}]" if ":" in host else host
    return f"{scheme}://{shown}" if port in (None, default) else f"{scheme}://{shown}:{port}"


def _is_loopback(host: str) -> bool:
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _is_address(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def relying_party(public_url: str, scheme: str, host_header: str | None) -> RelyingParty:
    """The relying party of a request (the module's docstring says which, and why)."""
    asked = urlsplit(f"//{host_header or ''}")
    try:
        asked_host, asked_port = (asked.hostname or "").lower(), asked.port
    except ValueError:
        asked_host, asked_port = "", None
    if asked_host and _is_loopback(asked_host):
        host, origin = asked_host, _origin(scheme, asked_host, asked_port)
    else:
        public = urlsplit(public_url)
        host = (public.hostname or "").lower()
        origin = _origin(public.scheme, host, public.port)
    if not host or _is_address(host):
        # WebAuthn's relying party id is a domain: browsers refuse an IP address
        shown = _origin(scheme, "localhost", asked_port)
        raise PasskeyError(
            f"Passkeys need the portal opened by a host name, not an IP address: {shown}/portal/"
        )
    return RelyingParty(host, origin)


def relying_party_of(request: HTTPConnection, public_url: str) -> RelyingParty:
    return relying_party(public_url, request.url.scheme, request.headers.get("host"))


def _transports(names: str) -> list[AuthenticatorTransport]:
    known = {transport.value for transport in AuthenticatorTransport}
    return [AuthenticatorTransport(name) for name in names.split(",") if name in known]


class Passkeys:
    def __init__(self, db: SessionFactory, sessions: Sessions) -> None:
        self._db = db
        self._sessions = sessions

    def __repr__(self) -> str:
        return "Passkeys()"

    async def _rows(self, user_id: str) -> list[PortalPasskey]:
        async with self._db() as db:
            rows = await db.scalars(select(PortalPasskey).where(PortalPasskey.user_id == user_id))
            return list(rows)

    # ---- the challenge: sealed in the session, single use, short-lived ------------------------

    async def _remember(
        self, session: Session, ceremony: str, challenge: bytes, rp: RelyingParty
    ) -> None:
        pending = await self._sessions.pending(session)
        pending[PENDING_KEY] = {
            "ceremony": ceremony,
            "challenge": bytes_to_base64url(challenge),
            "rp_id": rp.id,
            "origin": rp.origin,
            "issued": time.time(),
        }
        await self._sessions.set_pending(session, pending)

    async def _challenge(self, session: Session, ceremony: str, rp: RelyingParty) -> bytes:
        """The challenge of this session's ceremony, taken (never usable again)."""
        taken = await self._sessions.take_pending(session, PENDING_KEY)
        if (
            not isinstance(taken, dict)
            or taken.get("ceremony") != ceremony
            or (taken.get("rp_id"), taken.get("origin")) != (rp.id, rp.origin)
            or time.time() - float(taken.get("issued", 0)) > CHALLENGE_LIFETIME
        ):
            raise PasskeyError("This passkey request has expired or was already used. Try again.")
        return base64url_to_bytes(str(taken["challenge"]))

    # ---- registration -------------------------------------------------------------------------

    async def registration_options(
        self, session: Session, user: PortalUser, rp: RelyingParty
    ) -> dict[str, Any]:
        existing = await self._rows(user.user_id)
        options = generate_registration_options(
            rp_id=rp.id,
            rp_name=RP_NAME,
            user_name=user.email,
            user_id=user.user_id.encode(),  # opaque; the same for every passkey of this user
            user_display_name=user.name,
            timeout=120_000,
            exclude_credentials=[
                PublicKeyCredentialDescriptor(
                    id=row.credential_id, transports=_transports(row.transports)
                )
                for row in existing
            ],
            authenticator_selection=AuthenticatorSelectionCriteria(
                resident_key=ResidentKeyRequirement.PREFERRED,
                user_verification=UserVerificationRequirement.PREFERRED,
            ),
        )
        await self._remember(session, "register", options.challenge, rp)
        return options_to_json_dict(options)

    async def register(
        self, session: Session, user_id: str, rp: RelyingParty, credential: str, name: str
    ) -> str:
        """Verify the authenticator's answer and store the passkey; its id."""
        challenge = await self._challenge(session, "register", rp)
        try:
            parsed = parse_registration_credential_json(credential)
            verified = verify_registration_response(
                credential=parsed,
                expected_challenge=challenge,
                expected_rp_id=rp.id,
                expected_origin=rp.origin,
            )
        except _MALFORMED as refused:
            raise PasskeyError("The passkey could not be verified. Try again.") from refused
        transports = ",".join(t.value for t in parsed.response.transports or [])
        passkey_id = new_id("pky")
        try:
            async with self._db.begin() as db:
                db.add(
                    PortalPasskey(
                        id=passkey_id,
                        user_id=user_id,
                        credential_id=verified.credential_id,
                        public_key=verified.credential_public_key,
                        sign_count=verified.sign_count,
                        name=name[:100] or "Passkey",
                        transports=transports[:200],
                    )
                )
        except IntegrityError:
            raise PasskeyError("This passkey is already registered.") from None
        return passkey_id

    async def remove(self, user_id: str, passkey_id: str) -> str | None:
        """Delete one of this user's passkeys; its name, or None when they have no such one."""
        async with self._db.begin() as db:
            row = await db.scalar(
                select(PortalPasskey).where(
                    PortalPasskey.id == passkey_id, PortalPasskey.user_id == user_id
                )
            )
            if row is None:
                return None
            await db.execute(delete(PortalPasskey).where(PortalPasskey.id == row.id))
            return row.name

    # ---- authentication -----------------------------------------------------------------------

    async def authentication_options(
        self, session: Session, user_id: str, rp: RelyingParty
    ) -> dict[str, Any]:
        rows = await self._rows(user_id)
        if not rows:
            raise PasskeyError("You have no passkey.")
        options = generate_authentication_options(
            rp_id=rp.id,
            timeout=120_000,
            allow_credentials=[
                PublicKeyCredentialDescriptor(
                    id=row.credential_id, transports=_transports(row.transports)
                )
                for row in rows
            ],
            user_verification=UserVerificationRequirement.PREFERRED,
        )
        await self._remember(session, "authenticate", options.challenge, rp)
        return options_to_json_dict(options)

    async def authenticate(
        self, session: Session, user_id: str, rp: RelyingParty, credential: str
    ) -> str:
        """Verify an assertion by one of this user's passkeys; the passkey's id."""
        challenge = await self._challenge(session, "authenticate", rp)
        try:
            parsed = parse_authentication_credential_json(credential)
        except _MALFORMED as refused:
            raise PasskeyError("The passkey could not be verified. Try again.") from refused
        async with self._db() as db:
            row = await db.scalar(
                select(PortalPasskey).where(
                    PortalPasskey.credential_id == parsed.raw_id, PortalPasskey.user_id == user_id
                )
            )
        if row is None:
            raise PasskeyError("This passkey is not registered for your account.")
        try:
            verified = verify_authentication_response(
                credential=parsed,
                expected_challenge=challenge,
                expected_rp_id=rp.id,
                expected_origin=rp.origin,
                credential_public_key=row.public_key,
                credential_current_sign_count=0,  # the counter is checked below, atomically
            )
        except _MALFORMED as refused:
            raise PasskeyError("The passkey could not be verified. Try again.") from refused
        count = verified.new_sign_count
        async with self._db.begin() as db:
            # an authenticator that keeps no counter sends 0 every time; one that does must
            # grow it, even when two requests race
            moved = await db.execute(
                update(PortalPasskey)
                .where(
                    PortalPasskey.id == row.id,
                    PortalPasskey.sign_count < count if count else PortalPasskey.sign_count == 0,
                )
                .values(sign_count=count, last_used_at=utcnow())
            )
        if not moved.rowcount:  # type: ignore[attr-defined]
            raise PasskeyCounterError(
                "This passkey's signature counter went backwards: it may have been copied."
            )
        return row.id
