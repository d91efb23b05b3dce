"""Pydantic models built from the contract's own schemas, so crmgate's records and documents carry
exactly the contract's fields, names and types (UserEntity, Address, Email, ...).

``model("UserEntity")`` returns a model whose fields are the schema's properties, all optional,
with nested objects and arrays of objects built the same way. Models are made once and cached.

A record's ``id``, ``created_at`` and ``updated_at`` are the CRM's to set: their schemas say
``readOnly`` (the reference says nothing), so a generated client leaves them out of a create or
an update, which crmgate would refuse (422). A record is a schema named ``...Entity``,
``...EntityList`` or ``...EntityWrite``; not ``...EntityRelation``, the ``{id}`` a client sends
to link records.
"""

from __future__ import annotations

from datetime import date, datetime
from functools import cache
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, create_model

from crmgate.contract.coverage import load_reference

_SCALARS: dict[str, Any] = {"string": str, "integer": int, "number": float, "boolean": bool}
READ_ONLY = ("id", "created_at", "updated_at")
_RECORDS = ("Entity", "EntityList", "EntityWrite")


class ContractModel(BaseModel):
    model_config = ConfigDict(extra="allow", populate_by_name=True)


def _schemas() -> dict[str, Any]:
    return load_reference()["components"]["schemas"]  # type: ignore[no-any-return]


def _annotation(schema: dict[str, Any]) -> Any:
    if "$ref" in schema:
        return model(schema["$ref"].rsplit("/", 1)[-1])
    kind = schema.get("type")
    if kind == "array":
        return list[_annotation(schema.get("items", {}))]  # type: ignore[misc]
    if kind == "string" and schema.get("enum"):
        return Literal[tuple(schema["enum"])]  # the contract's closed list, checked on input too
    if kind == "string" and schema.get("format") == "date-time":
        return datetime
    if kind == "string" and schema.get("format") == "date":
        return date
    if kind in _SCALARS:
        return _SCALARS[kind]
    if kind == "object" and "properties" in schema:
        return dict[str, Any]
    return Any


def _extra(schema: dict[str, Any], *, read_only: bool) -> dict[str, Any] | None:
    """What the property's schema says that its annotation does not: the width of a number
    (int32, float) and whether a client may write it."""
    extra: dict[str, Any] = {}
    if schema.get("format") and schema.get("type") in ("integer", "number"):
        extra["format"] = schema["format"]
    if read_only:
        extra["readOnly"] = True
    return extra or None


@cache
def model(name: str) -> type[ContractModel]:
    schema = _schemas()[name]
    fields: dict[str, Any] = {}
    record = name.endswith(_RECORDS)
    for prop, prop_schema in schema.get("properties", {}).items():
        annotation = _annotation(prop_schema)
        # A property named like a BaseModel attribute (``schema``) gets a Python name of its own
        # and keeps the contract's name as its alias.
        python_name = f"{prop}_" if hasattr(BaseModel, prop) else prop
        fields[python_name] = (
            annotation | None,
            Field(
                default=None,
                description=prop_schema.get("description"),
                alias=prop if python_name != prop else None,
                json_schema_extra=_extra(prop_schema, read_only=record and prop in READ_ONLY),
            ),
        )
    created: type[ContractModel] = create_model(
        name, __base__=ContractModel, __doc__=schema.get("description"), **fields
    )
    return created
