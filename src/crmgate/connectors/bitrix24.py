"""Bitrix24: the code its descriptor (platforms/Bitrix24.toml) cannot say.

Every call is a REST method on the application's portal, ``POST /rest/<method>`` with a JSON
body: an inbound webhook's secret goes in the path (the ``path`` auth scheme), an OAuth token as
the ``auth`` parameter. A key credential is the webhook's whole URL; crmgate keeps its portal
and its user id and code apart, and never shows either. Costs in Bitrix24 calls:

- Lists page 50 records a call (``start``/``next``, through ``CursorWalks``: the page after the
  last one read costs at most one call); filters are Bitrix24's prefixed keys (``=``, ``!=``,
  ``>``, ``>=``, ``<``, ``<=``, ``%`` for contains, ``=%`` with a trailing ``%`` for
  startswith, an empty value for null), any number of them but one per field, and sorts
  ``order`` by any keys. A count is one call (the list's ``total``).
- A record's EMAIL and PHONE lists show as ``email_<TYPE>``/``phone_<TYPE>``; Bitrix24 adds an
  item sent without its ID, so an update that changes a list reads the record first (one call
  more) and sends its old items' IDs with empty values (deleted) beside the new items.
- Users are read whole (``user.get``) and filtered in crmgate. Bulk: one ``batch`` call per 50
  items (an update that changes a list: one more, reading those records).
- Notes are timeline comments, listed per CRM record only: a note list or count filters by its
  record (``relation.<object> eq``) and nothing else, and sorts by id, created_at or its author.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import replace
from functools import partial
from typing import Any, ClassVar
from urllib.parse import quote

from yarl import URL

from crmgate.connectors import base, lists, local, polymorphic, shapes
from crmgate.connectors.base import Access, Connector, CursorWalks, Identity, Records
from crmgate.connectors.catalogue import TypedList
from crmgate.connectors.dialect import Dialect, Scalar, Target
from crmgate.connectors.errors import (
    CrmError,
    CrmUnavailable,
    EntityNotFound,
    NotSupported,
    Refusal,
)
from crmgate.connectors.paging import Pager
from crmgate.model.mapping import EntityMap
from crmgate.model.objects import ObjectInfo
from crmgate.query import Condition, QueryError, SortKey

REST = "/rest/"
MAX_COLD_OFFSET = 10_000
OPERATION_BLOCK = 600  # seconds a method stays blocked past its time limit
_ID = re.compile(r"^[1-9][0-9]{0,18}$")
# a webhook: https://<portal>/rest/<user id>/<code>/
_WEBHOOK = re.compile(r"^/rest/([0-9]{1,12})/([A-Za-z0-9]{4,128})/?$")
Term = tuple[tuple[str, Scalar], ...]  # one condition as filter keys (prefix and field), values


def flatten(typed: Sequence[TypedList], poly: polymorphic.Table, record: Any) -> dict[str, Any]:
    """One Bitrix24 record as the flat columns the entity maps name: its lists, and the CRM
    record an activity or a comment belongs to as one column per object (``OWNER_ID.contact``)."""
    record = shapes.obj(record, "Bitrix24", "a record")
    shapes.text(record.get("ID"), "Bitrix24", "a record")
    return lists.read(typed, record) | polymorphic.read(poly, record)


def _php(value: Any, prefix: str = "") -> str:
    """Parameters as a batch command's query string, PHP's way (``fields[EMAIL][0][VALUE]=``)."""
    if isinstance(value, Mapping) or isinstance(value, list):
        pairs = value.items() if isinstance(value, Mapping) else enumerate(value)
        parts = [_php(v, f"{prefix}[{k}]" if prefix else str(k)) for k, v in pairs]
        return "&".join(part for part in parts if part)
    text = "" if value is None else ("Y" if value is True else "N" if value is False else value)
    return f"{quote(prefix, safe='[]')}={quote(str(text), safe='')}"


def _well_formed(record_id: str) -> bool:
    return _ID.match(record_id) is not None


def _item(sent: str | None, result: Any) -> base.ItemResult:
    """One command's outcome: an add answers the new id, an update or delete ``true``."""
    if isinstance(result, CrmError):
        return base.ItemResult(sent, result)
    if sent is None and not str(result).isdigit():
        return base.ItemResult(None, CrmUnavailable("Bitrix24 answered an add without the id"))
    return base.ItemResult(sent or str(result))


class BitrixFilter(Dialect[Term]):
    """Conditions as ``filter`` keys: the operator is the key's prefix; the record something
    belongs to as its id and its object, unprefixed (equal)."""

    crm = "Bitrix24"
    operators: ClassVar[Mapping[str, str]] = {
        "eq": "=",
        "ne": "!=",
        "gt": ">",
        "ge": ">=",
        "lt": "<",
        "le": "<=",
    }
    true_false = ("Y", "N")
    like_refuses = "%_"
    id_pattern = _ID
    id_refusal = "{field} takes a Bitrix24 id (digits)"

    def __init__(self, entity: EntityMap, poly: polymorphic.Table) -> None:
        super().__init__(entity)
        self.poly = poly

    def number(self, value: int | float) -> Scalar:
        return value

    def instant(self, value: Any) -> Scalar:
        return str(value.isoformat())

    def compare(self, target: Target, operator: str, literal: Scalar) -> Term:
        base, lookup, object_name = polymorphic.split(self.poly, target.column)
        if lookup is None:
            return ((operator + target.name, literal),)
        if operator != "=":
            raise QueryError("filter", f"Bitrix24 filters {target.field} by eq only")
        return (base, literal), (lookup.object_field, lookup.codes.get(object_name, object_name))

    def null(self, target: Target, op: str) -> Term:
        if polymorphic.split(self.poly, target.column)[1]:
            raise QueryError("filter", f"Bitrix24 filters {target.field} by an id only")
        return ((("=" if op == "eq" else "!") + target.name, ""),)

    def like(self, target: Target, op: str, text: str) -> Term:
        if op == "contains":
            return (("%" + target.name, text),)
        return (("=%" + target.name, text + "%"),)

    def body(self, conditions: Sequence[Condition]) -> dict[str, Scalar]:
        found: dict[str, Scalar] = {}
        for term in self.terms(conditions):
            for name, said in term:
                if name in found:
                    raise QueryError(
                        "filter", "Bitrix24 takes one condition per field and operator"
                    )
                found[name] = said
        return found


class Bitrix24Records(Records):
    def __init__(self, connector: Connector) -> None:
        super().__init__(connector)
        self.objects_mapped = {e.object: e for e in self.platform.entities.values()}
        self.poly = self.platform.polymorphic
        self.flat = partial(flatten, self.platform.lists, self.poly)

    def native(self, values: Mapping[str, Any]) -> dict[str, Any]:
        """Values as Bitrix24 takes them: its lists, and the record something belongs to."""
        return polymorphic.write(self.poly, lists.write(self.platform.lists, values))

    def refine_error(self, refusal: Refusal) -> Refusal:
        """An unknown record is a 400 with no code, "Not found"; a method blocked by its time
        limit is blocked for 10 minutes unless the refusal says until when."""
        if not refusal.code and refusal.message.strip().rstrip(".").lower() == "not found":
            return replace(refusal, contract="ENTITY_NOT_FOUND")
        if refusal.code == "OPERATION_TIME_LIMIT" and refusal.retry_after is None:
            return replace(refusal, retry_after=OPERATION_BLOCK)
        return refusal

    async def method(self, access: Access, name: str, params: Mapping[str, Any]) -> Any:
        """One REST method's ``result``."""
        url = access.instance_url.with_path(REST + name)
        answer = await self.json_call(access, "POST", url, body=dict(params))
        if not isinstance(answer, dict) or "result" not in answer:
            raise CrmUnavailable(f"Bitrix24 answered {name} without a result")
        return answer["result"]

    def _known(self, name: str, record_id: str = "1") -> str:
        if name not in self.objects_mapped or name == "user" or not _ID.match(record_id):
            raise EntityNotFound(f"Bitrix24 has no {name[:40]} {record_id[:40]!r}")
        return f"crm.{name}"

    def _select(self, name: str) -> list[str]:
        if name in ("activity", "timeline.comment"):
            return ["*"]
        listed = [t.name for t in self.platform.lists] if name != "deal" else []
        return ["*", "UF_*", *listed]

    # ---- the catalogue ------------------------------------------------------------------------

    async def objects(self, access: Access) -> list[ObjectInfo]:
        return [await self.describe(access, name) for name in self.objects_mapped]

    async def describe(self, access: Access, name: str) -> ObjectInfo:
        """``crm.<object>.fields`` (standard and user fields); users as the descriptor says."""
        known = self.platform.objects.get(name)
        if name == "user" and known is not None:
            return known.info(name, "ID")
        answer = await self.method(access, self._known(name) + ".fields", {})
        if not isinstance(answer, dict):
            raise CrmUnavailable("Bitrix24 answered a describe that is not an object")
        specs = [{**spec, "name": key} for key, spec in answer.items() if isinstance(spec, dict)]
        fields = self.read_fields({"fields": specs}, partial(polymorphic.fields, self.poly))
        label = self.objects_mapped[name].entity.capitalize() if name != "activity" else "Activity"
        label = known.label if known is not None else label
        info = ObjectInfo(name, label, label + "s", False, True, True, True, True)
        return replace(info, fields=tuple(fields), id_field="ID")

    # ---- reading ------------------------------------------------------------------------------

    async def _users(self, access: Access) -> list[dict[str, Any]]:
        pager = Pager(self, self.platform.paging.of("user"), partial(flatten, (), {}))
        url = access.instance_url.with_path(REST + "user.get")
        return await pager.whole(access, url, body={}, what="users")

    def _body(
        self, entity: EntityMap, conditions: Sequence[Condition], sort: Sequence[SortKey]
    ) -> dict[str, Any]:
        order = {
            entity.filter_column("sort", key.field): "DESC" if key.descending else "ASC"
            for key in sort
        }
        known = self.platform.objects.get(entity.object)
        sorts = known.sorts if known is not None else ()
        if sorts and set(order) - set(sorts):
            names = ", ".join(entity.unified_name(column) for column in sorts)
            raise QueryError("sort", f"Bitrix24 sorts {entity.entity} records by {names} only")
        parents = [f"relation.{name}" for name in entity.list_by]
        if parents and any(c.field not in parents or c.op != "eq" for c in conditions):
            said = f"{' or '.join(parents)} eq"  # its list's only filter: the record it is on
            raise QueryError("filter", f"Bitrix24 filters {entity.entity} records by {said} only")
        body: dict[str, Any] = {"filter": BitrixFilter(entity, self.poly).body(conditions)}
        return body | ({"order": order} if order else {})

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
        if name == "user":
            rows = local.select(await self._users(access), entity, conditions, sort)
            return local.page_of(rows, page, page_size)
        body = self._body(entity, conditions, sort) | {"select": self._select(name)}
        url = access.instance_url.with_path(f"{REST}{self._known(name)}.list")
        key = CursorWalks.key(access, str(url), repr(sorted(body.items())))
        pager = Pager(self, self.platform.paging.of(name), self.flat)
        fetch = pager.fetch(access, url, body=body)
        return await self.walks.page(key, offset, page_size, fetch, MAX_COLD_OFFSET)

    async def count(
        self, access: Access, entity: EntityMap, conditions: Sequence[Condition] = ()
    ) -> int:
        if entity.object == "user":
            return len(local.select(await self._users(access), entity, conditions))
        url = access.instance_url.with_path(f"{REST}{self._known(entity.object)}.list")
        body = self._body(entity, conditions, ()) | {"select": ["ID"]}
        answer = await self.json_call(access, "POST", url, body=body)
        total = answer.get("total") if isinstance(answer, dict) else None
        if not isinstance(total, int):
            raise CrmUnavailable("Bitrix24 answered a list without its total")
        return total

    async def get(
        self, access: Access, entity: EntityMap, record_id: str, columns: Sequence[str]
    ) -> dict[str, Any]:
        if entity.object == "user":
            if not _ID.match(record_id):
                raise EntityNotFound(f"Bitrix24 has no user {record_id[:40]!r}")
            url = access.instance_url.with_path(REST + "user.get")
            found = await self.json_call(access, "POST", url, body={"filter": {"ID": record_id}})
            users = found.get("result") if isinstance(found, dict) else None
            if not users:
                raise EntityNotFound(f"Bitrix24 has no user {record_id!r}")
            return flatten((), {}, users[0])
        record = await self.method(
            access, self._known(entity.object, record_id) + ".get", {"id": record_id}
        )
        return self.flat(record)

    # ---- writing ------------------------------------------------------------------------------

    async def create(self, access: Access, name: str, values: Mapping[str, Any]) -> str:
        fields = self.native(values)
        made = await self.method(access, self._known(name) + ".add", {"fields": fields})
        if not isinstance(made, int) and not str(made).isdigit():
            raise CrmUnavailable("Bitrix24 answered an add without the new id")
        return str(made)

    async def update(
        self, access: Access, name: str, record_id: str, values: Mapping[str, Any]
    ) -> None:
        method = self._known(name, record_id)
        fields = self.native(values)
        if any(t.name in fields for t in self.platform.lists):
            self._replace_lists(
                fields, await self.method(access, method + ".get", {"id": record_id})
            )
        await self.method(access, method + ".update", {"id": record_id, "fields": fields})

    async def delete(self, access: Access, name: str, record_id: str) -> None:
        await self.method(access, self._known(name, record_id) + ".delete", {"id": record_id})

    # ---- bulk: the ``batch`` method, [bulk] size commands a call --------------------------------

    async def _batch(
        self, access: Access, commands: Sequence[tuple[str, Mapping[str, Any]]]
    ) -> list[Any]:
        """Each command's result, or the error it answered (a CrmError): ``halt`` off, so one
        failed command stops none of the others."""
        # keys that are not numbers: PHP answers a map of keys 0, 1, ... as a JSON list
        cmd = {f"c{n}": f"{method}?{_php(params)}" for n, (method, params) in enumerate(commands)}
        answer = await self.method(access, "batch", {"halt": 0, "cmd": cmd})
        done = answer.get("result") if isinstance(answer, dict) else None
        failed = answer.get("result_error") if isinstance(answer, dict) else None
        done, failed = done if isinstance(done, dict) else {}, failed or {}
        unknown = "Bitrix24 did not say what became of this record; read it before sending it again"
        return [
            done[key]
            if key in done
            else self.refused(400, failed[key])
            if isinstance(failed, dict) and key in failed
            else CrmUnavailable(unknown)
            for key in cmd
        ]

    async def bulk_create(
        self, access: Access, name: str, items: Sequence[Mapping[str, Any]]
    ) -> list[base.ItemResult]:
        method = self._known(name) + ".add"

        async def send(chunk: list[Mapping[str, Any]]) -> list[base.ItemResult]:
            sent = [(method, {"fields": self.native(v)}) for v in chunk]
            return [_item(None, made) for made in await self._batch(access, sent)]

        return await base.chunked(list(items), self.platform.bulk.size, send, lambda item: None)

    async def bulk_update(
        self, access: Access, name: str, items: Sequence[tuple[str, Mapping[str, Any]]]
    ) -> list[base.ItemResult]:
        method = self._known(name)

        async def send(chunk: list[tuple[str, Mapping[str, Any]]]) -> list[base.ItemResult]:
            fields = [self.native(values) for _, values in chunk]
            reread = [
                n for n, f in enumerate(fields) if any(t.name in f for t in self.platform.lists)
            ]
            held = (
                await self._batch(access, [(method + ".get", {"id": chunk[n][0]}) for n in reread])
                if reread
                else []
            )
            for n, record in zip(reread, held, strict=True):
                self._replace_lists(fields[n], record)
            sent = [
                (method + ".update", {"id": i, "fields": f})
                for (i, _), f in zip(chunk, fields, strict=True)
            ]
            done = await self._batch(access, sent)
            return [_item(i, result) for (i, _), result in zip(chunk, done, strict=True)]

        size = self.platform.bulk.size
        ids = list(items)
        return await base.chunked_by_id(ids, size, send, lambda item: item[0], _well_formed, name)

    async def bulk_delete(
        self, access: Access, name: str, ids: Sequence[str]
    ) -> list[base.ItemResult]:
        method = self._known(name) + ".delete"

        async def send(chunk: list[str]) -> list[base.ItemResult]:
            done = await self._batch(access, [(method, {"id": i}) for i in chunk])
            return [_item(i, result) for i, result in zip(chunk, done, strict=True)]

        size = self.platform.bulk.size
        return await base.chunked_by_id(list(ids), size, send, lambda i: i, _well_formed, name)

    def _replace_lists(self, fields: dict[str, Any], held: Any) -> None:
        """Bitrix24 adds an item sent without an ID: the record's old items go by their IDs
        with empty values beside the new ones."""
        for typed in self.platform.lists:
            if typed.name in fields:
                old = held.get(typed.name) if isinstance(held, dict) else None
                gone = [{"ID": i["ID"], "VALUE": ""} for i in old or () if isinstance(i, dict)]
                fields[typed.name] = gone + list(fields[typed.name])

    def passthrough_url(self, access: Access, path: str) -> URL:
        """``path`` is a method under ``/rest/`` (``crm.contact.list?start=50``)."""
        return base.passthrough_on(access, path, base=REST, root=REST)


class Bitrix24Connector(Connector):
    name = "bitrix24"
    records_type = Bitrix24Records

    def access(
        self, authorization: str, credential: Mapping[str, str], derived: Mapping[str, str]
    ) -> Access:
        """A webhook's portal, and its user id and code as the token (sent in the path)."""
        if authorization != "key":
            return super().access(authorization, credential, derived)
        try:
            url = URL(credential.get("webhook_url", ""))
            found = _WEBHOOK.match(url.raw_path)
        except ValueError:
            found = None
        if found is None or url.raw_query_string or url.raw_fragment:
            raise NotSupported(
                "Bitrix24: webhook_url is an inbound webhook's URL, "
                "https://<portal>.bitrix24.<zone>/rest/<user id>/<code>/"
            )
        return Access(self.instance_url(str(url.origin())), f"{found[1]}/{found[2]}")

    async def identify(self, access: Access) -> Identity:
        """The user ``user.current`` names; the company is the portal (its domain)."""
        identity = await super().identify(access)
        portal = access.instance_url.raw_host or ""
        return replace(identity, company_id=portal, company_name=portal)
