"""Salesforce (and SalesforceSandbox, which only logs in elsewhere): the code its descriptor
cannot say. Identity comes from the OAuth userinfo endpoint; the `user` authorization logs in with
the Partner API's SOAP login() call, the way Salesforce's own tools do."""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from collections.abc import Mapping, Sequence
from dataclasses import replace
from html import escape
from typing import Any

from yarl import URL

from crmgate.connectors import batch, shapes, soql
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
from crmgate.connectors.errors import (
    ApiNotEnabled,
    CredentialsRejected,
    CrmUnavailable,
    EntityNotFound,
)
from crmgate.connectors.paging import Pager
from crmgate.connectors.shapes import obj
from crmgate.model.mapping import EntityMap
from crmgate.model.objects import ObjectInfo
from crmgate.outbound import OutboundRefused
from crmgate.query import Condition, SortKey

# ---- records ---------------------------------------------------------------------------------

_RECORD_ID = re.compile(r"^[0-9A-Za-z]{15}(?:[0-9A-Za-z]{3})?$")


def _well_formed(record_id: str) -> bool:
    return _RECORD_ID.match(record_id) is not None


_OBJECT_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_]{0,79}$")
MAX_OFFSET = 2000  # SOQL's OFFSET limit; deeper pages walk query locators
MAX_COLD_OFFSET = 100_000  # a first jump deeper than this would cost more than 50 calls
MAX_CURSORS = 64  # query locator walks kept, each holding at most one batch


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

    def _sobject(self, access: Access, name: str) -> URL:
        if not _OBJECT_NAME.match(name):
            raise EntityNotFound(f"Salesforce has no object {name[:80]!r}")
        return self._base(access) / "sobjects" / name

    def _record_url(self, access: Access, name: str, record_id: str) -> URL:
        if not _well_formed(record_id):
            raise EntityNotFound(f"{name} {record_id[:40]!r} not found")
        return self._sobject(access, name) / record_id

    # ---- catalogue --------------------------------------------------------------------------

    async def objects(self, access: Access) -> list[ObjectInfo]:
        answer = await self.json_call(access, "GET", self._base(access) / "sobjects")
        return self.read_objects(answer, "Id")

    async def describe(self, access: Access, name: str) -> ObjectInfo:
        """The describe answer is the object's summary and its fields, in one."""
        answer = await self.json_call(access, "GET", self._sobject(access, name) / "describe")
        fields = self.read_fields(answer)
        found = self.read_objects({"sobjects": [obj(answer, "Salesforce", "a describe")]}, "Id")
        if not found:
            raise CrmUnavailable("Salesforce answered a describe without the object's name")
        return replace(found[0], fields=tuple(fields))

    # ---- reading ----------------------------------------------------------------------------

    async def query(self, access: Access, statement: str) -> dict[str, Any]:
        url = (self._base(access) / "query").with_query(q=statement)
        result = obj(await self.json_call(access, "GET", url), "Salesforce", "a query result")
        shapes.rows(result, "records", "Salesforce", "a query result")
        shapes.integer(result.get("totalSize"), "Salesforce", "a query result")
        return result

    async def _rows(self, access: Access, statement: str) -> list[dict[str, Any]]:
        rows: list[dict[str, Any]] = (await self.query(access, statement))["records"]
        return rows

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
        """A page within OFFSET's limit is one query. Past it: walk Salesforce's query locator,
        2,000 records a call. Where the walk stopped is kept (a cursor per query and credential),
        so reading the next page continues it: pages read in order cost one call per 2,000
        records. A first jump deeper than MAX_COLD_OFFSET is refused rather than paid for with
        dozens of calls."""
        offset = (page - 1) * page_size
        if offset <= MAX_OFFSET:
            statement = soql.select(entity, columns, conditions, sort, page_size, offset)
            return await self._rows(access, statement)
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
        return await self._rows(access, soql.aggregate(entity, functions, group_by, conditions))

    async def get(
        self, access: Access, entity: EntityMap, record_id: str, columns: Sequence[str]
    ) -> dict[str, Any]:
        url = self._record_url(access, entity.object, record_id)
        answer = await self.json_call(access, "GET", url.with_query(fields=",".join(columns)))
        record = obj(answer, "Salesforce", "a record")
        shapes.text(record.get(entity.id), "Salesforce", "a record")
        return record

    async def get_many(
        self, access: Access, entity: EntityMap, ids: Sequence[str], columns: Sequence[str]
    ) -> list[dict[str, Any]]:
        rows: list[dict[str, Any]] = []
        valid = list(dict.fromkeys(filter(_well_formed, ids)))
        size = self.platform.bulk.size
        for start in range(0, len(valid), size):
            statement = soql.ids_matching(entity, valid[start : start + size], columns)
            rows += await self._rows(access, statement)
        return rows

    async def matching(self, access: Access, entity: EntityMap, ids: Sequence[str]) -> set[str]:
        rows = await self.get_many(access, entity, ids, [entity.id])
        found = {str(row.get(entity.id)) for row in rows}
        # Salesforce answers 18-character ids; a client may have sent the 15-character form
        valid = [record_id for record_id in ids if _well_formed(record_id)]
        return {i for i in valid if i in found or any(f[:15] == i for f in found)}

    # ---- writing ----------------------------------------------------------------------------

    async def create(self, access: Access, name: str, values: Mapping[str, Any]) -> str:
        created = await self.json_call(access, "POST", self._sobject(access, name), body=values)
        answer = obj(created, "Salesforce", "a create answer")
        return shapes.text(answer.get("id"), "Salesforce", "a create answer")

    async def update(
        self, access: Access, name: str, record_id: str, values: Mapping[str, Any]
    ) -> None:
        await self.json_call(
            access, "PATCH", self._record_url(access, name, record_id), body=values
        )

    async def delete(self, access: Access, name: str, record_id: str) -> None:
        await self.json_call(access, "DELETE", self._record_url(access, name, record_id))

    # ---- bulk: sObject Collections, 200 records a call, each item reported -------------------

    async def bulk_create(
        self, access: Access, name: str, items: Sequence[Mapping[str, Any]]
    ) -> list[ItemResult]:
        async def send(chunk: list[Mapping[str, Any]]) -> list[ItemResult]:
            records = [{"attributes": {"type": name}, **values} for values in chunk]
            body = {"allOrNone": False, "records": records}
            return await batch.write(
                self, access, "POST", self._collections(access), body, [None] * len(chunk)
            )

        return await chunked(list(items), self.platform.bulk.size, send, lambda item: None)

    async def bulk_update(
        self, access: Access, name: str, items: Sequence[tuple[str, Mapping[str, Any]]]
    ) -> list[ItemResult]:
        async def send(valid: list[tuple[str, Mapping[str, Any]]]) -> list[ItemResult]:
            records = [{"attributes": {"type": name}, "id": i, **v} for i, v in valid]
            body = {"allOrNone": False, "records": records}
            ids = [i for i, _ in valid]
            return await batch.write(self, access, "PATCH", self._collections(access), body, ids)

        return await chunked_by_id(
            list(items), self.platform.bulk.size, send, lambda item: item[0], _well_formed, name
        )

    async def bulk_delete(self, access: Access, name: str, ids: Sequence[str]) -> list[ItemResult]:
        async def send(valid: list[str]) -> list[ItemResult]:
            url = self._collections(access).with_query(ids=",".join(valid), allOrNone="false")
            return await batch.write(self, access, "DELETE", url, None, valid)

        return await chunked_by_id(
            list(ids), self.platform.bulk.size, send, lambda item: item, _well_formed, name
        )

    def _collections(self, access: Access) -> URL:
        return self._base(access) / "composite" / "sobjects"

    # ---- passthrough ------------------------------------------------------------------------

    def passthrough_url(self, access: Access, path: str) -> URL:
        """``path`` relative to the REST API of the pinned version (``sobjects/Contact``,
        ``query?q=...``), or absolute under ``/services/`` (Apex REST, other versions). Always on
        the application's own instance, and sent exactly as given: a path that could be
        normalised to somewhere else (dot segments, encoded dots, slashes or backslashes) is
        refused rather than rewritten."""
        return passthrough_on(access, path, f"/services/data/v{self._version}", "/services/")


_LOGIN = """<?xml version="1.0" encoding="utf-8"?>
<env:Envelope xmlns:env="http://schemas.xmlsoap.org/soap/envelope/"
 xmlns:urn="urn:partner.soap.sforce.com"><env:Body><urn:login>
<urn:username>{username}</urn:username><urn:password>{password}</urn:password>
</urn:login></env:Body></env:Envelope>"""


def _xml_values(body: bytes) -> dict[str, str]:
    """Local element name -> text of a SOAP answer (Salesforce's namespaces vary by API)."""
    try:
        root = ET.fromstring(body)  # noqa: S314 - bounded size; expat refuses entity expansion
    except ET.ParseError:
        return {}
    return {element.tag.rsplit("}", 1)[-1]: (element.text or "") for element in root.iter()}


class SalesforceConnector(Connector):
    name = "salesforce"
    records_type = SalesforceRecords

    def access(
        self, authorization: str, credential: Mapping[str, str], derived: Mapping[str, str]
    ) -> Access:
        """The `user` authorization calls with the session its login got (derived)."""
        if authorization == "user":
            return Access(self.instance_url(derived["instance_url"]), derived["session_id"])
        return super().access(authorization, credential, derived)

    async def verify(self, authorization: str, credential: Mapping[str, str]) -> Verified:
        if authorization == "user":
            return await self._login(credential)
        return await super().verify(authorization, credential)

    async def _login(self, credential: Mapping[str, str]) -> Verified:
        url = self.login_at(f"/services/Soap/u/{self.platform.api_version or '60.0'}")
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
            contract = self.platform.errors.codes.get(code)  # the login faults are there too
            if contract == "UNAUTHORIZED":
                raise CredentialsRejected(f"Salesforce refused the login: {reason}")
            if contract == "API_NOT_ENABLED":
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
