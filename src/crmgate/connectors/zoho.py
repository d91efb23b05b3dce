"""Zoho CRM (REST API v8): the code its descriptor cannot say.

Every org lives in one data centre; its API host is the token answer's ``api_domain`` (the
credential's instance_url), and its tokens are refreshed by the accounts server of the same data
centre, chosen from the descriptor's ``regions`` (never from a host an answer names; an OAuth
callback's ``accounts-server`` only where it is one of them). Calls authenticate
with ``Authorization: Zoho-oauthtoken <token>``.

Records are flat but for lookups ``{id, name}``, read as their id; a multi-module lookup
(``What_Id`` with ``$se_module``, a note's ``Parent_Id`` with its module) reads as one column
per module (``What_Id.Accounts``), and writes go back to Zoho's shape.

Lists, counts, filters and sorts: COQL (``POST /crm/v8/coql``, criteria grouped in pairs, values
quoted with doubled quotes, ``limit``/``offset`` up to 100,000 records). An unfiltered list
in id order walks the records API instead (``GET /crm/v8/{Module}``, 200 records a call,
``page_token`` past 2,000 records). Cost in Zoho calls: reading pages in order costs one call
per 200 records (a page of 100 costs a call every other page); a direct jump to a page costs one
call (the records API's ``page`` within the first 2,000 records, COQL up to 100,000); a filtered
or sorted page is one COQL call; deeper than 100,000 records a page is served only by a walk
read in order (else 400). Bulk: 100 records a call with per-record results.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping, Sequence
from dataclasses import replace
from datetime import UTC, date, datetime
from typing import Any

from cachetools import LRUCache
from yarl import URL

from crmgate.connectors import batch, local, shapes
from crmgate.connectors.base import (
    Access,
    Connector,
    CursorWalks,
    Fetch,
    Identity,
    ItemResult,
    Records,
    Verified,
    chunked,
    chunked_by_id,
    passthrough_on,
)
from crmgate.connectors.catalogue import Platform, url_host
from crmgate.connectors.dialect import Scalar, Target, TextDialect, pattern
from crmgate.connectors.errors import (
    CredentialsRejected,
    CrmUnavailable,
    EntityNotFound,
    NotAllowed,
    NotValid,
    RateLimited,
    Refusal,
    SessionExpired,
)
from crmgate.connectors.jsonpath import select
from crmgate.connectors.paging import Pager
from crmgate.model.mapping import EntityMap
from crmgate.model.objects import FieldInfo, ObjectInfo
from crmgate.outbound import Outbound
from crmgate.query import Condition, QueryError, SortKey, Typed

log = logging.getLogger("crmgate.connectors.zoho")


PAGE_LIMIT = 2000  # records the records API reaches with `page`
COQL_REACH = 100_000  # offset + limit of a COQL query
COQL_IN = 50  # values of a COQL `in`
FIELD_LIMIT = 50  # fields of a COQL select, and of the records API's `fields`
REFRESH_WINDOW = 600  # seconds in which Zoho gives at most 10 access tokens per refresh token
_RECORD_ID = re.compile(r"^[0-9]{1,20}$")


def _well_formed(record_id: str) -> bool:
    return _RECORD_ID.match(record_id) is not None


_MODULE = re.compile(r"^[A-Za-z][A-Za-z0-9_]{0,99}$")
_COLUMN = re.compile(r"^\$?[A-Za-z][A-Za-z0-9_]{0,99}$")
_LOOKUPS = ("lookup", "ownerlookup", "userlookup")
# Multi-module lookups: the column, and where a record says which module it points to.
POLYMORPHIC = ("What_Id", "Parent_Id")
PARENT_MODULES = (
    "Accounts",
    "Contacts",
    "Deals",
    "Leads",
    "Campaigns",
    "Cases",
    "Quotes",
    "Sales_Orders",
    "Purchase_Orders",
    "Invoices",
    "Vendors",
    "Products",
    "Solutions",
)


class ZohoConnector(Connector):
    name = "zoho"

    def __init__(self, platform: Platform, outbound: Outbound) -> None:
        super().__init__(platform, outbound)
        self.records: ZohoRecords = ZohoRecords(self)

    def access(
        self, authorization: str, credential: Mapping[str, str], derived: Mapping[str, str]
    ) -> Access:
        return Access(self.instance_url(credential["instance_url"]), credential["access_token"])

    async def verify(self, authorization: str, credential: Mapping[str, str]) -> Verified:
        """The token works if Zoho shows its user (users?type=CurrentUser) and org."""
        access = self.session(authorization, credential, {})
        try:
            users = await self.records.json_call(
                access, "GET", (self.records.api(access) / "users").with_query(type="CurrentUser")
            )
            org = await self.records.json_call(access, "GET", self.records.api(access) / "org")
        except (SessionExpired, NotAllowed) as refused:
            raise CredentialsRejected(f"Zoho refused the token ({refused.message})") from None
        try:
            user = users["users"][0]
            company = org["org"][0]
            return Verified(
                Identity(
                    user_id=str(user["id"]),
                    name=str(user.get("full_name") or ""),
                    email=str(user.get("email") or ""),
                    username=str(user.get("email") or ""),
                    company_id=str(company.get("zgid") or company["id"]),
                    company_name=str(company.get("company_name") or ""),
                )
            )
        except (KeyError, IndexError, TypeError):
            raise CrmUnavailable("Zoho answered an unexpected user or org") from None

    def accounts_server(self, instance_url: str) -> str | None:
        """The accounts server of the data centre whose API host ``instance_url`` is (None: not
        a Zoho data centre, e.g. a simulator: the descriptor's token URL applies)."""
        region = self.platform.region_of(instance_url)
        return region.login_url if region else None

    def callback_accounts_server(self, callback: Mapping[str, str]) -> str | None:
        """The accounts server an OAuth callback names (``accounts-server``, else
        ``location``), if it is one of the descriptor's data centres (and of that location);
        None for anything else, however it is spelled."""
        location = (callback.get("location") or "").lower()
        named = callback.get("accounts-server")
        if named is None and not location:
            return None
        region = self.platform.region_at(named if named is not None else "", location)
        return region.login_url if region else None

    def _at(self, server: str | None, path: str) -> URL | None:
        if server is None:
            return None
        return self.outbound.check_url(f"{server}/oauth/v2/{path}", [url_host(server)])

    def _token_url(self, credential: Mapping[str, str], path: str) -> URL | None:
        return self._at(self.accounts_server(credential.get("instance_url", "")), path)

    def code_token_url(self, callback: Mapping[str, str]) -> URL | None:
        """The code is exchanged at the accounts server of the user's data centre, which the
        callback names (``accounts-server``, ``location``): only a known one (the client
        secret goes there); anything else goes to the descriptor's token URL."""
        return self._at(self.callback_accounts_server(callback), "token")

    def refresh_url(self, credential: Mapping[str, str]) -> URL | None:
        """At the accounts server of the credential's data centre."""
        return self._token_url(credential, "token")

    def token_error(self, answer: Mapping[str, Any], status: int) -> tuple[str, str]:
        """Zoho answers ``{"error": "invalid_code"}`` (often with HTTP 200) for a refresh token
        it no longer knows, ``invalid_client``/``invalid_client_secret`` for the client, and
        ``Access Denied`` (HTTP 200 or 400) when it throttles: RateLimited, not a failure."""
        code = str(answer.get("error") or f"HTTP {status}")
        said = f"{code} {answer.get('error_description') or ''}".lower()
        if "access denied" in said or "too many requests" in said:
            # at most 10 access tokens per refresh token in 10 minutes (Zoho's token validity)
            raise RateLimited(
                "Zoho CRM: the accounts server refuses more tokens for now (Access Denied: "
                "too many requests); try again in a few minutes",
                retry_after=REFRESH_WINDOW,
            )
        return super().token_error(answer, status)

    def revocation_url(self, credential: Mapping[str, str]) -> URL | None:
        """At the accounts server of the credential's data centre, else the descriptor's."""
        url = self._token_url(credential, "token/revoke")
        return url if url is not None else super().revocation_url(credential)


# ---- records ---------------------------------------------------------------------------------


def _flat(record: Any, module: str) -> dict[str, Any]:
    """A Zoho record as one flat native record for the entity maps."""
    if not isinstance(record, dict) or not isinstance(record.get("id"), (str, int)):
        raise CrmUnavailable("Zoho CRM answered a record of an unexpected shape")
    flat: dict[str, Any] = {}
    for name, value in record.items():
        if name == "role" and module == "users" and isinstance(value, dict):
            flat[name] = value.get("name")
        elif isinstance(value, dict) and "id" in value:
            flat[name] = str(value["id"]) if value["id"] is not None else None
        else:
            flat[name] = value
    flat["id"] = str(record["id"])
    for column in POLYMORPHIC:
        if column not in record:
            continue
        value = record[column]
        if column == "What_Id":
            target = record.get("$se_module")
        else:
            try:
                target = next(iter(select(value, "module.api_name", strict=True)), None)
            except ValueError:
                raise CrmUnavailable("Zoho CRM answered a lookup of an unexpected shape") from None
        for parent in PARENT_MODULES:
            flat[f"{column}.{parent}"] = None
        if isinstance(value, dict) and value.get("id") and isinstance(target, str):
            flat[f"{column}.{target}"] = str(value["id"])
    return flat


def _data(answer: Any) -> list[dict[str, Any]]:
    """The records of a records API answer (None: 204, none)."""
    return shapes.rows(answer, "data", "Zoho CRM", "a list")


def _chunks(fields: list[str]) -> list[list[str]]:
    """Fields FIELD_LIMIT at a time (at least one chunk): what one COQL select or one records
    API call takes. The chunks of a record are merged before it is made flat (``_read``), so a
    multi-module lookup and its ``$se_module`` may be read apart."""
    return [fields[n : n + FIELD_LIMIT] for n in range(0, len(fields), FIELD_LIMIT)] or [[]]


def _zoho_datetime(value: str) -> str:
    """A date-time as Zoho takes it: ``yyyy-MM-ddTHH:mm:ss±HH:mm`` (no fraction, no Z)."""
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return value  # Zoho refuses it: 422 with the field
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return parsed.replace(microsecond=0).isoformat()


def _queryable(column: str) -> str:
    if not _COLUMN.match(column):
        raise QueryError("filter", f"{column[:60]!r} is not a field Zoho can query")
    return column


class Coql(TextDialect):
    """COQL's where and order by for one module; ``types`` are its fields' Zoho data types (a
    lookup takes a record id). Criteria are grouped in pairs, as COQL wants more than two."""

    crm = "Zoho"
    max_terms = 25
    like_refuses = "%"
    like_refusal = "Zoho's {op} cannot search for %"
    id_pattern = _RECORD_ID
    id_refusal = "{field} takes a Zoho record id"
    ascending, descending, then_by_id = " asc", " desc", " asc"

    def __init__(self, entity: EntityMap, types: Mapping[str, str]) -> None:
        super().__init__(entity)
        self.types = types

    def name(self, field: str, column: str) -> str:
        base, dot, _ = column.partition(".")
        return base if dot and base in POLYMORPHIC else _queryable(column)

    def is_id(self, target: Target) -> bool:
        return (
            target.column == self.entity.id
            or target.column in self.entity.relations.values()
            or self.types.get(target.name) in _LOOKUPS
        )

    def quote(self, text: str) -> str:
        """A quote is doubled, as Zoho documents (Kaizen #171, "FAQs on COQL API", Q3). A
        backslash is refused: Zoho does not document what it does inside a literal, so no
        reading of it may end the literal early."""
        if "\\" in text:
            raise QueryError("filter", "Zoho's queries cannot take a backslash in a text value")
        return super().quote(text)

    def literal(self, target: Target, typed: Typed) -> Scalar:
        if isinstance(typed, str) and any(ord(c) < 32 for c in typed):
            raise QueryError("filter", f"{target.field}: no control characters")
        return super().literal(target, typed)

    def instant(self, value: datetime) -> Scalar:
        return self.quote(_zoho_datetime(value.isoformat()))

    def day(self, value: date) -> Scalar:
        return self.quote(value.isoformat())

    def null(self, target: Target, op: str) -> str:
        """``What_Id.Accounts ne null``: linked to an account, which ``$se_module`` says (What_Id
        alone may point to any module). A note's Parent_Id keeps its module where COQL cannot
        compare it: refused."""
        base, dot, module = target.column.partition(".")
        if not (dot and base in POLYMORPHIC):
            return f"{target.name} is {'not ' if op == 'ne' else ''}null"
        if base != "What_Id" or not _MODULE.match(module):
            message = f"{target.field}: Zoho cannot query this for null; compare an id"
            raise QueryError("filter", message)
        if op == "ne":
            return f"(What_Id is not null and $se_module = {self.quote(module)})"
        return f"(What_Id is null or $se_module != {self.quote(module)})"

    def like(self, target: Target, op: str, text: str) -> str:
        return f"{target.name} like {self.quote(pattern(op, text))}"

    def where(self, conditions: Sequence[Condition]) -> str:
        """((A and B) and C); every record (id is not null) without a condition."""
        expression, *more = self.terms(conditions) or ["id is not null"]
        for part in more:
            expression = f"({expression} and {part})"
        return expression

    def sort_name(self, field: str, column: str) -> str:
        base, dot, _ = column.partition(".")
        if dot and base in POLYMORPHIC:
            raise QueryError("sort", f"Zoho cannot sort by {field}")
        return _queryable(column)


def _field_infos(spec: Mapping[str, Any], info: FieldInfo) -> list[FieldInfo]:
    """A field as the descriptor reads it, and, for a multi-module lookup, one column per module
    it can point to (``What_Id.Accounts``). A field Zoho does not say is sortable is, unless
    long text or a lookup."""
    unsorted = info.native_type in ("textarea", *_LOOKUPS)
    info = replace(info, sortable=bool(spec.get("sortable", not unsorted)))
    if info.name not in POLYMORPHIC:
        return [info]
    try:
        modules = [str(m) for m in select(spec, "multi_module_lookup.modules[*].api_name", True)]
    except ValueError:
        raise CrmUnavailable(
            "Zoho CRM answered a multi-module lookup of an unexpected shape"
        ) from None
    return [info] + [
        FieldInfo(
            name=f"{info.name}.{parent}",
            label=f"{info.label} ({parent})",
            kind="string",
            native_type="lookup",
            createable=info.createable,
            updateable=info.updateable,
            sortable=False,
            reference_to=(parent,),
        )
        for parent in dict.fromkeys([*modules, *PARENT_MODULES])
    ]


class ZohoRecords(Records):
    def __init__(self, connector: Connector) -> None:
        super().__init__(connector)
        self.walks = CursorWalks()
        # (credentials, module) -> field -> data type, from describes: which fields are lookups
        # and date-times when writing (a few hundred entries, least recently used go first)
        self._types: LRUCache[tuple[str, ...], dict[str, str]] = LRUCache(512)

    def api(self, access: Access) -> URL:
        return access.instance_url / "crm" / (self.platform.api_version or "v8")

    def _module(self, access: Access, name: str) -> URL:
        if not _MODULE.match(name):
            raise EntityNotFound(f"Zoho CRM has no module {name[:100]!r}")
        return self.api(access) / name

    def _record(self, access: Access, name: str, record_id: str) -> URL:
        if not _RECORD_ID.match(record_id):
            raise EntityNotFound(f"{name} {record_id[:40]!r} not found")
        return self._module(access, name) / record_id

    def refine_error(self, refusal: Refusal) -> Refusal:
        details = refusal.entry.get("details")
        named = details.get("api_name") if isinstance(details, dict) else None
        # INVALID_DATA about the record's id: no such record (404), not a bad field.
        if refusal.code == "INVALID_DATA" and isinstance(details, dict):
            if named == "id" or ("id" in details and not named):
                return replace(refusal, contract="ENTITY_NOT_FOUND", fields=())
        # Too many concurrent calls (no reset header): free again in seconds.
        if refusal.retry_after is None and "concurren" in refusal.message.lower():
            return replace(refusal, retry_after=5)
        return refusal

    # ---- the catalogue ----------------------------------------------------------------------

    async def objects(self, access: Access) -> list[ObjectInfo]:
        answer = await self.json_call(access, "GET", self.api(access) / "settings/modules")
        found = self.read_objects(answer, "id")
        return [info for info in found if _MODULE.match(info.name)]

    async def describe(self, access: Access, name: str) -> ObjectInfo:
        if name == "users":  # Zoho does not describe users: the descriptor does
            return self.platform.objects["users"].info("users", "id")
        if not _MODULE.match(name):
            raise EntityNotFound(f"Zoho CRM has no module {name[:100]!r}")
        answer = await self.json_call(
            access, "GET", (self.api(access) / "settings/fields").with_query(module=name)
        )
        fields = self.read_fields(answer, _field_infos)
        self._remember(access, name, {f.name: f.native_type for f in fields})
        # The fields API does not say what this user's profile allows with the module; Zoho
        # refuses what it does not (403 NOT_ALLOWED).
        return ObjectInfo(
            name, name, name, False, True, True, True, True, tuple(fields), id_field="id"
        )

    def _remember(self, access: Access, module: str, types: dict[str, str]) -> None:
        self._types[CursorWalks.key(access, module)] = types

    def _types_of(self, access: Access, module: str) -> dict[str, str]:
        known = self.platform.objects.get(module)  # a standard module's, before any describe
        return self._types.get(CursorWalks.key(access, module)) or (known.types if known else {})

    # ---- COQL -------------------------------------------------------------------------------

    def _select_columns(self, columns: Sequence[str]) -> list[str]:
        """Native columns as Zoho field names: a multi-module lookup's per-module columns are
        its one field (and What_Id's $se_module)."""
        names: list[str] = []
        for column in columns:
            base, dot, _ = column.partition(".")
            if dot and base in POLYMORPHIC:
                names += [base, "$se_module"] if base == "What_Id" else [base]
            else:
                names.append(_queryable(column))
        return list(dict.fromkeys(names))

    def _where(self, access: Access, entity: EntityMap, conditions: Sequence[Condition]) -> str:
        return Coql(entity, self._types_of(access, entity.object)).where(conditions)

    def _order(self, entity: EntityMap, sort: Sequence[SortKey]) -> str:
        return Coql(entity, {}).order(sort)

    async def _coql(self, access: Access, statement: str) -> list[dict[str, Any]]:
        answer = await self.json_call(
            access, "POST", self.api(access) / "coql", body={"select_query": statement}
        )
        if answer is None:
            return []
        rows = answer.get("data") if isinstance(answer, dict) else None
        if not isinstance(rows, list) or not all(isinstance(r, dict) for r in rows):
            raise CrmUnavailable("Zoho CRM answered an unexpected query result")
        return rows

    # ---- reading ----------------------------------------------------------------------------

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
        if entity.object == "users":
            if conditions or (sort and [(k.field, k.descending) for k in sort] != [("id", False)]):
                rows = local.select(await self._all_users(access), entity, conditions, sort)
                return local.page_of(rows, page, page_size)
            return await self._users_page(access, page, page_size)
        offset = (page - 1) * page_size
        by_id = not sort or (len(sort) == 1 and sort[0].field == "id" and not sort[0].descending)
        fields = self._select_columns(columns)
        first, *more = _chunks(fields)
        if by_id and not conditions and not entity.match:
            key = CursorWalks.key(access, entity.object, ",".join(fields))
            ahead = 2 * self.platform.paging.batch  # farther than that, one direct call is cheaper
            if offset == 0 or self.walks.continues(key, offset, ahead):
                return await self.walks.page(
                    key, offset, page_size, self._walk(access, entity, fields), 0, ahead
                )
            if offset + page_size <= PAGE_LIMIT:
                answer = await self.json_call(
                    access,
                    "GET",
                    self._module(access, entity.object).with_query(
                        fields=",".join(first),
                        page=str(page),
                        per_page=str(page_size),
                        sort_by="id",
                        sort_order="asc",
                    ),
                )
                return await self._read(access, entity.object, _data(answer), more)
        if offset + page_size > COQL_REACH:
            raise QueryError(
                "page",
                f"Zoho's queries reach {COQL_REACH:,} records; read an unfiltered list page "
                "by page from the first, or narrow it with a filter",
            )
        # every part checked or escaped: names by pattern, values quoted (see Coql)
        where, order = self._where(access, entity, conditions), self._order(entity, sort)
        selected = ", ".join(first)
        statement = f"select {selected} from {entity.object} where {where} order by {order}"  # noqa: S608
        statement += f" limit {page_size} offset {offset}"
        return await self._read(access, entity.object, await self._coql(access, statement), more)

    async def _read(
        self, access: Access, module: str, rows: list[dict[str, Any]], more: list[list[str]]
    ) -> list[dict[str, Any]]:
        """``rows`` read with the first FIELD_LIMIT fields, completed with the ``more`` fields
        (one COQL query per FIELD_LIMIT fields and COQL_IN records, merged by id), flat."""
        by_id = {str(row.get("id")): row for row in rows if isinstance(row, dict)}
        ids = [i for i in by_id if _RECORD_ID.match(i)]
        for fields in more:
            selected = ", ".join(fields)
            for start in range(0, len(ids), COQL_IN):
                listed = ", ".join(ids[start : start + COQL_IN])  # record ids: digits only
                statement = f"select {selected} from {module} where id in ({listed})"  # noqa: S608
                for extra in await self._coql(access, f"{statement} limit {COQL_IN}"):
                    row = by_id.get(str(extra.get("id")))
                    if row is not None:
                        row.update({k: v for k, v in extra.items() if k != "id"})
        return [_flat(row, module) for row in rows]

    def _walk(self, access: Access, entity: EntityMap, fields: list[str]) -> Fetch:
        first, *rest = _chunks(fields)
        query = {"fields": ",".join(first), "sort_by": "id", "sort_order": "asc"}
        url = self._module(access, entity.object).with_query(query)

        async def read(batch: list[Any]) -> list[dict[str, Any]]:
            return await self._read(access, entity.object, batch, rest)

        return Pager(self, self.platform.paging, amend=read).fetch(access, url)

    async def _all_users(self, access: Access) -> list[dict[str, Any]]:
        """Every user (the descriptor's paging of users): Zoho's users API neither filters nor
        sorts, so a filtered or sorted list of users is made here (connectors/local.py)."""
        pager = Pager(self, self.platform.paging.of("users"), lambda user: _flat(user, "users"))
        url = (self.api(access) / "users").with_query(type="AllUsers")
        return await pager.whole(access, url, what="users")

    async def _users_page(self, access: Access, page: int, page_size: int) -> list[dict[str, Any]]:
        url = (self.api(access) / "users").with_query(
            type="AllUsers", page=str(page), per_page=str(page_size)
        )
        answer = await self.json_call(access, "GET", url)
        if answer is None:
            return []
        users = answer.get("users") if isinstance(answer, dict) else None
        if not isinstance(users, list):
            raise CrmUnavailable("Zoho CRM answered an unexpected user list")
        return [_flat(user, "users") for user in users]

    async def count(
        self, access: Access, entity: EntityMap, conditions: Sequence[Condition] = ()
    ) -> int:
        if entity.object == "users":
            if conditions:
                return len(local.select(await self._all_users(access), entity, conditions))
            url = (self.api(access) / "users/actions/count").with_query(type="AllUsers")
            answer = await self.json_call(access, "GET", url)
            total = answer.get("count") if isinstance(answer, dict) else None
        else:
            where = self._where(access, entity, conditions)
            statement = f"select COUNT(id) from {entity.object} where {where}"  # noqa: S608
            rows = await self._coql(access, statement)
            total = rows[0].get("COUNT(id)") if rows else 0
        if isinstance(total, bool) or not isinstance(total, int):
            raise CrmUnavailable("Zoho CRM answered a count that is not a number")
        return total

    async def get(
        self, access: Access, entity: EntityMap, record_id: str, columns: Sequence[str]
    ) -> dict[str, Any]:
        if entity.object == "users":
            if not _RECORD_ID.match(record_id):
                raise EntityNotFound(f"user {record_id[:40]!r} not found")
            answer = await self.json_call(access, "GET", self.api(access) / "users" / record_id)
            users = shapes.rows(answer, "users", "Zoho CRM", "a user")
            if not users:
                raise EntityNotFound(f"user {record_id} not found")
            return _flat(users[0], "users")
        first, *more = _chunks(self._select_columns(columns))
        url = self._record(access, entity.object, record_id).with_query(fields=",".join(first))
        found = _data(await self.json_call(access, "GET", url))
        rows = await self._read(access, entity.object, found, more)
        if not rows:
            raise EntityNotFound(f"{entity.object} {record_id} not found")
        return rows[0]

    async def get_many(
        self, access: Access, entity: EntityMap, ids: Sequence[str], columns: Sequence[str]
    ) -> list[dict[str, Any]]:
        """The records of ``ids``: one COQL query per 50 (``id in (...)``)."""
        if entity.object == "users":
            return await super().get_many(access, entity, ids, columns)
        valid = list(dict.fromkeys(i for i in ids if _RECORD_ID.match(i)))
        first, *more = _chunks(self._select_columns(columns))
        fields = ", ".join(first)
        rows: list[dict[str, Any]] = []
        for start in range(0, len(valid), COQL_IN):
            chunk = valid[start : start + COQL_IN]
            listed = ", ".join(chunk)  # record ids: digits only
            statement = f"select {fields} from {entity.object} where id in ({listed})"  # noqa: S608
            statement += f" limit {COQL_IN}"
            rows += await self._read(
                access, entity.object, await self._coql(access, statement), more
            )
        return rows

    # ---- writing ----------------------------------------------------------------------------

    def _native(self, access: Access, module: str, values: Mapping[str, Any]) -> dict[str, Any]:
        """Flat native values in Zoho's shapes: lookups as ``{"id"}``, a multi-module lookup
        with its module, date-times without fractions."""
        types = self._types_of(access, module)
        out: dict[str, Any] = {}
        linked: dict[str, list[tuple[str, Any]]] = {}
        for name, value in values.items():
            base, dot, target = name.partition(".")
            if dot and base in POLYMORPHIC:
                linked.setdefault(base, []).append((target, value))
            elif types.get(name) in _LOOKUPS:
                out[name] = {"id": str(value)} if value not in (None, "") else None
            elif types.get(name) == "datetime" and isinstance(value, str):
                out[name] = _zoho_datetime(value)
            else:
                out[name] = value
        for base, links in linked.items():
            chosen = [(target, value) for target, value in links if value not in (None, "")]
            if len(chosen) > 1:
                raise NotValid(f"{base}: one related record only", (base,))
            if not chosen:
                out[base] = None
                if base == "What_Id":
                    out["$se_module"] = None
            elif base == "What_Id":
                out[base] = {"id": str(chosen[0][1])}
                out["$se_module"] = chosen[0][0]
            else:
                out[base] = {"module": {"api_name": chosen[0][0]}, "id": str(chosen[0][1])}
        return out

    async def _write(
        self, access: Access, method: str, url: URL, records: list[dict[str, Any]]
    ) -> list[ItemResult]:
        ids = [r.get("id") if isinstance(r.get("id"), str) else None for r in records]
        return await batch.write(self, access, method, url, {"data": records}, ids)

    async def _one(self, access: Access, method: str, url: URL, values: dict[str, Any]) -> str:
        """One record written (or, without ``values``, deleted): its id, or its refusal."""
        if values:
            (result,) = await self._write(access, method, url, [values])
        else:
            (result,) = await batch.write(self, access, method, url, None, [url.name])
        if result.error is not None:
            raise result.error
        return result.id or ""

    async def create(self, access: Access, name: str, values: Mapping[str, Any]) -> str:
        url = self._module(access, name)
        made = await self._one(access, "POST", url, self._native(access, name, values))
        if not made:
            raise CrmUnavailable("Zoho CRM answered a create without the record's id")
        return made

    async def update(
        self, access: Access, name: str, record_id: str, values: Mapping[str, Any]
    ) -> None:
        url = self._record(access, name, record_id)
        await self._one(access, "PUT", url, self._native(access, name, values))

    async def delete(self, access: Access, name: str, record_id: str) -> None:
        # INVALID_DATA about the id is 404 (refine_error); any other refusal stays what it is
        await self._one(access, "DELETE", self._record(access, name, record_id), {})

    async def bulk_create(
        self, access: Access, name: str, items: Sequence[Mapping[str, Any]]
    ) -> list[ItemResult]:
        url = self._module(access, name)

        async def send(chunk: list[Mapping[str, Any]]) -> list[ItemResult]:
            return await self._write(
                access, "POST", url, [self._native(access, name, v) for v in chunk]
            )

        return await chunked(list(items), self.platform.bulk.size, send, lambda item: None)

    async def bulk_update(
        self, access: Access, name: str, items: Sequence[tuple[str, Mapping[str, Any]]]
    ) -> list[ItemResult]:
        url = self._module(access, name)

        async def send(valid: list[tuple[str, Mapping[str, Any]]]) -> list[ItemResult]:
            return await self._write(
                access, "PUT", url, [{**self._native(access, name, v), "id": i} for i, v in valid]
            )

        size = self.platform.bulk.size
        return await chunked_by_id(list(items), size, send, lambda i: i[0], _well_formed, name)

    async def bulk_delete(self, access: Access, name: str, ids: Sequence[str]) -> list[ItemResult]:
        url = self._module(access, name)

        async def send(valid: list[str]) -> list[ItemResult]:
            deleting = url.with_query(ids=",".join(valid))
            return await batch.write(self, access, "DELETE", deleting, None, valid)

        size = self.platform.bulk.size
        return await chunked_by_id(list(ids), size, send, lambda i: i, _well_formed, name)

    # ---- passthrough ------------------------------------------------------------------------

    def passthrough_url(self, access: Access, path: str) -> URL:
        """``path`` relative to the org's API (``Contacts/123``, ``coql``, ``settings/modules``
        under ``/crm/v8/``), or absolute under ``/crm/`` (another version)."""
        return passthrough_on(access, path, f"/crm/{self.platform.api_version or 'v8'}", "/crm/")
