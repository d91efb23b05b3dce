"""Unified <-> native records, driven by the field maps in the platform descriptors.

A map names, for one unified entity (the contract's ContactEntity, ...), the CRM object behind it
and where each unified field lives natively:

    [entities.contact]
    object = "Contact"
    fields = { first_name = "FirstName", last_name = "LastName" }
    email = [{ type = "work", address = "Email" }]          # the contract's typed lists
    phone = [{ type = "work", number = "Phone" }, { type = "mobile", number = "MobilePhone" }]
    relations = { account = "AccountId" }                    # relation.account[].entity.id

Everything here is data-driven and the same for every connector; a connector only adds what its
CRM does differently (its query language, its paging).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import date, datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, model_validator

from crmgate.contract.coverage import load_reference
from crmgate.query import QueryError

LISTS = ("email", "phone", "address", "website", "messenger")
_VALUE_FIELD = {
    "email": "address",
    "phone": "number",
    "website": "address",
    "messenger": "location",
    "address": "street",
}
READ_ONLY = frozenset(("id", "created_at", "updated_at"))


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

    @model_validator(mode="after")
    def _known_fields(self) -> EntityMap:
        if self.entity:
            schema = entity_schema(self.entity)
            unknown = sorted(set(self.fields) - set(schema))
            if unknown:
                raise ValueError(f"{self.entity}: not fields of the contract: {unknown}")
        return self

    def lists(self) -> dict[str, tuple[ListItemMap, ...]]:
        return {name: items for name in LISTS if (items := getattr(self, name))}

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
        return list(dict.fromkeys(columns))

    def to_unified(self, native: Mapping[str, Any]) -> dict[str, Any]:
        schema = entity_schema(self.entity)
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
                if native.get(column):
                    relation[target] = [{"type": target, "entity": {"id": native[column]}}]
            record["relation"] = relation
        return record

    # ---- writing ----------------------------------------------------------------------------

    def to_native(self, unified: Mapping[str, Any]) -> dict[str, Any]:
        """The native fields for a create or (partial) update; refuses what cannot be written."""
        native: dict[str, Any] = {}
        for name, value in unified.items():
            if name in READ_ONLY:
                raise MappingError(name, "is read-only")
            if name in self.fields:
                native[self.fields[name]] = value
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

    def _relations_to_native(self, value: Any) -> dict[str, Any]:
        if not isinstance(value, Mapping):
            raise MappingError("relation", "must be an object")
        native: dict[str, Any] = {}
        for target, links in value.items():
            column = self.relations.get(target)
            if column is None:
                raise MappingError(f"relation.{target}", f"cannot be linked to {self.object}")
            if not links:
                native[column] = None
                continue
            if not isinstance(links, list) or len(links) != 1:
                raise MappingError(f"relation.{target}", "takes one linked record")
            entity = links[0].get("entity") if isinstance(links[0], Mapping) else None
            if not isinstance(entity, Mapping) or not isinstance(entity.get("id"), str):
                raise MappingError(f"relation.{target}[0].entity.id", "is required")
            native[column] = entity["id"]
        return native

    # ---- querying ---------------------------------------------------------------------------

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
        known = sorted(
            {"id", *self.fields, *self.lists(), *(f"relation.{r}" for r in self.relations)}
        )
        raise QueryError(parameter, f"unknown field {name!r}; known: {', '.join(known)}")

    def kind(self, name: str) -> str:
        """The contract's type of a unified field: string, date, date-time, number, boolean.
        A typed list (email, phone, ...) filters on its items' text, a relation on an id."""
        if name in LISTS or name.startswith("relation."):
            return "string"
        schema = entity_schema(self.entity).get(name, {})
        return str(
            schema.get("format")
            if schema.get("format") in ("date", "date-time")
            else schema.get("type", "string")
        )


def entity_schema(entity: str) -> dict[str, Any]:
    """The contract's properties of a unified entity (contact -> ContactEntity)."""
    schemas = load_reference()["components"]["schemas"]
    name = entity[0].upper() + entity[1:] + "Entity"
    if name not in schemas:
        raise ValueError(f"the contract has no entity {entity!r}")
    return schemas[name]["properties"]  # type: ignore[no-any-return]


def _from_native(value: Any, schema: Mapping[str, Any]) -> Any:
    if value is None:
        return None
    kind = schema.get("format") or schema.get("type")
    if kind == "date-time" and isinstance(value, str):
        try:
            parsed = datetime.fromisoformat(value.replace("Z", "+00:00").replace("+0000", "+00:00"))
            return parsed.isoformat(timespec="seconds")
        except ValueError:
            return value
    if kind == "date" and isinstance(value, str):
        try:
            return date.fromisoformat(value[:10]).isoformat()
        except ValueError:
            return value
    if kind == "integer" and isinstance(value, float):
        return int(value)
    if kind == "string" and not isinstance(value, str):
        return str(value)
    return value
