"""An OAuth 2.0 authorization server over a ``TokenStore``, as a simulated CRM plays it: the
authorization code grant (RFC 6749 §4.1) with PKCE (RFC 7636), the refresh token grant (§6),
the client credentials grant (§4.4, for CRMs that name it) and token revocation (RFC 7009).

Each CRM subclasses ``AuthorizationServer`` for what is its own: how the client authenticates
(``client_authentication``), whether a refresh rotates the refresh token (``refresh_rotation``),
the scope separator, the shape of the token answer (``token_answer``: Zoho's api_domain,
Salesforce's instance_url) and of errors (``error_answer``, ``refuse``, ``error_page``), and who
consents (``consent``: at once as the CRM's admin unless a login page is played).
"""

from __future__ import annotations

import base64
import binascii
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Generic, Literal, TypeVar

from aiohttp import web
from yarl import URL

from crmsim.tokens import AccessToken, Client, TokenStore

S = TypeVar("S")


class OAuthError(Exception):
    """An RFC 6749 error (§4.1.2.1 at the authorization endpoint, §5.2 at the token endpoint).
    ``reason`` is finer than ``error``, for CRMs whose own codes are (HubSpot's
    BAD_CLIENT_SECRET): unknown_client, bad_secret, grant, code, expired_code,
    redirect_mismatch, verifier, refresh, scope, response_type, pkce, resource, subject."""

    def __init__(self, error: str, description: str, reason: str, status: int = 400) -> None:
        super().__init__(description)
        self.error, self.description, self.reason, self.status = error, description, reason, status


@dataclass
class Pending:
    """An authorization request that passed the checks, waiting for the user's consent."""

    client: Client
    redirect_uri: str
    state: str | None
    scopes: tuple[str, ...]
    challenge: str | None
    challenge_method: str
    offline: bool
    params: Mapping[str, str]  # the whole request, for a CRM's own additions


@dataclass
class Issued(Generic[S]):
    """What the token endpoint issued, for ``token_answer`` to shape."""

    grant_type: str
    client: Client
    access: str
    token: AccessToken[S]
    refresh: str | None
    lifetime: float


class AuthorizationServer(Generic[S]):
    # RFC 6749 §2.3.1: client_secret_post ("form"), client_secret_basic ("basic"), or "either"
    client_authentication: Literal["form", "basic", "either"] = "form"
    grant_types: tuple[str, ...] = ("authorization_code", "refresh_token")
    # what a refresh grant answers: the same refresh token ("keep"), a new one that replaces it
    # ("rotate", RFC 9700 §4.14.2), a new one beside it ("add"), or none ("omit")
    refresh_rotation: Literal["keep", "rotate", "add", "omit"] = "keep"
    scope_separator = " "
    token_type = "Bearer"  # noqa: S105 - the RFC 6750 token type, not a secret
    require_pkce = False  # for every client; see ``requires_pkce``
    challenge_methods: tuple[str, ...] = ("S256", "plain")  # RFC 7636 §4.2
    default_challenge_method = "plain"  # RFC 7636 §4.3; Salesforce takes S256 unnamed
    revocation_authenticates = True  # RFC 7009 §2.1: confidential clients authenticate

    def __init__(self, tokens: TokenStore[S], owner: Callable[[], S]) -> None:
        self.tokens = tokens
        self.owner = owner  # who consents when the simulator approves at once

    # ---- the authorization endpoint (RFC 6749 §4.1.1) ----------------------------------------

    async def authorize(self, request: web.Request) -> web.StreamResponse:
        params = request.query
        client = self.tokens.clients.get(params.get("client_id", ""))
        redirect_uri = params.get("redirect_uri", "")
        if client is None or not client.allows_redirect(redirect_uri):
            # §4.1.2.1: never redirect to a URI that is not the client's
            reason = "unknown_client" if client is None else "redirect_mismatch"
            return self.error_page(OAuthError("invalid_request", "invalid client", reason))
        state = params.get("state")
        try:
            if params.get("response_type") != "code":
                raise OAuthError(
                    "unsupported_response_type", "response type not supported", "response_type"
                )
            scopes = self.requested_scopes(params, client)
            challenge = params.get("code_challenge") or None
            method = params.get("code_challenge_method", self.default_challenge_method)
            if challenge is None and self.requires_pkce(client):
                raise OAuthError("invalid_request", "missing required code challenge", "pkce")
            if challenge is not None and method not in self.challenge_methods:
                raise OAuthError("invalid_request", "unsupported code challenge method", "pkce")
        except OAuthError as error:
            return self.refuse(error, redirect_uri, state)
        offline = self.offline(params)
        pending = Pending(client, redirect_uri, state, scopes, challenge, method, offline, params)
        return await self.consent(request, pending)

    async def consent(self, request: web.Request, pending: Pending) -> web.StreamResponse:
        """The user signs in and approves: at once, as ``owner()``, unless a CRM plays a page."""
        return self.approve(pending, self.owner())

    def approve(self, pending: Pending, subject: S) -> web.StreamResponse:
        """Issue the code and send the browser back with it (RFC 6749 §4.1.2)."""
        code = self.tokens.issue_code(
            pending.client.client_id,
            subject,
            pending.redirect_uri,
            pending.scopes,
            pending.challenge,
            pending.challenge_method,
            pending.offline,
        )
        return redirect(
            pending.redirect_uri, {"code": code, **self.redirect_params(pending)}, pending.state
        )

    # ---- the token endpoint (RFC 6749 §3.2) ---------------------------------------------------

    async def token(self, request: web.Request) -> web.StreamResponse:
        params = await self.parameters(request)
        grant_type = params.get("grant_type", "")
        try:
            if grant_type not in self.grant_types:
                raise OAuthError("unsupported_grant_type", "Unsupported grant", "grant")
            client = self.authenticate(request, params)
            self.check_token_request(grant_type, params, client)
            if grant_type == "authorization_code":
                issued = self.exchange_code(client, params)
            elif grant_type == "refresh_token":
                issued = self.refresh(client, params)
            else:
                issued = self.client_credentials(client, params)
        except OAuthError as error:
            return self.error_answer(error)
        answer = self.token_answer(issued, request)
        return web.json_response(answer, headers={"Cache-Control": "no-store"})  # §5.1

    def authenticate(self, request: web.Request, params: Mapping[str, str]) -> Client:
        """The client, authenticated the CRM's way (RFC 6749 §2.3.1); a wrong one is
        invalid_client, 401 when it came as HTTP Basic (§5.2)."""
        header = request.headers.get("Authorization", "")
        basic = self.client_authentication != "form" and header.startswith("Basic ")
        if basic:
            try:
                pair = base64.b64decode(header.removeprefix("Basic ").strip()).decode()
            except (binascii.Error, UnicodeDecodeError):
                pair = ""
            client_id, _, secret = pair.partition(":")
        elif self.client_authentication == "basic":
            client_id, secret, basic = "", "", True
        else:
            client_id, secret = params.get("client_id", ""), params.get("client_secret", "")
        status = 401 if basic else 400
        client = self.tokens.clients.get(client_id)
        if client is None or not client.secret_matches(secret):
            reason = "unknown_client" if client is None else "bad_secret"
            raise OAuthError("invalid_client", "Invalid client credentials", reason, status)
        return client

    def exchange_code(self, client: Client, params: Mapping[str, str]) -> Issued[S]:
        """RFC 6749 §4.1.3: the code is the client's, fresh, for the same redirect URI, and
        (RFC 7636 §4.6) the verifier matches its challenge."""
        code = self.tokens.take_code(params.get("code", ""))
        if code is None or code.client_id != client.client_id:
            raise OAuthError("invalid_grant", "Invalid authorization code", "code")
        if code.expires_at < time.time():
            raise OAuthError("invalid_grant", "expired authorization code", "expired_code")
        if code.redirect_uri is not None and params.get("redirect_uri") != code.redirect_uri:
            raise OAuthError("invalid_grant", "redirect_uri does not match", "redirect_mismatch")
        if not code.verifies(params.get("code_verifier", "")):
            raise OAuthError("invalid_grant", "invalid code verifier", "verifier")
        refresh = None
        if code.offline:
            refresh = self.tokens.issue_refresh(client.client_id, code.subject, code.scopes)
        return self.issue("authorization_code", client, code.subject, code.scopes, refresh)

    def refresh(self, client: Client, params: Mapping[str, str]) -> Issued[S]:
        """RFC 6749 §6: a refresh token of this client; the scopes it was granted."""
        value = params.get("refresh_token", "")
        held = self.tokens.refresh.get(value)
        if held is None or held.client_id != client.client_id:
            raise OAuthError("invalid_grant", "Invalid refresh token", "refresh")
        answered: str | None = value
        if self.refresh_rotation == "rotate":
            answered = self.tokens.rotate(value)
        elif self.refresh_rotation == "add":
            answered = self.tokens.issue_refresh(client.client_id, held.subject, held.scopes)
        issued = self.issue("refresh_token", client, held.subject, held.scopes, answered)
        if self.refresh_rotation == "omit":
            issued.refresh = None
        return issued

    def client_credentials(self, client: Client, params: Mapping[str, str]) -> Issued[S]:
        """RFC 6749 §4.4: the client acts as itself (``client_subject``); no refresh token."""
        subject = self.client_subject(client, params)
        scopes = tuple(params.get("scope", "").split(self.scope_separator))
        return self.issue("client_credentials", client, subject, scopes, None)

    def issue(
        self,
        grant_type: str,
        client: Client,
        subject: S,
        scopes: tuple[str, ...],
        refresh: str | None,
    ) -> Issued[S]:
        lifetime = self.tokens.access_lifetime
        access = self.tokens.issue_access(subject, scopes, lifetime, client.client_id, refresh)
        token = self.tokens.access[access]
        return Issued(grant_type, client, access, token, refresh, lifetime)

    # ---- revocation (RFC 7009) ----------------------------------------------------------------

    async def revoke(self, request: web.Request) -> web.StreamResponse:
        """RFC 7009 §2: the client's own token is revoked; an unknown one is no error (§2.2)."""
        params = await self.parameters(request)
        value = params.get("token", "")
        if self.revocation_authenticates:
            try:
                client = self.authenticate(request, params)
            except OAuthError as error:
                return self.error_answer(error)
            held = self.tokens.refresh.get(value) or self.tokens.access.get(value)
            if held is not None and held.client_id != client.client_id:
                return web.Response(status=200)  # another client's: left alone
        self.tokens.revoke(value)
        return web.Response(status=200)

    # ---- hooks ---------------------------------------------------------------------------------

    async def parameters(self, request: web.Request) -> dict[str, str]:
        """The token and revocation endpoints' parameters: the form body (§3.2)."""
        form = await request.post()
        return {key: str(value) for key, value in form.items()}

    def requested_scopes(self, params: Mapping[str, str], client: Client) -> tuple[str, ...]:
        """The scopes asked for (all the client's when none is named); one the client may not
        have is invalid_scope (§4.1.2.1)."""
        asked = tuple(s for s in params.get("scope", "").split(self.scope_separator) if s)
        if client.scopes and any(scope not in client.scopes for scope in asked):
            raise OAuthError("invalid_scope", "the requested scope is not allowed", "scope")
        return asked or client.scopes

    def requires_pkce(self, client: Client) -> bool:
        """Whether an authorization request must carry a code challenge (per app at Salesforce)."""
        return self.require_pkce

    def offline(self, params: Mapping[str, str]) -> bool:
        """Whether the code's exchange also gives a refresh token (Zoho: access_type)."""
        return True

    def redirect_params(self, pending: Pending) -> dict[str, str]:
        """What the redirect carries besides code and state (Zoho's accounts-server)."""
        return {}

    def check_token_request(
        self, grant_type: str, params: Mapping[str, str], client: Client
    ) -> None:
        """A CRM's own checks of a token request (Entra ID's resources); raise OAuthError."""

    def client_subject(self, client: Client, params: Mapping[str, str]) -> S:
        """Who a client_credentials token acts as."""
        raise OAuthError("unauthorized_client", "client credentials are not allowed", "subject")

    def token_answer(self, issued: Issued[S], request: web.Request) -> dict[str, Any]:
        """RFC 6749 §5.1."""
        answer: dict[str, Any] = {
            "access_token": issued.access,
            "token_type": self.token_type,
            "expires_in": int(issued.lifetime),
        }
        if issued.refresh is not None:
            answer["refresh_token"] = issued.refresh
        if issued.token.scopes:
            answer["scope"] = self.scope_separator.join(issued.token.scopes)
        return answer

    def error_answer(self, error: OAuthError) -> web.StreamResponse:
        """RFC 6749 §5.2."""
        body = {"error": error.error, "error_description": error.description}
        return web.json_response(body, status=error.status)

    def refuse(self, error: OAuthError, redirect_uri: str, state: str | None) -> web.StreamResponse:
        """An authorization request refused after its redirect URI was checked: back to the
        client with the error (§4.1.2.1)."""
        params = {"error": error.error, "error_description": error.description}
        return redirect(redirect_uri, params, state)

    def error_page(self, error: OAuthError) -> web.StreamResponse:
        """A refusal the browser sees as a page: the redirect URI cannot be trusted."""
        return web.Response(status=400, text=f"{error.error}: {error.description}")


def redirect(uri: str, params: Mapping[str, str], state: str | None) -> web.Response:
    """A 302 to ``uri`` with ``params`` (and ``state`` when the request had one) added."""
    query = {**params, **({"state": state} if state is not None else {})}
    return web.Response(status=302, headers={"Location": str(URL(uri).update_query(query))})
