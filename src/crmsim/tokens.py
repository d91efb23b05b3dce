"""The credentials a simulated CRM hands out and checks: access tokens and API keys, refresh
tokens, OAuth clients and authorization codes (RFC 6749 §1.4, §1.5, §2, §4.1; PKCE: RFC 7636
§4.6; revocation: RFC 7009 §2.1).

A store is generic in its *subject*: whatever the CRM means by "who acts" (a user id, a user
object, the portal). Token texts are the CRM's own shapes, made by the formats it passes in, so
a client that looks at a token's prefix sees what the real CRM would send.
"""

from __future__ import annotations

import base64
import hashlib
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

S = TypeVar("S")


def _opaque() -> str:
    return secrets.token_urlsafe(32)


@dataclass
class AccessToken(Generic[S]):
    """What an access token (or a non-expiring API key) stands for."""

    subject: S
    scopes: tuple[str, ...] = ()
    expires_at: float | None = None  # None: it does not expire (API keys, private app tokens)
    client_id: str | None = None
    grant: str | None = None  # the refresh token it was issued beside, if any (RFC 7009 §2.1)

    def expired(self) -> bool:
        return self.expires_at is not None and self.expires_at < time.time()


@dataclass
class RefreshToken(Generic[S]):
    client_id: str
    subject: S
    scopes: tuple[str, ...] = ()


@dataclass
class Client:
    """An OAuth client (RFC 6749 §2): an app registration at the CRM."""

    client_id: str
    secret: str | None  # None: a public client (RFC 6749 §2.1), which proves itself with PKCE
    # the registered redirect URIs, matched exactly (RFC 6749 §3.1.2.3); None: any is taken
    redirect_uris: tuple[str, ...] | None = ()
    scopes: tuple[str, ...] = ()  # the scopes it may ask for; empty: any
    require_secret: bool = True  # False: a confidential client may omit its secret (PKCE)
    extra: dict[str, Any] = field(default_factory=dict)  # the CRM's own settings (a tenant...)

    def allows_redirect(self, uri: str) -> bool:
        return self.redirect_uris is None or uri in self.redirect_uris

    def secret_matches(self, given: str) -> bool:
        """The client authentication of RFC 6749 §2.3.1, compared in constant time."""
        if self.secret is None:
            return not given
        if not given:
            return not self.require_secret
        return same(given, self.secret)


@dataclass
class AuthorizationCode(Generic[S]):
    """An authorization code (RFC 6749 §4.1.2) with its PKCE challenge (RFC 7636 §4.4)."""

    client_id: str
    subject: S
    redirect_uri: str | None  # None: the request named none, so the exchange need not
    scopes: tuple[str, ...]
    expires_at: float
    challenge: str | None = None
    challenge_method: str = "plain"  # RFC 7636 §4.3: plain unless S256 is named
    offline: bool = True  # whether the exchange also gives a refresh token

    def verifies(self, verifier: str) -> bool:
        """RFC 7636 §4.6: the verifier, transformed by the method, equals the challenge."""
        if self.challenge is None:
            return True
        if self.challenge_method == "S256":
            return same(s256(verifier), self.challenge)
        return self.challenge_method == "plain" and same(verifier, self.challenge)


class TokenStore(Generic[S]):
    """Every credential of one simulated CRM. Tests reach into ``access``, ``refresh``,
    ``codes`` and ``clients`` directly (``refresh.clear()`` revokes everything at once)."""

    def __init__(
        self,
        *,
        access_format: Callable[[], str] = _opaque,
        key_format: Callable[[], str] = _opaque,
        refresh_format: Callable[[S], str] = lambda subject: _opaque(),
        code_format: Callable[[], str] = _opaque,
        access_lifetime: float = 3600.0,
        code_lifetime: float = 600.0,  # RFC 6749 §4.1.2: at most 10 minutes is recommended
    ) -> None:
        self.access_format, self.key_format = access_format, key_format
        self.refresh_format, self.code_format = refresh_format, code_format
        self.access_lifetime = access_lifetime
        self.code_lifetime = code_lifetime
        self.access: dict[str, AccessToken[S]] = {}
        self.refresh: dict[str, RefreshToken[S]] = {}
        self.codes: dict[str, AuthorizationCode[S]] = {}
        self.clients: dict[str, Client] = {}

    # ---- clients ------------------------------------------------------------------------------

    def add_client(
        self,
        client_id: str,
        secret: str | None,
        redirect_uris: tuple[str, ...] | None = (),
        scopes: tuple[str, ...] = (),
        **extra: Any,
    ) -> Client:
        client = Client(client_id, secret, redirect_uris, tuple(scopes), extra=extra)
        self.clients[client_id] = client
        return client

    # ---- access tokens ------------------------------------------------------------------------

    def issue_key(self, subject: S, scopes: tuple[str, ...] = ()) -> str:
        """A credential that does not expire: an API key, a private app token."""
        value = self.key_format()
        self.access[value] = AccessToken(subject, tuple(scopes))
        return value

    def issue_access(
        self,
        subject: S,
        scopes: tuple[str, ...] = (),
        lifetime: float | None = None,
        client_id: str | None = None,
        grant: str | None = None,
    ) -> str:
        """An access token that expires after ``lifetime`` seconds (the store's default)."""
        value = self.access_format()
        life = self.access_lifetime if lifetime is None else lifetime
        self.access[value] = AccessToken(
            subject, tuple(scopes), time.time() + life, client_id, grant
        )
        return value

    def expire_all(self) -> None:
        """Every access token that can expire has: the next call with one is refused."""
        for token in self.access.values():
            if token.expires_at is not None:
                token.expires_at = 0

    # ---- refresh tokens -----------------------------------------------------------------------

    def issue_refresh(self, client_id: str, subject: S, scopes: tuple[str, ...] = ()) -> str:
        value = self.refresh_format(subject)
        self.refresh[value] = RefreshToken(client_id, subject, tuple(scopes))
        return value

    def rotate(self, value: str) -> str:
        """A new refresh token for the same grant; the old one no longer works (RFC 9700
        §4.14.2, refresh token rotation)."""
        held = self.refresh.pop(value)
        return self.issue_refresh(held.client_id, held.subject, held.scopes)

    # ---- authorization codes ------------------------------------------------------------------

    def issue_code(
        self,
        client_id: str,
        subject: S,
        redirect_uri: str | None,
        scopes: tuple[str, ...] = (),
        challenge: str | None = None,
        challenge_method: str = "plain",
        offline: bool = True,
    ) -> str:
        value = self.code_format()
        expires_at = time.time() + self.code_lifetime
        self.codes[value] = AuthorizationCode(
            client_id,
            subject,
            redirect_uri,
            tuple(scopes),
            expires_at,
            challenge,
            challenge_method,
            offline,
        )
        return value

    def take_code(self, value: str) -> AuthorizationCode[S] | None:
        """The code, spent: a code works once, whatever the outcome (RFC 6749 §4.1.2)."""
        return self.codes.pop(value, None)

    # ---- revocation ---------------------------------------------------------------------------

    def revoke(self, value: str, with_access: bool = True) -> bool:
        """Drop an access or a refresh token; a refresh token takes the access tokens issued
        beside it along, unless ``with_access`` is False (RFC 7009 §2.1). False: unknown."""
        if self.access.pop(value, None) is not None:
            return True
        if self.refresh.pop(value, None) is None:
            return False
        if with_access:
            for key in [k for k, t in self.access.items() if t.grant == value]:
                del self.access[key]
        return True


def s256(verifier: str) -> str:
    """PKCE S256: base64url(sha256(code_verifier)) without padding (RFC 7636 §4.2)."""
    digest = hashlib.sha256(verifier.encode("utf-8")).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")


def same(given: str, expected: str) -> bool:
    """A constant-time comparison that also takes non-ASCII text."""
    return secrets.compare_digest(given.encode("utf-8"), expected.encode("utf-8"))
