"""Salesforce (and SalesforceSandbox, which only logs in elsewhere): the code its descriptor
cannot say. Identity comes from the OAuth userinfo endpoint; the `user` authorization logs in with
the Partner API's SOAP login() call, the way Salesforce's own tools do."""

from __future__ import annotations

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
    Connector,
    CursorWalks,
    Identity,
    ItemResult,
    Records,
    Verified,
    chunked,
    chunked_by_id,
    passthrough_on,
)
from crmgate.connectors.catalogue import Platform
from crmgate.connectors.errors import (
    ApiNotEnabled,
    CredentialsRejected,
    CrmUnavailable,
    EntityNotFound,
)
from crmgate.connectors.paging import Pager
from crmgate.model.mapping import EntityMap
from crmgate.model.objects import FieldInfo, ObjectInfo
from crmgate.outbound import Outbound, OutboundRefused
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
        return await super().verify(authorization, credential)

    async def _login(self, credential: Mapping[str, str]) -> Verified:
        login_url = self.platform.login_url
        if not login_url:
            raise CrmUnavailable(f"{self.platform.type} has no login URL configured")
        version = self.platform.api_version or "60.0"
        origin = URL(login_url)
        checked = self.outbound.check_url(login_url, [f"{origin.host}:{origin.port}"])
        url = checked / f"services/Soap/u/{version}"
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

    def token_fields(self, answer: Mapping[str, Any]) -> dict[str, str]:
        """Salesforce's token answer names the instance to call (it can change: an org moved
        to another pod); it must be one of the platform's hosts like any instance URL."""
        if not answer.get("instance_url"):
            return {}
        try:
            return {"instance_url": str(self.instance_url(str(answer["instance_url"])))}
        except OutboundRefused as refused:
            raise CrmUnavailable(f"Salesforce named a refused instance: {refused}") from None


# ---- records ---------------------------------------------------------------------------------

_RECORD_ID = re.compile(r"^[0-9A-Za-z]{15}(?:[0-9A-Za-z]{3})?$")


def _well_formed(record_id: str) -> bool:
    return _RECORD_ID.match(record_id) is not None


_OBJECT_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_]{0,79}$")
MAX_OFFSET = 2000  # SOQL's OFFSET limit; deeper pages walk query locators
MAX_COLD_OFFSET = 100_000  # a first jump deeper than this would cost more than 50 calls
MAX_CURSORS = 64  # query locator walks kept, each holding at most one batch
COLLECTION_LIMIT = 200  # sObject Collections take at most 200 records a call

# Salesforce field types -> the contract's types.
_KINDS = {
    "boolean": "boolean",
    "int": "integer",
    "double": "number",
    "currency": "number",
    "percent": "number",
    "date": "date",
    "datetime": "date-time",
}


def _field_info(field: Mapping[str, Any]) -> FieldInfo:
    native_type = str(field.get("type", "string"))
    createable = bool(field.get("createable"))
    return FieldInfo(
        name=str(field["name"]),
        label=str(field.get("label") or field["name"]),
        kind=_KINDS.get(native_type, "string"),
        native_type=native_type,
        required=createable
        and not field.get("nillable", True)
        and not field.get("defaultedOnCreate", False)
        and native_type != "boolean",
        createable=createable,
        updateable=bool(field.get("updateable")),
        filterable=bool(field.get("filterable", True)),
        sortable=bool(field.get("sortable", True)),
        custom=bool(field.get("custom")),
        enum=tuple(
            str(value["value"])
            for value in field.get("picklistValues") or ()
            if value.get("active", True)
        ),
        reference_to=tuple(str(target) for target in field.get("referenceTo") or ()),
    )


def _object_info(
    summary: Mapping[str, Any], fields: Sequence[Mapping[str, Any]] = ()
) -> ObjectInfo:
    return ObjectInfo(
        name=str(summary["name"]),
        label=str(summary.get("label") or summary["name"]),
        plural_label=str(summary.get("labelPlural") or ""),
        custom=bool(summary.get("custom")),
        queryable=bool(summary.get("queryable", True)),
        createable=bool(summary.get("createable")),
        updateable=bool(summary.get("updateable")),
        deletable=bool(summary.get("deletable")),
        fields=tuple(_field_info(field) for field in fields),
    )


class SalesforceRecords(Records):
    """sObject CRUD, SOQL, describe, collections and passthrough: what the unified entity API
    calls. Records go in and come out in Salesforce's own field names; the entity maps translate."""

    def __init__(self, connector: SalesforceConnector) -> None:
        super().__init__(connector)
        self.walks = CursorWalks(MAX_CURSORS)

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
        return await self.json_call(access, method, url, body=body, headers=headers)

    def _sobject(self, access: Access, name: str) -> URL:
        if not _OBJECT_NAME.match(name):
            raise EntityNotFound(f"Salesforce has no object {name[:80]!r}")
        return self._base(access) / "sobjects" / name

    def _record_url(self, access: Access, name: str, record_id: str) -> URL:
        if not _RECORD_ID.match(record_id):
            raise EntityNotFound(f"{name} {record_id[:40]!r} not found")
        return self._sobject(access, name) / record_id

    # ---- catalogue --------------------------------------------------------------------------

    async def objects(self, access: Access) -> list[ObjectInfo]:
        answer = await self._call(access, "GET", self._base(access) / "sobjects")
        summaries = _expect(answer, dict, "object list").get("sobjects")
        try:
            return [_object_info(summary) for summary in _expect(summaries, list, "object list")]
        except (KeyError, TypeError, AttributeError):
            raise CrmUnavailable("Salesforce answered an unexpected object list") from None

    async def describe(self, access: Access, name: str) -> ObjectInfo:
        answer = await self._call(access, "GET", self._sobject(access, name) / "describe")
        fields = _expect(answer, dict, "describe").get("fields") or []
        try:
            return _object_info(answer, _expect(fields, list, "describe"))
        except (KeyError, TypeError, AttributeError):
            raise CrmUnavailable("Salesforce answered an unexpected describe") from None

    # ---- reading ----------------------------------------------------------------------------

    async def query(
        self, access: Access, statement: str, batch: int | None = None
    ) -> dict[str, Any]:
        headers = {"Sforce-Query-Options": f"batchSize={batch}"} if batch else None
        result = await self._call(
            access, "GET", (self._base(access) / "query").with_query(q=statement), headers=headers
        )
        return _query_result(result)

    async def list_page(
        self,
        access: Access,
        entity: EntityMap,
        columns: Sequence[str],
        *,
        conditions: Sequence[Condition] = (),
        sort: Sequence[SortKey] = (),
        page: int = 1,
        page_size: int = 25,
    ) -> list[dict[str, Any]]:
        offset = (page - 1) * page_size
        if offset <= MAX_OFFSET:
            statement = soql.select(
                entity, columns, conditions, sort, limit=page_size, offset=offset
            )
            rows: list[dict[str, Any]] = (await self.query(access, statement))["records"]
            return rows
        return await self._deep_page(access, entity, columns, conditions, sort, offset, page_size)

    async def _deep_page(
        self,
        access: Access,
        entity: EntityMap,
        columns: Sequence[str],
        conditions: Sequence[Condition],
        sort: Sequence[SortKey],
        offset: int,
        page_size: int,
    ) -> list[dict[str, Any]]:
        """Past OFFSET's limit: walk Salesforce's query locator, 2,000 records a call. Where the
        walk stopped is kept (a cursor per query and credential), so reading the next page
        continues it: pages read in order cost one call per 2,000 records. A first jump deeper
        than MAX_COLD_OFFSET is refused rather than paid for with dozens of calls."""
        statement = soql.select(entity, columns, conditions, sort)

        url = (self._base(access) / "query").with_query(q=statement)
        options = {"Sforce-Query-Options": f"batchSize={self.platform.paging.batch}"}
        fetch = Pager(self, self.platform.paging).fetch(access, url, headers=options)
        key = CursorWalks.key(access, statement)
        return await self.walks.page(key, offset, page_size, fetch, MAX_COLD_OFFSET)

    async def count(
        self, access: Access, entity: EntityMap, conditions: Sequence[Condition] = ()
    ) -> int:
        return int((await self.query(access, soql.count(entity, conditions)))["totalSize"])

    async def aggregate(
        self,
        access: Access,
        entity: EntityMap,
        functions: Sequence[tuple[str, str]],
        group_by: Sequence[str],
        conditions: Sequence[Condition] = (),
    ) -> list[dict[str, Any]]:
        statement = soql.aggregate(entity, functions, group_by, conditions)
        rows: list[dict[str, Any]] = (await self.query(access, statement))["records"]
        return rows

    async def get(
        self, access: Access, entity: EntityMap, record_id: str, columns: Sequence[str]
    ) -> dict[str, Any]:
        url = self._record_url(access, entity.object, record_id)
        record = _expect(
            await self._call(access, "GET", url.with_query(fields=",".join(columns))),
            dict,
            "record",
        )
        _expect(record.get(entity.id), str, "record")
        return dict(record)

    async def get_many(
        self, access: Access, entity: EntityMap, ids: Sequence[str], columns: Sequence[str]
    ) -> list[dict[str, Any]]:
        rows: list[dict[str, Any]] = []
        valid = list(dict.fromkeys(i for i in ids if _RECORD_ID.match(i)))
        for chunk in _chunks(valid, COLLECTION_LIMIT):
            statement = soql.ids_matching(entity, chunk, columns)
            rows += (await self.query(access, statement))["records"]
        return rows

    async def matching(self, access: Access, entity: EntityMap, ids: Sequence[str]) -> set[str]:
        found: set[str] = set()
        valid = [record_id for record_id in ids if _RECORD_ID.match(record_id)]
        for chunk in _chunks(valid, COLLECTION_LIMIT):
            statement = soql.ids_matching(entity, chunk)
            rows = (await self.query(access, statement))["records"]
            found |= {str(row.get(entity.id)) for row in rows}
        # Salesforce answers 18-character ids; a client may have sent the 15-character form
        return {i for i in valid if i in found or any(f[:15] == i for f in found)}

    # ---- writing ----------------------------------------------------------------------------

    async def create(self, access: Access, name: str, values: Mapping[str, Any]) -> str:
        created = await self._call(access, "POST", self._sobject(access, name), body=values)
        record_id = _expect(created, dict, "create answer").get("id")
        return str(_expect(record_id, str, "create answer"))

    async def update(
        self, access: Access, name: str, record_id: str, values: Mapping[str, Any]
    ) -> None:
        await self._call(access, "PATCH", self._record_url(access, name, record_id), body=values)

    async def delete(self, access: Access, name: str, record_id: str) -> None:
        await self._call(access, "DELETE", self._record_url(access, name, record_id))

    # ---- bulk: sObject Collections, 200 records a call, each item reported -------------------

    async def bulk_create(
        self, access: Access, name: str, items: Sequence[Mapping[str, Any]]
    ) -> list[ItemResult]:
        url = self._base(access) / "composite" / "sobjects"

        async def send(chunk: list[Mapping[str, Any]]) -> list[ItemResult]:
            records = [{"attributes": {"type": name}, **values} for values in chunk]
            answer = await self._call(
                access, "POST", url, body={"allOrNone": False, "records": records}
            )
            return [self._item_result(item) for item in _collection(answer, len(records))]

        return await chunked(list(items), COLLECTION_LIMIT, send, lambda item: None)

    async def bulk_update(
        self, access: Access, name: str, items: Sequence[tuple[str, Mapping[str, Any]]]
    ) -> list[ItemResult]:
        url = self._base(access) / "composite" / "sobjects"

        async def send(valid: list[tuple[str, Mapping[str, Any]]]) -> list[ItemResult]:
            records = [{"attributes": {"type": name}, "id": i, **v} for i, v in valid]
            answer = await self._call(
                access, "PATCH", url, body={"allOrNone": False, "records": records}
            )
            results = _collection(answer, len(records))
            return [
                self._item_result(result, i) for result, (i, _) in zip(results, valid, strict=True)
            ]

        return await chunked_by_id(
            list(items), COLLECTION_LIMIT, send, lambda item: item[0], _well_formed, name
        )

    async def bulk_delete(self, access: Access, name: str, ids: Sequence[str]) -> list[ItemResult]:
        url = self._base(access) / "composite" / "sobjects"

        async def send(valid: list[str]) -> list[ItemResult]:
            answer = await self._call(
                access, "DELETE", url.with_query(ids=",".join(valid), allOrNone="false")
            )
            results = _collection(answer, len(valid))
            return [self._item_result(result, i) for result, i in zip(results, valid, strict=True)]

        return await chunked_by_id(
            list(ids), COLLECTION_LIMIT, send, lambda item: item, _well_formed, name
        )

    def _item_result(self, answer: Mapping[str, Any], record_id: str | None = None) -> ItemResult:
        """One element of a collections answer: {id, success, errors: [{statusCode, message,
        fields}]}, as the contract's per-item result (its code says more than 400)."""
        answered_id = answer.get("id")
        own_id = str(answered_id) if isinstance(answered_id, str) and answered_id else record_id
        if answer.get("success") is True:
            return ItemResult(own_id or "")
        return ItemResult(own_id, self.refused(400, answer.get("errors")))

    # ---- passthrough ------------------------------------------------------------------------

    def passthrough_url(self, access: Access, path: str) -> URL:
        """``path`` relative to the REST API of the pinned version (``sobjects/Contact``,
        ``query?q=...``), or absolute under ``/services/`` (Apex REST, other versions). Always on
        the application's own instance, and sent exactly as given: a path that could be
        normalised to somewhere else (dot segments, encoded dots, slashes or backslashes) is
        refused rather than rewritten."""
        return passthrough_on(access, path, f"/services/data/v{self._version}", "/services/")


def _expect(value: Any, kind: type, what: str) -> Any:
    """``value`` if it has the shape Salesforce documents; a CRM error (never a 500) if not."""
    if not isinstance(value, kind):
        raise CrmUnavailable(f"Salesforce answered an unexpected {what}")
    return value


def _query_result(result: Any) -> dict[str, Any]:
    _expect(result, dict, "query result")
    records = _expect(result.get("records"), list, "query result")
    _expect(result.get("totalSize"), int, "query result")
    if not all(isinstance(record, dict) for record in records):
        raise CrmUnavailable("Salesforce answered an unexpected query result")
    return dict(result)


def _collection(answer: Any, sent: int) -> list[dict[str, Any]]:
    """An sObject Collections answer: one result object per record sent, in order."""
    items: list[dict[str, Any]] = _expect(answer, list, "collection answer")
    if len(items) != sent or not all(isinstance(item, dict) for item in items):
        raise CrmUnavailable(
            "Salesforce answered a collection call with the wrong results; the outcome of "
            "these records is unknown, read them before sending them again"
        )
    return items


def _chunks(items: list[Any], size: int) -> list[list[Any]]:
    return [items[start : start + size] for start in range(0, len(items), size)]
