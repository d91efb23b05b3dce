"""Keap (formerly Infusionsoft; platforms/Infusionsoft.toml): the code its descriptor cannot say.

REST v2 (``/crm/rest/v2/``). Records are flattened for the entity maps: a contact's
``company`` as ``company_id``; an opportunity's ``contact``, ``stage`` and ``user`` as
``contact_id``, ``stage_id`` and ``user_id``; ``email_addresses``/``phone_numbers`` as
``email_EMAILn``/``phone_PHONEn`` (Keap's slots); ``custom_fields: [{id, content}]`` as
``custom.<id>``, described by ``/<object>/model``. Costs in Keap calls:

- Lists read ``page_size`` 1000 records a call with ``page_token``; pages go through
  ``CursorWalks``, so the page after the last one read costs at most one call.
- Filters are Keap's ``filter=`` terms joined by ``;``: ``eq`` on what each list takes (names,
  emails, relations), ``startswith`` as a trailing ``*`` where Keap takes a prefix, and the
  comparisons on ids. ``order_by`` takes one documented key per list. Counting walks the list
  (v2 answers no total).
- Notes keep Keap's ids: v2 serves a note under its contact only, so a note is found by
  ``/notes?filter=id==<id>`` (a get costs that one call, an update or delete one more) and
  made under its contact. Keap wants a note's writer and a task's assignee: the record's user,
  or the credential's (two more calls: ``userinfo`` names the global user, whose email finds
  the application's user).
- Users are read whole and filtered in crmgate. Bulk: one call per item.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import replace
from functools import partial
from typing import Any, ClassVar

from yarl import URL

from crmgate.connectors import base, lists, local, shapes
from crmgate.connectors.base import Access, Connector, CursorWalks, Records
from crmgate.connectors.catalogue import Platform, TypedList
from crmgate.connectors.dialect import Scalar, Target, TextDialect
from crmgate.connectors.errors import EntityNotFound, NotValid
from crmgate.connectors.paging import Pager
from crmgate.model.mapping import EntityMap
from crmgate.model.objects import FieldInfo, ObjectInfo
from crmgate.outbound import Outbound
from crmgate.query import Condition, QueryError, SortKey

API = "/crm/rest/v2/"
MAX_COLD_OFFSET = 10_000
MAX_COUNT = 50_000
# What each list's filter takes: the column -> Keap's filter name ("*": also a prefix) ...
FILTERS: dict[str, dict[str, str]] = {
    "contacts": {
        "family_name": "family_name*",
        "given_name": "given_name*",
        "email_EMAIL1": "email*",
        "company_id": "company_id",
        "id": "contact_id",
    },
    "companies": {"company_name": "company_name", "id": "company_id"},
    "opportunities": {
        "opportunity_title": "opportunity_title*",
        "contact_id": "contact_id",
        "stage_id": "stage_id",
        "user_id": "user_id",
        "id": "opportunity_id",
    },
    "tasks": {
        "title": "title*",
        "contact_id": "contact_id",
        "opportunity_id": "opportunity_id",
        "assigned_to_user_id": "user_id",
        "id": "id",
    },
    # a note's title== is Keap's contains (a trailing * a prefix): no eq on it ("~")
    "notes": {
        "title": "title~",
        "contact_id": "contact_id",
        "assigned_to_user_id": "assigned_to_user_id",
        "id": "id",
    },
}
# ... and what its order_by sorts by (column -> Keap's key)
ORDER_BY: dict[str, dict[str, str]] = {
    "contacts": {"id": "id", "create_time": "create_time", "update_time": "update_time"},
    "companies": {"id": "id", "create_time": "create_time", "company_name": "name"},
    "opportunities": {
        "opportunity_title": "opportunity_title",
        "created_time": "created_time",
        "last_updated_time": "update_time",
    },
    "tasks": {"id": "id", "create_time": "create_time", "due_time": "due_time"},
    "notes": {"id": "id", "create_time": "create_time", "update_time": "update_time"},
}
NESTED = {
    "contacts": ("company",),
    "opportunities": ("contact", "stage", "user"),
    "notes": ("assigned_to_user",),
}
# who writes a note, whom a task is for: Keap wants it; the credential's user by default
WRITER = {"notes": "user_id", "tasks": "assigned_to_user_id"}
NATIVE_KINDS = {"projected_revenue_high": "number", "stage_id": "string"}
_CUSTOM_KINDS = {
    "WHOLE_NUMBER": "integer",
    "DECIMAL_NUMBER": "number",
    "CURRENCY": "number",
    "PERCENT": "number",
    "DATE": "date",
    "DATE_TIME": "date-time",
    "YES_NO": "boolean",
}
_ID = re.compile(r"^[0-9]{1,18}$")
_UNSAFE = re.compile(r"[;*,=<>!]")  # what would change a filter term's meaning


def flatten(typed: Sequence[TypedList], name: str, record: Any) -> dict[str, Any]:
    """One Keap record as the flat columns the entity maps name."""
    record = shapes.obj(record, "Keap", "a record")
    record["id"] = str(shapes.obj(record, "Keap", "a record").get("id"))
    row = lists.read(typed, record)
    for key in NESTED.get(name, ()):
        nested = row.pop(key, None)
        row[f"{key}_id"] = (
            str(nested["id"]) if isinstance(nested, dict) and nested.get("id") else None
        )
    for item in row.pop("custom_fields", None) or ():
        if isinstance(item, dict):
            row[f"custom.{item.get('id')}"] = item.get("content")
    return row


def native_body(typed: Sequence[TypedList], name: str, values: Mapping[str, Any]) -> dict[str, Any]:
    """Flat columns as Keap's body: typed lists and custom fields as lists, a contact's company
    as an object."""
    body = lists.write(typed, {k: v for k, v in values.items() if not k.startswith("custom.")})
    customs = [
        {"id": k.removeprefix("custom."), "content": v}
        for k, v in values.items()
        if k.startswith("custom.")
    ]
    if customs:
        body["custom_fields"] = customs
    if name == "contacts" and "company_id" in body:
        company = body.pop("company_id")
        body["company"] = {"id": company} if company else None
    if name == "notes":  # the contact is the note's path; its user is written as user_id
        body.pop("contact_id", None)
        body["user_id"] = body.pop("assigned_to_user_id", None)
    return body


class KeapFilter(TextDialect):
    """Conditions as Keap's ``filter=`` terms: ``name==value`` joined by ``;``, a trailing ``*``
    for a prefix, comparisons on ids."""

    crm = "Keap"
    conjunction = ";"
    id_pattern = _ID
    id_refusal = "{field} takes a Keap id (digits)"
    like_refuses = ";*,"

    def name(self, field: str, column: str) -> str:
        found = FILTERS.get(self.entity.object, {}).get(column)
        if found is None:
            known = [self.entity.unified_name(c) for c in FILTERS.get(self.entity.object, {})]
            raise QueryError("filter", f"Keap filters {self.entity.entity} records by: {known}")
        return found

    def text(self, value: str) -> Scalar:
        if _UNSAFE.search(value):
            raise QueryError("filter", "Keap's filter cannot match ; * , = < > or !")
        return value

    def compare(self, target: Target, operator: str, literal: Scalar) -> str:
        name = target.name.rstrip("*")
        if target.name.endswith("~"):
            raise QueryError("filter", f"Keap matches {target.field} by contains or startswith")
        if operator != "==" and target.column != "id":
            raise QueryError("filter", f"Keap filters {target.field} with eq only")
        return f"{name}{operator}{literal}"

    def null(self, target: Target, op: str) -> str:
        raise QueryError("filter", f"Keap cannot filter {target.field} by null")

    def like(self, target: Target, op: str, text: str) -> str:
        if target.name.endswith("~"):
            return f"{target.name[:-1]}=={text}{'*' if op == 'startswith' else ''}"
        if op != "startswith" or not target.name.endswith("*"):
            raise QueryError("filter", f"Keap filters {target.field} with eq only")
        return f"{target.name.rstrip('*')}=={text}*"

    operators: ClassVar[Mapping[str, str]] = {
        "eq": "==",
        "ne": "!=",
        "gt": ">",
        "ge": ">=",
        "lt": "<",
        "le": "<=",
    }


class KeapConnector(Connector):
    name = "keap"

    def __init__(self, platform: Platform, outbound: Outbound) -> None:
        super().__init__(platform, outbound)
        self.records = KeapRecords(self)


def _url(access: Access, *parts: str) -> URL:
    return access.instance_url.with_path(API + "/".join(parts))


class KeapRecords(Records):
    def __init__(self, connector: Connector) -> None:
        super().__init__(connector)
        self.objects_mapped = {e.object: e for e in self.platform.entities.values()}

    def _record_url(self, access: Access, name: str, record_id: str) -> URL:
        if name not in self.objects_mapped or not _ID.match(record_id):
            raise EntityNotFound(f"Keap has no {name[:40]} {record_id[:40]!r}")
        return _url(access, name, record_id)

    async def _note(self, access: Access, record_id: str) -> tuple[dict[str, Any], URL]:
        """A note and its URL. v2 serves a note under its contact only
        (``/contacts/{contact_id}/notes/{id}``), so a note keeps Keap's own id and is found
        by ``/notes?filter=id==<id>`` (one call: the list answers the whole note)."""
        self._record_url(access, "notes", record_id)
        url = _url(access, "notes").with_query(filter=f"id=={record_id}", page_size="1")
        answer = shapes.obj(await self.json_call(access, "GET", url), "Keap", "its notes")
        found = answer.get("notes") or ()
        if not found or not isinstance(found[0], dict):
            raise EntityNotFound(f"Keap has no note {record_id!r}")
        note = found[0]
        return note, _url(access, "contacts", str(note.get("contact_id")), "notes", record_id)

    def _pager(self, name: str) -> Pager:
        return Pager(
            self, self.platform.paging.of(name), partial(flatten, self.platform.lists, name)
        )

    # ---- the catalogue ----------------------------------------------------------------------

    async def objects(self, access: Access) -> list[ObjectInfo]:
        return [await self.describe(access, name) for name in self.objects_mapped]

    async def describe(self, access: Access, name: str) -> ObjectInfo:
        """The mapped fields and the custom fields of ``/<object>/model``."""
        entity = self.objects_mapped.get(name)
        if entity is None:
            raise EntityNotFound(f"Keap has no object {name[:64]!r}")
        methods = entity.methods
        fixed = (entity.id, "create_time", "update_time", "created_time", "last_updated_time")
        writable = "create" in methods or "update" in methods
        fields = []
        for column in entity.native_columns():
            unified, ok = entity.unified_name(column), writable and column not in fixed
            kind = NATIVE_KINDS.get(column) or entity.kind(unified)
            fields.append(FieldInfo(column, unified, kind, column, False, ok, ok))
        model = await self.json_call(access, "GET", _url(access, name, "model")) if writable else {}
        for spec in (model or {}).get("custom_fields") or ():
            kind = _CUSTOM_KINDS.get(str(spec.get("field_type")), "string")
            info = FieldInfo(f"custom.{spec.get('id')}", str(spec.get("label")), kind, "custom")
            options = [
                str(o.get("label")) for o in spec.get("options") or () if isinstance(o, dict)
            ]
            fields.append(replace(info, custom=True, enum=tuple(options)))
        label, deletable = entity.entity.capitalize(), "delete" in methods
        known = ObjectInfo(name, label, label + "s", False, True, writable, writable, deletable)
        return replace(known, fields=tuple(fields), id_field="id")

    # ---- reading ----------------------------------------------------------------------------

    async def _users(self, access: Access) -> list[dict[str, Any]]:
        return await self._pager("users").whole(access, _url(access, "users"), what="users")

    def _query(
        self, entity: EntityMap, conditions: Sequence[Condition], sort: Sequence[SortKey]
    ) -> dict[str, str]:
        query = {}
        where = KeapFilter(entity).where(conditions)
        if where:
            query["filter"] = where
        if sort:
            column = entity.filter_column("sort", sort[0].field)
            keys = ORDER_BY.get(entity.object, {})
            if len(sort) > 1 or column not in keys:
                known = [entity.unified_name(c) for c in keys] or "none"
                raise QueryError("sort", f"Keap sorts {entity.entity} records by one of: {known}")
            query["order_by"] = f"{keys[column]} {'desc' if sort[0].descending else 'asc'}"
        return query

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
        name, offset = entity.object, (page - 1) * page_size
        if name == "users":
            rows = local.select(await self._users(access), entity, conditions, sort)
            return local.page_of(rows, page, page_size)
        url = _url(access, name).with_query(self._query(entity, conditions, sort))
        key = CursorWalks.key(access, str(url))
        fetch = self._pager(name).fetch(access, url)
        return await self.walks.page(key, offset, page_size, fetch, MAX_COLD_OFFSET)

    async def count(
        self, access: Access, entity: EntityMap, conditions: Sequence[Condition] = ()
    ) -> int:
        name = entity.object
        if name == "users":
            return len(local.select(await self._users(access), entity, conditions))
        url = _url(access, name).with_query(self._query(entity, conditions, ()))
        return await self._pager(name).count(access, url, MAX_COUNT, f"{entity.entity} records")

    async def get(
        self, access: Access, entity: EntityMap, record_id: str, columns: Sequence[str]
    ) -> dict[str, Any]:
        if entity.object == "notes":
            return flatten(self.platform.lists, "notes", (await self._note(access, record_id))[0])
        url = self._record_url(access, entity.object, record_id)
        return flatten(self.platform.lists, entity.object, await self.json_call(access, "GET", url))

    # ---- writing ----------------------------------------------------------------------------

    async def create(self, access: Access, name: str, values: Mapping[str, Any]) -> str:
        if name not in self.objects_mapped or name == "users":
            raise EntityNotFound(f"Keap has no object {name[:64]!r}")
        body, url = native_body(self.platform.lists, name, values), _url(access, name)
        if name == "notes":
            contact = values.get("contact_id")
            if not contact:
                raise NotValid("Keap keeps a note under its contact: the note needs one")
            url = _url(access, "contacts", str(contact), "notes")
        if name in WRITER and not body.get(WRITER[name]):
            body[WRITER[name]] = await self._me(access)
        made = await self.json_call(access, "POST", url, body=body)
        return str(flatten(self.platform.lists, name, made)["id"])

    async def _me(self, access: Access) -> str:
        """The application's id of the user the credential acts as (two calls: userinfo names
        the global user, whose email finds the application's)."""
        me = await self.json_call(access, "GET", _url(access, "oauth", "connect", "userinfo"))
        email = str(shapes.obj(me, "Keap", "its userinfo").get("email"))
        url = _url(access, "users").with_query(filter=f"email=={email}", page_size="1")
        answer = shapes.obj(await self.json_call(access, "GET", url), "Keap", "its users")
        found = answer.get("users") or [{}]
        if not isinstance(found[0], dict) or not found[0].get("id"):
            raise NotValid("Keap names no user of this credential: give the record a user")
        return str(found[0]["id"])

    async def update(
        self, access: Access, name: str, record_id: str, values: Mapping[str, Any]
    ) -> None:
        body = native_body(self.platform.lists, name, values)
        if name == "notes":  # every write of a note names its user: the one it has, if no other
            note, url = await self._note(access, record_id)
            if not body.get("user_id"):
                body["user_id"] = str((note.get("assigned_to_user") or {}).get("id"))
            if values.get("contact_id"):  # moved to another contact (its path stays the old)
                body["contact_id"] = values["contact_id"]
        else:
            url = self._record_url(access, name, record_id)
        await self.json_call(access, "PATCH", url, body=body)

    async def delete(self, access: Access, name: str, record_id: str) -> None:
        if name == "notes":
            url = (await self._note(access, record_id))[1]
        else:
            url = self._record_url(access, name, record_id)
        await self.json_call(access, "DELETE", url)

    def passthrough_url(self, access: Access, path: str) -> URL:
        """``path`` relative to ``/crm/rest/v2/`` (``contacts?page_size=5``), or absolute
        under /crm/rest/."""
        return base.passthrough_on(access, path, base=API, root="/crm/rest/")
