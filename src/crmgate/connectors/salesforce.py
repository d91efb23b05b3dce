"""Salesforce (and SalesforceSandbox, which only logs in elsewhere): the code its descriptor
cannot say. Identity comes from the OAuth userinfo endpoint; the `user` authorization logs in with
the Partner API's SOAP login() call, the way Salesforce's own tools do."""

from __future__ import annotations

import json
import logging
import re
import xml.etree.ElementTree as ET
from collections.abc import Mapping, Sequence
from html import escape
from typing import Any

from yarl import URL

from crmgate.connectors import soql
from crmgate.connectors.base import (
    Access,
    ApiNotEnabled,
    Connector,
    CredentialsRejected,
    CrmError,
    CrmUnavailable,
    EntityNotFound,
    Identity,
    NotAllowed,
    NotValid,
    RateLimited,
    SessionExpired,
    Verified,
)
from crmgate.connectors.catalogue import Platform
from crmgate.model.mapping import EntityMap, MappingError
from crmgate.outbound import Outbound, OutboundRefused, check_url
from crmgate.query import Condition, SortKey

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

    def __init__(self, platform: Platform, outbound: Outbound) -> None:
        super().__init__(platform, outbound)
        self.records = SalesforceRecords(self)

    def access(
        self, authorization: str, credential: Mapping[str, str], derived: Mapping[str, str]
    ) -> Access:
        """The instance and token of a call: the OAuth access token, or the login session."""
        if authorization == "user":
            return Access(self.instance_url(derived["instance_url"]), derived["session_id"])
        return Access(self.instance_url(credential["instance_url"]), credential["access_token"])

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


# ---- records ---------------------------------------------------------------------------------

_RECORD_ID = re.compile(r"^[0-9A-Za-z]{15}(?:[0-9A-Za-z]{3})?$")
MAX_OFFSET = 2000  # SOQL's OFFSET limit; deeper pages walk query locators
LOCATOR_BATCH = 2000


class SalesforceRecords:
    """sObject CRUD and SOQL for one platform: what the unified entity API calls."""

    def __init__(self, connector: SalesforceConnector) -> None:
        self.connector = connector

    @property
    def _version(self) -> str:
        return self.connector.platform.api_version or "60.0"

    def _base(self, access: Access) -> URL:
        return access.instance_url / "services" / "data" / f"v{self._version}"

    async def _call(
        self,
        access: Access,
        method: str,
        url: URL,
        *,
        body: Any = None,
        headers: dict[str, str] | None = None,
    ) -> Any:
        sent = {
            "Authorization": f"Bearer {access.token}",
            "Accept": "application/json",
            **(headers or {}),
        }
        data = None
        if body is not None:
            sent["Content-Type"] = "application/json"
            data = json.dumps(body).encode()
        response = await self.connector.call(method, url, headers=sent, data=data)
        if response.status >= 400:
            raise _error(response.status, response.body)
        if response.status == 204 or not response.body:
            return None
        try:
            return json.loads(response.body)
        except ValueError:
            raise CrmUnavailable("Salesforce answered something that is not JSON") from None

    @staticmethod
    def _record_url(base: URL, entity: EntityMap, record_id: str) -> URL:
        if not _RECORD_ID.match(record_id):
            raise EntityNotFound(f"{entity.entity} {record_id[:40]} not found")
        return base / "sobjects" / entity.object / record_id

    async def query(
        self, access: Access, statement: str, batch: int | None = None
    ) -> dict[str, Any]:
        headers = {"Sforce-Query-Options": f"batchSize={batch}"} if batch else None
        result: dict[str, Any] = await self._call(
            access, "GET", (self._base(access) / "query").with_query(q=statement), headers=headers
        )
        return result

    async def list_page(
        self,
        access: Access,
        entity: EntityMap,
        *,
        conditions: Sequence[Condition] = (),
        sort: Sequence[SortKey] = (),
        page: int = 1,
        page_size: int = 25,
        fields: Sequence[str] | None = None,
    ) -> list[dict[str, Any]]:
        columns = entity.native_columns(fields)
        offset = (page - 1) * page_size
        if offset <= MAX_OFFSET:
            statement = soql.select(
                entity, columns, conditions, sort, limit=page_size, offset=offset
            )
            rows = (await self.query(access, statement))["records"]
        else:
            rows = await self._deep_page(
                access, entity, columns, conditions, sort, offset, page_size
            )
        return [entity.to_unified(row) for row in rows]

    async def _deep_page(
        self,
        access: Access,
        entity: EntityMap,
        columns: list[str],
        conditions: Sequence[Condition],
        sort: Sequence[SortKey],
        offset: int,
        page_size: int,
    ) -> list[dict[str, Any]]:
        """Past OFFSET's limit: walk the query locator, 2,000 records a call (documented cost)."""
        statement = soql.select(entity, columns, conditions, sort, limit=offset + page_size)
        result = await self.query(access, statement, batch=LOCATOR_BATCH)
        seen, rows = 0, []
        while True:
            batch = result["records"]
            if seen + len(batch) > offset:
                rows += batch[max(0, offset - seen) :]
            seen += len(batch)
            if len(rows) >= page_size or result.get("done", True):
                return rows[:page_size]
            next_url = URL(result["nextRecordsUrl"])
            result = await self._call(access, "GET", access.instance_url.with_path(next_url.path))

    async def count(
        self, access: Access, entity: EntityMap, conditions: Sequence[Condition] = ()
    ) -> int:
        return int((await self.query(access, soql.count(entity, conditions)))["totalSize"])

    async def get(
        self, access: Access, entity: EntityMap, record_id: str, fields: Sequence[str] | None = None
    ) -> dict[str, Any]:
        url = self._record_url(self._base(access), entity, record_id)
        columns = ",".join(entity.native_columns(fields))
        return entity.to_unified(await self._call(access, "GET", url.with_query(fields=columns)))

    async def create(self, access: Access, entity: EntityMap, record: Mapping[str, Any]) -> str:
        native = _native(entity, record)
        created = await self._call(
            access, "POST", self._base(access) / "sobjects" / entity.object, body=native
        )
        return str(created["id"])

    async def update(
        self, access: Access, entity: EntityMap, record_id: str, record: Mapping[str, Any]
    ) -> None:
        url = self._record_url(self._base(access), entity, record_id)
        await self._call(access, "PATCH", url, body=_native(entity, record))

    async def delete(self, access: Access, entity: EntityMap, record_id: str) -> None:
        await self._call(access, "DELETE", self._record_url(self._base(access), entity, record_id))


def _native(entity: EntityMap, record: Mapping[str, Any]) -> dict[str, Any]:
    try:
        return entity.to_native(record)
    except MappingError as error:
        raise NotValid(str(error), (error.field,)) from None


def _error(status: int, body: bytes) -> CrmError:
    """Salesforce's error answer ([{errorCode, message, fields}]) as the contract's error."""
    try:
        errors = json.loads(body)
        first = errors[0] if isinstance(errors, list) and errors else {}
    except ValueError:
        first = {}
    code = str(first.get("errorCode", ""))
    message = f"Salesforce: {first.get('message', f'HTTP {status}')} ({code or status})"
    if status == 401 or code == "INVALID_SESSION_ID":
        return SessionExpired(message)
    if code == "REQUEST_LIMIT_EXCEEDED":
        return RateLimited(message, retry_after=60)
    if status == 403:
        return NotAllowed(message)
    if status == 404:
        return EntityNotFound(message)
    if status == 400:
        return NotValid(message, tuple(str(f) for f in first.get("fields") or ()))
    return CrmUnavailable(message)
