"""Salesforce (and SalesforceSandbox, which only logs in elsewhere): the code its descriptor
cannot say. Identity comes from the OAuth userinfo endpoint; the `user` authorization logs in with
the Partner API's SOAP login() call, the way Salesforce's own tools do."""

from __future__ import annotations

import json
import logging
import xml.etree.ElementTree as ET
from collections.abc import Mapping
from html import escape

from yarl import URL

from crmgate.connectors.base import (
    ApiNotEnabled,
    Connector,
    CredentialsRejected,
    CrmUnavailable,
    Identity,
    Verified,
)
from crmgate.outbound import OutboundRefused, check_url

log = logging.getLogger("crmgate.connectors.salesforce")

_LOGIN = """<?xml version="1.0" encoding="utf-8"?>
<env:Envelope xmlns:env="http://schemas.xmlsoap.org/soap/envelope/"
 xmlns:urn="urn:partner.soap.sforce.com"><env:Body><urn:login>
<urn:username>{username}</urn:username><urn:password>{password}</urn:password>
</urn:login></env:Body></env:Envelope>"""


# SOAP login faults that mean "these credentials are not accepted" (the rest are CRM-side).
_LOGIN_REFUSALS = frozenset(
    {
        "INVALID_LOGIN",
        "LOGIN_MUST_USE_SECURITY_TOKEN",
        "INVALID_PASSWORD",
        "PASSWORD_LOCKOUT",
        "INACTIVE_OWNER_OR_USER",
        "INVALID_OPERATION_WITH_EXPIRED_PASSWORD",
        "LOGIN_DURING_RESTRICTED_DOMAIN",
        "LOGIN_DURING_RESTRICTED_TIME",
    }
)


def _xml_values(body: bytes) -> dict[str, str]:
    """Local element name -> text of a SOAP answer (Salesforce's namespaces vary by API)."""
    try:
        root = ET.fromstring(body)  # noqa: S314 - bounded size; expat refuses entity expansion
    except ET.ParseError:
        return {}
    return {element.tag.rsplit("}", 1)[-1]: (element.text or "") for element in root.iter()}


class SalesforceConnector(Connector):
    name = "salesforce"

    async def verify(self, authorization: str, credential: Mapping[str, str]) -> Verified:
        if authorization == "user":
            return await self._login(credential)
        instance = self.instance_url(credential["instance_url"])
        return Verified(await self._userinfo(instance, credential["access_token"]))

    async def _userinfo(self, instance: URL, access_token: str) -> Identity:
        response = await self.call(
            "GET",
            instance / "services/oauth2/userinfo",
            headers={"Authorization": f"Bearer {access_token}", "Accept": "application/json"},
        )
        if response.status in (401, 403):
            reason = response.body.decode("utf-8", "replace").strip()[:200] or "refused"
            raise CredentialsRejected(f"Salesforce refused the access token ({reason})")
        if response.status != 200:
            raise CrmUnavailable(f"Salesforce userinfo answered HTTP {response.status}")
        try:
            info = json.loads(response.body)
            return Identity(
                user_id=str(info["user_id"]),
                name=str(info.get("name", "")),
                email=str(info.get("email", "")),
                username=str(info.get("preferred_username", "")),
                company_id=str(info["organization_id"]),
            )
        except (ValueError, KeyError, TypeError):
            raise CrmUnavailable("Salesforce userinfo answered something unexpected") from None

    async def _login(self, credential: Mapping[str, str]) -> Verified:
        login_url = self.platform.login_url
        if not login_url:
            raise CrmUnavailable(f"{self.platform.type} has no login URL configured")
        version = self.platform.api_version or "60.0"
        origin = URL(login_url)
        url = check_url(login_url, [f"{origin.host}:{origin.port}"]) / f"services/Soap/u/{version}"
        body = _LOGIN.format(
            username=escape(credential["login"]),
            password=escape(credential["password"] + credential.get("security_token", "")),
        )
        response = await self.call(
            "POST",
            url,
            headers={"Content-Type": "text/xml; charset=utf-8", "SOAPAction": "login"},
            data=body.encode(),
        )
        values = _xml_values(response.body)
        if response.status != 200:
            code = values.get("exceptionCode") or values.get("faultcode", "").rpartition(":")[2]
            reason = values.get("exceptionMessage") or values.get("faultstring") or "refused"
            if code in _LOGIN_REFUSALS:
                raise CredentialsRejected(f"Salesforce refused the login: {reason}")
            if code == "API_DISABLED_FOR_ORG":
                raise ApiNotEnabled(f"Salesforce: {reason}")
            raise CrmUnavailable(
                f"Salesforce login failed ({code or f'HTTP {response.status}'}): {reason}"
            )
        session_id, server_url = values.get("sessionId"), values.get("serverUrl")
        if not session_id or not server_url:
            raise CrmUnavailable("Salesforce login answered without a session")
        try:
            server = URL(server_url)
            instance = self.instance_url(f"{server.scheme}://{server.raw_authority}")
        except (OutboundRefused, ValueError, UnicodeError) as refused:
            raise CrmUnavailable(f"Salesforce login pointed to a refused host: {refused}") from None
        identity = Identity(
            user_id=values.get("userId", ""),
            name=values.get("userFullName", ""),
            email=values.get("userEmail", ""),
            username=values.get("userName", ""),
            company_id=values.get("organizationId", ""),
            company_name=values.get("organizationName", ""),
        )
        return Verified(identity, {"instance_url": str(instance), "session_id": session_id})

    async def revoke(
        self, authorization: str, credential: Mapping[str, str], derived: Mapping[str, str]
    ) -> None:
        oauth = self.platform.oauth
        token = credential.get("refresh_token")
        if authorization != "oAuth-internal" or not token or oauth is None or not oauth.revoke_url:
            return
        origin = URL(oauth.revoke_url)
        url = check_url(oauth.revoke_url, [f"{origin.host}:{origin.port}"])
        response = await self.call("POST", url, data={"token": token})
        if response.status != 200:
            log.warning("Salesforce did not revoke a refresh token: HTTP %d", response.status)
