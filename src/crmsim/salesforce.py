"""A Salesforce simulator: the parts of Salesforce's public API that crmgate uses, as documented.

Served: the SOAP `login()` call of the Partner API (user name + password + security token); OAuth
2.0 `token` (refresh_token and password grants), `revoke` and `userinfo`; and the REST API:
versions, describeGlobal, sObject describe, sObject create / get / update / delete, SOQL `query`
with query locators (`nextRecordsUrl`, `Sforce-Query-Options: batchSize`), and sObject Collections
(`composite/sobjects`). Sessions expire after a configurable lifetime (INVALID_SESSION_ID);
refresh tokens can rotate; users have profiles (a read-only one gets
INSUFFICIENT_ACCESS_OR_READONLY); the org has an API request limit (REQUEST_LIMIT_EXCEEDED,
`Sforce-Limit-Info`). One simulator plays both the login host (login.salesforce.com) and the org's
instance (MyDomain.my.salesforce.com).
"""

from __future__ import annotations

import secrets
import time
import xml.etree.ElementTree as ET
from collections import deque
from dataclasses import dataclass, field
from html import escape
from typing import Any

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


class SalesforceSimulator:
    def __init__(
        self,
        org_name: str = "Simulated Org",
        session_lifetime: float = 7200.0,
        rotate_refresh_tokens: bool = False,
    ) -> None:
        self.org_id = new_id("00D")
        self.org_name = org_name
        self.session_lifetime = session_lifetime
        self.rotate_refresh_tokens = rotate_refresh_tokens
        self.users: dict[str, SfUser] = {}
        self.sessions: dict[str, Session] = {}
        self.refresh_tokens: dict[str, SfUser] = {}
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

    def issue_session(self, user: SfUser) -> str:
        token = f"{self.org_id}!{secrets.token_urlsafe(72)}"
        self.sessions[token] = Session(user, time.time() + self.session_lifetime)
        return token

    def issue_refresh_token(self, user: SfUser) -> str:
        token = "5Aep" + secrets.token_urlsafe(60)
        self.refresh_tokens[token] = user
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
        grant = form.get("grant_type")
        base = self._base(request)
        if grant == "refresh_token":
            user = self.refresh_tokens.get(str(form.get("refresh_token", "")))
            if user is None or not user.active:
                return _oauth_error("invalid_grant", "expired access/refresh token")
            payload = self._token_payload(base, user)
            if self.rotate_refresh_tokens:
                del self.refresh_tokens[str(form["refresh_token"])]
                payload["refresh_token"] = self.issue_refresh_token(user)
            return web.json_response(payload)
        if grant == "password":
            user = self.users.get(str(form.get("username", "")))
            if user is None or form.get("password") != user.password + user.security_token:
                return _oauth_error("invalid_grant", "authentication failure")
            return web.json_response(self._token_payload(base, user))
        return _oauth_error("unsupported_grant_type", "grant type not supported")

    def _token_payload(self, base: str, user: SfUser) -> dict[str, Any]:
        return {
            "access_token": self.issue_session(user),
            "instance_url": base,
            "id": f"{base}/id/{self.org_id}/{user.id}",
            "token_type": "Bearer",
            "issued_at": str(int(time.time() * 1000)),
            "signature": secrets.token_urlsafe(32),
            "scope": "api refresh_token",
        }

    async def _revoke(self, request: web.Request) -> web.Response:
        form = await request.post()
        token = str(form.get("token", ""))
        if token in self.sessions:
            del self.sessions[token]
        elif token in self.refresh_tokens:
            user = self.refresh_tokens.pop(token)
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
