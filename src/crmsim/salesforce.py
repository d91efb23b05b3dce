"""A Salesforce simulator: the parts of Salesforce's public API that crmgate uses, as documented.

Served: the SOAP `login()` call of the Partner API (user name + password + security token); OAuth
2.0 `token` (refresh_token, password and authorization_code grants), `revoke` and `userinfo`; the
OAuth 2.0 web server flow's `authorize` endpoint for connected apps (exact callback URLs, `state`,
PKCE S256, a minimal login page with Allow / Deny, single-use authorization codes that expire);
and the REST API:
versions, describeGlobal, sObject describe, sObject create / get / update / delete, SOQL `query`
with query locators (`nextRecordsUrl`, `Sforce-Query-Options: batchSize`), and sObject Collections
(`composite/sobjects`). Sessions expire after a configurable lifetime (INVALID_SESSION_ID);
refresh tokens can rotate; users have profiles (a read-only one gets
INSUFFICIENT_ACCESS_OR_READONLY); the org has an API request limit (REQUEST_LIMIT_EXCEEDED,
`Sforce-Limit-Info`). One simulator plays both the login host (login.salesforce.com) and the org's
instance (MyDomain.my.salesforce.com).
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import secrets
import time
import xml.etree.ElementTree as ET
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field
from html import escape
from typing import Any
from urllib.parse import urlencode, urlsplit, urlunsplit

from aiohttp import web

from crmsim.salesforce_data import SalesforceData, new_id

API_VERSION = "60.0"
_SOAP_NS = "http://schemas.xmlsoap.org/soap/envelope/"


@dataclass
class SfUser:
    username: str
    password: str
    security_token: str
    name: str
    email: str
    profile: str = "System Administrator"
    active: bool = True
    id: str = field(default_factory=lambda: new_id("005"))


@dataclass
class Session:
    user: SfUser
    expires_at: float


@dataclass
class ConnectedApp:
    """A connected app (or external client app) with OAuth settings enabled."""

    client_id: str  # the consumer key
    client_secret: str  # the consumer secret
    redirect_uris: list[str]  # the callback URLs; a request must name one of them exactly
    # "Require Proof Key for Code Exchange (PKCE) Extension for Supported Authorization Flows"
    require_pkce: bool = False
    # "Require Secret for Web Server Flow"; the simulator applies it to the refresh token flow too
    require_secret: bool = True
    scopes: tuple[str, ...] = ("api", "refresh_token")  # "Selected OAuth Scopes"
    name: str = "Connected App"


@dataclass
class AuthorizationRequest:
    """An authorize request waiting on the login page for the user to allow or deny it."""

    app: ConnectedApp
    redirect_uri: str
    state: str | None
    scope: str
    code_challenge: str | None
    expires_at: float


@dataclass
class AuthorizationCode:
    app: ConnectedApp
    user: SfUser
    redirect_uri: str
    scope: str
    code_challenge: str | None
    expires_at: float


@dataclass
class RefreshGrant:
    """What a refresh token from a connected app's flow is bound to."""

    client_id: str
    scope: str


_LOGIN_PAGE_LIFETIME = 900.0  # seconds a login page's pending request stays valid
_OFFLINE_SCOPES = frozenset({"refresh_token", "offline_access"})


class SalesforceSimulator:
    def __init__(
        self,
        org_name: str = "Simulated Org",
        session_lifetime: float = 7200.0,
        rotate_refresh_tokens: bool = False,
        authorization_code_lifetime: float = 900.0,
    ) -> None:
        self.org_id = new_id("00D")
        self.org_name = org_name
        self.session_lifetime = session_lifetime
        self.rotate_refresh_tokens = rotate_refresh_tokens
        self.users: dict[str, SfUser] = {}
        self.sessions: dict[str, Session] = {}
        self.refresh_tokens: dict[str, SfUser] = {}
        # refresh tokens issued to a connected app are bound to it (and to the granted scopes)
        self.refresh_token_grants: dict[str, RefreshGrant] = {}
        self.connected_apps: dict[str, ConnectedApp] = {}
        self.authorization_requests: dict[str, AuthorizationRequest] = {}
        self.authorization_codes: dict[str, AuthorizationCode] = {}
        self.authorization_code_lifetime = authorization_code_lifetime  # Salesforce: 15 minutes
        # A username: GET authorize then logs this user in and approves at once (no login page).
        self.auto_approve_user: str | None = None
        # Tests: seconds the refresh grant waits after issuing (and rotating) its tokens and
        # before answering, as a slow or cut connection would.
        self.refresh_delay = 0.0
        self.report_expires_in = False
        self.token_outage = False  # tests: the token endpoint answers 503
        # (method, path) of the latest requests, for tests; bounded for long-running demos
        self.calls: deque[tuple[str, str]] = deque(maxlen=100_000)
        self.api_enabled = True  # False: the org's edition has no API access
        self.data = SalesforceData(self)
        self.base_url = ""  # set by the running server through the Host header

    # ---- state --------------------------------------------------------------------------------

    def add_user(self, username: str, password: str, **extra: Any) -> SfUser:
        user = SfUser(
            username=username,
            password=password,
            security_token=extra.pop("security_token", secrets.token_urlsafe(18)[:24]),
            name=extra.pop("name", username.split("@")[0].title()),
            email=extra.pop("email", username),
            **extra,
        )
        self.users[username] = user
        self.data.add_user_record(user)
        return user

    def add_connected_app(
        self,
        client_id: str,
        client_secret: str,
        redirect_uris: list[str],
        require_pkce: bool = False,
        *,
        require_secret: bool = True,
        scopes: tuple[str, ...] = ("api", "refresh_token"),
        name: str = "Connected App",
    ) -> ConnectedApp:
        app = ConnectedApp(
            client_id=client_id,
            client_secret=client_secret,
            redirect_uris=list(redirect_uris),
            require_pkce=require_pkce,
            require_secret=require_secret,
            scopes=tuple(scopes),
            name=name,
        )
        self.connected_apps[client_id] = app
        return app

    def issue_session(self, user: SfUser) -> str:
        token = f"{self.org_id}!{secrets.token_urlsafe(72)}"
        self.sessions[token] = Session(user, time.time() + self.session_lifetime)
        return token

    def issue_refresh_token(self, user: SfUser) -> str:
        token = "5Aep" + secrets.token_urlsafe(60)
        self.refresh_tokens[token] = user
        return token

    def _issue_bound_refresh_token(self, user: SfUser, grant: RefreshGrant) -> str:
        token = self.issue_refresh_token(user)
        self.refresh_token_grants[token] = grant
        return token

    def expire_sessions(self) -> None:
        for session in self.sessions.values():
            session.expires_at = 0

    def session_for(self, request: web.Request) -> Session | None:
        header = request.headers.get("Authorization", "")
        token = header[7:] if header.startswith("Bearer ") else None
        session = self.sessions.get(token or "")
        if session is None or session.expires_at < time.time() or not session.user.active:
            return None
        return session

    # ---- HTTP ---------------------------------------------------------------------------------

    def app(self) -> web.Application:
        @web.middleware
        async def record(request: web.Request, handler: Any) -> web.StreamResponse:
            self.calls.append((request.method, request.path))
            return await handler(request)  # type: ignore[no-any-return]

        application = web.Application(middlewares=[record])
        application.router.add_post("/services/Soap/u/{version}", self._soap_login)
        application.router.add_get("/services/oauth2/authorize", self._authorize)
        application.router.add_post("/services/oauth2/authorize", self._authorize_submit)
        application.router.add_post("/services/oauth2/token", self._token)
        application.router.add_post("/services/oauth2/revoke", self._revoke)
        application.router.add_get("/services/oauth2/userinfo", self._userinfo)
        self.data.register(application)
        return application

    @staticmethod
    def _base(request: web.Request) -> str:
        return f"{request.scheme}://{request.host}"

    async def _soap_login(self, request: web.Request) -> web.Response:
        try:
            root = ET.fromstring(await request.read())  # noqa: S314 - our own test input
        except ET.ParseError:
            return _soap_fault("INVALID_REQUEST", "Unable to parse the login request", 500)
        values = {element.tag.rsplit("}", 1)[-1]: (element.text or "") for element in root.iter()}
        user = self.users.get(values.get("username", ""))
        if (
            user is None
            or not user.active
            or values.get("password") != user.password + user.security_token
        ):
            return _soap_fault(
                "INVALID_LOGIN",
                "Invalid username, password, security token; or user locked out.",
                500,
            )
        if not self.api_enabled:
            return _soap_fault(
                "API_DISABLED_FOR_ORG", "API is not enabled for this Organization or Partner", 500
            )
        version = request.match_info["version"]
        base = self._base(request)
        session = self.issue_session(user)
        body = f"""<?xml version="1.0" encoding="UTF-8"?>
<soapenv:Envelope xmlns:soapenv="{_SOAP_NS}" xmlns="urn:partner.soap.sforce.com"
 xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance"><soapenv:Body><loginResponse><result>
<metadataServerUrl>{base}/services/Soap/m/{version}/{self.org_id}</metadataServerUrl>
<passwordExpired>false</passwordExpired><sandbox>false</sandbox>
<serverUrl>{base}/services/Soap/u/{version}/{self.org_id}</serverUrl>
<sessionId>{escape(session)}</sessionId><userId>{user.id}</userId>
<userInfo><organizationId>{self.org_id}</organizationId>
<organizationName>{escape(self.org_name)}</organizationName>
<userEmail>{escape(user.email)}</userEmail><userFullName>{escape(user.name)}</userFullName>
<userId>{user.id}</userId><userName>{escape(user.username)}</userName></userInfo>
</result></loginResponse></soapenv:Body></soapenv:Envelope>"""
        return web.Response(text=body, content_type="text/xml", charset="utf-8")

    async def _token(self, request: web.Request) -> web.Response:
        form = await request.post()
        if self.token_outage:
            return web.Response(status=503, text="Service Unavailable")
        grant = form.get("grant_type")
        base = self._base(request)
        if grant == "refresh_token":
            token = _field(form, "refresh_token")
            user = self.refresh_tokens.get(token)
            if user is None or not user.active:
                return _oauth_error("invalid_grant", "expired access/refresh token")
            bound = self.refresh_token_grants.get(token)
            if bound is None:  # issued outside a connected app's flow: no client checks
                payload = self._token_payload(base, user)
            else:
                app = self.connected_apps.get(_field(form, "client_id"))
                if app is None:
                    return _oauth_error("invalid_client_id", "client identifier invalid")
                if (refused := _client_refused(app, form)) is not None:
                    return refused
                if app.client_id != bound.client_id:
                    return _oauth_error("invalid_grant", "expired access/refresh token")
                payload = self._token_payload(base, user, bound.scope)
            if self.rotate_refresh_tokens:
                del self.refresh_tokens[token]
                self.refresh_token_grants.pop(token, None)
                payload["refresh_token"] = (
                    self.issue_refresh_token(user)
                    if bound is None
                    else self._issue_bound_refresh_token(user, bound)
                )
            until = time.monotonic() + self.refresh_delay
            while self.refresh_delay and time.monotonic() < until:  # noqa: ASYNC110 - ends early when the test resets it
                await asyncio.sleep(0.05)
            return web.json_response(payload)
        if grant == "password":
            user = self.users.get(str(form.get("username", "")))
            if user is None or form.get("password") != user.password + user.security_token:
                return _oauth_error("invalid_grant", "authentication failure")
            return web.json_response(self._token_payload(base, user))
        if grant == "authorization_code":
            return self._authorization_code_grant(base, form)
        return _oauth_error("unsupported_grant_type", "grant type not supported")

    def _authorization_code_grant(self, base: str, form: Mapping[str, object]) -> web.Response:
        app = self.connected_apps.get(_field(form, "client_id"))
        if app is None:
            return _oauth_error("invalid_client_id", "client identifier invalid")
        if (refused := _client_refused(app, form)) is not None:
            return refused
        key = _field(form, "code")
        code = self.authorization_codes.get(key)
        if code is None or code.app.client_id != app.client_id:
            return _oauth_error("invalid_grant", "invalid authorization code")
        del self.authorization_codes[key]  # single use, whatever the outcome
        if code.expires_at <= time.time():
            return _oauth_error("invalid_grant", "expired authorization code")
        if _field(form, "redirect_uri") != code.redirect_uri:
            return _oauth_error("redirect_uri_mismatch", "redirect_uri must match configuration")
        if code.code_challenge is not None and not _same(
            _s256(_field(form, "code_verifier")), code.code_challenge
        ):
            return _oauth_error("invalid_grant", "invalid code verifier")
        if not code.user.active:
            return _oauth_error("inactive_user", "user is inactive")
        payload = self._token_payload(base, code.user, code.scope)
        if _OFFLINE_SCOPES & set(code.scope.split()):
            grant = RefreshGrant(app.client_id, code.scope)
            payload["refresh_token"] = self._issue_bound_refresh_token(code.user, grant)
        return web.json_response(payload)

    def _token_payload(
        self, base: str, user: SfUser, scope: str = "api refresh_token"
    ) -> dict[str, Any]:
        payload: dict[str, Any] = {
            "access_token": self.issue_session(user),
            "instance_url": base,
            "id": f"{base}/id/{self.org_id}/{user.id}",
            "token_type": "Bearer",
            "issued_at": str(int(time.time() * 1000)),
            "signature": secrets.token_urlsafe(32),
            "scope": scope,
        }
        if self.report_expires_in:
            # Salesforce does not say when a token expires; other CRMs do (RFC 6749 expires_in),
            # and the tests of crmgate's refresh-before-expiry use this.
            payload["expires_in"] = int(self.session_lifetime)
        return payload

    # ---- OAuth 2.0 web server flow: the authorize endpoint ------------------------------------

    async def _authorize(self, request: web.Request) -> web.Response:
        query = request.query
        app = self.connected_apps.get(query.get("client_id", ""))
        if app is None:  # never redirect for an unknown client
            return _error_page("invalid_client_id", "client identifier invalid")
        redirect_uri = query.get("redirect_uri", "")
        if redirect_uri not in app.redirect_uris:  # exact match; never redirect elsewhere
            return _error_page("redirect_uri_mismatch", "redirect_uri must match configuration")
        state = query.get("state")

        def refuse(error: str, description: str) -> web.Response:
            return _redirect(
                redirect_uri, {"error": error, "error_description": description}, state
            )

        if query.get("response_type") != "code":
            return refuse("unsupported_response_type", "response type not supported")
        requested = query.get("scope", "").split()
        if any(scope not in app.scopes for scope in requested):
            return refuse("invalid_scope", "the requested scope is not allowed")
        challenge = query.get("code_challenge") or None
        if challenge is None and app.require_pkce:
            return refuse("invalid_request", "missing required code challenge")
        if challenge is not None and query.get("code_challenge_method", "S256") != "S256":
            return refuse("invalid_request", "unsupported code challenge method")
        now = time.time()
        pending = AuthorizationRequest(
            app=app,
            redirect_uri=redirect_uri,
            state=state,
            scope=" ".join(requested or app.scopes),
            code_challenge=challenge,
            expires_at=now + _LOGIN_PAGE_LIFETIME,
        )
        if self.auto_approve_user is not None:
            user = self.users.get(self.auto_approve_user)
            if user is not None and user.active:
                return self._approve(pending, user)
        for stale in [k for k, r in self.authorization_requests.items() if r.expires_at <= now]:
            del self.authorization_requests[stale]
        key = secrets.token_urlsafe(24)
        self.authorization_requests[key] = pending
        return _login_page(app, key, query.get("login_hint", ""))

    async def _authorize_submit(self, request: web.Request) -> web.Response:
        form = await request.post()
        key = _field(form, "request")
        pending = self.authorization_requests.get(key)
        if pending is None or pending.expires_at <= time.time():
            self.authorization_requests.pop(key, None)
            return _error_page("invalid_request", "the authorization request is invalid or expired")
        if _field(form, "action") == "deny":
            del self.authorization_requests[key]
            description = "end-user denied authorization"
            return _redirect(
                pending.redirect_uri,
                {"error": "access_denied", "error_description": description},
                pending.state,
            )
        username = _field(form, "username")
        user = self.users.get(username)
        if user is None or not user.active or not _same(_field(form, "password"), user.password):
            return _login_page(pending.app, key, username, failed=True)
        del self.authorization_requests[key]
        return self._approve(pending, user)

    def _approve(self, pending: AuthorizationRequest, user: SfUser) -> web.Response:
        # Salesforce's codes are base64 with padding, so clients must URL-decode the callback.
        code = "aPrx" + secrets.token_urlsafe(64).replace("-", ".") + "=="
        self.authorization_codes[code] = AuthorizationCode(
            app=pending.app,
            user=user,
            redirect_uri=pending.redirect_uri,
            scope=pending.scope,
            code_challenge=pending.code_challenge,
            expires_at=time.time() + self.authorization_code_lifetime,
        )
        return _redirect(pending.redirect_uri, {"code": code}, pending.state)

    async def _revoke(self, request: web.Request) -> web.Response:
        form = await request.post()
        token = str(form.get("token", ""))
        if token in self.sessions:
            del self.sessions[token]
        elif token in self.refresh_tokens:
            user = self.refresh_tokens.pop(token)
            self.refresh_token_grants.pop(token, None)
            for key in [k for k, s in self.sessions.items() if s.user is user]:
                del self.sessions[key]
        else:
            return _oauth_error("unsupported_token_type", "this token type is not supported")
        return web.Response(status=200)

    async def _userinfo(self, request: web.Request) -> web.Response:
        session = self.session_for(request)
        if session is None:
            return web.Response(status=403, text="Bad_OAuth_Token")
        user, base = session.user, self._base(request)
        given, _, family = user.name.partition(" ")
        return web.json_response(
            {
                "sub": f"{base}/id/{self.org_id}/{user.id}",
                "user_id": user.id,
                "organization_id": self.org_id,
                "preferred_username": user.username,
                "nickname": user.username.split("@")[0],
                "name": user.name,
                "email": user.email,
                "email_verified": True,
                "given_name": given,
                "family_name": family,
                "zoneinfo": "Europe/London",
                "profile": f"{base}/{user.id}",
                "active": user.active,
                "user_type": "STANDARD",
                "language": "en_US",
                "locale": "en_GB",
                "utcOffset": 0,
                "urls": {
                    "rest": f"{base}/services/data/v{{version}}/",
                    "sobjects": f"{base}/services/data/v{{version}}/sobjects/",
                    "query": f"{base}/services/data/v{{version}}/query/",
                    "partner": f"{base}/services/Soap/u/{{version}}/{self.org_id}",
                },
            }
        )


def _soap_fault(code: str, message: str, status: int) -> web.Response:
    body = f"""<?xml version="1.0" encoding="UTF-8"?>
<soapenv:Envelope xmlns:soapenv="{_SOAP_NS}" xmlns:sf="urn:fault.partner.soap.sforce.com"
 xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance"><soapenv:Body><soapenv:Fault>
<faultcode>sf:{code}</faultcode><faultstring>{code}: {escape(message)}</faultstring>
<detail><sf:LoginFault xsi:type="sf:LoginFault"><sf:exceptionCode>{code}</sf:exceptionCode>
<sf:exceptionMessage>{escape(message)}</sf:exceptionMessage></sf:LoginFault></detail>
</soapenv:Fault></soapenv:Body></soapenv:Envelope>"""
    return web.Response(status=status, text=body, content_type="text/xml", charset="utf-8")


def _oauth_error(error: str, description: str) -> web.Response:
    return web.json_response({"error": error, "error_description": description}, status=400)


def _field(form: Mapping[str, object], name: str) -> str:
    value = form.get(name)
    return value if isinstance(value, str) else ""


def _same(given: str, expected: str) -> bool:
    """A constant-time comparison that also takes non-ASCII text."""
    return secrets.compare_digest(given.encode("utf-8"), expected.encode("utf-8"))


def _client_refused(app: ConnectedApp, form: Mapping[str, object]) -> web.Response | None:
    """The consumer secret check of the token endpoint: a secret sent must be right; none sent is
    accepted only when the app does not require it (PKCE then protects the code)."""
    secret = _field(form, "client_secret")
    if secret:
        if not _same(secret, app.client_secret):
            return _oauth_error("invalid_client", "invalid client credentials")
    elif app.require_secret:
        return _oauth_error("invalid_client", "invalid client credentials")
    return None


def _s256(verifier: str) -> str:
    """PKCE S256: base64url(sha256(code_verifier)) without padding (RFC 7636)."""
    digest = hashlib.sha256(verifier.encode("utf-8")).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")


def _redirect(uri: str, params: dict[str, str], state: str | None) -> web.Response:
    """A 302 to a registered callback URL with ``params`` (and ``state``) added to its query."""
    if state is not None:
        params = {**params, "state": state}
    parts = urlsplit(uri)
    added = urlencode(params)
    query = f"{parts.query}&{added}" if parts.query else added
    location = urlunsplit(parts._replace(query=query))
    return web.Response(status=302, headers={"Location": location, "Cache-Control": "no-store"})


_PAGE_HEADERS = {
    "Cache-Control": "no-store",
    "X-Frame-Options": "DENY",
    "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; "
    "frame-ancestors 'none'",
}
_STYLE = (
    "body{font-family:sans-serif;background:#f3f3f3;margin:0}"
    "main{max-width:22rem;margin:4rem auto;background:#fff;padding:1.5rem;border-radius:4px}"
    "label,input{display:block;width:100%;box-sizing:border-box;margin:.25rem 0}"
    "input{padding:.5rem}.error{color:#c23934}button{margin:.75rem .5rem 0 0;padding:.5rem 1rem}"
)


def _page(title: str, body: str, status: int) -> web.Response:
    html = (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f"<title>{escape(title)}</title><style>{_STYLE}</style></head>"
        f"<body><main>{body}</main></body></html>\n"
    )
    return web.Response(
        status=status,
        text=html,
        content_type="text/html",
        charset="utf-8",
        headers=_PAGE_HEADERS,
    )


def _error_page(error: str, description: str) -> web.Response:
    """The authorize endpoint's own error page (HTTP 400): shown, never redirected."""
    body = (
        "<h1>OAuth Error</h1><p>We can't authorize you because of an OAuth error.</p>"
        f'<p class="error">error={escape(error)}<br>'
        f"error_description={escape(description)}</p>"
    )
    return _page("OAuth Error", body, 400)


def _login_page(
    app: ConnectedApp, request_key: str, username: str, failed: bool = False
) -> web.Response:
    error = (
        '<p class="error">Please check your username and password. If you still can\'t log in, '
        "contact your Salesforce administrator.</p>"
        if failed
        else ""
    )
    body = (
        f"<h1>Login</h1><p>{escape(app.name)} is requesting access to your account.</p>{error}"
        '<form method="post" action="/services/oauth2/authorize">'
        f'<input type="hidden" name="request" value="{escape(request_key)}">'
        '<label for="username">Username</label>'
        f'<input id="username" name="username" type="email" value="{escape(username)}" '
        'autocomplete="username" required>'
        '<label for="password">Password</label>'
        '<input id="password" name="password" type="password" autocomplete="current-password">'
        '<button type="submit" name="action" value="allow">Allow</button>'
        '<button type="submit" name="action" value="deny" formnovalidate>Deny</button>'
        "</form>"
    )
    return _page("Login | Salesforce", body, 200)


def platform_overrides(base_url: str) -> dict[str, dict[str, Any]]:
    """CRMGATE_PLATFORM_OVERRIDES that point Salesforce and its sandbox at a simulator running at
    ``base_url`` (the tests and the demo use it)."""
    host = base_url.removeprefix("https://")
    oauth = {
        "authorize_url": f"{base_url}/services/oauth2/authorize",
        "token_url": f"{base_url}/services/oauth2/token",
        "revoke_url": f"{base_url}/services/oauth2/revoke",
    }
    entry = {"login_url": base_url, "instance_hosts": [host], "oauth": oauth}
    return {"Salesforce": entry, "SalesforceSandbox": dict(entry)}
