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
import secrets
import time
import xml.etree.ElementTree as ET
from collections.abc import Mapping
from dataclasses import dataclass, field
from html import escape
from typing import Any

from aiohttp import web

from crmsim.app import Route, Simulator, overrides
from crmsim.guard import Guard, Verdict, bearer
from crmsim.oauth import AuthorizationServer, Issued, OAuthError, Pending
from crmsim.records import Cursors
from crmsim.salesforce_data import Rejected, SalesforceData, new_id
from crmsim.tokens import AccessToken, Client, TokenStore, same

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


Token = AccessToken[SfUser]  # a session
ConnectedApp = Client  # a connected app (or external client app) is an OAuth client


class _Guard(Guard[SfUser]):
    """A session (``Authorization: Bearer``) of an active user; the org's API requests a day
    (a `Quota`), shown on every answer as ``Sforce-Limit-Info``; past them 403."""

    def __init__(self, sim: SalesforceSimulator) -> None:
        super().__init__(sim.tokens, [bearer()], sim.data.quota, sim.faults)

    def accepts(self, token: Token) -> bool:
        return super().accepts(token) and token.subject.active

    def unauthorized(self, request: web.Request, token: Token | None) -> web.StreamResponse:
        return Rejected(401, "INVALID_SESSION_ID", "Session expired or invalid").response()

    def limited(self, verdict: Verdict) -> web.StreamResponse:
        return Rejected(403, "REQUEST_LIMIT_EXCEEDED", "TotalRequests Limit exceeded.").response()

    def rate_headers(self, verdict: Verdict) -> dict[str, str]:
        return {"Sforce-Limit-Info": f"api-usage={verdict.used + 1}/{verdict.limit}"}


# Salesforce's token endpoint words the shared checks' refusals its own way
_OAUTH_ERRORS = {
    "unknown_client": ("invalid_client_id", "client identifier invalid"),
    "bad_secret": ("invalid_client", "invalid client credentials"),
    "code": ("invalid_grant", "invalid authorization code"),
    "refresh": ("invalid_grant", "expired access/refresh token"),
    "redirect_mismatch": ("redirect_uri_mismatch", "redirect_uri must match configuration"),
    "grant": ("unsupported_grant_type", "grant type not supported"),
    "subject": ("inactive_user", "user is inactive"),
}
_UNBOUND = Client("", None, require_secret=False)  # a refresh token from outside an app's flow


class _OAuth(AuthorizationServer[SfUser]):
    """Connected apps: per-app PKCE (S256 only, the default), a login page with Allow / Deny
    (or a user approving at once), a refresh token only with the ``refresh_token`` or
    ``offline_access`` scope, bound to its app (or to none when issued outside an app's
    flow), rotated when the org says so; the password grant; no ``expires_in``."""

    grant_types = ("authorization_code", "refresh_token", "password")
    challenge_methods = ("S256",)
    default_challenge_method = "S256"

    def __init__(self, sim: SalesforceSimulator) -> None:
        super().__init__(sim.tokens, lambda: sim.users[sim.auto_approve_user or ""])
        self.sim = sim

    async def token(self, request: web.Request) -> web.StreamResponse:
        if self.sim.token_outage:
            return web.Response(status=503, text="Service Unavailable")
        params = await self.parameters(request)
        if params.get("grant_type") == "password":
            user = self.sim.login(params.get("username", ""), params.get("password", ""))
            if user is None:
                return self.error_answer(OAuthError("invalid_grant", "authentication failure", ""))
            issued = self.issue("password", _UNBOUND, user, _DEFAULT_SCOPES, None)
            return web.json_response(self.token_answer(issued, request))
        answer = await super().token(request)
        if params.get("grant_type") == "refresh_token":
            until = time.monotonic() + self.sim.refresh_delay
            while self.sim.refresh_delay and time.monotonic() < until:  # noqa: ASYNC110 - ends early when the test resets it
                await asyncio.sleep(0.05)
        return answer

    def authenticate(self, request: web.Request, params: Mapping[str, str]) -> Client:
        held = self.tokens.refresh.get(params.get("refresh_token", ""))
        if params.get("grant_type") == "refresh_token" and (held is None or not held.client_id):
            return _UNBOUND  # no client checks; an unknown token is invalid_grant
        return super().authenticate(request, params)

    def requires_pkce(self, client: Client) -> bool:
        return bool(client.extra["require_pkce"])

    async def consent(self, request: web.Request, pending: Pending) -> web.StreamResponse:
        pending.offline = bool(_OFFLINE_SCOPES & set(pending.scopes))
        user = self.sim.users.get(self.sim.auto_approve_user or "")
        if user is not None and user.active:
            return self.approve(pending, user)
        key = self.sim.authorization_requests.issue(pending)
        return _login_page(pending.client, key, request.query.get("login_hint", ""))

    def exchange_code(self, client: Client, params: Mapping[str, str]) -> Issued[SfUser]:
        code = self.tokens.codes.get(params.get("code", ""))
        if code is None or code.client_id != client.client_id:  # not spent: another's guess
            raise OAuthError("invalid_grant", "invalid authorization code", "code")
        if not code.subject.active:
            self.tokens.codes.pop(params.get("code", ""))  # spent, as by the shared checks
            raise OAuthError("inactive_user", "user is inactive", "subject")
        return super().exchange_code(client, params)

    def refresh(self, client: Client, params: Mapping[str, str]) -> Issued[SfUser]:
        held = self.tokens.refresh.get(params.get("refresh_token", ""))
        if held is not None and not held.subject.active:
            raise OAuthError("invalid_grant", "expired access/refresh token", "refresh")
        self.refresh_rotation = "rotate" if self.sim.rotate_refresh_tokens else "omit"
        return super().refresh(client, params)

    def token_answer(self, issued: Issued[SfUser], request: web.Request) -> dict[str, Any]:
        base, user = f"{request.scheme}://{request.host}", issued.token.subject
        answer: dict[str, Any] = {
            "access_token": issued.access,
            "instance_url": base,
            "id": f"{base}/id/{self.sim.org_id}/{user.id}",
            "token_type": "Bearer",
            "issued_at": str(int(time.time() * 1000)),
            "signature": secrets.token_urlsafe(32),
            "scope": " ".join(issued.token.scopes),
        }
        if self.sim.report_expires_in:
            # Salesforce does not say when a token expires; other CRMs do (RFC 6749 expires_in),
            # and the tests of crmgate's refresh-before-expiry use this.
            answer["expires_in"] = int(issued.lifetime)
        if issued.refresh is not None:
            answer["refresh_token"] = issued.refresh
        return answer

    def error_answer(self, error: OAuthError) -> web.StreamResponse:
        code, description = _OAUTH_ERRORS.get(error.reason, (error.error, error.description))
        return super().error_answer(OAuthError(code, description, error.reason))

    def error_page(self, error: OAuthError) -> web.StreamResponse:
        return _error_page(*_OAUTH_ERRORS.get(error.reason, (error.error, error.description)))

    async def revoke(self, request: web.Request) -> web.StreamResponse:
        """A session, or a refresh token with the sessions issued from it (RFC 7009 §2.1); an
        unknown token is ``unsupported_token_type``."""
        if not self.tokens.revoke((await self.parameters(request)).get("token", "")):
            unknown = OAuthError("unsupported_token_type", "this token type is not supported", "")
            return self.error_answer(unknown)
        return web.Response(status=200)


_LOGIN_PAGE_LIFETIME = 900.0  # seconds a login page's pending request stays valid
_OFFLINE_SCOPES = frozenset({"refresh_token", "offline_access"})
_DEFAULT_SCOPES = ("api", "refresh_token")


class SalesforceSimulator(Simulator[SfUser]):
    def __init__(
        self,
        org_name: str = "Simulated Org",
        session_lifetime: float = 7200.0,
        rotate_refresh_tokens: bool = False,
        authorization_code_lifetime: float = 900.0,  # Salesforce: 15 minutes
    ) -> None:
        super().__init__()
        self.org_id = new_id("00D")
        self.org_name = org_name
        self.rotate_refresh_tokens = rotate_refresh_tokens
        self.users: dict[str, SfUser] = {}
        self.tokens = TokenStore(
            access_format=lambda: f"{self.org_id}!{secrets.token_urlsafe(72)}",
            refresh_format=lambda user: "5Aep" + secrets.token_urlsafe(60),
            # Salesforce's codes are base64 with padding: clients must URL-decode the callback
            code_format=lambda: "aPrx" + secrets.token_urlsafe(64).replace("-", ".") + "==",
            access_lifetime=session_lifetime,
            code_lifetime=authorization_code_lifetime,
        )
        self.data = SalesforceData(self)
        self.guard = _Guard(self)
        self.oauth = _OAuth(self)
        # login page key -> the authorize request waiting for the user (for a while)
        self.authorization_requests: Cursors[Pending] = Cursors(
            lambda: secrets.token_urlsafe(24), _LOGIN_PAGE_LIFETIME
        )
        # A username: GET authorize then logs this user in and approves at once (no login page).
        self.auto_approve_user: str | None = None
        # Tests: seconds the refresh grant waits after issuing (and rotating) its tokens and
        # before answering, as a slow or cut connection would.
        self.refresh_delay = 0.0
        self.report_expires_in = False
        self.token_outage = False  # tests: the token endpoint answers 503
        self.api_enabled = True  # False: the org's edition has no API access

    # ---- state --------------------------------------------------------------------------------

    @property
    def sessions(self) -> dict[str, Token]:
        return self.tokens.access

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
        scopes: tuple[str, ...] = _DEFAULT_SCOPES,
        name: str = "Connected App",
    ) -> Client:
        """A connected app (or external client app) with OAuth settings enabled: its consumer
        key and secret, its callback URLs, "Require Proof Key for Code Exchange (PKCE)",
        "Require Secret for Web Server Flow" (applied to the refresh token flow too) and its
        "Selected OAuth Scopes"."""
        app = self.tokens.add_client(
            client_id, client_secret, tuple(redirect_uris), scopes, require_pkce=require_pkce
        )
        app.require_secret, app.extra["name"] = require_secret, name
        return app

    def issue_session(self, user: SfUser) -> str:
        return self.tokens.issue_access(user)

    def issue_refresh_token(self, user: SfUser) -> str:
        """A refresh token bound to no connected app (as from a flow outside the simulator)."""
        return self.tokens.issue_refresh("", user, _DEFAULT_SCOPES)

    def expire_sessions(self) -> None:
        self.tokens.expire_all()

    def session_for(self, request: web.Request) -> Token | None:
        session = self.tokens.access.get(bearer()(request) or "")
        return session if session is not None and self.guard.accepts(session) else None

    # ---- HTTP ---------------------------------------------------------------------------------

    def routes(self) -> list[Route]:
        return [
            Route("POST", "/services/Soap/u/{version}", self._soap_login, guarded=False),
            Route("GET", "/services/oauth2/authorize", self.oauth.authorize, guarded=False),
            Route("POST", "/services/oauth2/authorize", self._authorize_submit, guarded=False),
            Route("POST", "/services/oauth2/token", self.oauth.token, guarded=False),
            Route("POST", "/services/oauth2/revoke", self.oauth.revoke, guarded=False),
            Route("GET", "/services/oauth2/userinfo", self._userinfo, guarded=False),
            *self.data.routes(),
        ]

    @staticmethod
    def _base(request: web.Request) -> str:
        return f"{request.scheme}://{request.host}"

    def login(self, username: str, password: str, *, token: bool = True) -> SfUser | None:
        """The active user a user name and password log in: the API's logins take the password
        followed by the security token, the login page the password alone."""
        user = self.users.get(username)
        wanted = user.password + (user.security_token if token else "") if user else ""
        return user if user and user.active and same(password, wanted) else None

    async def _soap_login(self, request: web.Request) -> web.Response:
        try:
            root = ET.fromstring(await request.read())  # noqa: S314 - our own test input
        except ET.ParseError:
            return _soap_fault("INVALID_REQUEST", "Unable to parse the login request")
        values = {element.tag.rsplit("}", 1)[-1]: (element.text or "") for element in root.iter()}
        user = self.login(values.get("username", ""), values.get("password", ""))
        if user is None:
            message = "Invalid username, password, security token; or user locked out."
            return _soap_fault("INVALID_LOGIN", message)
        if not self.api_enabled:
            message = "API is not enabled for this Organization or Partner"
            return _soap_fault("API_DISABLED_FOR_ORG", message)
        version, base = request.match_info["version"], self._base(request)
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

    async def _authorize_submit(self, request: web.Request) -> web.StreamResponse:
        """The login page's answer: Deny back to the app with access_denied; Allow with the
        user's name and password approves."""
        form = await self.oauth.parameters(request)
        key = form.get("request", "")
        pending = self.authorization_requests.get(key)
        if pending is None:
            expired = "the authorization request is invalid or expired"
            return self.oauth.error_page(OAuthError("invalid_request", expired, ""))
        if form.get("action") == "deny":
            self.authorization_requests.forget(key)
            denied = OAuthError("access_denied", "end-user denied authorization", "")
            return self.oauth.refuse(denied, pending.redirect_uri, pending.state)
        user = self.login(form.get("username", ""), form.get("password", ""), token=False)
        if user is None:
            return _login_page(pending.client, key, form.get("username", ""), failed=True)
        self.authorization_requests.forget(key)  # a request is answered once
        return self.oauth.approve(pending, user)

    async def _userinfo(self, request: web.Request) -> web.Response:
        session = self.session_for(request)
        if session is None:
            return web.Response(status=403, text="Bad_OAuth_Token")
        user, base = session.subject, self._base(request)
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


def _soap_fault(code: str, message: str) -> web.Response:
    """A login fault, with HTTP 500 as SOAP 1.1 answers faults."""
    body = f"""<?xml version="1.0" encoding="UTF-8"?>
<soapenv:Envelope xmlns:soapenv="{_SOAP_NS}" xmlns:sf="urn:fault.partner.soap.sforce.com"
 xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance"><soapenv:Body><soapenv:Fault>
<faultcode>sf:{code}</faultcode><faultstring>{code}: {escape(message)}</faultstring>
<detail><sf:LoginFault xsi:type="sf:LoginFault"><sf:exceptionCode>{code}</sf:exceptionCode>
<sf:exceptionMessage>{escape(message)}</sf:exceptionMessage></sf:LoginFault></detail>
</soapenv:Fault></soapenv:Body></soapenv:Envelope>"""
    return web.Response(status=500, text=body, content_type="text/xml", charset="utf-8")


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


def _login_page(app: Client, request_key: str, username: str, failed: bool = False) -> web.Response:
    error = (
        '<p class="error">Please check your username and password. If you still can\'t log in, '
        "contact your Salesforce administrator.</p>"
        if failed
        else ""
    )
    body = (
        f"<h1>Login</h1><p>{escape(app.extra['name'])} is requesting access to your account."
        f"</p>{error}"
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
    paths = {f"{name}_url": f"/services/oauth2/{name}" for name in ("authorize", "token", "revoke")}
    entry = overrides("Salesforce", base_url, paths, "login_url")["Salesforce"]
    return {"Salesforce": entry, "SalesforceSandbox": dict(entry)}
