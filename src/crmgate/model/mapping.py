"""Unified <-> native records, driven by the field maps in the platform descriptors.

A map names, for one unified entity (the contract's ContactEntity, ...), the CRM object behind it
and where each unified field lives natively:

    [entities.contact]
    object = "Contact"
    fields = { first_name = "FirstName", last_name = "LastName" }
    email = [{ type = "work", address = "Email" }]          # the contract's typed lists
    phone = [{ type = "work", number = "Phone" }, { type = "mobile", number = "MobilePhone" }]
    relations = { account = "AccountId" }                    # relation.account[].entity.id

A polymorphic reference (Salesforce's WhoId: a contact or a lead) names one column under several
relations; the platform's ``id_prefixes`` tell which kind of record an id is. ``match`` fixes
native values that make a record this entity (a call is a Task with TaskSubtype = 'Call'): lists
and counts filter on them and creates set them.

Everything here is data-driven and the same for every connector; a connector only adds what its
CRM does differently (its query language, its paging).
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping
from datetime import UTC, date, datetime
from functools import cache
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict, Field, model_validator

from crmgate.contract.coverage import load_reference
from crmgate.contract.shape import ABSENT
from crmgate.contract.shape import text as contract_text
from crmgate.query import Condition, QueryError

if TYPE_CHECKING:
    from crmgate.model.objects import ObjectInfo

LISTS = ("email", "phone", "address", "website", "messenger")
_VALUE_FIELD = {
    "email": "address",
    "phone": "number",
    "website": "address",
    "messenger": "location",
    "address": "street",
}
READ_ONLY = frozenset(("id", "created_at", "updated_at"))
_NUMBER = re.compile(r"^-?\d+(?:\.\d+)?(?:[eE][-+]?\d+)?$")
_INTEGER = re.compile(r"^-?\d+$")
# The operations a descriptor may list under an entity's `methods`.
METHODS = ("list", "count", "get", "create", "update", "delete", "describe", "bulk", "aggregate")


class MappingError(ValueError):
    """A unified record that cannot be written: ``field`` names the offending unified field."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


class ListItemMap(BaseModel):
    model_config = ConfigDict(frozen=True, extra="allow")

    type: str

    @property
    def fields(self) -> dict[str, str]:
        """Item property -> native field, e.g. {"address": "Email"}."""
        return {k: str(v) for k, v in (self.model_extra or {}).items()}


class EntityMap(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    entity: str = ""  # the unified name (contact); filled from the table key
    object: str
    methods: tuple[str, ...] = ()
    id: str = "Id"
    fields: dict[str, str] = Field(default_factory=dict)
    email: tuple[ListItemMap, ...] = ()
    phone: tuple[ListItemMap, ...] = ()
    address: tuple[ListItemMap, ...] = ()
    website: tuple[ListItemMap, ...] = ()
    messenger: tuple[ListItemMap, ...] = ()
    relations: dict[str, str] = Field(default_factory=dict)
    match: dict[str, str | int | bool] = Field(default_factory=dict)
    # Native values a create sends when the client gives none ("now": the current time), for
    # fields a CRM requires that the contract does not (HubSpot's hs_timestamp).
    defaults: dict[str, str | int | bool] = Field(default_factory=dict)
    # Relations one of which every list and count must filter by (``relation.<name> eq``): the
    # CRM lists these records only per parent record (Bitrix24's timeline comments).
    list_by: tuple[str, ...] = ()
    id_prefixes: dict[str, str] = Field(default_factory=dict)  # from the platform descriptor
    # Filled at run time from the CRM's describe (see bind): native fields shown under their own
    # names (custom fields; every field of a generic object) and the native type of each field.
    extra: tuple[str, ...] = ()
    native_kinds: dict[str, str] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _known_fields(self) -> EntityMap:
        unknown_methods = sorted(set(self.methods) - set(METHODS))
        if unknown_methods:
            raise ValueError(f"{self.entity}: unknown methods {unknown_methods}; use {METHODS}")
        if self.entity:
            schema = entity_schema(self.entity)
            unknown = sorted(set(self.fields) - set(schema))
            if unknown:
                raise ValueError(f"{self.entity}: not fields of the contract: {unknown}")
        if set(self.list_by) - set(self.relations):
            raise ValueError(f"{self.entity}: list_by names relations it does not have")
        return self

    def parent_wanted(self, conditions: Iterable[Condition]) -> str:
        """What a list or count of an entity listed per parent (``list_by``) must filter by,
        where ``conditions`` do not; "" where they do, or it is listed whole."""
        parents = [f"relation.{name}" for name in self.list_by]
        if not parents or any(
            c.field in parents and c.op == "eq" and c.value is not None for c in conditions
        ):
            return ""
        return " or ".join(f"{parent} eq '<id>'" for parent in parents)

    def on_create(self, values: Mapping[str, Any]) -> dict[str, Any]:
        """``values`` (native) with the map's defaults for what they leave out, and its match."""
        now = datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
        filled = {
            column: now if value == "now" else value
            for column, value in self.defaults.items()
            if values.get(column) in (None, "")
        }
        return {**filled, **values, **self.match}

    def lists(self) -> dict[str, tuple[ListItemMap, ...]]:
        return {name: items for name in LISTS if (items := getattr(self, name))}

    def bind(self, info: ObjectInfo) -> EntityMap:
        """This map with what the CRM's describe adds: its custom fields (shown and written under
        their native names) and the native type of every field."""
        return self.model_copy(
            update={
                "extra": tuple(f.name for f in info.fields if f.custom),
                "native_kinds": {f.name: f.kind for f in info.fields},
            }
        )

    @classmethod
    def generic(cls, info: ObjectInfo) -> EntityMap:
        """A map that shows every field of a CRM object under its native name (the generic
        entity routes: custom objects and everything the unified entities do not cover)."""
        return cls(
            object=info.name,
            id=info.id_field,
            extra=tuple(f.name for f in info.fields if f.name != info.id_field),
            native_kinds={f.name: f.kind for f in info.fields},
        )

    def known_fields(self) -> list[str]:
        """Every field name a client may use with this map (fields, filter, sort, writes)."""
        return [
            "id",
            *self.fields,
            *self.lists(),
            *(["relation"] if self.relations else []),
            *self.extra,
        ]

    # ---- reading ----------------------------------------------------------------------------

    def native_columns(self, selected: Iterable[str] | None = None) -> list[str]:
        """The native fields to fetch for the unified fields ``selected`` (all when None)."""
        wanted = None if selected is None else set(selected)
        columns = [self.id]
        for unified, native in self.fields.items():
            if wanted is None or unified in wanted:
                columns.append(native)
        for name, items in self.lists().items():
            if wanted is None or name in wanted:
                columns += [native for item in items for native in item.fields.values()]
        if wanted is None or "relation" in wanted:
            columns += list(self.relations.values())
        columns += [name for name in self.extra if wanted is None or name in wanted]
        return list(dict.fromkeys(columns))

    def to_unified(self, native: Mapping[str, Any]) -> dict[str, Any]:
        schema = entity_schema(self.entity) if self.entity else {}
        record: dict[str, Any] = {"id": native.get(self.id)}
        for unified, column in self.fields.items():
            if column in native:
                record[unified] = _from_native(native[column], schema.get(unified, {}))
        for name, items in self.lists().items():
            present = any(column in native for item in items for column in item.fields.values())
            if not present:
                continue
            values = []
            for item in items:
                entry = {prop: native.get(column) for prop, column in item.fields.items()}
                if any(v not in (None, "") for v in entry.values()):
                    values.append({"type": item.type, **entry})
            record[name] = values
        if any(column in native for column in self.relations.values()):
            relation: dict[str, list[dict[str, Any]]] = {}
            for target, column in self.relations.items():
                value = native.get(column)
                if value and self._is_a(target, column, str(value)):
                    relation[target] = [{"type": target, "entity": {"id": value}}]
            record["relation"] = relation
        for column in self.extra:
            if column in native:
                kind = self.native_kinds.get(column, "string")
                record[column] = _from_native(native[column], {"type": kind, "format": kind})
        return record

    # ---- writing ----------------------------------------------------------------------------

    def to_native(self, unified: Mapping[str, Any]) -> dict[str, Any]:
        """The native fields for a create or (partial) update; refuses what cannot be written."""
        native: dict[str, Any] = {}
        for name, value in unified.items():
            if name in READ_ONLY:
                raise MappingError(name, "is read-only")
            if name in self.fields:
                column = self.fields[name]
                native[column] = _to_native(name, value, self.native_kinds.get(column))
            elif name in self.extra:
                native[name] = _to_native(name, value, self.native_kinds.get(name))
            elif name in LISTS and getattr(self, name):
                native.update(self._list_to_native(name, value))
            elif name == "relation":
                native.update(self._relations_to_native(value))
            else:
                raise MappingError(name, f"cannot be written to {self.object}")
        return native

    def _list_to_native(self, name: str, value: Any) -> dict[str, Any]:
        items: tuple[ListItemMap, ...] = getattr(self, name)
        if value is None:
            value = []
        if not isinstance(value, list):
            raise MappingError(name, "must be a list")
        native: dict[str, Any] = {c: None for item in items for c in item.fields.values()}
        for position, entry in enumerate(value):
            if not isinstance(entry, Mapping):
                raise MappingError(f"{name}[{position}]", "must be an object")
            kind = entry.get("type") or items[0].type
            slot = next((item for item in items if item.type == kind), None)
            if slot is None:
                known = ", ".join(item.type for item in items)
                raise MappingError(f"{name}[{position}].type", f"must be one of: {known}")
            for prop, column in slot.fields.items():
                if prop in entry:
                    native[column] = entry[prop]
        return native

    def _shared(self, column: str) -> bool:
        return sum(1 for c in self.relations.values() if c == column) > 1

    def relation_prefix(self, name: str) -> str | None:
        """For ``relation.<target>`` on a column several relations share: the id prefix of
        ``target`` records, which a filter must add (WhoId of a contact starts with 003)."""
        target = name.removeprefix("relation.")
        column = self.relations.get(target) if name.startswith("relation.") else None
        if column is None or not self._shared(column):
            return None
        return next((p for p, kind in self.id_prefixes.items() if kind == target), None)

    def _is_a(self, target: str, column: str, record_id: str) -> bool:
        """Whether the id in ``column`` is a ``target`` record: always, unless several relations
        share the column; then the id's prefix decides."""
        if sum(1 for c in self.relations.values() if c == column) == 1:
            return True
        return self.id_prefixes.get(record_id[:3]) == target

    def _relations_to_native(self, value: Any) -> dict[str, Any]:
        if not isinstance(value, Mapping):
            raise MappingError("relation", "must be an object")
        native: dict[str, Any] = {}
        for target, links in value.items():
            column = self.relations.get(target)
            if column is None:
                raise MappingError(f"relation.{target}", f"cannot be linked to {self.object}")
            if not links:
                native.setdefault(column, None)  # clear, unless another relation links it
                continue
            if not isinstance(links, list) or len(links) != 1:
                raise MappingError(f"relation.{target}", "takes one linked record")
            entity = links[0].get("entity") if isinstance(links[0], Mapping) else None
            if not isinstance(entity, Mapping) or not isinstance(entity.get("id"), str):
                raise MappingError(f"relation.{target}[0].entity.id", "is required")
            kind = self.id_prefixes.get(entity["id"][:3])
            if self._shared(column) and kind is not None and kind != target:
                raise MappingError(
                    f"relation.{target}[0].entity.id", f"is the id of a {kind}, not a {target}"
                )
            if native.get(column) not in (None, entity["id"]):
                raise MappingError(f"relation.{target}", f"{column} is already linked")
            native[column] = entity["id"]
        return native

    # ---- querying ---------------------------------------------------------------------------

    def unified_name(self, column: str) -> str:
        """The unified field a native column is read into (a CRM's error names its own
        columns; a client knows the unified names): ``StageName`` -> ``pipeline_with_stage``,
        ``MobilePhone`` -> ``phone``, ``AccountId`` -> ``relation.account``. A column the map
        does not know (a custom field, shown under its native name) stays as it is."""
        if column == self.id:
            return "id"
        for unified, native in self.fields.items():
            if native == column:
                return unified
        for name, items in self.lists().items():
            if any(column in item.fields.values() for item in items):
                return name
        targets = [target for target, native in self.relations.items() if native == column]
        return f"relation.{targets[0]}" if len(targets) == 1 else column

    def filter_column(self, parameter: str, name: str) -> str:
        """The native column behind a unified field name in `filter` or `sort`."""
        if name == "id":
            return self.id
        if name in self.fields:
            return self.fields[name]
        if name in LISTS and getattr(self, name):
            first: ListItemMap = getattr(self, name)[0]
            column = first.fields.get(_VALUE_FIELD[name])
            if column is not None:
                return column
        if name.startswith("relation."):
            target = name.split(".", 1)[1]
            if target in self.relations:
                return self.relations[target]
        if name in self.extra:
            return name
        known = sorted(
            {
                "id",
                *self.fields,
                *self.lists(),
                *(f"relation.{r}" for r in self.relations),
                *self.extra,
            }
        )
        raise QueryError(parameter, f"unknown field {name!r}; known: {', '.join(known)}")

    def unified_value(self, name: str, value: Any) -> Any:
        """A native value of the field behind ``name`` as the contract shows it."""
        if name in self.fields and self.entity:
            return _from_native(value, entity_schema(self.entity).get(name, {}))
        kind = self.kind(name)
        return _from_native(value, {"type": kind, "format": kind})

    def kind(self, name: str) -> str:
        """The contract's type of a unified field: string, date, date-time, number, boolean.
        A typed list (email, phone, ...) filters on its items' text, a relation on an id."""
        if name in LISTS or name.startswith("relation."):
            return "string"
        if name in self.extra:
            return self.native_kinds.get(name, "string")
        native_kind = self.native_kinds.get(self.fields.get(name, ""))
        if native_kind == "date":
            return "date"  # a date-time of the contract kept as a date by the CRM
        schema = entity_schema(self.entity).get(name, {}) if self.entity else {}
        if schema.get("type", "string") == "string" and native_kind in ("number", "integer"):
            return native_kind  # text in the contract, a number in the CRM (employees)
        return str(
            schema.get("format")
            if schema.get("format") in ("date", "date-time")
            else schema.get("type", "string")
        )


@cache
def entity_schemas() -> dict[str, str]:
    """Unified entity -> the contract's schema of its records, read off the list routes
    (contact -> ContactEntity, case -> CasesEntity, attachment -> AttachmentEntityList)."""
    prefix = "/application/entity/"
    found: dict[str, str] = {}
    for path, operations in load_reference()["paths"].items():
        if path.startswith(prefix) and path.endswith("/list") and path.count("/") == 4:
            name = path[len(prefix) : -len("/list")]
            if name.startswith("{"):
                continue
            schema = operations["get"]["responses"]["200"]["content"]["application/json"]
            found[name] = schema["schema"]["items"]["$ref"].rsplit("/", 1)[-1]
    return found


def entity_schema(entity: str) -> dict[str, Any]:
    """The contract's properties of a unified entity's records (contact -> ContactEntity)."""
    name = entity_schemas().get(entity)
    if name is None:
        raise ValueError(f"the contract has no entity {entity!r}")
    return load_reference()["components"]["schemas"][name]["properties"]  # type: ignore[no-any-return]


def _to_native(name: str, value: Any, native_kind: str | None) -> Any:
    """A unified value as the CRM's field wants it: a date-time of the contract written to a
    date-only field keeps its date (checked, so a typo is the client's 422, not the CRM's)."""
    if native_kind == "date" and isinstance(value, str):
        try:
            return date.fromisoformat(value[:10]).isoformat()
        except ValueError:
            raise MappingError(name, "must be an ISO 8601 date (2024-05-31)") from None
    if native_kind in ("number", "integer") and isinstance(value, str):
        # the contract has some amounts as text (annual_revenue, employees)
        try:
            number = float(value.replace(",", "")) if value.strip() else None
        except ValueError:
            raise MappingError(name, "must be a number") from None
        if number is not None and not math.isfinite(number):
            raise MappingError(name, "must be a finite number")
        if number is not None and number.is_integer():
            return int(number)  # "120" stays 120, not 120.0
        if native_kind == "integer" and number is not None:
            raise MappingError(name, "must be a whole number")
        return number
    return value


def _from_native(value: Any, schema: Mapping[str, Any]) -> Any:
    if value is None:
        return None
    kind = schema.get("format")
    if kind not in ("date", "date-time"):
        kind = schema.get("type")
    if kind == "date-time" and isinstance(value, str):
        try:
            parsed = datetime.fromisoformat(value.replace("Z", "+00:00").replace("+0000", "+00:00"))
        except ValueError:
            return value
        if parsed.tzinfo is None:  # a date-only native field shown as the contract's date-time
            parsed = parsed.replace(tzinfo=UTC)
        return parsed.isoformat(timespec="seconds")
    if kind == "date" and isinstance(value, str):
        try:
            return date.fromisoformat(value[:10]).isoformat()
        except ValueError:
            return value
    if kind in ("number", "integer") and isinstance(value, str):
        # CRMs that send every value as text (HubSpot): the contract's number, or nothing
        text = value.strip()
        if not _NUMBER.match(text):
            return None
        if kind == "integer" and _INTEGER.match(text):
            return int(text)
        number = float(text)
        return int(number) if kind == "integer" and number.is_integer() else number
    if kind == "boolean" and isinstance(value, str) and value.lower() in ("true", "false"):
        return value.lower() == "true"
    if kind == "integer" and isinstance(value, float):
        return int(value)
    if kind == "string" and not isinstance(value, str):
        # a number or boolean as the contract writes it (contract/shape.py); else nothing
        shown = contract_text(value)
        return None if shown is ABSENT else shown
    return value
